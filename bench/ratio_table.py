#!/usr/bin/env python3
"""The side-by-side tables from the JSON lines of `nanoimg bench --json` and
bench/diffusers_reference.py (every backend): seconds, NanoImg's ratio to each peer, peak RSS;
then, where int8 runs are present (`--quantize int8`, `--backend openvino-int8`), NanoImg's int8
UNet against the f32 peers and OpenVINO's int8 UNet.

    python3 bench/ratio_table.py target/side-by-side/results.jsonl [machine.txt]
"""

import json
import sys

ROWS = [
    ("sd-turbo", "clip", None, "SD-Turbo text encoding (OpenCLIP ViT-H, 77 tokens)"),
    ("sd-turbo", "unet", None, "SD-Turbo UNet step, batch 1"),
    ("sd-turbo", "unet-cfg", None, "SD-Turbo UNet step, batch 2 (CFG)"),
    ("sd-turbo", "vae-tiny", None, "tiny autoencoder decode"),
    ("sd-turbo", "generate-tiny", 1, "whole SD-Turbo image, 1 step, tiny autoencoder"),
    ("sd-turbo", "generate-tiny", 4, "whole SD-Turbo image, 4 steps, tiny autoencoder"),
    ("sd15", "clip", None, "SD 1.5 text encoding (CLIP ViT-L, 77 tokens)"),
    ("sd15", "unet", None, "SD 1.5 UNet step, batch 1"),
    ("sd15", "unet-cfg", None, "SD 1.5 UNet step, batch 2 (CFG)"),
    ("sdxs-512", "unet", None, "SDXS-512 UNet step, batch 1"),
    ("sdxs-512", "generate-tiny", 1, "whole SDXS-512 image, 1 step, its tiny decoder"),
]
BACKENDS = ["nanoimg", "torch", "openvino"]
INT8_BACKENDS = ["nanoimg-int8", "openvino-int8", "torch", "openvino"]


def main():
    results = {}
    size = threads = None
    with open(sys.argv[1]) as f:
        for line in f:
            r = json.loads(line)
            steps = r.get("steps") if r["op"].startswith("generate") else None
            results[r["arch"], r["op"], steps, r.get("backend", "nanoimg")] = r
            size, threads = r["size"], r["threads"]
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            print("".join(f.readlines()).rstrip())
        print()
    print(f"{size}×{size}, {threads} threads, f32, median seconds (peak RSS MiB)\n")
    print("| operation | NanoImg | PyTorch + diffusers | OpenVINO | vs PyTorch | vs OpenVINO |")
    print("|---|---:|---:|---:|---:|---:|")
    for arch, op, steps, label in ROWS:
        got = [results.get((arch, op, steps, b)) for b in BACKENDS]
        if not any(got):
            continue
        cells = [f"{g['median_s']:.2f} ({g['peak_rss_mib']:.0f})" if g else "—" for g in got]
        ratios = [
            f"{got[0]['median_s'] / g['median_s']:.2f}×" if got[0] and g else "—" for g in got[1:]
        ]
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")
    int8_rows = [row for row in ROWS if results.get((*row[:3], "nanoimg-int8"))]
    if not int8_rows:
        return
    print("\nUNet on int8 weights (text encoder and decoder f32 in both), median seconds (peak RSS MiB)\n")
    print("| operation | NanoImg int8 | OpenVINO int8 | vs PyTorch f32 | vs OpenVINO f32 | vs OpenVINO int8 |")
    print("|---|---:|---:|---:|---:|---:|")
    for arch, op, steps, label in int8_rows:
        got = [results.get((arch, op, steps, b)) for b in INT8_BACKENDS]
        cells = [f"{g['median_s']:.2f} ({g['peak_rss_mib']:.0f})" if g else "—" for g in got[:2]]
        ratios = [
            f"{got[0]['median_s'] / g['median_s']:.2f}×" if g else "—" for g in (got[2], got[3], got[1])
        ]
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")


if __name__ == "__main__":
    main()
