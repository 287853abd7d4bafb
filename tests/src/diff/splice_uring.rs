// SPDX-License-Identifier: GPL-2.0

//! Zero-copy and asynchronous interfaces: sendfile(2), splice(2) to and from a real pipe(2),
//! vmsplice(2) and tee(2), and io_uring (READ, WRITE, READV, WRITEV, POLL_ADD, a ring torn
//! down with a read still waiting). A call that must answer without waiting runs on a thread
//! of its own: if it sleeps inside its system call instead, it is recorded as `stuck` and then
//! released, so that a wrong wait shows in the trace rather than hanging the run.

use super::*;
use io_uring::{opcode, squeue, types, IoUring};
use nix::{
    fcntl::{splice, tee, SpliceFFlags},
    sys::sendfile::sendfile,
    unistd::pipe,
};
use std::{io::IoSlice, time::Instant};

/// How long an io_uring request that must wait is watched to see that it does (a request has
/// no thread whose sleep could be seen).
const SETTLE: Duration = Duration::from_millis(500);
/// x86_64 system call numbers of splice(2) and sendfile(2), for /proc/PID/syscall.
const SYS_SPLICE: u32 = libc::SYS_splice as u32;
const SYS_SENDFILE: u32 = libc::SYS_sendfile as u32;
/// A regular file in /tmp that sendfile(2) reads from.
const SOURCE: &str = "/tmp/mini_pipe_sendfile_source";

/// A real pipe(2): (read end, write end).
fn real_pipe() -> Result<(OwnedFd, OwnedFd), String> {
    pipe().map_err(|e| format!("pipe: {e}"))
}

pub(super) fn dup(fd: &OwnedFd) -> Result<OwnedFd, String> {
    fd.try_clone().map_err(|e| format!("dup: {e}"))
}

/// Records what the real pipe `pr` holds, read without waiting.
fn pipe_holds(t: &mut Trace, pr: &OwnedFd) -> TestResult {
    t.nonblock(pr, true)?;
    let mut buf = [0u8; 256];
    let got = read(pr, &mut buf);
    t.nonblock(pr, false)?;
    let s = got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    t.note(format!("  real pipe holds {}", show(s)));
    Ok(())
}

/// Reads and records up to `n` bytes of the object without waiting.
fn read_now(t: &mut Trace, r: &OwnedFd, n: usize) -> TestResult {
    t.nonblock(r, true)?;
    t.read_bytes(r, n);
    t.nonblock(r, false)
}

/// Whether thread `tid` sleeps, interruptibly or not (a mutex), inside one of the system calls
/// `nrs`.
fn asleep_in(tid: u32, nrs: &[u32]) -> bool {
    let state = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()));
    let nr = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()));
    matches!(state, Some('S' | 'D')) && nr.is_some_and(|nr| nrs.contains(&nr))
}

