#!/bin/sh
# kmemleak around a test run in the debug kernel (scripts/check.sh).
#   kmemleak.sh start   forget what boot left behind
#   kmemleak.sh check   scan, and report every object leaked since; KTAP, exit 1 on a leak
#
# Every scan must be seen to run: a write of `scan` runs the scan before it returns, and fails
# (EPERM) when kmemleak is off, whether by kmemleak=off or because it disabled itself after an
# error of its own (it then logs "Kernel memory leak detector disabled"). A scan that did not
# run finds nothing, so it fails `check` instead of passing it. `check` ends with the line
# "# kmemleak: 2 of 2 scans ran", which scripts/check.sh looks for.
K=/sys/kernel/debug/kmemleak
[ -e $K ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
[ -e $K ] || { echo "kmemleak.sh: no $K (not the debug kernel?)"; exit 1; }
# write WORD: write WORD to kmemleak; say why and fail if it was refused.
write() {
	if ! err=$(printf '%s\n' "$1" 2>&1 >$K); then
		echo "# kmemleak: writing '$1' to $K refused${err:+: $err} (is kmemleak off?)"
		return 1
	fi
}
case $1 in
start)
	write scan && write clear || exit 1
	;;
check)
	# kmemleak reports only objects older than 5 seconds that two scans found unreferenced;
	# that age is its own rule, so this is the one wait here that must be a sleep.
	scans=0
	write scan && scans=$((scans + 1))
	sleep 6
	write scan && scans=$((scans + 1))
	echo "# kmemleak: $scans of 2 scans ran"
	if ! report=$(cat $K 2>&1); then
		echo "# kmemleak: reading $K failed: $report"
		scans=-1
	fi
	leaks=$(printf '%s\n' "$report" | grep -c '^unreferenced object')
	if [ "$scans" -eq 2 ] && [ "$leaks" -eq 0 ]; then
		echo "ok 1 kmemleak_no_leaks"
	else
		[ "$leaks" -eq 0 ] || printf '%s\n' "$report" | sed 's/^/# kmemleak: /'
		echo "not ok 1 kmemleak_no_leaks"
		exit 1
	fi
	;;
*)
	echo "usage: kmemleak.sh start|check" >&2
	exit 2
	;;
esac
