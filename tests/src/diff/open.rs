// SPDX-License-Identifier: GPL-2.0

//! The open rendezvous: who waits in open(2) for a partner, who fails at once, what an
//! interrupted wait leaves behind, and what the object keeps across opens and closes.

use super::*;

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

pub(super) const SCENARIOS: &[Scenario] = &[
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
        name: "leftovers_discarded_when_all_close",
        run: leftovers_discarded_when_all_close,
    },
    Scenario {
        name: "data_kept_while_a_reader_holds_it",
        run: data_kept_while_a_reader_holds_it,
    },
];
