#!/usr/bin/env bash
# Copies what a GPU run needs into one folder (default: gpu-bin/ of the checkout the device
# tool sends, git-ignored): the stripped binaries from scripts/build-cuda.sh and the scripts.
#   bench/gpu/stage.sh [DEST]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
dest="${1:-$root/gpu-bin}"
mkdir -p "$dest"
cp "$target/release/wick.stripped" "$dest/wick"
cp "$target/release/wick-gpu-bench.stripped" "$dest/gpu_bench"
cp "$root/scripts/gpu-run.sh" "$root"/bench/gpu/{run.sh,profile.sh,torch_ref.py,table.py,ncu_top.py} "$dest/"
# The device tool carries at most 64 MiB: compress the binaries (run.sh unpacks them).
rm -f "$dest"/*.xz
xz -T2 -6 -f "$dest/wick" "$dest/gpu_bench"
du -sh "$dest"
