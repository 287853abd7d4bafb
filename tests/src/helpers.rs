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
