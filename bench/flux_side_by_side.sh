#!/usr/bin/env bash
# One FLUX.1 transformer step, NanoImg against PyTorch + diffusers, back to back on the same
# threads: the real width with 2 + 4 and 1 + 2 blocks at 256² and 512² (each in its own process,
# so each peak RSS is its own), then the per-unit times and the full 19 + 38-block step
# extrapolated (bench/flux_table.py). Needs bench/setup_reference.sh and a release build
# (`cargo build --release -p nanoimg`); the random-weight transformers (7.5 GB) are written once
# into target/bench-models.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
RUNS="${RUNS:-3}"
out="${1:-target/flux-bench.jsonl}"
: > "$out"
grep -m1 '^model name' /proc/cpuinfo >&2
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512_vnni|amx_tile)$' | tr '\n' ' ' >&2
echo >&2
for size in 256 512; do
    for arch in flux-2-4 flux-1-2; do
        target/release/nanoimg bench --arch "$arch" --ops flux-step --size "$size" \
            --threads "$THREADS" --runs "$RUNS" --json | tee -a "$out"
        .venv-bench/bin/python bench/flux_reference.py --arch "$arch" --size "$size" \
            --threads "$THREADS" --runs "$RUNS" | tee -a "$out"
    done
done
.venv-bench/bin/python bench/flux_table.py "$out"
