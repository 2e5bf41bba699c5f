#!/usr/bin/env bash
# Runs a CUDA build of wick on a GPU machine: puts the CUDA 13 user-space libraries (cuBLAS,
# cuBLASLt, cuRAND, NVRTC) and the driver on LD_LIBRARY_PATH, then runs the command.
#   scripts/gpu-run.sh ./wick generate --device cuda ...
# The binary dlopens these at run time (see scripts/build-cuda.sh), so it links to none of them.
dirs=()
if py_nvidia="$(python3 -c 'import nvidia,os;print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)"; then
  for d in "$py_nvidia"/nvidia/*/lib "$py_nvidia"/nvidia/cu13/lib; do [ -d "$d" ] && dirs+=("$d"); done
fi
for d in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64 /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && dirs+=("$d")
done
LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$@"
