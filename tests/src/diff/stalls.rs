// SPDX-License-Identifier: GPL-2.0

//! Stalls: what other callers see while one caller is stuck inside the object. A writer whose
//! copy from user memory stalls on a userfaultfd fault holds the object's lock (pipe->mutex in
//! a FIFO) until the fault is served; poll, epoll and FIONREAD must still answer, or be
//! documented not to. And writers queued behind one another: which of them a read releases.

use super::splice_uring::{at_once, dup, returned_or_asleep};
use super::*;
use nix::sys::{
    epoll::{EpollCreateFlags, EpollFlags},
    mman::{mmap_anonymous, munmap, MapFlags, ProtFlags},
};
use userfaultfd::{Event, Uffd, UffdBuilder};

/// x86_64 system call numbers of the calls that must answer during a stall.
const SYS_IOCTL: u32 = libc::SYS_ioctl as u32;
const SYS_EPOLL: &[u32] = &[
    libc::SYS_epoll_create1 as u32,
    libc::SYS_epoll_ctl as u32,
    SYS_EPOLL_WAIT,
    SYS_EPOLL_PWAIT,
    libc::SYS_epoll_pwait2 as u32,
];

/// Two pages: the first holds known bytes, the second is registered with a userfaultfd and
/// missing, so that a copy running into it stalls until the test serves the fault.
struct Stall {
    base: std::ptr::NonNull<std::ffi::c_void>,
    uffd: Uffd,
}

