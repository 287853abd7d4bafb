// SPDX-License-Identifier: GPL-2.0

//! The pipe: what happens on open, read, write and release.
//!
//! This is the counterpart of fs/pipe.c's `fifo_open`, `pipe_read`, `pipe_write` and
//! `pipe_release`, written against a byte [`Ring`] instead of a ring of page buffers. Everything
//! here is safe Rust; [`crate::fops`] turns the C calls into calls of these methods.
//!
//! Locking: one [`Mutex`] (fs/pipe.c's `pipe->mutex`) guards the ring's indices, the offers
//! and the counts, and two more make readers and writers take turns: `rd_mutex` and
//! `wr_mutex`, taken before it. The copies themselves run without the mutex, under a claim on
//! the part of the ring they use ([`crate::claim`]): a reader copies out of queued bytes while a
//! writer copies into free space, where fs/pipe.c has them take turns. A write of at most
//! `PIPE_BUF` bytes is still atomic: it is one claim, made and committed with `wr_mutex` held,
//! and readers see none of it before the commit. poll, `FIONREAD` and fdinfo take no lock: they
//! read [`Unlocked`], a copy of what they need that is updated with the mutex held.
//!
//! Wakeups carry poll keys, as in fs/pipe.c (`EPOLLIN | EPOLLRDNORM` on `rd_wait` for data,
//! `EPOLLOUT | EPOLLWRNORM` on `wr_wait` for room), so a poller waiting for one never takes a
//! wakeup meant for a task waiting for the other ([`crate::wait`]). As in fs/pipe.c, the wakeup
//! that moves data along (a writer waking a reader, a reader waking a writer) comes once the
//! bytes are committed and the mutex dropped. Four things differ on a machine with more than
//! one CPU, all so that the two sides run at once instead of by turns:
//!
//! - a copy larger than [`RING_CHUNK`] is made and committed a chunk at a time, waking the other
//!   side after the first, so that it copies the bytes (or into the room) of one chunk while
//!   this side copies the next;
//! - a reader with nothing to read that finds a writer copying bytes in, or a writer without
//!   room that finds a reader copying out enough, waits for that copy to be committed, spinning
//!   on a mutex the copier holds meanwhile, rather than sleep ([`Pipe::await_copy`]);
//! - a copy that fills the ring (a write) or empties it (a read) wakes the sleepers on the other
//!   side before it runs ([`SLEEPERS`]: pollers are woken only after the commit, when there is
//!   something to see), and a sleeper so woken that finds the copy still running waits for it
//!   as above: its wake-up overlaps the copy;
//! - the wakeup after a copy is a plain one, not fs/pipe.c's sync one ([`Pipe::sync_wakeups`]).
//!
//! On one CPU nothing can run while a copy does, so none of that would help: every copy is made
//! whole with the mutex held, and the turns, which then guard nothing, are not taken
//! ([`Pipe::take_turn`]). What is left is fs/pipe.c's design, one mutex and sync wakeups, with
//! one addition: a reader that asks for more than the ring holds waits with its buffer pinned,
//! and writers fill it before the ring, so that each of its sleeps takes more than a ring's
//! worth ([`Pipe::reader_slots`]).
//!
//! DIFF.md, "Locking" and "Wakeups", has the measurements.

use crate::{
    cacheline::CacheLine,
    compat::{
        smp_mb,
        FIONREAD, //
    },
    fops::FasyncList,
    handoff::{
        Handoffs,
        Offered,
        Ticket, //
    },
    pin::{
        PinnedPages,
        MAX_PINNED_PAGES, //
    },
    ring::Ring,
    stats::{
        Counts,
        Show,
        Snapshot,
        Stats, //
    },
    wait::{
        new_wait_queue,
        Held,
        PollTable,
        Sleep,
        WaitQueue, //
    },
};
use kernel::{
    bindings,
    fs::File,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        aref::ARef,
        atomic::{
            Atomic,
            Relaxed, //
        },
        Mutex,
        MutexGuard, //
    },
    task::Task,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

/// `PIPE_BUF`: writes of at most this many bytes are atomic (POSIX; `include/uapi/linux/limits.h`).
pub(crate) const PIPE_BUF: usize = bindings::PIPE_BUF as usize;

/// The poll bits a reader and a writer report, and the keys of the wakeups on `rd_wait` and
/// `wr_wait` (the `EPOLL*` values are the same).
const POLLIN: u32 = bindings::POLLIN | bindings::POLLRDNORM;
const POLLOUT: u32 = bindings::POLLOUT | bindings::POLLWRNORM;
/// A wakeup with no key: every waiter and every poller (fs/pipe.c's `wake_up_interruptible_all`).
const ANY: u32 = 0;
/// The key of a wakeup meant for the tasks asleep in read or write only, not for pollers:
/// `EPOLLMSG`, which no file reports and no poller asks for. Sleepers take any wakeup; poll,
/// epoll and io_uring entries pass over one whose key has none of their events.
const SLEEPERS: u32 = bindings::POLLMSG;
/// The most a waiting writer offers at a time from kernel memory (splice), copied: a bound on
/// the kernel memory one write holds.
const COPY_CHUNK: usize = 64 << 10;
/// On a machine with more than one CPU, ring copies larger than this are made a chunk at a
/// time, each committed (and the other side woken) before the next: the other side then copies
/// while this one does. At least `PIPE_BUF`, so an atomic write is always one chunk.
const RING_CHUNK: usize = 16 << 10;
/// Ring copies smaller than this are made with the mutex held: for a few bytes, dropping and
/// taking it again costs more than the other side could gain by copying meanwhile.
const UNLOCKED_COPY_MIN: usize = 256;
/// The `si_code`s `kill_fasync` puts in the `SIGIO` it sends.
const POLL_IN: i32 = bindings::POLL_IN as i32;
const POLL_OUT: i32 = bindings::POLL_OUT as i32;

/// The room a write of `total` bytes waits for: all of it if the write is atomic (at most
/// `atomic_max` bytes), otherwise any room at all, for it may be split.
fn write_needs(total: usize, atomic_max: usize) -> usize {
    if total <= atomic_max {
        total
    } else {
        1
    }
}

/// Whether poll reports a writer writable: when a write of `atomic_max` bytes, the largest
/// atomic one, would go in (the byte-ring form of pipe.c's "a free slot").
fn writable(room: usize, atomic_max: usize) -> bool {
    room >= atomic_max
}

/// Which of the writers asleep on `wr_wait` a wakeup must reach.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Wake {
    Nobody,
    /// One writer (and every poller): each sleeping writer could use the room, and the one
    /// woken passes the wakeup on when it is done and room is left (fs/pipe.c's
    /// `wake_next_writer`).
    One,
    /// Every writer: only some could use the room, so each must look.
    All,
}

/// Which writers to wake when the room grows from `before` to `after` bytes, with `min_need`
/// a lower bound on the room any sleeping writer waits for.
///
/// In fs/pipe.c every writer waits for the same thing, a free slot. Here a writer waits for the
/// room its write needs (`write_needs`): 1 byte, or all of an atomic write, at most
/// `atomic_max`. Once the room reaches `atomic_max` every writer fits, and one wakeup passed from
/// writer to writer serves them all (and the room became writable for pollers). Below that, a
/// writer woken for room it cannot use would keep the wakeup from a writer that could: so when
/// the room reaches the smallest need among the sleepers, all are woken and each looks. A woken writer that finds too little room, or one that is done, applies the same rule
/// to the room it leaves (`before` = 0), so a wakeup is never held by a writer that cannot use it.
fn writers_to_wake(before: usize, after: usize, atomic_max: usize, min_need: usize) -> Wake {
    if before < atomic_max && after >= atomic_max {
        Wake::One
    } else if before < min_need && after >= min_need {
        Wake::All
    } else {
        Wake::Nobody
    }
}

/// Whether a write about to copy into the ring must wake a reader: when the ring is empty, so
/// readers may be asleep (fs/pipe.c's `was_empty`), or before any write once an `EPOLLET` reader
/// has polled.
fn write_wakes_readers(was_empty: bool, pseudo_edgetrigger: bool) -> bool {
    was_empty || pseudo_edgetrigger
}

/// How a file was opened, from its `f_mode` and `f_flags`.
#[derive(Clone, Copy)]
pub(crate) struct OpenMode {
    /// Opened for reading (`FMODE_READ`): counted in `readers`.
    pub(crate) read: bool,
    /// Opened for writing (`FMODE_WRITE`): counted in `writers`.
    pub(crate) write: bool,
    /// `O_NONBLOCK` at open time.
    pub(crate) nonblock: bool,
}

/// What the mutex protects.
///
/// The ring first: its indices, capacity and claims then share the cache line of the mutex
/// that [`Pipe`] puts in front of it ([`crate::cacheline`]).
#[repr(C)]
struct PipeInner {
    ring: Ring,
    /// Open files that can read (fs/pipe.c: `pipe->readers`).
    readers: u32,
    /// Open files that can write (fs/pipe.c: `pipe->writers`).
    writers: u32,
    /// Readers ever opened. A writer waiting in open for a reader watches this change, so a
    /// reader that came and went meanwhile still counts (fs/pipe.c: `pipe->r_counter`).
    r_counter: u32,
    /// Writers ever opened (fs/pipe.c: `pipe->w_counter`).
    w_counter: u32,
    /// At most the room each writer asleep on `wr_wait` waits for (`usize::MAX`: none asleep
    /// since the last wake-all). A writer lowers it before it sleeps; waking all writers resets
    /// it, and those that still find too little room lower it again (`writers_to_wake`).
    min_need: usize,
    /// Writers waiting for readers to take their bytes, and (at `capacity=0`) readers waiting
    /// with their buffers: the bytes that move with one copy, outside the ring.
    handoffs: Handoffs,
    /// The values of the counters that change only with the mutex held ([`crate::stats`]).
    counts: Counts,
}

