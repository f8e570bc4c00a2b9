#!/usr/bin/env python3
"""diffusers' FluxTransformer2DModel timed as `nanoimg bench --arch flux-D-S --ops flux-step` times
ours: one step at the real width (3072 channels, 24 heads, 4096-wide T5 states, 512 text tokens,
guidance embedded as in FLUX.1 dev) with D double- and S single-stream blocks, random weights,
f32 on the CPU, median of --runs after one warm-up, peak RSS of the process. One JSON line per
architecture and size, in the fields `nanoimg bench --json` prints.

    bench/setup_reference.sh
    .venv-bench/bin/python bench/flux_reference.py --arch flux-2-4,flux-1-2 --size 256 --threads 2
"""

import argparse
import json
import resource
import time

import torch
from diffusers import FluxTransformer2DModel


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model(double, single):
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=double, num_single_layers=single,
        attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
        pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    ).eval()


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="flux-2-4,flux-1-2")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text_tokens = 512
    for arch in args.arch.split(","):
        double, single = (int(x) for x in arch.removeprefix("flux-").split("-"))
        m = model(double, single)
        side = args.size // 16
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(1, side * side, 64, generator=g)
        text = torch.randn(1, text_tokens, 4096, generator=g)
        pooled = torch.randn(1, 768, generator=g)
        img_ids = torch.zeros(side, side, 3)
        img_ids[..., 1] += torch.arange(side)[:, None]
        img_ids[..., 2] += torch.arange(side)[None, :]
        kwargs = dict(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                      timestep=torch.tensor([1.0]), guidance=torch.tensor([3.5]),
                      txt_ids=torch.zeros(text_tokens, 3), img_ids=img_ids.reshape(-1, 3))
        m(**kwargs)  # warm-up
        runs = []
        for _ in range(args.runs):
            t = time.perf_counter()
            m(**kwargs)
            runs.append(time.perf_counter() - t)
        print(json.dumps({
            "arch": arch, "op": "flux-step", "backend": "pytorch", "size": args.size,
            "threads": torch.get_num_threads(), "median_s": sorted(runs)[len(runs) // 2],
            "runs_s": runs, "peak_rss_mib": peak_rss_mib(),
            "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        }), flush=True)
        del m


if __name__ == "__main__":
    main()
