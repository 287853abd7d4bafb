// SPDX-License-Identifier: GPL-2.0

//! The differential tests: every scenario runs twice, once against a FIFO made with mkfifo and
//! once against /dev/mini_pipe, each time in a fresh process, and records what a program can
//! observe (return values, errno, poll/epoll/select masks, signals, bytes) as a trace of lines.
//! The two traces must be identical.
//!
//! Where mini_pipe differs on purpose (DIFF.md), the scenario asserts the exact documented
//! behaviour of each side and records only that it did: a different or undocumented behaviour
//! fails the scenario. Both objects hold 65536 bytes (the FIFO is sized with F_SETPIPE_SZ at
//! every open, mini_pipe is loaded with its default capacity). mini_pipe runs with three pipes
//! (`pipes=3`), and the scenarios use the last, /dev/mini_pipe2: the suite shows that a pipe
//! of a multi-pipe load is a FIFO like the first, and the summary that the other two saw none
//! of its bytes.
//!
//! This file is the framework: the trace, the helpers the scenarios share, the runner and the
//! comparison. The scenarios are in one file per interface, each exposing its `SCENARIOS`.

use crate::{
    util::{
        blocked_in_syscall, ensure, open as open_file, reload, Helper, TestResult, SYS_READ,
        SYS_WRITE,
    },
    Test,
};
use nix::{
    errno::Errno,
    fcntl::{fcntl, FcntlArg, OFlag},
    libc,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        epoll::{Epoll, EpollEvent, EpollTimeout},
        pthread::{pthread_kill, pthread_self, Pthread},
        signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
        stat::Mode,
    },
    unistd::{gettid, mkfifo, read, write},
};
use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Mutex,
    },
    thread,
    time::Duration,
};

const FIFO: &str = "/tmp/mini_pipe_fifo";
/// The pipe the scenarios run on: the third of `pipes=3`.
const MINI: &str = "/dev/mini_pipe2";
const MINI_PIPES: &str = "pipes=3";
const CAPACITY: usize = 65536;
const WAIT: Duration = Duration::from_secs(30);
/// x86_64 system call numbers of the waits the scenarios look for.
const SYS_POLL: u32 = 7;
const SYS_SELECT: u32 = 23;
const SYS_OPENAT: u32 = 257;
const SYS_PPOLL: u32 = 271;
const SYS_EPOLL_WAIT: u32 = 232;
const SYS_EPOLL_PWAIT: u32 = 281;

/// Which object a scenario runs against.
#[derive(Clone, Copy, PartialEq)]
pub enum Target {
    Fifo,
    Mini,
}

/// One scenario: a name and the code that runs it, recording into a trace.
struct Scenario {
    name: &'static str,
    run: fn(&mut Trace) -> TestResult,
}

/// What a scenario observed, a line per observation.
pub struct Trace {
    target: Target,
    lines: Vec<String>,
}