/// Waits until the thread `b` has returned (Some(result)) or sleeps inside one of the system
/// calls `nrs` (None), bounded by `WAIT`. For a call that must answer without sleeping, None
/// means stuck; nothing is timed.
pub(super) fn returned_or_asleep(b: &Bg, nrs: &[u32]) -> Result<Option<String>, String> {
    let start = Instant::now();
    loop {
        if let Ok(r) = b.rx.try_recv() {
            return Ok(Some(r));
        }
        if asleep_in(b.tid, nrs) {
            return Ok(None);
        }
        ensure!(
            start.elapsed() < WAIT,
            "a call neither returned nor slept within {WAIT:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `f`, which makes one of the system calls `nrs`, on a thread, and records `what =
/// result` once it returns, or `what = stuck` if it sleeps inside that call; a stuck call's
/// thread is returned, for the scenario to release it.
pub(super) fn at_once(
    t: &mut Trace,
    what: &str,
    nrs: &[u32],
    f: impl FnOnce() -> String + Send + 'static,
) -> Result<Option<Bg>, String> {
    let b = bg(f);
    Ok(match returned_or_asleep(&b, nrs)? {
        Some(r) => {
            t.note(format!("{what} = {r}"));
            None
        }
        None => {
            t.note(format!("{what} = stuck"));
            Some(b)
        }
    })
}

fn splice_flags(nonblock: bool) -> SpliceFFlags {
    if nonblock {
        SpliceFFlags::SPLICE_F_NONBLOCK
    } else {
        SpliceFFlags::empty()
    }
}

/// splice(2) of up to `len` bytes from `from` to `to`, on a thread: its result, or `stuck`.
fn bounded_splice(
    t: &mut Trace,
    what: &str,
    from: &OwnedFd,
    to: &OwnedFd,
    len: usize,
    nonblock: bool,
) -> Result<Option<Bg>, String> {
    let (from, to) = (dup(from)?, dup(to)?);
    at_once(t, what, &[SYS_SPLICE], move || {
        show(splice(&from, None, &to, None, len, splice_flags(nonblock)))
    })
}

/// sendfile(object <- a regular file of 5 bytes), the bytes read back; splice(object -> a real
/// pipe) of 3 bytes; splice(real pipe -> object) of 2 bytes: each moves exactly its bytes.
fn sendfile_and_splice_move_bytes(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    std::fs::write(SOURCE, b"hello").map_err(|e| format!("{SOURCE}: {e}"))?;
    let src: OwnedFd = std::fs::File::open(SOURCE)
        .map_err(|e| format!("{SOURCE}: {e}"))?
        .into();
    let w2 = dup(&w)?;
    if let Some(b) = at_once(t, "sendfile(object <- file, 5)", &[SYS_SENDFILE], move || {
        show(sendfile(&w2, &src, None, 5))
    })? {
        b.done(t, "sendfile (late)")?;
    }
    t.fionread(&r);
    read_now(t, &r, 16)?;
    let _ = t.write(&w, b"abcde");
    let (pr, pw) = real_pipe()?;
    if let Some(b) = bounded_splice(t, "splice(object -> pipe, 3)", &r, &pw, 3, false)? {
        b.done(t, "splice (late)")?;
    }
    pipe_holds(t, &pr)?;
    t.rec("write(real pipe, xy)", &write(&pw, b"xy"));
    if let Some(b) = bounded_splice(t, "splice(pipe -> object, 2)", &pr, &w, 2, false)? {
        b.done(t, "splice (late)")?;
    }
    t.fionread(&r);
    read_now(t, &r, 16)?;
    Ok(())
}

/// SPLICE_F_NONBLOCK from an empty object (a writer present) into a real pipe: EAGAIN at once.
fn splice_nonblock_from_empty(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let (pr, pw) = real_pipe()?;
    if let Some(b) = bounded_splice(
        t,
        "splice(empty object -> pipe, NONBLOCK)",
        &r,
        &pw,
        8,
        true,
    )? {
        // Release it: the bytes it then takes show where it waited.
        let _ = t.write(&w, b"unstick");
        b.done(t, "splice (late)")?;
    }
    pipe_holds(t, &pr)?;
    t.fionread(&r);
    Ok(())
}

/// SPLICE_F_NONBLOCK from a real pipe into a full object: EAGAIN at once, the pipe untouched.
fn splice_nonblock_into_full(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let (pr, pw) = real_pipe()?;
    t.rec("write(real pipe, ab)", &write(&pw, b"ab"));
    if let Some(b) = bounded_splice(t, "splice(pipe -> full object, NONBLOCK)", &pr, &w, 2, true)? {
        t.read(&r, 4096);
        b.done(t, "splice (late)")?;
    }
    pipe_holds(t, &pr)?;
    t.fionread(&r);
    Ok(())
}

/// A blocking splice from an empty object sleeps in splice(2) and wakes on a write from
/// another descriptor, taking what was written.
fn splice_waits_for_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let (pr, pw) = real_pipe()?;
    let b = bg(move || show(splice(&r, None, &pw, None, 64, SpliceFFlags::empty())));
    b.blocked_in(t, &[SYS_SPLICE])?;
    let _ = t.write(&w, b"wake");
    b.done(t, "blocked splice")?;
    pipe_holds(t, &pr)
}

/// splice and sendfile into an object with no reader: EPIPE and a SIGPIPE each, and nothing
/// taken from the source.
fn splice_without_reader_epipe(t: &mut Trace) -> TestResult {
    catch(Signal::SIGPIPE, false)?;
    let (r, w) = t.pair()?;
    drop(r);
    let (pr, pw) = real_pipe()?;
    t.rec("write(real pipe, xy)", &write(&pw, b"xy"));
    if let Some(b) = bounded_splice(t, "splice(pipe -> object, no reader)", &pr, &w, 2, false)? {
        b.done(t, "splice (late)")?;
    }
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    pipe_holds(t, &pr)?;
    std::fs::write(SOURCE, b"hello").map_err(|e| format!("{SOURCE}: {e}"))?;
    let src: OwnedFd = std::fs::File::open(SOURCE)
        .map_err(|e| format!("{SOURCE}: {e}"))?
        .into();
    let w2 = dup(&w)?;
    if let Some(b) = at_once(t, "sendfile(object <- file, no reader)", &[SYS_SENDFILE], move || {
        show(sendfile(&w2, &src, None, 5))
    })? {
        b.done(t, "sendfile (late)")?;
    }
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    Ok(())
}

/// splice from an object with no writer left: its data, then 0 (end-of-file), blocking or not.
fn splice_at_end_of_file(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"last");
    drop(w);
    let (pr, pw) = real_pipe()?;
    for (what, nonblock) in [
        ("splice(object -> pipe)", false),
        ("splice(object at end-of-file -> pipe)", false),
        ("splice(object at end-of-file -> pipe, NONBLOCK)", true),
    ] {
        if let Some(b) = bounded_splice(t, what, &r, &pw, 64, nonblock)? {
            // Nothing can release a read that waits with no writer: fail rather than leak it.
            drop(b);
            return Err(format!("{what} waits at end-of-file"));
        }
    }
    pipe_holds(t, &pr)
}

/// The framing of the contention scenario's messages: writer id, sequence number, length.
const FRAME_HEADER: usize = 7;

/// Message `seq` of writer `id`: from 7 to 4096 bytes, so that every one is one atomic call.
fn frame(id: u8, seq: u32) -> Vec<u8> {
    let len = ((seq as usize) * 613 + (id as usize) * 97) % (PIPE_BUF - FRAME_HEADER + 1);
    let mut m = Vec::with_capacity(FRAME_HEADER + len);
    m.push(id);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u16).to_le_bytes());
    m.extend((0..len).map(|i| (i as u32 ^ seq ^ u32::from(id).wrapping_mul(0x9e)) as u8));
    m
}

