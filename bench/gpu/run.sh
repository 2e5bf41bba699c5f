#!/usr/bin/env bash
# One GPU run, on the GPU machine: wick's op checks and timings, then PyTorch's timings of the
# same work on the same card, then the table of ratios (printed last).
#   bash gpu-bin/run.sh [sections...]     (sections: checks gemm decode prefill train embed attn)
# Expects the staged folder made by bench/gpu/stage.sh: gpu_bench, wick, gpu-run.sh, *.py.
set -o pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-/tmp/wick-gpu}"
mkdir -p "$out"
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(checks gemm decode prefill train embed attn)
# Binaries may travel xz-compressed (the device tool carries at most 64 MiB).
for f in "$here"/*.xz; do [ -e "$f" ] && xz -d -k -f "$f" && chmod +x "${f%.xz}"; done
card="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/card.txt"
export PYTHONUNBUFFERED=1
torch_sections=()
for s in "${sections[@]}"; do [ "$s" != checks ] && torch_sections+=("$s"); done
timeout "${WICK_BENCH_TIMEOUT:-300}" "$here/gpu-run.sh" "$here/gpu_bench" "${sections[@]}" 2>&1 | tee "$out/wick.log"
if [ ${#torch_sections[@]} -gt 0 ]; then
  timeout "${WICK_TORCH_TIMEOUT:-240}" python3 "$here/torch_ref.py" "${torch_sections[@]}" 2>&1 |
    grep -v Warning | tee "$out/torch.log"
else
  : > "$out/torch.log"
fi
grep -E "^CHECK.*FAIL|^CHECKS|^ERROR" "$out/wick.log" "$out/torch.log"
python3 "$here/table.py" "$out/wick.log" "$out/torch.log" "$card" | tee "$out/table.md"
