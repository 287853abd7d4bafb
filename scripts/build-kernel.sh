#!/usr/bin/env bash
# Build (or find in the cache) a test kernel for mini_pipe.
#
# usage: scripts/build-kernel.sh [--series SERIES] [FLAVOUR]     (FLAVOUR: standard, the default)
#
# x86_64 tinyconfig plus kernel/FLAVOUR.config, built with LLVM=-19 out of tree in
# ${XDG_CACHE_HOME:-~/.cache}/mini_pipe/, keyed by the pinned source (kernel/pins/SERIES.sh;
# SERIES defaults to the newest in kernel/pin.sh), the fragment and the toolchain versions:
# with a warm cache this is a no-op, and each series has its builds side by side. Prints the
# build directory (usable as KDIR) on stdout; build output goes to its build.log.
set -euo pipefail

usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=kernel/pin.sh
. "$top/kernel/pin.sh"
series=$KERNEL_SERIES_NEWEST
if [ "${1:-}" = --series ]; then
	[ $# -ge 2 ] || usage
	series=$2
	shift 2
fi
flavour=${1:-standard}
[ $# -le 1 ] || usage
kernel_pins "$series" || exit 2
fragment="$top/kernel/$flavour.config"
[ -f "$fragment" ] || { echo "build-kernel: no fragment $fragment" >&2; usage; }
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mini_pipe
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf 'build-kernel: %s\n' "$*" >&2; }

# Everything that changes the result is in the key.
fragments=("$fragment")
[ "$flavour" = standard ] || fragments=("$top/kernel/standard.config" "$fragment")
key=$( {
	cat "$top/kernel/pins/$series.sh" "${fragments[@]}"
	rustc --version; bindgen --version; clang-19 --version | head -n1
} | sha256sum | cut -c1-12)
out="$cache/kernel-$KERNEL_DEB_VERSION-$flavour-$key"
out=${out//\~/_}

if [ -f "$out/.built" ]; then
	say "cached: $out"
	echo "$out"
	exit 0
fi

src=$("$top/scripts/fetch-kernel.sh" --series "$series" "$cache/src")
mkdir -p "$out"
say "building $flavour kernel from $(basename "$src") into $out (about 5 minutes on 2 cores)"
start=$(date +%s)
mk=(make -C "$src" O="$out" ARCH=x86_64 LLVM=-19 -j"$(nproc)")
{
	"${mk[@]}" tinyconfig
	"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${fragments[@]}"
	"${mk[@]}" olddefconfig
} >"$out/build.log" 2>&1
# merge_config does not fail on options Kconfig dropped: check that each one stuck.
for f in "${fragments[@]}"; do
	grep -E '^CONFIG_[A-Z0-9_]+=' "$f" | while IFS= read -r line; do
		grep -qx -- "$line" "$out/.config" || { say "config did not take: $line (see $out/build.log)"; exit 1; }
	done
done
if ! "${mk[@]}" all >>"$out/build.log" 2>&1; then
	tail -n 30 "$out/build.log" >&2
	say "kernel build failed; full log: $out/build.log"
	exit 1
fi
touch "$out/.built"
say "built in $(($(date +%s) - start)) s"
echo "$out"
