#!/usr/bin/env python3
"""The FLUX table of docs/benchmarks.md from bench/flux_side_by_side.sh's JSON lines: per size and
backend the measured steps (2 + 4 and 1 + 2 blocks), one unit (1 double + 2 single blocks:
T(2,4) − T(1,2)), the rest of the step (2·T(1,2) − T(2,4)), the full 19 + 38-block step
extrapolated (19 units + the rest), peak RSS of the 2 + 4 run, and NanoImg / PyTorch."""

import json
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
    t = {(r["backend"], r["size"], r["arch"]): r for r in rows}
    print("| size | backend | 2+4 blocks s | 1+2 blocks s | one unit s | rest s | full 19+38 s (extrapolated) | peak RSS 2+4 MiB |")
    print("|---|---|---|---|---|---|---|---|")
    full = {}
    for size in sorted({r["size"] for r in rows}):
        for backend in ("nanoimg", "pytorch"):
            a, b = t.get((backend, size, "flux-2-4")), t.get((backend, size, "flux-1-2"))
            if not a or not b:
                continue
            ta, tb = a["median_s"], b["median_s"]
            unit, rest = ta - tb, 2 * tb - ta
            full[(backend, size)] = 19 * unit + rest
            print(f"| {size}² | {backend} | {ta:.2f} | {tb:.2f} | {unit:.2f} | {rest:.2f} | "
                  f"{full[(backend, size)]:.1f} | {a['peak_rss_mib']:.0f} |")
    for size in sorted({s for _, s in full}):
        if ("nanoimg", size) in full and ("pytorch", size) in full:
            print(f"\n{size}²: NanoImg / PyTorch, full step = "
                  f"{full[('nanoimg', size)] / full[('pytorch', size)]:.2f}")


if __name__ == "__main__":
    main()
