#!/usr/bin/env bash
# Regenerate logs/ from real runs: the demo, the test suite on every kernel, the benchmarks.
#
# usage: scripts/logs.sh
#
# Each file starts with the date, the commit (marked -dirty if the tree has uncommitted
# changes), the host and the toolchain; the VM's own lines in it name the guest kernel and
# the accelerator. Commit the result on its own, after the code it ran.
set -euo pipefail

[ $# -eq 0 ] || { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$HOME/.cargo/bin:$PATH"
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!logs' || echo -dirty)
mkdir -p logs

stamp() {
	echo "# $1"
	echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit, $(nproc) CPUs, $(rustc --version)"
	echo "# test kernels: $(kernels), VM_ACCEL=${VM_ACCEL:-probe}"
}
kernels() { # the pinned source of every series, newest first
	(
		. kernel/pin.sh
		for s in $KERNEL_SERIES_LIST; do
			kernel_pins "$s" && printf '%s %s; ' "$KERNEL_PKG" "$KERNEL_DEB_VERSION"
		done
	) | sed 's/; $//'
}
run() { # run NAME DESCRIPTION COMMAND...
	local name=$1 what=$2
	shift 2
	{
		stamp "$what: $*"
		"$@" 2>&1 || echo "# exit status $?"
	} >"logs/$name.log"
	echo "logs/$name.log: $(tail -n 1 "logs/$name.log")"
}
run demo "make demo" make -s demo
run check "make check (the standard kernel of every series, the debug kernel of the newest)" make -s check
# The benchmark stamps its own files in logs/bench/ (the newest series) and logs/bench/SERIES/.
run bench-run "make bench" make -s bench
for s in $(. kernel/pin.sh && echo "$KERNEL_SERIES_LIST"); do
	[ "$s" = "$(. kernel/pin.sh && echo "$KERNEL_SERIES_NEWEST")" ] ||
		run "bench-run-$s" "make bench SERIES=$s" make -s bench SERIES="$s"
done
