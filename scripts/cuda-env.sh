#!/usr/bin/env bash
# Source this file: sets up a CUDA 13.0 toolkit from pip packages (no driver, no system install)
# in the git-ignored cache .cache/cuda and exports CUDA_ROOT/PATH/CUDA_COMPUTE_CAP for the build.
#   source scripts/cuda-env.sh
# Pinned to 13.0.x: the GPU machines run driver 580 (CUDA 13.0), which rejects PTX from a newer nvcc.
_wick_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WICK_CUDA_PREFIX="${WICK_CUDA_PREFIX:-$_wick_root/.cache/cuda}"
export CUDA_ROOT="$WICK_CUDA_PREFIX/nvidia/cu13"
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  echo "cuda-env: installing the CUDA 13.0 toolkit from pip into $WICK_CUDA_PREFIX" >&2
  # One pip call: a second --target call into the same folder silently drops files.
  python3 -m pip install -q --no-deps --target "$WICK_CUDA_PREFIX" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 || return 1
fi
# The layout build tools expect: lib64, and unversioned names for the linker.
[ -e "$CUDA_ROOT/lib64" ] || ln -s lib "$CUDA_ROOT/lib64"
[ -e "$CUDA_ROOT/lib/libcudart.so" ] || ln -s libcudart.so.13 "$CUDA_ROOT/lib/libcudart.so"
[ -e "$CUDA_ROOT/lib/libnvrtc.so" ] || ln -s libnvrtc.so.13 "$CUDA_ROOT/lib/libnvrtc.so"
export CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# Smaller fatbins/PTX (42 MB -> 17 MB binary); cargo doesn't track this: `cargo clean -p candle-kernels` after changing it.
export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:---compress-mode=size}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
unset _wick_root
