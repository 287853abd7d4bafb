#!/usr/bin/env bash
# The mutation check: proves that the test suite bites. Applies small deliberate bugs
# (mutants), one at a time, to a scratch copy of the module's source, builds each against a
# test kernel, runs the part of the suite that should catch it in the VM, and reports which
# tests killed it.
#
# usage: scripts/mutants.sh [--list] [--no-baseline] [NAME...]
#
#   --list         list the mutants (and check that each one still applies) without running
#   --no-baseline  skip the baseline run of the unmutated source with the same tests
#   NAME...        run only these mutants (default: all; only a full run writes logs/mutants.md)
#
# A mutant is one line of source changed: (name, file, which line, original text, replacement,
# tests). The original text must be found on exactly as many lines as the definition says
# (`N/M`: the Nth of the M lines containing it), or the script fails: the list cannot rot
# silently when the source changes. Each mutant must build cleanly (clippy, no warnings).
#
# Tests are mini_pipe_test names, run in the standard kernel. A `kunit:SUITE.CASE` test means
# the mutant is one only the module's KUnit tests catch: it runs in the debug kernel, where the
# KUnit suites run when the module loads, and a failing case there kills it. A mutant is killed
# when the VM run fails (a test failed, a timeout, a splat in the kernel log) or a named KUnit
# case failed. Before the mutants, the same tests run once on the unmutated source and must
# pass, so that a kill means the mutation, not a flaky or broken test.
#
# The working tree is never modified: each mutant gets a fresh copy of the tracked files in a
# temporary directory, whose scripts/build-tests.sh is replaced by a stub pointing at the test
# programs built once here (they do not change between mutants). Prints a Markdown table
# (mutant, file:line, change, killed by, time); a full run also writes it to logs/mutants.md.
# Exits non-zero if any mutant survived or did not build. VM runs are one at a time. Logs of
# every run are kept in the cache's runs/mutants-* directory.
set -euo pipefail

usage() { sed -n 7p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mini_pipe
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf 'mutants: %s\n' "$*" >&2; }

# The mutants. m NAME FILE N/M ORIGINAL REPLACEMENT TESTS: on the Nth of the M lines of FILE
# that contain ORIGINAL, ORIGINAL becomes REPLACEMENT. TESTS: the tests that must catch it.
names=() files=() wheres=() origs=() repls=() testss=()
m() {
	names+=("$1") files+=("$2") wheres+=("$3") origs+=("$4") repls+=("$5") testss+=("$6")
}
m write_wakes_no_reader src/pipe.rs 1/2 \
	'self.rd_wait.wake_one(POLLIN);' 'self.wr_wait.wake_one(POLLIN);' \
	'fifo_eq_setup fifo_eq_reader_woken_by_write'
m read_wakes_no_writer src/pipe.rs 1/1 \
	'let after = inner.ring.room();' 'let after = before;' \
	'fifo_eq_setup fifo_eq_writer_woken_by_read'
m wake_before_room_reaches_atomic src/pipe.rs 1/1 \
	'if before < atomic_max && after >= atomic_max {' 'if before < atomic_max && after > before {' \
	'kunit:mini_pipe_wakeups.writers_woken_when_room_reaches_a_need'
m ring_not_cleared_on_last_close src/ring.rs 1/1 \
	'self.len = 0;' '// self.len = 0;' \
	'fifo_eq_setup fifo_eq_leftovers_discarded_when_all_close'
m ring_write_wrap_off_by_one src/ring.rs 1/1 \
	'if len < cap - tail {' 'if len <= cap - tail {' \
	'kunit:mini_pipe_ring.copies_match_a_model_everywhere'
m ring_read_wrap_off_by_one src/ring.rs 1/1 \
	'let to_end = self.capacity() - self.tail();' 'let to_end = self.capacity() - self.tail() + 1;' \
	'kunit:mini_pipe_ring.copies_match_a_model_everywhere'
