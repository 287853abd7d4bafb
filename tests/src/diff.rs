// SPDX-License-Identifier: GPL-2.0

//! The differential tests: every scenario runs twice, once against a FIFO made with mkfifo and
//! once against /dev/mini_pipe, each time in a fresh process, and records what a program can
//! observe (return values, errno, poll/epoll/select masks, signals, bytes) as a trace of lines.
//! The two traces must be identical.
//!
//! Where mini_pipe differs on purpose (DIFF.md), the scenario asserts the exact documented
//! behaviour of each side and records only that it did: a different or undocumented behaviour
//! fails the scenario. Both objects hold 65536 bytes (the FIFO is sized with F_SETPIPE_SZ at
//! every open, mini_pipe is loaded with its default capacity).

use crate::{
    util::{
        blocked_in_syscall, ensure, open as open_file, reload, Helper, TestResult, DEV, SYS_READ,
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
        epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
        pthread::{pthread_kill, pthread_self, Pthread},
        select::{select, FdSet},
        signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
        stat::Mode,
        time::TimeVal,
        uio::{pread, pwrite, readv, writev},
    },
    unistd::{getpid, gettid, lseek, mkfifo, read, write, Whence},
};
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Mutex,
    },
    thread,
    time::Duration,
};

const FIFO: &str = "/tmp/mini_pipe_fifo";
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

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

impl Trace {
    fn path(&self) -> &'static str {
        match self.target {
            Target::Fifo => FIFO,
            Target::Mini => DEV,
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
        self.rec(&format!("read({n})"), &r);
        buf.truncate(r.unwrap_or(0));
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

    /// The operation's result, recorded.
    fn done(&self, t: &mut Trace, what: &str) -> TestResult {
        let r = self
            .rx
            .recv_timeout(WAIT)
            .map_err(|_| format!("{what}: still blocked after {WAIT:?}"))?;
        t.note(format!("{what} -> {r}"));
        Ok(())
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

// The scenarios. Each builds its trace with the helpers above; `?` on a helper's Err means the
// scenario could not go on, and fails it.

fn open_rdonly_nonblock_alone(t: &mut Trace) -> TestResult {
    let r = t.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    t.read(&r, 8);
    t.poll(&r, "reader, never a writer");
    Ok(())
}

fn open_wronly_nonblock_alone(t: &mut Trace) -> TestResult {
    t.open_fails(OFlag::O_WRONLY | OFlag::O_NONBLOCK);
    Ok(())
}

fn open_wronly_nonblock_with_reader(t: &mut Trace) -> TestResult {
    let r = t.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let w = t.open(OFlag::O_WRONLY | OFlag::O_NONBLOCK)?;
    let _ = t.write(&w, b"abc");
    t.read_bytes(&r, 8);
    Ok(())
}

fn open_rdwr_never_waits(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    let _ = t.write(&f, b"hello");
    t.poll(&f, "rdwr with data");
    t.read_bytes(&f, 5);
    Ok(())
}

fn open_o_direct_refused(t: &mut Trace) -> TestResult {
    t.open_fails(OFlag::O_RDWR | OFlag::O_DIRECT);
    t.open_fails(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_DIRECT);
    Ok(())
}

fn open_rdwr_nonblock(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR | OFlag::O_NONBLOCK)?;
    t.read(&f, 5);
    t.poll(&f, "rdwr empty");
    Ok(())
}

/// Starts a blocking open on a thread; returns the thread (its result is "ok" or an errno).
fn bg_open(t: &Trace, flags: OFlag) -> (Bg, std::sync::Arc<Mutex<Option<OwnedFd>>>) {
    let path = t.path();
    let slot = shared(None);
    let s2 = slot.clone();
    let b = bg(move || match open_raw(path, flags) {
        Ok(fd) => {
            *s2.lock().unwrap() = Some(fd);
            "ok".into()
        }
        Err(e) => errno_name(e),
    });
    (b, slot)
}

fn open_reader_waits_for_writer(t: &mut Trace) -> TestResult {
    let (b, _fd) = bg_open(t, OFlag::O_RDONLY);
    b.blocked_in(t, &[SYS_OPENAT])?;
    let _w = t.open(OFlag::O_WRONLY)?;
    b.done(t, "reader's open")
}

fn open_writer_waits_for_reader(t: &mut Trace) -> TestResult {
    let (b, _fd) = bg_open(t, OFlag::O_WRONLY);
    b.blocked_in(t, &[SYS_OPENAT])?;
    let _r = t.open(OFlag::O_RDONLY)?;
    b.done(t, "writer's open")
}

fn open_reader_wait_interrupted(t: &mut Trace) -> TestResult {
    catch(Signal::SIGUSR1, false)?;
    let (b, _fd) = bg_open(t, OFlag::O_RDONLY);
    b.blocked_in(t, &[SYS_OPENAT])?;
    b.signal(Signal::SIGUSR1)?;
    b.done(t, "reader's open")?;
    // The interrupted reader no longer counts.
    t.open_fails(OFlag::O_WRONLY | OFlag::O_NONBLOCK);
    Ok(())
}

fn open_writer_wait_interrupted(t: &mut Trace) -> TestResult {
    catch(Signal::SIGUSR1, false)?;
    let (b, _fd) = bg_open(t, OFlag::O_WRONLY);
    b.blocked_in(t, &[SYS_OPENAT])?;
    b.signal(Signal::SIGUSR1)?;
    b.done(t, "writer's open")?;
    let r = t.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    t.read(&r, 4);
    t.poll(&r, "reader after an interrupted writer");
    Ok(())
}

fn open_partner_came_and_went(t: &mut Trace) -> TestResult {
    let (b, fd) = bg_open(t, OFlag::O_RDONLY);
    b.blocked_in(t, &[SYS_OPENAT])?;
    // The waiting reader counts, so a non-blocking writer may open; it leaves at once.
    let w = t.open(OFlag::O_WRONLY | OFlag::O_NONBLOCK)?;
    drop(w);
    b.done(t, "reader's open")?;
    let r = fd.lock().unwrap().take().ok_or("no reader fd")?;
    t.read(&r, 4);
    Ok(())
}

fn open_rdwr_wakes_waiting_reader(t: &mut Trace) -> TestResult {
    let (b, _fd) = bg_open(t, OFlag::O_RDONLY);
    b.blocked_in(t, &[SYS_OPENAT])?;
    let _f = t.open(OFlag::O_RDWR)?;
    b.done(t, "reader's open")
}

fn read_empty_nonblock_with_writer(t: &mut Trace) -> TestResult {
    let (r, _w) = t.pair()?;
    t.nonblock(&r, true)?;
    t.read(&r, 8);
    Ok(())
}

fn read_up_to_available(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"0123456789");
    t.read_bytes(&r, 100);
    Ok(())
}

fn read_partial_then_rest(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"0123456789");
    t.read_bytes(&r, 4);
    t.fionread(&r);
    t.read_bytes(&r, 100);
    Ok(())
}

