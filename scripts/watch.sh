#!/bin/sh
# Watch mini_pipe's pipes live: one line per pipe per second, from their counters in debugfs.
#
# usage: watch.sh [-n SECONDS] [-d DIR]
#
# Runs where the module is loaded, as root, with debugfs mounted (DIR, default
# /sys/kernel/debug/mini_pipe; the test VM has it, and copies this script to /tests). Each line
# gives a pipe's name, the bytes written into it and read out of it in the last second, the
# wakeups sent on its wait queues in that second, the bytes queued now, and the readers and
# writers asleep now:
#
#   mini_pipe1 in=1048576B/s out=1044480B/s wakeups=31/s queued=4096 asleep=r0,w1
#
# -n SECONDS stops after that many seconds (default: run until interrupted). Plain POSIX sh
# and awk, so that it runs under busybox.
set -eu
# shellcheck disable=SC3040 # busybox sh and bash both have it
set -o pipefail 2>/dev/null || true

usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
count=-1 dir=/sys/kernel/debug/mini_pipe
while [ $# -gt 0 ]; do
	case $1 in
	-n) [ $# -ge 2 ] || usage; count=$2; shift 2 ;;
	-d) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
	*) usage ;;
	esac
done
[ -d "$dir" ] || { echo "watch.sh: no $dir (is mini_pipe loaded, debugfs mounted?)" >&2; exit 1; }

# One line per pipe: NAME bytes_written bytes_read wakeups queued readers_asleep writers_asleep
sample() {
	for f in "$dir"/*; do
		awk -v name="${f##*/}" -F': ' '
			{ v[$1] = $2 }
			END {
				print name, v["bytes_written"] + 0, v["bytes_read"] + 0,
					v["rd_wakeups"] + v["wr_wakeups"], v["queued"] + 0,
					v["readers_asleep"] + 0, v["writers_asleep"] + 0
			}' "$f"
	done
}

prev=$(sample)
while [ "$count" -ne 0 ]; do
	sleep 1
	now=$(sample)
	printf '%s\n%s\n' "$prev" "$now" | awk -v n="$(echo "$prev" | wc -l)" '
		NR <= n { w[$1] = $2; r[$1] = $3; k[$1] = $4; next }
		{
			printf "%s in=%dB/s out=%dB/s wakeups=%d/s queued=%d asleep=r%d,w%d\n",
				$1, $2 - w[$1], $3 - r[$1], $4 - k[$1], $5, $6, $7
		}'
	prev=$now
	count=$((count - 1))
done
