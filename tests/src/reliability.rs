// SPDX-License-Identifier: GPL-2.0

//! Reliability: load (many writers and readers, every capacity), faults (processes killed while
//! they wait, signal storms), lifecycle (unload while open, load cycles, open/close storms,
//! leaks) and bad input. Each test prints a one-line figure (`# stress: ...`).

use crate::{
    util::{
        ensure, has_open, is_loaded, open, pattern, reload, run, wait_until, Helper, TestResult,
        DEV, KO,
    },
    Test,
};
use nix::{
    errno::Errno,
    kmod::{delete_module, DeleteModuleFlags},
    libc,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    io::{Read, Write},
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(60);
/// The stress runs get longer bounds (the debug kernel is several times slower), still
/// well inside the VM's own bound, so that a hang fails a test with its reason.
const LONG: Duration = Duration::from_secs(600);

pub fn tests() -> Vec<Test> {
    vec![
        Test::new("large_writes_small_ring", Box::new(large_writes_small_ring)),
        Test::new("stress_all_capacities", Box::new(stress_all_capacities)),
        Test::new("faults_kill_blocked", Box::new(faults_kill_blocked)),
        Test::new("faults_signal_storm", Box::new(faults_signal_storm)),
        Test::new(
            "lifecycle_rmmod_while_open",
            Box::new(lifecycle_rmmod_while_open),
        ),
        Test::new("lifecycle_load_cycles", Box::new(lifecycle_load_cycles)),
        Test::new(
            "lifecycle_open_close_storm",
            Box::new(lifecycle_open_close_storm),
        ),
        Test::new(
            "reads_return_only_written_bytes",
            Box::new(reads_return_only_written_bytes),
        ),
    ]
}

/// A reader's report: `got N bad B order O` then per writer `ID:COUNT:SUM:SUMSQ`.
#[derive(Default)]
struct Tally {
    got: u64,
    bad: u64,
    order: u64,
    per_writer: Vec<(u64, u64, u64)>,
}

impl Tally {
    fn add(&mut self, line: &str) -> TestResult {
        let mut words = line.split_whitespace();
        let mut num = |want: &str| -> Result<u64, String> {
            ensure!(words.next() == Some(want), "bad reader report: {line}");
            words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or(format!("bad reader report: {line}"))
        };
        self.got += num("got")?;
        self.bad += num("bad")?;
        self.order += num("order")?;
        for w in words {
            let f: Vec<u64> = w.split(':').filter_map(|x| x.parse().ok()).collect();
            ensure!(f.len() == 4, "bad writer tally {w}");
            let id = f[0] as usize;
            if self.per_writer.len() <= id {
                self.per_writer.resize(id + 1, (0, 0, 0));
            }
            let e = &mut self.per_writer[id];
            *e = (e.0 + f[1], e.1.wrapping_add(f[2]), e.2.wrapping_add(f[3]));
        }
        Ok(())
    }

    /// Messages lost or duplicated, given that writer `id` sent `sent[id]` messages.
    fn lost_or_duplicated(&self, sent: &[u64]) -> u64 {
        let mut wrong = 0;
        for (id, &n) in sent.iter().enumerate().skip(1) {
            let (count, sum, sumsq) = self.per_writer.get(id).copied().unwrap_or_default();
            let want_sum = (0..n).fold(0u64, |s, q| s.wrapping_add(q));
            let want_sq = (0..n).fold(0u64, |s, q| s.wrapping_add(q.wrapping_mul(q)));
            if count != n || sum != want_sum || sumsq != want_sq {
                wrong += count.abs_diff(n).max(1);
            }
        }
        wrong
    }
}

/// One stress run: `writers` x `readers` processes moving `per_writer` messages of `msg` bytes
/// each through a mini_pipe of `capacity` bytes. Returns (bytes, lost, torn).
fn stress_run(
    capacity: usize,
    writers: u8,
    readers: u8,
    msg: usize,
    per_writer: u64,
) -> Result<(u64, u64, u64), String> {
    reload(&[&format!("capacity={capacity}")])?;
    let mut rs = Vec::new();
    for _ in 0..readers {
        rs.push(Helper::spawn(
            "stress-reader",
            &[DEV.into(), msg.to_string(), String::new()],
        )?);
    }
    // Our own writer end until every writer has opened: no reader may see end-of-file early.
    let hold = open(DEV, false, true, 0).map_err(|e| format!("open: {e}"))?;
    let mut ws = Vec::new();
    for id in 1..=writers {
        ws.push(Helper::spawn(
            "stress-writer",
            &[
                DEV.into(),
                id.to_string(),
                per_writer.to_string(),
                msg.to_string(),
                String::new(),
            ],
        )?);
    }
    for w in &ws {
        let pid = w.pid();
        wait_until("a stress writer has opened", WAIT, || has_open(pid, DEV))?;
    }
    drop(hold);
    for mut w in ws {
        let out = w.output_within(LONG)?;
        ensure!(w.wait_within(WAIT)?.success(), "a writer failed: {out}");
    }
    let mut tally = Tally::default();
    for mut r in rs {
        let out = r.output_within(LONG)?;
        ensure!(r.wait_within(WAIT)?.success(), "a reader failed: {out}");
        tally.add(out.trim())?;
    }
    let mut sent = vec![per_writer; usize::from(writers) + 1];
    sent[0] = 0;
    let lost = tally.lost_or_duplicated(&sent);
    ensure!(
        tally.order == 0,
        "{} messages out of order within their writer",
        tally.order
    );
    Ok((tally.got * msg as u64, lost, tally.bad))
}

/// N writers x M readers up to 8 x 8, framed and checksummed messages, at capacities 1, 128,
/// 4096, 65536 and the largest allowed: nothing lost, duplicated, torn or reordered.
fn stress_all_capacities() -> TestResult {
    // capacity, writers, readers, message size, bytes in all
    let runs: [(usize, u8, u8, usize, u64); 6] = [
        (1, 1, 1, 1, 64 << 10),
        (128, 4, 4, 128, 8 << 20),
        (4096, 8, 8, 4096, 40 << 20),
        (65536, 8, 8, 4096, 64 << 20),
        (65536, 2, 2, 4096, 48 << 20),
        (16 << 20, 2, 2, 4096, 96 << 20),
    ];
    let (mut bytes, mut lost, mut torn) = (0, 0, 0);
    for (cap, w, r, msg, total) in runs {
        let (b, l, t) = if cap == 1 {
            byte_stream(cap, total)?
        } else {
            stress_run(cap, w, r, msg, total / msg as u64 / u64::from(w))?
        };
        println!(
            "# stress: capacity {cap}, {w} writers x {r} readers: {} KiB, {l} lost, {t} torn",
            b >> 10
        );
        bytes += b;
        lost += l;
        torn += t;
    }
    println!("# stress: {} MiB, {lost} lost, {torn} torn", bytes >> 20);
    ensure!(
        lost == 0 && torn == 0,
        "{lost} messages lost or duplicated, {torn} torn"
    );
    reload(&[])
}

/// Writes much larger than the ring, so every write fills it and sleeps for room many times:
/// a writer that wakes a reader, drops the lock and comes back must not miss that the reader
/// emptied the ring and went back to sleep (a lost wakeup found by the benchmark).
fn large_writes_small_ring() -> TestResult {
    let mut total = 0;
    for (cap, chunk, bytes) in [
        (4096u64, 65536u64, 16u64 << 20),
        (1, 1000, 256 << 10),
        (100, 4097, 4 << 20),
    ] {
        reload(&[&format!("capacity={cap}")])?;
        let (b, lost, torn) = byte_stream_chunks(bytes, chunk)?;
        ensure!(
            lost == 0 && torn == 0,
            "capacity {cap}, {chunk}-byte writes: {lost} lost, {torn} torn"
        );
        total += b;
    }
    println!(
        "# stress: {} MiB in writes larger than the ring, intact",
        total >> 20
    );
    reload(&[])
}

/// A capacity too small to frame messages in: one writer, one reader, every byte checked.
fn byte_stream(capacity: usize, total: u64) -> Result<(u64, u64, u64), String> {
    reload(&[&format!("capacity={capacity}")])?;
    byte_stream_chunks(total, 1000)
}

/// One writer process writing `total` bytes of a pattern in `chunk`-byte writes, this process
/// reading and checking them: (bytes read, bytes missing, bad reads).
fn byte_stream_chunks(total: u64, chunk: u64) -> Result<(u64, u64, u64), String> {
    let mut w = Helper::spawn(
        "write",
        &["11".into(), total.to_string(), chunk.to_string()],
    )?;
    let mut rd = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let (mut off, mut buf, mut want) = (0u64, vec![0u8; 4096], vec![0u8; 4096]);
    let mut torn = 0;
    loop {
        // Bounded: no data for a minute while a writer exists is a stall (a lost wakeup).
        let mut fds = [PollFd::new(rd.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(60_000u16)).map_err(|e| e.to_string())?;
        ensure!(ready > 0, "stalled: no data for 60 s after {off} bytes");
        let n = rd.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        pattern(11, off, &mut want[..n]);
        torn += u64::from(buf[..n] != want[..n]);
        off += n as u64;
    }
    ensure!(w.wait_within(LONG)?.success(), "writer failed");
    Ok((off, total - off.min(total), torn))
}

/// Reads a helper's progress file: the bytes it has moved so far.
fn progress(path: &str) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| {
            b.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        })
        .unwrap_or(0)
}

