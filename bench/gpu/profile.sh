#!/usr/bin/env bash
# Per-kernel GPU time of one gpu_bench section under Nsight Compute (on the GPU machine):
#   bash gpu-bin/profile.sh train        # WICK_TRAIN_STEPS=3 by default for train
#   NCU_SKIP=30000 NCU_COUNT=4000 bash gpu-bin/profile.sh train   # a window of launches only
# (ncu costs milliseconds per profiled kernel: a training step has thousands; use a window.)
# Prints the kernels that took the most time in total (ncu's gpu__time_duration, clocks not
# locked, so the figures are those of a normal run, plus ncu's serialisation of launches).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-/tmp/wick-gpu}"
mkdir -p "$out"
for f in "$here"/*.xz; do [ -e "$f" ] && xz -d -k -f "$f" && chmod +x "${f%.xz}"; done
export WICK_TRAIN_STEPS="${WICK_TRAIN_STEPS:-3}"
window=()
[ -n "${NCU_SKIP:-}" ] && window+=(--launch-skip "$NCU_SKIP")
[ -n "${NCU_COUNT:-}" ] && window+=(--launch-count "$NCU_COUNT")
tag="$(echo "$*" | tr ' ' '_')"
"$here/gpu-run.sh" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
  --print-summary per-kernel "${window[@]}" "$here/gpu_bench" "$@" > "$out/ncu-$tag.csv" \
  2> "$out/ncu-$tag.err" || { tail -20 "$out/ncu-$tag.err"; exit 1; }
python3 "$here/ncu_top.py" "$out/ncu-$tag.csv" | tee "$out/ncu-$tag.txt"
