// SPDX-License-Identifier: GPL-2.0

//! Reliability: load (many writers and readers, every capacity), faults (processes killed while
//! they wait, signal storms), lifecycle (unload while open, load cycles, open/close storms,
//! leaks) and bad input. Each test prints a one-line figure (`# stress: ...`).

use crate::{
    util::{
        ensure, has_open, is_loaded, meminfo_kib, open, open_within, pattern, reload, run, test,
        unload, wait_until, within, Helper, TestResult, DEV, KO,
    },
    Test,
};
use nix::{
    errno::Errno,
    fcntl::{fcntl, FcntlArg, OFlag},
    kmod::{delete_module, DeleteModuleFlags},
    libc,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    io::{Read, Write},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);
/// The stress runs get longer bounds (the debug kernel is several times slower), still
/// well inside the VM's own bound, so that a hang fails a test with its reason.
const LONG: Duration = Duration::from_secs(600);

pub fn tests() -> Vec<Test> {
    vec![
        test("large_writes_small_ring", large_writes_small_ring),
        test("stress_all_capacities", stress_all_capacities),
        test("faults_kill_blocked", faults_kill_blocked),
        test("faults_signal_storm", faults_signal_storm),
        test("lifecycle_rmmod_while_open", lifecycle_rmmod_while_open),
        test("lifecycle_load_cycles", lifecycle_load_cycles),
        test("lifecycle_open_close_storm", lifecycle_open_close_storm),
        test(
            "reads_return_only_written_bytes",
            reads_return_only_written_bytes,
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
    stress_on(DEV, writers, readers, msg, per_writer)
}

/// `writers` writer processes sending `per_writer` framed `msg`-byte messages each through the
/// pipe at `path` to `readers` reader processes; returns the bytes received, the messages lost
/// or duplicated, and the torn ones.
pub(crate) fn stress_on(
    path: &str,
    writers: u8,
    readers: u8,
    msg: usize,
    per_writer: u64,
) -> Result<(u64, u64, u64), String> {
    let mut rs = Vec::new();
    for _ in 0..readers {
        rs.push(Helper::spawn(
            "stress-reader",
            &[path.into(), msg.to_string(), String::new()],
        )?);
    }
    // Our own writer end until every writer has opened: no reader may see end-of-file early.
    // Its open waits for a reader, so it is bounded.
    let hold = open_within(path, false, true, 0, WAIT)?;
    let mut ws = Vec::new();
    for id in 1..=writers {
        ws.push(Helper::spawn(
            "stress-writer",
            &[
                path.into(),
                id.to_string(),
                per_writer.to_string(),
                msg.to_string(),
                String::new(),
            ],
        )?);
    }
    for w in &ws {
        let pid = w.pid();
        wait_until("a stress writer has opened", WAIT, || has_open(pid, path))?;
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
pub(crate) fn byte_stream_chunks(total: u64, chunk: u64) -> Result<(u64, u64, u64), String> {
    let mut w = Helper::spawn(
        "write",
        &["11".into(), total.to_string(), chunk.to_string()],
    )?;
    // The open waits for the writer: bounded. The reads do not block: poll waits, bounded.
    let mut rd = open_within(DEV, true, false, 0, WAIT)?;
    fcntl(&rd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| e.to_string())?;
    let (mut off, mut buf, mut want) = (0u64, vec![0u8; 4096], vec![0u8; 4096]);
    let mut torn = 0;
    let mut last = Instant::now();
    loop {
        // No data for a minute while a writer exists is a stall (a lost wakeup).
        ensure!(
            last.elapsed() < WAIT,
            "stalled: no data for {WAIT:?} after {off} bytes"
        );
        let mut fds = [PollFd::new(rd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(1000u16)).map_err(|e| e.to_string())?;
        let n = match rd.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(format!("read at {off}: {e}")),
        };
        last = Instant::now();
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
    kill_blocked(65536)
}

/// [`faults_kill_blocked`] on a pipe of `capacity` bytes. At `capacity=0` a writer waits with
/// its message offered (FIONREAD counts it) and nothing is ever left at the end.
pub(crate) fn kill_blocked(capacity: usize) -> TestResult {
    reload(&[&format!("capacity={capacity}")])?;
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
                } else if capacity == 0 {
                    queued() > 0
                } else {
                    capacity - queued() < MSG
                }
        })?;
        signal(pid, Signal::SIGKILL)?;
        let (mut h, file) = victims.remove(i);
        h.kill_within(WAIT)
            .map_err(|e| format!("the victim did not die: {e}"))?;
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

/// A number after `key` in a helper's report (`... key N ...`), if there is one.
fn field(report: &str, key: &str) -> Option<u64> {
    let mut it = report.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it.next().and_then(|v| v.parse().ok());
        }
    }
    None
}

/// A count a helper keeps in file `path` (0 until it has written one).
fn count_in(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A writer and a reader, each with a timer signal every 300 us (a handler without
/// SA_RESTART), move a pattern stream until the writer has had `CUTS` writes cut short by a
/// signal (it returned less than asked, and the handler ran during the call) and the reader
/// `CUTS` reads ended by one (EINTR: a read waiting on an empty pipe, where a read that has
/// data returns it). Then the writer stops: every byte accepted is read, intact, and no write
/// came back short without a signal.
fn faults_signal_storm() -> TestResult {
    signal_storm(65536)
}

/// [`faults_signal_storm`] on a pipe of `capacity` bytes.
pub(crate) fn signal_storm(capacity: usize) -> TestResult {
    const CUTS: u64 = 50;
    const STORM: Duration = Duration::from_secs(300);
    reload(&[&format!("capacity={capacity}")])?;
    let dir = "/tmp/storm";
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let (stop, wcuts, rcuts) = (
        format!("{dir}/stop"),
        format!("{dir}/writer"),
        format!("{dir}/reader"),
    );
    let mut w = Helper::spawn("storm-writer", &[DEV.into(), stop.clone(), wcuts.clone()])?;
    let mut r = Helper::spawn("storm-reader", &[DEV.into(), rcuts.clone()])?;
    // Checked every 20 ms: the helpers need the two CPUs more than this loop does.
    let start = Instant::now();
    let seen = loop {
        if count_in(&wcuts) >= CUTS && count_in(&rcuts) >= CUTS {
            break true;
        }
        if start.elapsed() > STORM {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Either way the writer stops, and the reader reads to end-of-file.
    std::fs::write(&stop, b"").map_err(|e| format!("{stop}: {e}"))?;
    let wout = w.output_within(LONG)?;
    let rout = r.output_within(LONG)?;
    ensure!(w.wait_within(WAIT)?.success(), "writer failed: {wout}");
    ensure!(r.wait_within(WAIT)?.success(), "reader failed: {rout}");
    // "accepted A signals S short P eintr E unexplained U" / "read R signals S eintr E bad B"
    let get = |s: &str, k: &str| field(s, k).ok_or(format!("no {k} in {wout:?} / {rout:?}"));
    let (acc, short, weintr, unexplained) = (
        get(&wout, "accepted")?,
        get(&wout, "short")?,
        get(&wout, "eintr")?,
        get(&wout, "unexplained")?,
    );
    let (got, reintr, bad) = (
        get(&rout, "read")?,
        get(&rout, "eintr")?,
        get(&rout, "bad")?,
    );
    let signals = get(&wout, "signals")? + get(&rout, "signals")?;
    println!(
        "# faults: {signals} signals, {short} writes cut short, {weintr} writes and {reintr} \
         reads interrupted (EINTR), {acc} bytes accepted, {got} read, {bad} bad"
    );
    ensure!(
        got == acc && bad == 0,
        "counts not exact: {acc} bytes accepted, {got} read, {bad} reads with wrong bytes"
    );
    ensure!(
        unexplained == 0,
        "{unexplained} blocking writes came back short with no signal and a reader present"
    );
    ensure!(
        seen && short >= CUTS && reintr >= CUTS,
        "after {:?}: {short} writes cut short and {reintr} reads interrupted by the signal, \
         not {CUTS} of each",
        start.elapsed()
    );
    reload(&[])
}

/// Unloading while a file is open fails (7.3's delete_module answers EWOULDBLOCK for a module
/// in use) and leaves the device working; once closed, unloading works.
fn lifecycle_rmmod_while_open() -> TestResult {
    reload(&[])?;
    let mut f = open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let r = within("delete_module while open", WAIT, || {
        delete_module(c"mini_pipe", DeleteModuleFlags::O_NONBLOCK)
    })?;
    ensure!(
        r == Err(Errno::EWOULDBLOCK),
        "delete_module while open: {r:?}"
    );
    let (st, _) = run("rmmod", &["mini_pipe"], WAIT)?;
    ensure!(!st.success() && is_loaded(), "rmmod while open succeeded");
    // Non-blocking, so that a broken device fails the calls instead of hanging them.
    let n = f.write(b"still here").map_err(|e| format!("write: {e}"))?;
    ensure!(n == 10, "write of 10 bytes wrote {n}");
    let mut buf = [0u8; 16];
    let n = f.read(&mut buf).map_err(|e| format!("read: {e}"))?;
    ensure!(
        &buf[..n] == b"still here",
        "the device changed: {:?}",
        &buf[..n]
    );
    drop(f);
    unload().map_err(|e| format!("after close: {e}"))?;
    println!("# lifecycle: rmmod-while-open EWOULDBLOCK, unload after close OK");
    reload(&[])
}

/// Whether this kernel has KASAN (its report function is in the symbol table).
pub(crate) fn kasan_kernel() -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .map(|k| k.lines().any(|l| l.ends_with(" kasan_report")))
        .unwrap_or(false)
}

/// 200 load/unload cycles with I/O in each, at capacities from 1 byte to the largest: every
/// cycle works, and no ring is left behind.
///
/// Rings come from kvmalloc. Up to 8 KiB they are slab objects; up to 4 MiB, pages from
/// kmalloc_large, which 7.3 counts in Slab too (NR_SLAB_UNRECLAIMABLE_B); the largest ring, 16
/// MiB, is vmalloc'ed and counted in VmallocUsed. So VmallocUsed, measured after every unload,
/// shows at once a 16 MiB ring not freed, on both kernels (KASAN does not hold vmalloc'ed
/// memory back), and Slab the smaller ones over the whole run, on the standard kernel.
fn lifecycle_load_cycles() -> TestResult {
    const CYCLES: usize = 200;
    const BIG: usize = 16 << 20;
    const CAPS: [usize; 5] = [1, 128, 4096, 65536, BIG];
    /// VmallocUsed may move this much for other reasons (vmap'ed stacks of exiting
    /// processes): a quarter of a 16 MiB ring.
    const VMALLOC_SLACK: u64 = 4 << 10;
    // One cycle first, so that caches the first load fills are counted in the baseline.
    reload(&[])?;
    unload()?;
    let (slab0, vm0) = (meminfo_kib("Slab:")?, meminfo_kib("VmallocUsed:")?);
    let mut vm_big = u64::MAX;
    for i in 0..CYCLES {
        let cap = CAPS[i % CAPS.len()];
        let param = format!("capacity={cap}");
        let (st, out) = run("insmod", &[KO, &param], WAIT)?;
        ensure!(st.success(), "cycle {i}: insmod {param}: {out}");
        if cap == BIG {
            // The instrument sees the ring: else a leak would go unseen.
            let vm = meminfo_kib("VmallocUsed:")?;
            ensure!(
                vm + VMALLOC_SLACK >= vm0 + (BIG as u64 >> 10),
                "cycle {i}: VmallocUsed {vm0} KiB -> {vm} KiB with a 16 MiB ring loaded: \
                 the ring is not where this test looks for it"
            );
            vm_big = vm_big.min(vm);
        }
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
        drop(f);
        unload().map_err(|e| format!("cycle {i}: {e}"))?;
        let vm = meminfo_kib("VmallocUsed:")?;
        ensure!(
            vm <= vm0 + VMALLOC_SLACK,
            "cycle {i} (capacity {cap}): VmallocUsed {vm0} KiB -> {vm} KiB after unload: \
             a ring was not freed"
        );
    }
    let (slab, vm) = (meminfo_kib("Slab:")?, meminfo_kib("VmallocUsed:")?);
    println!(
        "# lifecycle: {CYCLES} load cycles, VmallocUsed {vm0} KiB -> {vm} KiB \
         ({vm_big} KiB with a 16 MiB ring), slab {slab0} KiB -> {slab} KiB"
    );
    if kasan_kernel() {
        // KASAN's quarantine keeps freed objects for a while on purpose, so the slab grows
        // and shrinks on its own there; on that kernel VmallocUsed above, and kmemleak's scan
        // after the whole run (kmemleak_no_leaks), find leaks.
        println!("# lifecycle: KASAN kernel: slab not compared, VmallocUsed and kmemleak are");
    } else {
        ensure!(
            slab <= slab0 + 512,
            "slab grew by {} KiB over {CYCLES} cycles",
            slab - slab0
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
/// ring, with reads asking for more than is there. Non-blocking, so every call answers at
/// once: a write fails only with EAGAIN when there is no room for it (it is atomic: at most
/// the capacity), a read only with EAGAIN when the ring is empty, and a read returns all that
/// is queued up to what it asks; anything else fails the test, and so does moving too few
/// bytes.
fn reads_return_only_written_bytes() -> TestResult {
    const CAP: u64 = 100;
    /// The calls below move about 62000 bytes; a device that fails calls moves fewer.
    const MIN_BYTES: u64 = 50_000;
    reload(&[&format!("capacity={CAP}")])?;
    let mut f = open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let (mut woff, mut roff) = (0u64, 0u64);
    let mut buf = vec![0u8; 256];
    let mut want = vec![0u8; 256];
    let eagain = |e: &std::io::Error| e.raw_os_error() == Some(libc::EAGAIN);
    for i in 0..2000u64 {
        let n = (i * 37 % 61 + 1) as usize;
        let room = CAP - (woff - roff);
        pattern(3, woff, &mut want[..n]);
        match f.write(&want[..n]) {
            Ok(w) => {
                ensure!(
                    w == n && n as u64 <= room,
                    "call {i}: write of {n} bytes with {room} bytes of room wrote {w}"
                );
                woff += w as u64;
            }
            Err(e) if eagain(&e) && room < n as u64 => {}
            Err(e) => return Err(format!("call {i}: write of {n}, {room} bytes of room: {e}")),
        }
        let ask = (i * 53 % 200 + 1) as usize;
        let queued = woff - roff;
        match f.read(&mut buf[..ask]) {
            Ok(r) => {
                ensure!(
                    r as u64 == queued.min(ask as u64),
                    "call {i}: read of {ask} with {queued} bytes queued returned {r}"
                );
                pattern(3, roff, &mut want[..r]);
                ensure!(
                    buf[..r] == want[..r],
                    "read {r} bytes at {roff} that were not written"
                );
                roff += r as u64;
            }
            Err(e) if eagain(&e) && queued == 0 => {}
            Err(e) => return Err(format!("call {i}: read of {ask}, {queued} queued: {e}")),
        }
    }
    ensure!(
        roff >= MIN_BYTES,
        "only {roff} bytes read back ({woff} written), not {MIN_BYTES}"
    );
    println!("# security: {roff} bytes read back, all written, none beyond");
    drop(f);
    reload(&[])
}