/// State letter of process `pid` (R, S, T, ...).
fn state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, r)| r.chars().next()))
        .unwrap_or('?')
}

fn signal(pid: u32, sig: Signal) -> TestResult {
    kill(Pid::from_raw(pid as i32), sig).map_err(|e| e.to_string())
}

/// kill -9 of readers and writers while they wait, at random points of a long transfer: the
/// bytes writers got accepted equal the bytes readers got plus what is left at the end.
///
/// A process killed while it sleeps waiting for data or room has moved nothing in that call,
/// so its progress file (written after each call) is exact. To know it is waiting there and
/// not about to return, the other side is stopped (SIGSTOP) first and the ring is drained
/// (for a reader victim) or filled (for a writer victim) before the kill.
fn faults_kill_blocked() -> TestResult {
    reload(&[])?;
    const MSG: usize = 4096;
    let dir = "/tmp/faults";
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    // Our reader end: FIONREAD, and no EPIPE while readers are being replaced.
    let watch = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let queued = || crate::util::queued(&watch).unwrap_or(0) as usize;
    let mut next_id = 0;
    let spawn = |role: &str, id: &mut usize| -> Result<(Helper, String), String> {
        *id += 1;
        let file = format!("{dir}/{role}-{id}");
        let args = if role == "stress-writer" {
            vec![
                DEV.into(),
                (*id % 250 + 1).to_string(),
                "2000".into(),
                MSG.to_string(),
                file.clone(),
            ]
        } else {
            vec![DEV.into(), MSG.to_string(), file.clone()]
        };
        let h = Helper::spawn(role, &args)?;
        // Only once it has the device open can it be found waiting in read or write.
        let pid = h.pid();
        wait_until("a helper has opened the device", WAIT, || {
            has_open(pid, DEV)
        })?;
        Ok((h, file))
    };
    let mut writers = vec![
        spawn("stress-writer", &mut next_id)?,
        spawn("stress-writer", &mut next_id)?,
    ];
    let mut readers = vec![
        spawn("stress-reader", &mut next_id)?,
        spawn("stress-reader", &mut next_id)?,
    ];
    let mut dead = Vec::new();
    let mut kills = 0;
    for round in 0..16 {
        let kill_reader = round % 2 == 0;
        let (victims, others) = if kill_reader {
            (&mut readers, &writers)
        } else {
            (&mut writers, &readers)
        };
        for (h, _) in others {
            signal(h.pid(), Signal::SIGSTOP)?;
        }
        for (h, _) in others {
            let pid = h.pid();
            wait_until("the other side stopped", WAIT, || state(pid) == 'T')?;
        }
        let i = rand(victims.len());
        let pid = victims[i].0.pid();
        let nr = if kill_reader {
            crate::util::SYS_READ
        } else {
            crate::util::SYS_WRITE
        };
        wait_until("the victim waits in the kernel", WAIT, || {
            crate::util::blocked_in_syscall(pid, nr)
                && if kill_reader {
                    queued() == 0
                } else {
                    65536 - queued() < MSG
                }
        })?;
        signal(pid, Signal::SIGKILL)?;
        let (mut h, file) = victims.remove(i);
        ensure!(h.wait_within(WAIT).is_ok(), "the victim did not die");
        dead.push(file);
        kills += 1;
        let role = if kill_reader {
            "stress-reader"
        } else {
            "stress-writer"
        };
        victims.push(spawn(role, &mut next_id)?);
        for (h, _) in others {
            signal(h.pid(), Signal::SIGCONT)?;
        }
    }
    // Let the writers finish, then the readers drain and see end-of-file.
    let mut files = dead;
    for (mut h, f) in writers.into_iter() {
        let out = h.output_within(LONG)?;
        ensure!(h.wait_within(WAIT)?.success(), "a writer failed: {out}");
        files.push(f);
    }
    let mut tally = Tally::default();
    for (mut h, f) in readers.into_iter() {
        let out = h.output_within(LONG)?;
        ensure!(h.wait_within(WAIT)?.success(), "a reader failed: {out}");
        tally.add(out.trim())?;
        files.push(f);
    }
    let left = queued() as u64;
    let (mut written, mut read) = (0, 0);
    for f in &files {
        if f.contains("stress-writer") {
            written += progress(f);
        } else {
            read += progress(f);
        }
    }
    println!(
        "# faults: {kills} kills, {written} bytes accepted = {read} read + {left} left at the end"
    );
    ensure!(
        written == read + left,
        "counts do not add up: {written} != {read} + {left}"
    );
    ensure!(
        tally.bad == 0 && tally.order == 0,
        "{} torn, {} out of order",
        tally.bad,
        tally.order
    );
    drop(watch);
    reload(&[])
}