m faulted_copy_counted_as_moved src/pipe.rs 2/3 \
	'written += copied;' 'written += n;' \
	'fifo_eq_setup fifo_eq_write_bad_buffer fifo_eq_write_faulting_at_the_start fifo_eq_write_faulting_in_the_middle'
m no_sigpipe src/pipe.rs 1/2 \
	'*sigpipe = true;' '*sigpipe = false;' \
	'fifo_eq_setup fifo_eq_write_without_reader_epipe epipe_without_reader'
m pollout_one_byte_early src/pipe.rs 1/1 \
	'room >= atomic_max' 'room + 1 >= atomic_max' \
	'kunit:mini_pipe_wakeups.writable_means_an_atomic_write_fits'
m wake_writer_without_key src/pipe.rs 1/1 \
	'Wake::One => self.wr_wait.wake_one(POLLOUT),' 'Wake::One => self.wr_wait.wake_one(ANY),' \
	'fifo_eq_setup fifo_eq_epoll_exclusive_reader_leaves_writer_wakeup'
m next_reader_not_woken src/pipe.rs 1/1 \
	'let wake_next_reader = woken && inner.readable();' 'let wake_next_reader = woken && !inner.readable();' \
	'fifo_eq_setup fifo_eq_two_sleeping_readers_share_one_write'
m open_no_w_counter_bump src/pipe.rs 1/2 \
	'inner.w_counter = inner.w_counter.wrapping_add(1);' '// inner.w_counter = inner.w_counter.wrapping_add(1);' \
	'fifo_eq_setup fifo_eq_open_reader_waits_for_writer fifo_eq_poll_no_hup_before_first_writer'
m enxio_check_inverted src/pipe.rs 1/1 \
	'if mode.nonblock && inner.readers == 0 {' 'if mode.nonblock && inner.readers != 0 {' \
	'fifo_eq_setup fifo_eq_open_wronly_nonblock_with_reader'
m pipe_buf_write_not_atomic src/pipe.rs 1/1 \
	'if total <= atomic_max {' 'if total < atomic_max {' \
	'fifo_eq_setup fifo_eq_write_nonblock_atomic_needs_room fifo_eq_atomic_write_waits_for_room'
m publish_skips_queued src/pipe.rs 1/1 \
	'self.unlocked.queued.store(inner.ring.len(), Relaxed);' 'self.unlocked.queued.store(inner.ring.len() / 2, Relaxed);' \
	'fifo_eq_setup fifo_eq_fionread_counts_bytes fifo_eq_poll_reader_and_writer'
m pseudo_edgetrigger_ignored src/pipe.rs 1/1 \
	'self.pseudo_edgetrigger.load(Relaxed),' 'false,' \
	'fifo_eq_setup fifo_eq_epoll_edge_triggered_every_write'
m woken_writer_keeps_wakeup src/pipe.rs 1/1 \
	'let wake = if woken {' 'let wake = if !woken {' \
	'kunit:mini_pipe_wakeups.no_writer_left_asleep_with_its_room_free'
m min_need_not_lowered src/pipe.rs 1/1 \
	'self.min_need = self.min_need.min(need);' 'self.min_need = self.min_need.max(need);' \
	'fifo_eq_setup fifo_eq_writer_wakes_on_bytes_vs_pages'
m eof_while_a_writer_remains src/pipe.rs 3/3 \
	'if inner.writers == 0 {' 'if inner.writers <= 1 {' \
	'fifo_eq_setup fifo_eq_read_empty_nonblock_with_writer fifo_eq_no_eof_while_a_writer_remains'
# Copies outside the mutex (src/claim.rs, src/ring.rs).
m claims_overlap_ignored src/claim.rs 1/1 \
	'if extent.overlaps(other, cap) {' 'if extent.overlaps(other, cap) && other.len > self.cap {' \
	'kunit:mini_pipe_claim.claims_are_kept_apart'
