// SPDX-License-Identifier: GPL-2.0

//! The documented differences (DIFF.md): scenarios that pin a different behaviour on each
//! side. Each asserts the exact documented behaviour of the side it runs on, and records only that
//! it did, so the two traces are the same while both behave as documented.

use super::*;
use nix::{
    sys::stat::{fstat, major, minor},
    time::{clock_gettime, ClockId},
};

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
    let woke = b.settled(&[SYS_WRITE])?.is_some();
    let want = t.target == Target::Mini;
    ensure!(
        woke == want,
        "writer woke after 100 bytes read: {woke}, DIFF.md says {want}"
    );
    t.note("writer after 100 bytes read: as DIFF.md documents");
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

/// Picks the behaviour documented for the side the scenario runs on.
fn per_side<T>(t: &Trace, fifo: T, mini: T) -> T {
    match t.target {
        Target::Fifo => fifo,
        Target::Mini => mini,
    }
}

/// Documented difference: a character device is not a FIFO. fstat's `st_mode` says `S_IFIFO`
/// for the FIFO, and `S_IFCHR` for /dev/mini_pipe2, whose `st_rdev` is minor 2 of the major
/// /proc/devices gives mini_pipe.
fn char_device_is_not_a_fifo(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    let st = fstat(&f).map_err(|e| format!("fstat: {e}"))?;
    let kind = st.st_mode & libc::S_IFMT;
    let want = per_side(t, libc::S_IFIFO, libc::S_IFCHR);
    ensure!(
        kind == want,
        "st_mode {:#o}: file type {kind:#o}, not the documented {want:#o}",
        st.st_mode
    );
    if t.target == Target::Mini {
        let ours = crate::util::chrdev_major();
        ensure!(
            Some(major(st.st_rdev)) == ours && minor(st.st_rdev) == 2,
            "st_rdev {:#x}: not minor 2 of mini_pipe's major ({ours:?} in /proc/devices)",
            st.st_rdev
        );
    }
    t.note("fstat file type: as DIFF.md documents");
    Ok(())
}

/// Documented difference: `F_GETPIPE_SZ` and `F_SETPIPE_SZ` work on the FIFO (65536 as sized,
/// then 131072) and fail with EBADF on mini_pipe, since fcntl only knows real pipes
/// (pipe_fcntl: `get_pipe_info` finds no pipe).
fn pipe_size_fcntls_only_on_a_fifo(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    let got = [
        fcntl(&f, FcntlArg::F_GETPIPE_SZ),
        fcntl(&f, FcntlArg::F_SETPIPE_SZ(131072)),
        fcntl(&f, FcntlArg::F_GETPIPE_SZ),
    ];
    let want = per_side(
        t,
        [Ok(65536), Ok(131072), Ok(131072)],
        [Err(Errno::EBADF); 3],
    );
    ensure!(
        got == want,
        "F_GETPIPE_SZ, F_SETPIPE_SZ(131072), F_GETPIPE_SZ: {got:?}, DIFF.md says {want:?}"
    );
    t.note("F_GETPIPE_SZ and F_SETPIPE_SZ: as DIFF.md documents");
    Ok(())
}

/// An inode's times in nanoseconds: access, modification, change.
fn times(f: &OwnedFd) -> Result<[i128; 3], String> {
    let st = fstat(f).map_err(|e| format!("fstat: {e}"))?;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Ok([
        ns(st.st_atime, st.st_atime_nsec),
        ns(st.st_mtime, st.st_mtime_nsec),
        ns(st.st_ctime, st.st_ctime_nsec),
    ])
}

/// Waits until the kernel's coarse clock, from which it takes file times, is past all of
/// `t`, so that a time set from now on differs from them.
fn clock_past(t: [i128; 3]) -> TestResult {
    let latest = t.into_iter().max().unwrap_or(0);
    crate::util::wait_until("the coarse clock passes the file's times", WAIT, || {
        clock_gettime(ClockId::CLOCK_REALTIME_COARSE).is_ok_and(|now| {
            i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec()) > latest
        })
    })
}

/// Documented difference: a write updates the FIFO's modification time and a read its access
/// time (fifo_pipe_write: `file_update_time`; fifo_pipe_read: `file_accessed`), while
/// mini_pipe leaves the times of its device node alone. Each is checked with a clock that has
/// moved past the times before the call.
fn times_updated_only_on_a_fifo(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let before = times(&r)?;
    clock_past(before)?;
    let _ = t.write(&w, b"x");
    let written = times(&r)?;
    clock_past(written)?;
    t.read(&r, 1);
    let read = times(&r)?;
    let got = (
        written[1] != before[1],
        written[0] != before[0],
        read[0] != written[0],
        read[1] != written[1],
    );
    let want = per_side(t, (true, false, true, false), (false, false, false, false));
    ensure!(
        got == want,
        "(write changed mtime, write changed atime, read changed atime, read changed mtime) = \
         {got:?}, DIFF.md says {want:?} (times a, m, c: before {before:?}, after the write \
         {written:?}, after the read {read:?})"
    );
    t.note("file times after a write and a read: as DIFF.md documents");
    Ok(())
}

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "write_faulting_in_the_middle",
        run: write_faulting_in_the_middle,
    },
    Scenario {
        name: "read_faulting_in_the_middle",
        run: read_faulting_in_the_middle,
    },
    Scenario {
        name: "vectors_with_one_bad_segment",
        run: vectors_with_one_bad_segment,
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
        name: "char_device_is_not_a_fifo",
        run: char_device_is_not_a_fifo,
    },
    Scenario {
        name: "pipe_size_fcntls_only_on_a_fifo",
        run: pipe_size_fcntls_only_on_a_fifo,
    },
    Scenario {
        name: "times_updated_only_on_a_fifo",
        run: times_updated_only_on_a_fifo,
    },
];
