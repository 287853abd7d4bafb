// SPDX-License-Identifier: GPL-2.0

//! Helper processes: the test program started again in a role, so that a test can have a
//! second (or third) process block, be signalled or be killed while it watches.
//!
//! Each role prints its result on stdout and exits 0 when it did what it was asked.

use crate::util::{open, pattern, DEV};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io::{ErrorKind, Read, Write};

/// Runs helper `args[0]` with the rest of `args`; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let num = |i: usize| -> u64 { args.get(i).and_then(|s| s.parse().ok()).unwrap_or(0) };
    match args.first().map(String::as_str) {
        Some("write") => write(num(1), num(2), num(3) as usize),
        Some("read-until-signal") => read_until_signal(),
        Some("scenario") => crate::diff::run_scenario(&args[1..]),
        Some("fuzz") => crate::fuzz::run(&args[1..]),
        Some("stress-writer") => stress_writer(args),
        Some("stress-reader") => stress_reader(args),
        Some("storm-writer") => storm(args, true),
        Some("storm-reader") => storm(args, false),
        Some("open-close") => open_close(args),
        Some("open-rw") => open_rw(args),
        Some("bench") => crate::bench::helper(&args[1..]),
        Some("message-writer") => message_writer(
            args.get(1).map_or("", String::as_str),
            num(2) as u8,
            num(3) as u32,
        ),
        _ => {
            eprintln!("helper: unknown role {args:?}");
            2
        }
    }
}

/// `write SEED TOTAL CHUNK`: opens the device for writing and writes TOTAL bytes of stream
/// SEED in CHUNK-byte write() calls (one call if CHUNK is 0); prints the bytes written.
fn write(seed: u64, total: u64, chunk: usize) -> i32 {
    let mut f = match open(DEV, false, true, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("open: {e}");
            return 1;
        }
    };
    let chunk = if chunk == 0 { total as usize } else { chunk };
    let mut buf = vec![0u8; chunk];
    let mut done = 0u64;
    while done < total {
        let n = chunk.min((total - done) as usize);
        pattern(seed, done, &mut buf[..n]);
        match f.write(&buf[..n]) {
            Ok(w) => done += w as u64,
            Err(e) => {
                println!("write after {done}: {e}");
                return 1;
            }
        }
    }
    println!("{done}");
    0
}

extern "C" fn on_signal(_: i32) {}

/// `read-until-signal`: with a SIGUSR1 handler installed without SA_RESTART, opens the device
/// O_RDWR (so it never sees end-of-file) and reads; prints `EINTR` if a signal ended the read.
fn read_until_signal() -> i32 {
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: The handler does nothing, which is async-signal-safe.
    if let Err(e) = unsafe { sigaction(Signal::SIGUSR1, &act) } {
        println!("sigaction: {e}");
        return 1;
    }
    let mut f = match open(DEV, true, true, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("open: {e}");
            return 1;
        }
    };
    let mut buf = [0u8; 64];
    match f.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::Interrupted => {
            println!("EINTR");
            0
        }
        other => {
            println!("read returned {other:?}, not EINTR");
            1
        }
    }
}

/// The framing of `message-writer`'s messages: writer id, sequence number, payload length.
const HEADER: usize = 7;

/// Message `seq` of writer `id`: header plus a payload whose length varies from 0 to
/// `PIPE_BUF - HEADER` bytes, so every message is a single atomic write.
fn message(id: u8, seq: u32) -> Vec<u8> {
    let len = ((seq as usize) * 613 + (id as usize) * 97) % (4096 - HEADER + 1);
    let mut m = Vec::with_capacity(HEADER + len);
    m.push(id);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u16).to_le_bytes());
    m.extend((0..len).map(|i| (i as u32 ^ seq ^ u32::from(id)) as u8));
    m
}

/// `message-writer PATH ID COUNT`: opens PATH for writing and writes COUNT messages, each
/// with one write(); any short write is a failure.
fn message_writer(path: &str, id: u8, count: u32) -> i32 {
    let mut f = match open(path, false, true, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("open {path}: {e}");
            return 1;
        }
    };
    for seq in 0..count {
        let m = message(id, seq);
        match f.write(&m) {
            Ok(n) if n == m.len() => {}
            other => {
                println!("message {seq}: write of {} returned {other:?}", m.len());
                return 1;
            }
        }
    }
    0
}

/// Parses a stream of `writers` writers' messages; returns how many arrived intact and in
/// order within their writer, and how many did not (parsing stops at the first bad one).
pub fn check_messages(stream: &[u8], writers: u8, per_writer: u32) -> (u32, u32) {
    let mut next = vec![0u32; usize::from(writers) + 1];
    let (mut ok, mut pos) = (0u32, 0usize);
    while pos < stream.len() {
        let Some(h) = stream.get(pos..pos + HEADER) else {
            return (ok, 1);
        };
        let id = h[0];
        let seq = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        if id == 0 || id > writers || seq != next[usize::from(id)] {
            return (ok, 1);
        }
        let m = message(id, seq);
        if stream.get(pos..pos + m.len()) != Some(&m[..]) {
            return (ok, 1);
        }
        next[usize::from(id)] += 1;
        pos += m.len();
        ok += 1;
    }
    let missing = u32::from(writers) * per_writer - ok;
    (ok, missing)
}