m tail_reset_under_a_write_claim src/ring.rs 1/1 \
	'if self.len == 0 && !self.buf.claimed() {' 'if self.len == 0 {' \
	'kunit:mini_pipe_ring.claims_from_both_sides_at_once'
m no_turns_on_smp src/pipe.rs 1/1 \
	'self.smp.then(|| turn.lock())' '(!self.smp).then(|| turn.lock())' \
	'stress_all_capacities'
m slots_on_several_cpus src/pipe.rs 1/1 \
	'|| (!self.smp' '|| (self.capacity > 0' \
	'slots_one_cpu_reader_waits_with_its_buffer'
# Rendezvous and O_DSYNC (src/handoff.rs, src/pin.rs, write_sync).
m slot_reader_not_woken src/handoff.rs 1/1 \
	'slot.reader.wake_up();' 'core::hint::black_box(&slot.reader);' \
	'rendezvous_meet_and_wait'
m offer_writer_not_woken src/handoff.rs 1/1 \
	'Some(writer) => writer.wake_up(),' 'Some(_) => {}' \
	'rendezvous_meet_and_wait'
m atomic_write_cut_by_signal src/pipe.rs 1/1 \
	'if taken < len && total <= self.atomic_max && written + taken > 0 {' 'if taken < len && total <= self.atomic_max / 8192 && written + taken > 0 {' \
	'rendezvous_small_writes_whole_under_signals sync_small_writes_whole_under_signals'
m offer_ahead_of_older_ring_bytes src/pipe.rs 1/1 \
	'self.ring.len().min(' 'self.ring.len().max(' \
	'kunit:mini_pipe_wakeups.offers_come_after_the_bytes_queued_before_them'
m nonblocking_atomic_write_split src/pipe.rs 1/1 \
	'if first && room > 0 && (room >= left || !all_or_nothing) {' 'if first && room > 0 && (room >= left || all_or_nothing) {' \
	'rendezvous_nonblocking_needs_a_waiting_partner'
m writer_pages_left_pinned src/pin.rs 1/1 \
	'bindings::unpin_user_pages(pages.add(written), count - written);' 'bindings::unpin_user_pages(pages.add(written), (count - written) / 4096);' \
	'rendezvous_meet_and_wait rendezvous_pins_all_released'

list=0 baseline=1 chosen=()
while [ $# -gt 0 ]; do
	case $1 in
	--list) list=1; shift ;;
	--no-baseline) baseline=0; shift ;;
	-h | --help) sed -n 2,30p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) say "unknown option: $1"; usage ;;
	*) chosen+=("$1"); shift ;;
	esac