fn read_zero_length(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"0123456789");
    t.read(&r, 0);
    t.fionread(&r);
    Ok(())
}

fn read_data_then_eof(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"hello");
    drop(w);
    t.read_bytes(&r, 100);
    t.read(&r, 100);
    Ok(())
}

fn bg_read(r: OwnedFd, n: usize) -> Bg {
    bg(move || {
        let mut buf = vec![0u8; n];
        let res = read(&r, &mut buf);
        show(res.map(|k| String::from_utf8_lossy(&buf[..k]).into_owned()))
    })
}

fn reader_woken_by_write(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let b = bg_read(r, 64);
    b.blocked_in(t, &[SYS_READ])?;
    let _ = t.write(&w, b"abc");
    b.done(t, "blocked read")
}

fn reader_woken_by_last_writer_close(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let b = bg_read(r, 64);
    b.blocked_in(t, &[SYS_READ])?;
    drop(w);
    b.done(t, "blocked read")
}

fn no_eof_while_a_writer_remains(t: &mut Trace) -> TestResult {
    let (r, w1) = t.pair()?;
    let w2 = t.open(OFlag::O_WRONLY)?;
    drop(w1);
    t.nonblock(&r, true)?;
    t.read(&r, 8);
    t.poll(&r, "one writer left");
    drop(w2);
    t.read(&r, 8);
    t.poll(&r, "no writer left");
    Ok(())
}

fn read_bad_buffer_keeps_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"12345678");
    // SAFETY: read(2) with a NULL buffer: the kernel must fail the copy, not this process.
    let n = unsafe { libc::read(r.as_raw_fd(), std::ptr::null_mut(), 8) };
    t.note(format!(
        "read(NULL, 8) = {}",
        if n < 0 {
            errno_name(Errno::last())
        } else {
            n.to_string()
        }
    ));
    t.fionread(&r);
    t.read_bytes(&r, 8);
    Ok(())
}

fn readv_scatters(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"abcdefghij");
    let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 4], [0u8; 10]);
    let n = readv(
        &r,
        &mut [
            IoSliceMut::new(&mut a),
            IoSliceMut::new(&mut b),
            IoSliceMut::new(&mut c),
        ],
    );
    t.rec("readv(3,4,10)", &n);
    t.note(format!(
        "  segments {} {} {}",
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b),
        String::from_utf8_lossy(&c[..3])
    ));
    Ok(())
}

fn writev_gathers(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let n = writev(
        &w,
        &[
            IoSlice::new(b"aaa"),
            IoSlice::new(b""),
            IoSlice::new(b"bbbb"),
        ],
    );
    t.rec("writev(3,0,4)", &n);
    t.read_bytes(&r, 100);
    Ok(())
}

fn blocked_read_interrupted(t: &mut Trace) -> TestResult {
    catch(Signal::SIGUSR1, false)?;
    let (r, _w) = t.pair()?;
    let b = bg_read(r, 64);
    b.blocked_in(t, &[SYS_READ])?;
    b.signal(Signal::SIGUSR1)?;
    b.done(t, "blocked read")
}

fn blocked_read_restarted(t: &mut Trace) -> TestResult {
    catch(Signal::SIGUSR1, true)?;
    let (r, w) = t.pair()?;
    let b = bg_read(r, 64);
    b.blocked_in(t, &[SYS_READ])?;
    b.signal(Signal::SIGUSR1)?;
    b.blocked_in(t, &[SYS_READ])?;
    let _ = t.write(&w, b"after");
    b.done(t, "restarted read")?;
    t.note(format!("handler ran {} time(s)", caught(Signal::SIGUSR1)));
    Ok(())
}

fn write_without_reader_epipe(t: &mut Trace) -> TestResult {
    catch(Signal::SIGPIPE, false)?;
    let (r, w) = t.pair()?;
    drop(r);
    let _ = t.write(&w, b"x");
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    t.poll(&w, "writer, no reader");
    Ok(())
}

