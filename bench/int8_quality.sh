#!/usr/bin/env bash
# What int8 weights cost in quality: the same prompts and seeds with the UNet on f32 and on int8
# weights (`--quantize`), compared image by image (PSNR in dB, mean absolute difference in
# 0..255 levels). Default model: the bundled nanoimg-emoji, whose weights are trained. With
# `--vae tiny` both decode with the tiny autoencoder, whose decoder an int8 model also runs on
# int8 weights: the table is then the cost of both.
#
#   bench/int8_quality.sh [--model NAME_OR_PATH] [--n IMAGES_PER_PROMPT] [--vae full|tiny]
#
# Images and the table go to target/int8-quality/.
set -euo pipefail
cd "$(dirname "$0")/.."
model=() n=4 vae=full
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=(--model "$2"); shift 2 ;;
    --n) n=$2; shift 2 ;;
    --vae) vae=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=target/int8-quality
rm -rf "$out" && mkdir -p "$out"
[ -x target/release/nanoimg ] || env -u RUSTC_WORKSPACE_WRAPPER cargo build --release -p nanoimg
prompts=("a smiling face with sunglasses" "a crying face" "a red heart" "a cat face")
for i in "${!prompts[@]}"; do
  for q in none int8; do
    target/release/nanoimg generate "${prompts[$i]}" "${model[@]}" --seed $((100 * i)) -n "$n" \
      --quantize "$q" --vae "$vae" -o "$out/p$i-$q.png" > /dev/null
  done
done
[ -x .venv-bench/bin/python ] || bench/setup_reference.sh
.venv-bench/bin/python - "$out" <<'PY'
import math, pathlib, sys
import numpy as np
from PIL import Image

out = pathlib.Path(sys.argv[1])
rows = []
for f in sorted(out.glob("p*-none*.png")):
    a = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(str(f).replace("-none", "-int8")).convert("RGB"), dtype=np.float64)
    mse = ((a - b) ** 2).mean()
    rows.append((f.name, 99.0 if mse == 0 else 10 * math.log10(255**2 / mse), np.abs(a - b).mean()))
for name, psnr, mad in rows:
    print(f"{name:<24} PSNR {psnr:6.2f} dB  mean |diff| {mad:5.2f}")
psnrs = sorted(r[1] for r in rows)
print(f"{len(rows)} images: PSNR median {psnrs[len(psnrs) // 2]:.2f} dB, min {psnrs[0]:.2f} dB; "
      f"mean |diff| {np.mean([r[2] for r in rows]):.2f} levels")
PY
