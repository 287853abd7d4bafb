#!/usr/bin/env bash
# The whole test suite: what `make check` and .ci/run run.
#
# usage: scripts/check.sh
#
# Installs what is missing, builds the test kernel (cached), then checks on the host
# (rustfmt, the module built with clippy and no warnings, a plain `make KDIR=...`, the
# test programs built with clippy and no warnings) and runs the tests in the VM. Prints
# KTAP; the last line is `N passed, N failed`. Exits non-zero if anything failed.
# The full output is also kept in the cache's runs/ directory.
set -uo pipefail

[ $# -eq 0 ] || { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$HOME/.cargo/bin:$PATH"
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mini_pipe
run=$cache/runs/check-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run"
exec > >(tee "$run/check.log") 2>&1

passed=0 failed=0 n=0
result() { # result OK|FAIL NAME [LOGFILE]
	n=$((n + 1))
	if [ "$1" = OK ]; then
		passed=$((passed + 1))
		echo "ok $n $2"
	else
		failed=$((failed + 1))
		[ -z "${3:-}" ] || tail -n 40 "$3" | sed "s/^/# $2: /"
		echo "not ok $n $2"
	fi
}
finish() {
	echo "# logs: $run"
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
}
# A step the rest depends on: if it fails, count it and stop.
prerequisite() { # prerequisite NAME COMMAND...
	local name=$1
	shift
	if "$@" >"$run/$name.log" 2>&1; then
		return 0
	fi
	echo "KTAP version 1"
	result FAIL "$name" "$run/$name.log"
	finish
}

start=$(date +%s)
prerequisite setup scripts/setup.sh
prerequisite kernel scripts/build-kernel.sh standard
kdir=$(scripts/build-kernel.sh standard 2>/dev/null)
prerequisite test_programs_build scripts/build-tests.sh
tests_bin=$(scripts/build-tests.sh --print-dir)
guest_tests=$("$tests_bin/mini_pipe_test" --list | wc -l)
host_checks=4

echo "KTAP version 1"
echo "1..$((host_checks + guest_tests + 1))"
echo "# kernel $(basename "$kdir"), ready after $(($(date +%s) - start)) s"

# Host checks.
if make -s fmtcheck >"$run/fmt.log" 2>&1; then result OK rustfmt; else result FAIL rustfmt "$run/fmt.log"; fi
if scripts/build-module.sh --force "$kdir" >"$run/module.log" 2>&1; then
	result OK module_builds_clippy_clean
else
	result FAIL module_builds_clippy_clean "$run/module.log"
fi
plain=$(mktemp -d)
cp Kbuild Makefile mini_pipe.rs "$plain/" && cp -r src "$plain/"
if make -C "$plain" KDIR="$kdir" >"$run/plain.log" 2>&1 && [ -f "$plain/mini_pipe.ko" ]; then
	result OK plain_make_kdir
else
	result FAIL plain_make_kdir "$run/plain.log"
fi
rm -rf "$plain"
if (cd tests && cargo clippy --quiet --release --locked -- -D warnings) >"$run/tests-clippy.log" 2>&1; then
	result OK test_programs_clippy_clean
else
	result FAIL test_programs_clippy_clean "$run/tests-clippy.log"
fi

# The tests in the VM: renumber the guest's KTAP lines into this plan.
base=$n
VM_LOG_DIR="$run/vm-standard" scripts/vm.sh --timeout 1800 -- mini_pipe_test >"$run/guest.ktap" 2>"$run/vm.log" &
vm=$!
tail -n +1 -f --pid=$vm "$run/guest.ktap" 2>/dev/null |
	awk -v base="$base" '
		/^KTAP version/ || /^1\.\./ { next }
		/^(not )?ok [0-9]+ / { sub(/ok [0-9]+ /, "ok " $(($1 == "not") ? 3 : 2) + base " "); print; fflush(); next }
		{ print; fflush() }'
wait $vm
vm_status=$?
seen_ok=$(grep -cE '^ok [0-9]+ ' "$run/guest.ktap")
seen_fail=$(grep -cE '^not ok [0-9]+ ' "$run/guest.ktap")
passed=$((passed + seen_ok))
failed=$((failed + seen_fail))
n=$((n + seen_ok + seen_fail))
missing=$((guest_tests - seen_ok - seen_fail))
while [ $missing -gt 0 ]; do
	result FAIL "guest test did not report (see $run/vm.log)"
	missing=$((missing - 1))
done
# vm.sh's status is the test program's, or 1 for a splat in the guest's kernel log, or 124.
if [ $vm_status -eq 0 ] || ! grep -qE 'kernel reported a problem|timed out|without reporting' "$run/vm.log"; then
	result OK guest_kernel_log_clean
else
	result FAIL guest_kernel_log_clean "$run/vm.log"
fi
echo "# total $(($(date +%s) - start)) s"
finish
