#!/usr/bin/env bash
# The whole test suite: what `make check` and .ci/run run.
#
# usage: scripts/check.sh        (SERIES="7.2" or "7.3 7.2" in the environment: those series only)
#
# Installs what is missing, builds the test kernels (cached), then checks on the host
# (rustfmt, the module built with clippy and no warnings against each series, a plain
# `make KDIR=...` against each, the test programs built with clippy and no warnings) and runs
# the tests in the VM: the standard kernel of every series in kernel/pin.sh, and the debug
# kernel of the newest. Results of an older series carry its name (`standard-7.2:...`). Prints
# KTAP; the last line is `N passed, N failed`. Exits non-zero if anything failed.
# The full output is also kept in the cache's runs/ directory.
# shellcheck disable=SC2317 # the functions below run through prerequisite and check
set -uo pipefail

[ $# -eq 0 ] || { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
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

# shellcheck source=kernel/pin.sh
. kernel/pin.sh
series_list=${SERIES:-$KERNEL_SERIES_LIST}
for s in $series_list; do kernel_pins "$s" || exit 2; done
first=${series_list%% *}
# The debug kernel is the newest series', when that series is asked for.
debug=0
case " $series_list " in *" $KERNEL_SERIES_NEWEST "*) debug=1 ;; esac
# A result's name for series $1: as it is for the newest, with the series after it for another.
tag() { # tag SERIES NAME
	if [ "$1" = "$KERNEL_SERIES_NEWEST" ]; then echo "$2"; else echo "$2-$1"; fi
}
kdir_of() { scripts/build-kernel.sh --series "$1" standard 2>/dev/null; }

start=$(date +%s)
prerequisite setup scripts/setup.sh
for s in $series_list; do
	prerequisite "$(tag "$s" kernel)" scripts/build-kernel.sh --series "$s" standard
done
[ "$debug" -eq 0 ] || prerequisite debug_kernel scripts/build-kernel.sh debug
prerequisite test_programs_build scripts/build-tests.sh
tests_bin=$(scripts/build-tests.sh --print-dir)
# The tests the guest must report, by name: a list that cannot be had, or an empty one,
# would make "every test reported" true of nothing.
list_tests() {
	"$tests_bin/mini_pipe_test" --list >"$run/tests.list" || return
	local count
	count=$(grep -c . "$run/tests.list")
	echo "mini_pipe_test --list: $count tests"
	[ "$count" -gt 0 ] || { echo "mini_pipe_test --list names no test"; return 1; }
}
prerequisite test_list list_tests

echo "KTAP version 1"
echo "# kernels ready after $(($(date +%s) - start)) s"

# Host checks.
check() { # check NAME COMMAND...: one KTAP line for a host-side command
	local name=$1
	shift
	if "$@" >"$run/$name.log" 2>&1; then result OK "$name"; else result FAIL "$name" "$run/$name.log"; fi
}
plain_make() { # plain_make KDIR
	local plain
	plain=$(mktemp -d)
	cp Kbuild Makefile mini_pipe.rs "$plain/" && cp -r src "$plain/" &&
		make -C "$plain" KDIR="$1" && [ -f "$plain/mini_pipe.ko" ]
	local rc=$?
	rm -rf "$plain"
	return "$rc"
}
check rustfmt make -s fmtcheck
for s in $series_list; do
	kdir=$(kdir_of "$s")
	check "$(tag "$s" module_builds_clippy_clean)" scripts/build-module.sh --force "$kdir"
	check "$(tag "$s" plain_make_kdir)" plain_make "$kdir"
done
check test_programs_clippy_clean sh -c 'cd tests && cargo clippy --quiet --release --locked -- -D warnings'
check bench_smoke scripts/bench.sh --series "$first" --smoke