fn write_zero_length_without_reader(t: &mut Trace) -> TestResult {
    catch(Signal::SIGPIPE, false)?;
    let (r, w) = t.pair()?;
    drop(r);
    let _ = t.write(&w, b"");
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    Ok(())
}

fn write_nonblock_full(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.nonblock(&w, true)?;
    let _ = t.write_n(&w, CAPACITY);
    let _ = t.write_n(&w, 1);
    t.fionread(&r);
    Ok(())
}

fn write_nonblock_atomic_needs_room(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.nonblock(&w, true)?;
    // 15.5 pages: the FIFO's last page is half full, mini_pipe has 2048 bytes of room.
    let _ = t.write_n(&w, CAPACITY - 2048);
    let _ = t.write_n(&w, 4096);
    t.poll(&w, "2048 bytes of room");
    let _ = t.write_n(&w, 2048);
    t.fionread(&r);
    Ok(())
}

fn write_nonblock_large_partial(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.nonblock(&w, true)?;
    let _ = t.write_n(&w, 70000);
    t.fionread(&r);
    Ok(())
}

fn bg_write(w: OwnedFd, n: usize) -> Bg {
    bg(move || show(write(&w, &vec![b'y'; n])))
}

fn writer_woken_by_read(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let b = bg_write(w, 100);
    b.blocked_in(t, &[SYS_WRITE])?;
    t.read(&r, 4096);
    b.done(t, "blocked write")?;
    t.fionread(&r);
    Ok(())
}

fn writer_woken_by_reader_close(t: &mut Trace) -> TestResult {
    catch(Signal::SIGPIPE, false)?;
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let b = bg_write(w, 10);
    b.blocked_in(t, &[SYS_WRITE])?;
    drop(r);
    b.done(t, "blocked write")?;
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    Ok(())
}

fn large_write_cut_short_by_reader_close(t: &mut Trace) -> TestResult {
    catch(Signal::SIGPIPE, false)?;
    let (r, w) = t.pair()?;
    let b = bg_write(w, 100_000);
    b.blocked_in(t, &[SYS_WRITE])?;
    t.fionread(&r);
    drop(r);
    b.done(t, "blocked write")?;
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    Ok(())
}

fn large_write_cut_short_by_signal(t: &mut Trace) -> TestResult {
    catch(Signal::SIGUSR1, false)?;
    let (r, w) = t.pair()?;
    let b = bg_write(w, 100_000);
    b.blocked_in(t, &[SYS_WRITE])?;
    b.signal(Signal::SIGUSR1)?;
    b.done(t, "blocked write")?;
    t.fionread(&r);
    Ok(())
}

fn blocked_write_interrupted(t: &mut Trace) -> TestResult {
    catch(Signal::SIGUSR1, false)?;
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let b = bg_write(w, 10);
    b.blocked_in(t, &[SYS_WRITE])?;
    b.signal(Signal::SIGUSR1)?;
    b.done(t, "blocked write")?;
    t.fionread(&r);
    Ok(())
}

fn write_bad_buffer(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    // SAFETY: write(2) from a NULL buffer: the kernel must fail the copy, not this process.
    let n = unsafe { libc::write(w.as_raw_fd(), std::ptr::null(), 8) };
    t.note(format!(
        "write(NULL, 8) = {}",
        if n < 0 {
            errno_name(Errno::last())
        } else {
            n.to_string()
        }
    ));
    t.fionread(&r);
    Ok(())
}

fn atomic_write_waits_for_room(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY - 2048)?;
    let b = bg_write(w, 4096);
    b.blocked_in(t, &[SYS_WRITE])?;
    t.fionread(&r);
    t.read(&r, 4096);
    b.done(t, "blocked write")?;
    t.fionread(&r);
    Ok(())
}

fn large_write_fills_room_then_waits(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY - 2048)?;
    // 2048 + 2 pages: a FIFO merges the part below a page into its half-full last page
    // first (pipe_write's `chars`), then waits for free pages; mini_pipe fills its 2048 bytes.
    let b = bg_write(w, 2048 + 8192);
    b.blocked_in(t, &[SYS_WRITE])?;
    t.fionread(&r);
    t.read(&r, CAPACITY);
    b.done(t, "blocked write")?;
    t.fionread(&r);
    Ok(())
}

fn poll_reader_and_writer(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.poll(&r, "reader, empty");
    t.poll(&w, "writer, empty");
    let _ = t.write(&w, b"1");
    t.poll(&r, "reader, data");
    t.poll(&w, "writer, room");
    Ok(())
}

fn poll_writer_full_and_threshold(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY - 4096)?;
    t.poll(&w, "4096 bytes of room");
    fill(t, &w, 2048)?;
    t.poll(&w, "2048 bytes of room");
    fill(t, &w, 2048)?;
    t.poll(&w, "full");
    t.read(&r, 4096);
    t.poll(&w, "4096 bytes read");
    Ok(())
}

fn poll_hup_after_last_writer(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"abc");
    drop(w);
    t.poll(&r, "data, no writer");
    t.read(&r, 3);
    t.poll(&r, "empty, no writer");
    Ok(())
}

fn poll_err_after_last_reader(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    drop(r);
    t.poll(&w, "no reader");
    Ok(())
}

