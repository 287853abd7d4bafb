// SPDX-License-Identifier: GPL-2.0

//! The bounded fuzzer (issue 4).
//!
//! `mini_pipe_test helper fuzz SEED INDEX OPS [PEERS...]` is fuzz process INDEX of the run
//! with seed SEED: it performs OPS random operations, chosen by a PRNG seeded from SEED and
//! INDEX, on a small table of open files of /dev/mini_pipe: open with random flags, read,
//! write, readv, writev (random sizes, and now and then a NULL buffer or one that runs into an
//! inaccessible page), poll, epoll, fcntl, ioctl, dup, mmap/lseek/pread, close, signals to
//! itself or to the PEERS, and fork (the child does a few operations of its own and `_exit`s).
//! It prints a summary line and a line of byte totals, and exits 0, or 1 if something
//! impossible happened (the lines before the summary say what, with the operation, its
//! arguments, the errno and the seed).
//!
//! "Impossible" means a result mini_pipe may not give whatever the interleaving:
//! - an errno outside the table of what each operation may return in its situation (see
//!   `Fuzz::read_errnos`, `Fuzz::write_errnos`, `Fuzz::op_open` and the other operations):
//!   `EAGAIN` only when non-blocking, `EINTR` only when blocking and only with a signal handled
//!   during the call, `EPIPE` only while this process holds no reader, `EFAULT` only for the
//!   deliberately bad buffers, `ENXIO` only for `O_WRONLY|O_NONBLOCK` while it holds no
//!   reader, nothing at all for `FIONREAD`, poll, epoll_wait (but `EINTR`), close, dup;
//! - a read or write that moved more bytes than asked (or than the buffer had accessible), a
//!   write of at most `PIPE_BUF` bytes that was split, end-of-file while this process holds a
//!   writer, `EPIPE` without `SIGPIPE` or `SIGPIPE` after a complete write, `FIONREAD` outside
//!   `0..=capacity`, an unknown ioctl, mmap, lseek, pread or `F_GETPIPE_SZ` that succeeded;
//! - a poll or epoll mask with `POLLPRI`, `POLLRDHUP`, `POLLRDBAND` or `POLLWRBAND` (asked for
//!   often, never given), with a reader's event on a write-only file or a writer's on a
//!   read-only one, `POLLHUP` while this process holds a writer, `POLLERR` while it holds a
//!   reader, `POLLIN` without `POLLRDNORM` (or `POLLOUT` without `POLLWRNORM`) when both were
//!   asked for;
//! - a forked child that hung or failed.
//!
//! Nothing can hang: every operation that may sleep runs with an interval timer armed whose
//! SIGALRM, handled without `SA_RESTART`, ends the sleep with `EINTR` within a few
//! milliseconds. The operations go in phases of `PHASE_OPS` (see `Phase`), the same in every
//! process, so that at times nobody holds a reader, or a writer, or anything.
//!
//! The test `fuzz` runs `PROCS` such processes against each other, the later ones signalling
//! the earlier ones. Meanwhile it holds one file of its own, a reader or a writer by turns
//! (`Keeper`), so the pipe is never left without both sides and nothing queued is ever
//! discarded; so every fuzz process sees writes meet `EPIPE` (keeper a writer) and reads meet
//! end-of-file (keeper a reader) in turn. When all have exited it drains what is left and
//! checks that bytes are conserved, exactly, across every process and forked child: written
//! = read + left. Then it checks that the device is idle; a splat in the kernel log is caught
//! by scripts/vm.sh.
//!
//! Every run has a seed, fresh (getrandom) unless `MINI_PIPE_FUZZ_SEED` gives one; the test
//! prints it first, and every failure ends with `replay: MINI_PIPE_FUZZ_SEED=<n>`. Process `i`
//! derives its seed from the run's and `i`, its `k`-th forked child from that and `k` (never
//! from a pid), and each operation draws from a stream seeded by that and its index, so a seed
//! replays the same choices everywhere, in step even where results differ:
//! `scripts/vm.sh -- env MINI_PIPE_FUZZ_SEED=<n> mini_pipe_test fuzz`. What each operation
//! meets still depends on timing and on the other processes, so a replay of the whole test is
//! a reproducer only statistically; a single process alone
//! (`scripts/vm.sh -- mini_pipe_test helper fuzz <n> <i> 4000`) is close to deterministic.
//! `MINI_PIPE_FUZZ_OPS` (operations per process, default `DEFAULT_OPS`) makes runs longer, e.g.
//! `scripts/vm.sh -- env MINI_PIPE_FUZZ_OPS=60000 mini_pipe_test fuzz`.

use crate::util::{ensure, queued, reload, wait_until, Helper, TestResult, DEV};
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
    fs::File,
    io::{IoSlice, IoSliceMut, Read},
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
/// Bound on the whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the test's `Keeper` stays a reader, or a writer, before it turns.
const KEEPER_TURN: Duration = Duration::from_millis(200);
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
/// Where SIGPIPE is in `HANDLED`.
const SIGPIPE_AT: usize = 3;
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

/// Signals handled so far, all kinds together.
fn signals_handled() -> u64 {
    RECEIVED.iter().map(|n| n.load(Ordering::Relaxed)).sum()
}

/// SIGPIPEs handled so far.
fn sigpipes() -> u64 {
    RECEIVED[SIGPIPE_AT].load(Ordering::Relaxed)
}

/// Poll bits mini_pipe never reports, whether asked for or not (the same values in epoll).
const NEVER: u32 = (libc::POLLPRI | libc::POLLRDBAND | libc::POLLWRBAND | libc::POLLRDHUP) as u32;
/// Poll bits only a file open for reading may report.
const READER_BITS: u32 = (libc::POLLIN | libc::POLLRDNORM | libc::POLLHUP) as u32;
/// Poll bits only a file open for writing may report.
const WRITER_BITS: u32 = (libc::POLLOUT | libc::POLLWRNORM | libc::POLLERR) as u32;

/// A seed derived from `seed` and the pair `(a, b)`: fuzz process `i` of a run, the `k`-th
/// forked child of a process.
fn derive(seed: u64, a: u64, b: u64) -> u64 {
    Rng(seed ^ a.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ b.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7)).next()
}

/// The seed of fuzz process `index` in the run with seed `root`.
fn process_seed(root: u64, index: u64) -> u64 {
    derive(root, 0x7072_6f63, index)
}