/// Header of a stress message: writer id, 3 bytes of padding, sequence number, payload length,
/// payload checksum.
const STRESS_HEADER: usize = 16;

fn stress_payload_byte(id: u8, seq: u32, i: usize) -> u8 {
    (seq.wrapping_mul(31) as usize + i + usize::from(id)) as u8
}

fn fnv(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn stress_message(id: u8, seq: u32, size: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size - STRESS_HEADER)
        .map(|i| stress_payload_byte(id, seq, i))
        .collect();
    let mut m = vec![id, 0, 0, 0];
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(&fnv(&payload).to_le_bytes());
    m.extend_from_slice(&payload);
    m
}

/// Stores `bytes` in the progress file `path` (if any): what this process has moved so far.
fn store_progress(path: &str, bytes: u64) {
    if !path.is_empty() {
        let _ = std::fs::write(path, bytes.to_le_bytes());
    }
}

/// `stress-writer PATH ID COUNT SIZE PROGRESS`: COUNT messages of SIZE bytes, one write each.
fn stress_writer(args: &[String]) -> i32 {
    let (path, progress) = (&args[1], args.get(5).map_or("", String::as_str));
    let id: u8 = args[2].parse().unwrap_or(1);
    let count: u32 = args[3].parse().unwrap_or(0);
    let size: usize = args[4].parse().unwrap_or(4096);
    let mut f = match open(path, false, true, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("open: {e}");
            return 1;
        }
    };
    let mut done = 0u64;
    store_progress(progress, 0);
    for seq in 0..count {
        let m = stress_message(id, seq, size);
        match f.write(&m) {
            Ok(n) if n == m.len() => {
                done += n as u64;
                store_progress(progress, done);
            }
            other => {
                println!("message {seq}: {other:?}");
                return 1;
            }
        }
    }
    println!("sent {count}");
    0
}

/// `stress-reader PATH SIZE PROGRESS`: reads SIZE-byte messages until end-of-file and reports
/// `got N bad B order O` and, per writer, `ID:COUNT:SUM:SUMSQ` of the sequence numbers.
fn stress_reader(args: &[String]) -> i32 {
    let path = &args[1];
    let size: usize = args[2].parse().unwrap_or(4096);
    let progress = args.get(3).map_or("", String::as_str);
    let mut f = match open(path, true, false, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("open: {e}");
            return 1;
        }
    };
    let (mut got, mut bad, mut order, mut done) = (0u64, 0u64, 0u64, 0u64);
    let mut last: Vec<Option<u32>> = vec![None; 256];
    let mut tally = vec![(0u64, 0u64, 0u64); 256];
    let mut buf = vec![0u8; size];
    store_progress(progress, 0);
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                println!("read: {e}");
                return 1;
            }
        };
        done += n as u64;
        store_progress(progress, done);
        let (id, seq) = (buf[0], u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]));
        if n != size || buf[..] != stress_message(id, seq, size)[..] {
            bad += 1;
            continue;
        }
        got += 1;
        let i = usize::from(id);
        if last[i].is_some_and(|l| seq <= l) {
            order += 1;
        }
        last[i] = Some(seq);
        let q = u64::from(seq);
        let t = &mut tally[i];
        *t = (
            t.0 + 1,
            t.1.wrapping_add(q),
            t.2.wrapping_add(q.wrapping_mul(q)),
        );
    }
    let per: Vec<String> = tally
        .iter()
        .enumerate()
        .filter(|(_, t)| t.0 > 0)
        .map(|(i, t)| format!("{i}:{}:{}:{}", t.0, t.1, t.2))
        .collect();
    println!("got {got} bad {bad} order {order} {}", per.join(" "));
    0
}