/// How many messages of writers 1 and 2 arrived whole and in order; parsing stops at the
/// first that did not.
fn frames_intact(stream: &[u8]) -> u32 {
    let mut next = [0u32; 3];
    let (mut ok, mut pos) = (0, 0);
    while let Some(h) = stream.get(pos..pos + FRAME_HEADER) {
        let id = usize::from(h[0]);
        if !(1..=2).contains(&id) {
            break;
        }
        let m = frame(h[0], next[id]);
        if stream.get(pos..pos + m.len()) != Some(&m[..]) {
            break;
        }
        next[id] += 1;
        pos += m.len();
        ok += 1;
    }
    ok
}

const PIPE_BUF: usize = 4096;
const FRAMES: u32 = 200;

/// Messages of at most PIPE_BUF bytes spliced into the object from a real pipe, one splice
/// each, while another thread write(2)s its own messages: every message arrives whole.
fn splices_stay_whole_under_contention(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let w2 = t.open(OFlag::O_WRONLY)?;
    let reader = bg(move || {
        let mut stream = Vec::new();
        let mut buf = vec![0u8; CAPACITY];
        loop {
            match read(&r, &mut buf) {
                Ok(0) => break,
                Ok(n) => stream.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(e) => return format!("read: {e}"),
            }
        }
        let ok = frames_intact(&stream);
        format!("{ok} messages intact of {} bytes", stream.len())
    });
    let writer = bg(move || {
        for seq in 0..FRAMES {
            let m = frame(1, seq);
            match write(&w2, &m) {
                Ok(n) if n == m.len() => {}
                other => return format!("message {seq}: write of {} = {other:?}", m.len()),
            }
        }
        "all written".into()
    });
    let (pr, pw) = real_pipe()?;
    let mut spliced = format!("all {FRAMES} spliced whole");
    for seq in 0..FRAMES {
        let m = frame(2, seq);
        ensure!(
            write(&pw, &m) == Ok(m.len()),
            "message {seq} did not go into the real pipe whole"
        );
        let n = splice(&pr, None, &w, None, m.len(), SpliceFFlags::empty());
        if n != Ok(m.len()) {
            spliced = format!("message {seq}: splice of {} = {}", m.len(), show(n));
            break;
        }
    }
    t.note(format!("splicer: {spliced}"));
    drop(w);
    writer.done(t, "writer")?;
    reader.done(t, "reader")
}