fn poll_no_hup_before_first_writer(t: &mut Trace) -> TestResult {
    let r = t.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    t.poll(&r, "no writer yet");
    let w = t.open(OFlag::O_WRONLY)?;
    t.poll(&r, "a writer");
    drop(w);
    t.poll(&r, "the writer left");
    Ok(())
}

fn poll_rdwr(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    t.poll(&f, "rdwr empty");
    let _ = t.write(&f, b"1");
    t.poll(&f, "rdwr data");
    Ok(())
}

fn poll_waits_for_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let b = bg(move || poll_mask(&r, PollTimeout::from(30_000u16)));
    b.blocked_in(t, &[SYS_POLL, SYS_PPOLL])?;
    let _ = t.write(&w, b"x");
    b.done(t, "blocked poll")
}

fn poll_waits_for_room(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let b = bg(move || {
        let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLOUT)];
        show(poll(&mut fds, PollTimeout::from(30_000u16)).map(|_| fds[0].revents()))
    });
    b.blocked_in(t, &[SYS_POLL, SYS_PPOLL])?;
    t.read(&r, 100);
    // A FIFO frees no page for 100 bytes, and mini_pipe keeps POLLOUT for PIPE_BUF of room.
    thread::sleep(Duration::from_millis(50));
    ensure!(
        b.rx.try_recv().is_err(),
        "poll woke with less than PIPE_BUF of room"
    );
    t.read(&r, 3996);
    b.done(t, "blocked poll")
}

fn select_readable_writable(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let note_select = |t: &mut Trace, what: &str| {
        let mut rs = FdSet::new();
        let mut ws = FdSet::new();
        rs.insert(r.as_fd());
        ws.insert(w.as_fd());
        let mut tv = TimeVal::new(0, 0);
        let n = select(None, Some(&mut rs), Some(&mut ws), None, Some(&mut tv));
        t.note(format!(
            "select({what}) = {} readable={} writable={}",
            show(n),
            rs.contains(r.as_fd()),
            ws.contains(w.as_fd())
        ));
    };
    note_select(t, "empty");
    let _ = t.write(&w, b"x");
    note_select(t, "data");
    Ok(())
}

fn select_waits_for_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let b = bg(move || {
        let mut rs = FdSet::new();
        rs.insert(r.as_fd());
        let mut tv = TimeVal::new(30, 0);
        let n = select(None, Some(&mut rs), None, None, Some(&mut tv));
        format!("{} readable={}", show(n), rs.contains(r.as_fd()))
    });
    b.blocked_in(t, &[SYS_SELECT, 270])?;
    let _ = t.write(&w, b"x");
    b.done(t, "blocked select")
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

fn epoll_level_triggered(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
    ep.add(&r, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .map_err(|e| e.to_string())?;
    t.note(format!("wait empty = {}", epoll_events(&ep, 0)));
    let _ = t.write(&w, b"x");
    t.note(format!("wait = {}", epoll_events(&ep, 0)));
    t.note(format!("wait again = {}", epoll_events(&ep, 0)));
    Ok(())
}

fn epoll_edge_triggered_every_write(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
    ep.add(
        &r,
        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 1),
    )
    .map_err(|e| e.to_string())?;
    let _ = t.write(&w, b"x");
    t.note(format!("wait = {}", epoll_events(&ep, 0)));
    t.note(format!("wait again = {}", epoll_events(&ep, 0)));
    // A write into a ring that is not empty: an EPOLLET reader still gets an event.
    let _ = t.write(&w, b"y");
    t.note(format!(
        "wait after second write = {}",
        epoll_events(&ep, 0)
    ));
    Ok(())
}

fn epoll_waits_for_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
    ep.add(&r, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .map_err(|e| e.to_string())?;
    let b = bg(move || epoll_events(&ep, 30_000));
    b.blocked_in(t, &[SYS_EPOLL_WAIT, SYS_EPOLL_PWAIT])?;
    let _ = t.write(&w, b"x");
    b.done(t, "blocked epoll_wait")
}

fn epoll_writer_and_hangups(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let epw = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
    epw.add(&w, EpollEvent::new(EpollFlags::EPOLLOUT, 2))
        .map_err(|e| e.to_string())?;
    let epr = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
    epr.add(&r, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .map_err(|e| e.to_string())?;
    t.note(format!("writer wait = {}", epoll_events(&epw, 0)));
    fill(t, &w, CAPACITY)?;
    t.note(format!("writer wait, full = {}", epoll_events(&epw, 0)));
    let w2 = t.open(OFlag::O_WRONLY)?;
    drop(w);
    t.note(format!(
        "reader wait, a writer left = {}",
        epoll_events(&epr, 0)
    ));
    drop(w2);
    t.note(format!(
        "reader wait, no writer = {}",
        epoll_events(&epr, 0)
    ));
    Ok(())
}

fn fionread_counts_bytes(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.fionread(&r);
    let _ = t.write_n(&w, 123);
    let _ = t.write_n(&w, 4000);
    t.fionread(&r);
    t.fionread(&w);
    Ok(())
}

fn seek_and_positional_io_espipe(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    t.rec("lseek(0, SET)", &lseek(&f, 0, Whence::SeekSet));
    t.rec("lseek(0, CUR)", &lseek(&f, 0, Whence::SeekCur));
    t.rec("pwrite(1, 0)", &pwrite(&f, b"x", 0));
    let mut buf = [0u8; 1];
    t.rec("pread(1, 0)", &pread(&f, &mut buf, 0));
    t.fionread(&f);
    Ok(())
}

fn unknown_ioctl_and_mmap(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    // SAFETY: An ioctl number no driver knows, with no argument to dereference.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x4d50_0001) };
    t.note(format!(
        "ioctl(unknown) = {}",
        if r < 0 {
            errno_name(Errno::last())
        } else {
            r.to_string()
        }
    ));
    // SAFETY: A fresh mapping request the kernel may refuse; nothing is mapped over.
    let m = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    t.note(format!(
        "mmap = {}",
        if m == libc::MAP_FAILED {
            errno_name(Errno::last())
        } else {
            "mapped".into()
        }
    ));
    Ok(())
}

/// Asks for SIGIO on `fd` (F_SETOWN to this process, then O_ASYNC).
fn async_io(fd: &OwnedFd) -> TestResult {
    // SAFETY: F_SETOWN takes a pid by value.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, getpid().as_raw()) };
    ensure!(r == 0, "F_SETOWN: {}", Errno::last());
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_ASYNC))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn fasync_sigio_for_reader(t: &mut Trace) -> TestResult {
    catch(Signal::SIGIO, false)?;
    let (r, w) = t.pair()?;
    async_io(&r)?;
    t.note(format!("SIGIO before {}", caught(Signal::SIGIO)));
    let _ = t.write(&w, b"x");
    let seen = crate::util::wait_until("SIGIO arrives", WAIT, || caught(Signal::SIGIO) > 0).is_ok();
    t.note(format!("SIGIO after a write: {seen}"));
    Ok(())
}

