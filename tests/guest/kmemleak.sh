#!/bin/sh
# kmemleak around a test run in the debug kernel (scripts/check.sh).
#   kmemleak.sh start   forget what boot left behind
#   kmemleak.sh check   scan, and report every object leaked since; KTAP, exit 1 on a leak
K=/sys/kernel/debug/kmemleak
[ -e $K ] || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
[ -e $K ] || { echo "kmemleak.sh: no $K (not the debug kernel?)"; exit 1; }
case $1 in
start)
	echo scan >$K
	echo clear >$K
	;;
check)
	# kmemleak reports only objects older than 5 seconds that two scans found unreferenced;
	# that age is its own rule, so this is the one wait here that must be a sleep.
	echo scan >$K
	sleep 6
	echo scan >$K
	leaks=$(grep -c '^unreferenced object' $K)
	if [ "$leaks" -eq 0 ]; then
		echo "ok 1 kmemleak_no_leaks"
	else
		sed 's/^/# kmemleak: /' $K
		echo "not ok 1 kmemleak_no_leaks"
		exit 1
	fi
	;;
*)
	echo "usage: kmemleak.sh start|check" >&2
	exit 2
	;;
esac