impl PipeInner {
    /// The ring's bytes that come before the first offer in the stream (all of them when
    /// nothing is offered): a read takes these first.
    #[inline]
    fn ring_ahead(&self) -> usize {
        match self.handoffs.head_mark() {
            Some(mark) => {
                // Reads stop at the mark, so the ring's count never passes it.
                let ahead = mark.wrapping_sub(self.ring.read_total());
                self.ring.len().min(ahead.try_into().unwrap_or(usize::MAX))
            }
            None => self.ring.len(),
        }
    }

    /// Whether a read has something to take now, from the ring or from a waiting writer.
    fn readable(&self) -> bool {
        !self.ring.is_empty() || self.handoffs.offered() > 0
    }

    /// Notes that a writer needing `need` bytes of room is about to sleep for it, and returns
    /// whom it must wake first: if it was `woken` and finds too little room, whoever could use
    /// that room, so that it does not keep a wakeup it cannot use (nobody if it was not woken).
    fn writer_sleeps(&mut self, need: usize, woken: bool, atomic_max: usize) -> Wake {
        let wake = if woken {
            self.writer_leaves(atomic_max)
        } else {
            Wake::Nobody
        };
        self.min_need = self.min_need.min(need);
        wake
    }

    /// Whom a woken writer passes the wakeup on to as it leaves the room it leaves, when it is
    /// done or goes back to sleep (fs/pipe.c's `wake_next_writer`): as if that room had just
    /// been made.
    fn writer_leaves(&mut self, atomic_max: usize) -> Wake {
        let room = self.ring.room();
        self.writers_to_wake(0, room, atomic_max)
    }

    /// Decides which writers a room change from `before` to `after` bytes must wake (see
    /// `writers_to_wake`). Deciding to wake them all resets `min_need`: each woken writer that
    /// still finds too little room lowers it again before it sleeps.
    fn writers_to_wake(&mut self, before: usize, after: usize, atomic_max: usize) -> Wake {
        let wake = writers_to_wake(before, after, atomic_max, self.min_need);
        if wake == Wake::All {
            self.min_need = usize::MAX;
        }
        wake
    }
}

/// A reader's or a writer's locks: its turn, that is its side's mutex (`rd_mutex` or
/// `wr_mutex`) on several CPUs and nothing on one ([`Pipe::take_turn`]), then the pipe's.
type Locked<'a> = (Option<MutexGuard<'a, ()>>, MutexGuard<'a, PipeInner>);

/// What poll, `FIONREAD` and fdinfo read without the mutex, as `pipe_poll` reads `head_tail`,
/// `readers`, `writers` and `w_counter` with `READ_ONCE`.
///
/// Written only with the mutex held, by [`Pipe::publish`], from the [`PipeInner`] it guards.
/// `queued`, which every read and write updates, has a cache line to itself and the rest,
/// which opens, closes and waits update.
#[repr(C)]
struct Unlocked {
    _line: CacheLine,
    queued: Atomic<usize>,
    /// Bytes waiting writers offer, and room in the buffers of readers waiting in read.
    offered: Atomic<usize>,
    slot_room: Atomic<usize>,
    readers: Atomic<u32>,
    writers: Atomic<u32>,
    w_counter: Atomic<u32>,
}

/// The one pipe behind `/dev/mini_pipe`, shared by every open file.
///
/// Laid out for a reader and a writer on two CPUs ([`crate::cacheline`]): the mutex with the
/// ring's indices in its cache line; each side's turn and copy mutexes (`rd_mutex` and
/// `rd_copy`, `wr_mutex` and `wr_copy`), which only that side takes but for a waiter, on a line
/// per side; the wait queues; what poll reads ([`Unlocked`]) and the counters ([`Stats`]) on
/// lines of their own; last what no read or write changes.
#[pin_data]
#[repr(C)]
pub(crate) struct Pipe {
    #[pin]
    inner: Mutex<PipeInner>,
    _rd_line: CacheLine,
    /// Readers take turns: one at a time claims and copies the ring's bytes. Taken before
    /// `inner`, and released while the reader sleeps.
    #[pin]
    rd_mutex: Mutex<()>,
    /// Held by the reader whose copy runs without `inner`, from its claim to its commit: what a
    /// writer waiting for that copy waits on ([`Pipe::await_copy`]).
    #[pin]
    rd_copy: Mutex<()>,
    _wr_line: CacheLine,
    /// Writers take turns, as readers do: one at a time claims and fills the ring's room.
    #[pin]
    wr_mutex: Mutex<()>,
    /// `rd_copy`'s counterpart for a writer's copy.
    #[pin]
    wr_copy: Mutex<()>,
    _wait_line: CacheLine,
    /// Readers wait here for data, and opens wait here for a partner (as in fs/pipe.c);
    /// poll and epoll wait here for readability.
    #[pin]
    rd_wait: WaitQueue,
    /// Writers wait here for room; poll and epoll for writability.
    #[pin]
    wr_wait: WaitQueue,
    unlocked: Unlocked,
    /// What happened so far (debugfs and fdinfo).
    stats: Stats,
    _fixed_line: CacheLine,
    /// Files of readers that asked for `SIGIO` (`O_ASYNC`).
    fasync_readers: FasyncList,
    /// Files of writers that asked for `SIGIO`.
    fasync_writers: FasyncList,
    /// The ring's size in bytes.
    capacity: usize,
    /// Writes of at most this many bytes are atomic: `PIPE_BUF`, or the capacity if smaller.
    /// It is also the room poll waits for before it reports a writer may write.
    atomic_max: usize,
    /// Whether the kernel may run more than one CPU (`nr_cpu_ids`). With one, nothing runs
    /// while a copy does: copies are made whole and with the mutex held ([`Pipe::chunk`],
    /// [`Pipe::unlocked_min`]), the turns are not taken ([`Pipe::take_turn`]), and wakeups are
    /// sync ones ([`Pipe::sync_wakeups`]).
    smp: bool,
    /// An `EPOLLET` reader has polled: from then on every write wakes readers, not only a
    /// write into an empty ring, because edge-triggered epoll users have always relied on
    /// getting an event per write (fs/pipe.c: `pipe->pseudo_edgetrigger`).
    pseudo_edgetrigger: Atomic<bool>,
    /// Readers that wait with a slot ([`Pipe::read_into_slot`]) wait here, apart from `rd_wait`,
    /// so that bytes for the ring do not wake them and bytes for a slot wake no other reader.
    #[pin]
    slot_wait: WaitQueue,
}

