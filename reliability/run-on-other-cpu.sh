#!/usr/bin/env bash
# Runs the tests that compare greedy text on another machine's CPU, from binaries built on an
# AVX2-only machine (how reliability/avx512-xeon-tests.log was made on the GPU host's Xeon).
#
# Packing, on the build machine: `cargo test --workspace --no-run`, then `strip -o bin/NAME` each
# test binary named below and target/debug/wick, `tar c bin | xz > .avx512/bins.tar.xz`;
# `tar c models/SmolLM2-135M-Instruct models/all-MiniLM-L6-v2 | xz -1 | split -b 58000000 -a 1 -
# .avx512/m.` (the device carries 64 MiB a call). Each part travels in its own call and is
# copied to /tmp/parts there; the last call carries the last part, the binaries and this script.
cd "$(dirname "$0")/.."
echo "CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
echo "features: $(grep -m1 -o -w -E 'avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|avx512_bf16|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
ls -la .avx512
cp .avx512/m.? /tmp/parts/; cat /tmp/parts/m.? | xz -d | tar xf - || { echo "models did not unpack"; exit 1; }
tar xJf .avx512/bins.tar.xz || exit 1
mkdir -p /work && ln -sfn "$PWD" /work/main
mkdir -p target/debug && cp bin/wick target/debug/wick
run() { echo "=== $* (${MISTRALRS_FORCE_AVX2:+MISTRALRS_FORCE_AVX2=1})"; timeout 300 "$@" 2>&1 | grep -E "^test |test result|panicked|decided|within|agreement|margins" | cut -c1-400; }
for t in smollm2_generate cli_generate_real llama_quantized lora_quantized cli_merge server_adapters server_api; do
  run bin/$t --nocapture --test-threads 4
done
export MISTRALRS_FORCE_AVX2=1
run bin/smollm2_generate --nocapture
run bin/cli_generate_real --nocapture
