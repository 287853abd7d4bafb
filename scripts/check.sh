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
prerequisite debug_kernel scripts/build-kernel.sh debug
kdir=$(scripts/build-kernel.sh standard 2>/dev/null)
prerequisite test_programs_build scripts/build-tests.sh
tests_bin=$(scripts/build-tests.sh --print-dir)
guest_tests=$("$tests_bin/mini_pipe_test" --list | wc -l)

echo "KTAP version 1"
echo "# kernels ready after $(($(date +%s) - start)) s"

# Host checks.
check() { # check NAME COMMAND...: one KTAP line for a host-side command
	local name=$1
	shift
	if "$@" >"$run/$name.log" 2>&1; then result OK "$name"; else result FAIL "$name" "$run/$name.log"; fi
}
plain_make() {
	local plain
	plain=$(mktemp -d)
	cp Kbuild Makefile mini_pipe.rs "$plain/" && cp -r src "$plain/" &&
		make -C "$plain" KDIR="$kdir" && [ -f "$plain/mini_pipe.ko" ]
	local rc=$?
	rm -rf "$plain"
	return $rc
}
check rustfmt make -s fmtcheck
check module_builds_clippy_clean scripts/build-module.sh --force "$kdir"
check plain_make_kdir plain_make
check test_programs_clippy_clean sh -c 'cd tests && cargo clippy --quiet --release --locked -- -D warnings'
check bench_smoke scripts/bench.sh --smoke

# The tests in a VM: the guest's KTAP lines, renumbered into this list.
guest() { # guest FLAVOUR EXPECTED TIMEOUT COMMAND...
	local flavour=$1 expected=$2 timeout=$3
	shift 3
	local out="$run/guest-$flavour.ktap" log="$run/vm-$flavour.log"
	echo "# $flavour kernel: $*"
	VM_LOG_DIR="$run/vm-$flavour" scripts/vm.sh --kernel "$flavour" --mem 1G --timeout "$timeout" -- "$@" \
		>"$out" 2>"$log" &
	local vm=$!
	tail -n +1 -f --pid=$vm "$out" 2>/dev/null |
		awk -v base="$n" -v tag="$flavour" '
			/^KTAP version/ || /^1\.\./ { next }
			/^(not )?ok [0-9]+ / {
				i = ($1 == "not") ? 3 : 2
				$i = base + (++count)
				$(i + 1) = tag ":" $(i + 1)
				print; fflush(); next
			}
			{ print; fflush() }'
	wait $vm
	local status=$?
	local ok fail
	ok=$(grep -cE '^ok [0-9]+ ' "$out")
	fail=$(grep -cE '^not ok [0-9]+ ' "$out")
	passed=$((passed + ok))
	failed=$((failed + fail))
	n=$((n + ok + fail))
	local missing=$((expected - ok - fail))
	while [ $missing -gt 0 ]; do
		result FAIL "$flavour:a test did not report (see $log)"
		missing=$((missing - 1))
	done
	# vm.sh's status is the command's, or 1 for a splat in the guest's kernel log, or 124.
	if grep -q 'kernel reported a problem' "$log"; then
		echo "# $flavour kernel: splats in the kernel log (see $log)"
	else
		echo "# $flavour kernel: 0 splats in the kernel log"
	fi
	if [ $status -eq 0 ] || ! grep -qE 'kernel reported a problem|timed out|without reporting' "$log"; then
		result OK "$flavour:guest_kernel_log_clean"
	else
		result FAIL "$flavour:guest_kernel_log_clean" "$log"
	fi
}
guest standard "$guest_tests" 1800 mini_pipe_test
guest debug "$((guest_tests + 1))" 3600 \
	sh -c 'kmemleak.sh start && mini_pipe_test; rc=$?; kmemleak.sh check || rc=1; exit $rc'

# The module's KUnit suites ran in the debug kernel each time it was loaded: report the
# cases of the first run of each suite, and fail a suite that failed in any later load.
dmesg="$run/debug-dmesg.txt"
tr -d '\r' <"$run/vm-debug/console.log" | sed 's/^\[[^]]*\] *//' >"$dmesg"
suites=$(sed -n 's/^ *# Subtest: \(mini_pipe_[a-z_]*\)$/\1/p' "$dmesg" | sort -u)
[ -n "$suites" ] || result FAIL "debug:kunit:no mini_pipe suite ran (see $dmesg)"
for suite in $suites; do
	awk -v s="$suite" '
		$0 ~ "^ *# Subtest: " s "$" { on = 1; next }
		on && $0 ~ "^(not )?ok [0-9]+ " s "$" { exit }
		on && /^ *(not )?ok [0-9]+ / { sub(/^ */, ""); print }' "$dmesg" >"$run/kunit-$suite.ktap"
	[ -s "$run/kunit-$suite.ktap" ] || result FAIL "debug:kunit:$suite:no cases reported" "$dmesg"
	while read -r line; do
		case $line in
		"ok "*) result OK "debug:kunit:$suite:${line#ok * }" ;;
		*) result FAIL "debug:kunit:$suite:${line#not ok * }" "$dmesg" ;;
		esac
	done <"$run/kunit-$suite.ktap"
	loads=$(grep -cE "^(not )?ok [0-9]+ $suite\$" "$dmesg")
	bad=$(grep -cE "^not ok [0-9]+ $suite\$" "$dmesg")
	if [ "$bad" -eq 0 ]; then
		result OK "debug:kunit:$suite:passed_in_all_${loads}_loads"
	else
		result FAIL "debug:kunit:$suite:failed in $bad of $loads loads" "$dmesg"
	fi
done

echo "1..$n"
echo "# total $(($(date +%s) - start)) s"
finish