/// Checks a documented difference: `got` must be `on_fifo` on a FIFO and `on_mini` on
/// mini_pipe; records only that it was.
fn check_documented(
    t: &mut Trace,
    what: &str,
    got: Result<usize, Errno>,
    on_fifo: Result<usize, Errno>,
    on_mini: Result<usize, Errno>,
) -> TestResult {
    let want = if t.target == Target::Fifo {
        on_fifo
    } else {
        on_mini
    };
    ensure!(got == want, "{what} = {got:?}, documented: {want:?}");
    t.note(format!("{what}: {DOCUMENTED_MARK}"));
    Ok(())
}

/// Documented difference: vmsplice(2) and tee(2) need a pipe on both ends, and a char device
/// is not a pipe. On a FIFO (a pipe) both work: vmsplice moves 3 bytes in and 7 out, tee
/// duplicates 2 bytes each way. On mini_pipe vmsplice fails with EBADF (writer and reader) and
/// tee with EINVAL (either direction), and nothing moves.
fn vmsplice_and_tee_need_a_pipe(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let (pr, pw) = real_pipe()?;
    ensure!(write(&w, b"data") == Ok(4), "write of 4 bytes failed");
    let fifo = t.target == Target::Fifo;
    let iov = [IoSlice::new(b"abc")];
    check_documented(
        t,
        "vmsplice(writer, 3 bytes)",
        nix::fcntl::vmsplice(&w, &iov, SpliceFFlags::empty()),
        Ok(3),
        Err(Errno::EBADF),
    )?;
    let mut buf = [0u8; 8];
    let dst = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: vmsplice(2) on a reader copies into `buf` through the one iovec, which is valid
    // and writable for its length; nix's wrapper takes only read-only slices.
    let n = unsafe { libc::vmsplice(r.as_raw_fd(), &dst, 1, 0) };
    let got = if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    };
    check_documented(t, "vmsplice(reader, 8 bytes)", got, Ok(7), Err(Errno::EBADF))?;
    let k = got.unwrap_or(0);
    ensure!(
        &buf[..k] == if fifo { &b"dataabc"[..] } else { b"" },
        "vmsplice read {:?}",
        String::from_utf8_lossy(&buf[..k])
    );
    ensure!(
        write(&pw, b"xy") == Ok(2),
        "write into the real pipe failed"
    );
    check_documented(
        t,
        "tee(real pipe -> object, 16)",
        tee(&pr, &w, 16, SpliceFFlags::SPLICE_F_NONBLOCK),
        Ok(2),
        Err(Errno::EINVAL),
    )?;
    check_documented(
        t,
        "tee(object -> real pipe, 16)",
        tee(&r, &pw, 16, SpliceFFlags::SPLICE_F_NONBLOCK),
        Ok(2),
        Err(Errno::EINVAL),
    )?;
    // tee copies without consuming: the object keeps "xy" (FIFO) or its "data" (mini_pipe),
    // the real pipe holds "xy" twice (FIFO) or once (mini_pipe).
    t.nonblock(&r, true)?;
    t.nonblock(&pr, true)?;
    let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
    let (na, nb) = (
        read(&r, &mut a).unwrap_or(0),
        read(&pr, &mut b).unwrap_or(0),
    );
    let (want_obj, want_pipe): (&[u8], &[u8]) = if fifo {
        (b"xy", b"xyxy")
    } else {
        (b"data", b"xy")
    };
    ensure!(
        a[..na] == *want_obj && b[..nb] == *want_pipe,
        "the object holds {:?} and the real pipe {:?}, documented: {:?} and {:?}",
        String::from_utf8_lossy(&a[..na]),
        String::from_utf8_lossy(&b[..nb]),
        String::from_utf8_lossy(want_obj),
        String::from_utf8_lossy(want_pipe)
    );
    t.note(format!("what the object and the real pipe hold: {DOCUMENTED_MARK}"));
    Ok(())
}

