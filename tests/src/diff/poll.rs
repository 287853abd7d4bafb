// SPDX-License-Identifier: GPL-2.0

//! Readiness: poll(2), select(2) and epoll(7), their masks in every state of the object, and
//! the wake-ups of callers waiting in them.

use super::*;
use nix::sys::{
    epoll::{EpollCreateFlags, EpollFlags},
    select::{select, FdSet},
    time::TimeVal,
};

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
    let early = b.settled(&[SYS_POLL, SYS_PPOLL])?;
    ensure!(
        early.is_none(),
        "poll returned {early:?} with less than PIPE_BUF of room"
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

/// How long a scenario gives a thread that a wakeup must reach before it records it as hung.
const HANG: Duration = Duration::from_secs(20);

fn new_epoll() -> Result<Epoll, String> {
    Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())
}

/// Adds `fd` with `flags` to two epoll instances and leaves a thread waiting in each, up to 30 s
/// (their results are not recorded: an exclusive wakeup picks one of them). With `drain_first`,
/// each instance is first waited on once without blocking, and that is recorded, for a level
/// that is already ready when the fd is added (an edge-triggered `EPOLLOUT`).
fn exclusive_waiters(
    t: &mut Trace,
    fd: &OwnedFd,
    flags: EpollFlags,
    drain_first: bool,
) -> Result<Vec<Bg>, String> {
    let mut waiters = Vec::new();
    for i in 1..=2 {
        let ep = new_epoll()?;
        ep.add(fd, EpollEvent::new(flags, i))
            .map_err(|e| format!("EPOLL_CTL_ADD {flags:?}: {e}"))?;
        if drain_first {
            t.note(format!("epoll {i} first wait = {}", epoll_events(&ep, 0)));
        }
        let b = bg(move || epoll_events(&ep, 30_000));
        b.blocked_in(t, &[SYS_EPOLL_WAIT, SYS_EPOLL_PWAIT])?;
        waiters.push(b);
    }
    Ok(waiters)
}

/// `EPOLLEXCLUSIVE` readers do not take a writer's wakeup. An O_RDWR file is in two epoll
/// instances with `EPOLLIN|EPOLLEXCLUSIVE`, a thread waiting in each, so its epitems sit on both
/// wait queues ahead of a writer that then blocks with 8 KiB of a 72 KiB write left. Reading
/// 64 KiB wakes the room waiters with `EPOLLOUT`, which those epitems ignore, so the wakeup
/// reaches the writer and it completes. A wakeup without a key is taken by an exclusive epitem
/// (ep_poll_callback counts it as the one exclusive waiter woken) and the writer never wakes.
fn epoll_exclusive_reader_leaves_writer_wakeup(t: &mut Trace) -> TestResult {
    let x = t.open(OFlag::O_RDWR)?;
    let w = t.open(OFlag::O_WRONLY)?;
    let _waiters = exclusive_waiters(t, &x, EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, false)?;
    let b = bg_write(w, CAPACITY + 8192);
    b.blocked_in(t, &[SYS_WRITE])?;
    t.fionread(&x);
    t.read(&x, CAPACITY);
    b.done_or_blocked(t, "blocked write", HANG);
    t.fionread(&x);
    Ok(())
}

/// The mirror case: `EPOLLOUT|EPOLLET|EPOLLEXCLUSIVE` epitems of an O_RDWR file, in two epoll
/// instances with a waiting thread each, sit on the readers' wait queue ahead of a reader
/// blocked on the empty object. A write from another file wakes that queue with `EPOLLIN`,
/// which the epitems ignore, so the reader gets the data.
fn epoll_exclusive_writer_leaves_reader_wakeup(t: &mut Trace) -> TestResult {
    let x = t.open(OFlag::O_RDWR)?;
    let r = t.open(OFlag::O_RDONLY)?;
    let w = t.open(OFlag::O_WRONLY)?;
    let flags = EpollFlags::EPOLLOUT | EpollFlags::EPOLLET | EpollFlags::EPOLLEXCLUSIVE;
    let _waiters = exclusive_waiters(t, &x, flags, true)?;
    let b = bg_read(r, 64);
    b.blocked_in(t, &[SYS_READ])?;
    let _ = t.write(&w, b"wake");
    b.done_or_blocked(t, "blocked read", HANG);
    t.fionread(&x);
    Ok(())
}

