// SPDX-License-Identifier: GPL-2.0

//! The pipe: what happens on open, read, write and release.
//!
//! This is the counterpart of fs/pipe.c's `fifo_open`, `pipe_read`, `pipe_write` and
//! `pipe_release`, written against a byte [`Ring`] instead of a ring of page buffers. Everything
//! here is safe Rust; [`crate::fops`] turns the C calls into calls of these methods.
//!
//! Locking: one [`Mutex`] (fs/pipe.c's `pipe->mutex`) guards the ring and the counters. Copies to
//! and from user memory happen under it, as in fs/pipe.c: that is what makes a write of at most
//! `PIPE_BUF` bytes atomic. Wakeups are issued after the mutex is dropped, so a woken task does
//! not immediately block on the mutex its waker still holds.

use crate::ring::Ring;
use kernel::{
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    new_condvar, new_mutex,
    prelude::*,
    sync::{
        CondVar,
        Mutex, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

/// `PIPE_BUF`: writes of at most this many bytes are atomic (POSIX; `include/uapi/linux/limits.h`).
pub(crate) const PIPE_BUF: usize = kernel::bindings::PIPE_BUF as usize;

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
}

/// The one pipe behind `/dev/mini_pipe`, shared by every open file.
#[pin_data]
pub(crate) struct Pipe {
    #[pin]
    inner: Mutex<PipeInner>,
    /// Readers wait here for data, and opens wait here for a partner (as in fs/pipe.c).
    #[pin]
    rd_wait: CondVar,
    /// Writers wait here for room.
    #[pin]
    wr_wait: CondVar,
    /// Writes of at most this many bytes are atomic: `PIPE_BUF`, or the capacity if smaller.
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
            }),
            rd_wait <- new_condvar!("mini_pipe::rd_wait"),
            wr_wait <- new_condvar!("mini_pipe::wr_wait"),
            atomic_max: PIPE_BUF.min(capacity),
        })
    }

    /// Registers a new open file and waits for its partner, as `fifo_open` does.
    ///
    /// A blocking reader waits until some writer has opened, and a blocking writer until some
    /// reader has; a non-blocking writer with no reader fails with `ENXIO`; `O_RDWR` never waits.
    /// A signal ends the wait with `ERESTARTSYS` and leaves the counts as they were.
    pub(crate) fn open(&self, mode: OpenMode) -> Result {
        let mut inner = self.inner.lock();
        match (mode.read, mode.write) {
            (true, false) => {
                inner.r_counter = inner.r_counter.wrapping_add(1);
                inner.readers += 1;
                if inner.readers == 1 {
                    self.wake_up_partner();
                }
                if inner.writers == 0 && !mode.nonblock {
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
        Ok(())
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
    /// The last writer's close wakes readers, who then see end-of-file; the last reader's close
    /// wakes writers, who then get `EPIPE`. When nobody has the pipe open any more, whatever is
    /// still queued is discarded, as a FIFO frees its buffers.
    pub(crate) fn release(&self, mode: OpenMode) {
        let mut inner = self.inner.lock();
        if mode.read {
            inner.readers -= 1;
        }
        if mode.write {
            inner.writers -= 1;
        }
        let (readers, writers) = (inner.readers, inner.writers);
        if readers == 0 && writers == 0 {
            inner.ring.clear();
        }
        drop(inner);
        if mode.read && readers == 0 {
            self.wr_wait.notify_all();
        }
        if mode.write && writers == 0 {
            self.rd_wait.notify_all();
        }
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
        loop {
            if !inner.ring.is_empty() {
                let room_before = inner.ring.room();
                let copied = inner.ring.read_into(dst, want);
                let wake_next_reader = woken && !inner.ring.is_empty();
                drop(inner);
                // A writer can only be waiting if it saw less room than an atomic write needs
                // (a non-atomic writer waits only on a full ring): wake them all, each knows
                // how much room it needs.
                if copied > 0 && room_before < self.atomic_max {
                    self.wr_wait.notify_all();
                }
                if wake_next_reader {
                    self.rd_wait.notify_one();
                }
                return if copied == 0 { Err(EFAULT) } else { Ok(copied) };
            }
            if inner.writers == 0 {
                return Ok(0);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            if self.rd_wait.wait_interruptible(&mut inner) {
                return Err(ERESTARTSYS);
            }
            woken = true;
        }
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
        let atomic = total <= self.atomic_max;
        let mut written = 0;
        let mut inner = self.inner.lock();
        let mut was_empty = inner.ring.is_empty();
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
            let need = if atomic { total } else { 1 };
            if room >= need {
                let want = total - written;
                let copied = inner.ring.write_from(src, want);
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
            // About to sleep for room: readers must see what is already queued first. Wake
            // them with the mutex dropped, then look again: they may have made room.
            if was_empty && !inner.ring.is_empty() {
                drop(inner);
                self.rd_wait.notify_sync();
                inner = self.inner.lock();
                was_empty = false;
                continue;
            }
            if self.wr_wait.wait_interruptible(&mut inner) {
                break if written == 0 {
                    Err(ERESTARTSYS)
                } else {
                    Ok(written)
                };
            }
            was_empty = inner.ring.is_empty();
        };
        let wake_reader = was_empty && !inner.ring.is_empty();
        drop(inner);
        // The writer is about to return to user space, probably to write or wait again: a sync
        // wakeup lets the reader run on this CPU (fs/pipe.c does the same).
        if wake_reader {
            self.rd_wait.notify_sync();
        }
        result
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
