// SPDX-License-Identifier: GPL-2.0

//! The bounded fuzzer (issue 4).
//!
//! `mini_pipe_test helper fuzz SEED OPS [PEERS...]` is one process that performs OPS random
//! operations, chosen by a PRNG seeded with SEED, on a small table of open files of
//! /dev/mini_pipe: open with random flags, read, write, readv, writev (random sizes, and now
//! and then a NULL buffer or one that runs into an inaccessible page), poll, epoll, fcntl,
//! ioctl, dup, mmap/lseek/pread, close, signals to itself or to the PEERS, and fork (the child
//! does a few operations of its own and `_exit`s). It prints one summary line and exits 0, or
//! 1 if something impossible happened (the lines before the summary say what).
//!
//! "Impossible" means a result no pipe may give whatever the interleaving: a read or write
//! that moved more bytes than asked (or than the buffer had accessible), a write of at most
//! `PIPE_BUF` bytes that was split, `FIONREAD` outside `0..=capacity`, an unknown ioctl or an
//! mmap that succeeded, poll reporting events nobody asked for, a forked child that hung.
//!
//! Nothing can hang: every operation that may sleep runs with an interval timer armed whose
//! SIGALRM, handled without `SA_RESTART`, ends the sleep with `EINTR` within a few
//! milliseconds. The operations go in phases of `PHASE_OPS` (see `Phase`), the same in every
//! process, so that at times nobody holds a reader, or a writer, or anything.
//!
//! The test `fuzz` runs `PROCS` such processes against each other, the later ones signalling
//! the earlier ones, then checks that the device is idle; a splat in the kernel log is caught
//! by scripts/vm.sh. `MINI_PIPE_FUZZ_OPS` (operations per process, default `DEFAULT_OPS`) and
//! `MINI_PIPE_FUZZ_SEED` (first seed) change the run, e.g.
//! `scripts/vm.sh -- env MINI_PIPE_FUZZ_OPS=60000 mini_pipe_test fuzz`. The sequence of
//! choices follows from the seed, but what each operation meets depends on timing and on the
//! other processes, so a run is a reproducer only statistically; a single process
//! (`mini_pipe_test helper fuzz SEED OPS`) alone is close to deterministic.

