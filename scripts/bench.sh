#!/usr/bin/env bash
# Benchmark /dev/mini_pipe against a FIFO in the test VM and write the results to logs/bench/.
#
# usage: scripts/bench.sh [--smoke] [-- MINI_PIPE_TEST_BENCH_ARGS...]
#
# Boots the test kernel (scripts/vm.sh; VM_ACCEL as there) and runs `mini_pipe_test bench`
# (tests/src/bench.rs explains what it measures). From its JSON, scripts/bench-report.py writes
# logs/bench/bench.json (the measurements and the environment: kernel, accelerator, CPUs,
# commit), bench.md (the tables with the mini_pipe/FIFO ratios, and the targets) and bench.png
# (throughput against write size). --smoke runs the seconds-long subset and writes to
# logs/bench/smoke/ instead. The full run takes about 5 to 10 minutes under TCG.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }

out=$top/logs/bench timeout=3600 args=()
while [ $# -gt 0 ]; do
	case $1 in
	--smoke) args+=(--smoke); out=$top/logs/bench/smoke; timeout=600; shift ;;
	--) shift; args+=("$@"); break ;;
	*) usage ;;
	esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# The guest's stdout and stderr share one serial port: progress lines and the one JSON line
# both arrive on vm.sh's stdout (shown as they come); vm.sh's own summary is on its stderr.
set +e
"$top/scripts/vm.sh" --timeout "$timeout" -- mini_pipe_test bench "${args[@]}" \
	2> >(tee "$tmp/vm.log" >&2) | tee "$tmp/guest.log"
rc=${PIPESTATUS[0]}
set -e
# The tee of vm.sh's stderr runs on its own: let it catch up with vm.sh's last line.
for _ in $(seq 50); do grep -aq '^vm: .*logs in' "$tmp/vm.log" && break; sleep 0.1; done
tr -d '\r' <"$tmp/guest.log" | grep '^{"bench":' | tail -n1 >"$tmp/bench.json" || true
if [ "$rc" -ne 0 ] || [ ! -s "$tmp/bench.json" ]; then
	echo "bench: the benchmark failed (vm.sh exit $rc); nothing written to $out" >&2
	exit 1
fi

commit=$(git -C "$top" rev-parse HEAD)
git -C "$top" diff --quiet HEAD -- . ':!logs' 2>/dev/null || commit="$commit (with uncommitted changes)"
python3 "$top/scripts/bench-report.py" "$tmp/bench.json" "$out" \
	--vm-line "$(grep -a '^vm: Linux version' "$tmp/vm.log" | tail -n1)" \
	--commit "$commit" \
	--host-cpus "$(nproc)" \
	--host-cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "bench: wrote $out/bench.json, bench.md and bench.png" >&2