/// The bytes read, as they are if short, else as their length and FNV-1a hash: a trace shows
/// which bytes came, not only how many.
fn digest(bytes: &[u8]) -> String {
    if bytes.len() <= 16 {
        return format!("{:?}", String::from_utf8_lossy(bytes));
    }
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("fnv1a:{h:016x}")
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

impl Trace {
    fn path(&self) -> &'static str {
        match self.target {
            Target::Fifo => FIFO,
            Target::Mini => MINI,
        }
    }

    fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// Records `what = value` or `what = ERRNO`.
    fn rec<T: std::fmt::Debug>(&mut self, what: &str, r: &Result<T, Errno>) {
        let v = match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => errno_name(*e),
        };
        self.note(format!("{what} = {v}"));
    }

    /// Opens the object; a FIFO is then sized to `CAPACITY`.
    fn open(&mut self, flags: OFlag) -> Result<OwnedFd, String> {
        let r = open_raw(self.path(), flags);
        self.rec(
            &format!("open({})", flag_names(flags)),
            &r.as_ref().map(|_| "ok").map_err(|e| *e),
        );
        let fd = r.map_err(|e| format!("open {}: {e}", flag_names(flags)))?;
        if self.target == Target::Fifo {
            fcntl(&fd, FcntlArg::F_SETPIPE_SZ(CAPACITY as i32))
                .map_err(|e| format!("F_SETPIPE_SZ: {e}"))?;
        }
        Ok(fd)
    }

    /// Opens, expecting failure; records the errno.
    fn open_fails(&mut self, flags: OFlag) {
        let r = open_raw(self.path(), flags);
        self.rec(&format!("open({})", flag_names(flags)), &r.map(|_| "ok"));
    }

    /// A reader and a writer, both ready: the reader opened first without waiting.
    fn pair(&mut self) -> Result<(OwnedFd, OwnedFd), String> {
        let r = self.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
        let w = self.open(OFlag::O_WRONLY)?;
        fcntl(&r, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| e.to_string())?;
        Ok((r, w))
    }

    fn read(&mut self, fd: &OwnedFd, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let r = read(fd, &mut buf);
        buf.truncate(r.unwrap_or(0));
        match r {
            Ok(k) => self.note(format!("read({n}) = {k} {}", digest(&buf))),
            Err(e) => self.note(format!("read({n}) = {}", errno_name(e))),
        }
        buf
    }

    /// Reads and records the bytes too.
    fn read_bytes(&mut self, fd: &OwnedFd, n: usize) {
        let got = self.read(fd, n);
        self.note(format!("  bytes {}", String::from_utf8_lossy(&got)));
    }

    fn write(&mut self, fd: &OwnedFd, data: &[u8]) -> Result<usize, Errno> {
        let r = write(fd, data);
        self.rec(&format!("write({})", data.len()), &r);
        r
    }

    fn write_n(&mut self, fd: &OwnedFd, n: usize) -> Result<usize, Errno> {
        self.write(fd, &vec![b'x'; n])
    }

    fn poll(&mut self, fd: &OwnedFd, what: &str) {
        let m = poll_mask(fd, PollTimeout::ZERO);
        self.note(format!("poll({what}) = {m}"));
    }

    fn fionread(&mut self, fd: &OwnedFd) {
        self.rec("FIONREAD", &crate::util::queued(fd));
    }

    fn nonblock(&mut self, fd: &OwnedFd, on: bool) -> TestResult {
        let flags = if on {
            OFlag::O_NONBLOCK
        } else {
            OFlag::empty()
        };
        fcntl(fd, FcntlArg::F_SETFL(flags))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn open_raw(path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
}

fn flag_names(flags: OFlag) -> String {
    let mut s = match flags & OFlag::O_ACCMODE {
        f if f == OFlag::O_WRONLY => "W".to_string(),
        f if f == OFlag::O_RDWR => "RW".to_string(),
        _ => "R".to_string(),
    };
    if flags.contains(OFlag::O_NONBLOCK) {
        s.push_str("|NONBLOCK");
    }
    if flags.contains(OFlag::O_DIRECT) {
        s.push_str("|DIRECT");
    }
    s
}

fn poll_mask(fd: &OwnedFd, timeout: PollTimeout) -> String {
    let ev = PollFlags::POLLIN | PollFlags::POLLOUT | PollFlags::POLLRDNORM | PollFlags::POLLWRNORM;
    let mut fds = [PollFd::new(fd.as_fd(), ev)];
    match poll(&mut fds, timeout) {
        Ok(_) => format!("{:?}", fds[0].revents().unwrap_or(PollFlags::empty())),
        Err(e) => errno_name(e),
    }
}

/// An operation running on a thread of its own, so that the scenario can watch it block.
struct Bg {
    tid: u32,
    pthread: Pthread,
    rx: mpsc::Receiver<String>,
}

fn bg(f: impl FnOnce() -> String + Send + 'static) -> Bg {
    let (tx, rx) = mpsc::channel();
    let (idtx, idrx) = mpsc::channel();
    thread::spawn(move || {
        let _ = idtx.send((gettid().as_raw() as u32, pthread_self()));
        let _ = tx.send(f());
    });
    let (tid, pthread) = idrx.recv().expect("thread started");
    Bg { tid, pthread, rx }
}

impl Bg {
    /// Waits until the thread sleeps in one of the system calls `nrs`.
    fn blocked_in(&self, t: &mut Trace, nrs: &[u32]) -> TestResult {
        let start = std::time::Instant::now();
        loop {
            if nrs.iter().any(|&nr| blocked_in_syscall(self.tid, nr)) {
                t.note("  (blocked)");
                return Ok(());
            }
            if let Ok(r) = self.rx.try_recv() {
                return Err(format!("did not block: returned {r}"));
            }
            ensure!(
                start.elapsed() < WAIT,
                "timed out waiting for the thread to block"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// After an action that could have woken the thread (a wakeup is issued before the system
    /// call that issues it returns): waits until the thread has returned, or sleeps again in one
    /// of the system calls `nrs`, and says which. A woken thread is runnable until it has done
    /// either, so no wakeup, however late it would run, is missed, and nothing is timed.
    fn settled(&self, nrs: &[u32]) -> Result<Option<String>, String> {
        crate::util::wait_until("the thread to return or sleep again", WAIT, || {
            nrs.iter().any(|&nr| blocked_in_syscall(self.tid, nr))
                || !std::path::Path::new(&format!("/proc/self/task/{}", self.tid)).exists()
        })?;
        // A thread that has exited sent its result first.
        Ok(self.rx.try_recv().ok())
    }

    /// The operation's result, recorded.
    fn done(&self, t: &mut Trace, what: &str) -> TestResult {
        let r = self
            .rx
            .recv_timeout(WAIT)
            .map_err(|_| format!("{what}: still blocked after {WAIT:?}"))?;
        t.note(format!("{what} -> {r}"));
        Ok(())
    }

    /// The operation's result within `limit`, recorded; if it is still blocked then, that is
    /// recorded instead (the thread is left behind), so that a hang shows in the trace.
    fn done_or_blocked(&self, t: &mut Trace, what: &str, limit: Duration) {
        match self.rx.recv_timeout(limit) {
            Ok(r) => t.note(format!("{what} -> {r}")),
            Err(_) => t.note(format!("{what}: still blocked after {limit:?}")),
        }
    }

    fn signal(&self, sig: Signal) -> TestResult {
        pthread_kill(self.pthread, sig).map_err(|e| e.to_string())
    }
}

fn show<T: std::fmt::Debug>(r: Result<T, Errno>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => errno_name(e),
    }
}

/// `RWF_NOSIGNAL` from include/uapi/linux/fs.h of 7.3, which the libc crate does not have yet:
/// a write to a pipe with no reader fails with EPIPE but raises no SIGPIPE.
const RWF_NOSIGNAL: i32 = 0x100;

/// pwritev2(2) of `data` as one segment, at `offset` (-1: the file position) with `flags`.
fn pwritev2(fd: &OwnedFd, data: &[u8], offset: i64, flags: i32) -> Result<usize, Errno> {
    let iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: One segment over `data`, which outlives the call; the kernel only reads it.
    let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, offset, flags) };
    Errno::result(n).map(|n| n as usize)
}

/// preadv2(2) into `buf` as one segment, at `offset` (-1: the file position) with `flags`.
fn preadv2(fd: &OwnedFd, buf: &mut [u8], offset: i64, flags: i32) -> Result<usize, Errno> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: One segment over `buf`, which outlives the call and nothing else uses meanwhile.
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset, flags) };
    Errno::result(n).map(|n| n as usize)
}