/// A fresh seed: getrandom, or the clock if that fails.
fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == b.len() as isize {
        u64::from_le_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// `O_RDONLY`, `O_WRONLY` or `O_RDWR` by name.
fn access_name(a: OFlag) -> &'static str {
    match a {
        OFlag::O_RDONLY => "O_RDONLY",
        OFlag::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }
}

fn readable(a: OFlag) -> bool {
    a != OFlag::O_WRONLY
}

fn writable(a: OFlag) -> bool {
    a != OFlag::O_RDONLY
}

/// Open flags by name, e.g. `O_WRONLY|O_NONBLOCK`.
fn open_flags_name(flags: OFlag) -> String {
    let mut s = access_name(flags & OFlag::O_ACCMODE).to_string();
    for (f, name) in [
        (OFlag::O_NONBLOCK, "O_NONBLOCK"),
        (OFlag::O_CLOEXEC, "O_CLOEXEC"),
        (OFlag::O_ASYNC, "O_ASYNC"),
        (OFlag::O_DIRECT, "O_DIRECT"),
    ] {
        if flags.contains(f) {
            s += "|";
            s += name;
        }
    }
    s
}

/// Poll or epoll bits by name.
fn mask_name(bits: u32) -> String {
    let names = [
        (libc::POLLIN as u32, "IN"),
        (libc::POLLPRI as u32, "PRI"),
        (libc::POLLOUT as u32, "OUT"),
        (libc::POLLERR as u32, "ERR"),
        (libc::POLLHUP as u32, "HUP"),
        (libc::POLLNVAL as u32, "NVAL"),
        (libc::POLLRDNORM as u32, "RDNORM"),
        (libc::POLLRDBAND as u32, "RDBAND"),
        (libc::POLLWRNORM as u32, "WRNORM"),
        (libc::POLLWRBAND as u32, "WRBAND"),
        (libc::POLLRDHUP as u32, "RDHUP"),
        (libc::EPOLLEXCLUSIVE as u32, "EXCLUSIVE"),
        (libc::EPOLLONESHOT as u32, "ONESHOT"),
        (libc::EPOLLET as u32, "ET"),
    ];
    let mut v: Vec<String> = names
        .iter()
        .filter(|(b, _)| bits & *b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = bits & !names.iter().fold(0u32, |m, (b, _)| m | *b);
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    if v.is_empty() {
        "0".to_string()
    } else {
        v.join("|")
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
    /// The run's seed, for `replay:` lines.
    root: u64,
    /// This process's seed (see `process_seed`).
    seed: u64,
    /// `process I`, or `process I child K` in the `K`-th forked child.
    who: String,
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
    /// A page shared with the forked children, where a child keeps its byte totals (written,
    /// read) up to date after every operation, for its parent to count.
    shared: NonNull<c_void>,
    capacity: Option<usize>,
    ops: BTreeMap<&'static str, u64>,
    phases: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    /// The operation under way and its arguments, for the error messages.
    cur: String,
    /// `signals_handled()` when the operation under way began.
    signals_before: u64,
    read_bytes: u64,
    /// Reads of at least one byte that returned 0: end-of-file.
    eofs: u64,
    written_bytes: u64,
    /// Of `read_bytes` and `written_bytes`, what forked children moved.
    child_read: u64,
    child_written: u64,
    /// Children forked so far: the index of the next one.
    forks: u64,
    /// In a forked child: `(written_bytes, read_bytes)` at the fork.
    child_base: Option<(u64, u64)>,
    /// Whether a forked child was killed, which makes the byte totals inexact.
    child_killed: bool,
    peer_not_ready: u64,
    impossible: Vec<String>,
}

/// Parses `fuzz SEED INDEX OPS [PEERS...]` and runs it.
pub fn run(args: &[String]) -> i32 {
    let parse = |s: &String| s.parse::<u64>().ok();
    let (Some(root), Some(index), Some(ops)) = (
        args.first().and_then(parse),
        args.get(1).and_then(parse),
        args.get(2).and_then(parse),
    ) else {
        eprintln!("usage: mini_pipe_test helper fuzz SEED INDEX OPS [PEER_PID...]");
        return 2;
    };
    let peers: Vec<Pid> = args[3..]
        .iter()
        .filter_map(|s| s.parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect();
    match Fuzz::new(root, index, peers) {
        Ok(mut f) => f.run(ops),
        Err(e) => {
            println!("fuzz process {index}: setup failed: {e}; replay: MINI_PIPE_FUZZ_SEED={root}");
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
    fn new(root: u64, index: u64, peers: Vec<Pid>) -> Result<Self, String> {
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
        // SAFETY: A fresh anonymous mapping, aliasing nothing, zero-filled; it is only ever
        // accessed as two `AtomicU64`s (`shared_totals`).
        let shared = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(PAGE).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| format!("mmap shared: {e}"))?;
        let seed = process_seed(root, index);
        let mut rng = Rng(seed);
        let buf = (0..BUF).map(|_| rng.next() as u8).collect();
        Ok(Self {
            root,
            seed,
            who: format!("process {index}"),
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
            shared,
            capacity: None,
            ops: BTreeMap::new(),
            phases: BTreeMap::new(),
            errors: BTreeMap::new(),
            cur: String::new(),
            signals_before: 0,
            read_bytes: 0,
            eofs: 0,
            written_bytes: 0,
            child_read: 0,
            child_written: 0,
            forks: 0,
            child_base: None,
            child_killed: false,
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
        for i in 0..SLOTS {
            self.close_slot(i);
        }
        let ms = start.elapsed().as_millis();
        for what in self.impossible.iter().take(20) {
            println!("fuzz {} IMPOSSIBLE: {what}", self.who);
        }
        if !self.impossible.is_empty() {
            println!(
                "fuzz {}: {} impossible results; replay: MINI_PIPE_FUZZ_SEED={}",
                self.who,
                self.impossible.len(),
                self.root
            );
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
            "fuzz {} (seed {}): {ops} ops ({ops_list}) in {ms} ms, {} reads at end-of-file, \
             errors by errno {{{}}}, signals received {{{}}}, phases {{{}}}, peers not ready {}",
            self.who,
            self.seed,
            self.eofs,
            list(&self.errors),
            list(&signals),
            list(&self.phases),
            self.peer_not_ready,
        );
        // The line the test adds up (`Totals::parse`).
        println!(
            "fuzz {} bytes: written {} read {} ({}; {} forks, whose children wrote {} and \
             read {})",
            self.who,
            self.written_bytes,
            self.read_bytes,
            if self.child_killed {
                "inexact: a forked child was killed"
            } else {
                "exact"
            },
            self.forks,
            self.child_written,
            self.child_read,
        );
        i32::from(!self.impossible.is_empty())
    }

    /// One random operation; `may_fork` is false in a forked child.
    fn step(&mut self, may_fork: bool) {
        // Each operation draws from a stream of its own, seeded from the seed and its index,
        // so what happened to the operations before (which changes how many numbers they
        // drew) does not shift the choices of the next: a replay stays in step.
        self.rng = Rng(derive(self.seed, 0x6f70, self.done));
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
        if let Some((w, r)) = self.child_base {
            let t = self.shared_totals();
            t[0].store(self.written_bytes - w, Ordering::Relaxed);
            t[1].store(self.read_bytes - r, Ordering::Relaxed);
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

    /// The byte totals (written, read) a forked child shares with its parent.
    fn shared_totals(&self) -> &[AtomicU64; 2] {
        // SAFETY: `shared` is a page-aligned, zero-initialised shared mapping that lives as
        // long as `self` and is only ever accessed through this reference; `AtomicU64` allows
        // concurrent access from the processes that share it.
        unsafe { &*self.shared.as_ptr().cast::<[AtomicU64; 2]>() }
    }

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

    /// Records an impossible result, with where it happened.
    fn impossible(&mut self, what: String) {
        self.impossible.push(format!(
            "op {} ({}, seed {}): {what}",
            self.done, self.who, self.seed
        ));
    }

    /// Starts an operation: `what` names it and its arguments in the messages about its
    /// result, and the signals handled so far are noted (see `expect`).
    fn begin(&mut self, what: String) {
        self.cur = what;
        self.signals_before = signals_handled();
    }

    /// Checks the result of the operation begun last: an error must be one of `allowed`, and
    /// `EINTR` must come with a signal handled during the call. Counts errors by errno, and
    /// returns the value.
    fn expect<T>(&mut self, r: nix::Result<T>, allowed: &[Errno]) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                *self.errors.entry(format!("{e:?}")).or_default() += 1;
                if !allowed.contains(&e) {
                    self.impossible(format!(
                        "{}: {e:?} ({}), where only {allowed:?} may happen",
                        self.cur,
                        e.desc()
                    ));
                } else if e == Errno::EINTR && signals_handled() == self.signals_before {
                    self.impossible(format!("{}: EINTR with no signal handled", self.cur));
                }
                None
            }
        }
    }

    /// The same for a raw libc return value.
    fn expect_raw(&mut self, r: isize, allowed: &[Errno]) -> Option<usize> {
        let r = if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        };
        self.expect(r, allowed)
    }

    /// The same for an operation that must fail: its success is impossible too.
    fn expect_failure<T>(&mut self, r: nix::Result<T>, allowed: &[Errno]) -> Option<T> {
        let v = self.expect(r, allowed);
        if v.is_some() {
            self.impossible(format!(
                "{}: succeeded, where only {allowed:?} may",
                self.cur
            ));
        }
        v
    }

    fn open_slots(&self) -> Vec<usize> {
        (0..SLOTS).filter(|i| self.fds[*i].is_some()).collect()
    }

    /// Whether this process holds a file open for reading: then the pipe has a reader.
    fn holds_reader(&self) -> bool {
        (0..SLOTS).any(|i| self.fds[i].is_some() && readable(self.access[i]))
    }

    /// Whether this process holds a file open for writing: then the pipe has a writer.
    fn holds_writer(&self) -> bool {
        (0..SLOTS).any(|i| self.fds[i].is_some() && writable(self.access[i]))
    }

    /// Whether the file in slot `i` is non-blocking now (`F_GETFL`: fcntl, `FIONBIO` and
    /// forked children change it).
    fn nonblocking(&mut self, i: usize) -> bool {
        self.begin(format!("fcntl({}, F_GETFL)", self.slot_name(i)));
        let r = fcntl(self.fds[i].as_ref().unwrap(), FcntlArg::F_GETFL);
        self.expect(r, &[])
            .is_some_and(|fl| OFlag::from_bits_retain(fl).contains(OFlag::O_NONBLOCK))
    }

    /// `slot I (fd N, O_RDONLY)`.
    fn slot_name(&self, i: usize) -> String {
        let fd = self.fds[i].as_ref().map_or(-1, AsRawFd::as_raw_fd);
        format!("slot {i} (fd {fd}, {})", access_name(self.access[i]))
    }

    /// Like `slot_name`, with the blocking mode.
    fn file_name(&self, i: usize, nonblock: bool) -> String {
        let mode = if nonblock { "non-blocking" } else { "blocking" };
        format!("{}, {mode}", self.slot_name(i))
    }

    /// The errnos a read from the file in slot `i` may give: `EBADF` alone if it is not open
    /// for reading; otherwise `EAGAIN` if non-blocking, `EINTR` if blocking, `EFAULT` only for
    /// a bad buffer.
    fn read_errnos(&self, i: usize, nonblock: bool, bad_buffer: bool) -> Vec<Errno> {
        if !readable(self.access[i]) {
            return vec![Errno::EBADF];
        }
        let mut v = vec![if nonblock {
            Errno::EAGAIN
        } else {
            Errno::EINTR
        }];
        if bad_buffer {
            v.push(Errno::EFAULT);
        }
        v
    }

    /// The errnos a write to the file in slot `i` may give: `EBADF` alone if it is not open
    /// for writing; otherwise `EPIPE` only while this process holds no reader, `EAGAIN` if
    /// non-blocking, `EINTR` if blocking, `EFAULT` only for a bad buffer.
    fn write_errnos(&self, i: usize, nonblock: bool, bad_buffer: bool) -> Vec<Errno> {
        if !writable(self.access[i]) {
            return vec![Errno::EBADF];
        }
        let mut v = vec![if nonblock {
            Errno::EAGAIN
        } else {
            Errno::EINTR
        }];
        if !self.holds_reader() {
            v.push(Errno::EPIPE);
        }
        if bad_buffer {
            v.push(Errno::EFAULT);
        }
        v
    }

    /// Checks the result of a read of `n` bytes into a buffer with `valid` accessible ones.
    fn after_read(&mut self, r: nix::Result<usize>, allowed: &[Errno], n: usize, valid: usize) {
        let Some(r) = self.expect(r, allowed) else {
            return;
        };
        self.read_bytes += r as u64;
        self.check_count(n, valid, r);
        if n > 0 && r == 0 {
            self.eofs += 1;
            if self.holds_writer() {
                self.impossible(format!(
                    "{}: end-of-file, while this process holds a writer",
                    self.cur
                ));
            }
        }
    }

    /// Checks the result of a write of `n` bytes from a buffer with `valid` accessible ones,
    /// begun when `sigpipes()` was `pipes_before`; `atomic` if it must not be split.
    fn after_write(
        &mut self,
        r: nix::Result<usize>,
        allowed: &[Errno],
        (n, valid, atomic): (usize, usize, bool),
        pipes_before: u64,
    ) {
        let got_sigpipe = sigpipes() != pipes_before;
        match r {
            Err(Errno::EPIPE) if !got_sigpipe => {
                self.impossible(format!("{}: EPIPE without SIGPIPE", self.cur));
            }
            Ok(r) if r == n && got_sigpipe => {
                self.impossible(format!("{}: SIGPIPE after a complete write", self.cur));
            }
            Err(e) if e != Errno::EPIPE && got_sigpipe => {
                self.impossible(format!("{}: SIGPIPE with {e:?}", self.cur));
            }
            _ => {}
        }
        let Some(r) = self.expect(r, allowed) else {
            return;
        };
        self.written_bytes += r as u64;
        self.check_count(n, valid, r);
        if atomic && r != n {
            self.impossible(format!(
                "{}: wrote {r}, where at most PIPE_BUF bytes are all or nothing",
                self.cur
            ));
        }
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

    /// Closes the file in slot `i`, if any: close never fails.
    fn close_slot(&mut self, i: usize) {
        if self.fds[i].is_some() {
            self.begin(format!("close({})", self.slot_name(i)));
            let r = close(self.fds[i].take().unwrap());
            self.expect(r, &[]);
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

    /// Checks a transfer of `r` bytes for a request of `n` bytes of which only `valid` are
    /// accessible.
    fn check_count(&mut self, n: usize, valid: usize, r: usize) {
        if r > n {
            self.impossible(format!("{}: returned {r}", self.cur));
        } else if r > valid {
            self.impossible(format!(
                "{}: returned {r}, with {valid} bytes accessible",
                self.cur
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

    /// Checks the events mini_pipe reported for a file opened with `access`, asked for
    /// `requested`: never `NEVER`, a reader's bits only on a reader and a writer's only on a
    /// writer, no `POLLHUP` while this process holds a writer nor `POLLERR` while it holds a
    /// reader, and `IN`/`RDNORM` (`OUT`/`WRNORM`) together when both were asked for.
    fn check_mask(&mut self, what: &str, access: OFlag, requested: u32, got: u32) {
        let mut wrong = Vec::new();
        if got & NEVER != 0 {
            wrong.push(format!(
                "{}, which mini_pipe never reports",
                mask_name(got & NEVER)
            ));
        }
        if !readable(access) && got & READER_BITS != 0 {
            wrong.push(format!(
                "{} on a write-only file",
                mask_name(got & READER_BITS)
            ));
        }
        if !writable(access) && got & WRITER_BITS != 0 {
            wrong.push(format!(
                "{} on a read-only file",
                mask_name(got & WRITER_BITS)
            ));
        }
        if got & libc::POLLHUP as u32 != 0 && self.holds_writer() {
            wrong.push("HUP while this process holds a writer".to_string());
        }
        if got & libc::POLLERR as u32 != 0 && self.holds_reader() {
            wrong.push("ERR while this process holds a reader".to_string());
        }
        for pair in [
            (libc::POLLIN | libc::POLLRDNORM) as u32,
            (libc::POLLOUT | libc::POLLWRNORM) as u32,
        ] {
            if requested & pair == pair && got & pair != 0 && got & pair != pair {
                wrong.push(format!("{} alone", mask_name(got & pair)));
            }
        }
        if !wrong.is_empty() {
            self.impossible(format!(
                "{}: {what} asked for {} got {}: {}",
                self.cur,
                mask_name(requested),
                mask_name(got),
                wrong.join("; ")
            ));
        }
    }

    // --- the operations ---------------------------------------------------------------------

    /// `open`: `EINTR` only for a blocking `O_RDONLY` while this process holds no writer, or
    /// `O_WRONLY` while it holds no reader (those alone wait for a partner); `ENXIO` only for
    /// `O_WRONLY|O_NONBLOCK` while it holds no reader; `EINVAL` always and only with
    /// `O_DIRECT` (the VFS refuses it after the driver's open, so the others may come first).
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
        let access = flags & OFlag::O_ACCMODE;
        let nonblock = flags.contains(OFlag::O_NONBLOCK);
        let direct = flags.contains(OFlag::O_DIRECT);
        let mut allowed = Vec::new();
        let partner = match access {
            OFlag::O_RDONLY => self.holds_writer(),
            OFlag::O_WRONLY => self.holds_reader(),
            _ => true,
        };
        if !nonblock && !partner {
            allowed.push(Errno::EINTR);
        }
        if nonblock && access == OFlag::O_WRONLY && !partner {
            allowed.push(Errno::ENXIO);
        }
        if direct {
            allowed.push(Errno::EINVAL);
        }
        self.begin(format!("open({})", open_flags_name(flags)));
        self.arm();
        let r = open(DEV, flags, Mode::empty());
        self.disarm();
        let r = if direct {
            self.expect_failure(r, &allowed)
        } else {
            self.expect(r, &allowed)
        };
        if let Some(fd) = r {
            self.store(fd, access);
        }
    }

    fn op_close(&mut self) {
        let i = self.any_slot();
        self.close_slot(i);
    }

    fn op_read(&mut self) {
        let i = self.any_slot();
        let n = self.size();
        let nonblock = self.nonblocking(i);
        let allowed = self.read_errnos(i, nonblock, false);
        self.begin(format!("read({}, {n} bytes)", self.file_name(i, nonblock)));
        self.arm();
        let r = read(self.fds[i].as_ref().unwrap(), &mut self.buf[..n]);
        self.disarm();
        self.after_read(r, &allowed, n, n);
    }

    fn op_write(&mut self) {
        let i = self.any_slot();
        let n = self.size();
        let nonblock = self.nonblocking(i);
        let allowed = self.write_errnos(i, nonblock, false);
        self.begin(format!("write({}, {n} bytes)", self.file_name(i, nonblock)));
        let pipes = sigpipes();
        self.arm();
        let r = write(self.fds[i].as_ref().unwrap(), &self.buf[..n]);
        self.disarm();
        let atomic = self.atomic(n);
        self.after_write(r, &allowed, (n, n, atomic), pipes);
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
        let nonblock = self.nonblocking(i);
        let allowed = self.read_errnos(i, nonblock, false);
        self.begin(format!(
            "readv({}, segments {lens:?})",
            self.file_name(i, nonblock)
        ));
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
        self.after_read(r, &allowed, total, total);
    }

    fn op_writev(&mut self) {
        let i = self.any_slot();
        let lens = self.segments();
        let total: usize = lens.iter().sum();
        let nonblock = self.nonblocking(i);
        let allowed = self.write_errnos(i, nonblock, false);
        self.begin(format!(
            "writev({}, segments {lens:?})",
            self.file_name(i, nonblock)
        ));
        let pipes = sigpipes();
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
        let atomic = self.atomic(total);
        self.after_write(r, &allowed, (total, total, atomic), pipes);
    }

    /// A read or write with a NULL buffer or one that runs into an inaccessible page: the
    /// only calls where `EFAULT` may come.
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
        let nonblock = self.nonblocking(i);
        let allowed = if writing {
            self.write_errnos(i, nonblock, true)
        } else {
            self.read_errnos(i, nonblock, true)
        };
        self.begin(format!(
            "{}({}, {n} bytes at {p:?} of which {valid} accessible)",
            if writing { "write" } else { "read" },
            self.file_name(i, nonblock)
        ));
        let pipes = sigpipes();
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
        let r = if r < 0 {
            Err(Errno::last())
        } else {
            Ok(r as usize)
        };
        if writing {
            self.after_write(r, &allowed, (n, valid, false), pipes);
        } else {
            self.after_read(r, &allowed, n, valid);
        }
    }

    /// Random poll events, with the ones mini_pipe never reports asked for half the time.
    fn random_events(&mut self) -> PollFlags {
        let mut ev = PollFlags::empty();
        for f in [
            PollFlags::POLLIN,
            PollFlags::POLLOUT,
            PollFlags::POLLRDNORM,
            PollFlags::POLLWRNORM,
        ] {
            if self.rng.chance(40) {
                ev |= f;
            }
        }
        for f in [
            PollFlags::POLLPRI,
            PollFlags::POLLRDBAND,
            PollFlags::POLLWRBAND,
            PollFlags::from_bits_retain(libc::POLLRDHUP),
        ] {
            if self.rng.chance(50) {
                ev |= f;
            }
        }
        ev
    }

    /// poll: only `EINTR`; each file's mask as `check_mask` says.
    fn op_poll(&mut self) {
        let mut chosen = Vec::new();
        for i in self.open_slots() {
            if self.rng.chance(60) {
                let ev = self.random_events();
                chosen.push((i, ev));
            }
        }
        let timeout = self.rng.below(6) as u16;
        self.begin(format!("poll({} files, {timeout} ms)", chosen.len()));
        let mut pfds: Vec<PollFd> = chosen
            .iter()
            .map(|(i, ev)| PollFd::new(self.fds[*i].as_ref().unwrap().as_fd(), *ev))
            .collect();
        let r = poll(&mut pfds, PollTimeout::from(timeout));
        let got: Vec<u32> = pfds
            .iter()
            .map(|p| p.revents().map_or(0, |g| g.bits() as u16 as u32))
            .collect();
        drop(pfds);
        if self.expect(r, &[Errno::EINTR]).is_some() {
            for ((i, ev), g) in chosen.iter().zip(&got) {
                let what = self.slot_name(*i);
                self.check_mask(&what, self.access[*i], ev.bits() as u16 as u32, *g);
            }
        }
    }

    /// epoll: `epoll_ctl` may give `EEXIST` (ADD), `ENOENT` (MOD, DEL), `EINVAL` (with
    /// `EPOLLEXCLUSIVE`, or MOD of an exclusive entry), never `EPERM` (mini_pipe polls);
    /// `epoll_wait` only `EINTR`, each event's mask as `check_mask` says. The entry's data
    /// keeps the slot, the access mode and the events asked for, since the entry outlives the
    /// slot while a dup of its file stays open.
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
                    EpollFlags::EPOLLRDNORM,
                    EpollFlags::EPOLLWRNORM,
                    EpollFlags::EPOLLET,
                    EpollFlags::EPOLLONESHOT,
                ] {
                    if self.rng.chance(40) {
                        flags |= f;
                    }
                }
                for f in [
                    EpollFlags::EPOLLPRI,
                    EpollFlags::EPOLLRDHUP,
                    EpollFlags::EPOLLRDBAND,
                    EpollFlags::EPOLLWRBAND,
                ] {
                    if self.rng.chance(50) {
                        flags |= f;
                    }
                }
                let exclusive = self.rng.chance(5);
                if exclusive {
                    flags |= EpollFlags::EPOLLEXCLUSIVE;
                }
                let access = self.access[i];
                let code = match access {
                    OFlag::O_RDONLY => 0,
                    OFlag::O_WRONLY => 1,
                    _ => 2,
                };
                let data = (i as u64) | (code << 8) | (u64::from(flags.bits() as u32) << 32);
                let fd = self.fds[i].as_ref().unwrap();
                let mut ev = EpollEvent::new(flags, data);
                let (name, r, mut allowed) = match choice {
                    0 => ("ADD", self.epoll.add(fd, ev), vec![Errno::EEXIST]),
                    1 => (
                        "MOD",
                        self.epoll.modify(fd, &mut ev),
                        vec![Errno::ENOENT, Errno::EINVAL],
                    ),
                    _ => ("DEL", self.epoll.delete(fd), vec![Errno::ENOENT]),
                };
                if exclusive && name != "DEL" {
                    allowed.push(Errno::EINVAL);
                }
                let slot = self.slot_name(i);
                // The call is over; `begin` only names it, and no EINTR is allowed.
                self.begin(format!(
                    "epoll_ctl({name}, {slot}, {})",
                    mask_name(flags.bits() as u32)
                ));
                self.expect(r, &allowed);
            }
            3 => {
                let mut events = [EpollEvent::empty(); SLOTS];
                let timeout = self.rng.below(6) as u16;
                self.begin(format!("epoll_wait({SLOTS} events, {timeout} ms)"));
                let r = self.epoll.wait(&mut events, PollTimeout::from(timeout));
                if let Some(n) = self.expect(r, &[Errno::EINTR]) {
                    for ev in &events[..n.min(SLOTS)] {
                        let data = ev.data();
                        let access = match (data >> 8) & 0xff {
                            0 => OFlag::O_RDONLY,
                            1 => OFlag::O_WRONLY,
                            _ => OFlag::O_RDWR,
                        };
                        let requested = (data >> 32) as u32;
                        let what = format!(
                            "the entry of slot {} ({})",
                            data & 0xff,
                            access_name(access)
                        );
                        self.check_mask(&what, access, requested, ev.events().bits() as u32);
                    }
                }
            }
            _ => {
                self.begin("epoll_create1(0)".to_string());
                // A fresh instance; the old one's registrations go with it.
                if let Some(e) = self.expect(Epoll::new(EpollCreateFlags::empty()), &[]) {
                    self.epoll = e;
                }
            }
        }
    }

    /// fcntl never fails, except `F_GETPIPE_SZ` and `F_SETPIPE_SZ`, which always do, with
    /// `EBADF` (fcntl knows only real pipes).
    fn op_fcntl(&mut self) {
        let i = self.any_slot();
        let slot = self.slot_name(i);
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
                self.begin(format!("fcntl({slot}, F_GETFL, F_SETFL toggling {bit:?})"));
                self.expect(r, &[]);
            }
            2 => {
                // Always this fuzz process (never a group, which would include the test runner,
                // nor a forked child, whose pid may be reused): it handles SIGIO and SIGUSR1.
                // SAFETY: F_SETOWN takes a pid by value.
                let r = unsafe { libc::fcntl(raw, libc::F_SETOWN, self.me.as_raw()) };
                self.begin(format!("fcntl({slot}, F_SETOWN, {})", self.me));
                self.expect_raw(r as isize, &[]);
            }
            3 => {
                let r = fcntl(fd, FcntlArg::F_GETPIPE_SZ);
                self.begin(format!("fcntl({slot}, F_GETPIPE_SZ)"));
                self.expect_failure(r, &[Errno::EBADF]);
            }
            4 => {
                let size = self.rng.range(0, 1 << 20) as libc::c_int;
                let r = fcntl(fd, FcntlArg::F_SETPIPE_SZ(size));
                self.begin(format!("fcntl({slot}, F_SETPIPE_SZ, {size})"));
                self.expect_failure(r, &[Errno::EBADF]);
            }
            5 => {
                let r = fcntl(fd, FcntlArg::F_GETFL);
                self.begin(format!("fcntl({slot}, F_GETFL)"));
                self.expect(r, &[]);
            }
            _ => {
                let sig = if self.rng.chance(50) {
                    0
                } else {
                    Signal::SIGUSR1 as libc::c_int
                };
                // SAFETY: F_SETSIG takes a signal number by value; 0 restores SIGIO.
                let r = unsafe { libc::fcntl(raw, F_SETSIG, sig) };
                self.begin(format!("fcntl({slot}, F_SETSIG, {sig})"));
                self.expect_raw(r as isize, &[]);
            }
        }
    }

    /// ioctl: `FIONREAD` never fails with a valid pointer and always with `EFAULT` with a bad
    /// one; `FIONBIO` and `FIOASYNC` never fail; anything else always with `ENOTTY`.
    fn op_ioctl(&mut self) {
        let i = self.any_slot();
        let slot = self.slot_name(i);
        let fd = self.fds[i].as_ref().unwrap().as_raw_fd();
        let mut val: libc::c_int = 0;
        let mut scratch = [0u8; 256];
        match self.rng.below(6) {
            0 | 1 => {
                self.begin(format!("ioctl({slot}, FIONREAD)"));
                // SAFETY: FIONREAD writes one int through the pointer, which is valid.
                let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut val) };
                if self.expect_raw(r as isize, &[]).is_some() {
                    let cap = self.capacity.unwrap_or(usize::MAX);
                    if val < 0 || val as usize > cap {
                        self.impossible(format!("{}: {val} bytes, capacity {cap}", self.cur));
                    }
                }
            }
            2 => {
                let kind = if self.rng.chance(50) {
                    Buffer::Null
                } else {
                    Buffer::Straddle(self.rng.range(0, 3))
                };
                let (p, valid) = self.bad_ptr(&kind);
                self.begin(format!(
                    "ioctl({slot}, FIONREAD, {p:?} with {valid} bytes accessible)"
                ));
                // SAFETY: FIONREAD writes an int; the kernel checks the bad pointer and fails
                // with EFAULT; no Rust reference aliases `guard`.
                let r = unsafe { libc::ioctl(fd, libc::FIONREAD, p) };
                let r = if r < 0 { Err(Errno::last()) } else { Ok(r) };
                self.expect_failure(r, &[Errno::EFAULT]);
            }
            3 => {
                val = self.rng.below(2) as libc::c_int;
                let (cmd, name) = if self.rng.chance(50) {
                    (libc::FIONBIO, "FIONBIO")
                } else {
                    (libc::FIOASYNC, "FIOASYNC")
                };
                self.begin(format!("ioctl({slot}, {name}, {val})"));
                // SAFETY: FIONBIO and FIOASYNC read one int through the valid pointer.
                let r = unsafe { libc::ioctl(fd, cmd, &mut val) };
                self.expect_raw(r as isize, &[]);
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
                self.begin(format!("ioctl({slot}, {cmd:#x}, {arg:?})"));
                // SAFETY: The command is not one the VFS acts on, and mini_pipe answers every
                // unknown command with ENOTTY without touching `arg`; if some command did use
                // it, it is NULL, a valid 256-byte buffer, or a random address the kernel checks.
                let r = unsafe { libc::ioctl(fd, cmd as _, arg) };
                let r = if r < 0 { Err(Errno::last()) } else { Ok(r) };
                self.expect_failure(r, &[Errno::ENOTTY]);
            }
        }
    }

    /// dup and `F_DUPFD_CLOEXEC` never fail.
    fn op_dup(&mut self) {
        let i = self.any_slot();
        let slot = self.slot_name(i);
        let r = if self.rng.chance(50) {
            self.begin(format!("dup({slot})"));
            dup(self.fds[i].as_ref().unwrap())
        } else {
            let min = 10 + self.rng.below(20) as i32;
            self.begin(format!("fcntl({slot}, F_DUPFD_CLOEXEC, {min})"));
            fcntl(
                self.fds[i].as_ref().unwrap(),
                FcntlArg::F_DUPFD_CLOEXEC(min),
            )
            .map(|raw| {
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
            })
        };
        if let Some(fd) = self.expect(r, &[]) {
            self.store(fd, self.access[i]);
        }
    }

    /// What a pipe does not support, each failing with exactly one errno: mmap `ENODEV`
    /// (`EACCES` first when the access mode forbids the mapping), lseek and pread `ESPIPE`.
    fn op_misc(&mut self) {
        let i = self.any_slot();
        let slot = self.slot_name(i);
        let access = self.access[i];
        let fd = self.fds[i].as_ref().unwrap();
        match self.rng.below(3) {
            0 => {
                let write = self.rng.chance(50);
                let prot = if write {
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
                } else {
                    ProtFlags::PROT_READ
                };
                let len = NonZeroUsize::new(PAGE).unwrap();
                // SAFETY: A new mapping chosen by the kernel, aliasing nothing; unmapped below
                // if it is made at all.
                let r =
                    unsafe { nix::sys::mman::mmap(None, len, prot, MapFlags::MAP_SHARED, fd, 0) };
                let errno = if !readable(access) || (write && !writable(access)) {
                    Errno::EACCES
                } else {
                    Errno::ENODEV
                };
                self.begin(format!("mmap({slot}, MAP_SHARED, {prot:?})"));
                if let Some(p) = self.expect_failure(r, &[errno]) {
                    // SAFETY: The mapping just made, no reference into it.
                    let _ = unsafe { nix::sys::mman::munmap(p, PAGE) };
                }
            }
            1 => {
                let off = self.rng.below(100) as i64;
                let r = lseek(fd, off, Whence::SeekSet);
                self.begin(format!("lseek({slot}, {off}, SEEK_SET)"));
                self.expect_failure(r, &[Errno::ESPIPE]);
            }
            _ => {
                let n = self.rng.range(0, 64);
                self.begin(format!("pread({slot}, {n} bytes, offset 0)"));
                self.arm();
                let r = pread(self.fds[i].as_ref().unwrap(), &mut self.buf[..n], 0);
                self.disarm();
                self.expect_failure(r, &[Errno::ESPIPE]);
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
            self.begin(format!("raise({sig})"));
            let r = raise(sig);
            self.expect(r, &[]);
        } else {
            let peer = self.peers[self.rng.below(self.peers.len() as u64) as usize];
            if catches_signals(peer) {
                self.begin(format!("kill({peer}, {sig})"));
                // A peer that has exited is a zombie until the test reaps it, after all exit.
                let r = kill(peer, sig);
                self.expect(r, &[]);
            } else {
                self.peer_not_ready += 1;
            }
        }
    }

    /// fork: the child is the `forks`-th, and seeds its choices from this process's seed and
    /// that index. Its byte totals come back through `shared`.
    fn op_fork(&mut self) {
        let k = self.forks;
        self.forks += 1;
        self.shared_totals()
            .iter()
            .for_each(|t| t.store(0, Ordering::Relaxed));
        self.begin(format!("fork() (child {k})"));
        // SAFETY: This process is single-threaded (the fuzz helper starts no thread), so the
        // child may do anything; it leaves with _exit, running no destructor or exit handler.
        match unsafe { fork() } {
            Err(e) => {
                self.expect::<()>(Err(e), &[]);
            }
            Ok(ForkResult::Child) => self.child_main(k),
            Ok(ForkResult::Parent { child }) => {
                self.reap(child, k);
                let t = self.shared_totals();
                let (w, r) = (t[0].load(Ordering::Relaxed), t[1].load(Ordering::Relaxed));
                self.written_bytes += w;
                self.read_bytes += r;
                self.child_written += w;
                self.child_read += r;
            }
        }
    }

    /// The forked child `k`: a few random operations (no fork), then `_exit`.
    fn child_main(&mut self, k: u64) -> ! {
        // POSIX timers are not inherited; the parent's handle must not be dropped here.
        match alarm_timer() {
            Ok(t) => std::mem::forget(std::mem::replace(&mut self.timer, t)),
            // SAFETY: _exit is always safe to call; the parent reports the status.
            Err(_) => unsafe { libc::_exit(4) },
        }
        self.who = format!("{} child {k}", self.who);
        // The child's own seed, from its parent's and its index; its operations count from 0.
        self.seed = derive(self.seed, 0x63_6869_6c64, k);
        self.rng = Rng(self.seed);
        self.done = 0;
        self.child_base = Some((self.written_bytes, self.read_bytes));
        self.impossible.clear();
        for _ in 0..self.rng.range(1, 6) {
            self.step(false);
        }
        self.disarm();
        let status = if self.impossible.is_empty() { 0 } else { 3 };
        let mut out = String::new();
        for what in self.impossible.iter().take(5) {
            out += &format!("fuzz {} IMPOSSIBLE: {what}\n", self.who);
        }
        // Straight to the file, unbuffered, so nothing is lost by _exit nor mixed with what
        // the parent's stdout holds.
        // SAFETY: `out` is valid for its length.
        let _ = unsafe { libc::write(1, out.as_ptr().cast(), out.len()) };
        // SAFETY: _exit is always safe to call; the file descriptors close with the process.
        unsafe { libc::_exit(status) }
    }

    /// Waits for the forked child `k`, bounded: killed after `CHILD_BOUND`.
    fn reap(&mut self, child: Pid, k: u64) {
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
        self.child_killed |= killed || status.is_none();
        match status {
            Some(WaitStatus::Exited(_, 0)) if !killed => {}
            Some(st) => self.impossible(format!(
                "forked child {k} (pid {child}): {st:?}{}",
                if killed {
                    " (killed after hanging)"
                } else {
                    ""
                }
            )),
            None => self.impossible(format!(
                "forked child {k} (pid {child}) hangs, even after SIGKILL"
            )),
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

/// The file the test holds while the fuzz processes run, so that the pipe always has a reader
/// or a writer and a last close never discards queued bytes. It turns from reader to writer
/// and back every `KEEPER_TURN`, opening the new file before closing the old.
struct Keeper {
    file: File,
    reader: bool,
    turns: u64,
}

impl Keeper {
    fn new() -> Result<Self, String> {
        let file = crate::util::open(DEV, true, false, libc::O_NONBLOCK)
            .map_err(|e| format!("keeper: open(O_RDONLY|O_NONBLOCK): {e}"))?;
        Ok(Self {
            file,
            reader: true,
            turns: 0,
        })
    }

    fn turn(&mut self) -> TestResult {
        // A writer opens without waiting since the old file is a reader; a reader always does.
        let reader = !self.reader;
        let file = crate::util::open(DEV, reader, !reader, libc::O_NONBLOCK)
            .map_err(|e| format!("keeper: open (reader {reader}, non-blocking): {e}"))?;
        self.file = file;
        self.reader = reader;
        self.turns += 1;
        Ok(())
    }
}

/// A fuzz process's byte totals, its forked children's included, from its `bytes:` line.
struct Totals {
    written: u64,
    read: u64,
    exact: bool,
}

impl Totals {
    fn parse(out: &str) -> Option<Self> {
        let line = out.lines().find(|l| l.contains(" bytes: written "))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |w: &str| {
            let at = words.iter().position(|x| *x == w)?;
            words.get(at + 1)?.parse().ok()
        };
        Some(Self {
            written: after("written")?,
            read: after("read")?,
            exact: line.contains("(exact;"),
        })
    }
}

/// Reads everything queued through a new non-blocking reader (the keeper still holds its
/// file, so nothing is discarded meanwhile). Returns the bytes read, after checking that
/// `FIONREAD` said as much before and says 0 after.
fn drain() -> Result<u64, String> {
    let mut f = crate::util::open(DEV, true, false, libc::O_NONBLOCK)
        .map_err(|e| format!("drain: open: {e}"))?;
    let before = queued(&f).map_err(|e| format!("drain: FIONREAD: {e}"))?;
    let mut left = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => left += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("drain: read: {e}")),
        }
    }
    let after = queued(&f).map_err(|e| format!("drain: FIONREAD: {e}"))?;
    ensure!(
        u64::try_from(before).ok() == Some(left) && after == 0,
        "drain: FIONREAD said {before} bytes before, {after} after, {left} were read"
    );
    Ok(left)
}

/// The `fuzz` test: `PROCS` fuzz processes at once, each signalling those started before it;
/// all must finish their budget and exit 0, bytes must be conserved, and afterwards the device
/// must be idle. Every failure says how to replay the run.
pub fn test() -> TestResult {
    let (seed, how) = match std::env::var("MINI_PIPE_FUZZ_SEED") {
        Ok(v) => (
            v.trim()
                .parse()
                .map_err(|e| format!("MINI_PIPE_FUZZ_SEED={v:?}: {e}"))?,
            "from MINI_PIPE_FUZZ_SEED",
        ),
        Err(_) => (fresh_seed(), "fresh"),
    };
    println!("# fuzz: seed {seed} ({how}); replay: MINI_PIPE_FUZZ_SEED={seed}");
    fuzz_run(seed).map_err(|e| format!("{e}\nreplay: MINI_PIPE_FUZZ_SEED={seed}"))
}

fn fuzz_run(seed: u64) -> TestResult {
    reload(&[])?;
    let ops = ops_per_process();
    let start = Instant::now();
    let mut keeper = Keeper::new()?;
    let mut helpers: Vec<Helper> = Vec::new();
    for i in 0..PROCS {
        let mut args = vec![seed.to_string(), i.to_string(), ops.to_string()];
        args.extend(helpers.iter().map(|h| h.pid().to_string()));
        helpers.push(Helper::spawn("fuzz", &args)?);
    }
    // Read every output before reaping anyone, so no peer's pid can be reused meanwhile; turn
    // the keeper in between.
    let mut outputs: Vec<Option<String>> = vec![None; PROCS];
    let mut turned = Instant::now();
    while outputs.iter().any(Option::is_none) {
        ensure!(
            start.elapsed() < TEST_TIMEOUT,
            "fuzz processes {:?} still running after {TEST_TIMEOUT:?}",
            (0..PROCS)
                .filter(|i| outputs[*i].is_none())
                .collect::<Vec<_>>()
        );
        for (h, out) in helpers.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                *out = h.output_within(Duration::from_millis(20)).ok();
            }
        }
        if turned.elapsed() >= KEEPER_TURN {
            keeper.turn()?;
            turned = Instant::now();
        }
    }
    let mut failed = Vec::new();
    for (i, h) in helpers.iter_mut().enumerate() {
        let st = h.wait_within(Duration::from_secs(30))?;
        if !st.success() {
            failed.push(format!(
                "fuzz process {i} (seed {}): {st}",
                process_seed(seed, i as u64)
            ));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let outputs: Vec<String> = outputs.into_iter().map(Option::unwrap_or_default).collect();
    for out in &outputs {
        for line in out.lines() {
            println!("# fuzz: {line}");
        }
    }
    let total = ops * PROCS as u64;
    println!(
        "# fuzz: {total} ops in {PROCS} processes ({secs:.1} s, {:.0} ops/s), the keeper \
         turned {} times",
        total as f64 / secs,
        keeper.turns
    );
    // Conservation: every byte a write accepted was read by somebody or is still queued.
    let left = drain()?;
    drop(keeper);
    let (mut written, mut read, mut exact) = (0u64, 0u64, true);
    for (i, out) in outputs.iter().enumerate() {
        match Totals::parse(out) {
            Some(t) => {
                written += t.written;
                read += t.read;
                exact &= t.exact;
            }
            None => {
                exact = false;
                failed.push(format!("fuzz process {i}: no byte totals in its output"));
            }
        }
    }
    let verdict = if !exact {
        "inexact, not checked"
    } else if written == read + left {
        "conserved"
    } else {
        "NOT conserved"
    };
    println!("# fuzz: bytes: {written} written, {read} read + {left} left at the end ({verdict})");
    if exact && written != read + left {
        failed.push(format!(
            "bytes not conserved: {written} written, but {read} read + {left} left = {}",
            read + left
        ));
    }
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