/// A regular file in /tmp that splice(2) and sendfile(2) write to and read from.
const FILE: &str = "/tmp/mini_pipe_splice_file";

/// Documented difference: splice(2) needs a pipe on one end. A FIFO is a pipe: splice between
/// it and a regular file works both ways (3 bytes each). mini_pipe is not: splice between it
/// and a regular file fails with EINVAL both ways, and nothing moves. sendfile(file <- object)
/// fails with EINVAL on both (do_splice_direct wants a seekable source).
fn splice_and_sendfile_with_a_regular_file(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    ensure!(write(&w, b"abcdef") == Ok(6), "write of 6 bytes failed");
    let file: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(FILE)
        .map_err(|e| format!("{FILE}: {e}"))?
        .into();
    let fifo = t.target == Target::Fifo;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK;
    check_documented(
        t,
        "splice(object -> file, 3)",
        splice(&r, None, &file, None, 3, flags),
        Ok(3),
        Err(Errno::EINVAL),
    )?;
    let (rr, ff) = (dup(&r)?, dup(&file)?);
    if let Some(b) = at_once(t, "sendfile(file <- object, 3)", &[SYS_SENDFILE], move || {
        show(sendfile(&ff, &rr, None, 3))
    })? {
        drop(b);
        return Err("sendfile(file <- object) waits".into());
    }
    std::fs::write(SOURCE, b"XYZ").map_err(|e| format!("{SOURCE}: {e}"))?;
    let src: OwnedFd = std::fs::File::open(SOURCE)
        .map_err(|e| format!("{SOURCE}: {e}"))?
        .into();
    check_documented(
        t,
        "splice(file -> object, 3)",
        splice(&src, None, &w, None, 3, flags),
        Ok(3),
        Err(Errno::EINVAL),
    )?;
    let in_file = std::fs::read(FILE).map_err(|e| format!("{FILE}: {e}"))?;
    t.nonblock(&r, true)?;
    let mut buf = [0u8; 16];
    let n = read(&r, &mut buf).unwrap_or(0);
    let (want_file, want_obj): (&[u8], &[u8]) = if fifo {
        (b"abc", b"defXYZ")
    } else {
        (b"", b"abcdef")
    };
    ensure!(
        in_file == want_file && buf[..n] == *want_obj,
        "the file holds {:?} and the object {:?}, documented: {:?} and {:?}",
        String::from_utf8_lossy(&in_file),
        String::from_utf8_lossy(&buf[..n]),
        String::from_utf8_lossy(want_file),
        String::from_utf8_lossy(want_obj)
    );
    t.note(format!("what the file and the object hold: {DOCUMENTED_MARK}"));
    Ok(())
}