impl Pipe {
    /// A pipe whose ring holds `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- new_mutex!(PipeInner {
                ring: Ring::new(capacity)?,
                readers: 0,
                writers: 0,
                r_counter: 0,
                w_counter: 0,
                min_need: usize::MAX,
                handoffs: Handoffs::new(),
                counts: Counts::default(),
            }),
            _rd_line: CacheLine::new(),
            rd_mutex <- new_mutex!((), "mini_pipe::rd_mutex"),
            rd_copy <- new_mutex!((), "mini_pipe::rd_copy"),
            _wr_line: CacheLine::new(),
            wr_mutex <- new_mutex!((), "mini_pipe::wr_mutex"),
            wr_copy <- new_mutex!((), "mini_pipe::wr_copy"),
            _wait_line: CacheLine::new(),
            rd_wait <- new_wait_queue!("mini_pipe::rd_wait"),
            wr_wait <- new_wait_queue!("mini_pipe::wr_wait"),
            _fixed_line: CacheLine::new(),
            fasync_readers: FasyncList::new(),
            fasync_writers: FasyncList::new(),
            // Before `capacity`: the initialiser shadows each field's name once it is set.
            // A rendezvous pipe holds no byte, but its writes of up to PIPE_BUF are atomic too.
            atomic_max: if capacity == 0 {
                PIPE_BUF
            } else {
                PIPE_BUF.min(capacity)
            },
            capacity,
            unlocked: Unlocked {
                _line: CacheLine::new(),
                queued: Atomic::new(0),
                offered: Atomic::new(0),
                slot_room: Atomic::new(0),
                readers: Atomic::new(0),
                writers: Atomic::new(0),
                w_counter: Atomic::new(0),
            },
            pseudo_edgetrigger: Atomic::new(false),
            stats: Stats::new(),
            smp: kernel::cpu::nr_cpu_ids() > 1,
            slot_wait <- new_wait_queue!("mini_pipe::slot_wait"),
        })
    }

    /// Copies what poll, `FIONREAD` and fdinfo read into [`Unlocked`]. Called with the mutex
    /// held (`inner` is its guard's data) after every change to it they could see.
    fn publish(&self, inner: &PipeInner) {
        let u = &self.unlocked;
        u.queued.store(inner.ring.len(), Relaxed);
        self.publish_handoffs(inner);
        u.readers.store(inner.readers, Relaxed);
        u.writers.store(inner.writers, Relaxed);
        u.w_counter.store(inner.w_counter, Relaxed);
    }

    /// [`Pipe::publish`] for a change to the offers or slots.
    fn publish_handoffs(&self, inner: &PipeInner) {
        let u = &self.unlocked;
        u.offered.store(inner.handoffs.offered(), Relaxed);
        u.slot_room.store(inner.handoffs.slot_room(), Relaxed);
    }

    /// [`Pipe::publish`] for a read or write, which changes only the bytes queued.
    fn publish_queued(&self, inner: &PipeInner) {
        self.unlocked.queued.store(inner.ring.len(), Relaxed);
    }

    /// Whether the wakeup a read or write sends after its copy, as it returns, is a sync one.
    ///
    /// fs/pipe.c's are: the hint that the waker is about to sleep. On one CPU that keeps the
    /// woken task from preempting the waker for the few instructions it has left. On several,
    /// the scheduler also takes the hint as a reason to run the woken task on the waker's CPU
    /// (`wake_affine`), while the waker often goes on (to its next read or write) and the other
    /// CPU may be idle: the two then share one CPU and switch by turns. So there the wakeup is a
    /// plain one.
    ///
    /// The wakeup of the other side between two chunks of a copy ([`RING_CHUNK`]) is never a
    /// sync one: the waker goes on copying.
    fn sync_wakeups(&self) -> bool {
        !self.smp
    }

    /// The most a ring copy moves before it is committed and the other side woken:
    /// [`RING_CHUNK`] on several CPUs, everything on one (nothing could run meanwhile).
    fn chunk(&self) -> usize {
        if self.smp {
            RING_CHUNK
        } else {
            usize::MAX
        }
    }

    /// Ring copies of this many bytes or more drop the mutex: [`UNLOCKED_COPY_MIN`] on several
    /// CPUs, none on one (nothing could use the mutex meanwhile).
    fn unlocked_min(&self) -> usize {
        if self.smp {
            UNLOCKED_COPY_MIN
        } else {
            usize::MAX
        }
    }

    /// Whether a reader with nothing to read waits with its buffer pinned, for writers to copy
    /// into ([`Pipe::read_into_slot`]), for a read of `want` bytes: at `capacity=0`, where
    /// there is no ring; and on one CPU, for a read of more than the ring holds, by the pipe's
    /// one reader, if it has no slot already (a file may be read by several threads).
    ///
    /// On one CPU, such a reader that sleeps leaves its buffer as a slot, and the writers that
    /// run meanwhile fill it before the ring: a 64 KiB read through a 4 KiB ring then costs one
    /// sleep instead of sixteen. The reader sleeps on `slot_wait`, which a writer wakes, with a
    /// sync wakeup, once it has put bytes in the slot, so the writer goes on until the slot and
    /// the ring are full. What it costs is a pin of the reader's pages at every sleep, which
    /// pays only when the slot holds more than the ring could: with a read no larger than the
    /// ring, 512-byte writes through a 64 KiB ring fell to 0.78x-0.92x the FIFO's throughput
    /// (logs/bench/NOTES.md, section 14). With several readers, fs/pipe.c's way is kept too: a
    /// slot's reader and those woken for the ring's bytes then took turns at the CPU, at 1.6x to
    /// 1.9x the FIFO's context switches. On several CPUs the two sides copy at once instead
    /// (DIFF.md, "Locking"), which a slot, filled with the mutex held, would undo.
    fn reader_slots(&self, inner: &PipeInner, want: usize) -> bool {
        self.capacity == 0
            || (!self.smp
                && want > self.capacity
                && inner.readers == 1
                && inner.handoffs.slots() == 0)
    }

    /// Takes a reader's or a writer's turn (`turn`: `rd_mutex` or `wr_mutex`), to be held while
    /// it claims and copies, before `inner`.
    ///
    /// On one CPU it takes nothing: every copy there is made with `inner` held
    /// ([`Pipe::unlocked_min`]), so no claim is out while `inner` is free, and `inner` alone
    /// makes the two sides, and the tasks of each, take turns, as fs/pipe.c's one mutex does.
    /// (A second claim of the same kind would still be refused by [`crate::claim`], never
    /// honoured.)
    fn take_turn<'a>(&self, turn: &'a Mutex<()>) -> Option<MutexGuard<'a, ()>> {
        self.smp.then(|| turn.lock())
    }

    /// Registers a new open file and waits for its partner, as `fifo_open` does.
    ///
    /// A blocking reader waits until some writer has opened, and a blocking writer until some
    /// reader has; a non-blocking writer with no reader fails with `ENXIO`; `O_RDWR` never waits.
    /// A signal ends the wait with `ERESTARTSYS` and leaves the counts as they were.
    ///
    /// Returns the value for the file's `f_pipe`: for a reader opened with `O_NONBLOCK` while
    /// no writer was there, the writer count it saw, so that poll reports no `POLLHUP` until a
    /// writer has come and gone (as `fifo_open`); 0 otherwise.
    pub(crate) fn open(&self, mode: OpenMode) -> Result<u64> {
        let mut f_pipe = 0;
        let mut inner = self.inner.lock();
        match (mode.read, mode.write) {
            (true, false) => {
                inner.r_counter = inner.r_counter.wrapping_add(1);
                inner.readers += 1;
                self.publish(&inner);
                if inner.readers == 1 {
                    self.wake_up_partner();
                }
                if inner.writers == 0 && mode.nonblock {
                    f_pipe = u64::from(inner.w_counter);
                } else if inner.writers == 0 {
                    let seen = inner.w_counter;
                    let arrived;
                    (inner, arrived) = self.wait_for_partner(inner, |i| i.w_counter != seen);
                    if !arrived {
                        inner.readers -= 1;
                        self.publish(&inner);
                        if inner.readers == 0 {
                            self.wr_wait.wake_one(ANY);
                        }
                        return Err(ERESTARTSYS);
                    }
                }
            }
            (false, true) => {
                if mode.nonblock && inner.readers == 0 {
                    return Err(ENXIO);
                }
                inner.w_counter = inner.w_counter.wrapping_add(1);
                inner.writers += 1;
                self.publish(&inner);
                if inner.writers == 1 {
                    self.wake_up_partner();
                }
                if inner.readers == 0 {
                    let seen = inner.r_counter;
                    let arrived;
                    (inner, arrived) = self.wait_for_partner(inner, |i| i.r_counter != seen);
                    if !arrived {
                        inner.writers -= 1;
                        self.publish(&inner);
                        if inner.writers == 0 {
                            self.rd_wait.wake_all(ANY);
                        }
                        return Err(ERESTARTSYS);
                    }
                }
            }
            (true, true) => {
                inner.r_counter = inner.r_counter.wrapping_add(1);
                inner.w_counter = inner.w_counter.wrapping_add(1);
                inner.readers += 1;
                inner.writers += 1;
                self.publish(&inner);
                if inner.readers == 1 || inner.writers == 1 {
                    self.wake_up_partner();
                }
            }
            // The VFS does not call open for a file that can neither read nor write.
            (false, false) => return Err(EINVAL),
        }
        Ok(f_pipe)
    }

    /// Wakes everybody waiting in open for a partner (fs/pipe.c: `wake_up_partner`).
    fn wake_up_partner(&self) {
        self.rd_wait.wake_all(ANY);
    }

    /// Waits on `rd_wait` until `arrived` holds. Returns the guard, and false if a signal ended
    /// the wait first. Like fs/pipe.c's `wait_for_partner`, the wait is not exclusive: every
    /// opener waiting for a partner wakes when one comes.
    fn wait_for_partner<'a>(
        &self,
        mut inner: MutexGuard<'a, PipeInner>,
        arrived: impl Fn(&PipeInner) -> bool,
    ) -> (MutexGuard<'a, PipeInner>, bool) {
        if !arrived(&inner) {
            inner.counts.open_waits.add(1, &self.stats.open_waits);
        }
        while !arrived(&inner) {
            let signal;
            (inner, signal) = self.rd_wait.wait(inner, Sleep::Shared);
            if signal {
                let arrived = arrived(&inner);
                return (inner, arrived);
            }
        }
        (inner, true)
    }

    /// Unregisters a closing file (fs/pipe.c: `pipe_release`).
    ///
    /// When that leaves one side with no partner, both sides are woken and signalled: readers
    /// then see end-of-file and `POLLHUP`, writers `EPIPE` and `POLLERR`. When nobody has the
    /// pipe open any more, whatever is still queued is discarded, as a FIFO frees its buffers.
    pub(crate) fn release(&self, mode: OpenMode) {
        let mut inner = self.inner.lock();
        if mode.read {
            inner.readers -= 1;
        }
        if mode.write {
            inner.writers -= 1;
        }
        let (no_readers, no_writers) = (inner.readers == 0, inner.writers == 0);
        if no_readers && no_writers {
            // Nobody is left to poll or wait: the pipe starts afresh, without what was queued in
            // the ring or left in detached offers. (Nobody waits with a buffer either: each
            // takes its offer or slot back before it leaves.)
            inner.handoffs.discard_detached();
            debug_assert!(inner.handoffs.is_empty());
            inner.ring.clear();
            inner.min_need = usize::MAX;
            self.pseudo_edgetrigger.store(false, Relaxed);
        }
        self.publish(&inner);
        drop(inner);
        if no_readers != no_writers {
            self.rd_wait.wake_all(ANY);
            self.slot_wait.wake_all(ANY);
            self.wr_wait.wake_all(ANY);
            self.fasync_readers.kill(POLL_IN);
            self.fasync_writers.kill(POLL_OUT);
        }
    }

    /// Reports what `file` (opened as `mode`) could do now, and registers `table` on the wait
    /// queues whose wakeups change that (fs/pipe.c: `pipe_poll`). Never takes the mutex.
    ///
    /// A reader: `POLLIN` with data queued, `POLLHUP` once no writer is left (but, for a reader
    /// opened non-blocking before any writer, not until one has come: `f_pipe`). A writer:
    /// `POLLOUT` when an atomic write fits, that is `PIPE_BUF` bytes of room (or the whole ring
    /// if smaller), the byte-ring form of pipe.c's "a free slot"; `POLLERR` once no reader is
    /// left.
    pub(crate) fn poll(
        &self,
        file: &File,
        table: &PollTable<'_>,
        mode: OpenMode,
        f_pipe: u64,
    ) -> u32 {
        if mode.read && table.edge_triggered() && !self.pseudo_edgetrigger.load(Relaxed) {
            self.pseudo_edgetrigger.store(true, Relaxed);
        }
        // Register first, then look: a change after the look wakes the table (every wakeup
        // comes after the change it reports is published).
        if mode.read {
            table.register(file, &self.rd_wait);
        }
        if mode.write {
            table.register(file, &self.wr_wait);
        }
        smp_mb();
        let u = &self.unlocked;
        let mut mask = 0;
        if mode.read {
            if u.queued.load(Relaxed) > 0 || u.offered.load(Relaxed) > 0 {
                mask |= POLLIN;
            }
            if u.writers.load(Relaxed) == 0 && f_pipe != u64::from(u.w_counter.load(Relaxed)) {
                mask |= bindings::POLLHUP;
            }
        }
        if mode.write {
            // At `capacity=0`, a write goes in without waiting only into a reader waiting in
            // read.
            let writable = if self.capacity == 0 {
                u.slot_room.load(Relaxed) > 0
            } else {
                writable(self.capacity - u.queued.load(Relaxed), self.atomic_max)
            };
            if writable {
                mask |= POLLOUT;
            }
            // Linux reports POLLERR for a FIFO with no reader, as for a pipe.
            if u.readers.load(Relaxed) == 0 {
                mask |= bindings::POLLERR;
            }
        }
        mask
    }

    /// Adds `file` to (`on`) or removes it from the `SIGIO` lists of its sides, with `helper`
    /// doing the list operation (fs/pipe.c: `pipe_fasync`).
    pub(crate) fn fasync(
        &self,
        mode: OpenMode,
        on: bool,
        helper: impl Fn(&FasyncList, bool) -> Result,
    ) -> Result {
        let _inner = self.inner.lock();
        if mode.read {
            helper(&self.fasync_readers, on)?;
        }
        if mode.write {
            if let Err(e) = helper(&self.fasync_writers, on) {
                // Only adding can fail: undo the reader half.
                if mode.read {
                    let _ = helper(&self.fasync_readers, false);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Wakes the writers `wake` says, with the key for room. `sync` hints that the caller is
    /// about to return or sleep, and not holding the mutex.
    fn wake_writers(&self, wake: Wake, sync: bool) {
        match wake {
            Wake::Nobody => {}
            Wake::One if sync => self.wr_wait.wake_one_sync(POLLOUT),
            Wake::One => self.wr_wait.wake_one(POLLOUT),
            Wake::All => self.wr_wait.wake_all(POLLOUT),
        }
    }

    /// Wakes one reader, with the key for data; `sync` as for [`Pipe::wake_writers`].
    fn wake_reader(&self, sync: bool) {
        if sync {
            self.rd_wait.wake_one_sync(POLLIN);
        } else {
            self.rd_wait.wake_one(POLLIN);
        }
    }

    /// Reads into `dst` (fs/pipe.c: `pipe_read`).
    ///
    /// Waits while there is nothing to read and a writer exists, then returns what is there up
    /// to `dst`'s length: it never waits once something has been copied. What is there is the
    /// ring's bytes and, after them in the order the writes came, the bytes of writers waiting
    /// for readers ([`crate::handoff`]). Nothing to read with no writer is end-of-file (0).
    /// `nonblock` turns the wait into `EAGAIN`; a signal into `ERESTARTSYS`. At `capacity=0`, and
    /// on one CPU for a read larger than the ring ([`Pipe::reader_slots`]), a reader waits with
    /// its buffer pinned, and the next writers copy straight into it.
    pub(crate) fn read(&self, dst: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        let want = dst.len();
        if want == 0 {
            return Ok(0);
        }
        // Readers take turns, then take the mutex only to claim and to commit.
        let mut rd = self.take_turn(&self.rd_mutex);
        let mut inner = self.inner.lock();
        inner.counts.reads.add(1, &self.stats.reads);
        // Set once this reader has slept: it was woken exclusively, so if data is left after
        // it has taken its share, it passes the wakeup on (fs/pipe.c: `wake_next_reader`).
        let mut woken = false;
        // Set once this reader has waited for a writer's copy ([`Pipe::await_copy`]), which it
        // does at most once between two sleeps: a wait that cannot be interrupted stays short.
        let mut awaited = false;
        // The writers to wake once the mutex is dropped (fs/pipe.c: `wake_writer`).
        let mut wake_writers = Wake::Nobody;
        let result = loop {
            let ahead = inner.ring_ahead();
            if ahead > 0 {
                // The ring's bytes up to the first waiting writer's, if any.
                let mut copied;
                let faulted;
                (inner, copied, faulted, wake_writers) = self.read_ring(inner, dst, want);
                if !faulted && copied < want {
                    copied += self.take_offers(&mut inner, dst, want - copied);
                }
                break if copied == 0 { Err(EFAULT) } else { Ok(copied) };
            }
            if inner.handoffs.offered() > 0 {
                let copied = self.take_offers(&mut inner, dst, want);
                break if copied == 0 { Err(EFAULT) } else { Ok(copied) };
            }
            if inner.writers == 0 {
                break Ok(0);
            }
            if nonblock {
                self.stats.eagain.add(1);
                break Err(EAGAIN);
            }
            if self.smp && !awaited && inner.ring.write_claimed() > 0 {
                // A writer is copying bytes in: wait for its copy rather than sleep.
                awaited = true;
                (rd, inner) = self.await_copy((rd, inner), &self.wr_copy);
                continue;
            }
            let budget = inner.handoffs.pin_budget();
            if self.reader_slots(&inner, want) && budget > 0 {
                // Wait with the buffer pinned, for a writer to fill. Memory with nothing to pin
                // (kernel memory, as from splice), or that cannot be pinned now, waits below
                // for a writer's bytes instead; a bad buffer then fails in the copy, as for a
                // FIFO.
                let max = want.min(MAX_PINNED_PAGES * PAGE_SIZE).min(budget);
                if let Ok(Some(pages)) = PinnedPages::from_dest(dst, max) {
                    if pages.len() > 0 {
                        let result;
                        ((rd, inner), result) = self.read_into_slot((rd, inner), pages);
                        break result;
                    }
                }
            }
            let stats = &self.stats;
            if !woken {
                inner.counts.reads_slept.add(1, &stats.reads_slept);
            }
            inner.counts.reader_sleeps.add(1, &stats.reader_sleeps);
            stats.readers_asleep.inc_locked();
            let signal;
            ((rd, inner), signal) = self.rd_wait.wait((rd, inner), Sleep::Exclusive);
            stats.readers_asleep.dec_locked();
            if signal {
                // A signal ended the wait. If a writer's wakeup had picked this reader, it
                // must not be lost: pass it on while there is data (pipe.c gets the same from
                // prepare_to_wait_event, which lets a woken exclusive waiter go on).
                let pass_on = inner.readable();
                drop(inner);
                if pass_on {
                    self.rd_wait.wake_one_sync(POLLIN);
                }
                return Err(ERESTARTSYS);
            }
            woken = true;
            awaited = false;
        };
        let wake_next_reader = woken && inner.readable();
        drop(inner);
        drop(rd);
        self.wake_writers(wake_writers, self.sync_wakeups());
        if wake_next_reader {
            self.rd_wait.wake_one_sync(POLLIN);
        }
        self.fasync_writers.kill(POLL_OUT);
        result
    }

    /// Copies the ring's bytes into `dst`, up to `want` of them, those there ahead of any
    /// offer: the reader's part of [`Pipe::read`], with its turn (`rd_mutex`) held. When they
    /// were whole chunks, it goes on with bytes that arrived while it copied, as fs/pipe.c's
    /// `pipe_read` does with any.
    ///
    /// The copy runs without the mutex, under a claim on the bytes ([`crate::claim`]), so a
    /// writer may fill the ring's room meanwhile. On several CPUs it goes a [`RING_CHUNK`] at
    /// a time, each committed before the next, and the writers that the room left by a chunk
    /// lets write are woken at once, to fill it while this reader copies on. Returns the
    /// guard, the bytes copied, whether `dst` faulted, and the writers to wake for the room
    /// left by the last chunk, once the mutex is dropped.
    fn read_ring<'a>(
        &self,
        mut inner: MutexGuard<'a, PipeInner>,
        dst: &mut IovIterDest<'_>,
        want: usize,
    ) -> (MutexGuard<'a, PipeInner>, usize, bool, Wake) {
        let lock = inner.lock_ref();
        let mut copied = 0;
        let mut wake = Wake::Nobody;
        // The bytes there at the start; more are taken only while the copies go in whole
        // chunks, a stream of large writes.
        let mut n = inner.ring_ahead().min(want);
        loop {
            if copied == n && copied % self.chunk() == 0 {
                n = (copied + inner.ring_ahead()).min(want);
            }
            let chunk = (n - copied).min(self.chunk());
            if chunk == 0 {
                return (inner, copied, false, wake);
            }
            if wake != Wake::Nobody {
                // The room the last chunk left, for writers to fill while this one is copied.
                drop(inner);
                self.wake_writers(core::mem::replace(&mut wake, Wake::Nobody), false);
                inner = lock.lock();
                continue;
            }
            // Readers take turns (`rd_mutex`): no other read claim can be out.
            let Ok(claim) = inner.ring.claim_read(chunk) else {
                return (inner, copied, true, wake);
            };
            if self.smp && chunk == inner.ring.len() {
                // This read empties the ring and will have nothing to do until a writer has
                // run: wake the writers its room lets write now, so that their wake-up runs
                // while it copies (`write` has them wait for the copy, not sleep again).
                let (before, after) = (inner.ring.room(), inner.ring.capacity());
                match writers_to_wake(before, after, self.atomic_max, inner.min_need) {
                    Wake::Nobody => {}
                    Wake::One => self.wr_wait.wake_one(SLEEPERS),
                    Wake::All => self.wr_wait.wake_all(SLEEPERS),
                }
            }
            let (got, copying);
            (inner, got, copying) = self.copy_claimed(inner, chunk, &self.rd_copy, || {
                claim.copy_with(|seg| dst.copy_to_iter(seg))
            });
            let before = inner.ring.room();
            inner.ring.consume(claim, got);
            drop(copying);
            self.publish_queued(&inner);
            inner.counts.bytes_read.add(got, &self.stats.bytes_read);
            copied += got;
            // A faulting copy frees less room than foreseen; a woken writer that then finds too
            // little passes the wakeup on or waits again (`write`).
            let after = inner.ring.room();
            wake = inner.writers_to_wake(before, after, self.atomic_max);
            if got < chunk {
                return (inner, copied, true, wake);
            }
        }
    }

    /// Runs `copy`, a copy of `bytes` bytes under a claim, without the mutex, unless it is
    /// smaller than `unlocked_min`: for a few bytes, dropping the mutex and taking it again
    /// costs more than the other side could do meanwhile. Returns the guard, what `copy`
    /// returned, and, for a copy made without the mutex, `copying` (this side's `rd_copy` or
    /// `wr_copy`) held, for the caller to let go once the claim is handed back: the other side
    /// waits on it for this copy ([`Pipe::await_copy`]).
    ///
    /// `copying` is only tried, with `inner` held: a try never waits, so `inner` is never
    /// waited for with it and it with `inner` in opposite orders. It is free but for an
    /// instant, when a waiter of an earlier copy takes and drops it; the copy then goes on
    /// without it, and a waiter finds it free, the claim still out, and sleeps instead.
    fn copy_claimed<'a, 'b>(
        &self,
        inner: MutexGuard<'a, PipeInner>,
        bytes: usize,
        copying: &'b Mutex<()>,
        copy: impl FnOnce() -> usize,
    ) -> (MutexGuard<'a, PipeInner>, usize, Option<MutexGuard<'b, ()>>) {
        if bytes < self.unlocked_min() {
            return (inner, copy(), None);
        }
        let held = copying.try_lock();
        let lock = inner.lock_ref();
        drop(inner);
        let copied = copy();
        (lock.lock(), copied, held)
    }

    /// Waits until the copy the other side is making without the mutex has been handed back
    /// (`copying`: its `rd_copy` or `wr_copy`, [`Pipe::copy_claimed`]), with none of this side's
    /// locks held, then takes them again.
    ///
    /// A reader with nothing to read that finds a writer copying bytes in (a writer without
    /// room enough that finds a reader copying out what would make it) waits this way rather
    /// than sleep: the mutex spins while its owner runs, so the wait overlaps the copy, and
    /// when the copier runs it costs no context switch, where a sleep costs one and a wakeup.
    /// The wait is one copy of at most a [`RING_CHUNK`], and cannot be interrupted, so `read`
    /// and `write` wait so at most once between two sleeps. Nothing of this side is held
    /// meanwhile, so the two sides never wait for each other.
    fn await_copy<'a>(&self, held: Locked<'a>, copying: &Mutex<()>) -> Locked<'a> {
        let locks = held.unlock();
        drop(copying.lock());
        Locked::relock(locks)
    }

    /// Takes up to `max` bytes that waiting writers offer, in order, into `dst`, as long as no
    /// byte of the ring comes before them. Each writer whose last byte is taken is woken.
    fn take_offers(&self, inner: &mut PipeInner, dst: &mut IovIterDest<'_>, max: usize) -> usize {
        if inner.handoffs.offered() == 0 {
            // The common case, a read that takes less than its buffer: nothing to count or
            // publish.
            return 0;
        }
        let stats = &self.stats;
        let mut copied = 0;
        while copied < max && inner.ring_ahead() == 0 && inner.handoffs.offered() > 0 {
            let taken = inner.handoffs.take(dst, max - copied);
            copied += taken.bytes;
            let direct = taken.direct;
            inner.counts.bytes_direct.add(direct, &stats.bytes_direct);
            if taken.bytes == 0 {
                // `dst` faulted.
                break;
            }
        }
        inner.counts.bytes_read.add(copied, &stats.bytes_read);
        self.publish_handoffs(inner);
        copied
    }

    /// Waits, at `capacity=0`, with the reader's buffer (`pages`) left for writers to fill, until
    /// a writer has put bytes in it, the last writer has left (end-of-file) or a signal came.
    /// Returns the guard and what the read returns: the bytes that arrived, whatever else
    /// happened.
    fn read_into_slot<'a>(
        &self,
        (mut rd, mut inner): Locked<'a>,
        pages: PinnedPages,
    ) -> (Locked<'a>, Result<usize>) {
        let ticket = match inner.handoffs.open_slot(pages, current_task()) {
            Ok(ticket) => ticket,
            Err(e) => return ((rd, inner), Err(e)),
        };
        self.publish_handoffs(&inner);
        if self.capacity == 0 {
            // A write would go in now: tell writers that poll, or asked for SIGIO. (With a
            // ring, one would already: the ring is empty.)
            self.wr_wait.wake_one(POLLOUT);
            self.fasync_writers.kill(POLL_OUT);
        }
        let stats = &self.stats;
        inner.counts.reads_slept.add(1, &stats.reads_slept);
        stats.readers_asleep.inc_locked();
        let signal = loop {
            inner.counts.reader_sleeps.add(1, &stats.reader_sleeps);
            // Shared: once it has filled some of its slot, a writer wakes this reader by name
            // (`write_sync`), or wakes the queue (`write`, with a ring: one slot at a time).
            let signal;
            ((rd, inner), signal) = self.slot_wait.wait((rd, inner), Sleep::Shared);
            if signal || inner.handoffs.slot_filled(&ticket) > 0 || inner.writers == 0 {
                break signal;
            }
        };
        stats.readers_asleep.dec_locked();
        let filled = inner.handoffs.close_slot(ticket);
        self.publish_handoffs(&inner);
        inner.counts.bytes_read.add(filled, &stats.bytes_read);
        let result = match filled {
            0 if signal => Err(ERESTARTSYS),
            filled => Ok(filled),
        };
        ((rd, inner), result)
    }

    /// Writes from `src` (fs/pipe.c: `pipe_write`).
    ///
    /// A write of at most `PIPE_BUF` bytes (or the capacity, if smaller) goes in all at once or
    /// not at all; a larger one takes whatever room there is and waits for more. A blocking
    /// write returns once everything is queued, or early with the count so far when a signal
    /// arrives or the last reader leaves (the error when nothing moved). No reader: `EPIPE`,
    /// and `sigpipe` is set to true for the caller, which sends `SIGPIPE` unless the write
    /// asked for none (`RWF_NOSIGNAL`).
    ///
    /// At `capacity=0`, and for a blocking `sync` write (`O_DSYNC`, `O_SYNC`), the write waits
    /// for readers instead of the ring ([`Pipe::write_sync`]).
    pub(crate) fn write(
        &self,
        src: &mut IovIterSource<'_>,
        nonblock: bool,
        sync: bool,
        sigpipe: &mut bool,
    ) -> Result<usize> {
        let total = src.len();
        if total == 0 {
            return Ok(0);
        }
        if self.capacity == 0 || (sync && !nonblock) {
            return self.write_sync(src, nonblock, sigpipe);
        }
        let need = write_needs(total, self.atomic_max);
        let mut written = 0;
        // Writers take turns, then take the mutex only to claim and to commit.
        let mut wr = self.take_turn(&self.wr_mutex);
        let mut inner = self.inner.lock();
        inner.counts.writes.add(1, &self.stats.writes);
        // Set once this writer has slept: it was woken exclusively (or by a signal, which may
        // have taken a wakeup meant for it), so it passes the wakeup on when it leaves room that
        // another writer could use (fs/pipe.c: `wake_next_writer`).
        let mut woken = false;
        // Set once this writer has waited for a reader's copy, at most once between two sleeps
        // (as in `read`).
        let mut awaited = false;
        // Readers to wake once the bytes are in and the mutex dropped: on `rd_wait`, for the
        // ring's bytes, and on `slot_wait`, for a slot's.
        let mut wake_readers = false;
        let mut wake_slot = false;
        let result = loop {
            if inner.readers == 0 {
                *sigpipe = true;
                break count_or(written, EPIPE);
            }
            let slot_room = if self.smp {
                0
            } else {
                inner.handoffs.slot_room()
            };
            if slot_room > 0 && inner.ring.is_empty() && inner.handoffs.offered() == 0 {
                // Readers wait in read with their buffers pinned (one CPU: `reader_slots`),
                // and no byte comes before this write's: straight into their buffers. The
                // reader is woken as for bytes in the ring, once the mutex is dropped, but on
                // `slot_wait`. The rest of an atomic write goes into the ring, empty, so it
                // fits.
                let left = total - written;
                let copied = self.fill_slots(&mut inner, src, left, false);
                written += copied;
                wake_slot |= copied > 0;
                if copied < left.min(slot_room) {
                    // `src` faulted: keep what arrived, report it (or the fault).
                    break count_or(written, EFAULT);
                }
                if written == total {
                    break Ok(written);
                }
                continue;
            }
            let room = inner.ring.room();
            if room >= need {
                // All of an atomic write fits (`need`); a larger one takes what room there is.
                let n = (total - written).min(room);
                let (copied, wake);
                (inner, copied, wake) = self.write_ring(inner, src, n);
                wake_readers |= wake;
                written += copied;
                if copied < n {
                    // `src` faulted: keep what arrived, report it (or the fault).
                    break count_or(written, EFAULT);
                }
                if written == total {
                    break Ok(written);
                }
                continue;
            }
            if nonblock {
                self.stats.eagain.add(u64::from(written == 0));
                break count_or(written, EAGAIN);
            }
            // A reader copying out what makes room enough is waited for rather than slept on.
            let claimed = inner.ring.read_claimed();
            let awaits_copy = self.smp && !awaited && claimed > 0 && room + claimed >= need;
            // About to wait for room, for that copy or asleep. Readers that poll hear of the
            // bytes now, not once the write is done, which may be never if they are the ones to
            // make room; so do the `SIGIO` users among them (pipe.c wakes and signals before
            // its wait, too). The wakeup is a sync one only before a sleep: a writer waiting
            // for a copy runs on.
            if core::mem::take(&mut wake_readers) {
                self.wake_reader(!awaits_copy);
            }
            if core::mem::take(&mut wake_slot) {
                // Slots are filled on one CPU only, where nothing waits for a copy.
                self.slot_wait.wake_one_sync(ANY);
            }
            self.fasync_readers.kill(POLL_IN);
            if awaits_copy {
                awaited = true;
                (wr, inner) = self.await_copy((wr, inner), &self.rd_copy);
                continue;
            }
            // A woken writer that cannot use the room it found must not keep the wakeup from
            // one that could.
            let wake = inner.writer_sleeps(need, woken, self.atomic_max);
            self.wake_writers(wake, false);
            let stats = &self.stats;
            if !woken {
                inner.counts.writes_slept.add(1, &stats.writes_slept);
            }
            inner.counts.writer_sleeps.add(1, &stats.writer_sleeps);
            stats.writers_asleep.inc_locked();
            let signal;
            ((wr, inner), signal) = self.wr_wait.wait((wr, inner), Sleep::Exclusive);
            stats.writers_asleep.dec_locked();
            woken = true;
            awaited = false;
            if signal {
                break count_or(written, ERESTARTSYS);
            }
        };
        let wake_next_writer = if woken {
            inner.writer_leaves(self.atomic_max)
        } else {
            Wake::Nobody
        };
        drop(inner);
        drop(wr);
        if wake_slot {
            self.slot_wait.wake_one_sync(ANY);
        }
        if wake_readers {
            self.wake_reader(self.sync_wakeups());
        }
        self.fasync_readers.kill(POLL_IN);
        self.wake_writers(wake_next_writer, true);
        result
    }

    /// Copies up to `max` bytes of `src` into the slots of readers waiting in read
    /// ([`Handoffs::fill`], which wakes their readers if `wake_by_name`), and counts them.
    /// Returns the bytes copied; fewer than `max` and than the room means `src` faulted.
    fn fill_slots(
        &self,
        inner: &mut PipeInner,
        src: &mut IovIterSource<'_>,
        max: usize,
        wake_by_name: bool,
    ) -> usize {
        let copied = inner.handoffs.fill(src, max, wake_by_name);
        let stats = &self.stats;
        inner.counts.bytes_written.add(copied, &stats.bytes_written);
        inner.counts.bytes_direct.add(copied, &stats.bytes_direct);
        self.publish_handoffs(inner);
        copied
    }

    /// Copies `n` bytes from `src` into the ring, `n` being at most its room now: the writer's
    /// part of [`Pipe::write`], with its turn (`wr_mutex`) held.
    ///
    /// The copy runs without the mutex, under a claim on the room ([`crate::claim`]), so a
    /// reader may take the ring's bytes meanwhile; readers see none of it before it is
    /// committed. On several CPUs a copy of more than [`RING_CHUNK`] bytes (never an atomic
    /// write) goes a chunk at a time, and the readers a chunk lets read are woken at once, to
    /// take it while this writer copies on. Returns the guard, the bytes copied (fewer than `n`
    /// if `src` faulted), and whether readers are to be woken for the last chunk, once the
    /// mutex is dropped: when the ring was empty as the chunk went in (fs/pipe.c's
    /// `was_empty`, looked at when the bytes go in, for the ring may have emptied during the
    /// copy), or for an `EPOLLET` poller.
    fn write_ring<'a>(
        &self,
        mut inner: MutexGuard<'a, PipeInner>,
        src: &mut IovIterSource<'_>,
        n: usize,
    ) -> (MutexGuard<'a, PipeInner>, usize, bool) {
        let lock = inner.lock_ref();
        let mut copied = 0;
        loop {
            let chunk = (n - copied).min(self.chunk());
            // Writers take turns (`wr_mutex`): no other write claim can be out.
            let Ok(mut claim) = inner.ring.claim_write(chunk) else {
                return (inner, copied, false);
            };
            if self.smp && chunk == claim.len() && chunk == inner.ring.room() {
                // This copy fills the ring, and this writer will have nothing to do until a
                // reader has run: if the ring is empty, readers may be asleep; wake one now, so
                // that its wake-up runs while this copies (`read` has it wait for the copy).
                if inner.ring.is_empty() {
                    self.rd_wait.wake_one(SLEEPERS);
                }
            }
            let (got, copying);
            (inner, got, copying) = self.copy_claimed(inner, chunk, &self.wr_copy, || {
                claim.copy_with(|seg| src.copy_from_iter(seg))
            });
            let wake = got > 0
                && write_wakes_readers(
                    inner.ring.is_empty(),
                    self.pseudo_edgetrigger.load(Relaxed),
                );
            inner.ring.commit(claim, got);
            drop(copying);
            self.publish_queued(&inner);
            let (stats, queued) = (&self.stats, inner.ring.len());
            inner.counts.bytes_written.add(got, &stats.bytes_written);
            inner.counts.peak_queued.raise(queued, &stats.peak_queued);
            copied += got;
            if got < chunk || copied == n {
                return (inner, copied, wake);
            }
            if wake {
                drop(inner);
                self.wake_reader(false);
                inner = lock.lock();
            }
        }
    }

    /// Writes from `src` and waits until readers have taken every byte ([`crate::handoff`]):
    /// every write at `capacity=0`, and a blocking `O_DSYNC` or `O_SYNC` one on any pipe.
    ///
    /// The bytes never enter the ring. Into the buffers of readers waiting in read (at
    /// `capacity=0`) they go at once, with one copy; the rest is offered, behind whatever the
    /// ring holds, and the write sleeps until readers have taken it all. A signal or the last
    /// reader leaving ends the wait with the count readers took (the error when none; `EPIPE`
    /// and `sigpipe` as in [`Pipe::write`]), and the offer is taken back: nothing it held is
    /// read later. Except for an atomic write (at most `PIPE_BUF` bytes) that readers have begun
    /// to take: that one is committed whole, its rest left queued, and it returns its full count.
    /// A non-blocking write only fills the buffers of readers waiting now: a write
    /// of at most `PIPE_BUF` bytes all at once or not at all (`EAGAIN`), a larger one as much as
    /// they hold.
    fn write_sync(
        &self,
        src: &mut IovIterSource<'_>,
        nonblock: bool,
        sigpipe: &mut bool,
    ) -> Result<usize> {
        let total = src.len();
        let mut written = 0;
        // The writers' turn: no buffered write is halfway into the ring while this one finds
        // where in the stream its bytes go.
        let mut wr = self.take_turn(&self.wr_mutex);
        let mut inner = self.inner.lock();
        let stats = &self.stats;
        inner.counts.writes.add(1, &stats.writes);
        inner.counts.sync_writes.add(1, &stats.sync_writes);
        let mut slept = false;
        let result = loop {
            if inner.readers == 0 {
                *sigpipe = true;
                break count_or(written, EPIPE);
            }
            let left = total - written;
            let room = inner.handoffs.slot_room();
            // Straight into waiting readers' buffers, when no byte comes before this write's.
            let first = inner.ring.is_empty() && inner.handoffs.offered() == 0;
            let all_or_nothing = nonblock && total <= self.atomic_max;
            if first && room > 0 && (room >= left || !all_or_nothing) {
                let copied = self.fill_slots(&mut inner, src, left, true);
                written += copied;
                if copied < left.min(room) {
                    // `src` faulted: the bytes before the fault count, as for a buffered write.
                    break count_or(written, EFAULT);
                }
                if written == total {
                    break Ok(written);
                }
                continue;
            }
            if nonblock {
                stats.eagain.add(u64::from(written == 0));
                break count_or(written, EAGAIN);
            }
            // Offer the rest, and wait until readers have taken it.
            let budget = inner.handoffs.pin_budget();
            let bytes = match offer_from(src, left, self.atomic_max, budget) {
                Ok(bytes) => bytes,
                Err(e) => break count_or(written, e),
            };
            let mark = inner
                .ring
                .read_total()
                .wrapping_add(inner.ring.len() as u64);
            let ticket = match inner.handoffs.offer(mark, bytes, current_task()) {
                Ok(ticket) => ticket,
                Err(e) => break count_or(written, e),
            };
            self.publish_handoffs(&inner);
            self.rd_wait.wake_one(POLLIN);
            self.fasync_readers.kill(POLL_IN);
            if !core::mem::replace(&mut slept, true) {
                inner.counts.writes_slept.add(1, &stats.writes_slept);
            }
            let signal;
            ((wr, inner), signal) = self.wait_for_takers((wr, inner), &ticket);
            let (taken, len) = inner.handoffs.offer_progress(&ticket);
            if taken < len && total <= self.atomic_max && written + taken > 0 {
                // An atomic write that readers have begun to take is not cut short: the rest
                // stays queued, and the write is done (`Handoffs::detach`).
                let rest = inner.handoffs.detach(ticket) - taken;
                self.publish_handoffs(&inner);
                let committed = taken + rest;
                inner
                    .counts
                    .bytes_written
                    .add(committed, &stats.bytes_written);
                break Ok(total);
            }
            let taken = inner.handoffs.withdraw(ticket);
            self.publish_handoffs(&inner);
            written += taken;
            inner.counts.bytes_written.add(taken, &stats.bytes_written);
            if written == total {
                break Ok(written);
            }
            if signal {
                // Before or after all of this offer was taken: the write ends here.
                break count_or(written, ERESTARTSYS);
            }
            // All taken: go on with the rest. Or the last reader left: see above.
        };
        drop(inner);
        drop(wr);
        result
    }

    /// Sleeps until readers have taken all of the offer `ticket`, the last reader has left, or
    /// a signal came. Returns the guard and whether a signal is pending.
    fn wait_for_takers<'a>(
        &self,
        (mut wr, mut inner): Locked<'a>,
        ticket: &Ticket,
    ) -> (Locked<'a>, bool) {
        let stats = &self.stats;
        stats.writers_asleep.inc_locked();
        let signal = loop {
            inner.counts.writer_sleeps.add(1, &stats.writer_sleeps);
            // Shared: the reader that takes the last byte wakes this writer by name.
            let signal;
            ((wr, inner), signal) = self.wr_wait.wait((wr, inner), Sleep::Shared);
            let (taken, len) = inner.handoffs.offer_progress(ticket);
            if signal || taken == len || inner.readers == 0 {
                break signal;
            }
        };
        stats.writers_asleep.dec_locked();
        ((wr, inner), signal)
    }

    /// Whether a splice out of the pipe that must not wait (`SPLICE_F_NONBLOCK`) has to fail
    /// with `EAGAIN` before it starts: the ring is empty while a writer is there.
    ///
    /// The generic `copy_splice_read` does not pass the flag on to `read`, so the check is made
    /// here, without the mutex, as poll makes it. It is a look, not a reservation: a reader that
    /// empties the ring between it and the splice's read leaves that read waiting for the next
    /// write, as a blocking read would.
    pub(crate) fn splice_read_would_wait(&self) -> bool {
        let u = &self.unlocked;
        let would = u.queued.load(Relaxed) == 0
            && u.offered.load(Relaxed) == 0
            && u.writers.load(Relaxed) > 0;
        if would {
            self.stats.eagain.add(1);
        }
        would
    }

    /// How many of `len` bytes a splice into the pipe that must not wait may pass to `write`:
    /// an atomic write whole if it fits now, a larger one as much as fits; `EAGAIN` if nothing
    /// would go in without waiting. With no reader, all of it, for `write` to answer `EPIPE`.
    ///
    /// As for [`Pipe::splice_read_would_wait`], `iter_file_splice_write` does not pass the flag
    /// on, so the splice is cut to the room seen now; a writer that takes that room first makes
    /// the splice's write wait for more.
    pub(crate) fn splice_write_len(&self, len: usize) -> Result<usize> {
        let u = &self.unlocked;
        if u.readers.load(Relaxed) == 0 {
            return Ok(len);
        }
        let room = if self.capacity == 0 {
            u.slot_room.load(Relaxed)
        } else {
            self.capacity - u.queued.load(Relaxed)
        };
        match write_needs(len, self.atomic_max) {
            need if room < need => {
                self.stats.eagain.add(1);
                Err(EAGAIN)
            }
            _ => Ok(len.min(room)),
        }
    }

    /// The pipe's state and counters, one `name` `sep` `value` line each (see [`Show`]).
    /// Never takes the mutex.
    pub(crate) fn show(&self, sep: &'static str) -> Show<'_> {
        let u = &self.unlocked;
        Show {
            stats: &self.stats,
            now: Snapshot {
                capacity: self.capacity,
                queued: u.queued.load(Relaxed),
                offered: u.offered.load(Relaxed),
                readers: u.readers.load(Relaxed),
                writers: u.writers.load(Relaxed),
                rd_wakeups: self.rd_wait.wakeups() + self.slot_wait.wakeups(),
                wr_wakeups: self.wr_wait.wakeups(),
            },
            sep,
        }
    }

    /// Shows the pipe's state and counters in /proc/PID/fdinfo/FD, after the VFS's own lines,
    /// in their `name:\tvalue` form. Never takes the mutex.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        seq_print!(m, "{}", self.show(":\t"));
    }

    /// Handles an ioctl: `FIONREAD` stores the number of bytes a read could take now (queued,
    /// and offered by writers waiting for readers) as an `int` at `arg`,
    /// without taking the mutex; anything else is `ENOTTY`, as for a FIFO.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            FIONREAD => {
                let u = &self.unlocked;
                let queued = u.queued.load(Relaxed) + u.offered.load(Relaxed);
                // Thousands of waiting writers could offer more than an int holds.
                let queued = i32::try_from(queued).unwrap_or(i32::MAX);
                let mut user = UserSlice::new(UserPtr::from_addr(arg), size_of::<i32>()).writer();
                user.write(&queued)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