/// A writer and a reader with a timer signal every 300 us while 32 MiB go through: every
/// partial write and read is accounted for, and every byte arrives intact.
fn faults_signal_storm() -> TestResult {
    reload(&[])?;
    const TOTAL: u64 = 32 << 20;
    let mut w = Helper::spawn("storm-writer", &[DEV.into(), TOTAL.to_string()])?;
    let mut r = Helper::spawn("storm-reader", &[DEV.into()])?;
    let wout = w.output_within(LONG)?;
    let rout = r.output_within(LONG)?;
    ensure!(w.wait_within(WAIT)?.success(), "writer failed: {wout}");
    ensure!(r.wait_within(WAIT)?.success(), "reader failed: {rout}");
    // "accepted A signals S short P" / "read R signals S bad B"
    let field = |s: &str, k: &str| -> u64 {
        let mut it = s.split_whitespace();
        while let Some(w) = it.next() {
            if w == k {
                return it.next().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    };
    let (acc, got, bad) = (
        field(&wout, "accepted"),
        field(&rout, "read"),
        field(&rout, "bad"),
    );
    let signals = field(&wout, "signals").saturating_add(field(&rout, "signals"));
    println!(
        "# faults: {signals} signals, {} short writes, {acc} bytes accepted, {got} read, {bad} bad",
        field(&wout, "short")
    );
    ensure!(
        acc == TOTAL && got == acc && bad == 0,
        "counts not exact: {wout} / {rout}"
    );
    ensure!(
        signals > 100,
        "only {signals} signals arrived: the storm did not happen"
    );
    Ok(())
}

/// Unloading while a file is open fails (7.3's delete_module answers EWOULDBLOCK for a module
/// in use) and leaves the device working; once closed, unloading works.
fn lifecycle_rmmod_while_open() -> TestResult {
    reload(&[])?;
    let mut f = open(DEV, true, true, 0).map_err(|e| e.to_string())?;
    let r = delete_module(c"mini_pipe", DeleteModuleFlags::O_NONBLOCK);
    ensure!(
        r == Err(Errno::EWOULDBLOCK),
        "delete_module while open: {r:?}"
    );
    let (st, _) = run("rmmod", &["mini_pipe"], WAIT)?;
    ensure!(!st.success() && is_loaded(), "rmmod while open succeeded");
    f.write_all(b"still here").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 10];
    f.read_exact(&mut buf).map_err(|e| e.to_string())?;
    ensure!(&buf == b"still here", "the device changed: {buf:?}");
    drop(f);
    delete_module(c"mini_pipe", DeleteModuleFlags::O_NONBLOCK)
        .map_err(|e| format!("delete_module after close: {e}"))?;
    println!("# lifecycle: rmmod-while-open EWOULDBLOCK, unload after close OK");
    reload(&[])
}

/// Slab memory in KiB, from /proc/meminfo.
fn slab_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("Slab:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Whether this kernel has KASAN (its report function is in the symbol table).
fn kasan_kernel() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .map(|k| k.lines().any(|l| l.ends_with(" kasan_report")))
        .unwrap_or(false)
}

/// 200 load/unload cycles with I/O in each: every cycle works, and slab memory does not grow.
fn lifecycle_load_cycles() -> TestResult {
    const CYCLES: usize = 200;
    reload(&[])?;
    // One cycle first, so that caches the first load fills are counted in the baseline.
    let before = slab_kib();
    for i in 0..CYCLES {
        if is_loaded() {
            delete_module(c"mini_pipe", DeleteModuleFlags::O_NONBLOCK)
                .map_err(|e| format!("cycle {i}: unload: {e}"))?;
        }
        let cap = format!("capacity={}", [1, 128, 4096, 65536][i % 4]);
        let (st, out) = run("insmod", &[KO, &cap], WAIT)?;
        ensure!(st.success(), "cycle {i}: insmod {cap}: {out}");
        let mut f =
            open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| format!("cycle {i}: open: {e}"))?;
        let n = f
            .write(b"cycle")
            .map_err(|e| format!("cycle {i}: write: {e}"))?;
        let mut buf = [0u8; 8];
        let m = f
            .read(&mut buf)
            .map_err(|e| format!("cycle {i}: read: {e}"))?;
        ensure!(
            n >= 1 && buf[..m] == b"cycle"[..n],
            "cycle {i}: read back {:?}",
            &buf[..m]
        );
    }
    let after = slab_kib();
    println!("# lifecycle: {CYCLES} load cycles, slab {before} KiB -> {after} KiB");
    if kasan_kernel() {
        // KASAN's quarantine keeps freed objects for a while on purpose, so the slab grows
        // and shrinks on its own there; on that kernel kmemleak's scan after the whole run
        // (kmemleak_no_leaks) is what finds leaks.
        println!("# lifecycle: KASAN kernel: slab not compared, kmemleak checks leaks");
    } else {
        ensure!(
            after <= before + 512,
            "slab grew by {} KiB over {CYCLES} cycles",
            after - before
        );
    }
    reload(&[])
}