// io_uring. A ring of 8 entries per scenario; each CQE is recorded as `cqe NAME = result`, the
// result a byte count, a poll mask, or -ERRNO.

fn ring() -> Result<IoUring, String> {
    IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))
}

/// Queues `sqe` tagged with `tag` and submits it.
fn submit(ring: &mut IoUring, sqe: squeue::Entry, tag: u64) -> TestResult {
    // SAFETY: Every buffer an entry points at outlives the request: the scenarios keep them
    // until its completion is reaped, or until the ring is gone.
    unsafe { ring.submission().push(&sqe.user_data(tag)) }.map_err(|e| e.to_string())?;
    ring.submit()
        .map(|_| ())
        .map_err(|e| format!("io_uring_enter: {e}"))
}

/// The next completion (tag, result) within `timeout`, or None.
fn reap(ring: &mut IoUring, timeout: Duration) -> Result<Option<(u64, i32)>, String> {
    let start = Instant::now();
    loop {
        if let Some(cqe) = ring.completion().next() {
            return Ok(Some((cqe.user_data(), cqe.result())));
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        let ts = types::Timespec::from(left);
        let args = types::SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
    }
}

/// A completion's result as a trace shows it: a count, or -ERRNO.
fn cqe_result(res: i32) -> String {
    if res < 0 {
        format!("-{}", errno_name(Errno::from_raw(-res)))
    } else {
        res.to_string()
    }
}

fn poll_result(res: i32) -> String {
    if res < 0 {
        cqe_result(res)
    } else {
        format!("{:?}", PollFlags::from_bits_truncate(res as i16))
    }
}

/// Reaps the completion of the request tagged `tag`, named `what`, and records its result.
fn expect_cqe(t: &mut Trace, ring: &mut IoUring, what: &str, tag: u64) -> Result<i32, String> {
    match reap(ring, WAIT)? {
        Some((got, res)) if got == tag => {
            let shown = if what.starts_with("POLL") {
                poll_result(res)
            } else {
                cqe_result(res)
            };
            t.note(format!("cqe {what} = {shown}"));
            Ok(res)
        }
        Some((got, res)) => Err(format!(
            "{what}: completion of request {got} ({res}) instead"
        )),
        None => Err(format!("{what}: no completion within {WAIT:?}")),
    }
}

/// Records whether the request named `what` is still pending after `SETTLE`.
fn expect_pending(t: &mut Trace, ring: &mut IoUring, what: &str) -> TestResult {
    match reap(ring, SETTLE)? {
        None => t.note(format!("{what} pending after {SETTLE:?}")),
        Some((_, res)) => t.note(format!("{what} did not wait: {}", cqe_result(res))),
    }
    Ok(())
}

/// Records how many io-wq worker threads (iou-wrk-*) this process has: none while every
/// request waits by polling, as on a FIFO (FMODE_NOWAIT); one per request that io_uring had
/// to punt to a worker that blocks in the call instead.
fn io_wq_workers(t: &mut Trace) -> TestResult {
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())?;
    let n = tasks
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with("iou-wrk"))
        })
        .count();
    t.note(format!("io-wq workers: {n}"));
    Ok(())
}

fn fd(f: &OwnedFd) -> types::Fd {
    types::Fd(f.as_raw_fd())
}

/// The file position: -1, as read(2) and write(2) use on a stream.
const AT_POS: u64 = u64::MAX;

/// An iovec the kernel only reads from.
fn iovec(buf: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }
}

