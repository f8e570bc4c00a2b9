#!/usr/bin/env bash
# NanoImg, PyTorch + diffusers and OpenVINO, back to back on this machine, and the ratio table.
#
#   bench/side_by_side.sh [--threads N] [--runs N] [--size PX]
#
# Builds the release binary and the pinned references (bench/setup_reference.sh) when missing,
# then times the same architectures with random weights (sd-turbo: text encoder, UNet batch 1 and
# 2, the tiny autoencoder, whole one- and four-step images with it; sd15: text encoder, UNet
# batch 1 and 2; sdxs-512: UNet and whole one-step image), one program at a time; then the UNet on int8 weights (NanoImg `--quantize int8`,
# OpenVINO through NNCF) for the UNet and whole-image rows. The JSON lines and the tables are kept in
# target/side-by-side/; the table is printed as Markdown (docs/benchmarks.md holds a copy).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2 runs=3 size=512
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=target/side-by-side
mkdir -p "$out"
[ -x target/release/nanoimg ] || env -u RUSTC_WORKSPACE_WRAPPER cargo build --release -p nanoimg
.venv-bench/bin/python -c "import torch, diffusers, openvino, nncf" 2>/dev/null || bench/setup_reference.sh
py=.venv-bench/bin/python
common=(--threads "$threads" --runs "$runs" --size "$size")
{
  grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /# cpu: /'
  grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512[a-z_0-9]*|amx[a-z_0-9]*|avx_vnni)$' \
    | tr '\n' ' ' | sed 's/^/# flags: /; s/$/\n/'
} > "$out/machine.txt"
cat "$out/machine.txt"
: > "$out/results.jsonl"
run() { "$@" 2>/dev/null | grep '^{' | tee -a "$out/results.jsonl"; }
tiny=(--arch sd-turbo --ops clip,unet,unet-cfg,vae-tiny)
run target/release/nanoimg bench "${tiny[@]}" "${common[@]}" --json
run target/release/nanoimg bench --arch sd-turbo --ops generate-tiny --steps 1 "${common[@]}" --json
run target/release/nanoimg bench --arch sd-turbo --ops generate-tiny --steps 4 "${common[@]}" --json
run target/release/nanoimg bench --arch sd15 --ops clip,unet,unet-cfg "${common[@]}" --json
sdxs=(--arch sdxs-512 --ops unet,generate-tiny --steps 1)
run target/release/nanoimg bench "${sdxs[@]}" "${common[@]}" --json
int8=(--quantize int8)
run target/release/nanoimg bench --arch sd-turbo --ops unet,unet-cfg "${int8[@]}" "${common[@]}" --json
run target/release/nanoimg bench --arch sd-turbo --ops generate-tiny --steps 1 "${int8[@]}" "${common[@]}" --json
run target/release/nanoimg bench --arch sd-turbo --ops generate-tiny --steps 4 "${int8[@]}" "${common[@]}" --json
run target/release/nanoimg bench --arch sd15 --ops unet,unet-cfg "${int8[@]}" "${common[@]}" --json
run target/release/nanoimg bench "${sdxs[@]}" "${int8[@]}" "${common[@]}" --json
q8=(--backend openvino-int8)
run $py bench/diffusers_reference.py "${q8[@]}" --arch sd-turbo --ops unet,unet-cfg "${common[@]}"
run $py bench/diffusers_reference.py "${q8[@]}" --arch sd-turbo --ops generate-tiny --steps 1 "${common[@]}"
run $py bench/diffusers_reference.py "${q8[@]}" --arch sd-turbo --ops generate-tiny --steps 4 "${common[@]}"
run $py bench/diffusers_reference.py "${q8[@]}" --arch sd15 --ops unet,unet-cfg "${common[@]}"
run $py bench/diffusers_reference.py "${q8[@]}" "${sdxs[@]}" "${common[@]}"
for backend in torch openvino; do
  run $py bench/diffusers_reference.py --backend $backend "${tiny[@]}" "${common[@]}"
  run $py bench/diffusers_reference.py --backend $backend --arch sd-turbo --ops generate-tiny --steps 1 "${common[@]}"
  run $py bench/diffusers_reference.py --backend $backend --arch sd-turbo --ops generate-tiny --steps 4 "${common[@]}"
  run $py bench/diffusers_reference.py --backend $backend --arch sd15 --ops clip,unet,unet-cfg "${common[@]}"
  run $py bench/diffusers_reference.py --backend $backend "${sdxs[@]}" "${common[@]}"
done
$py bench/ratio_table.py "$out/results.jsonl" "$out/machine.txt" | tee "$out/table.md"