fn fasync_sigio_for_writer(t: &mut Trace) -> TestResult {
    catch(Signal::SIGIO, false)?;
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"abc");
    async_io(&w)?;
    t.read(&r, 3);
    let seen = crate::util::wait_until("SIGIO arrives", WAIT, || caught(Signal::SIGIO) > 0).is_ok();
    t.note(format!("SIGIO after a read: {seen}"));
    Ok(())
}

fn leftovers_discarded_when_all_close(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    let _ = t.write(&f, b"leftover");
    drop(f);
    let f = t.open(OFlag::O_RDWR | OFlag::O_NONBLOCK)?;
    t.fionread(&f);
    t.read(&f, 8);
    Ok(())
}

fn data_kept_while_a_reader_holds_it(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"kept");
    drop(w);
    let _w2 = t.open(OFlag::O_WRONLY)?;
    t.read_bytes(&r, 10);
    Ok(())
}

fn two_readers_share_the_stream(t: &mut Trace) -> TestResult {
    let (r1, w) = t.pair()?;
    let r2 = t.open(OFlag::O_RDONLY)?;
    let _ = t.write(&w, b"abcdef");
    t.read_bytes(&r1, 3);
    t.read_bytes(&r2, 3);
    Ok(())
}

fn two_writers_interleave_whole_writes(t: &mut Trace) -> TestResult {
    let (r, w1) = t.pair()?;
    let w2 = t.open(OFlag::O_WRONLY)?;
    let _ = t.write(&w1, b"111");
    let _ = t.write(&w2, b"22");
    let _ = t.write(&w1, b"3");
    t.read_bytes(&r, 100);
    Ok(())
}

/// Documented difference (DIFF.md, "a byte ring, not a ring of pages"): a FIFO's room is
/// counted in pages, so 2049-byte writes take a page each and 16 fit; mini_pipe's is counted in
/// bytes, so 31 fit.
fn room_counted_in_pages_vs_bytes(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.nonblock(&w, true)?;
    let mut n = 0;
    while write(&w, &[b'z'; 2049]).is_ok() {
        n += 1;
        ensure!(n < 100, "more than 100 writes fit");
    }
    let want = match t.target {
        Target::Fifo => 16,
        Target::Mini => 31,
    };
    ensure!(
        n == want,
        "{n} writes of 2049 bytes fit, DIFF.md says {want}"
    );
    let queued = crate::util::queued(&r).map_err(|e| e.to_string())?;
    ensure!(
        queued as usize == n * 2049,
        "{queued} bytes queued after {n} writes"
    );
    t.note("writes of 2049 bytes that fit: as DIFF.md documents");
    Ok(())
}

/// Documented difference (DIFF.md): a writer waiting for room for 100 bytes wakes when 100
/// bytes are read from a full mini_pipe; a FIFO frees no page until a whole page is read.
fn writer_wakes_on_bytes_vs_pages(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let b = bg_write(w, 100);
    b.blocked_in(t, &[SYS_WRITE])?;
    t.read(&r, 100);
    let woke = b.rx.recv_timeout(Duration::from_millis(300)).is_ok();
    let want = t.target == Target::Mini;
    ensure!(
        woke == want,
        "writer woke after 100 bytes read: {woke}, DIFF.md says {want}"
    );
    t.note("writer after 100 bytes read: as DIFF.md documents");
    Ok(())
}