/// What a write returns when it stops: the bytes it moved, or `err` when it moved none (fs/pipe.c:
/// `ret ? ret : -EFAULT` and the like).
fn count_or(written: usize, err: Error) -> Result<usize> {
    if written == 0 {
        Err(err)
    } else {
        Ok(written)
    }
}

/// The current task, for a waiting writer or reader to be woken by name.
fn current_task() -> ARef<Task> {
    ARef::from(&**kernel::current!())
}

/// What a writer about to wait offers of the next `left` bytes of `src`: its pages, pinned, up
/// to [`MAX_PINNED_PAGES`] and the pipe's pin `budget`; a copy for a write's last `atomic_max`
/// bytes or fewer (all of an atomic write, in one offer), and for memory that has nothing to
/// pin (kernel memory) or cannot be pinned now. A bad buffer fails in the copy (`EFAULT`).
fn offer_from(
    src: &mut IovIterSource<'_>,
    left: usize,
    atomic_max: usize,
    budget: usize,
) -> Result<Offered> {
    if left <= atomic_max {
        return Offered::copy(src, left);
    }
    let max = left.min(MAX_PINNED_PAGES * PAGE_SIZE).min(budget);
    if max > 0 {
        if let Ok(Some(pages)) = PinnedPages::from_source(src, max) {
            if pages.len() > 0 {
                return Ok(Offered::Pinned(pages));
            }
        }
    }
    Offered::copy(src, left.min(COPY_CHUNK))
}

