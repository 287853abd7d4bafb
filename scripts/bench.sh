#!/usr/bin/env bash
# Benchmark /dev/mini_pipe against a FIFO in the test VM and write the results to logs/bench/.
#
# usage: scripts/bench.sh [--series S] [--smoke] [-- MINI_PIPE_TEST_BENCH_ARGS...]
#
# Boots the test kernel twice (scripts/vm.sh; VM_ACCEL as there), with 2 virtual CPUs and with
# 1, and runs `mini_pipe_test bench` in each (tests/src/bench.rs explains what it measures): the
# whole benchmark on 2 vCPUs, the throughput and scaling tables on 1. From the two JSON
# documents, scripts/bench-report.py writes logs/bench/bench.json (the measurements and the
# environment: kernel, accelerator, CPUs, commit), bench.md (the tables with the mini_pipe/FIFO
# ratios, and the targets) and bench.png (throughput against write size). --smoke runs the
# seconds-long subset and writes to logs/bench/smoke/ instead. The full run takes 8 to 10
# minutes under TCG. --series S benchmarks that kernel series (kernel/pins/S.sh) instead of the
# newest, and writes to logs/bench/S/ (logs/bench/smoke/S/).
# A transfer that stalls (a lost wakeup) fails the run, smoke or full: the files are written,
# with the stall reports in bench.json, and the exit status is 1, naming the reports.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }

# shellcheck source=kernel/pin.sh
. "$top/kernel/pin.sh"
out=$top/logs/bench timeout=3600 args=() series=${SERIES:-$KERNEL_SERIES_NEWEST}
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) args+=(--smoke); out=$top/logs/bench/smoke; timeout=600; shift ;;
	--series) [ $# -ge 2 ] || usage; series=$2; shift 2 ;;
	--) shift; args+=("$@"); break ;;
	*) usage ;;
	esac
done
kernel_pins "$series" || exit 2
[ "$series" = "$KERNEL_SERIES_NEWEST" ] || out=$out/$series

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# One VM run with `$1` virtual CPUs and the bench arguments that follow; its JSON goes to
# $tmp/bench-$1.json.
run_vm() {
	local smp=$1 rc
	shift
	# The guest's stdout and stderr share one serial port: progress lines and the one JSON
	# line both arrive on vm.sh's stdout (shown as they come); vm.sh's own summary is on its
	# stderr.
	set +e
	"$top/scripts/vm.sh" --series "$series" --smp "$smp" --timeout "$timeout" -- mini_pipe_test bench "$@" \
		2> >(tee "$tmp/vm-$smp.log" >&2) | tee "$tmp/guest-$smp.log"
	rc=${PIPESTATUS[0]}
	set -e
	# The tee of vm.sh's stderr runs on its own: let it catch up with vm.sh's last line.
	for _ in $(seq 50); do grep -aq '^vm: .*logs in' "$tmp/vm-$smp.log" && break; sleep 0.1; done
	tr -d '\r' <"$tmp/guest-$smp.log" | grep '^{"bench":' | tail -n1 >"$tmp/bench-$smp.json" || true
	# mini_pipe_test bench exits 3 when it completed but a transfer stalled: the JSON is whole
	# and gets written, and the run fails below. Any other failure leaves nothing to write.
	if { [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; } || [ ! -s "$tmp/bench-$smp.json" ]; then
		echo "bench: the benchmark on $smp vCPU(s) failed (vm.sh exit $rc); nothing written to $out" >&2
		exit 1
	fi
	status=$((status > rc ? status : rc))
}

# Latency and the seeds' reference point are measured on 2 vCPUs only: their targets are
# defined there, and one CPU has nothing to add to them.
status=0
run_vm 2 "${args[@]}"
one=(--parts throughput,scaling,calls)
for a in "${args[@]}"; do [ "$a" = --parts ] && one=(); done
run_vm 1 "${args[@]}" "${one[@]}"
rc=$status

commit=$(git -C "$top" rev-parse HEAD)
git -C "$top" diff --quiet HEAD -- . ':!logs' 2>/dev/null || commit="$commit (with uncommitted changes)"
python3 "$top/scripts/bench-report.py" "$out" \
	--run "$tmp/bench-2.json" "$(grep -a '^vm: Linux version' "$tmp/vm-2.log" | tail -n1)" \
	--run "$tmp/bench-1.json" "$(grep -a '^vm: Linux version' "$tmp/vm-1.log" | tail -n1)" \
	--commit "$commit" \
	--host-cpus "$(nproc)" \
	--host-cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "bench: wrote $out/bench.json, bench.md and bench.png" >&2

# A stall is a lost wakeup: it fails the run, smoke or full, whatever the exit status said.
# Count them in the JSON itself: every "stalls" field, wherever a cell has one.
stalls=$(python3 - "$out/bench.json" <<'PY'
import json, sys

def walk(v, path):
    if isinstance(v, dict):
        n = v.get("stalls")
        if isinstance(n, int) and n > 0:
            for r in v.get("stall_reports") or ["(no report)"]:
                print(f"{path}: {r}")
            if not v.get("stall_reports"):
                print(f"{path}: {n} stalls")
        for k, x in v.items():
            walk(x, f"{path}.{k}" if path else k)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            keys = ("capacity", "write_size", "writers", "readers")
            label = ", ".join(f"{k}={x[k]}" for k in keys if isinstance(x, dict) and k in x)
            walk(x, f"{path}[{i}]" + (f" ({label})" if label else ""))

walk(json.load(open(sys.argv[1])), "")
PY
) || { echo "bench: cannot read the stall counts in $out/bench.json" >&2; exit 1; }
if [ -n "$stalls" ] || [ "$rc" -ne 0 ]; then
	echo "bench: FAILED: transfers stalled (lost wakeups; vm.sh exit $rc); the stall reports," \
		"also in $out/bench.json (stall_reports) and $out/bench.md:" >&2
	printf '%s\n' "${stalls:-(the benchmark exited $rc but its JSON has no stall report)}" |
		sed 's/^/bench: stall: /' >&2
	exit 1
fi
