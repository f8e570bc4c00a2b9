#!/usr/bin/env bash
# A throwaway S3-compatible server on loopback for the test suite: s3s-fs, built once per machine
# from crates.io at a pinned version (scripts/tools.sh). `scripts/s3.sh start` starts it with a fresh
# data folder and a bucket `nanoimg-test`, and prints the environment the tests need (eval it);
# `scripts/s3.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${NANOIMG_S3_PORT:-59014}"
DIR="${NANOIMG_S3_DIR:-/tmp/nanoimg-test-s3-$PORT}"

stop() {
    if [ -f "$DIR/pid" ]; then
        kill "$(cat "$DIR/pid")" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}

start() {
    local BIN
    BIN="$(scripts/tools.sh path s3s-fs)"
    stop
    mkdir -p "$DIR/root/nanoimg-test"
    local key secret
    key="test$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    secret="$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')"
    "$BIN" --host 127.0.0.1 --port "$PORT" --access-key "$key" --secret-key "$secret" \
        "$DIR/root" >"$DIR/server.log" 2>&1 &
    echo $! >"$DIR/pid"
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    cat <<ENV
export NANOIMG_TEST_S3_URL=s3://nanoimg-test
export NANOIMG_TEST_S3_ROOT=$DIR/root/nanoimg-test
export AWS_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ALLOW_HTTP=true
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
ENV
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