/// An iovec the kernel writes into.
fn iovec_mut(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

/// io_uring READ, WRITE, READV, WRITEV and POLL_ADD (POLLIN, POLLOUT) when they need not wait.
fn uring_with_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let mut ring = ring()?;
    let hello = *b"hello";
    let sqe = opcode::Write::new(fd(&w), hello.as_ptr(), 5).offset(AT_POS);
    submit(&mut ring, sqe.build(), 1)?;
    expect_cqe(t, &mut ring, "WRITE(5)", 1)?;
    let mut buf = [0u8; 16];
    let sqe = opcode::Read::new(fd(&r), buf.as_mut_ptr(), 16).offset(AT_POS);
    submit(&mut ring, sqe.build(), 2)?;
    let n = expect_cqe(t, &mut ring, "READ(16)", 2)?;
    t.note(format!(
        "  bytes {}",
        String::from_utf8_lossy(&buf[..n.max(0) as usize])
    ));
    let (a, b, c) = (*b"ab", *b"", *b"cde");
    let out = [iovec(&a), iovec(&b), iovec(&c)];
    let sqe = opcode::Writev::new(fd(&w), out.as_ptr(), 3).offset(AT_POS);
    submit(&mut ring, sqe.build(), 3)?;
    expect_cqe(t, &mut ring, "WRITEV(2,0,3)", 3)?;
    let (mut x, mut y) = ([0u8; 2], [0u8; 10]);
    let ins = [iovec_mut(&mut x), iovec_mut(&mut y)];
    let sqe = opcode::Readv::new(fd(&r), ins.as_ptr(), 2).offset(AT_POS);
    submit(&mut ring, sqe.build(), 4)?;
    let n = expect_cqe(t, &mut ring, "READV(2,10)", 4)?;
    let n2 = (n.max(0) as usize).saturating_sub(2).min(10);
    t.note(format!(
        "  segments {} {}",
        String::from_utf8_lossy(&x),
        String::from_utf8_lossy(&y[..n2])
    ));
    let _ = t.write(&w, b"z");
    let sqe = opcode::PollAdd::new(fd(&r), libc::POLLIN as u32);
    submit(&mut ring, sqe.build(), 5)?;
    expect_cqe(t, &mut ring, "POLL_ADD(reader, POLLIN)", 5)?;
    let sqe = opcode::PollAdd::new(fd(&w), libc::POLLOUT as u32);
    submit(&mut ring, sqe.build(), 6)?;
    expect_cqe(t, &mut ring, "POLL_ADD(writer, POLLOUT)", 6)?;
    t.fionread(&r);
    Ok(())
}

/// An io_uring READ on an empty object waits (no completion for a while) by polling, with no
/// io-wq worker blocked in it, then completes with the bytes of a write made through another
/// descriptor.
fn uring_read_waits_for_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let mut ring = ring()?;
    let mut buf = [0u8; 64];
    let sqe = opcode::Read::new(fd(&r), buf.as_mut_ptr(), 64).offset(AT_POS);
    submit(&mut ring, sqe.build(), 1)?;
    expect_pending(t, &mut ring, "READ(64)")?;
    io_wq_workers(t)?;
    let _ = t.write(&w, b"late");
    let n = expect_cqe(t, &mut ring, "READ(64)", 1)?;
    t.note(format!(
        "  bytes {}",
        String::from_utf8_lossy(&buf[..n.max(0) as usize])
    ));
    t.fionread(&r);
    Ok(())
}

/// An io_uring WRITE into a full object waits by polling, with no io-wq worker blocked in it,
/// then completes whole once a page is read.
fn uring_write_waits_for_room(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let mut ring = ring()?;
    let data = [b'u'; 100];
    let sqe = opcode::Write::new(fd(&w), data.as_ptr(), 100).offset(AT_POS);
    submit(&mut ring, sqe.build(), 1)?;
    expect_pending(t, &mut ring, "WRITE(100)")?;
    io_wq_workers(t)?;
    t.read(&r, 4096);
    expect_cqe(t, &mut ring, "WRITE(100)", 1)?;
    t.fionread(&r);
    Ok(())
}

