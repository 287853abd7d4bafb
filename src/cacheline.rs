// SPDX-License-Identifier: GPL-2.0

//! Where the hot fields lie: [`CacheLine`], a marker that starts a new cache line.
//!
//! A reader and a writer on two CPUs each touch a pipe's state on every call. Every cache line
//! that one side writes and the other then touches moves between the CPUs, and under emulation
//! (TCG) each move costs about what the rest of a small write does: moving the ring's indices
//! one line away from the mutex (64 bytes of padding, nothing else changed) took 64-byte writes
//! from 1.07x-1.16x a FIFO's throughput to 0.83x-0.96x (logs/bench/NOTES.md, section 12). So
//! the structures of [`crate::pipe`] are `#[repr(C)]`, in an order chosen for it: what every
//! call writes on both sides next to the mutex, what only one side writes on lines of that
//! side's own, and what no call writes apart from both.

/// A zero-sized field that makes the next field of a `#[repr(C)]` struct start a cache line
/// (the struct is then cache-line aligned too). 64 bytes: x86-64's line, and the common one.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct CacheLine;

impl CacheLine {
    pub(crate) const fn new() -> Self {
        Self
    }
}