static STORM_SIGNALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn count_storm(_: i32) {
    STORM_SIGNALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Stores count `n` in file `path`, for the test to watch.
fn store_count(path: &str, n: u64) {
    let _ = std::fs::write(path, n.to_string());
}

/// `storm-writer PATH STOP CUTS` / `storm-reader PATH CUTS`: a pattern stream moved under a
/// SIGALRM every 300 us (handler without SA_RESTART, so waits end early and copies come back
/// short), the writer's 100000-byte writes being larger than the ring so that each waits for
/// room. The writer writes until file STOP exists and keeps in file CUTS how many writes a
/// signal cut short (fewer bytes than asked, and the handler ran during the call); it reports
/// `accepted A signals S short P eintr E unexplained U`, U being the writes that came back
/// short with no signal. The reader reads to end-of-file and keeps in CUTS how many reads a
/// signal ended with EINTR; it reports `read R signals S eintr E bad B`.
fn storm(args: &[String], writer: bool) -> i32 {
    use nix::sys::{
        signal::{SigEvent, SigevNotify},
        time::TimeSpec,
        timer::{Expiration, Timer, TimerSetTimeFlags},
    };
    use nix::time::ClockId;
    let path = &args[1];
    let act = SigAction::new(
        SigHandler::Handler(count_storm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: The handler only increments an atomic, which is async-signal-safe.
    if unsafe { sigaction(Signal::SIGALRM, &act) }.is_err() {
        return 1;
    }
    let ev = SigEvent::new(SigevNotify::SigevSignal {
        signal: Signal::SIGALRM,
        si_value: 0,
    });
    let Ok(mut timer) = Timer::new(ClockId::CLOCK_MONOTONIC, ev) else {
        println!("timer_create failed");
        return 1;
    };
    let every = TimeSpec::from_duration(std::time::Duration::from_micros(300));
    if timer
        .set(Expiration::Interval(every), TimerSetTimeFlags::empty())
        .is_err()
    {
        println!("timer_settime failed");
        return 1;
    }
    let mut f = loop {
        match open(path, !writer, writer, 0) {
            Ok(f) => break f,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                println!("open: {e}");
                return 1;
            }
        }
    };
    let signals = || STORM_SIGNALS.load(std::sync::atomic::Ordering::Relaxed);
    if writer {
        let (stop, cuts) = (std::path::Path::new(&args[2]), &args[3]);
        let (mut off, mut short, mut eintr, mut unexplained) = (0u64, 0u64, 0u64, 0u64);
        store_count(cuts, 0);
        let mut buf = vec![0u8; 100_000];
        while !stop.exists() {
            pattern(5, off, &mut buf);
            let before = signals();
            match f.write(&buf) {
                Ok(w) if w == buf.len() => off += w as u64,
                Ok(w) => {
                    off += w as u64;
                    if signals() != before {
                        short += 1;
                        store_count(cuts, short);
                    } else {
                        unexplained += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => eintr += 1,
                Err(e) => {
                    println!("write at {off}: {e}");
                    return 1;
                }
            }
        }
        drop(timer);
        println!(
            "accepted {off} signals {} short {short} eintr {eintr} unexplained {unexplained}",
            signals()
        );
    } else {
        let cuts = &args[2];
        let (mut off, mut bad, mut eintr) = (0u64, 0u64, 0u64);
        store_count(cuts, 0);
        let (mut buf, mut want) = (vec![0u8; 65536], vec![0u8; 65536]);
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    pattern(5, off, &mut want[..n]);
                    bad += u64::from(buf[..n] != want[..n]);
                    off += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    eintr += 1;
                    store_count(cuts, eintr);
                }
                Err(e) => {
                    println!("read at {off}: {e}");
                    return 1;
                }
            }
        }
        drop(timer);
        println!("read {off} signals {} eintr {eintr} bad {bad}", signals());
    }
    0
}

/// `open-close PATH N SEED`: opens and closes PATH N times in modes that never wait, writing a
/// byte now and then; prints how many opens succeeded.
fn open_close(args: &[String]) -> i32 {
    let path = &args[1];
    let n: u32 = args[2].parse().unwrap_or(0);
    let seed: u32 = args[3].parse().unwrap_or(0);
    let mut opened = 0;
    for i in 0..n {
        let (r, w, flags) = match (i + seed) % 4 {
            0 => (true, true, 0),
            1 => (true, false, nix::libc::O_NONBLOCK),
            2 => (false, true, nix::libc::O_NONBLOCK),
            _ => (true, true, nix::libc::O_NONBLOCK),
        };
        match open(path, r, w, flags) {
            Ok(mut f) => {
                opened += 1;
                // Only non-blocking I/O: a blocking read of an empty O_RDWR file waits forever.
                let nonblock = flags != 0;
                if w && nonblock && i % 7 == 0 {
                    let _ = f.write(b"s");
                }
                if r && nonblock && i % 5 == 0 {
                    let _ = nix::unistd::read(&f, &mut [0u8; 16]);
                }
            }
            // Only a non-blocking writer may fail, and only with no reader (ENXIO).
            Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) && !r => {}
            Err(e) => {
                println!("open {i}: {e}");
                return 1;
            }
        }
    }
    println!("{opened}");
    0
}

/// `open-rw PATH r|w`: opens PATH for reading or for writing, waiting for a partner as a FIFO
/// open does. A writer writes "by hand\n" and exits; a reader reads until end-of-file and
/// prints what it read.
fn open_rw(args: &[String]) -> i32 {
    let (path, write) = (&args[1], args.get(2).is_some_and(|m| m == "w"));
    let mut f = match open(path, !write, write, 0) {
        Ok(f) => f,
        Err(e) => {
            println!("open: {e}");
            return 1;
        }
    };
    if write {
        return match f.write_all(b"by hand\n") {
            Ok(()) => 0,
            Err(e) => {
                println!("write: {e}");
                1
            }
        };
    }
    let mut got = Vec::new();
    match f.read_to_end(&mut got) {
        Ok(_) => {
            println!("{}", String::from_utf8_lossy(&got));
            0
        }
        Err(e) => {
            println!("read: {e}");
            1
        }
    }
}
