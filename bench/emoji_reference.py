#!/usr/bin/env python3
"""Times one whole image of the bundled model with PyTorch + diffusers, for docs/benchmarks.md.

Same folder, same settings as `nanoimg bench --model nanoimg-emoji --ops generate`: 64×64,
20 Euler steps, guidance 5 (so 20 batch-2 UNet steps), f32, median of N runs after a warm-up.

    .venv-bench/bin/python bench/emoji_reference.py --threads 2 --runs 5
"""

import argparse
import statistics
import time

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/nanoimg-emoji")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32, safety_checker=None)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def one():
        with torch.inference_mode():
            pipe("a smiling cat face", height=64, width=64, num_inference_steps=20, guidance_scale=5.0,
                 generator=torch.Generator().manual_seed(0))

    one()
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    print(f"diffusers {torch.__version__}: one 64x64 image, 20 steps, CFG: median {statistics.median(times):.3f}s "
          f"over {args.runs} runs ({', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
