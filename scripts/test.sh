#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test in the workspace. This is the README's
# test command and what CI runs (.ci/run). Anything a test needs is set up here, not by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