#[kunit_tests(mini_pipe_wakeups)]
mod tests {
    use super::*;
    use crate::kvec::{
        with_dest,
        with_source, //
    };

    #[test]
    fn atomic_writes_wait_for_all_their_room() {
        assert_eq!(write_needs(1, PIPE_BUF), 1);
        assert_eq!(write_needs(PIPE_BUF, PIPE_BUF), PIPE_BUF);
        assert_eq!(write_needs(PIPE_BUF + 1, PIPE_BUF), 1);
        // A 128-byte ring: atomic up to its size.
        assert_eq!(write_needs(128, 128), 128);
        assert_eq!(write_needs(200, 128), 1);
    }

    #[test]
    fn writable_means_an_atomic_write_fits() {
        assert!(writable(PIPE_BUF, PIPE_BUF));
        assert!(!writable(PIPE_BUF - 1, PIPE_BUF));
        assert!(writable(1, 1));
        assert!(!writable(0, 1));
    }

    #[test]
    fn writers_woken_when_room_reaches_a_need() {
        const NONE: usize = usize::MAX;
        // Room becomes writable: one writer, passed on from writer to writer.
        assert_eq!(writers_to_wake(0, PIPE_BUF, PIPE_BUF, NONE), Wake::One);
        assert_eq!(writers_to_wake(10, 70000, PIPE_BUF, 1), Wake::One);
        // Already writable before: nobody sleeps for room.
        assert_eq!(writers_to_wake(PIPE_BUF, 70000, PIPE_BUF, 1), Wake::Nobody);
        // A 1-byte writer sleeps beside an atomic 4096-byte one: one byte of room wakes all.
        assert_eq!(writers_to_wake(0, 1, PIPE_BUF, 1), Wake::All);
        // Only atomic 4096-byte writers sleep: 4000 bytes wake nobody.
        assert_eq!(writers_to_wake(0, 4000, PIPE_BUF, PIPE_BUF), Wake::Nobody);
        // The room was already enough for the smallest need: its wakeup went out then.
        assert_eq!(writers_to_wake(100, 200, PIPE_BUF, 50), Wake::Nobody);
        // A woken writer leaving room (before = 0): passes on to whoever could use it.
        assert_eq!(writers_to_wake(0, 0, PIPE_BUF, 1), Wake::Nobody);
        assert_eq!(writers_to_wake(0, 100, PIPE_BUF, 100), Wake::All);
        assert_eq!(writers_to_wake(0, 99, PIPE_BUF, 100), Wake::Nobody);
        // A 1-byte ring: full or writable.
        assert_eq!(writers_to_wake(0, 1, 1, 1), Wake::One);
    }

