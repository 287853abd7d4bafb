#!/usr/bin/env bash
# Build mini_pipe.ko against a kernel build directory, with clippy, and fail on any warning.
#
# usage: scripts/build-module.sh [--force] KDIR
#
# Incremental: a no-op when nothing changed, unless --force, which rebuilds from clean so
# that every warning shows. The compiler's output is in .build.log.
set -euo pipefail

usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
force=0
[ "${1:-}" = --force ] && { force=1; shift; }
[ $# -eq 1 ] || usage
kdir=$1
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
mk=(make -C "$kdir" M="$top" LLVM=-19 CLIPPY=1)
# One build at a time in this tree (two VMs started together would both build).
exec 9>"$top/.build.lock"
flock 9

[ $force -eq 0 ] || "${mk[@]}" clean >/dev/null
if ! "${mk[@]}" modules >"$top/.build.log" 2>&1; then
	cat "$top/.build.log" >&2
	echo "build-module: the module did not build" >&2
	exit 1
fi
if grep -qE '^(warning|error)(\[|:)' "$top/.build.log"; then
	cat "$top/.build.log" >&2
	echo "build-module: the build has warnings" >&2
	exit 1
fi