done
idx=()
if [ ${#chosen[@]} -eq 0 ]; then
	idx=("${!names[@]}")
else
	for c in "${chosen[@]}"; do
		found=
		for i in "${!names[@]}"; do [ "${names[$i]}" = "$c" ] && found=$i; done
		[ -n "$found" ] || { say "no mutant named $c (see --list)"; exit 2; }
		idx+=("$found")
	done
fi
full=0
[ ${#chosen[@]} -gt 0 ] || full=1

# locate I DIR: prints the line number the mutant I changes in DIR's copy of its file, or fails
# loudly when its original text is not on exactly the lines the definition says.
locate() {
	local i=$1 dir=$2 n m lines count
	n=${wheres[$i]%/*} m=${wheres[$i]#*/}
	lines=$(grep -nF -- "${origs[$i]}" "$dir/${files[$i]}" | cut -d: -f1 || true)
	count=$(printf '%s' "$lines" | grep -c . || true)
	if [ "$count" -ne "$m" ] || [ "$n" -lt 1 ] || [ "$n" -gt "$m" ]; then
		say "mutant ${names[$i]}: '${origs[$i]}' is on $count line(s) of ${files[$i]}, the list says $m: update the list"
		return 1
	fi
	printf '%s\n' "$lines" | sed -n "${n}p"
}

kernel_of() { # the kernel flavour mutant I runs in
	case " ${testss[$1]}" in *" kunit:"*) echo debug ;; *) echo standard ;; esac
}

lines=()
for i in "${idx[@]}"; do lines[i]=$(locate "$i" "$top"); done
if [ $list -eq 1 ]; then
	for i in "${idx[@]}"; do
		printf '%s\t%s:%s (%s)\t%s\n' "${names[$i]}" "${files[$i]}" "${lines[$i]}" "$(kernel_of "$i")" "${testss[$i]}"
	done
	exit 0
fi

start=$(date +%s)
run=$cache/runs/mutants-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run"
say "logs in $run"

# The test programs, built once; every scratch copy uses them.
"$top/scripts/build-tests.sh"
tests_bin=$("$top/scripts/build-tests.sh" --print-dir)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# fresh DIR: DIR becomes a copy of the tracked files of the working tree, with the stub.
fresh() {
	rm -rf "$1"
	mkdir -p "$1"
	git -C "$top" ls-files -z | tar -C "$top" --null -T - -cf - | tar -C "$1" -xf -
	# shellcheck disable=SC2016 # the stub's own $1
	printf '#!/bin/sh\n# mutants.sh: the test programs are built once, in %s\n[ "${1:-}" != --print-dir ] || echo %s\n' \
		"$top" "$tests_bin" >"$1/scripts/build-tests.sh"
}

# vmrun DIR KERNEL TESTS LOGNAME TIMEOUT: runs TESTS in DIR's VM, for at most TIMEOUT seconds;
# sets rc, killers (what failed) and secs.
vmrun() {
	local dir=$1 kernel=$2 tests=$3 log=$run/$4 timeout=$5 t0 cmd=() t
	for t in $tests; do
		case $t in kunit:*) ;; *) cmd+=("$t") ;; esac # KUnit runs when the module loads
	done
	if [ ${#cmd[@]} -gt 0 ]; then cmd=(mini_pipe_test "${cmd[@]}"); else cmd=(true); fi
	t0=$(date +%s)
	rc=0
	VM_LOG_DIR=$log.vm "$dir/scripts/vm.sh" --kernel "$kernel" --mem 1G --timeout "$timeout" -- "${cmd[@]}" \
		>"$log.out" 2>"$log.err" || rc=$?
	secs=$(($(date +%s) - t0))
	# What failed: the tests that said `not ok`, the KUnit cases of mini_pipe's suites that
	# failed, and the VM's own verdicts.
	killers=$(
		sed -n 's/^not ok [0-9]* \([^ ]*\).*/\1/p' "$log.out"
		[ -f "$log.vm/console.log" ] && tr -d '\r' <"$log.vm/console.log" | sed 's/^\[[^]]*\] //' | awk '
			/^ *# Subtest: mini_pipe_/ { suite = $3; next }
			suite != "" && /^(not )?ok [0-9]+ / { suite = ""; next }
			suite != "" && /^ +not ok [0-9]+ / { print "kunit:" suite "." $4 }'
		[ $rc -ne 124 ] || echo timeout
		! grep -q 'kernel reported a problem' "$log.err" || echo splat
		[ $rc -ne 125 ] || echo insmod_failed
	)
	killers=$(printf '%s\n' "$killers" | grep . | sort -u | paste -sd' ' || true)
	if [ $rc -ne 0 ] && [ -z "$killers" ]; then killers="exit $rc"; fi
	if [ $rc -eq 0 ] && [ -n "$killers" ]; then rc=1; fi
	return 0
}

# The baseline: the unmutated source must pass every test the chosen mutants run.
if [ $baseline -eq 1 ]; then
	for kernel in standard debug; do
		tests=$(for i in "${idx[@]}"; do
			# shellcheck disable=SC2086 # one test a word
			[ "$(kernel_of "$i")" = $kernel ] && printf '%s\n' ${testss[$i]}
		done | awk '!seen[$0]++' | paste -sd' ' || true)
		[ -n "$tests" ] || continue
		say "baseline, $kernel kernel: $tests"
		fresh "$scratch/tree"
		vmrun "$scratch/tree" $kernel "$tests" "baseline-$kernel" 900
		if [ $rc -ne 0 ]; then
			say "the unmutated source fails ($killers) in the $kernel kernel: see $run/baseline-$kernel.*"
			exit 1
		fi
		say "baseline, $kernel kernel: passed in ${secs}s"
	done
fi

kernels=()
md() { printf '%s' "$1" | sed 's/|/\\|/g'; } # a table cell
rows=() survived=0 broken=0
for i in "${idx[@]}"; do
	name=${names[$i]} file=${files[$i]} kernel=$(kernel_of "$i")
	fresh "$scratch/tree"
	line=$(locate "$i" "$scratch/tree")
	# The one-line change, on that line only.
	ORIG=${origs[$i]} REPL=${repls[$i]} LINE=$line perl -i -pe \
		'if ($. == $ENV{LINE}) { my $at = index($_, $ENV{ORIG}); die "not on line\n" if $at < 0;
		 substr($_, $at, length $ENV{ORIG}) = $ENV{REPL}; }' "$scratch/tree/$file"
	if diff -u "$top/$file" "$scratch/tree/$file" >"$run/$name.diff"; then
		say "mutant $name changed nothing"
		exit 1
	fi
	t0=$(date +%s)
	say "mutant $name ($file:$line, $kernel kernel): ${testss[$i]}"
	kdir=$("$scratch/tree/scripts/build-kernel.sh" "$kernel" 2>/dev/null)
	if ! "$scratch/tree/scripts/build-module.sh" "$kdir" >"$run/$name.build" 2>&1; then
		verdict="DID NOT BUILD (see $run/$name.build)"
		broken=$((broken + 1))
		secs=$(($(date +%s) - t0))
	else
		vmrun "$scratch/tree" "$kernel" "${testss[$i]}" "$name" 300
		secs=$(($(date +%s) - t0))
		guest=$(grep -aom1 'Linux version [^ ]*' "$run/$name.vm/console.log" 2>/dev/null | cut -d' ' -f3 || true)
		[ -z "$guest" ] || kernels+=("$guest $kernel")
		if [ $rc -ne 0 ]; then
			verdict=$killers
		else
			verdict=SURVIVED
			survived=$((survived + 1))
		fi
	fi
	say "mutant $name: ${verdict} (${secs}s)"
	rows+=("| $name | $file:$line | \`$(md "${origs[$i]}")\` → \`$(md "${repls[$i]}")\` | $(md "$verdict") | ${secs}s |")
done
total=$(($(date +%s) - start))

commit=$(git -C "$top" rev-parse --short HEAD)
git -C "$top" diff --quiet HEAD -- mini_pipe.rs src tests Kbuild || commit="$commit+uncommitted changes"
kernel_list=$(printf '%s\n' "${kernels[@]}" | sort -u | paste -sd',' | sed 's/,/, /g')
killed=$((${#idx[@]} - survived - broken))
report() {
	echo "# Mutation check"
	echo
	echo "\`make mutants\` (scripts/mutants.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, kernel $kernel_list."
	echo "Each mutant is a one-line bug in a scratch copy of the module; it is killed when a test"
	echo "run against it fails. $killed of ${#idx[@]} killed, $survived survived, $broken did not build;"
	echo "total $((total / 60)) min $((total % 60)) s (one VM at a time, TCG, $(nproc) CPUs)."
	echo
	echo "| mutant | file:line | change | killed by | time |"
	echo "|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
}
report
if [ $full -eq 1 ]; then
	report >"$top/logs/mutants.md"
	say "wrote logs/mutants.md"
fi
say "logs in $run"
[ $survived -eq 0 ] && [ $broken -eq 0 ]
