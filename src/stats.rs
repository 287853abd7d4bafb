// SPDX-License-Identifier: GPL-2.0

//! What happened inside a pipe: bytes and calls, who slept and how often, who woke whom, how
//! full the ring got.
//!
//! fs/pipe.c keeps no such counters; mini_pipe shows them so that the rendezvous can be watched
//! (debugfs, `/sys/kernel/debug/mini_pipe/NODE`, and each open file's fdinfo), without opening
//! the pipe, which would count as a reader or writer and might wait.
//!
//! Counting is kept off the hot path's costs: a counter is a plain atomic word, read without any
//! lock. Every counter that only code holding the pipe's mutex changes (bytes, calls, sleeps, the
//! peak) has its value kept in the pipe's locked state as well ([`Counts`]), and each change is
//! one store into the published word: no locked read-modify-write, which costs more than the
//! rest of a small write under emulation, and no load either. (Each operation on a kernel
//! `Atomic` is a call into C, out of line unless the kernel inlines its Rust helpers; a write
//! made about ten, which cost a 64-byte write and read about 400 ns under TCG,
//! logs/bench/NOTES.md, section 16.) The others take an atomic add: `eagain`, which the splice
//! paths bump without the mutex, and the wakeups, which [`crate::wait::WaitQueue`] counts at
//! every wake call (whether or not it finds a sleeper).

use crate::cacheline::CacheLine;
use core::fmt;
use kernel::{
    prelude::*,
    sync::atomic::{
        Atomic,
        Relaxed, //
    },
};

/// One counter.
pub(crate) struct Counter(Atomic<u64>);

impl Counter {
    const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// Publishes `n`, the counter's new value, which a [`Count`] keeps.
    fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    /// Adds `n` from anywhere.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A pipe's counters, since the module was loaded.
///
/// In three cache lines: what writes update, what reads update, and the rest, so that a writer
/// and a reader on two CPUs do not pull one line back and forth for counters that each writes
/// alone ([`crate::cacheline`]).
#[repr(C)]
pub(crate) struct Stats {
    _writes_line: CacheLine,
    /// Bytes that writes queued.
    pub(crate) bytes_written: Counter,
    /// write calls (each `write`, `writev`, io_uring write, splice or sendfile chunk), whatever
    /// they returned.
    pub(crate) writes: Counter,
    /// Write calls that slept at least once, and how many times writers went to sleep in all.
    pub(crate) writes_slept: Counter,
    pub(crate) writer_sleeps: Counter,
    /// The most bytes ever queued at once.
    pub(crate) peak_queued: Counter,
    /// Writes that waited for readers to take their bytes: at `capacity=0`, and `O_DSYNC`.
    pub(crate) sync_writes: Counter,
    /// Writers asleep in write now.
    pub(crate) writers_asleep: Gauge,
    _reads_line: CacheLine,
    /// Bytes that reads took.
    pub(crate) bytes_read: Counter,
    /// read calls, as `writes`.
    pub(crate) reads: Counter,
    /// Read calls that slept at least once, and how many times readers went to sleep in all.
    pub(crate) reads_slept: Counter,
    pub(crate) reader_sleeps: Counter,
    /// Readers asleep in read now.
    pub(crate) readers_asleep: Gauge,
    _rest_line: CacheLine,
    /// Reads, writes and splices that returned `EAGAIN` (bumped with [`Counter::add`]: the
    /// splice checks run without the mutex).
    pub(crate) eagain: Counter,
    /// Opens that waited for a partner.
    pub(crate) open_waits: Counter,
    /// Bytes that went straight from a writer's buffer to a reader's, with one copy
    /// ([`crate::handoff`]): into a reader's pinned pages, or out of a writer's.
    pub(crate) bytes_direct: Counter,
}

impl Stats {
    pub(crate) const fn new() -> Self {
        Self {
            _writes_line: CacheLine::new(),
            bytes_written: Counter::new(),
            writes: Counter::new(),
            writes_slept: Counter::new(),
            writer_sleeps: Counter::new(),
            peak_queued: Counter::new(),
            sync_writes: Counter::new(),
            writers_asleep: Gauge::new(),
            _reads_line: CacheLine::new(),
            bytes_read: Counter::new(),
            reads: Counter::new(),
            reads_slept: Counter::new(),
            reader_sleeps: Counter::new(),
            readers_asleep: Gauge::new(),
            _rest_line: CacheLine::new(),
            eagain: Counter::new(),
            open_waits: Counter::new(),
            bytes_direct: Counter::new(),
        }
    }
}

/// A counter's value, kept by the code that changes it with the pipe's mutex held, which
/// stores every change into the published [`Counter`].
#[derive(Default)]
pub(crate) struct Count(u64);

impl Count {
    /// Adds `n`, and publishes the sum in `counter`.
    pub(crate) fn add(&mut self, n: usize, counter: &Counter) {
        self.0 = self.0.wrapping_add(n as u64);
        counter.set(self.0);
    }

