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