/// Eight processes open and close the device 1000 times each in every mode: afterwards the
/// counts are back to what is open, and the device still works.
fn lifecycle_open_close_storm() -> TestResult {
    reload(&[])?;
    // A reader, so that non-blocking writers can open too.
    let keep = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut hs = Vec::new();
    for i in 0..8 {
        hs.push(Helper::spawn(
            "open-close",
            &[DEV.into(), "1000".into(), i.to_string()],
        )?);
    }
    let mut opens = 0u64;
    for mut h in hs {
        let out = h.output_within(LONG)?;
        ensure!(h.wait_within(WAIT)?.success(), "an opener failed: {out}");
        opens += out.trim().parse::<u64>().unwrap_or(0);
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", keep.as_raw_fd()))
        .map_err(|e| e.to_string())?;
    ensure!(
        info.contains("readers:\t1\n") && info.contains("writers:\t0\n"),
        "counts after the storm:\n{info}"
    );
    println!("# lifecycle: {opens} opens and closes from 8 processes, counts back to 1 reader");
    drop(keep);
    reload(&[])
}

/// Reads return exactly the bytes writers wrote, never more: across wrap-arounds in a small
/// ring, with reads asking for more than is there.
fn reads_return_only_written_bytes() -> TestResult {
    reload(&["capacity=100"])?;
    let mut f = open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let (mut woff, mut roff) = (0u64, 0u64);
    let mut buf = vec![0u8; 256];
    let mut want = vec![0u8; 256];
    for i in 0..2000u64 {
        let n = (i * 37 % 61 + 1) as usize;
        pattern(3, woff, &mut want[..n]);
        if let Ok(w) = f.write(&want[..n]) {
            woff += w as u64;
        }
        let ask = (i * 53 % 200 + 1) as usize;
        if let Ok(r) = f.read(&mut buf[..ask]) {
            pattern(3, roff, &mut want[..r]);
            ensure!(
                buf[..r] == want[..r],
                "read {r} bytes at {roff} that were not written"
            );
            ensure!(roff + r as u64 <= woff, "read past what was written");
            roff += r as u64;
        }
    }
    println!("# security: {roff} bytes read back, all written, none beyond");
    drop(f);
    reload(&[])
}