/// The byte at offset `i` of the first page, and of the page the fault is served with.
fn first_page(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

fn served_page(i: usize) -> u8 {
    b'A' + (i % 26) as u8
}

impl Stall {
    fn new() -> Result<Self, String> {
        let len = std::num::NonZeroUsize::new(2 * PAGE).unwrap();
        let rw = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: A fresh anonymous mapping; nothing else refers to it.
        let base = unsafe { mmap_anonymous(None, len, rw, MapFlags::MAP_PRIVATE) }
            .map_err(|e| format!("mmap: {e}"))?;
        // Kernel-mode faults too: the stall is in the kernel's copy from user memory.
        let uffd = UffdBuilder::new()
            .close_on_exec(true)
            .non_blocking(true)
            .user_mode_only(false)
            .create()
            .map_err(|e| format!("userfaultfd: {e}"))?;
        let stall = Self { base, uffd };
        // SAFETY: The first page is mapped readable and writable, and only this struct uses it.
        unsafe { std::slice::from_raw_parts_mut(stall.at(0), PAGE) }
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = first_page(i));
        stall
            .uffd
            .register(stall.at(PAGE).cast(), PAGE)
            .map_err(|e| format!("UFFDIO_REGISTER: {e}"))?;
        Ok(stall)
    }

    fn at(&self, off: usize) -> *mut u8 {
        self.base.as_ptr().cast::<u8>().wrapping_add(off)
    }

    /// Starts a thread writing PAGE bytes to `w` from half a page before the missing one: it
    /// copies 2048 bytes, then stalls.
    fn stalled_write(&self, w: OwnedFd) -> Bg {
        let src = self.at(PAGE / 2) as usize;
        bg(move || {
            // SAFETY: write(2) from a mapped range whose second half faults until served; the
            // kernel reads it, not this process.
            let n = unsafe { libc::write(w.as_raw_fd(), src as *const libc::c_void, PAGE) };
            show(Errno::result(n).map(|n| n as usize))
        })
    }

    /// Waits, bounded, for the fault on the missing page.
    fn fault(&self) -> TestResult {
        let mut fds = [PollFd::new(self.uffd.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(30_000u16)).map_err(|e| e.to_string())?;
        ensure!(n == 1, "no fault within 30 s: the write did not stall");
        match self.uffd.read_event().map_err(|e| e.to_string())? {
            Some(Event::Pagefault { addr, .. }) => {
                let page = addr as usize & !(PAGE - 1);
                ensure!(
                    page == self.at(PAGE) as usize,
                    "fault at {addr:?}, not in the missing page"
                );
                Ok(())
            }
            other => Err(format!("userfaultfd event {other:?}, not a page fault")),
        }
    }

    /// Serves the fault: the missing page gets `served_page` bytes, and the writer goes on.
    fn serve(&self) -> TestResult {
        let page: Vec<u8> = (0..PAGE).map(served_page).collect();
        // SAFETY: UFFDIO_COPY from a buffer of PAGE bytes into the registered missing page.
        unsafe {
            self.uffd
                .copy(page.as_ptr().cast(), self.at(PAGE).cast(), PAGE, true)
        }
        .map(|_| ())
        .map_err(|e| format!("UFFDIO_COPY: {e}"))
    }

    /// The bytes the stalled write delivers once served.
    fn written() -> Vec<u8> {
        (PAGE / 2..PAGE)
            .map(first_page)
            .chain((0..PAGE / 2).map(served_page))
            .collect()
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        // SAFETY: The mapping made in new(); every thread that used it has finished.
        let _ = unsafe { munmap(self.base, 2 * PAGE) };
    }
}

/// Reads everything queued without waiting and checks it is `want`; records the outcome.
fn read_back(t: &mut Trace, r: &OwnedFd, want: &[u8]) -> TestResult {
    t.nonblock(r, true)?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; CAPACITY];
    while let Ok(n @ 1..) = read(r, &mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    t.note(format!(
        "read back {} bytes, as written: {}",
        got.len(),
        got == want
    ));
    Ok(())
}

/// A writer stalled on a userfaultfd fault in the middle of its copy holds the object's lock.
/// Meanwhile poll on a reader and on a writer, and epoll_ctl(ADD) plus epoll_wait(0) on each,
/// answer at once with the masks of the 100 bytes queued before (pipe_poll takes no lock).
/// Once the fault is served the write completes whole and every byte reads back.
fn poll_and_epoll_answer_during_a_stalled_write(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, &[b'q'; 100]);
    let stall = Stall::new()?;
    let writer = stall.stalled_write(dup(&w)?);
    stall.fault()?;
    t.note("writer stalled on a fault in the middle of its copy");
    let mut stuck = Vec::new();
    for (what, fd) in [("reader", &r), ("writer", &w)] {
        let fd = dup(fd)?;
        stuck.extend(at_once(
            t,
            &format!("poll({what}, 0)"),
            &[SYS_POLL, SYS_PPOLL],
            move || poll_mask(&fd, PollTimeout::ZERO),
        )?);
    }
    for (what, fd, ev) in [
        ("reader", &r, EpollFlags::EPOLLIN),
        ("writer", &w, EpollFlags::EPOLLOUT),
    ] {
        let fd = dup(fd)?;
        let what = format!("epoll_ctl(ADD {what}) + epoll_wait(0)");
        stuck.extend(at_once(t, &what, SYS_EPOLL, move || {
            let ep = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
                Ok(ep) => ep,
                Err(e) => return format!("epoll_create: {e}"),
            };
            let added = show(ep.add(&fd, EpollEvent::new(ev, 1)));
            format!("{added}, {}", epoll_events(&ep, 0))
        })?);
    }
    stall.serve()?;
    writer.done(t, "stalled write")?;
    for b in &stuck {
        b.done(t, "a stuck call, after the fault was served")?;
    }
    t.fionread(&r);
    let mut want = vec![b'q'; 100];
    want.extend(Stall::written());
    read_back(t, &r, &want)
}