use crate::util::{ensure, reload, wait_until, Helper, TestResult, DEV};
use nix::{
    errno::Errno,
    fcntl::{fcntl, open, FcntlArg, OFlag},
    libc,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags},
        mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags},
        signal::{
            kill, raise, sigaction, SaFlags, SigAction, SigEvent, SigHandler, SigSet, SigevNotify,
            Signal,
        },
        stat::Mode,
        time::TimeSpec,
        timer::{Expiration, Timer, TimerSetTimeFlags},
        uio::{pread, readv, writev},
        wait::{waitpid, WaitStatus},
    },
    time::ClockId,
    unistd::{close, dup, fork, getpid, lseek, read, write, ForkResult, Pid, Whence},
};
use std::{
    collections::BTreeMap,
    ffi::c_void,
    io::{IoSlice, IoSliceMut},
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Fuzz processes the test runs at once.
const PROCS: usize = 4;
/// Operations per process unless `MINI_PIPE_FUZZ_OPS` says otherwise.
const DEFAULT_OPS: u64 = 4000;
/// First seed unless `MINI_PIPE_FUZZ_SEED` says otherwise; process `i` uses seed + i.
const DEFAULT_SEED: u64 = 1;
/// Bound on the whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Open files a fuzz process keeps at most.
const SLOTS: usize = 8;
/// The data buffer: more than the default capacity, so a large write can fill the ring.
const BUF: usize = 192 * 1024;
const PIPE_BUF: usize = libc::PIPE_BUF;
const PAGE: usize = 4096;
/// fcntl's F_SETSIG (Linux, every architecture; the libc crate has it only for some).
const F_SETSIG: libc::c_int = 10;
/// How long a forked child may take before it is killed, and how long after that.
const CHILD_BOUND: Duration = Duration::from_secs(30);

/// The signals a fuzz process handles, all without `SA_RESTART`, and counts.
const HANDLED: [Signal; 4] = [
    Signal::SIGALRM,
    Signal::SIGUSR1,
    Signal::SIGIO,
    Signal::SIGPIPE,
];
static RECEIVED: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

extern "C" fn on_signal(sig: libc::c_int) {
    if let Some(i) = HANDLED.iter().position(|s| *s as libc::c_int == sig) {
        RECEIVED[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// splitmix64: small, good enough, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// Index chosen with the given weights.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        unreachable!()
    }
}

/// The operations, with their weights in the random choice.
const OPS: [(&str, u64); 15] = [
    ("open", 14),
    ("close", 7),
    ("read", 14),
    ("write", 14),
    ("readv", 5),
    ("writev", 5),
    ("badbuf", 4),
    ("poll", 6),
    ("epoll", 7),
    ("fcntl", 7),
    ("ioctl", 6),
    ("dup", 2),
    ("misc", 2),
    ("signal", 4),
    ("fork", 2),
];

/// Operations in a phase.
const PHASE_OPS: u64 = 250;

/// What kind of files a fuzz process keeps open for `PHASE_OPS` operations. Phase `k` is the
/// same in every fuzz process whatever its seed, and the processes run at about the same
/// pace, so they are in it at about the same time: all writers (so writes meet `EPIPE`,
/// `SIGPIPE`, `POLLERR`, and blocking opens wait), all readers (end-of-file, `POLLHUP`), few
/// files (the last close of a side, leftovers discarded), or anything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Mixed,
    Readers,
    Writers,
    Sparse,
}

impl Phase {
    fn of(k: u64) -> Self {
        if k == 0 {
            return Phase::Mixed;
        }
        match Rng(k ^ 0x6d69_6e69_5f70_6970).next() % 5 {
            0 | 1 => Phase::Mixed,
            2 => Phase::Readers,
            3 => Phase::Writers,
            _ => Phase::Sparse,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Mixed => "mixed",
            Phase::Readers => "readers",
            Phase::Writers => "writers",
            Phase::Sparse => "sparse",
        }
    }
}

/// Where a read or write puts or takes its bytes.
enum Buffer {
    /// NULL.
    Null,
    /// A buffer whose first `k` bytes are accessible, followed by an inaccessible page.
    Straddle(usize),
}

struct Fuzz {
    seed: u64,
    rng: Rng,
    fds: Vec<Option<OwnedFd>>,
    /// `O_RDONLY`, `O_WRONLY` or `O_RDWR`: how the file in the same slot was opened.
    access: [OFlag; SLOTS],
    /// Operations done so far, which say the phase (see `Phase`).
    done: u64,
    phase: Phase,
    epoll: Epoll,
    timer: Timer,
    /// This fuzz process, the owner for `F_SETOWN` (also in its forked children).
    me: Pid,
    peers: Vec<Pid>,
    buf: Vec<u8>,
    /// Two pages: the first readable and writable, the second inaccessible.
    guard: NonNull<c_void>,
    capacity: Option<usize>,
    ops: BTreeMap<&'static str, u64>,
    phases: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    read_bytes: u64,
    /// Reads of at least one byte that returned 0: end-of-file.
    eofs: u64,
    written_bytes: u64,
    peer_not_ready: u64,
    impossible: Vec<String>,
}

/// Parses `fuzz SEED OPS [PEERS...]` and runs it.
pub fn run(args: &[String]) -> i32 {
    let parse = |s: &String| s.parse::<u64>().ok();
    let (Some(seed), Some(ops)) = (args.first().and_then(parse), args.get(1).and_then(parse))
    else {
        eprintln!("usage: mini_pipe_test helper fuzz SEED OPS [PEER_PID...]");
        return 2;
    };
    let peers: Vec<Pid> = args[2..]
        .iter()
        .filter_map(|s| s.parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect();
    match Fuzz::new(seed, peers) {
        Ok(mut f) => f.run(ops),
        Err(e) => {
            println!("fuzz seed {seed}: setup failed: {e}");
            1
        }
    }
}

/// `{k: v, ...}` without the braces.
fn list<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A timer that sends this process SIGALRM.
fn alarm_timer() -> nix::Result<Timer> {
    Timer::new(
        ClockId::CLOCK_MONOTONIC,
        SigEvent::new(SigevNotify::SigevSignal {
            signal: Signal::SIGALRM,
            si_value: 0,
        }),
    )
}

/// Whether process `pid` catches SIGUSR1 and SIGALRM (SigCgt in /proc/PID/status), so that
/// sending it either cannot kill it: a peer that is still starting up is left alone.
fn catches_signals(pid: Pid) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    else {
        return false;
    };
    let bit = |s: Signal| 1u64 << (s as u32 - 1);
    mask & bit(Signal::SIGUSR1) != 0 && mask & bit(Signal::SIGALRM) != 0
}

impl Fuzz {
    fn new(seed: u64, peers: Vec<Pid>) -> Result<Self, String> {
        let act = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for sig in HANDLED {
            // SAFETY: The handler only increments an atomic, which is async-signal-safe.
            unsafe { sigaction(sig, &act) }.map_err(|e| format!("sigaction {sig}: {e}"))?;
        }
        let timer = alarm_timer().map_err(|e| format!("timer_create: {e}"))?;
        let epoll = Epoll::new(EpollCreateFlags::empty()).map_err(|e| format!("epoll: {e}"))?;
        let len = NonZeroUsize::new(2 * PAGE).unwrap();
        // SAFETY: A fresh anonymous mapping, aliasing nothing.
        let guard = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|e| format!("mmap: {e}"))?;
        // SAFETY: The second page of the mapping just made; no Rust reference points into it.
        let second = unsafe { NonNull::new_unchecked(guard.as_ptr().cast::<u8>().add(PAGE)) };
        // SAFETY: As above.
        unsafe { mprotect(second.cast(), PAGE, ProtFlags::PROT_NONE) }
            .map_err(|e| format!("mprotect: {e}"))?;
        let mut rng = Rng(seed);
        let buf = (0..BUF).map(|_| rng.next() as u8).collect();
        Ok(Self {
            seed,
            rng,
            fds: (0..SLOTS).map(|_| None).collect(),
            access: [OFlag::O_RDONLY; SLOTS],
            done: 0,
            phase: Phase::Mixed,
            epoll,
            timer,
            me: getpid(),
            peers,
            buf,
            guard,
            capacity: None,
            ops: BTreeMap::new(),
            phases: BTreeMap::new(),
            errors: BTreeMap::new(),
            read_bytes: 0,
            eofs: 0,
            written_bytes: 0,
            peer_not_ready: 0,
            impossible: Vec::new(),
        })
    }

    fn run(&mut self, ops: u64) -> i32 {
        let start = Instant::now();
        for _ in 0..ops {
            self.step(true);
        }
        self.disarm();
        self.fds.iter_mut().for_each(|s| drop(s.take()));
        let ms = start.elapsed().as_millis();
        for what in self.impossible.iter().take(20) {
            println!("fuzz seed {}: IMPOSSIBLE: {what}", self.seed);
        }
        let ops_list = self
            .ops
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let signals: BTreeMap<String, u64> = HANDLED
            .iter()
            .zip(&RECEIVED)
            .map(|(s, n)| (s.as_str().to_string(), n.load(Ordering::Relaxed)))
            .collect();
        println!(
            "fuzz seed {}: {ops} ops ({ops_list}) in {ms} ms, {} bytes read \
             ({} reads at end-of-file), {} written, errors by errno {{{}}}, \
             signals received {{{}}}, phases {{{}}}, peers not ready {}",
            self.seed,
            self.read_bytes,
            self.eofs,
            self.written_bytes,
            list(&self.errors),
            list(&signals),
            list(&self.phases),
            self.peer_not_ready,
        );
        i32::from(!self.impossible.is_empty())
    }

    /// One random operation; `may_fork` is false in a forked child.
    fn step(&mut self, may_fork: bool) {
        if may_fork && self.done.is_multiple_of(PHASE_OPS) {
            self.enter_phase(Phase::of(self.done / PHASE_OPS));
        }
        self.done += 1;
        if self.phase == Phase::Sparse && self.open_slots().len() > 2 && self.rng.chance(50) {
            let i = self.any_slot();
            self.close_slot(i);
        }
        let weights: Vec<u64> = OPS
            .iter()
            .map(|(name, w)| if *name == "fork" && !may_fork { 0 } else { *w })
            .collect();
        let mut op = OPS[self.rng.weighted(&weights)].0;
        // With no file open, an operation that needs one becomes an open.
        if self.open_slots().is_empty()
            && !matches!(op, "open" | "signal" | "fork" | "epoll" | "poll")
        {
            op = "open";
        }
        *self.ops.entry(op).or_default() += 1;
        match op {
            "open" => self.op_open(),
            "close" => self.op_close(),
            "read" => self.op_read(),
            "write" => self.op_write(),
            "readv" => self.op_readv(),
            "writev" => self.op_writev(),
            "badbuf" => self.op_badbuf(),
            "poll" => self.op_poll(),
            "epoll" => self.op_epoll(),
            "fcntl" => self.op_fcntl(),
            "ioctl" => self.op_ioctl(),
            "dup" => self.op_dup(),
            "misc" => self.op_misc(),
            "signal" => self.op_signal(),
            "fork" => self.op_fork(),
            _ => unreachable!(),
        }
    }

    /// Starts `phase`, closing the files it has no place for.
    fn enter_phase(&mut self, phase: Phase) {
        self.phase = phase;
        *self.phases.entry(phase.name()).or_default() += 1;
        for i in 0..SLOTS {
            let access = self.access[i];
            let keep = match phase {
                Phase::Mixed => true,
                Phase::Readers => access == OFlag::O_RDONLY,
                Phase::Writers => access == OFlag::O_WRONLY,
                Phase::Sparse => false,
            };
            if !keep {
                self.close_slot(i);
            }
        }
    }

    // --- bookkeeping ------------------------------------------------------------------------

    /// Arms the timer: SIGALRM in 1 to 4 ms, then every 3 ms until `disarm`, so a sleep that
    /// begins after the first expiry is still ended by the next.
    fn arm(&mut self) {
        let first = TimeSpec::from(Duration::from_micros(self.rng.range(1000, 4000) as u64));
        let every = TimeSpec::from(Duration::from_millis(3));
        if let Err(e) = self.timer.set(
            Expiration::IntervalDelayed(first, every),
            TimerSetTimeFlags::empty(),
        ) {
            self.impossible(format!("timer_settime: {e}"));
        }
    }

    fn disarm(&mut self) {
        let zero = TimeSpec::from(Duration::ZERO);
        let _ = self
            .timer
            .set(Expiration::OneShot(zero), TimerSetTimeFlags::empty());
    }

    fn impossible(&mut self, what: String) {
        self.impossible.push(what);
    }

    /// Counts the error of `r`, if any, and returns its value.
    fn note<T>(&mut self, r: nix::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                *self.errors.entry(format!("{e:?}")).or_default() += 1;
                None
            }
        }
    }

    /// The same for a raw libc return value.
    fn note_raw(&mut self, r: isize) -> Option<usize> {
        let r = if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        };
        self.note(r)
    }

    fn open_slots(&self) -> Vec<usize> {
        (0..SLOTS).filter(|i| self.fds[*i].is_some()).collect()
    }

    /// A random open slot (the caller makes sure there is one).
    fn any_slot(&mut self) -> usize {
        let open = self.open_slots();
        open[self.rng.below(open.len() as u64) as usize]
    }

    /// Puts `fd` in a free slot, closing a random file first if all are taken.
    fn store(&mut self, fd: OwnedFd, access: OFlag) {
        let i = match self.fds.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                let i = self.rng.below(SLOTS as u64) as usize;
                self.close_slot(i);
                i
            }
        };
        if self.capacity.is_none() {
            self.capacity =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("capacity:"))
                            .and_then(|v| v.trim().parse().ok())
                    });
        }
        self.fds[i] = Some(fd);
        self.access[i] = access;
    }

    fn close_slot(&mut self, i: usize) {
        if let Some(fd) = self.fds[i].take() {
            let r = close(fd);
            self.note(r);
        }
    }

    /// A random transfer size: zero, small, around a page or `PIPE_BUF`, around the default
    /// capacity, or larger than it.
    fn size(&mut self) -> usize {
        match self.rng.weighted(&[3, 30, 15, 20, 8, 6, 4]) {
            0 => 0,
            1 => self.rng.range(1, 64),
            2 => self.rng.range(PIPE_BUF - 2, PIPE_BUF + 2),
            3 => self.rng.range(65, 8192),
            4 => self.rng.range(8193, 65535),
            5 => self.rng.range(65535, 65537),
            _ => self.rng.range(65538, BUF),
        }
    }

    /// Whether a good-buffer write of `n` bytes must be all or nothing.
    fn atomic(&self, n: usize) -> bool {
        n > 0 && n <= PIPE_BUF && self.capacity.is_some_and(|c| n <= c)
    }

    /// Checks a read or write result of `r` bytes for a request of `n` bytes of which only
    /// `valid` are accessible.
    fn check_count(&mut self, what: &str, n: usize, valid: usize, r: usize) {
        if r > n {
            self.impossible(format!("{what} of {n} bytes returned {r}"));
        } else if r > valid {
            self.impossible(format!(
                "{what} of {n} bytes with {valid} accessible returned {r}"
            ));
        }
    }

    /// A pointer and the count of accessible bytes for a bad buffer of `n` bytes.
    fn bad_ptr(&self, kind: &Buffer) -> (*mut c_void, usize) {
        match kind {
            Buffer::Null => (std::ptr::null_mut(), 0),
            Buffer::Straddle(k) => {
                // SAFETY: `k <= PAGE`, so the pointer stays inside the first page of `guard`.
                let p = unsafe { self.guard.as_ptr().cast::<u8>().add(PAGE - k) };
                (p.cast(), *k)
            }
        }
    }

    // --- the operations ---------------------------------------------------------------------

    fn op_open(&mut self) {
        let mut flags = match self.phase {
            Phase::Readers => OFlag::O_RDONLY,
            Phase::Writers => OFlag::O_WRONLY,
            Phase::Mixed | Phase::Sparse => {
                [OFlag::O_RDONLY, OFlag::O_WRONLY, OFlag::O_RDWR][self.rng.below(3) as usize]
            }
        };
        if self.rng.chance(50) {
            flags |= OFlag::O_NONBLOCK;
        }
        if self.rng.chance(10) {
            flags |= OFlag::O_CLOEXEC;
        }
        if self.rng.chance(5) {
            flags |= OFlag::O_ASYNC;
        }
        if self.rng.chance(2) {
            flags |= OFlag::O_DIRECT;
        }
        self.arm();
        let r = open(DEV, flags, Mode::empty());
        self.disarm();
        if let Some(fd) = self.note(r) {
            self.store(fd, flags & OFlag::O_ACCMODE);
        }
    }

    fn op_close(&mut self) {
        let i = self.any_slot();
        self.close_slot(i);
    }

    fn op_read(&mut self) {
        let i = self.any_slot();
        let n = self.size();
        self.arm();
        let r = read(self.fds[i].as_ref().unwrap(), &mut self.buf[..n]);
        self.disarm();
        if let Some(r) = self.note(r) {
            self.read_bytes += r as u64;
            self.eofs += u64::from(n > 0 && r == 0);
            self.check_count("read", n, n, r);
        }
    }

    fn op_write(&mut self) {
        let i = self.any_slot();
        let n = self.size();
        self.arm();
        let r = write(self.fds[i].as_ref().unwrap(), &self.buf[..n]);
        self.disarm();
        if let Some(r) = self.note(r) {
            self.written_bytes += r as u64;
            self.check_count("write", n, n, r);
            if self.atomic(n) && r != n {
                self.impossible(format!("write of {n} <= PIPE_BUF bytes wrote {r}"));
            }
        }
    }

    /// Up to 8 segment lengths, totalling at most `BUF`.
    fn segments(&mut self) -> Vec<usize> {
        let count = self.rng.range(1, 8);
        let mut left = BUF;
        let mut lens = Vec::new();
        for _ in 0..count {
            let n = self.size().min(left / 2);
            left -= n;
            lens.push(n);
        }
        lens
    }

    fn op_readv(&mut self) {
        let i = self.any_slot();
        let lens = self.segments();
        let total: usize = lens.iter().sum();
        self.arm();
        let mut rest: &mut [u8] = &mut self.buf;
        let mut iov = Vec::new();
        for n in &lens {
            let (seg, tail) = rest.split_at_mut(*n);
            iov.push(IoSliceMut::new(seg));
            rest = tail;
        }
        let r = readv(self.fds[i].as_ref().unwrap(), &mut iov);
        drop(iov);
        self.disarm();
        if let Some(r) = self.note(r) {
            self.read_bytes += r as u64;
            self.eofs += u64::from(total > 0 && r == 0);
            self.check_count("readv", total, total, r);
        }
    }

    fn op_writev(&mut self) {
        let i = self.any_slot();
        let lens = self.segments();
        let total: usize = lens.iter().sum();
        self.arm();
        let mut iov = Vec::new();
        let mut at = 0;
        for n in &lens {
            iov.push(IoSlice::new(&self.buf[at..at + n]));
            at += n;
        }
        let r = writev(self.fds[i].as_ref().unwrap(), &iov);
        drop(iov);
        self.disarm();
        if let Some(r) = self.note(r) {
            self.written_bytes += r as u64;
            self.check_count("writev", total, total, r);
            if self.atomic(total) && r != total {
                self.impossible(format!(
                    "writev of {total} <= PIPE_BUF bytes ({lens:?}) wrote {r}"
                ));
            }
        }
    }

    /// A read or write with a NULL buffer or one that runs into an inaccessible page.
    fn op_badbuf(&mut self) {
        let i = self.any_slot();
        let fd = self.fds[i].as_ref().unwrap().as_raw_fd();
        let n = self.size().max(1);
        let kind = if self.rng.chance(30) {
            Buffer::Null
        } else {
            Buffer::Straddle(self.rng.range(0, n.min(PAGE)))
        };
        let (p, valid) = self.bad_ptr(&kind);
        let writing = self.rng.chance(50);
        self.arm();
        let r = if writing {
            // SAFETY: The kernel checks the buffer: it reads at most `valid` accessible bytes of
            // `guard` (or none, for NULL), and faults on the rest; no Rust reference aliases
            // `guard`, and `fd` is open (its slot is not touched during the call).
            unsafe { libc::write(fd, p, n) }
        } else {
            // SAFETY: As above, writing into `guard`.
            unsafe { libc::read(fd, p, n) }
        };
        self.disarm();
        let what = if writing { "write" } else { "read" };
        if let Some(r) = self.note_raw(r) {
            if writing {
                self.written_bytes += r as u64;
            } else {
                self.read_bytes += r as u64;
            }
            self.check_count(&format!("bad-buffer {what}"), n, valid, r);
        }
    }

    fn random_events(&mut self) -> PollFlags {
        let all = [
            PollFlags::POLLIN,
            PollFlags::POLLOUT,
            PollFlags::POLLPRI,
            PollFlags::POLLRDNORM,
            PollFlags::POLLWRNORM,
            PollFlags::POLLRDBAND,
            PollFlags::POLLWRBAND,
            PollFlags::from_bits_retain(libc::POLLRDHUP),
        ];
        let mut ev = PollFlags::empty();
        for f in all {
            if self.rng.chance(35) {
                ev |= f;
            }
        }
        ev
    }

    fn op_poll(&mut self) {
        let mut chosen = Vec::new();
        for i in self.open_slots() {
            if self.rng.chance(60) {
                let ev = self.random_events();
                chosen.push((i, ev));
            }
        }
        let timeout = PollTimeout::from(self.rng.below(6) as u16);
        let mut pfds: Vec<PollFd> = chosen
            .iter()
            .map(|(i, ev)| PollFd::new(self.fds[*i].as_ref().unwrap().as_fd(), *ev))
            .collect();
        let r = poll(&mut pfds, timeout);
        let got: Vec<Option<PollFlags>> = pfds.iter().map(PollFd::revents).collect();
        drop(pfds);
        if let Some(n) = self.note(r) {
            let ready = got
                .iter()
                .filter(|g| g.is_some_and(|g| !g.is_empty()))
                .count();
            if n as usize != ready {
                self.impossible(format!("poll returned {n} but {ready} fds have events"));
            }
            for ((_, ev), g) in chosen.iter().zip(&got) {
                let allowed = *ev | PollFlags::POLLERR | PollFlags::POLLHUP;
                if let Some(g) = g {
                    if !allowed.contains(*g) {
                        self.impossible(format!("poll for {ev:?} returned {g:?}"));
                    }
                }
            }
        }
    }

    fn op_epoll(&mut self) {
        let slots = self.open_slots();
        let choice = if slots.is_empty() {
            3
        } else {
            self.rng.weighted(&[4, 2, 2, 6, 1])
        };
        match choice {
            0..=2 => {
                let i = slots[self.rng.below(slots.len() as u64) as usize];
                let mut flags = EpollFlags::empty();
                for f in [
                    EpollFlags::EPOLLIN,
                    EpollFlags::EPOLLOUT,
                    EpollFlags::EPOLLRDHUP,
                    EpollFlags::EPOLLET,
                    EpollFlags::EPOLLONESHOT,
                ] {
                    if self.rng.chance(40) {
                        flags |= f;
                    }
                }
                if self.rng.chance(5) {
                    flags |= EpollFlags::EPOLLEXCLUSIVE;
                }
                let fd = self.fds[i].as_ref().unwrap();
                let mut ev = EpollEvent::new(flags, i as u64);
                let r = match choice {
                    0 => self.epoll.add(fd, ev),
                    1 => self.epoll.modify(fd, &mut ev),
                    _ => self.epoll.delete(fd),
                };
                self.note(r);
            }
            3 => {
                let mut events = [EpollEvent::empty(); SLOTS];
                let timeout = PollTimeout::from(self.rng.below(6) as u16);
                let r = self.epoll.wait(&mut events, timeout);
                if let Some(n) = self.note(r) {
                    if n > SLOTS {
                        self.impossible(format!("epoll_wait returned {n} > {SLOTS} events"));
                    }
                }
            }
            _ => match Epoll::new(EpollCreateFlags::empty()) {
                // A fresh instance; the old one's registrations go with it.
                Ok(e) => self.epoll = e,
                Err(e) => {
                    self.note::<()>(Err(e));
                }
            },
        }
    }

    fn op_fcntl(&mut self) {
        let i = self.any_slot();
        let fd = self.fds[i].as_ref().unwrap();
        let raw = fd.as_raw_fd();
        match self.rng.below(7) {
            0 | 1 => {
                // Toggle O_NONBLOCK (0) or O_ASYNC (1), owned by this fuzz process.
                let bit = if self.rng.below(2) == 0 {
                    OFlag::O_NONBLOCK
                } else {
                    OFlag::O_ASYNC
                };
                let r = fcntl(fd, FcntlArg::F_GETFL)
                    .map(OFlag::from_bits_retain)
                    .and_then(|fl| fcntl(fd, FcntlArg::F_SETFL(fl ^ bit)));
                self.note(r);
            }
            2 => {
                // Always this fuzz process (never a group, which would include the test runner,
                // nor a forked child, whose pid may be reused): it handles SIGIO and SIGUSR1.
                // SAFETY: F_SETOWN takes a pid by value.
                let r = unsafe { libc::fcntl(raw, libc::F_SETOWN, self.me.as_raw()) };
                self.note_raw(r as isize);
            }
            3 => {
                let r = fcntl(fd, FcntlArg::F_GETPIPE_SZ);
                self.note(r);
            }
            4 => {
                let size = self.rng.range(0, 1 << 20) as libc::c_int;
                let r = fcntl(fd, FcntlArg::F_SETPIPE_SZ(size));
                self.note(r);
            }
            5 => {
                let r = fcntl(fd, FcntlArg::F_GETFL);
                self.note(r);
            }
            _ => {
                // SAFETY: F_SETSIG takes a signal number by value; 0 restores SIGIO.
                let sig = if self.rng.chance(50) {
                    0
                } else {
                    Signal::SIGUSR1 as libc::c_int
                };
                let r = unsafe { libc::fcntl(raw, F_SETSIG, sig) };
                self.note_raw(r as isize);
            }
        }
    }

    fn op_ioctl(&mut self) {
        let i = self.any_slot();
        let fd = self.fds[i].as_ref().unwrap().as_raw_fd();
        let mut val: libc::c_int = 0;
        let mut scratch = [0u8; 256];
        match self.rng.below(6) {
            0 | 1 => {
                // SAFETY: FIONREAD writes one int through the pointer, which is valid.
                let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut val) };
                if self.note_raw(r as isize).is_some() {
                    let cap = self.capacity.unwrap_or(usize::MAX);
                    if val < 0 || val as usize > cap {
                        self.impossible(format!("FIONREAD says {val} bytes, capacity {cap}"));
                    }
                }
            }
            2 => {
                let kind = if self.rng.chance(50) {
                    Buffer::Null
                } else {
                    Buffer::Straddle(self.rng.range(0, 3))
                };
                let (p, _) = self.bad_ptr(&kind);
                // SAFETY: FIONREAD writes an int; the kernel checks the bad pointer and fails
                // with EFAULT; no Rust reference aliases `guard`.
                let r = unsafe { libc::ioctl(fd, libc::FIONREAD, p) };
                self.note_raw(r as isize);
            }
            3 => {
                val = self.rng.below(2) as libc::c_int;
                let cmd = if self.rng.chance(50) {
                    libc::FIONBIO
                } else {
                    libc::FIOASYNC
                };
                // SAFETY: FIONBIO and FIOASYNC read one int through the valid pointer.
                let r = unsafe { libc::ioctl(fd, cmd, &mut val) };
                self.note_raw(r as isize);
            }
            _ => {
                // A random command, except the types the VFS handles itself before the driver
                // (0, 'T' for FIO*, 'X' for FIFREEZE/FITHAW, 'f', 0x94 and 0x15 for FS_IOC_*).
                let mut cmd;
                loop {
                    cmd = self.rng.next() as u32;
                    if self.rng.chance(50) {
                        // Plausible-looking: _IOC(dir, type, nr, size) with a small size.
                        cmd = (cmd & 0xc000_ffff) | ((self.rng.below(64) as u32) << 16);
                    }
                    let ty = (cmd >> 8) & 0xff;
                    if ![0, 0x54, 0x58, 0x66, 0x94, 0x15].contains(&ty) {
                        break;
                    }
                }
                let arg: *mut c_void = match self.rng.below(3) {
                    0 => std::ptr::null_mut(),
                    1 => scratch.as_mut_ptr().cast(),
                    _ => self.rng.next() as usize as *mut c_void,
                };
                // SAFETY: The command is not one the VFS acts on, and mini_pipe answers every
                // unknown command with ENOTTY without touching `arg`; if some command did use
                // it, it is NULL, a valid 256-byte buffer, or a random address the kernel checks.
                let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
                if self.note_raw(r as isize).is_some() {
                    self.impossible(format!("ioctl {cmd:#x} succeeded"));
                }
            }
        }
    }

    fn op_dup(&mut self) {
        let i = self.any_slot();
        let fd = self.fds[i].as_ref().unwrap();
        let r = if self.rng.chance(50) {
            dup(fd)
        } else {
            fcntl(
                fd,
                FcntlArg::F_DUPFD_CLOEXEC(10 + self.rng.below(20) as i32),
            )
            .map(|raw| {
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
            })
        };
        if let Some(fd) = self.note(r) {
            self.store(fd, self.access[i]);
        }
    }

    /// What a pipe does not support: mmap, lseek, pread.
    fn op_misc(&mut self) {
        let i = self.any_slot();
        let fd = self.fds[i].as_ref().unwrap();
        match self.rng.below(3) {
            0 => {
                let prot = if self.rng.chance(50) {
                    ProtFlags::PROT_READ
                } else {
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
                };
                let len = NonZeroUsize::new(PAGE).unwrap();
                // SAFETY: A new mapping chosen by the kernel, aliasing nothing; unmapped below
                // if it is made at all.
                let r =
                    unsafe { nix::sys::mman::mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) };
                if let Some(p) = self.note(r) {
                    self.impossible("mmap succeeded".to_string());
                    // SAFETY: The mapping just made, no reference into it.
                    let _ = unsafe { nix::sys::mman::munmap(p, PAGE) };
                }
            }
            1 => {
                let r = lseek(fd, self.rng.below(100) as i64, Whence::SeekSet);
                self.note(r);
            }
            _ => {
                let n = self.rng.range(0, 64);
                self.arm();
                let r = pread(self.fds[i].as_ref().unwrap(), &mut self.buf[..n], 0);
                self.disarm();
                self.note(r);
            }
        }
    }

    fn op_signal(&mut self) {
        let sig = if self.rng.chance(50) {
            Signal::SIGUSR1
        } else {
            Signal::SIGALRM
        };
        if self.peers.is_empty() || self.rng.chance(40) {
            let sig = if self.rng.chance(10) {
                Signal::SIGIO
            } else {
                sig
            };
            let r = raise(sig);
            self.note(r);
        } else {
            let peer = self.peers[self.rng.below(self.peers.len() as u64) as usize];
            if catches_signals(peer) {
                let r = kill(peer, sig);
                self.note(r);
            } else {
                self.peer_not_ready += 1;
            }
        }
    }

    fn op_fork(&mut self) {
        // SAFETY: This process is single-threaded (the fuzz helper starts no thread), so the
        // child may do anything; it leaves with _exit, running no destructor or exit handler.
        match unsafe { fork() } {
            Err(e) => {
                self.note::<()>(Err(e));
            }
            Ok(ForkResult::Child) => self.child_main(),
            Ok(ForkResult::Parent { child }) => self.reap(child),
        }
    }

    /// The forked child: a few random operations (no fork), then `_exit`.
    fn child_main(&mut self) -> ! {
        // POSIX timers are not inherited; the parent's handle must not be dropped here.
        match alarm_timer() {
            Ok(t) => std::mem::forget(std::mem::replace(&mut self.timer, t)),
            // SAFETY: _exit is always safe to call; the parent reports the status.
            Err(_) => unsafe { libc::_exit(4) },
        }
        self.rng = Rng(self.rng.next() ^ u64::from(getpid().as_raw() as u32));
        self.impossible.clear();
        for _ in 0..self.rng.range(1, 6) {
            self.step(false);
        }
        self.disarm();
        let status = if self.impossible.is_empty() { 0 } else { 3 };
        for what in self.impossible.iter().take(5) {
            // Unbuffered, so nothing is lost by _exit.
            eprintln!("fuzz seed {} child: IMPOSSIBLE: {what}", self.seed);
        }
        // SAFETY: _exit is always safe to call; the file descriptors close with the process.
        unsafe { libc::_exit(status) }
    }

    /// Waits for the forked `child`, bounded: killed after `CHILD_BOUND`.
    fn reap(&mut self, child: Pid) {
        let start = Instant::now();
        let mut killed = false;
        self.arm();
        let status = loop {
            match waitpid(child, None) {
                Ok(st) => break Some(st),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    self.impossible(format!("waitpid {child}: {e}"));
                    break None;
                }
            }
            if start.elapsed() > CHILD_BOUND && !killed {
                let _ = kill(child, Signal::SIGKILL);
                killed = true;
            }
            if start.elapsed() > 2 * CHILD_BOUND {
                break None;
            }
        };
        self.disarm();
        match status {
            Some(WaitStatus::Exited(_, 0)) if !killed => {}
            Some(st) => self.impossible(format!(
                "forked child {child}: {st:?}{}",
                if killed {
                    " (killed after hanging)"
                } else {
                    ""
                }
            )),
            None => self.impossible(format!("forked child {child} hangs, even after SIGKILL")),
        }
    }
}

