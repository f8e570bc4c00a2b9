#!/usr/bin/env bash
# Command-line tools the test suite runs, built once per machine from crates.io at pinned
# versions, into a folder outside the clone ($NANOIMG_TOOLS, default ~/.cache/nanoimg/tools), so a
# fresh clone on the same machine does not build them again. `scripts/tools.sh path NAME` prints
# the binary's path, building it first if it is missing or another version.
set -euo pipefail
ROOT="${NANOIMG_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/nanoimg/tools}"

# name  crate  version  version-line  extra install flags
spec() {
    case "$1" in
    s3s-fs) echo "s3s-fs 0.14.1 --features binary" ;;
    cargo-machete) echo "cargo-machete 0.9.2" ;;
    *)
        echo "unknown tool $1" >&2
        exit 2
        ;;
    esac
}

path() {
    local name="$1" crate version flags dir bin
    read -r crate version flags <<<"$(spec "$name")"
    dir="$ROOT/$crate-$version"
    bin="$dir/bin/$name"
    if [ ! -x "$bin" ]; then
        echo "building $crate $version (once per machine, into $dir)" >&2
        # shellcheck disable=SC2086
        cargo install --quiet --locked "$crate" --version "$version" $flags --root "$dir.tmp" >&2
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
    fi
    echo "$bin"
}

case "${1:-}" in
path) path "$2" ;;
*)
    echo "usage: $0 path s3s-fs|cargo-machete" >&2
    exit 2
    ;;
esac
