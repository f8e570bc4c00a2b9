#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the test suite: `scripts/postgres.sh start` installs
# Debian's `postgresql` package if it is missing, makes a new cluster under $NANOIMG_PG_DIR (trust
# auth, loopback only) and prints the admin URL; `scripts/postgres.sh stop` stops it and removes
# the cluster. Tests create one database each under that URL.
set -euo pipefail
PORT="${NANOIMG_PG_PORT:-55432}"
DIR="${NANOIMG_PG_DIR:-/tmp/nanoimg-test-pg-$PORT}"
USER_NAME=nanoimg

bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

# Runs a command as the `postgres` system user when we are root (the server refuses to run as
# root), as ourselves otherwise.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop() {
    local bin
    bin="$(bindir)" || return 0
    if [ -f "$DIR/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
}

start() {
    local bin
    if ! bin="$(bindir)"; then
        echo "installing Debian's postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends postgresql >&2
        bin="$(bindir)"
    fi
    stop
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    as_owner "$bin/initdb" -D "$DIR/data" -U "$USER_NAME" -A trust -E UTF8 --no-sync >/dev/null
    as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c max_connections=300" \
        start >/dev/null
    echo "postgres://$USER_NAME@127.0.0.1:$PORT/postgres"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