/// Counts of signals caught by `catch`.
static CAUGHT: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];

extern "C" fn count_signal(sig: i32) {
    CAUGHT[sig as usize].fetch_add(1, Ordering::SeqCst);
}

/// Catches `sig` with a counting handler; `restart` sets SA_RESTART.
fn catch(sig: Signal, restart: bool) -> TestResult {
    let flags = if restart {
        SaFlags::SA_RESTART
    } else {
        SaFlags::empty()
    };
    let act = SigAction::new(SigHandler::Handler(count_signal), flags, SigSet::empty());
    // SAFETY: The handler only increments an atomic, which is async-signal-safe.
    unsafe { sigaction(sig, &act) }
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn caught(sig: Signal) -> usize {
    CAUGHT[sig as usize].load(Ordering::SeqCst)
}

/// Fills the object to capacity with a non-blocking write.
fn fill(t: &mut Trace, w: &OwnedFd, n: usize) -> TestResult {
    t.nonblock(w, true)?;
    let r = t.write_n(w, n);
    t.nonblock(w, false)?;
    ensure!(r == Ok(n), "fill {n}: {r:?}");
    Ok(())
}

fn shared<T>(v: T) -> std::sync::Arc<Mutex<T>> {
    std::sync::Arc::new(Mutex::new(v))
}

fn bg_read(r: OwnedFd, n: usize) -> Bg {
    bg(move || {
        let mut buf = vec![0u8; n];
        let res = read(&r, &mut buf);
        show(res.map(|k| String::from_utf8_lossy(&buf[..k]).into_owned()))
    })
}

fn bg_write(w: OwnedFd, n: usize) -> Bg {
    bg(move || show(write(&w, &vec![b'y'; n])))
}

fn epoll_events(ep: &Epoll, ms: u16) -> String {
    let mut evs = [EpollEvent::empty(); 4];
    match ep.wait(&mut evs, EpollTimeout::from(ms)) {
        Ok(n) => format!(
            "{n} {:?}",
            evs[..n].iter().map(|e| e.events()).collect::<Vec<_>>()
        ),
        Err(e) => errno_name(e),
    }
}

// Bad input: user buffers that fault in different places. The FIFO is the oracle for how many
// bytes a faulting call moves; both must keep every queued byte.

const PAGE: usize = 4096;
/// An address in the kernel's direct map: never accessible from user space.
const KERNEL_ADDR: usize = 0xffff_8880_0000_0000;

/// Three pages: the first readable and writable, the second unmapped, the third read-only.
struct Pages {
    base: *mut u8,
}

impl Pages {
    fn new() -> Result<Self, String> {
        use nix::sys::mman::{mmap_anonymous, mprotect, munmap, MapFlags, ProtFlags};
        let len = std::num::NonZeroUsize::new(3 * PAGE).unwrap();
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: A fresh anonymous mapping; nothing else refers to it.
        let base = unsafe { mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE) }
            .map_err(|e| e.to_string())?;
        let at = |i: usize| {
            std::ptr::NonNull::new(base.as_ptr().cast::<u8>().wrapping_add(i * PAGE).cast())
                .unwrap()
        };
        // SAFETY: Both ranges lie inside the mapping just made, which only this struct uses.
        unsafe {
            munmap(at(1), PAGE).map_err(|e| e.to_string())?;
            mprotect(at(2), PAGE, ProtFlags::PROT_READ).map_err(|e| e.to_string())?;
        }
        let pages = Self {
            base: base.as_ptr().cast(),
        };
        // The first page holds a known pattern to write from.
        // SAFETY: The first page is mapped readable and writable.
        unsafe { std::slice::from_raw_parts_mut(pages.base, PAGE) }
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = b'a' + (i % 26) as u8);
        Ok(pages)
    }

    /// The address `off` bytes into the three pages.
    fn at(&self, off: usize) -> *mut u8 {
        self.base.wrapping_add(off)
    }
}

