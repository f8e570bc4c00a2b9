"""Checks NanoImg's single-file checkpoint writer against diffusers' own single-file loader.

`nanoimg models synth --single-file` writes a tiny diffusers folder and the same weights as one
checkpoint in the original (LDM/SGM) layout. The engine's tests load that file through our
loader and get the folder's pixels exactly; this script shows the file is the layout the
ecosystem means: diffusers' `from_single_file` (with the folder as its `config`) reads it into
exactly the folder's weights, tensor for tensor. Together: our writer speaks the real layout,
and our loader reads it.

    bench/setup_reference.sh
    for a in tiny-sd1 tiny-sd2 tiny-sdxl tiny-inpaint; do
        nanoimg models synth --arch $a --seed 7 /tmp/ck/$a --single-file /tmp/ck/$a.safetensors
    done
    .venv-bench/bin/python bench/checkpoint_reference.py /tmp/ck
"""

import sys
from pathlib import Path

import torch
from diffusers import (
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

PIPELINES = {
    "tiny-sd1": StableDiffusionPipeline,
    "tiny-sd2": StableDiffusionPipeline,
    "tiny-sdxl": StableDiffusionXLPipeline,
    "tiny-inpaint": StableDiffusionInpaintPipeline,
}


def compare(name: str, a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    sa = {k: v for k, v in sa.items() if not k.endswith("position_ids")}
    sb = {k: v for k, v in sb.items() if not k.endswith("position_ids")}
    if sa.keys() != sb.keys():
        raise SystemExit(f"{name}: different tensors: {sorted(sa.keys() ^ sb.keys())[:8]}")
    diffs = {k: (sa[k].float() - sb[k].float()).abs().max().item() for k in sa}
    bad = [k for k, d in diffs.items() if d > 0]
    if bad:
        print(f"{name}: differing tensors: {bad[:6]}")
    worst = max(diffs.values())
    return worst


def main() -> None:
    root = Path(sys.argv[1])
    failed = False
    for arch, cls in PIPELINES.items():
        folder, file = root / arch, root / f"{arch}.safetensors"
        ref = cls.from_pretrained(folder, torch_dtype=torch.float32)
        single = cls.from_single_file(
            str(file), config=str(folder), torch_dtype=torch.float32, local_files_only=True
        )
        parts = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if arch == "tiny-sdxl" else [])
        for part in parts:
            worst = compare(f"{arch}/{part}", getattr(ref, part), getattr(single, part))
            ok = worst == 0.0
            failed |= not ok
            print(f"{arch:13} {part:15} max |diff| = {worst:.3g} {'ok' if ok else 'DIFFERS'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
