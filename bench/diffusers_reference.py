#!/usr/bin/env python3
"""Times the operations `nanoimg bench` times, with PyTorch + diffusers on the CPU.

Same architectures (hand-written configs matching NanoImg's `sd-turbo` and `sd15` synthetic
specs), random weights, f32, the same thread count, median of N runs after one warm-up, and peak
RSS measured the same way (Linux VmHWM, reset through /proc/self/clear_refs after the warm-up).

    bench/setup_reference.sh
    .venv-bench/bin/python bench/diffusers_reference.py --threads 2 --runs 3
"""

import argparse
import json
import statistics
import time

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

UNET_SD15 = dict(
    in_channels=4, out_channels=4, sample_size=64,
    block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    layers_per_block=2, attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32,
)
UNET_SD_TURBO = dict(UNET_SD15, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                     use_linear_projection=True)
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215,
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu")
CLIP_H = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
              num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
ARCHS = {"sd-turbo": (UNET_SD_TURBO, CLIP_H), "sd15": (UNET_SD15, CLIP_L)}


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def timed(runs, fn):
    fn()
    reset_peak_rss()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, peak_rss_mib()


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sd-turbo,sd15")
    ap.add_argument("--ops", default="clip,unet,unet-cfg,vae")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lat = args.size // 8
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}", flush=True)
    for arch in args.arch.split(","):
        unet_cfg, clip_cfg = ARCHS[arch]
        clip = CLIPTextModel(CLIPTextConfig(**clip_cfg)).eval()
        unet = UNet2DConditionModel(**unet_cfg).eval()
        vae = AutoencoderKL(**VAE).eval()
        ids = torch.randint(0, 49406, (1, 77))
        ctx = clip(ids).last_hidden_state
        for op in args.ops.split(","):
            if op == "clip":
                fn = lambda: clip(ids)
            elif op in ("unet", "unet-cfg"):
                b = 1 if op == "unet" else 2
                x = torch.randn(b, 4, lat, lat)
                t = torch.full((b,), 999.0)
                c = ctx.repeat(b, 1, 1)
                fn = lambda x=x, t=t, c=c: unet(x, t, c)
            elif op == "vae":
                z = torch.randn(1, 4, lat, lat)
                fn = lambda z=z: vae.decode(z)
            elif op == "vae-tiny":
                # TAESD's architecture (AutoencoderTiny's defaults), random weights.
                tiny = AutoencoderTiny().eval()
                z = torch.randn(1, 4, lat, lat)
                fn = lambda z=z, tiny=tiny: tiny.decode(z)
            else:
                raise SystemExit(f"unknown op {op}")
            med, runs, peak = timed(args.runs, fn)
            print(json.dumps({"arch": arch, "op": op, "size": args.size, "threads": torch.get_num_threads(),
                              "median_s": med, "runs_s": runs, "peak_rss_mib": peak}), flush=True)


if __name__ == "__main__":
    main()