/// Records a raw read(2) or write(2) result.
fn raw_result(t: &mut Trace, what: &str, n: isize) {
    let v = if n < 0 {
        errno_name(Errno::last())
    } else {
        n.to_string()
    };
    t.note(format!("{what} = {v}"));
}

fn raw_read(t: &mut Trace, fd: &OwnedFd, what: &str, buf: *mut u8, count: usize) {
    // SAFETY: read(2) into an address that may be bad: the kernel checks it, not this process.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.cast(), count) };
    raw_result(t, what, n);
}

fn raw_write(t: &mut Trace, fd: &OwnedFd, what: &str, buf: *const u8, count: usize) {
    // SAFETY: write(2) from an address that may be bad: the kernel checks it.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.cast(), count) };
    raw_result(t, what, n);
}

/// What is queued, then all of it read back (as text).
fn drain(t: &mut Trace, r: &OwnedFd) -> TestResult {
    t.fionread(r);
    t.nonblock(r, true)?;
    t.read_bytes(r, 2 * CAPACITY);
    Ok(())
}

// The scenarios are in the chapters, one file per interface. Each builds its trace with the
// helpers above; `?` on a helper's Err means the scenario could not go on, and fails it.

/// Declares the chapters (`mod NAME;`, the file NAME.rs) and lists their `SCENARIOS`.
macro_rules! chapters {
    ($($chapter:ident),* $(,)?) => {
        $(mod $chapter;)*

        /// Every chapter's scenarios, in the order they run.
        const CHAPTERS: &[&[Scenario]] = &[$($chapter::SCENARIOS),*];
    };
}

// A new chapter is one line here. splice_uring.rs and stalls.rs (being written) go in as
// `splice_uring,` and `stalls,` before `documented`.
chapters! {
    open,
    read_write,
    poll,
    signals,
    splice_uring,
    stalls,
    documented,
}

fn scenarios() -> impl Iterator<Item = &'static Scenario> {
    CHAPTERS.iter().flat_map(|c| c.iter())
}