/// `EPOLLONESHOT`: one event, then none, even for new data, until `EPOLL_CTL_MOD` re-arms it.
fn epoll_oneshot_until_rearmed(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let ep = new_epoll()?;
    let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT;
    ep.add(&r, EpollEvent::new(flags, 1))
        .map_err(|e| e.to_string())?;
    t.note(format!("wait empty = {}", epoll_events(&ep, 0)));
    let _ = t.write(&w, b"a");
    t.note(format!("wait = {}", epoll_events(&ep, 0)));
    t.note(format!("wait again = {}", epoll_events(&ep, 0)));
    let _ = t.write(&w, b"b");
    t.note(format!("wait after more data = {}", epoll_events(&ep, 0)));
    let r2 = ep.modify(&r, &mut EpollEvent::new(flags, 1));
    t.rec("EPOLL_CTL_MOD", &r2);
    t.note(format!("wait re-armed = {}", epoll_events(&ep, 0)));
    t.note(format!("wait again = {}", epoll_events(&ep, 0)));
    t.read_bytes(&r, 8);
    let r2 = ep.modify(&r, &mut EpollEvent::new(flags, 1));
    t.rec("EPOLL_CTL_MOD, empty", &r2);
    t.note(format!("wait re-armed, empty = {}", epoll_events(&ep, 0)));
    Ok(())
}

/// Nested epoll: an epoll instance watching another that watches the reader. Data and the
/// hangup after the last writer both make the inner instance readable, and wake a thread
/// waiting on the outer one.
fn epoll_nested(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let inner = std::sync::Arc::new(new_epoll()?);
    inner
        .add(&r, EpollEvent::new(EpollFlags::EPOLLIN, 1))
        .map_err(|e| e.to_string())?;
    let outer = std::sync::Arc::new(new_epoll()?);
    outer
        .add(inner.0.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 2))
        .map_err(|e| e.to_string())?;
    t.note(format!("outer, empty = {}", epoll_events(&outer, 0)));
    let o = outer.clone();
    let b = bg(move || epoll_events(&o, 30_000));
    b.blocked_in(t, &[SYS_EPOLL_WAIT, SYS_EPOLL_PWAIT])?;
    let _ = t.write(&w, b"x");
    b.done(t, "blocked outer wait")?;
    t.note(format!("outer = {}", epoll_events(&outer, 0)));
    t.note(format!("inner = {}", epoll_events(&inner, 0)));
    t.read(&r, 1);
    t.note(format!("outer, read empty = {}", epoll_events(&outer, 0)));
    let o = outer.clone();
    let b = bg(move || epoll_events(&o, 30_000));
    b.blocked_in(t, &[SYS_EPOLL_WAIT, SYS_EPOLL_PWAIT])?;
    drop(w);
    b.done(t, "blocked outer wait, last writer closes")?;
    t.note(format!("inner, no writer = {}", epoll_events(&inner, 0)));
    Ok(())
}

/// select(2) with one O_RDWR file in both the read and the write set: empty, with data, full,
/// and a page read from full.
fn select_rdwr_empty_data_full(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    let note_select = |t: &mut Trace, what: &str| {
        let mut rs = FdSet::new();
        let mut ws = FdSet::new();
        rs.insert(f.as_fd());
        ws.insert(f.as_fd());
        let mut tv = TimeVal::new(0, 0);
        let n = select(None, Some(&mut rs), Some(&mut ws), None, Some(&mut tv));
        t.note(format!(
            "select({what}) = {} readable={} writable={}",
            show(n),
            rs.contains(f.as_fd()),
            ws.contains(f.as_fd())
        ));
    };
    note_select(t, "empty");
    let _ = t.write(&f, b"x");
    note_select(t, "1 byte");
    fill(t, &f, CAPACITY - 1)?;
    note_select(t, "full");
    t.read(&f, 4096);
    note_select(t, "a page read");
    Ok(())
}

pub(super) const SCENARIOS: &[Scenario] = &[
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
        name: "epoll_exclusive_reader_leaves_writer_wakeup",
        run: epoll_exclusive_reader_leaves_writer_wakeup,
    },
    Scenario {
        name: "epoll_exclusive_writer_leaves_reader_wakeup",
        run: epoll_exclusive_writer_leaves_reader_wakeup,
    },
    Scenario {
        name: "epoll_oneshot_until_rearmed",
        run: epoll_oneshot_until_rearmed,
    },
    Scenario {
        name: "epoll_nested",
        run: epoll_nested,
    },
    Scenario {
        name: "select_rdwr_empty_data_full",
        run: select_rdwr_empty_data_full,
    },
];
