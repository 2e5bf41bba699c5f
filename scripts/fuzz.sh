#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed time, then prints what each found.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]          (default 600)
#   TARGETS="gguf_file chat_template" scripts/fuzz.sh 60     (a subset)
#
# For each target: builds the seed corpus from the real files (fuzz/make_seeds.py, plus the
# committed fuzz/seeds/<target>/), runs libFuzzer for SECONDS_PER_TARGET with limits that turn a
# hang (-timeout) or a memory blow-up (-rss_limit_mb, -malloc_limit_mb) into a finding, and counts
# the artifacts it wrote (fuzz/artifacts/<target>/crash-*, timeout-*, oom-*, leak-*). Prints a
# table, writes fuzz/out/summary.json and fuzz/out/<target>.log, and exits 1 if any target found
# anything (2 if a run could not be started at all).
#
# Toolchain: cargo-fuzz needs nightly-only compiler flags (-Z sanitizer, sancov passes). No
# nightly is installed or downloaded: the project's pinned stable rustc (rust-toolchain.toml)
# accepts them with RUSTC_BOOTSTRAP=1, set here for these builds only. This is the guide's
# "pinned nightly for fuzzing only": CI and every other build stay on plain stable.
#
# Environment: FUZZ_OUT (where the logs and summary.json go; fuzz/out), FUZZ_SANITIZER (address | none; default address), FUZZ_RSS_LIMIT_MB (2048),
# FUZZ_TIMEOUT_S (seconds one input may take before it counts as a hang; 10), TARGETS,
# FUZZ_DETECT_LEAKS (0): LeakSanitizer is off by default because tokenizers' caches make
# libFuzzer suspect a leak after every input and re-run it under a full leak scan (15x fewer
# executions); memory that keeps growing still ends the run at -rss_limit_mb.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

SECONDS_PER_TARGET="${1:-600}"
CARGO_FUZZ_VERSION=0.13.2
SANITIZER="${FUZZ_SANITIZER:-address}"
RSS_LIMIT_MB="${FUZZ_RSS_LIMIT_MB:-2048}"
TIMEOUT_S="${FUZZ_TIMEOUT_S:-10}"
DETECT_LEAKS="${FUZZ_DETECT_LEAKS:-0}"
ALL_TARGETS="safetensors_header gguf_file gguf_tokenizer tokenizer_json chat_template train_jsonl
  server_requests"
TARGETS="${TARGETS:-$ALL_TARGETS}"

FUZZ="$ROOT/fuzz"
TOOLS="$FUZZ/.tools"
OUT="${FUZZ_OUT:-$FUZZ/out}"
mkdir -p "$OUT"

if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (got '$SECONDS_PER_TARGET')" >&2
  exit 2
fi

# ---- cargo-fuzz, pinned, installed into fuzz/.tools (git-ignored) ----
if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
fi
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# Backtraces are captured on every error when this is set (slow, and not what users see).
unset RUST_BACKTRACE

# ---- seeds ----
if [ -d models/chatterbot-corpus ] && [ ! -f data/chatterbot/train.jsonl ]; then
  python3 scripts/chatterbot-to-jsonl.py
fi
python3 "$FUZZ/make_seeds.py" --out "$FUZZ/corpus" > "$OUT/seeds.log"
echo "seed corpora: $FUZZ/corpus (log: $OUT/seeds.log)"

# ---- build (release, debug assertions and overflow checks on) ----
BUILD=(--fuzz-dir "$FUZZ" -s "$SANITIZER" --debug-assertions)
for t in $TARGETS; do
  cargo fuzz build "${BUILD[@]}" "$t"
done

# ---- run ----
rows=()
found_any=0
failed_start=0
for t in $TARGETS; do
  corpus="$FUZZ/corpus/$t"
  seeds="$FUZZ/seeds/$t"
  artifacts="$FUZZ/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  dirs=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  extra=()
  [ -f "$FUZZ/dict/$t.dict" ] && extra+=("-dict=$FUZZ/dict/$t.dict")
  # The GGUF targets share a dictionary.
  [[ "$t" == gguf_* ]] && extra+=("-dict=$FUZZ/dict/gguf.dict")
  log="$OUT/$t.log"
  echo "== $t: ${SECONDS_PER_TARGET}s (log: $log)"
  set +e
  cargo fuzz run "${BUILD[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" \
    -timeout="$TIMEOUT_S" \
    -rss_limit_mb="$RSS_LIMIT_MB" \
    -malloc_limit_mb="$RSS_LIMIT_MB" \
    -detect_leaks="$DETECT_LEAKS" \
    -artifact_prefix="$artifacts/" \
    -print_final_stats=1 \
    "${extra[@]}" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ -z "$execs" ]; then
    # Stopped at a finding: the last status line ("#12345 ...") has the count.
    execs=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | sort -n | tail -1)
  fi
  execs="${execs:-0}"
  size=$(find "$corpus" -type f | wc -l)
  count() { find "$artifacts" -type f -name "$1-*" | wc -l; }
  crashes=$(count crash); timeouts=$(count timeout); ooms=$(count oom); leaks=$(count leak)
  findings=$((crashes + timeouts + ooms + leaks))
  [ "$findings" -gt 0 ] && found_any=1
  if [ "$execs" = 0 ]; then
    failed_start=1
    echo "   did not run (exit $rc); see $log"
  fi
  rows+=("$t $execs $size $crashes $timeouts $ooms $leaks $rc")
done

# ---- report ----
printf '\n%-20s %14s %8s %8s %8s %6s %6s\n' target executions corpus crashes hangs ooms leaks
for r in "${rows[@]}"; do
  # shellcheck disable=SC2086
  printf '%-20s %14s %8s %8s %8s %6s %6s\n' $(echo "$r" | cut -d' ' -f1-7)
done

python3 - "$OUT/summary.json" "$SECONDS_PER_TARGET" "$SANITIZER" "$RSS_LIMIT_MB" "$TIMEOUT_S" \
  "$DETECT_LEAKS" "$(rustc --version)" "${rows[@]}" <<'EOF'
import json, sys
path, secs, sanitizer, rss, timeout, leaks, rustc, *rows = sys.argv[1:]
targets = []
for r in rows:
    name, execs, corpus, crashes, hangs, ooms, leaks, rc = r.split()
    targets.append({"target": name, "executions": int(execs), "corpus": int(corpus),
                    "crashes": int(crashes), "hangs": int(hangs), "ooms": int(ooms),
                    "leaks": int(leaks), "exit_code": int(rc)})
json.dump({"seconds_per_target": int(secs), "sanitizer": sanitizer, "rss_limit_mb": int(rss),
           "timeout_s": int(timeout), "detect_leaks": leaks == "1", "rustc": rustc,
           "targets": targets},
          open(path, "w"), indent=1)
print(f"\nsummary: {path}")
EOF

if [ "$failed_start" = 1 ]; then exit 2; fi
if [ "$found_any" = 1 ]; then
  echo "findings: fuzz/artifacts/<target>/ (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz TARGET FILE)"
  exit 1
fi
echo "no crashes, hangs, OOMs or leaks"
