#!/usr/bin/env bash
# Boot a test kernel in QEMU with mini_pipe loaded, run one command as root in the guest.
#
# usage: scripts/vm.sh [--add FILE]... [--param NAME=VALUE]... [--series S] [--kernel NAME]
#                      [--no-load] [--timeout SECONDS] [--smp N] [--mem SIZE] [--plugin SO]
#                      -- COMMAND [ARGS...]
#
#   --add FILE          copy FILE into the guest's /extra/ (repeatable; /extra is on PATH)
#   --param NAME=VALUE  module parameter for insmod (repeatable)
#   --series S          kernel series: kernel/pins/S.sh (default: the newest in kernel/pin.sh)
#   --kernel NAME       test kernel flavour: kernel/NAME.config (default: standard)
#   --no-load           do not insmod mini_pipe before running COMMAND
#   --timeout SECONDS   bound on the whole VM run; on expiry exit 124 (default: 600)
#   --smp N             virtual CPUs (default: 2)
#   --mem SIZE          guest memory (default: 512M)
#   --plugin SO         load this QEMU TCG plugin; what it writes goes to plugin.log in the
#                       run directory (scripts/insn-count.sh)
#
# The guest is the test kernel with a busybox initramfs holding the module, the project's
# test programs (on PATH) and the --add files. COMMAND's output streams to stdout; this
# script exits with COMMAND's status. An oops, BUG, WARNING, Rust panic, sanitizer or lockdep
# report, hung task, soft or hard lockup or RCU stall in the guest's kernel log, or a kernel
# log that lost messages, fails the run (exit 1) even when COMMAND succeeded; the report is
# quoted on stderr. The kernel log and the output are kept in the run directory (VM_LOG_DIR,
# default: a new one under the cache), whose path is printed last on stderr.
#
# Acceleration: TCG unless VM_ACCEL=kvm, or VM_ACCEL is unset and a bounded KVM probe boot
# succeeds (the result is remembered until the host reboots). VM_ACCEL=tcg skips the probe.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n 4,6p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
say() { printf 'vm: %s\n' "$*" >&2; }

adds=() params=() series=() kernel=standard load=1 timeout=600 smp=2 mem=512M plugin=
while [ $# -gt 0 ]; do
	case $1 in
	--add) [ $# -ge 2 ] || usage; adds+=("$2"); shift 2 ;;
	--param) [ $# -ge 2 ] || usage; params+=("$2"); shift 2 ;;
	--series) [ $# -ge 2 ] || usage; series=(--series "$2"); shift 2 ;;
	--kernel) [ $# -ge 2 ] || usage; kernel=$2; shift 2 ;;
	--no-load) load=0; shift ;;
	--timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
	--smp) [ $# -ge 2 ] || usage; smp=$2; shift 2 ;;
	--mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
	--plugin) [ $# -ge 2 ] || usage; plugin=$2; shift 2 ;;
	-h | --help) sed -n 2,28p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	--) shift; break ;;
	*) say "unknown option: $1"; usage ;;
	esac
