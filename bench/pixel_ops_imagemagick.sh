#!/usr/bin/env bash
# The pixel operations of `cargo bench -p nanoimg-edit --bench ops`, timed with ImageMagick on
# the same 2448×1632 picture shape, for docs/benchmarks.md. The picture is read from IM's own
# memory-mapped format (MPC), so the times are the operations, not decoding; the time to read
# and discard the picture is measured and subtracted. Needs ImageMagick (Debian: imagemagick).
set -euo pipefail
command -v convert >/dev/null || { echo "install ImageMagick first (apt-get install imagemagick)"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
convert -size 2448x1632 gradient:red-blue -attenuate 0.2 +noise Uniform "$dir/in.mpc"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ms() { # median of 7 runs of: convert in.mpc ARGS null:
    for _ in 1 2 3 4 5 6 7; do
        s=$(date +%s%N); convert "$dir/in.mpc" "$@" null: ; e=$(date +%s%N)
        echo $(( (e - s) / 1000000 ))
    done | median
}
for threads in 1 "$(nproc)"; do
    export MAGICK_THREAD_LIMIT=$threads
    base=$(time_ms)
    echo "ImageMagick $(convert -version | head -1 | awk '{print $3}'), $threads thread(s); read+discard baseline ${base} ms"
    for op in "resize 50% (Lanczos)|-filter Lanczos -resize 50%" "gaussian blur sigma 3 (-blur, separable)|-blur 0x3" "gaussian blur sigma 3 (-gaussian-blur, 2-D kernel)|-gaussian-blur 0x3" \
              "rotate 15° (bicubic)|-interpolate bicubic -background white -rotate 15" "rotate 90°|-rotate 90" \
              "flip|-flop" "brightness|-evaluate add 20%"; do
        name=${op%%|*}; args=${op#*|}
        # shellcheck disable=SC2086
        t=$(time_ms $args)
        echo "$name: $(( t - base )) ms"
    done
done