/// Four writer processes, 1000 messages each of at most PIPE_BUF bytes, one reader: no message
/// torn or reordered within its writer.
fn atomic_writes_under_contention(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let path = t.path().to_string();
    let mut writers = Vec::new();
    for id in 1..=4u8 {
        writers.push(Helper::spawn(
            "message-writer",
            &[path.clone(), id.to_string(), "1000".into()],
        )?);
    }
    // Keep a writer of our own until all four have opened, or a late one could miss the
    // others and find end-of-file, or no reader.
    for h in &writers {
        let pid = h.pid();
        crate::util::wait_until("a message writer has opened", WAIT, || {
            crate::util::has_open(pid, &path)
        })?;
    }
    drop(w);
    let mut stream = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match read(&r, &mut buf) {
            Ok(0) => break,
            Ok(n) => stream.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    for mut h in writers {
        ensure!(h.wait_within(WAIT)?.success(), "a writer failed");
    }
    let (count, torn) = crate::helpers::check_messages(&stream, 4, 1000);
    ensure!(
        count == 4000 && torn == 0,
        "{count} messages intact, {torn} torn or reordered"
    );
    t.note(format!(
        "4 writers x 1000 messages: {count} read intact, {torn} torn or out of order"
    ));
    Ok(())
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

/// Checks a documented difference: the raw result `got` must be `fifo` on a FIFO and `mini` on
/// mini_pipe (-1 stands for EFAULT); records only that it was.
fn expect_documented(
    t: &mut Trace,
    what: &str,
    got: isize,
    fifo: isize,
    mini: isize,
) -> TestResult {
    let want = if t.target == Target::Fifo { fifo } else { mini };
    let errno = Errno::last();
    ensure!(
        got == want && (got >= 0 || errno == Errno::EFAULT),
        "{what}: got {got} ({errno}), DIFF.md says {want} (-1: EFAULT)"
    );
    t.note(format!("{what}: as DIFF.md documents"));
    Ok(())
}

/// Reads everything queued and checks it is `fifo` or `mini` (documented difference 3).
fn drain_documented(t: &mut Trace, r: &OwnedFd, fifo: &[u8], mini: &[u8]) -> TestResult {
    t.nonblock(r, true)?;
    let mut buf = vec![0u8; 2 * CAPACITY];
    let n = read(r, &mut buf).unwrap_or(0);
    let want = if t.target == Target::Fifo { fifo } else { mini };
    ensure!(
        buf[..n] == *want,
        "{n} bytes queued, not the {} DIFF.md documents",
        want.len()
    );
    t.note("queued bytes: as DIFF.md documents");
    Ok(())
}

/// Documented difference 3: a write that faults partway. mini_pipe keeps the bytes copied before
/// the fault; a FIFO copies whole pages and drops the page whose copy faulted.
fn write_faulting_in_the_middle(t: &mut Trace) -> TestResult {
    let p = Pages::new()?;
    let (r, w) = t.pair()?;
    // 3000 bytes from 1000 before the hole: an atomic write that faults after 1000 bytes.
    // SAFETY: write(2) from a range that runs into an unmapped page: the kernel checks it.
    let n = unsafe { libc::write(w.as_raw_fd(), p.at(PAGE - 1000).cast(), 3000) };
    expect_documented(t, "write(1000 ok + 2000 unmapped)", n, -1, 1000)?;
    // 8192 from the first page: a large write that faults after a whole page; both keep it.
    raw_write(t, &w, "write(4096 ok + 4096 unmapped)", p.at(0), 2 * PAGE);
    // SAFETY: The first page is mapped and readable.
    let page = unsafe { std::slice::from_raw_parts(p.at(0), PAGE) };
    let mini: Vec<u8> = page[PAGE - 1000..].iter().chain(page).copied().collect();
    drain_documented(t, &r, page, &mini)
}

fn write_faulting_at_the_start(t: &mut Trace) -> TestResult {
    let p = Pages::new()?;
    let (r, w) = t.pair()?;
    raw_write(t, &w, "write(unmapped)", p.at(PAGE), 100);
    raw_write(
        t,
        &w,
        "write(kernel address)",
        KERNEL_ADDR as *const u8,
        100,
    );
    raw_write(t, &w, "write(NULL, 8192)", std::ptr::null(), 2 * PAGE);
    drain(t, &r)
}

/// Documented difference 3: a read that faults partway. mini_pipe consumes and returns the bytes
/// it delivered; a FIFO reports EFAULT and consumes nothing from the buffer whose copy faulted.
fn read_faulting_in_the_middle(t: &mut Trace) -> TestResult {
    let p = Pages::new()?;
    let (r, w) = t.pair()?;
    let _ = t.write(&w, &[b'q'; 3000]);
    // SAFETY: read(2) into a range that runs into an unmapped page: the kernel checks it.
    let n = unsafe { libc::read(r.as_raw_fd(), p.at(PAGE - 1000).cast(), 3000) };
    expect_documented(t, "read(1000 ok + 2000 unmapped)", n, -1, 1000)?;
    drain_documented(t, &r, &[b'q'; 3000], &[b'q'; 2000])
}

fn read_into_bad_destinations(t: &mut Trace) -> TestResult {
    let p = Pages::new()?;
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"precious");
    raw_read(t, &r, "read(read-only page)", p.at(2 * PAGE), 8);
    raw_read(t, &r, "read(unmapped page)", p.at(PAGE), 8);
    raw_read(t, &r, "read(kernel address)", KERNEL_ADDR as *mut u8, 8);
    raw_read(t, &r, "read(NULL)", std::ptr::null_mut(), 8);
    drain(t, &r)
}

/// Documented difference 3, with vectors: readv and writev whose middle segment is NULL.
fn vectors_with_one_bad_segment(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let mut good = [b'g'; 4];
    let iov = |a: *mut u8| libc::iovec {
        iov_base: a.cast(),
        iov_len: 4,
    };
    let segs = [
        iov(good.as_mut_ptr()),
        iov(std::ptr::null_mut()),
        iov(good.as_mut_ptr()),
    ];
    // SAFETY: writev(2) with a NULL segment: the kernel checks it.
    let n = unsafe { libc::writev(w.as_raw_fd(), segs.as_ptr(), 3) };
    expect_documented(t, "writev(4 ok, 4 NULL, 4 ok)", n, -1, 4)?;
    let _ = t.write(&w, b"12345678");
    let (mut a, mut c) = ([0u8; 4], [0u8; 4]);
    let segs = [
        iov(a.as_mut_ptr()),
        iov(std::ptr::null_mut()),
        iov(c.as_mut_ptr()),
    ];
    // SAFETY: readv(2) with a NULL segment: the kernel checks it.
    let n = unsafe { libc::readv(r.as_raw_fd(), segs.as_ptr(), 3) };
    expect_documented(t, "readv(4, NULL, 4)", n, -1, 4)?;
    t.fionread(&r);
    drain_documented(t, &r, b"12345678", b"12345678")
}

fn counts_up_to_ssize_max(t: &mut Trace) -> TestResult {
    let p = Pages::new()?;
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"ten bytes!");
    let mut buf = [0u8; PAGE];
    // A count far beyond the buffer: only what is queued is copied.
    raw_read(
        t,
        &r,
        "read(SSIZE_MAX) of 10 queued",
        buf.as_mut_ptr(),
        isize::MAX as usize,
    );
    t.note(format!("  bytes {}", String::from_utf8_lossy(&buf[..10])));
    // A write of SSIZE_MAX from one mapped page: it moves that page, then faults.
    raw_write(
        t,
        &w,
        "write(SSIZE_MAX) from one page",
        p.at(0),
        isize::MAX as usize,
    );
    t.fionread(&r);
    let _ = t.write(&w, b"");
    t.read(&r, 0);
    Ok(())
}