    /// A small model of writers sleeping for room on a ring, driven by the real decisions
    /// (`PipeInner::writer_sleeps`, `writer_leaves`, `writers_to_wake`), called as `read` and
    /// `write` call them. Wakeups go to sleepers in queue order (`One`) or to all (`All`); a woken
    /// writer runs later, as the scheduler would have it.
    struct Model {
        inner: PipeInner,
        atomic_max: usize,
        /// Needs of the writers asleep, in queue order.
        asleep: KVec<usize>,
        /// Needs of the writers woken and not yet run.
        woken: KVec<usize>,
    }

    impl Model {
        fn new(capacity: usize, atomic_max: usize) -> Self {
            Self {
                inner: PipeInner {
                    ring: Ring::new(capacity).unwrap(),
                    readers: 1,
                    writers: 1,
                    r_counter: 1,
                    w_counter: 1,
                    min_need: usize::MAX,
                    handoffs: Handoffs::new(),
                    counts: Counts::default(),
                },
                atomic_max,
                asleep: KVec::new(),
                woken: KVec::new(),
            }
        }

        fn room(&self) -> usize {
            self.inner.ring.room()
        }

        fn apply(&mut self, wake: Wake) {
            match wake {
                Wake::Nobody => {}
                Wake::One => {
                    if !self.asleep.is_empty() {
                        let need = self.asleep.remove(0).unwrap();
                        self.woken.push(need, GFP_KERNEL).unwrap();
                    }
                }
                Wake::All => {
                    for &need in self.asleep.iter() {
                        self.woken.push(need, GFP_KERNEL).unwrap();
                    }
                    self.asleep.clear();
                }
            }
        }

