// SPDX-License-Identifier: GPL-2.0

//! read(2), write(2), readv(2) and writev(2): what a read returns, when it waits and for
//! what, how much a write takes and when it waits, PIPE_BUF atomicity, and the calls a FIFO refuses
//! (seeking, positional I/O, unknown ioctls, mmap).

use super::*;
use nix::{
    sys::uio::{pread, pwrite, readv, writev},
    unistd::{lseek, Whence},
};
use std::io::{IoSlice, IoSliceMut};

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

fn reader_woken_by_write(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let b = bg_read(r, 64);
    b.blocked_in(t, &[SYS_READ])?;
    let _ = t.write(&w, b"abc");
    b.done(t, "blocked read")
}

/// Two readers asleep on an empty object, one write of more than the first takes: the first
/// reader takes its share and passes the wakeup on, so the second gets the rest
/// (fs/pipe.c's `wake_next_reader`), with no further write.
fn two_sleeping_readers_share_one_write(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    let r2 = r.try_clone().map_err(|e| e.to_string())?;
    let first = bg_read(r, 3);
    first.blocked_in(t, &[SYS_READ])?;
    let second = bg_read(r2, 3);
    second.blocked_in(t, &[SYS_READ])?;
    let _ = t.write(&w, b"abcdef");
    first.done_or_blocked(t, "first reader", WAIT);
    second.done_or_blocked(t, "second reader", WAIT);
    Ok(())
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
    raw_result(t, "ioctl(unknown)", r as isize);
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

/// Every `RWF_*` flag of include/uapi/linux/fs.h in 7.3, and a bit beyond them.
const RWF_FLAGS: [(&str, i32); 10] = [
    ("RWF_HIPRI", libc::RWF_HIPRI),
    ("RWF_DSYNC", libc::RWF_DSYNC),
    ("RWF_SYNC", libc::RWF_SYNC),
    ("RWF_NOWAIT", libc::RWF_NOWAIT),
    ("RWF_APPEND", libc::RWF_APPEND),
    ("RWF_NOAPPEND", libc::RWF_NOAPPEND),
    ("RWF_ATOMIC", libc::RWF_ATOMIC),
    ("RWF_DONTCACHE", libc::RWF_DONTCACHE),
    ("RWF_NOSIGNAL", RWF_NOSIGNAL),
    ("0x200 (unknown)", 0x200),
];

/// preadv2 and pwritev2 at the file position (offset -1) with each `RWF_*` flag, with data to
/// read and room to write: the VFS refuses the flags the file cannot honour (`RWF_NOWAIT`
/// without `FMODE_NOWAIT`, `RWF_ATOMIC`, `RWF_DONTCACHE`, unknown bits); the others move data.
fn rwf_flags_with_data_and_room(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    for (name, flag) in RWF_FLAGS {
        t.rec(
            &format!("pwritev2(2, {name})"),
            &pwritev2(&w, b"ab", -1, flag),
        );
        let _ = t.write(&w, b"cd");
        let mut buf = [0u8; 8];
        let n = preadv2(&r, &mut buf, -1, flag);
        t.rec(&format!("preadv2(8, {name})"), &n);
        t.note(format!(
            "  bytes {}",
            String::from_utf8_lossy(&buf[..n.unwrap_or(0)])
        ));
        drain(t, &r)?;
        t.nonblock(&r, false)?;
    }
    Ok(())
}

/// The same flags on an empty object (non-blocking preadv2) and a full one (non-blocking
/// pwritev2): EAGAIN where the flag is accepted, the VFS's refusal where it is not.
fn rwf_flags_empty_and_full(t: &mut Trace) -> TestResult {
    let (r, w) = t.pair()?;
    t.nonblock(&r, true)?;
    for (name, flag) in RWF_FLAGS {
        let mut buf = [0u8; 8];
        t.rec(
            &format!("preadv2(8, {name}), empty"),
            &preadv2(&r, &mut buf, -1, flag),
        );
    }
    fill(t, &w, CAPACITY)?;
    t.nonblock(&w, true)?;
    for (name, flag) in RWF_FLAGS {
        t.rec(
            &format!("pwritev2(2, {name}), full"),
            &pwritev2(&w, b"ab", -1, flag),
        );
    }
    t.fionread(&r);
    Ok(())
}

/// preadv2 and pwritev2 at an offset: ESPIPE for any offset of zero or more (the object has no
/// positions), EINVAL for a negative one other than -1, with or without flags.
fn preadv2_pwritev2_at_an_offset(t: &mut Trace) -> TestResult {
    let f = t.open(OFlag::O_RDWR)?;
    let _ = t.write(&f, b"data");
    let mut buf = [0u8; 8];
    for (offset, flags) in [(0, 0), (4, 0), (0, libc::RWF_HIPRI), (-2, 0)] {
        t.rec(
            &format!("pwritev2(2, offset {offset}, flags {flags:#x})"),
            &pwritev2(&f, b"ab", offset, flags),
        );
        t.rec(
            &format!("preadv2(8, offset {offset}, flags {flags:#x})"),
            &preadv2(&f, &mut buf, offset, flags),
        );
    }
    t.fionread(&f);
    Ok(())
}

pub(super) const SCENARIOS: &[Scenario] = &[
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
        name: "two_sleeping_readers_share_one_write",
        run: two_sleeping_readers_share_one_write,
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
        name: "readv_scatters",
        run: readv_scatters,
    },
    Scenario {
        name: "writev_gathers",
        run: writev_gathers,
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
        name: "atomic_write_waits_for_room",
        run: atomic_write_waits_for_room,
    },
    Scenario {
        name: "large_write_fills_room_then_waits",
        run: large_write_fills_room_then_waits,
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
        name: "two_readers_share_the_stream",
        run: two_readers_share_the_stream,
    },
    Scenario {
        name: "two_writers_interleave_whole_writes",
        run: two_writers_interleave_whole_writes,
    },
    Scenario {
        name: "atomic_writes_under_contention",
        run: atomic_writes_under_contention,
    },
    Scenario {
        name: "rwf_flags_with_data_and_room",
        run: rwf_flags_with_data_and_room,
    },
    Scenario {
        name: "rwf_flags_empty_and_full",
        run: rwf_flags_empty_and_full,
    },
    Scenario {
        name: "preadv2_pwritev2_at_an_offset",
        run: preadv2_pwritev2_at_an_offset,
    },
];
