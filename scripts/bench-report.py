#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the JSON of `mini_pipe_test bench` into logs/bench/bench.{json,md,png}.

usage: scripts/bench-report.py BENCH_JSON OUT_DIR --vm-line LINE --commit C --host-cpus N
                               [--host-cpu MODEL]

Called by scripts/bench.sh. The plot needs matplotlib; if it is missing it is installed
from PyPI with pip (non-interactively).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys


def fmt(x, digits=2):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def ratio(x):
    return "n/a" if x is None else f"{x:.2f}x"


def size_name(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def stalls(cell):
    return cell["fifo"]["stalls"], cell["mini_pipe"]["stalls"]


def environment(args, bench):
    m = re.search(r"Linux version (\S+) \((\w+)\)", args.vm_line or "")
    return {
        "kernel": m.group(1) if m else bench["guest"]["kernel"],
        "accelerator": (m.group(2).upper() if m else "unknown"),
        "guest_cpus": bench["guest"]["cpus"],
        "guest_cpu_model": bench["guest"]["cpu_model"],
        "host_cpus": int(args.host_cpus),
        "host_cpu_model": args.host_cpu,
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "vm_line": args.vm_line,
    }


def find_tp(bench, capacity, size):
    for c in bench["throughput"]:
        if c["capacity"] == capacity and c["write_size"] == size:
            return c
    return None


KINDS = (("writers_voluntary", "writer slept (full ring or mutex)"),
         ("writers_involuntary", "writer preempted"),
         ("readers_voluntary", "reader slept (empty ring or mutex)"),
         ("readers_involuntary", "reader preempted"))


def runs_range(side, key):
    runs = side.get(key) or []
    return f"{fmt(min(runs), 1)}-{fmt(max(runs), 1)}" if runs else "n/a"


def csw_reason(c):
    """Why a cell's context switches are above the FIFO's, from the measurements: the kind of
    switch that makes most of the difference, and whether the medians differ by more than the
    FIFO's own spread between repetitions."""
    f, m = c["fifo"], c["mini_pipe"]
    fk, mk = f.get("csw_per_mib_by_kind"), m.get("csw_per_mib_by_kind")
    parts = []
    if fk and mk:
        key, what = max(KINDS, key=lambda k: (mk[k[0]] or 0) - (fk[k[0]] or 0))
        parts.append(f"{what}: {fmt(mk[key], 1)} against {fmt(fk[key], 1)} per MiB")
    fruns = f.get("csw_per_mib_runs") or []
    if fruns and min(fruns) <= m["csw_per_mib"] <= max(fruns):
        parts.append(f"inside the FIFO's own range over the repetitions "
                     f"({runs_range(f, 'csw_per_mib_runs')}; mini_pipe "
                     f"{runs_range(m, 'csw_per_mib_runs')})")
    return "; ".join(parts)


def targets(bench):
    """The issue's targets: (name, measured, verdict) with verdict met/missed/not measured."""
    rows = []
    cells = [find_tp(bench, 65536, s) for s in (64, 65536)]
    if all(cells):
        rs = [c["ratio_mib_s"] for c in cells]
        ok = all(r is not None and r >= 1.0 for r in rs)
        rows.append((
            "throughput >= 1.0x the FIFO's at 64 B and at 64 KiB writes, capacity 64 KiB",
            f"64 B: {ratio(rs[0])}, 64 KiB: {ratio(rs[1])}"
            + "".join(f" ({size_name(c['write_size'])} below 1.0x; MiB/s over the repetitions: "
                      f"FIFO {runs_range(c['fifo'], 'mib_s_runs')}, mini_pipe "
                      f"{runs_range(c['mini_pipe'], 'mib_s_runs')})"
                      for c, r in zip(cells, rs) if r is not None and r < 1.0)
            + "".join(f" ({size_name(c['write_size'])}: {stalls(c)[1]} mini_pipe stalls)"
                      for c in cells if stalls(c)[1]),
            "met" if ok else "missed"))
    else:
        rows.append(("throughput >= 1.0x at 64 B and 64 KiB writes, capacity 64 KiB",
                     "cells not run", "not measured"))
    big = [c for c in bench["throughput"] if c["write_size"] >= 512]
    if big:
        bad = [c for c in big if c["ratio_csw_per_mib"] is None or c["ratio_csw_per_mib"] > 1.0]
        worst = max((c for c in big if c["ratio_csw_per_mib"] is not None),
                    key=lambda c: c["ratio_csw_per_mib"], default=None)
        measured = f"{len(big) - len(bad)}/{len(big)} cells at or below the FIFO"
        if bad:
            measured += "; above or not measured: " + "; ".join(
                f"{size_name(c['capacity'])}/{size_name(c['write_size'])} "
                + (f"{ratio(c['ratio_csw_per_mib'])} ({csw_reason(c)})"
                   if c["ratio_csw_per_mib"] is not None
                   else f"stalled {stalls(c)[1]}x")
                for c in bad)
        elif worst:
            measured += f"; highest {ratio(worst['ratio_csw_per_mib'])}"
        rows.append(("context switches per MiB <= the FIFO's at every write size >= 512 B "
                     "(every capacity)", measured, "met" if not bad else "missed"))
    lat = bench.get("latency")
    if lat and lat.get("ratio_median") is not None:
        r = lat["ratio_median"]
        rows.append(("median one-way wake-up latency <= 1.1x the FIFO's",
                     f"{ratio(r)} ({fmt(lat['mini_pipe']['median_us'], 1)} us against "
                     f"{fmt(lat['fifo']['median_us'], 1)} us)",
                     "met" if r <= 1.1 else "missed"))
    else:
        rows.append(("median one-way wake-up latency <= 1.1x the FIFO's",
                     "not measured" + (" (clock too coarse)" if lat else ""), "not measured"))
    sc = [c for c in (bench.get("scaling") or []) if c["writers"] == 4 and c["readers"] == 4]
    if sc:
        r = sc[0]["ratio_mib_s"]
        rows.append(("4 writers x 4 readers >= 0.9x the FIFO's throughput", ratio(r),
                     "met" if r is not None and r >= 0.9 else "missed"))
    else:
        rows.append(("4 writers x 4 readers >= 0.9x the FIFO's throughput", "not run",
                     "not measured"))
    return rows


def markdown(bench, env):
    L = []
    add = L.append
    mode = bench["mode"]
    add(f"# mini_pipe against a FIFO: benchmark ({mode})")
    add("")
    add("Written by `scripts/bench.sh` from `mini_pipe_test bench` (tests/src/bench.rs); the raw "
        "numbers, every repetition, are in bench.json.")
    add("")
    add(f"- commit: `{env['commit']}`, {env['date']}")
    add(f"- guest: Linux {env['kernel']}, accelerator {env['accelerator']}, "
        f"{env['guest_cpus']} CPUs ({env['guest_cpu_model']})")
    add(f"- host: {env['host_cpus']} CPUs ({env['host_cpu_model']}), possibly shared with "
        "other VMs: absolute numbers under TCG are slow and noisy, the ratios are what counts")
    add(f"- method: {bench['method']}; {bench['repetitions']} repetition(s) of each cell; "
        f"whole run {fmt(bench['elapsed_s'], 0)} s")
    clk = (bench.get("latency") or {}).get("clock")
    if clk:
        add(f"- clock: {clk['clock']} on `{clk['clocksource']}`, clock_getres "
            f"{clk['getres_ns']} ns, consecutive clock_gettime calls "
            f"{fmt(clk['median_delta_ns'], 0)} ns apart (median, smallest "
            f"{fmt(clk['min_nonzero_delta_ns'], 0)} ns, {clk['zero_deltas']} zero deltas in "
            f"{clk['consecutive_calls']}): "
            + ("resolves microseconds" if clk["resolves_microseconds"]
               else "does NOT resolve microseconds, so no latency is reported"))
    add("")
    add("## Targets")
    add("")
    add("| target | measured (mini_pipe / FIFO) | verdict |")
    add("|---|---|---|")
    for name, measured, verdict in targets(bench):
        add(f"| {name} | {measured} | **{verdict}** |")
    add("")
    all_stalls = [(c, *stalls(c)) for c in bench["throughput"] + (bench.get("scaling") or [])
                  + ([bench["seeds_reference"]] if bench.get("seeds_reference") else [])]
    if any(s for _, f, m in all_stalls for s in (f, m)):
        add("**Stalls.** A run counts as stalled when every writer slept in write() and every "
            "reader in read() for 5 seconds; it was then killed and left out of the medians. "
            "See NOTES.md and the `stall_reports` in bench.json.")
        add("")
    add("## Throughput, one writer process to one reader process")
    add("")
    add("Reader buffer: 64 KiB (1 MiB for 1 MiB writes). csw/MiB: voluntary + involuntary "
        "context switches of writer and reader per MiB moved. Ratio: mini_pipe / FIFO "
        "(throughput: higher is better; context switches: lower is better).")
    add("")
    def add_tp_header():
        """The header of a throughput table (the one-writer cells and the seeds' reference)."""
        add("| capacity | write | MiB moved | FIFO MiB/s | mini_pipe MiB/s | ratio | "
            "FIFO csw/MiB | mini_pipe csw/MiB | ratio | stalls FIFO/mini_pipe |")
        add("|---|---|---|---|---|---|---|---|---|---|")

    add_tp_header()

    def tp_row(c):
        f, m = c["fifo"], c["mini_pipe"]
        return (f"| {size_name(c['capacity'])} | {size_name(c['write_size'])} | "
                f"{fmt(c['bytes'] / 2**20)} | {fmt(f['mib_s'])} | {fmt(m['mib_s'])} | "
                f"{ratio(c['ratio_mib_s'])} | {fmt(f['csw_per_mib'], 1)} | "
                f"{fmt(m['csw_per_mib'], 1)} | {ratio(c['ratio_csw_per_mib'])} | "
                f"{f['stalls']}/{m['stalls']} |")

    for c in bench["throughput"]:
        add(tp_row(c))
    add("")
    if all(c["fifo"].get("csw_per_mib_by_kind") for c in bench["throughput"]):
        add("Context switches per MiB by kind (medians over the repetitions), FIFO / mini_pipe. "
            "Voluntary: the process slept, in a wait queue or on the mutex; involuntary: it was "
            "preempted.")
        add("")
        add("| capacity | write | " + " | ".join(k.replace("_", " ") for k, _ in KINDS) + " |")
        add("|---|---|" + "---|" * len(KINDS))
        for c in bench["throughput"]:
            fk, mk = c["fifo"]["csw_per_mib_by_kind"], c["mini_pipe"]["csw_per_mib_by_kind"]
            add(f"| {size_name(c['capacity'])} | {size_name(c['write_size'])} | "
                + " | ".join(f"{fmt(fk[k], 1)} / {fmt(mk[k], 1)}" for k, _ in KINDS) + " |")
        add("")
    s = bench.get("seeds_reference")
    if s:
        add("## The seeds' configuration: capacity 128, 64-byte writes")
        add("")
        add(f"mini_pipe loaded with capacity=128; the FIFO asked for 128 bytes with F_SETPIPE_SZ "
            f"and got {s['fifo']['capacity_seen']} (a pipe holds at least one page), so this "
            "is a reference point, not a like-for-like comparison.")
        add("")
        add_tp_header()
        add(tp_row(s))
        add("")
    lat = bench.get("latency")
    if lat:
        add("## One-way wake-up latency")
        add("")
        add(f"Capacity {size_name(lat['capacity'])}, {lat['message_bytes']}-byte messages; "
            f"{lat['runs']} runs of {lat['messages_per_object_per_run']} messages per object, "
            f"interleaved {lat['interleaving']}. {lat['note'][:1].upper()}{lat['note'][1:]}.")
        add("")
        add("| | FIFO | mini_pipe | ratio |")
        add("|---|---|---|---|")
        for key, name in (("median_us", "median (us)"), ("p99_us", "p99 (us)")):
            r = lat["ratio_median"] if key == "median_us" else lat["ratio_p99"]
            add(f"| {name} | {fmt(lat['fifo'].get(key), 1)} | "
                f"{fmt(lat['mini_pipe'].get(key), 1)} | {ratio(r)} |")
        add("")
    sc = bench.get("scaling")
    if sc:
        add("## Scaling: writers x readers, 4 KiB messages")
        add("")
        add("Each writer writes its share in 4 KiB writes, each reader reads with a 4 KiB buffer; "
            "capacity 64 KiB.")
        add("")
        add("| writers x readers | MiB moved | FIFO MiB/s | mini_pipe MiB/s | ratio | "
            "FIFO csw/MiB | mini_pipe csw/MiB | ratio | stalls FIFO/mini_pipe |")
        add("|---|---|---|---|---|---|---|---|---|")
        for c in sc:
            f, m = c["fifo"], c["mini_pipe"]
            add(f"| {c['writers']} x {c['readers']} | {fmt(c['bytes'] / 2**20)} | "
                f"{fmt(f['mib_s'])} | {fmt(m['mib_s'])} | {ratio(c['ratio_mib_s'])} | "
                f"{fmt(f['csw_per_mib'], 1)} | {fmt(m['csw_per_mib'], 1)} | "
                f"{ratio(c['ratio_csw_per_mib'])} | {f['stalls']}/{m['stalls']} |")
        add("")
    add("![throughput against write size](bench.png)")
    add("")
    return "\n".join(L)


def plot(bench, env, path):
    try:
        import matplotlib
    except ImportError:
        print("bench-report: installing matplotlib from PyPI with pip", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "--no-input",
                        "--root-user-action=ignore", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    caps = sorted({c["capacity"] for c in bench["throughput"]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, cap in enumerate(caps):
        cells = sorted((c for c in bench["throughput"] if c["capacity"] == cap),
                       key=lambda c: c["write_size"])
        xs = [c["write_size"] for c in cells]
        for side, style, marker in (("fifo", "--", "o"), ("mini_pipe", "-", "s")):
            ys = [c[side]["mib_s"] if c[side]["mib_s"] is not None else float("nan")
                  for c in cells]
            ax.plot(xs, ys, linestyle=style, marker=marker, color=colors[i % len(colors)],
                    label=f"{'FIFO' if side == 'fifo' else 'mini_pipe'}, capacity "
                          f"{size_name(cap)}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("write size (bytes)")
    ax.set_ylabel("throughput (MiB/s, median)")
    ax.set_title(f"mini_pipe vs FIFO, 1 writer -> 1 reader\nLinux {env['kernel']}, "
                 f"{env['accelerator']}, {env['guest_cpus']} vCPUs, "
                 f"commit {env['commit'][:12]}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if any(c[side]["mib_s"] is None for c in bench["throughput"] for side in ("fifo", "mini_pipe")):
        fig.text(0.01, 0.01, "missing points: every run stalled (see bench.md)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bench_json")
    p.add_argument("out_dir")
    p.add_argument("--vm-line", default="")
    p.add_argument("--commit", default="unknown")
    p.add_argument("--host-cpus", default="0")
    p.add_argument("--host-cpu", default="")
    args = p.parse_args()
    with open(args.bench_json) as f:
        bench = json.load(f)
    env = environment(args, bench)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "bench.json"), "w") as f:
        json.dump({"environment": env, **bench}, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out_dir, "bench.md"), "w") as f:
        f.write(markdown(bench, env))
    plot(bench, env, os.path.join(args.out_dir, "bench.png"))
    for name, measured, verdict in targets(bench):
        print(f"bench: target {verdict}: {name}: {measured}", file=sys.stderr)


if __name__ == "__main__":
    main()
