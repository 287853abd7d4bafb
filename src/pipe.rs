// SPDX-License-Identifier: GPL-2.0

//! The pipe: what happens on open, read, write and release.
//!
//! This is the counterpart of fs/pipe.c's `fifo_open`, `pipe_read`, `pipe_write` and
//! `pipe_release`, written against a byte [`Ring`] instead of a ring of page buffers. Everything
//! here is safe Rust; [`crate::fops`] turns the C calls into calls of these methods.
//!
//! Locking: one [`Mutex`] (fs/pipe.c's `pipe->mutex`) guards the ring and the counters. Copies to
//! and from user memory happen under it, as in fs/pipe.c: that is what makes a write of at most
//! `PIPE_BUF` bytes atomic. Unlike fs/pipe.c, the wakeup that moves data along (a writer waking a
//! reader, a reader waking a writer) is issued before the copy, with the mutex held: the woken
//! task spins on the mutex while the copy runs, instead of being woken once it is over (DIFF.md,
//! "Locking"). The other wakeups are issued after the mutex is dropped.

use crate::{
    fops::FasyncList,
    ring::Ring, //
};
use kernel::{
    bindings,
    fs::File,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    new_mutex, new_poll_condvar,
    prelude::*,
    seq_file::SeqFile,
    seq_print,
    sync::{
        poll::{
            PollCondVar,
            PollTable, //
        },
        Mutex, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

/// `PIPE_BUF`: writes of at most this many bytes are atomic (POSIX; `include/uapi/linux/limits.h`).
pub(crate) const PIPE_BUF: usize = bindings::PIPE_BUF as usize;

/// The poll bits a reader and a writer report (the `EPOLL*` values are the same).
const POLLIN: u32 = bindings::POLLIN | bindings::POLLRDNORM;
const POLLOUT: u32 = bindings::POLLOUT | bindings::POLLWRNORM;
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

/// Whether a read about to take data from a ring with `room` bytes of room must wake a writer
/// (fs/pipe.c's `was_full`). Only a ring that is not `writable` can have writers asleep (each
/// waits for at most `atomic_max` bytes of room) or pollers waiting for writability. One writer
/// is woken (and every poller); a woken writer that finds room passes the wakeup on when it is
/// done, one that does not waits for the next read, which will come, since the ring is not
/// empty.
fn read_wakes_writers(room: usize, atomic_max: usize) -> bool {
    !writable(room, atomic_max)
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
    /// An `EPOLLET` reader has polled: from then on every write wakes readers, not only a
    /// write into an empty ring, because edge-triggered epoll users have always relied on
    /// getting an event per write (fs/pipe.c: `pipe->pseudo_edgetrigger`).
    pseudo_edgetrigger: bool,
}

/// The one pipe behind `/dev/mini_pipe`, shared by every open file.
#[pin_data]
pub(crate) struct Pipe {
    #[pin]
    inner: Mutex<PipeInner>,
    /// Readers wait here for data, and opens wait here for a partner (as in fs/pipe.c);
    /// poll and epoll wait here for readability.
    #[pin]
    rd_wait: PollCondVar,
    /// Writers wait here for room; poll and epoll for writability.
    #[pin]
    wr_wait: PollCondVar,
    /// Files of readers that asked for `SIGIO` (`O_ASYNC`).
    fasync_readers: FasyncList,
    /// Files of writers that asked for `SIGIO`.
    fasync_writers: FasyncList,
    /// Writes of at most this many bytes are atomic: `PIPE_BUF`, or the capacity if smaller.
    /// It is also the room poll waits for before it reports a writer may write.
    atomic_max: usize,
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
                pseudo_edgetrigger: false,
            }),
            rd_wait <- new_poll_condvar!("mini_pipe::rd_wait"),
            wr_wait <- new_poll_condvar!("mini_pipe::wr_wait"),
            fasync_readers: FasyncList::new(),
            fasync_writers: FasyncList::new(),
            atomic_max: PIPE_BUF.min(capacity),
        })
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
                if inner.readers == 1 {
                    self.wake_up_partner();
                }
                if inner.writers == 0 && mode.nonblock {
                    f_pipe = u64::from(inner.w_counter);
                } else if inner.writers == 0 {
                    let seen = inner.w_counter;
                    if !self.wait_for_partner(&mut inner, |i| i.w_counter != seen) {
                        inner.readers -= 1;
                        if inner.readers == 0 {
                            self.wr_wait.notify_all();
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
                if inner.writers == 1 {
                    self.wake_up_partner();
                }
                if inner.readers == 0 {
                    let seen = inner.r_counter;
                    if !self.wait_for_partner(&mut inner, |i| i.r_counter != seen) {
                        inner.writers -= 1;
                        if inner.writers == 0 {
                            self.rd_wait.notify_all();
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
        self.rd_wait.notify_all();
    }

    /// Waits on `rd_wait` until `arrived` holds. Returns false if a signal ended the wait.
    fn wait_for_partner(
        &self,
        inner: &mut kernel::sync::MutexGuard<'_, PipeInner>,
        arrived: impl Fn(&PipeInner) -> bool,
    ) -> bool {
        while !arrived(inner) {
            if self.rd_wait.wait_interruptible(inner) {
                return arrived(inner);
            }
        }
        true
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
            inner.ring.clear();
            inner.pseudo_edgetrigger = false;
        }
        drop(inner);
        if no_readers != no_writers {
            self.rd_wait.notify_all();
            self.wr_wait.notify_all();
            self.fasync_readers.kill(POLL_IN);
            self.fasync_writers.kill(POLL_OUT);
        }
    }

    /// Reports what `file` (opened as `mode`) could do now, and registers `table` on the wait
    /// queues whose wakeups change that (fs/pipe.c: `pipe_poll`).
    ///
    /// A reader: `POLLIN` with data queued, `POLLHUP` once no writer is left (but, for a reader
    /// opened non-blocking before any writer, not until one has come: `f_pipe`). A writer:
    /// `POLLOUT` when an atomic write fits, that is `PIPE_BUF` bytes of room (or the whole ring
    /// if smaller), the byte-ring form of pipe.c's "a free slot"; `POLLERR` once no reader is
    /// left. `edge_triggered` says the caller is an `EPOLLET` epoll.
    pub(crate) fn poll(
        &self,
        file: &File,
        table: &PollTable<'_>,
        mode: OpenMode,
        f_pipe: u64,
        edge_triggered: bool,
    ) -> u32 {
        // Register first, then look: a change after the look wakes the table.
        if mode.read {
            table.register_wait(file, &self.rd_wait);
        }
        if mode.write {
            table.register_wait(file, &self.wr_wait);
        }
        let mut inner = self.inner.lock();
        if mode.read && edge_triggered {
            inner.pseudo_edgetrigger = true;
        }
        let mut mask = 0;
        if mode.read {
            if !inner.ring.is_empty() {
                mask |= POLLIN;
            }
            if inner.writers == 0 && f_pipe != u64::from(inner.w_counter) {
                mask |= bindings::POLLHUP;
            }
        }
        if mode.write {
            if writable(inner.ring.room(), self.atomic_max) {
                mask |= POLLOUT;
            }
            // Linux reports POLLERR for a FIFO with no reader, as for a pipe.
            if inner.readers == 0 {
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

    /// Reads into `dst` (fs/pipe.c: `pipe_read`).
    ///
    /// Waits while the ring is empty and a writer exists, then returns what is queued up to
    /// `dst`'s length: it never waits once something has been copied. Empty with no writer is
    /// end-of-file (0). `nonblock` turns the wait into `EAGAIN`; a signal into `ERESTARTSYS`.
    pub(crate) fn read(&self, dst: &mut IovIterDest<'_>, nonblock: bool) -> Result<usize> {
        let want = dst.len();
        if want == 0 {
            return Ok(0);
        }
        let mut inner = self.inner.lock();
        // Set once this reader has slept: it was woken exclusively, so if data is left after
        // it has taken its share, it passes the wakeup on (fs/pipe.c: `wake_next_reader`).
        let mut woken = false;
        let result = loop {
            if !inner.ring.is_empty() {
                // The writer is woken before the copy, with the mutex held, where pipe.c wakes
                // it after unlocking: it spends its wake-up on the mutex instead of in its wait
                // queue, spins there while this copy runs, and finds the room when it gets the
                // mutex. The two sides overlap instead of sleeping by turns (logs/bench/NOTES.md
                // has what that changed). A faulting copy frees no room; the woken writer then
                // finds too little and waits again.
                if read_wakes_writers(inner.ring.room(), self.atomic_max) {
                    self.wr_wait.notify_one();
                }
                let copied = inner.ring.read_into(dst, want);
                break if copied == 0 { Err(EFAULT) } else { Ok(copied) };
            }
            if inner.writers == 0 {
                break Ok(0);
            }
            if nonblock {
                break Err(EAGAIN);
            }
            if self.rd_wait.wait_interruptible(&mut inner) {
                // A signal ended the wait. If a writer's wakeup had picked this reader, it
                // must not be lost: pass it on while there is data (pipe.c gets the same from
                // prepare_to_wait_event, which lets a woken exclusive waiter go on).
                let pass_on = !inner.ring.is_empty();
                drop(inner);
                if pass_on {
                    self.rd_wait.notify_sync();
                }
                return Err(ERESTARTSYS);
            }
            woken = true;
        };
        let wake_next_reader = woken && !inner.ring.is_empty();
        drop(inner);
        if wake_next_reader {
            self.rd_wait.notify_sync();
        }
        self.fasync_writers.kill(POLL_OUT);
        result
    }

    /// Writes from `src` (fs/pipe.c: `pipe_write`).
    ///
    /// A write of at most `PIPE_BUF` bytes (or the capacity, if smaller) goes in all at once or
    /// not at all; a larger one takes whatever room there is and waits for more. A blocking
    /// write returns once everything is queued, or early with the count so far when a signal
    /// arrives or the last reader leaves (the error when nothing moved). No reader: `EPIPE`,
    /// and the caller sends `SIGPIPE` (`sigpipe` is set to true).
    pub(crate) fn write(
        &self,
        src: &mut IovIterSource<'_>,
        nonblock: bool,
        sigpipe: &mut bool,
    ) -> Result<usize> {
        let total = src.len();
        if total == 0 {
            return Ok(0);
        }
        let need = write_needs(total, self.atomic_max);
        let mut written = 0;
        let mut inner = self.inner.lock();
        // Readers may be asleep: the ring was empty when this writer took the mutex.
        let mut was_empty = inner.ring.is_empty();
        // Set once this writer has slept: it was woken exclusively (or by a signal, which may
        // have taken a wakeup meant for it), so if room is left when it is done, it passes the
        // wakeup on to the next writer (fs/pipe.c: `wake_next_writer`).
        let mut woken = false;
        let result = loop {
            if inner.readers == 0 {
                *sigpipe = true;
                break if written == 0 {
                    Err(EPIPE)
                } else {
                    Ok(written)
                };
            }
            let room = inner.ring.room();
            if room >= need {
                let want = total - written;
                // As in `read`, the reader is woken before the copy: it spins on the mutex
                // while the bytes go in, and takes them as soon as this writer lets go.
                if write_wakes_readers(was_empty, inner.pseudo_edgetrigger) {
                    self.rd_wait.notify_one();
                }
                let copied = inner.ring.write_from(src, want);
                was_empty = inner.ring.is_empty();
                written += copied;
                if copied < want.min(room) {
                    // `src` faulted: keep what arrived, report it (or the fault).
                    break if written == 0 {
                        Err(EFAULT)
                    } else {
                        Ok(written)
                    };
                }
                if written == total {
                    break Ok(written);
                }
                continue;
            }
            if nonblock {
                break if written == 0 {
                    Err(EAGAIN)
                } else {
                    Ok(written)
                };
            }
            // About to sleep for room. The readers were woken before the bytes went in; the
            // `SIGIO` users among them hear of it now, not once the write is done, which may be
            // never if they are the ones to make room (pipe.c signals before its wait, too).
            self.fasync_readers.kill(POLL_IN);
            let interrupted = self.wr_wait.wait_interruptible(&mut inner);
            woken = true;
            if interrupted {
                break if written == 0 {
                    Err(ERESTARTSYS)
                } else {
                    Ok(written)
                };
            }
            was_empty = inner.ring.is_empty();
        };
        let wake_next_writer = woken && inner.ring.room() > 0;
        drop(inner);
        self.fasync_readers.kill(POLL_IN);
        if wake_next_writer {
            self.wr_wait.notify_sync();
        }
        result
    }

    /// Shows the pipe's state in /proc/PID/fdinfo/FD, after the VFS's own lines.
    pub(crate) fn show_fdinfo(&self, m: &SeqFile) {
        let inner = self.inner.lock();
        seq_print!(
            m,
            "capacity:\t{}\nqueued:\t{}\nreaders:\t{}\nwriters:\t{}\n",
            inner.ring.capacity(),
            inner.ring.len(),
            inner.readers,
            inner.writers
        );
    }

    /// Handles an ioctl: `FIONREAD` stores the number of queued bytes as an `int` at `arg`;
    /// anything else is `ENOTTY`, as for a FIFO.
    pub(crate) fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            kernel::bindings::FIONREAD => {
                let queued = self.inner.lock().ring.len();
                // The capacity limit keeps this far below `i32::MAX`.
                let queued = i32::try_from(queued).map_err(|_| EOVERFLOW)?;
                let mut user = UserSlice::new(UserPtr::from_addr(arg), size_of::<i32>()).writer();
                user.write(&queued)?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }
}

#[kunit_tests(mini_pipe_wakeups)]
mod tests {
    use super::*;

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
    fn reads_wake_writers_only_when_room_was_short() {
        assert!(read_wakes_writers(0, PIPE_BUF));
        assert!(read_wakes_writers(PIPE_BUF - 1, PIPE_BUF));
        assert!(!read_wakes_writers(PIPE_BUF, PIPE_BUF));
        // A 1-byte ring: full or writable.
        assert!(read_wakes_writers(0, 1));
        assert!(!read_wakes_writers(1, 1));
    }

    #[test]
    fn writes_wake_readers_on_empty_or_edge_triggered() {
        assert!(write_wakes_readers(true, false));
        assert!(!write_wakes_readers(false, false));
        assert!(write_wakes_readers(false, true));
        assert!(write_wakes_readers(true, true));
    }
}
