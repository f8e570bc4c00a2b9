#!/usr/bin/env python3
"""Reference outputs from diffusers/transformers for NanoImg's tiny synthetic models.

NanoImg writes tiny random-weight models in diffusers layout (`nanoimg models synth`). This script
loads the same folders with the reference implementations (diffusers' UNet2DConditionModel and
AutoencoderKL, transformers' CLIPTextModel / CLIPTextModelWithProjection and CLIPTokenizer), runs
them on fixed inputs, and saves inputs and outputs to small safetensors files. The Rust test
`crates/nanoimg-engine/tests/parity.rs` regenerates the same models from the same seed and checks
that our code gives the same numbers. CI does not need PyTorch: only this script does.

    bench/setup_reference.sh                       # PyTorch + diffusers in .venv-bench
    for a in tiny-sd1 tiny-sd2 tiny-sdxl tiny-inpaint; do
        nanoimg models synth --arch $a --seed 7 /tmp/parity/$a
    done
    .venv-bench/bin/python bench/parity_fixtures.py /tmp/parity crates/nanoimg-engine/tests/fixtures

The bundled model (models/nanoimg-emoji, f16 weights, computed in f32 on both sides) is checked
the same way: put a link to it in the source folder (`ln -s $PWD/models/nanoimg-emoji /tmp/parity/`).
"""

import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

PROMPT = "a cat and a dog, 2 friends!"


def encode(model_dir: Path, enc: str, tok: str):
    tokenizer = CLIPTokenizer.from_pretrained(model_dir / tok)
    ids = tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    cfg = json.loads((model_dir / enc / "config.json").read_text())
    cls = CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in cfg["architectures"] else CLIPTextModel
    model = cls.from_pretrained(model_dir / enc, torch_dtype=torch.float32).eval()
    out = model(ids, output_hidden_states=True)
    pooled = out.text_embeds if cls is CLIPTextModelWithProjection else out.pooler_output
    return ids, out.last_hidden_state, out.hidden_states[-2], pooled


@torch.no_grad()
def fixture(model_dir: Path) -> dict:
    torch.manual_seed(0)
    t = {}
    index = json.loads((model_dir / "model_index.json").read_text())
    sdxl = "text_encoder_2" in index
    ids, last, penult, pooled = encode(model_dir, "text_encoder", "tokenizer")
    t.update(ids=ids.to(torch.int64), last_hidden_state=last, penultimate=penult, pooled=pooled)
    if sdxl:
        ids2, _, penult2, pooled2 = encode(model_dir, "text_encoder_2", "tokenizer_2")
        t.update(ids_2=ids2.to(torch.int64), penultimate_2=penult2, pooled_2=pooled2)
        context = torch.cat([penult, penult2], dim=-1)
    else:
        context = last

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.float32).eval()
    c = unet.config
    sample = torch.randn(2, c.in_channels, 8, 8)
    timestep = torch.tensor([637.0, 21.0])
    ctx = context.repeat(2, 1, 1)
    kwargs = {}
    if sdxl:
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [128.0, 96.0, 8.0, 4.0, 64.0, 48.0]])
        text_embeds = pooled2.repeat(2, 1)
        kwargs["added_cond_kwargs"] = {"text_embeds": text_embeds, "time_ids": time_ids}
        t.update(time_ids=time_ids)
    t.update(sample=sample, timestep=timestep, unet_out=unet(sample, timestep, ctx, **kwargs).sample)

    vae = AutoencoderKL.from_pretrained(model_dir / "vae", torch_dtype=torch.float32).eval()
    latents = torch.randn(1, vae.config.latent_channels, 8, 8)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    t.update(
        latents=latents,
        # What the engine's decode computes: the scaling factor is undone first.
        decoded=vae.decode(latents / vae.config.scaling_factor).sample,
        image=image,
        encoded_mean=vae.encode(image).latent_dist.mean * vae.config.scaling_factor,
    )
    return {k: v.contiguous() for k, v in t.items()}


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    for model_dir in sorted(p for p in src.iterdir() if (p / "model_index.json").is_file()):
        tensors = fixture(model_dir)
        out = dst / f"parity-{model_dir.name}.safetensors"
        save_file(tensors, out)
        print(f"{out}: {', '.join(f'{k}{list(v.shape)}' for k, v in tensors.items())}")


if __name__ == "__main__":
    main()