/// `helper scenario NAME fifo|mini`: runs one scenario in this (fresh) process and prints its
/// trace; the last line is `FAIL: reason` if it could not complete.
pub fn run_scenario(args: &[String]) -> i32 {
    let target = match args.get(1).map(String::as_str) {
        Some("fifo") => Target::Fifo,
        Some("mini") => Target::Mini,
        _ => return 2,
    };
    let Some(s) = scenarios().find(|s| Some(s.name) == args.first().map(String::as_str)) else {
        println!("FAIL: no scenario {:?}", args.first());
        return 2;
    };
    let mut t = Trace {
        target,
        lines: Vec::new(),
    };
    let r = (s.run)(&mut t);
    for l in &t.lines {
        println!("{l}");
    }
    match r {
        Ok(()) => 0,
        Err(why) => {
            println!("FAIL: {why}");
            1
        }
    }
}

/// Runs `name` against `target` in a helper process; returns its trace or why it failed.
fn trace_of(name: &str, target: &str) -> Result<String, String> {
    let mut h = Helper::spawn("scenario", &[name.into(), target.into()])?;
    let out = h.output_within(Duration::from_secs(120))?;
    let st = h.wait_within(WAIT)?;
    if !st.success() {
        return Err(format!("{target}: {st}\n{out}"));
    }
    Ok(out)
}

/// Scenarios whose traces were identical, and those where each side showed the behaviour
/// DIFF.md documents for it (their traces say "as DIFF.md documents"), for the summary line.
static IDENTICAL: AtomicUsize = AtomicUsize::new(0);
static DOCUMENTED: AtomicUsize = AtomicUsize::new(0);

/// What a documented-difference scenario notes once it has checked its side.
const DOCUMENTED_MARK: &str = "as DIFF.md documents";

fn compare(name: &str) -> TestResult {
    let fifo = trace_of(name, "fifo")?;
    let mini = trace_of(name, "mini")?;
    if fifo != mini {
        let mut why = String::from("traces differ (fifo | mini_pipe):\n");
        for (i, (a, b)) in fifo.lines().zip(mini.lines()).enumerate() {
            let mark = if a == b { ' ' } else { '!' };
            why.push_str(&format!("{mark}{i:2} {a} | {b}\n"));
        }
        if fifo.lines().count() != mini.lines().count() {
            why.push_str(&format!(
                "{} lines | {} lines\n",
                fifo.lines().count(),
                mini.lines().count()
            ));
        }
        return Err(why);
    }
    if fifo.contains(DOCUMENTED_MARK) {
        DOCUMENTED.fetch_add(1, Ordering::SeqCst);
    } else {
        IDENTICAL.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// Sets the stage: mini_pipe at its default capacity with three pipes, and a FIFO beside it.
fn setup() -> TestResult {
    reload(&[MINI_PIPES])?;
    let _ = std::fs::remove_file(FIFO);
    mkfifo(FIFO, Mode::from_bits_truncate(0o600)).map_err(|e| format!("mkfifo: {e}"))?;
    // A first open of each, to be sure both are there.
    drop(open_file(FIFO, true, true, 0).map_err(|e| e.to_string())?);
    drop(open_file(MINI, true, true, 0).map_err(|e| e.to_string())?);
    Ok(())
}

/// The KTAP tests of this section: the setup, then one per scenario, then the summary.
pub fn tests() -> Vec<Test> {
    let mut v = vec![Test::new("fifo_eq_setup", Box::new(setup))];
    for s in scenarios() {
        v.push(Test::new(
            format!("fifo_eq_{}", s.name),
            Box::new(move || compare(s.name)),
        ));
    }
    v.push(Test::new(
        "fifo_eq_summary",
        Box::new(|| {
            let same = IDENTICAL.load(Ordering::SeqCst);
            let documented = DOCUMENTED.load(Ordering::SeqCst);
            let all = scenarios().count();
            println!(
                "# fifo-equivalence: {same} identical + {documented} documented differences \
                 verified, of {all} scenarios"
            );
            ensure!(
                same + documented == all,
                "{} scenario(s) differ",
                all - same - documented
            );
            // The scenarios' bytes all went through the third pipe.
            for i in 0..2 {
                let c = crate::devices::counters(i)?;
                ensure!(
                    c.get("bytes_written") == Some(&0) && c.get("writes") == Some(&0),
                    "{} saw traffic meant for {MINI}: {c:?}",
                    crate::devices::node(i)
                );
            }
            let c = crate::devices::counters(2)?;
            ensure!(
                c.get("bytes_written").is_some_and(|&b| b > 0),
                "{MINI} counted no bytes: {c:?}"
            );
            reload(&[])
        }),
    ));
    v
}
