#!/usr/bin/env bash
# Builds the stripped release `wick` binary and the GPU bench (`wick-gpu-bench`) with the `cuda`
# feature on a machine with no GPU and no driver, from a clean clone:
#   scripts/build-cuda.sh     # -> $CARGO_TARGET_DIR/release/{wick,wick-gpu-bench}.stripped
# Linking without a driver: candle-core 0.11.1 asks cudarc for `dynamic-linking` (-lcuda -lcublas
# ...), which needs the driver's libraries at link time. We build against a copy of candle-core
# whose manifest says `dynamic-loading` instead (one word, patched here into the target dir; no
# third-party source in the repo): cudarc then dlopens libcuda/libcublas/libcublasLt at run time,
# and the same binary still runs its CPU path where there is no GPU. Cargo rewrites Cargo.lock
# for the patch; the original is restored on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
target="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TARGET_DIR="$target"
mkdir -p "$target"

# One build at a time, so the Cargo.lock saved below is never a patched one.
exec 9>"$target/.build-cuda.lock"
flock 9
cp Cargo.lock "$target/Cargo.lock.before-cuda"
trap 'cp "$target/Cargo.lock.before-cuda" "$root/Cargo.lock"' EXIT

patched="$target/wick-patched/candle-core"
if [ ! -f "$patched/.wick-patched" ]; then
  registry_src="$(dirname "$(cargo metadata --format-version 1 --locked |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="candle-core"))')")"
  rm -rf "$patched"
  mkdir -p "$(dirname "$patched")"
  cp -r "$registry_src" "$patched"
  grep -q '"dynamic-linking",' "$patched/Cargo.toml"
  sed -i 's/"dynamic-linking",/"dynamic-loading",/' "$patched/Cargo.toml"
  touch "$patched/.wick-patched"
fi

cargo build --release --config "patch.crates-io.candle-core.path=\"$patched\"" \
  -p wick-cli --features cuda "$@"
for bin in "$target/release/wick" "$target/release/wick-gpu-bench"; do
  strip -o "$bin.stripped" "$bin"
  ls -l "$bin.stripped"
done
