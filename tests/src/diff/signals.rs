// SPDX-License-Identifier: GPL-2.0

//! Signals and bad buffers: waits interrupted or restarted by a signal, SIGPIPE, SIGIO from
//! O_ASYNC (fasync), and user buffers that fault, where both sides agree on what moved.

use super::*;
use nix::unistd::getpid;

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
];
