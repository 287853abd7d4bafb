// SPDX-License-Identifier: GPL-2.0

//! The documented differences (DIFF.md): scenarios that pin a different behaviour on each
//! side. Each asserts the exact documented behaviour of the side it runs on, and records only that
//! it did, so the two traces are the same while both behave as documented.

use super::*;

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
];
