#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the JSON of `mini_pipe_test bench` into logs/bench/bench.{json,md,png}.

usage: scripts/bench-report.py OUT_DIR --run BENCH_JSON VM_LINE [--run BENCH_JSON VM_LINE]...
                               --commit C --host-cpus N [--host-cpu MODEL]

Called by scripts/bench.sh, with one --run per VM run (one per vCPU count): the JSON that
`mini_pipe_test bench` printed there, and vm.sh's "vm: Linux version" line. The plot needs matplotlib; if it is missing it is installed
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


def environment(args):
    return {
        "host_cpus": int(args.host_cpus),
        "host_cpu_model": args.host_cpu,
        "commit": args.commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_environment(bench, vm_line):
    """What one VM run ran on: kernel, accelerator, vCPUs."""
    m = re.search(r"Linux version (\S+) \((\w+)\)", vm_line or "")
    return {
        "kernel": m.group(1) if m else bench["guest"]["kernel"],
        "accelerator": (m.group(2).upper() if m else "unknown"),
        "guest_cpus": bench["guest"]["cpus"],
        "guest_cpu_model": bench["guest"]["cpu_model"],
        "vm_line": vm_line,
    }


def cpus_name(n):
    return f"{n} vCPU" + ("" if n == 1 else "s")


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


def tp_reason(c, run):
    """What a throughput cell below the FIFO measured in `run`: the spread of both sides over
    the repetitions, whether the medians differ by more than the FIFO's own spread, the kind of
    context switch that grew most, and what the same write and read cost with nobody to wake
    (the calls part), if it measured the cell's message size."""
    f, m = c["fifo"], c["mini_pipe"]
    parts = [f"MiB/s over the repetitions: FIFO {runs_range(f, 'mib_s_runs')}, "
             f"mini_pipe {runs_range(m, 'mib_s_runs')}"]
    fruns = f.get("mib_s_runs") or []
    if fruns and m["mib_s"] is not None and min(fruns) <= m["mib_s"]:
        parts.append("mini_pipe's median inside the FIFO's range")
    if stalls(c)[1]:
        parts.append(f"{stalls(c)[1]} mini_pipe stalls")
    fk, mk = f.get("csw_per_mib_by_kind"), m.get("csw_per_mib_by_kind")
    if fk and mk:
        key, what = max(KINDS, key=lambda k: (mk[k[0]] or 0) - (fk[k[0]] or 0))
        if (mk[key] or 0) > 1.1 * (fk[key] or 0) + 0.1:
            parts.append(f"most grown: {what}, {fmt(mk[key], 1)} against {fmt(fk[key], 1)} "
                         "per MiB")
    size = c.get("message_bytes") or c.get("write_size")
    call = next((k for k in run.get("calls") or [] if k["write_size"] == size), None)
    if call:
        parts.append(f"a {size_name(size)} write and read with nobody to wake: "
                     f"{ratio(call['ratio_speed'])} the FIFO's speed")
    insns = run.get("insns")
    cell = (insns or {}).get("insns_per_kib", {}).get(insns_label(c))
    if cell:
        parts.append(f"instructions per KiB moved: {cell['ratio']:.2f}x the FIFO's "
                     f"({insns['file']}, commit {insns['commit'][:7]})")
    return "; ".join(parts)


def insns_label(c):
    """The label scripts/insn-count.sh gives a throughput or scaling cell (the bench's)."""
    if "writers" in c:
        return f"scaling {c['writers']}x{c['readers']}"
    return f"capacity {c.get('capacity')} write {c.get('write_size')}"


def load_insns(out_dir, runs):
    """Attaches to each run the instruction counts of `make insns` on as many vCPUs, if that
    file is there (insns-Ncpu.json): what a cell that misses its target is quoted with."""
    for run in runs:
        name = f"insns-{run['guest']['cpus']}cpu.json"
        try:
            with open(os.path.join(out_dir, name)) as f:
                run["insns"] = {"file": name.replace(".json", ".md"), **json.load(f)}
        except FileNotFoundError:
            pass


def cell_name(c):
    if "mode" in c:
        return f"{c['mode']}/{size_name(c['write_size'])}"
    if "writers" in c:
        return f"{c['writers']} x {c['readers']}"
    return f"{size_name(c['capacity'])}/{size_name(c['write_size'])}"


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def at_least_one(runs, pick, what):
    """The target "every cell `pick` chooses at >= 1.0x the FIFO's throughput, on every vCPU
    count": (name, measured, verdict)."""
    measured, ok, ran = [], True, False
    for run in runs:
        cells = pick(run)
        if not cells:
            continue
        ran = True
        bad = [c for c in cells if c["ratio_mib_s"] is None or c["ratio_mib_s"] < 1.0]
        ok = ok and not bad
        text = (f"{cpus_name(run['guest']['cpus'])}: {len(cells) - len(bad)}/{len(cells)} "
                f"at or above, lowest {ratio(min(c['ratio_mib_s'] or 0 for c in cells))}")
        if bad:
            text += "; below: " + "; ".join(
                f"{cell_name(c)} {ratio(c['ratio_mib_s'])} ({tp_reason(c, run)})" for c in bad)
        measured.append(text)
    name = f"throughput >= 1.0x the FIFO's in every {what}, on every vCPU count"
    if not ran:
        return (name, "not run", "not measured")
    return (name, "<br>".join(measured), "met" if ok else "missed")


def targets(runs):
    """The issues' targets: (name, measured, verdict) with verdict met/missed/not measured.
    `runs`: the bench documents of the VM runs, most vCPUs first; the targets that predate the
    1-vCPU run are judged on the first."""
    rows = []
    big = lambda run: [c for c in run["throughput"] if c["write_size"] >= 512]
    scaling = lambda run: run.get("scaling") or []
    rows.append(at_least_one(runs, big, "throughput cell with writes of 512 B or more"))
    rows.append(at_least_one(runs, scaling, "scaling cell (writers x readers)"))
    cells = [(run, c) for run in runs for c in big(run) + scaling(run)]
    ratios = [c["ratio_csw_per_mib"] for _, c in cells if c["ratio_csw_per_mib"] is not None]
    name = ("context switches per MiB <= 1.0x the FIFO's in the median over those cells "
            "(both tables, every vCPU count)")
    if ratios:
        med = median(ratios)
        per_run = ", ".join(
            f"{cpus_name(run['guest']['cpus'])} {ratio(median([c['ratio_csw_per_mib'] for r, c in cells if r is run and c['ratio_csw_per_mib'] is not None]))}"
            for run in runs)
        above = sum(r > 1.0 for r in ratios)
        rows.append((name, f"median {ratio(med)} over {len(ratios)} cells ({per_run}); "
                     f"{above} cells above 1.0x", "met" if med <= 1.0 else "missed"))
    else:
        rows.append((name, "not run", "not measured"))
    first = runs[0]
    where = f" ({cpus_name(first['guest']['cpus'])})"
    cells = [find_tp(first, 65536, s) for s in (64, 65536)]
    if all(cells):
        rs = [c["ratio_mib_s"] for c in cells]
        ok = all(r is not None and r >= 1.0 for r in rs)
        rows.append((
            "throughput >= 1.0x the FIFO's at 64 B and at 64 KiB writes, capacity 64 KiB" + where,
            f"64 B: {ratio(rs[0])}, 64 KiB: {ratio(rs[1])}"
            + "".join(f" ({size_name(c['write_size'])} below 1.0x: {tp_reason(c, first)})"
                      for c, r in zip(cells, rs) if r is None or r < 1.0),
            "met" if ok else "missed"))
    else:
        rows.append(("throughput >= 1.0x at 64 B and 64 KiB writes, capacity 64 KiB" + where,
                     "cells not run", "not measured"))
    lat = first.get("latency")
    name = "median one-way wake-up latency <= 1.1x the FIFO's" + where
    if lat and lat.get("ratio_median") is not None:
        r = lat["ratio_median"]
        rows.append((name, f"{ratio(r)} ({fmt(lat['mini_pipe']['median_us'], 1)} us against "
                     f"{fmt(lat['fifo']['median_us'], 1)} us)",
                     "met" if r <= 1.1 else "missed"))
    else:
        rows.append((name, "not measured" + (" (clock too coarse)" if lat else ""),
                     "not measured"))
    sc = [c for c in scaling(first) if c["writers"] == 4 and c["readers"] == 4]
    name = "4 writers x 4 readers >= 0.9x the FIFO's throughput" + where
    if sc:
        r = sc[0]["ratio_mib_s"]
        rows.append((name, ratio(r), "met" if r is not None and r >= 0.9 else "missed"))
    else:
        rows.append((name, "not run", "not measured"))
    rv = (first.get("rendezvous") or {}).get("throughput") or []
    for size, want in ((1 << 20, 2.0), (65536, 1.3)):
        name = (f"capacity=0: {size_name(size)} writes >= {want:.1f}x the throughput of a "
                f"64 KiB FIFO" + where)
        c = next((c for c in rv if c["mode"] == "capacity=0" and c["write_size"] == size), None)
        if c is None:
            rows.append((name, "not run", "not measured"))
            continue
        r = c["ratio_mib_s"]
        rows.append((name, f"{ratio(r)} ({fmt(c['mini_pipe']['mib_s'])} against "
                     f"{fmt(c['fifo']['mib_s'])} MiB/s; context switches "
                     f"{ratio(c['ratio_csw_per_mib'])})",
                     "met" if r is not None and r >= want else "missed"))
    return rows


def markdown(runs, env):
    L = []
    add = L.append
    first = runs[0]
    add(f"# mini_pipe against a FIFO: benchmark ({first['mode']})")
    add("")
    add("Written by `scripts/bench.sh` from `mini_pipe_test bench` (tests/src/bench.rs), run in "
        "one VM per vCPU count; the raw numbers, every repetition, are in bench.json.")
    add("")
    add(f"- commit: `{env['commit']}`, {env['date']}")
    for run in runs:
        e = run["environment"]
        add(f"- guest, {cpus_name(e['guest_cpus'])}: Linux {e['kernel']}, accelerator "
            f"{e['accelerator']} ({e['guest_cpu_model']}); {run['repetitions']} repetition(s) "
            f"of each cell; run {fmt(run['elapsed_s'], 0)} s")
    add(f"- host: {env['host_cpus']} CPUs ({env['host_cpu_model']}), possibly shared with "
        "other VMs: absolute numbers under TCG are slow and noisy, the ratios are what counts. "
        f"The host has {env['host_cpus']} cores, so a guest gets at most "
        f"{env['host_cpus']} vCPUs that really run at once.")
    add(f"- method: {first['method']}")
    clk = (first.get("latency") or {}).get("clock")
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
    for name, measured, verdict in targets(runs):
        add(f"| {name} | {measured} | **{verdict}** |")
    add("")
    all_stalls = [stalls(c) for run in runs
                  for c in run["throughput"] + (run.get("scaling") or [])
                  + ([run["seeds_reference"]] if run.get("seeds_reference") else [])]
    if any(f or m for f, m in all_stalls):
        add("**Stalls.** A run counts as stalled when every writer slept in write() and every "
            "reader in read() for 5 seconds; it was then killed and left out of the medians. "
            "See NOTES.md and the `stall_reports` in bench.json.")
        add("")
    for run in runs:
        run_markdown(run, add)
    add("![throughput against write size](bench.png)")
    add("")
    return "\n".join(L)


# The columns every table of a FIFO against mini_pipe moving bytes has after those that name
# its cell: the throughput tables, the seeds' reference, the rendezvous and the scaling tables.
MOVED_COLUMNS = ("MiB moved", "FIFO MiB/s", "mini_pipe MiB/s", "ratio", "FIFO csw/MiB",
                 "mini_pipe csw/MiB", "ratio", "stalls FIFO/mini_pipe")


def add_moved_header(names, add):
    """The header of a table of cells named by the columns `names`, then MOVED_COLUMNS."""
    columns = (*names, *MOVED_COLUMNS)
    add("| " + " | ".join(columns) + " |")
    add("|" + "---|" * len(columns))


def moved_row(names, c):
    """A row of such a table: the cell's `names`, then its MOVED_COLUMNS."""
    f, m = c["fifo"], c["mini_pipe"]
    values = (*names, fmt(c["bytes"] / 2**20), fmt(f["mib_s"]), fmt(m["mib_s"]),
              ratio(c["ratio_mib_s"]), fmt(f["csw_per_mib"], 1), fmt(m["csw_per_mib"], 1),
              ratio(c["ratio_csw_per_mib"]), f"{f['stalls']}/{m['stalls']}")
    return "| " + " | ".join(values) + " |"


def add_tp_header(add):
    """The header of a throughput table (the one-writer cells and the seeds' reference)."""
    add_moved_header(("capacity", "write"), add)


def tp_row(c):
    return moved_row((size_name(c["capacity"]), size_name(c["write_size"])), c)


def add_kinds(cells, label, add):
    """Context switches per MiB by kind, FIFO / mini_pipe, one row per cell."""
    if not cells or not all(c["fifo"].get("csw_per_mib_by_kind") for c in cells):
        return
    add("Context switches per MiB by kind (medians over the repetitions), FIFO / mini_pipe. "
        "Voluntary: the process slept, in a wait queue or on the mutex; involuntary: it was "
        "preempted.")
    add("")
    add(f"| {label} | " + " | ".join(k.replace("_", " ") for k, _ in KINDS) + " |")
    add("|---|" + "---|" * len(KINDS))
    for c in cells:
        fk, mk = c["fifo"]["csw_per_mib_by_kind"], c["mini_pipe"]["csw_per_mib_by_kind"]
        add(f"| {cell_name(c)} | "
            + " | ".join(f"{fmt(fk[k], 1)} / {fmt(mk[k], 1)}" for k, _ in KINDS) + " |")
    add("")


def run_markdown(run, add):
    """The tables of one VM run."""
    cpus = cpus_name(run["guest"]["cpus"])
    add(f"## {cpus}")
    add("")
    if run["throughput"]:
        add(f"### Throughput, one writer process to one reader process ({cpus})")
        add("")
        add("Reader buffer: 64 KiB (1 MiB for 1 MiB writes). csw/MiB: voluntary + involuntary "
            "context switches of writer and reader per MiB moved. Ratio: mini_pipe / FIFO "
            "(throughput: higher is better; context switches: lower is better).")
        add("")
        add_tp_header(add)
        for c in run["throughput"]:
            add(tp_row(c))
        add("")
        add_kinds(run["throughput"], "capacity/write", add)
    s = run.get("seeds_reference")
    if s:
        add(f"### The seeds' configuration: capacity 128, 64-byte writes ({cpus})")
        add("")
        add(f"mini_pipe loaded with capacity=128; the FIFO asked for 128 bytes with F_SETPIPE_SZ "
            f"and got {s['fifo']['capacity_seen']} (a pipe holds at least one page), so this "
            "is a reference point, not a like-for-like comparison.")
        add("")
        add_tp_header(add)
        add(tp_row(s))
        add("")
    lat = run.get("latency")
    if lat:
        add(f"### One-way wake-up latency ({cpus})")
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
    rv = run.get("rendezvous")
    if rv:
        add(f"### Rendezvous: mini_pipe waits for its readers ({cpus})")
        add("")
        add(f"One writer process to one reader process, each write and read of the same size, "
            f"against a FIFO of {size_name(rv['fifo_capacity'])}. capacity=0: a rendezvous "
            "channel, every write returns once the reader has its bytes, which move from the "
            "writer's buffer to the reader's with one copy. O_DSYNC: the writer opens a 64 KiB "
            "mini_pipe with O_DSYNC and waits for the reader in the same way (its bytes skip "
            "the ring).")
        add("")
        add_moved_header(("mode", "write and read"), add)
        for c in rv["throughput"]:
            add(moved_row((c["mode"], size_name(c["write_size"])), c))
        add("")
        add("Ping-pong: two processes send a message back and forth through two pipes (a load "
            "with pipes=2; two FIFOs), each round trip timed by the side that starts it.")
        add("")
        add("| mode | message | round trips | FIFO median (us) | mini_pipe median (us) | "
            "ratio | FIFO p99 | mini_pipe p99 |")
        add("|---|---|---|---|---|---|---|---|")
        for c in rv["pingpong"]:
            f, m = c["fifo"], c["mini_pipe"]
            add(f"| {c['mode']} | {size_name(c['message_bytes'])} | "
                f"{c['runs']} x {c['round_trips_per_run']} | {fmt(f['median_us'], 1)} | "
                f"{fmt(m['median_us'], 1)} | {ratio(c['ratio_median'])} | "
                f"{fmt(f['p99_us'], 1)} | {fmt(m['p99_us'], 1)} |")
        add("")
        add_kinds(rv["throughput"], "mode/size", add)
    sc = run.get("scaling")
    if sc:
        add(f"### Scaling: writers x readers, 4 KiB messages ({cpus})")
        add("")
        add("Each writer writes its share in 4 KiB writes, each reader reads with a 4 KiB buffer; "
            "capacity 64 KiB.")
        add("")
        add_moved_header(("writers x readers",), add)
        for c in sc:
            add(moved_row((cell_name(c),), c))
        add("")
        add_kinds(sc, "writers x readers", add)
    calls = run.get("calls")
    if calls:
        add(f"### The cost of a call with nobody to wake ({cpus})")
        add("")
        add("One process holds the object open for reading and writing, writes a message and "
            "reads it back, over and over: no one sleeps and no one is woken, so this is what "
            "each pipe spends on a call where both make the same calls and context switches. "
            "Capacity 64 KiB; nanoseconds per write and read; ratio: the FIFO's time over "
            "mini_pipe's (higher is better).")
        add("")
        add("| message | rounds | FIFO ns | mini_pipe ns | ratio | FIFO runs | mini_pipe runs |")
        add("|---|---|---|---|---|---|---|")
        for c in calls:
            fifo_runs, mini_runs = (", ".join(f"{x:.0f}" for x in c[k])
                                    for k in ("fifo_ns_runs", "mini_pipe_ns_runs"))
            add(f"| {size_name(c['write_size'])} | {c['rounds']} | {fmt(c['fifo_ns'], 0)} | "
                f"{fmt(c['mini_pipe_ns'], 0)} | {ratio(c['ratio_speed'])} | "
                f"{fifo_runs} | {mini_runs} |")
        add("")


def plot(runs, env, path):
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

    runs = [r for r in runs if r["throughput"]]
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(6 * max(len(runs), 1), 5), dpi=110,
                             squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, run in zip(axes[0], runs):
        caps = sorted({c["capacity"] for c in run["throughput"]})
        for i, cap in enumerate(caps):
            cells = sorted((c for c in run["throughput"] if c["capacity"] == cap),
                           key=lambda c: c["write_size"])
            xs = [c["write_size"] for c in cells]
            for side, style, marker in (("fifo", "--", "o"), ("mini_pipe", "-", "s")):
                ys = [c[side]["mib_s"] if c[side]["mib_s"] is not None else float("nan")
                      for c in cells]
                ax.plot(xs, ys, linestyle=style, marker=marker, color=colors[i % len(colors)],
                        label=f"{'FIFO' if side == 'fifo' else 'mini_pipe'}, capacity "
                              f"{size_name(cap)}")
        e = run["environment"]
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("write size (bytes)")
        ax.set_ylabel("throughput (MiB/s, median)")
        ax.set_title(f"1 writer -> 1 reader, {cpus_name(e['guest_cpus'])}\nLinux {e['kernel']}, "
                     f"{e['accelerator']}, commit {env['commit'][:12]}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if any(c[side]["mib_s"] is None for run in runs for c in run["throughput"]
           for side in ("fifo", "mini_pipe")):
        fig.text(0.01, 0.01, "missing points: every run stalled (see bench.md)", fontsize=7)
    fig.suptitle("mini_pipe vs FIFO", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--run", nargs=2, action="append", required=True,
                   metavar=("BENCH_JSON", "VM_LINE"))
    p.add_argument("--commit", default="unknown")
    p.add_argument("--host-cpus", default="0")
    p.add_argument("--host-cpu", default="")
    args = p.parse_args()
    runs = []
    for path, vm_line in args.run:
        with open(path) as f:
            bench = json.load(f)
        runs.append({"environment": run_environment(bench, vm_line), **bench})
    runs.sort(key=lambda r: -r["guest"]["cpus"])
    env = environment(args)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "bench.json"), "w") as f:
        json.dump({"environment": env, "runs": runs}, f, indent=1)
        f.write("\n")
    load_insns(args.out_dir, runs)
    with open(os.path.join(args.out_dir, "bench.md"), "w") as f:
        f.write(markdown(runs, env))
    plot(runs, env, os.path.join(args.out_dir, "bench.png"))
    for name, measured, verdict in targets(runs):
        measured = measured.replace("<br>", "; ")
        print(f"bench: target {verdict}: {name}: {measured}", file=sys.stderr)


if __name__ == "__main__":
    main()
