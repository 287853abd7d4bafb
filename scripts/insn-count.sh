#!/usr/bin/env bash
# Count the guest instructions each pipe executes per byte it moves, in the bench's transfers.
#
# usage: scripts/insn-count.sh [--series S] [--smp N] [-- MINI_PIPE_TEST_BENCH_ARGS...]
#
# Builds scripts/insn-count.c, a QEMU TCG plugin, into the cache, boots the test kernel under
# TCG with it (scripts/vm.sh --plugin; N vCPUs, default 1) and runs `mini_pipe_test bench
# --count-insns` there: by default the throughput and scaling tables, 3 repetitions (bench
# arguments after -- replace those). Each transfer is a window, in which the plugin counts
# every instruction any vCPU executes (writers, readers, kernel, scheduler). Writes
# logs/bench/insns-Ncpu.md and .json (logs/bench/S/ for another series): per cell, the FIFO's
# and mini_pipe's instructions per KiB moved (medians over the repetitions) and their ratio,
# which vary by about 1% between runs where times under TCG vary by a third; bench-report.py
# quotes the ratio for a bench cell that misses its target. The times the bench measures
# meanwhile are of an instrumented emulator, and are not kept. A few minutes.
set -euo pipefail

usage() { sed -n 4p "$0" | sed 's/^# //' >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=kernel/pin.sh
. "$top/kernel/pin.sh"
series=$KERNEL_SERIES_NEWEST smp=1 args=(--parts throughput,scaling --reps 3)
while [ $# -gt 0 ]; do
	case $1 in
	--series) [ $# -ge 2 ] || usage; series=$2; shift 2 ;;
	--smp) [ $# -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || usage; smp=$2; shift 2 ;;
	--) shift; [ $# -gt 0 ] && args=("$@"); break ;;
	*) usage ;;
	esac
done
kernel_pins "$series" || exit 2
say() { printf 'insn-count: %s\n' "$*" >&2; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/mini_pipe/insn-count
src="$top/scripts/insn-count.c"
so="$cache/insn-count-$(sha256sum "$src" | cut -c1-12).so"
if [ ! -f "$so" ]; then
	mkdir -p "$cache"
	gcc -O2 -Wall -shared -fPIC -o "$so.tmp" "$src"
	mv "$so.tmp" "$so"
fi

out="$top/logs/bench"
[ "$series" = "$KERNEL_SERIES_NEWEST" ] || out=$out/$series
mkdir -p "$out"
report="$out/insns-${smp}cpu.md" data="$out/insns-${smp}cpu.json"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Plugins run under TCG only.
VM_ACCEL=tcg VM_LOG_DIR="$tmp/run" "$top/scripts/vm.sh" --series "$series" --smp "$smp" \
	--timeout 1800 --plugin "$so" -- mini_pipe_test bench --count-insns "${args[@]}" \
	>"$tmp/guest.log" 2> >(tee "$tmp/vm.log" >&2)
for _ in $(seq 50); do grep -aq '^vm: .*logs in' "$tmp/vm.log" && break; sleep 0.1; done
kernel=$(grep -ao 'Linux version [^ ]*' "$tmp/vm.log" | tail -n1)
commit=$(git -C "$top" rev-parse HEAD)
git -C "$top" diff --quiet HEAD -- . ':!logs' 2>/dev/null || commit="$commit (with uncommitted changes)"
python3 - "$tmp/guest.log" "$tmp/run/plugin.log" "$kernel" "$commit" "$smp" "${args[*]}" "$data" \
	>"$report" <<'PY'
import json, re, statistics, sys
guest, plugin, kernel, commit, smp, args, data = sys.argv[1:]
windows = re.findall(r'bench: insns-window (.*)\|(\S+)\|(\d+)', open(guest, errors='replace').read())
counts = [int(x) for x in re.findall(r'^insns (\d+)$', open(plugin).read(), re.M)]
if len(windows) != len(counts) or not counts:
    sys.exit(f"insn-count: {len(windows)} transfers in the guest's log, {len(counts)} counts in the plugin's")
cells = {}
for (label, obj, nbytes), n in zip(windows, counts):
    cells.setdefault(label, {}).setdefault(obj, []).append(n * 1024 / int(nbytes))
print(f"# Instructions per KiB moved, FIFO and mini_pipe ({smp} vCPU{'s' if smp != '1' else ''})\n")
print(f"{kernel}, TCG, commit {commit}; `scripts/insn-count.sh --smp {smp} -- {args}`.\n")
print("Every instruction any vCPU executed during each transfer (writers, readers, kernel, idle "
      "and scheduler), counted by scripts/insn-count.c, per KiB moved; medians over the "
      "repetitions, and their range. Ratio: mini_pipe / FIFO (lower: less work).\n")
print("| cell | FIFO insns/KiB | mini_pipe insns/KiB | ratio | FIFO range | mini_pipe range |")
print("|---|---|---|---|---|---|")
ratios, table = [], {}
for label, by in cells.items():
    f, m = by.get("fifo", []), by.get("mini_pipe", [])
    if not f or not m:
        continue
    fm, mm = statistics.median(f), statistics.median(m)
    ratios.append(mm / fm)
    table[label] = {"fifo": f, "mini_pipe": m, "ratio": mm / fm}
    rng = lambda v: f"{min(v):.0f}-{max(v):.0f}"
    print(f"| {label} | {fm:.0f} | {mm:.0f} | {mm / fm:.3f}x | {rng(f)} | {rng(m)} |")
print(f"\nMedian ratio over the {len(ratios)} cells: {statistics.median(ratios):.3f}x; "
      f"{sum(r < 1 for r in ratios)} of {len(ratios)} below 1.0x.")
with open(data, "w") as out:
    json.dump({"kernel": kernel, "commit": commit, "cpus": int(smp), "args": args,
               "insns_per_kib": table}, out, indent=1)
    out.write("\n")
PY
say "wrote $report and $data"
cat "$report"