done
[ $# -ge 1 ] || usage
for f in "${adds[@]}"; do [ -f "$f" ] || { say "--add: no such file: $f"; exit 2; }; done
for p in "${params[@]}"; do
	[[ $p =~ ^[a-z_][a-z0-9_]*=[^[:space:]\'\"]*$ ]] || { say "--param wants NAME=VALUE: $p"; exit 2; }
done
[[ $timeout =~ ^[0-9]+$ ]] || usage

cache=${XDG_CACHE_HOME:-$HOME/.cache}/mini_pipe
export PATH="$HOME/.cargo/bin:$PATH"

# What the guest needs: the kernel (a no-op when cached), the module, the test programs.
kdir=$("$top/scripts/build-kernel.sh" "${series[@]}" "$kernel")
"$top/scripts/build-module.sh" "$kdir" >&2
"$top/scripts/build-tests.sh" >&2
tests_bin=$("$top/scripts/build-tests.sh" --print-dir)

run=${VM_LOG_DIR:-$cache/runs/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$run"
rm -f "$run/console.log" "$run/output.log"

# The initramfs: busybox, /init, the module, the tests, the --add files.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,extra,tests,lib/modules}
cp /bin/busybox "$root/bin/busybox"
cp "$top/mini_pipe.ko" "$root/lib/modules/"
cp "$tests_bin/mini_pipe_test" "$root/tests/"
cp "$top"/tests/guest/* "$root/tests/"
cp "$top/scripts/watch.sh" "$root/tests/"
for f in "${adds[@]}"; do cp "$f" "$root/extra/"; done
cp "$top/tests/guest-init" "$root/init"
chmod +x "$root/init" "$root"/tests/* "$root"/extra/* 2>/dev/null || true
# The command, each word single-quoted for the guest's sh.
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
	printf 'MINI_PIPE_LOAD=%s\n' "$load"
	printf 'MINI_PIPE_PARAMS=%s\n' "$(quote "${params[*]}")"
} >"$root/etc/vm.conf"
{
	for w in "$@"; do quote "$w"; printf ' '; done
	echo
} >"$root/etc/cmd"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$run/initramfs.cpio"

# KVM only when asked for, or when a short probe boot shows it works here.
accel=tcg
case ${VM_ACCEL:-} in
kvm) accel=kvm ;;
tcg) ;;
"")
	probe="$cache/kvm-probe-$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo none)"
	if [ ! -f "$probe" ] && [ -w /dev/kvm ]; then
		if VM_ACCEL=kvm VM_LOG_DIR="$run/kvm-probe" timeout -k 2 20 "$0" --no-load --timeout 15 -- true >/dev/null 2>&1; then
			echo kvm >"$probe"
		else
			echo tcg >"$probe"
		fi
	fi
	[ -f "$probe" ] && accel=$(cat "$probe")
	;;
*) say "VM_ACCEL must be kvm or tcg"; exit 2 ;;
esac
# shellcheck disable=SC2054 # the commas are qemu's
accel_opts=(-accel tcg,thread=multi -cpu max)
[ "$accel" = kvm ] && accel_opts=(-accel kvm -cpu host)

say "booting $kernel kernel ($accel, $smp CPUs, $mem), log in $run"
qemu=(qemu-system-x86_64 "${accel_opts[@]}" -smp "$smp" -m "$mem"
	-kernel "$kdir/arch/x86/boot/bzImage" -initrd "$run/initramfs.cpio"
	-append "console=ttyS0 panic=-1 printk.devkmsg=on"
	-display none -monitor none -no-reboot
	-serial "file:$run/console.log" -serial "file:$run/output.log")
[ -z "$plugin" ] || qemu+=(-plugin "$plugin" -d plugin -D "$run/plugin.log")
echo "${qemu[*]}" >"$run/qemu.cmd"
touch "$run/output.log"
set +e
timeout -k 5 "$timeout" "${qemu[@]}" &
qpid=$!
# The serial port ends lines with CR LF: pass on plain lines.
tail -n +1 -f --pid=$qpid "$run/output.log" 2>/dev/null | tr -d '\r' &
tpid=$!
wait $qpid
qrc=$?
wait $tpid 2>/dev/null
set -e

status=$(grep -ao 'MINI_PIPE_EXIT=[0-9]*' "$run/console.log" | tail -n1 | cut -d= -f2 || true)
# timeout(1) exits 124 when it stopped qemu with TERM, 137 when it had to KILL it.
if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
	say "timed out after ${timeout}s; kernel log: $run/console.log"
	tail -n 20 "$run/console.log" >&2
	status=124
elif [ -z "$status" ]; then
	say "the guest stopped without reporting a status (qemu exit $qrc); last of the kernel log:"
	tail -n 30 "$run/console.log" >&2
	status=1
fi
# What the kernel reports when something went wrong: oopses, BUG()s and BUG: reports
# (including "watchdog: BUG: soft lockup"), warnings, panics, the sanitizers, lockdep, Rust
# panics, the hung-task detector, RCU stalls, hard lockups, and any stack trace.
splats='(BUG:|kernel BUG at|Oops|WARNING:|Kernel panic|panicked at|general protection fault'
splats+='|UBSAN:|KASAN:|KFENCE:|possible recursive locking|possible circular locking'
splats+='|inconsistent lock state|sleeping function called from invalid context|unreferenced object'
splats+='|INFO: task .* blocked for more than|blocked for more than [0-9]+ seconds|hung_task'
splats+='|soft lockup|hard LOCKUP|rcu: INFO:|detected stalls? on CPU|self-detected stall|RCU Stall'
splats+='|rcu_(preempt|sched|bh|tasks[a-z_]*) detected stall|Call Trace:)'
problem=0
if grep -aqE "$splats" "$run/console.log"; then
	say "the guest kernel reported a problem:"
	grep -aE -A3 "$splats" "$run/console.log" | tr -d '\r' | head -n 40 >&2
	problem=1
fi
# A console that lost messages may have lost a report: the log cannot be called clean.
if grep -aq 'printk messages dropped' "$run/console.log"; then
	say "the guest kernel log lost messages, so it may hide a report:"
	grep -a 'printk messages dropped' "$run/console.log" | tr -d '\r' | head -n 5 >&2
	problem=1
fi
[ $problem -eq 0 ] || [ "$status" -ne 0 ] || status=1
guest=$(grep -aom1 'Linux version [^ ]*' "$run/console.log" || true)
say "${guest:-guest kernel did not boot} ($accel); exit $status; logs in $run"
exit "$status"