    /// Raises the count to `n` if it is below, and publishes it in `counter` if so.
    pub(crate) fn raise(&mut self, n: usize, counter: &Counter) {
        let n = n as u64;
        if n > self.0 {
            self.0 = n;
            counter.set(n);
        }
    }
}

/// The values of the [`Stats`] counters that only code holding the pipe's mutex changes, kept in
/// the pipe's locked state; each field publishes into the [`Stats`] field of its name.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) bytes_written: Count,
    pub(crate) writes: Count,
    pub(crate) writes_slept: Count,
    pub(crate) writer_sleeps: Count,
    pub(crate) peak_queued: Count,
    pub(crate) sync_writes: Count,
    pub(crate) bytes_read: Count,
    pub(crate) reads: Count,
    pub(crate) reads_slept: Count,
    pub(crate) reader_sleeps: Count,
    pub(crate) open_waits: Count,
    pub(crate) bytes_direct: Count,
}

/// A number of tasks in some state (asleep in read, asleep in write), changed with the pipe's
/// mutex held.
pub(crate) struct Gauge(Atomic<u32>);

impl Gauge {
    const fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// One more; with the pipe's mutex held.
    pub(crate) fn inc_locked(&self) {
        self.0.store(self.0.load(Relaxed) + 1, Relaxed);
    }

    /// One fewer; with the pipe's mutex held, after an `inc_locked`.
    pub(crate) fn dec_locked(&self) {
        self.0.store(self.0.load(Relaxed) - 1, Relaxed);
    }

    pub(crate) fn get(&self) -> u32 {
        self.0.load(Relaxed)
    }
}

/// What is shown for a pipe besides its [`Stats`]: its current state and the wakeups sent on
/// its wait queues.
pub(crate) struct Snapshot {
    pub(crate) capacity: usize,
    pub(crate) queued: usize,
    /// Bytes waiting writers offer, outside the ring ([`crate::handoff`]).
    pub(crate) offered: usize,
    pub(crate) readers: u32,
    pub(crate) writers: u32,
    pub(crate) rd_wakeups: u64,
    pub(crate) wr_wakeups: u64,
}

/// Everything shown for a pipe, one `name` `sep` `value` line each, in this order: in debugfs
/// with `sep` = ": ", in fdinfo with ":\t" (the VFS's own fdinfo lines' form).
pub(crate) struct Show<'a> {
    pub(crate) stats: &'a Stats,
    pub(crate) now: Snapshot,
    pub(crate) sep: &'static str,
}

impl kernel::fmt::Display for Show<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Show<'_> {
    /// Writes the lines to `f`.
    pub(crate) fn write_to(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let (s, now) = (self.stats, &self.now);
        let lines: [(&str, u64); 22] = [
            ("capacity", now.capacity as u64),
            ("queued", now.queued as u64),
            ("readers", now.readers.into()),
            ("writers", now.writers.into()),
            ("readers_asleep", s.readers_asleep.get().into()),
            ("writers_asleep", s.writers_asleep.get().into()),
            ("bytes_written", s.bytes_written.get()),
            ("bytes_read", s.bytes_read.get()),
            ("writes", s.writes.get()),
            ("reads", s.reads.get()),
            ("writes_slept", s.writes_slept.get()),
            ("writer_sleeps", s.writer_sleeps.get()),
            ("reads_slept", s.reads_slept.get()),
            ("reader_sleeps", s.reader_sleeps.get()),
            ("rd_wakeups", now.rd_wakeups),
            ("wr_wakeups", now.wr_wakeups),
            ("eagain", s.eagain.get()),
            ("open_waits", s.open_waits.get()),
            ("peak_queued", s.peak_queued.get()),
            ("offered", now.offered as u64),
            ("bytes_direct", s.bytes_direct.get()),
            ("sync_writes", s.sync_writes.get()),
        ];
        for (name, value) in lines {
            writeln!(f, "{name}{}{value}", self.sep)?;
        }
        Ok(())
    }
}

#[kunit_tests(mini_pipe_stats)]
mod tests {
    use super::*;
    use kernel::str::CString;

    #[test]
    fn counters_add_and_keep_the_peak() {
        let (c, mut count) = (Counter::new(), Count::default());
        count.add(3, &c);
        assert_eq!(c.get(), 3);
        count.add(4, &c);
        assert_eq!(c.get(), 7);
        let eagain = Counter::new();
        eagain.add(4);
        eagain.add(1);
        assert_eq!(eagain.get(), 5);
        let (peak, mut count) = (Counter::new(), Count::default());
        count.raise(10, &peak);
        count.raise(4, &peak);
        assert_eq!(peak.get(), 10);
        let g = Gauge::new();
        g.inc_locked();
        g.inc_locked();
        g.dec_locked();
        assert_eq!(g.get(), 1);
    }

    #[test]
    fn one_line_per_counter_in_order() {
        let stats = Stats::new();
        Count::default().add(12, &stats.bytes_written);
        stats.open_waits.add(1);
        let show = Show {
            stats: &stats,
            now: Snapshot {
                capacity: 4096,
                queued: 5,
                offered: 7,
                readers: 1,
                writers: 2,
                rd_wakeups: 3,
                wr_wakeups: 0,
            },
            sep: ": ",
        };
        let text = CString::try_from_fmt(fmt!("{show}")).unwrap();
        let text = text.to_str().unwrap();
        assert_eq!(text.lines().count(), 22);
        assert!(text.starts_with("capacity: 4096\nqueued: 5\nreaders: 1\nwriters: 2\n"));
        assert!(text.contains("\nbytes_written: 12\n"));
        assert!(text.contains("\nrd_wakeups: 3\n"));
        assert!(text.contains("\nopen_waits: 1\n"));
        assert!(text.ends_with("peak_queued: 0\noffered: 7\nbytes_direct: 0\nsync_writes: 0\n"));
    }
}
