#!/bin/sh
# The demo, run in the guest by scripts/demo.sh: a reader and a writer meet in /dev/mini_pipe.
set -e
echo "# mini_pipe is loaded: $(grep '^mini_pipe ' /proc/modules | cut -d' ' -f1-2) bytes of code"
echo "\$ ls -l /dev/mini_pipe"
ls -l /dev/mini_pipe
echo "\$ cat /dev/mini_pipe &          # waits in open() for a writer"
cat /dev/mini_pipe &
cat=$!
echo "\$ echo hi > /dev/mini_pipe"
echo hi >/dev/mini_pipe
wait $cat
echo "# cat printed what came through /dev/mini_pipe, saw end-of-file and exited"