/// io_uring POLL_ADD waits: POLLIN on an empty object completes on a write, POLLOUT on a full
/// one completes when a page is read.
fn uring_poll_add_waits(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let mut ring = ring()?;
    let sqe = opcode::PollAdd::new(fd(&r), libc::POLLIN as u32);
    submit(&mut ring, sqe.build(), 1)?;
    expect_pending(t, &mut ring, "POLL_ADD(reader, POLLIN)")?;
    let _ = t.write(&w, b"p");
    expect_cqe(t, &mut ring, "POLL_ADD(reader, POLLIN)", 1)?;
    t.read(&r, 1);
    fill(t, &w, CAPACITY)?;
    let sqe = opcode::PollAdd::new(fd(&w), libc::POLLOUT as u32);
    submit(&mut ring, sqe.build(), 2)?;
    expect_pending(t, &mut ring, "POLL_ADD(writer, POLLOUT)")?;
    t.read(&r, 4096);
    expect_cqe(t, &mut ring, "POLL_ADD(writer, POLLOUT)", 2)?;
    Ok(())
}

/// A ring dropped with a READ still waiting: the teardown cancels the read and releases the
/// object (its reader goes away: a non-blocking writer's open then finds none), and the object
/// then works as before, with nothing lost to the cancelled read.
fn uring_teardown_with_read_waiting(t: &mut Trace) -> TestResult {
    // The ring's reader is the only one, so that its release shows.
    let r = t.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let w = t.open(OFlag::O_WRONLY)?;
    t.nonblock(&r, false)?;
    let mut ring = ring()?;
    // Leaked: the kernel may still hold the address until the teardown has run.
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 64].into_boxed_slice());
    let sqe = opcode::Read::new(fd(&r), buf.as_mut_ptr(), 64).offset(AT_POS);
    submit(&mut ring, sqe.build(), 1)?;
    expect_pending(t, &mut ring, "READ(64)")?;
    io_wq_workers(t)?;
    drop(r);
    // The waiting read still holds the reader.
    drop(t.open(OFlag::O_WRONLY | OFlag::O_NONBLOCK)?);
    drop(ring);
    let path = t.path();
    let released = crate::util::wait_until("the torn-down ring releases the reader", WAIT, || {
        matches!(
            open_raw(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK),
            Err(Errno::ENXIO)
        )
    });
    t.note(format!(
        "reader released by the teardown: {}",
        released.is_ok()
    ));
    let r = t.open(OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let _ = t.write(&w, b"after");
    t.fionread(&r);
    t.read_bytes(&r, 64);
    Ok(())
}

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sendfile_and_splice_move_bytes",
        run: sendfile_and_splice_move_bytes,
    },
    Scenario {
        name: "splice_nonblock_from_empty",
        run: splice_nonblock_from_empty,
    },
    Scenario {
        name: "splice_nonblock_into_full",
        run: splice_nonblock_into_full,
    },
    Scenario {
        name: "splice_waits_for_data",
        run: splice_waits_for_data,
    },
    Scenario {
        name: "splice_without_reader_epipe",
        run: splice_without_reader_epipe,
    },
    Scenario {
        name: "splice_at_end_of_file",
        run: splice_at_end_of_file,
    },
    Scenario {
        name: "splices_stay_whole_under_contention",
        run: splices_stay_whole_under_contention,
    },
    Scenario {
        name: "vmsplice_and_tee_need_a_pipe",
        run: vmsplice_and_tee_need_a_pipe,
    },
    Scenario {
        name: "splice_and_sendfile_with_a_regular_file",
        run: splice_and_sendfile_with_a_regular_file,
    },
    Scenario {
        name: "uring_with_data",
        run: uring_with_data,
    },
    Scenario {
        name: "uring_read_waits_for_data",
        run: uring_read_waits_for_data,
    },
    Scenario {
        name: "uring_write_waits_for_room",
        run: uring_write_waits_for_room,
    },
    Scenario {
        name: "uring_poll_add_waits",
        run: uring_poll_add_waits,
    },
    Scenario {
        name: "uring_teardown_with_read_waiting",
        run: uring_teardown_with_read_waiting,
    },
];
