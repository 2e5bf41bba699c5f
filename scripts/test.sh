#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test on the real models.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/fetch-models.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