mod splice_uring;
mod stalls;

/// This file's scenarios, then splice_uring.rs's and stalls.rs's, in the order they run.
fn scenarios() -> impl Iterator<Item = &'static Scenario> {
    SCENARIOS
        .iter()
        .chain(splice_uring::SCENARIOS)
        .chain(stalls::SCENARIOS)
}

static SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "open_rdonly_nonblock_alone",
        run: open_rdonly_nonblock_alone,
    },
    Scenario {
        name: "open_wronly_nonblock_alone",
        run: open_wronly_nonblock_alone,
    },
    Scenario {
        name: "open_wronly_nonblock_with_reader",
        run: open_wronly_nonblock_with_reader,
    },
    Scenario {
        name: "open_rdwr_never_waits",
        run: open_rdwr_never_waits,
    },
    Scenario {
        name: "open_o_direct_refused",
        run: open_o_direct_refused,
    },
    Scenario {
        name: "open_rdwr_nonblock",
        run: open_rdwr_nonblock,
    },
    Scenario {
        name: "open_reader_waits_for_writer",
        run: open_reader_waits_for_writer,
    },
    Scenario {
        name: "open_writer_waits_for_reader",
        run: open_writer_waits_for_reader,
    },
    Scenario {
        name: "open_reader_wait_interrupted",
        run: open_reader_wait_interrupted,
    },
    Scenario {
        name: "open_writer_wait_interrupted",
        run: open_writer_wait_interrupted,
    },
    Scenario {
        name: "open_partner_came_and_went",
        run: open_partner_came_and_went,
    },
    Scenario {
        name: "open_rdwr_wakes_waiting_reader",
        run: open_rdwr_wakes_waiting_reader,
    },
    Scenario {
        name: "read_empty_nonblock_with_writer",
        run: read_empty_nonblock_with_writer,
    },
    Scenario {
        name: "read_up_to_available",
        run: read_up_to_available,
    },
    Scenario {
        name: "read_partial_then_rest",
        run: read_partial_then_rest,
    },
    Scenario {
        name: "read_zero_length",
        run: read_zero_length,
    },
    Scenario {
        name: "read_data_then_eof",
        run: read_data_then_eof,
    },
    Scenario {
        name: "reader_woken_by_write",
        run: reader_woken_by_write,
    },
    Scenario {
        name: "reader_woken_by_last_writer_close",
        run: reader_woken_by_last_writer_close,
    },
    Scenario {
        name: "no_eof_while_a_writer_remains",
        run: no_eof_while_a_writer_remains,
    },
    Scenario {
        name: "read_bad_buffer_keeps_data",
        run: read_bad_buffer_keeps_data,
    },
    Scenario {
        name: "readv_scatters",
        run: readv_scatters,
    },
    Scenario {
        name: "writev_gathers",
        run: writev_gathers,
    },
    Scenario {
        name: "blocked_read_interrupted",
        run: blocked_read_interrupted,
    },
    Scenario {
        name: "blocked_read_restarted",
        run: blocked_read_restarted,
    },
    Scenario {
        name: "write_without_reader_epipe",
        run: write_without_reader_epipe,
    },
    Scenario {
        name: "write_zero_length_without_reader",
        run: write_zero_length_without_reader,
    },
    Scenario {
        name: "write_nonblock_full",
        run: write_nonblock_full,
    },
    Scenario {
        name: "write_nonblock_atomic_needs_room",
        run: write_nonblock_atomic_needs_room,
    },
    Scenario {
        name: "write_nonblock_large_partial",
        run: write_nonblock_large_partial,
    },
    Scenario {
        name: "writer_woken_by_read",
        run: writer_woken_by_read,
    },
    Scenario {
        name: "writer_woken_by_reader_close",
        run: writer_woken_by_reader_close,
    },
    Scenario {
        name: "large_write_cut_short_by_reader_close",
        run: large_write_cut_short_by_reader_close,
    },
    Scenario {
        name: "large_write_cut_short_by_signal",
        run: large_write_cut_short_by_signal,
    },
    Scenario {
        name: "blocked_write_interrupted",
        run: blocked_write_interrupted,
    },
    Scenario {
        name: "write_bad_buffer",
        run: write_bad_buffer,
    },
    Scenario {
        name: "atomic_write_waits_for_room",
        run: atomic_write_waits_for_room,
    },
    Scenario {
        name: "large_write_fills_room_then_waits",
        run: large_write_fills_room_then_waits,
    },
    Scenario {
        name: "poll_reader_and_writer",
        run: poll_reader_and_writer,
    },
    Scenario {
        name: "poll_writer_full_and_threshold",
        run: poll_writer_full_and_threshold,
    },
    Scenario {
        name: "poll_hup_after_last_writer",
        run: poll_hup_after_last_writer,
    },
    Scenario {
        name: "poll_err_after_last_reader",
        run: poll_err_after_last_reader,
    },
    Scenario {
        name: "poll_no_hup_before_first_writer",
        run: poll_no_hup_before_first_writer,
    },
    Scenario {
        name: "poll_rdwr",
        run: poll_rdwr,
    },
    Scenario {
        name: "poll_waits_for_data",
        run: poll_waits_for_data,
    },
    Scenario {
        name: "poll_waits_for_room",
        run: poll_waits_for_room,
    },
    Scenario {
        name: "select_readable_writable",
        run: select_readable_writable,
    },
    Scenario {
        name: "select_waits_for_data",
        run: select_waits_for_data,
    },
    Scenario {
        name: "epoll_level_triggered",
        run: epoll_level_triggered,
    },
    Scenario {
        name: "epoll_edge_triggered_every_write",
        run: epoll_edge_triggered_every_write,
    },
    Scenario {
        name: "epoll_waits_for_data",
        run: epoll_waits_for_data,
    },
    Scenario {
        name: "epoll_writer_and_hangups",
        run: epoll_writer_and_hangups,
    },
    Scenario {
        name: "fionread_counts_bytes",
        run: fionread_counts_bytes,
    },
    Scenario {
        name: "seek_and_positional_io_espipe",
        run: seek_and_positional_io_espipe,
    },
    Scenario {
        name: "unknown_ioctl_and_mmap",
        run: unknown_ioctl_and_mmap,
    },
    Scenario {
        name: "fasync_sigio_for_reader",
        run: fasync_sigio_for_reader,
    },
    Scenario {
        name: "fasync_sigio_for_writer",
        run: fasync_sigio_for_writer,
    },
    Scenario {
        name: "leftovers_discarded_when_all_close",
        run: leftovers_discarded_when_all_close,
    },
    Scenario {
        name: "data_kept_while_a_reader_holds_it",
        run: data_kept_while_a_reader_holds_it,
    },
    Scenario {
        name: "two_readers_share_the_stream",
        run: two_readers_share_the_stream,
    },
    Scenario {
        name: "two_writers_interleave_whole_writes",
        run: two_writers_interleave_whole_writes,
    },
    Scenario {
        name: "write_faulting_in_the_middle",
        run: write_faulting_in_the_middle,
    },
    Scenario {
        name: "write_faulting_at_the_start",
        run: write_faulting_at_the_start,
    },
    Scenario {
        name: "read_faulting_in_the_middle",
        run: read_faulting_in_the_middle,
    },
    Scenario {
        name: "read_into_bad_destinations",
        run: read_into_bad_destinations,
    },
    Scenario {
        name: "vectors_with_one_bad_segment",
        run: vectors_with_one_bad_segment,
    },
    Scenario {
        name: "counts_up_to_ssize_max",
        run: counts_up_to_ssize_max,
    },
    Scenario {
        name: "room_counted_in_pages_vs_bytes",
        run: room_counted_in_pages_vs_bytes,
    },
    Scenario {
        name: "writer_wakes_on_bytes_vs_pages",
        run: writer_wakes_on_bytes_vs_pages,
    },
    Scenario {
        name: "atomic_writes_under_contention",
        run: atomic_writes_under_contention,
    },
];

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

/// Number of scenarios whose traces were identical, for the summary line.
static IDENTICAL: AtomicUsize = AtomicUsize::new(0);

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
    IDENTICAL.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Sets the stage: mini_pipe at its default capacity, and a FIFO beside it.
fn setup() -> TestResult {
    reload(&[])?;
    let _ = std::fs::remove_file(FIFO);
    mkfifo(FIFO, Mode::from_bits_truncate(0o600)).map_err(|e| format!("mkfifo: {e}"))?;
    // A first open of each, to be sure both are there.
    drop(open_file(FIFO, true, true, 0).map_err(|e| e.to_string())?);
    drop(open_file(DEV, true, true, 0).map_err(|e| e.to_string())?);
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
            let n = IDENTICAL.load(Ordering::SeqCst);
            let all = scenarios().count();
            println!("# fifo-equivalence: {n}/{} scenarios identical", all);
            ensure!(n == all, "{} scenario(s) differ", all - n);
            Ok(())
        }),
    ));
    v
}