        fn fill(&mut self, n: usize) {
            let n = n.min(self.room());
            let data = [0u8; 16];
            let moved = with_source(&data[..n], |src| self.inner.ring.write_from(src, n));
            assert_eq!(moved, n);
        }

        /// A writer needing `need` bytes arrives: it writes if they fit, else sleeps.
        fn arrive(&mut self, need: usize) {
            if self.room() >= need {
                self.fill(need);
            } else {
                let wake = self.inner.writer_sleeps(need, false, self.atomic_max);
                self.apply(wake);
                self.asleep.push(need, GFP_KERNEL).unwrap();
            }
        }

        /// A read of up to `n` bytes (as `read`: decide, then copy).
        fn read(&mut self, n: usize) {
            let before = self.room();
            let n = n.min(self.inner.ring.len());
            let wake = self
                .inner
                .writers_to_wake(before, before + n, self.atomic_max);
            self.apply(wake);
            let mut out = [0u8; 16];
            let moved = with_dest(&mut out[..n], |dst| self.inner.ring.read_into(dst, n));
            assert_eq!(moved, n);
        }

        /// The first woken writer runs (as `write` after its wait): writes if its room is there
        /// and passes the wakeup on, or passes it on and sleeps again.
        fn run_woken(&mut self) {
            let need = self.woken.remove(0).unwrap();
            if self.room() >= need {
                self.fill(need);
                let wake = self.inner.writer_leaves(self.atomic_max);
                self.apply(wake);
            } else {
                let wake = self.inner.writer_sleeps(need, true, self.atomic_max);
                self.apply(wake);
                self.asleep.push(need, GFP_KERNEL).unwrap();
            }
        }

