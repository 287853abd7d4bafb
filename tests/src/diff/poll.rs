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
];
