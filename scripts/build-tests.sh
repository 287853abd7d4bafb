#!/usr/bin/env bash
# Build the guest's test programs (tests/, Rust) as static binaries.
#
# usage: scripts/build-tests.sh [--print-dir]
#
# --print-dir prints the directory holding the binaries instead of building.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
dir="$top/tests/target/$target/release"
if [ "${1:-}" = --print-dir ]; then
	echo "$dir"
	exit 0
fi
[ $# -eq 0 ] || { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH"
# glibc, linked statically: the guest has no shared libraries. With an explicit --target the
# flag applies to the test programs only, not to build scripts.
RUSTFLAGS="-C target-feature=+crt-static -D warnings" \
	cargo build --quiet --release --locked --manifest-path "$top/tests/Cargo.toml" --target $target
