// SPDX-License-Identifier: GPL-2.0

//! Signals and bad buffers: waits interrupted or restarted by a signal, SIGPIPE, SIGIO from
//! O_ASYNC (fasync), and user buffers that fault, where both sides agree on what moved.

use super::*;
use nix::unistd::getpid;
use std::sync::atomic::AtomicI64;

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

/// Asks for SIGIO on `fd` (F_SETOWN to this process, then O_ASYNC).
fn async_io(fd: &OwnedFd) -> TestResult {
    // SAFETY: F_SETOWN takes a pid by value.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, getpid().as_raw()) };
    ensure!(r == 0, "F_SETOWN: {}", Errno::last());
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_ASYNC))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Installs the siginfo logger for SIGIO and the marker `record_sigpoll` waits for.
fn log_sigio() -> TestResult {
    install(
        libc::SIGIO,
        log_sigpoll as *const () as libc::sighandler_t,
        libc::SA_SIGINFO,
    )?;
    install(
        sigpoll_signal() + 1,
        count_marker as *const () as libc::sighandler_t,
        0,
    )
}

/// O_ASYNC on a reader: exactly one SIGIO per write, and none before.
fn fasync_sigio_for_reader(t: &mut Trace) -> TestResult {
    log_sigio()?;
    let (r, w) = t.pair()?;
    async_io(&r)?;
    let names = [(r.as_raw_fd(), "reader"), (w.as_raw_fd(), "writer")];
    record_sigpoll(t, "O_ASYNC set", &names)?;
    let _ = t.write(&w, b"x");
    record_sigpoll(t, "write(1)", &names)?;
    let _ = t.write(&w, b"yz");
    record_sigpoll(t, "write(2) into data", &names)?;
    Ok(())
}

/// O_ASYNC on a writer: exactly one SIGIO per read.
fn fasync_sigio_for_writer(t: &mut Trace) -> TestResult {
    log_sigio()?;
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"abc");
    async_io(&w)?;
    let names = [(r.as_raw_fd(), "reader"), (w.as_raw_fd(), "writer")];
    record_sigpoll(t, "O_ASYNC set", &names)?;
    t.read(&r, 2);
    record_sigpoll(t, "read(2)", &names)?;
    t.read(&r, 1);
    record_sigpoll(t, "read(1)", &names)?;
    Ok(())
}

fn read_bad_buffer_keeps_data(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, b"12345678");
    // SAFETY: read(2) with a NULL buffer: the kernel must fail the copy, not this process.
    let n = unsafe { libc::read(r.as_raw_fd(), std::ptr::null_mut(), 8) };
    raw_result(t, "read(NULL, 8)", n);
    t.fionread(&r);
    t.read_bytes(&r, 8);
    Ok(())
}

fn write_bad_buffer(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    // SAFETY: write(2) from a NULL buffer: the kernel must fail the copy, not this process.
    let n = unsafe { libc::write(w.as_raw_fd(), std::ptr::null(), 8) };
    raw_result(t, "write(NULL, 8)", n);
    t.fionread(&r);
    Ok(())
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

/// `F_SETSIG` from include/uapi/asm-generic/fcntl.h (the libc crate has it for few targets).
const F_SETSIG: libc::c_int = 10;

/// The start of the `siginfo_t` that send_sigio queues (its `_sigpoll` member, x86_64).
#[repr(C)]
struct SigPollInfo {
    signo: i32,
    errno: i32,
    code: i32,
    pad: i32,
    band: i64,
    fd: i32,
}

/// The signals caught by `log_sigpoll`, in order: number, si_code, si_band, si_fd.
static SIGPOLL_LOG: [[AtomicI64; 4]; 32] = [const { [const { AtomicI64::new(0) }; 4] }; 32];
static SIGPOLL_COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many of `SIGPOLL_LOG` `record_sigpoll` has recorded.
static SIGPOLL_RECORDED: AtomicUsize = AtomicUsize::new(0);
/// Markers caught by `count_marker`.
static MARKERS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn log_sigpoll(sig: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: The kernel passes a valid siginfo_t; for a signal queued by send_sigio its start
    // is laid out as `SigPollInfo`.
    let i = unsafe { &*info.cast::<SigPollInfo>() };
    let n = SIGPOLL_COUNT.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = SIGPOLL_LOG.get(n) {
        for (f, v) in slot.iter().zip([sig.into(), i.code.into(), i.band, i.fd.into()]) {
            f.store(v, Ordering::SeqCst);
        }
    }
}

extern "C" fn count_marker(_: i32) {
    MARKERS.fetch_add(1, Ordering::SeqCst);
}

/// Installs `handler` for the signal `sig` (a number: real-time signals have no `Signal`).
fn install(sig: i32, handler: libc::sighandler_t, flags: i32) -> TestResult {
    // SAFETY: A zeroed sigaction is a valid "no flags, empty mask" start; both handlers only
    // touch atomics, which is async-signal-safe.
    let r = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = flags;
        libc::sigaction(sig, &act, std::ptr::null_mut())
    };
    ensure!(r == 0, "sigaction({sig}): {}", Errno::last());
    Ok(())
}

