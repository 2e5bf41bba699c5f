#!/usr/bin/env bash
# Per-kernel GPU time of one gpu_bench section under Nsight Compute (on the GPU machine):
#   bash gpu-bin/profile.sh train        # WICK_TRAIN_STEPS=3 by default for train
# Prints the kernels that took the most time in total (ncu's gpu__time_duration, clocks not
# locked, so the figures are those of a normal run, plus ncu's serialisation of launches).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-/tmp/wick-gpu}"
mkdir -p "$out"
for f in "$here"/*.xz; do [ -e "$f" ] && xz -d -k -f "$f" && chmod +x "${f%.xz}"; done
export WICK_TRAIN_STEPS="${WICK_TRAIN_STEPS:-3}"
"$here/gpu-run.sh" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  --print-summary per-kernel "$here/gpu_bench" "$@" > "$out/ncu.csv" 2> "$out/ncu.err" || {
  tail -20 "$out/ncu.err"; exit 1; }
python3 "$here/ncu_top.py" "$out/ncu.csv" | tee "$out/ncu_top.txt"