/// Documented difference: FIONREAD while a writer is stalled on a fault in the middle of its
/// copy. The FIFO's FIONREAD takes pipe->mutex, which the stalled writer holds: it answers
/// only once the fault is served, with the 100 bytes queued before plus the write's 4096.
/// mini_pipe's answers at once with the 100 bytes queued.
fn fionread_during_a_stalled_write(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let _ = t.write(&w, &[b'q'; 100]);
    let stall = Stall::new()?;
    let writer = stall.stalled_write(dup(&w)?);
    stall.fault()?;
    t.note("writer stalled on a fault in the middle of its copy");
    let rr = dup(&r)?;
    let b = bg(move || show(crate::util::queued(&rr)));
    // None: asleep in ioctl(2), waiting for the lock the stalled writer holds.
    let during = returned_or_asleep(&b, &[SYS_IOCTL])?;
    let want = match t.target {
        Target::Fifo => None,
        Target::Mini => Some("100".to_string()),
    };
    ensure!(
        during == want,
        "FIONREAD during the stall: {during:?}, documented {want:?} (None: asleep in ioctl)"
    );
    stall.serve()?;
    writer.done(t, "stalled write")?;
    if during.is_none() {
        let late = b.rx.recv_timeout(WAIT).ok();
        ensure!(
            late.as_deref() == Some("4196"),
            "FIONREAD once the fault was served: {late:?}, documented 4196"
        );
    }
    t.note(format!(
        "FIONREAD during the stall, and once the fault is served: {DOCUMENTED_MARK}"
    ));
    t.fionread(&r);
    let mut want = vec![b'q'; 100];
    want.extend(Stall::written());
    read_back(t, &r, &want)
}

/// Documented difference: head-of-line among writers. A full object, an atomic 4096-byte
/// writer asleep, then a 1-byte writer asleep. Reading 1 byte lets mini_pipe's 1-byte writer
/// finish (a byte ring has a byte of room) while the 4096-byte one stays asleep; a FIFO frees
/// no page for 1 byte, so both stay asleep. Reading 8 KiB more lets both finish on both, and
/// every byte is accounted for.
fn small_writer_behind_an_atomic_writer(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    fill(t, &w, CAPACITY)?;
    let (w1, w2) = (dup(&w)?, dup(&w)?);
    let big = bg(move || show(write(&w1, &[b'A'; PAGE])));
    big.blocked_in(t, &[SYS_WRITE])?;
    let small = bg(move || show(write(&w2, b"b")));
    small.blocked_in(t, &[SYS_WRITE])?;
    t.read(&r, 1);
    let mini = t.target == Target::Mini;
    // Each writer, if the read woke it, has written or sleeps again: nothing is timed.
    let small_early = small.settled(&[SYS_WRITE])?;
    ensure!(
        small_early.is_some() == mini,
        "1-byte writer after 1 byte read: {small_early:?}, documented: {}",
        if mini { "finishes" } else { "stays asleep" }
    );
    let big_early = big.settled(&[SYS_WRITE])?;
    ensure!(
        big_early.is_none(),
        "4096-byte writer after 1 byte read: {big_early:?}, documented: stays asleep"
    );
    t.note(format!("writers after 1 byte read: {DOCUMENTED_MARK}"));
    t.read(&r, 2 * PAGE);
    let big_late = big
        .rx
        .recv_timeout(WAIT)
        .map_err(|_| "4096-byte writer still asleep after 8 KiB read")?;
    t.note(format!("4096-byte write -> {big_late}"));
    let small_late = match small_early {
        Some(s) => s,
        None => small
            .rx
            .recv_timeout(WAIT)
            .map_err(|_| "1-byte writer still asleep after 8 KiB read")?,
    };
    t.note(format!("1-byte write -> {small_late}"));
    t.fionread(&r);
    t.nonblock(&r, true)?;
    let mut rest = Vec::new();
    let mut buf = vec![0u8; CAPACITY];
    while let Ok(n @ 1..) = read(&r, &mut buf) {
        rest.extend_from_slice(&buf[..n]);
    }
    let count = |c: u8| rest.iter().filter(|&&b| b == c).count();
    let whole = rest.windows(PAGE).any(|s| s.iter().all(|&b| b == b'A'));
    t.note(format!(
        "left {} bytes: {} x, {} A (in one run: {whole}), {} b",
        rest.len(),
        count(b'x'),
        count(b'A'),
        count(b'b')
    ));
    Ok(())
}

pub(super) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "poll_and_epoll_answer_during_a_stalled_write",
        run: poll_and_epoll_answer_during_a_stalled_write,
    },
    Scenario {
        name: "fionread_during_a_stalled_write",
        run: fionread_during_a_stalled_write,
    },
    Scenario {
        name: "small_writer_behind_an_atomic_writer",
        run: small_writer_behind_an_atomic_writer,
    },
];