/// `MINI_PIPE_FUZZ_OPS` (operations per process) or the default.
fn ops_per_process() -> u64 {
    std::env::var("MINI_PIPE_FUZZ_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_OPS)
}

/// The `fuzz` test: `PROCS` fuzz processes at once, each signalling those started before it;
/// all must finish their budget and exit 0, and afterwards the device must be idle.
pub fn test() -> TestResult {
    reload(&[])?;
    let ops = ops_per_process();
    let seed: u64 = std::env::var("MINI_PIPE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let start = Instant::now();
    let mut helpers: Vec<Helper> = Vec::new();
    for i in 0..PROCS {
        let mut args = vec![(seed + i as u64).to_string(), ops.to_string()];
        args.extend(helpers.iter().map(|h| h.pid().to_string()));
        helpers.push(Helper::spawn("fuzz", &args)?);
    }
    // Read every output before reaping anyone, so no peer's pid can be reused meanwhile.
    let mut outputs = Vec::new();
    for h in &mut helpers {
        outputs.push(h.output_within(TEST_TIMEOUT.saturating_sub(start.elapsed()))?);
    }
    let mut failed = Vec::new();
    for (i, h) in helpers.iter_mut().enumerate() {
        let st = h.wait_within(Duration::from_secs(30))?;
        if !st.success() {
            failed.push(format!("fuzz seed {}: {st}", seed + i as u64));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for out in &outputs {
        for line in out.lines() {
            println!("# fuzz: {line}");
        }
    }
    let total = ops * PROCS as u64;
    println!(
        "# fuzz: {total} ops in {PROCS} processes ({secs:.1} s, {:.0} ops/s)",
        total as f64 / secs
    );
    ensure!(failed.is_empty(), "{}", failed.join("\n"));
    idle_afterwards()
}

/// With every fuzz process gone, nothing holds the device: the module's reference count is
/// back to zero, and a new reader finds no bytes, no writer and no other reader.
fn idle_afterwards() -> TestResult {
    let refcnt = "/sys/module/mini_pipe/refcnt";
    if std::path::Path::new(refcnt).exists() {
        wait_until("mini_pipe's refcnt is 0", Duration::from_secs(30), || {
            std::fs::read_to_string(refcnt).is_ok_and(|s| s.trim() == "0")
        })?;
    }
    let f = crate::util::open(DEV, true, false, libc::O_NONBLOCK)
        .map_err(|e| format!("open after fuzzing: {e}"))?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .map_err(|e| format!("fdinfo: {e}"))?;
    for want in ["queued:\t0\n", "readers:\t1\n", "writers:\t0\n"] {
        ensure!(
            info.contains(want),
            "after fuzzing, fdinfo lacks {want:?}:\n{info}"
        );
    }
    Ok(())
}