# The tests in a VM: the guest's KTAP lines, renumbered into this list.
guest() { # guest TAG SERIES FLAVOUR EXPECTED TIMEOUT CPUS COMMAND...: EXPECTED is a file of test names
	local flavour=$1 series=$2 kernel=$3 expected=$4 timeout=$5 cpus=$6
	shift 6
	local out="$run/guest-$flavour.ktap" log="$run/vm-$flavour.log"
	echo "# $flavour kernel ($kernel, $series, $cpus vCPU): $*"
	VM_LOG_DIR="$run/vm-$flavour" scripts/vm.sh --series "$series" --kernel "$kernel" --mem 1G --smp "$cpus" \
		--timeout "$timeout" -- "$@" >"$out" 2>"$log" &
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
	# Every expected test reported exactly once, and nothing else.
	local name why
	awk 'NR == FNR { if ($1 != "") { order[++k] = $1; want[$1] = 1 } next }
		/^ok [0-9]+ / { seen[$3]++ } /^not ok [0-9]+ / { seen[$4]++ }
		END {
			for (i = 1; i <= k; i++)
				if (seen[order[i]] != 1) print order[i] "\t" (seen[order[i]] ? "reported " seen[order[i]] " times" : "did not report")
			for (t in seen) if (!(t in want)) print t "\treported, but not in the list of tests"
		}' "$expected" "$out" >"$run/guest-$flavour.unreported"
	while IFS=$'\t' read -r name why; do
		result FAIL "$flavour:$name:$why (see $log)"
	done <"$run/guest-$flavour.unreported"
	# vm.sh's status is the command's; or 1 when the guest's kernel log has a report (oops,
	# BUG, WARNING, sanitizer, lockdep, hung task, lockup, RCU stall...) or lost messages, or
	# when the guest stopped without a status; or 124 on a timeout. Any non-zero status fails
	# here, with what caused it.
	local reasons=()
	[ $status -ne 124 ] || reasons+=("timed out after ${timeout}s")
	grep -q 'without reporting a status' "$log" && reasons+=("the guest stopped without reporting a status")
	if grep -q 'kernel reported a problem' "$log"; then
		reasons+=("the kernel log has a report: $(sed -n '/kernel reported a problem:/{n;p;q}' "$log")")
	fi
	grep -q 'kernel log lost messages' "$log" && reasons+=("the kernel log lost messages")
	[ $status -eq 0 ] || [ ${#reasons[@]} -gt 0 ] || reasons+=("the command exited with status $status")
	if [ $status -eq 0 ] && [ ${#reasons[@]} -eq 0 ]; then
		echo "# $flavour kernel: exit 0, no report in the kernel log"
		result OK "$flavour:guest_kernel_log_clean"
	else
		local r
		for r in "${reasons[@]}"; do echo "# $flavour:guest_kernel_log_clean: exit $status: $r"; done
		result FAIL "$flavour:guest_kernel_log_clean" "$log"
	fi
}
for s in $series_list; do
	guest "$(tag "$s" standard)" "$s" standard "$run/tests.list" 1800 2 mini_pipe_test
done
# One CPU takes other paths in the module (no turns, every copy under the mutex, sync
# wakeups: src/pipe.rs): the first series' standard kernel runs the tests there too.
guest "$(tag "$first" up)" "$first" standard "$run/tests.list" 1800 1 mini_pipe_test
if [ "$debug" -eq 0 ]; then
	echo "1..$n"
	echo "# total $(($(date +%s) - start)) s (no debug kernel: SERIES=\"$series_list\" leaves out $KERNEL_SERIES_NEWEST)"
	finish
fi
{ cat "$run/tests.list"; echo kmemleak_no_leaks; } >"$run/tests-debug.list"
# shellcheck disable=SC2016 # the guest's shell expands it
guest debug "$KERNEL_SERIES_NEWEST" debug "$run/tests-debug.list" 3600 2 \
	sh -c 'kmemleak.sh start && mini_pipe_test; rc=$?; kmemleak.sh check || rc=1; exit $rc'
console="$run/vm-debug/console.log"

# kmemleak_no_leaks means something only if kmemleak stayed on and its scans ran: kmemleak.sh
# says so, and the kernel log must not say that kmemleak turned itself off.
kmemleak_scans_ran() {
	if ! grep -qx '# kmemleak: 2 of 2 scans ran' "$run/guest-debug.ktap"; then
		echo "kmemleak.sh check did not say '2 of 2 scans ran':"
		grep '# kmemleak: ' "$run/guest-debug.ktap" | head -n 5
		return 1
	fi
	if grep -a 'memory leak detector disabled' "$console"; then
		echo "kmemleak was disabled during the run"
		return 1
	fi
}
check debug:kmemleak_scans_ran kmemleak_scans_ran

# The module's KUnit suites, as the source declares them: a `#[kunit_tests(SUITE)]` module,
# with one case per `#[test]` fn in it. Prints "SUITE CASE" lines, in source order.
kunit_source() {
	awk '
	function code(l) {
		gsub(/"([^"\\]|\\.)*"/, "\"\"", l)
		gsub(/\047([^\047\\]|\\.)\047/, "", l)
		sub(/\/\/.*/, "", l)
		return l
	}
	FNR == 1 { suite = ""; pending = ""; depth = 0; want = 0 }
	suite == "" && /^[[:space:]]*#\[kunit_tests\([A-Za-z0-9_]+\)\]/ {
		pending = $0
		sub(/.*#\[kunit_tests\(/, "", pending)
		sub(/\).*/, "", pending)
		next
	}
	pending != "" && suite == "" {
		if (code($0) !~ /\{/) next
		suite = pending; pending = ""; depth = 0
	}
	suite != "" {
		l = code($0)
		if (l ~ /^[[:space:]]*#\[test\]/) want = 1
		else if (want && match(l, /(^|[^A-Za-z0-9_])fn [A-Za-z0-9_]+/)) {
			name = substr(l, RSTART, RLENGTH); sub(/.*fn /, "", name)
			print suite, name; want = 0
		}
		depth += gsub(/\{/, "{", l) - gsub(/\}/, "}", l)
		if (depth <= 0) suite = ""
	}' mini_pipe.rs src/*.rs
}

# They run in the debug kernel each time mini_pipe is loaded (when it goes live). The guest's
# insmod logs "mini_pipe_vm: loaded mini_pipe" after each successful load (tests/guest-init):
# every suite must have reported, in every load, every case of the source, all passed.
dmesg="$run/debug-dmesg.txt"
tr -d '\r' <"$console" | sed 's/^\[[^]]*\] //' >"$dmesg"
kunit_source >"$run/kunit-source.txt"
loads=$(grep -c '^mini_pipe_vm: loaded mini_pipe' "$dmesg")
suites=$(awk '!seen[$1]++ { print $1 }' "$run/kunit-source.txt")
summary=$(awk '!($1 in c) { o[++k] = $1 } { c[$1]++ }
	END { for (i = 1; i <= k; i++) { printf "%s%s (%d cases)", sep, o[i], c[o[i]]; sep = ", " } }' \
	"$run/kunit-source.txt")
echo "# debug kernel: mini_pipe loaded $loads times; KUnit suites in the source: ${summary:-none}"
[ -n "$suites" ] || result FAIL "debug:kunit:no #[kunit_tests] suite with a #[test] found in mini_pipe.rs src/*.rs"
[ "$loads" -gt 0 ] || result FAIL "debug:kunit:no load of mini_pipe in the kernel log (see $dmesg)"
for suite in $suites; do
	cases=$(awk -v s="$suite" '$1 == s { printf "%s ", $2 }' "$run/kunit-source.txt")
	awk -v s="$suite" -v want="$cases" -v loads="$loads" '
		BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) expect[w[i]] = 1 }
		$0 ~ "^ *# Subtest: " s "$" { on = 1; runs++; cnt = 0; plan = ""; detail = ""; next }
		!on { next }
		/^    1\.\.[0-9]+$/ && plan == "" {
			plan = $1; sub(/^1\.\./, "", plan)
			if (plan + 0 != n) bad[runs] = bad[runs] " plans " plan " cases;"
			next
		}
		/^    # / && !/^    # ([A-Za-z0-9_]+\.)?(speed|module): / { line = $0; sub(/^ *# /, "", line); detail = detail " | " line; next }
		/^    (not )?ok [0-9]+ / {
			i = ($1 == "not") ? 4 : 3; c = $i; cnt++
			if (!(c in expect)) unexpected[c]++
			if ($1 == "ok" && $0 !~ / # SKIP/) pass[c]++
			else if (!(c in why)) why[c] = ($0 ~ / # SKIP/ ? "skipped" : "failed") " in load " runs detail
			detail = ""
			next
		}
		$0 ~ "^(not )?ok [0-9]+ " s "( |$)" {
			on = 0; ended++
			if ($1 != "ok" || $0 ~ / # SKIP/) bad[runs] = bad[runs] " " $0 ";"
			if (cnt != n) bad[runs] = bad[runs] " " cnt " of " n " cases reported;"
			next
		}
		END {
			for (i = 1; i <= n; i++) {
				c = w[i]
				if (loads > 0 && pass[c] == loads && !(c in why)) print "OK\t" c
				else print "FAIL\t" c "\tpassed in " pass[c] + 0 " of " loads " loads" (c in why ? "; first " why[c] : "")
			}
			for (c in unexpected) print "FAIL\t" c "\treported, but no #[test] fn of that name in the source"
			r = ""
			if (loads == 0) r = r "; no load of mini_pipe in the kernel log"
			if (runs != loads) r = r "; ran in " runs + 0 " of " loads " loads"
			if (ended != runs) r = r "; " runs - ended " runs did not finish"
			for (i = 1; i <= runs; i++) if (i in bad) { r = r "; load " i ":" bad[i]; break }
			if (r == "") print "OK\tpassed_in_all_" loads "_loads"
			else print "FAIL\tpassed_in_all_" loads "_loads\t" substr(r, 3)
		}' "$dmesg" >"$run/kunit-$suite.results"
	while IFS=$'\t' read -r verdict name why; do
		[ -z "$why" ] || echo "# debug:kunit:$suite:$name: $why (see $dmesg)"
		result "$verdict" "debug:kunit:$suite:$name"
	done <"$run/kunit-$suite.results"
done

echo "1..$n"
echo "# total $(($(date +%s) - start)) s"
finish