/// The signal the scenario asks `F_SETSIG` for; the one above it is `record_sigpoll`'s marker.
fn sigpoll_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// Records the signals that `what` queued (those since the last call). It sends the process a
/// marker, the real-time signal numbered just above `sigpoll_signal`, and waits for its handler:
/// real-time signals are delivered lowest number first and this process has a single thread, so
/// by then every signal queued before the marker has been handled.
fn record_sigpoll(t: &mut Trace, what: &str, names: &[(i32, &str)]) -> TestResult {
    let before = SIGPOLL_RECORDED.load(Ordering::SeqCst);
    let marks = MARKERS.load(Ordering::SeqCst);
    // SAFETY: kill(2) of this process with a signal whose handler is installed.
    let r = unsafe { libc::kill(getpid().as_raw(), sigpoll_signal() + 1) };
    ensure!(r == 0, "kill: {}", Errno::last());
    crate::util::wait_until("the marker signal", WAIT, || {
        MARKERS.load(Ordering::SeqCst) > marks
    })?;
    let after = SIGPOLL_COUNT.load(Ordering::SeqCst);
    ensure!(after <= SIGPOLL_LOG.len(), "more than {} signals", SIGPOLL_LOG.len());
    SIGPOLL_RECORDED.store(after, Ordering::SeqCst);
    t.note(format!("{what}: {} signal(s)", after - before));
    for slot in &SIGPOLL_LOG[before..after] {
        let [sig, code, band, fd] = [0, 1, 2, 3].map(|i| slot[i].load(Ordering::SeqCst));
        let sig = match sig - i64::from(libc::SIGRTMIN()) {
            k if (0..=32).contains(&k) => format!("SIGRTMIN+{k}"),
            _ => format!("signal {sig}"),
        };
        let code = match code {
            1 => "POLL_IN".to_string(),
            2 => "POLL_OUT".to_string(),
            c => format!("si_code {c}"),
        };
        let fd = names
            .iter()
            .find(|(f, _)| i64::from(*f) == fd)
            .map_or(format!("fd {fd}"), |(_, n)| n.to_string());
        t.note(format!("  {sig} {code} band {band:#x} {fd}"));
    }
    Ok(())
}

