#!/bin/sh
# The demo, run in the guest by scripts/demo.sh: a reader and a writer meet in /dev/mini_pipe.
set -e
echo "# mini_pipe is loaded: $(grep '^mini_pipe ' /proc/modules | cut -d' ' -f1-2) bytes of code"
echo "\$ ls -l /dev/mini_pipe"
ls -l /dev/mini_pipe
echo "\$ cat /dev/mini_pipe &          # waits in open() for a writer"
cat /dev/mini_pipe &
cat=$!
# Let cat get there first: its open counts it as a reader before it waits (bounded: 10 s).
i=0
until grep -qx 'readers: 1' /sys/kernel/debug/mini_pipe/mini_pipe || [ $i -ge 200 ]; do
	sleep 0.05
	i=$((i + 1))
done
echo "\$ echo hi > /dev/mini_pipe"
echo hi >/dev/mini_pipe
wait $cat
echo "# cat printed what came through /dev/mini_pipe, saw end-of-file and exited"

# What the pipe counted meanwhile, told as a sentence (the numbers are in debugfs).
stats=/sys/kernel/debug/mini_pipe/mini_pipe
echo "\$ cat $stats"
cat "$stats"
awk -F': ' '{ v[$1] = $2 } END {
	printf "# In words: cat opened first and waited in open() for a writer (open_waits %d);", v["open_waits"]
	if (v["reader_sleeps"] > 0)
		printf " then it slept %d time(s) in read() until the bytes came (reader_sleeps);", v["reader_sleeps"]
	else
		printf " when it read, the bytes were already there (reader_sleeps 0);"
	printf " %d wakeups went to the wait queue of the readers (rd_wakeups): each open wakes whoever waits for a partner, the write of echo into the empty ring wakes a reader waiting for data, and the close of echo tells the reader that no writer is left;", v["rd_wakeups"]
	printf " %d bytes moved, in %d write and %d reads, the last read seeing end-of-file once echo had closed.\n", v["bytes_read"], v["writes"], v["reads"]
}' "$stats" | fold -s -w 96 | sed '2,$s/^/#   /'