        /// Runs every woken writer; then no writer may be asleep while its room is there.
        fn settle(&mut self) {
            let mut steps = 0;
            while !self.woken.is_empty() {
                self.run_woken();
                steps += 1;
                // Wakeups passed around for ever would never settle.
                assert!(steps < 1000);
            }
            for &need in self.asleep.iter() {
                // A writer asleep while the room it needs is free: a lost wakeup.
                assert!(need > self.room());
            }
        }
    }

    #[test]
    fn one_byte_writer_not_stuck_behind_an_atomic_one() {
        let mut m = Model::new(16, 8);
        m.fill(16);
        m.arrive(8);
        m.arrive(1);
        m.read(1);
        m.settle();
        // The 1-byte writer wrote; the 8-byte one waits for 8 bytes of room.
        assert_eq!(m.asleep.as_slice(), &[8]);
        assert_eq!(m.room(), 0);
        m.read(7);
        m.settle();
        assert_eq!(m.asleep.as_slice(), &[8]);
        m.read(1);
        m.settle();
        assert!(m.asleep.is_empty());
    }

    #[test]
    fn no_writer_left_asleep_with_its_room_free() {
        // Pseudo-random runs: writers of every need arrive, reads of every size free room, and
        // woken writers run in between. After each step that lets the woken ones run, no
        // sleeping writer may have its room free.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for capacity in [1usize, 2, 5, 8, 13, 16] {
            let atomic_max = capacity.min(4);
            let mut m = Model::new(capacity, atomic_max);
            for _ in 0..300 {
                match next(4) {
                    0 | 1 => m.arrive(1 + next(atomic_max)),
                    2 => m.read(1 + next(capacity)),
                    _ if !m.woken.is_empty() => m.run_woken(),
                    _ => m.settle(),
                }
                if next(8) == 0 {
                    m.settle();
                }
            }
            m.settle();
        }
    }

    /// An `O_DSYNC` writer's offer takes its place in the stream behind the bytes queued
    /// before it, and before those queued after it (`ring_ahead`, as `read` uses it).
    #[test]
    fn offers_come_after_the_bytes_queued_before_them() {
        let mut m = Model::new(16, 8);
        let inner = &mut m.inner;
        let push = |inner: &mut PipeInner, data: &[u8]| {
            with_source(data, |src| inner.ring.write_from(src, data.len()))
        };
        let pop = |inner: &mut PipeInner, n: usize| {
            let mut out = [0u8; 16];
            with_dest(&mut out[..n], |dst| inner.ring.read_into(dst, n))
        };
        push(inner, b"abcde");
        let mark = inner.ring.read_total() + inner.ring.len() as u64;
        let bytes = with_source(b"XYZ", |src| Offered::copy(src, 3)).unwrap();
        let ticket = inner.handoffs.offer(mark, bytes, current_task()).unwrap();
        push(inner, b"fg");
        // The ring holds 7 bytes, but only the 5 before the offer come first.
        assert_eq!(inner.ring_ahead(), 5);
        assert_eq!(pop(inner, 3), 3);
        assert_eq!(inner.ring_ahead(), 2);
        assert_eq!(pop(inner, 2), 2);
        // Now the offer: no ring byte is ahead of it, though two are queued.
        assert_eq!((inner.ring_ahead(), inner.ring.len()), (0, 2));
        assert!(inner.readable());
        let mut out = [0u8; 8];
        let taken = with_dest(&mut out, |dst| inner.handoffs.take(dst, 8));
        assert_eq!((taken.bytes, &out[..3]), (3, &b"XYZ"[..]));
        // Taken, not yet withdrawn: the ring's last bytes are next.
        assert_eq!(inner.ring_ahead(), 2);
        assert_eq!(inner.handoffs.withdraw(ticket), 3);
        assert_eq!(inner.ring_ahead(), 2);
    }

    #[test]
    fn writes_wake_readers_on_empty_or_edge_triggered() {
        assert!(write_wakes_readers(true, false));
        assert!(!write_wakes_readers(false, false));
        assert!(write_wakes_readers(false, true));
        assert!(write_wakes_readers(true, true));
    }
}