/// O_ASYNC with `F_SETSIG`: a real-time signal with siginfo instead of SIGIO, one per event:
/// `POLL_IN` with band `POLLIN|POLLRDNORM` to the reader's owner when data comes (even when a
/// non-blocking write finds no room), `POLL_OUT` with band `POLLOUT|POLLWRNORM|POLLWRBAND` to
/// the writer's owner after a read (even one that finds nothing), `POLL_IN` when the last writer
/// leaves; si_fd says which file.
fn fasync_setsig_siginfo(t: &mut Trace) -> TestResult {
    install(
        sigpoll_signal(),
        log_sigpoll as *const () as libc::sighandler_t,
        libc::SA_SIGINFO,
    )?;
    install(
        sigpoll_signal() + 1,
        count_marker as *const () as libc::sighandler_t,
        0,
    )?;
    let (r, w) = t.pair()?;
    for fd in [&r, &w] {
        // SAFETY: F_SETOWN and F_SETSIG take integers by value.
        let ok = unsafe {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, getpid().as_raw()) == 0
                && libc::fcntl(fd.as_raw_fd(), F_SETSIG, sigpoll_signal()) == 0
        };
        ensure!(ok, "F_SETOWN/F_SETSIG: {}", Errno::last());
        fcntl(fd, FcntlArg::F_SETFL(OFlag::O_ASYNC)).map_err(|e| e.to_string())?;
    }
    let names = [(r.as_raw_fd(), "reader"), (w.as_raw_fd(), "writer")];
    record_sigpoll(t, "O_ASYNC set", &names)?;
    let _ = t.write(&w, b"abc");
    record_sigpoll(t, "write(3)", &names)?;
    let _ = t.write(&w, b"de");
    record_sigpoll(t, "write(2) into data", &names)?;
    t.read(&r, 5);
    record_sigpoll(t, "read(5)", &names)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_ASYNC | OFlag::O_NONBLOCK)).map_err(|e| e.to_string())?;
    t.read(&r, 5);
    record_sigpoll(t, "read(5), empty, non-blocking", &names)?;
    fcntl(&w, FcntlArg::F_SETFL(OFlag::O_ASYNC | OFlag::O_NONBLOCK)).map_err(|e| e.to_string())?;
    let _ = t.write_n(&w, CAPACITY);
    record_sigpoll(t, "write(65536) into the empty object", &names)?;
    let _ = t.write_n(&w, 10);
    record_sigpoll(t, "write(10), full, non-blocking", &names)?;
    drop(w);
    record_sigpoll(t, "the writer closes", &names)?;
    Ok(())
}

/// `RWF_NOSIGNAL`: pwritev2 with it, on a writer whose reader is gone, fails with EPIPE and
/// raises no SIGPIPE, both when the reader was gone before the call and when it leaves while
/// the writer waits for room; without it (and with plain write) SIGPIPE comes as usual.
fn rwf_nosignal_epipe_without_sigpipe(t: &mut Trace) -> TestResult {
    catch(Signal::SIGPIPE, false)?;
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let w = std::sync::Arc::new(w);
    let w2 = w.clone();
    let b = bg(move || show(pwritev2(&w2, &[b'n'; 10], -1, RWF_NOSIGNAL)));
    b.blocked_in(t, &[libc::SYS_pwritev2 as u32])?;
    drop(r);
    b.done(t, "blocked pwritev2(10, RWF_NOSIGNAL), the reader leaves")?;
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    t.rec(
        "pwritev2(1, RWF_NOSIGNAL)",
        &pwritev2(&w, b"x", -1, RWF_NOSIGNAL),
    );
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    t.rec("pwritev2(1, 0)", &pwritev2(&w, b"x", -1, 0));
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    let _ = t.write(&w, b"x");
    t.note(format!("SIGPIPE {} time(s)", caught(Signal::SIGPIPE)));
    Ok(())
}

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "read_bad_buffer_keeps_data",
        run: read_bad_buffer_keeps_data,
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
        name: "fasync_sigio_for_reader",
        run: fasync_sigio_for_reader,
    },
    Scenario {
        name: "fasync_sigio_for_writer",
        run: fasync_sigio_for_writer,
    },
    Scenario {
        name: "write_faulting_at_the_start",
        run: write_faulting_at_the_start,
    },
    Scenario {
        name: "read_into_bad_destinations",
        run: read_into_bad_destinations,
    },
    Scenario {
        name: "counts_up_to_ssize_max",
        run: counts_up_to_ssize_max,
    },
    Scenario {
        name: "fasync_setsig_siginfo",
        run: fasync_setsig_siginfo,
    },
    Scenario {
        name: "rwf_nosignal_epipe_without_sigpipe",
        run: rwf_nosignal_epipe_without_sigpipe,
    },
];
