// SPDX-License-Identifier: GPL-2.0

//! The byte ring behind `/dev/mini_pipe`.
//!
//! Where fs/pipe.c keeps a ring of `pipe_buffer`s, each pointing at a page, mini_pipe keeps one
//! flat array of bytes allocated at load time. `tail` is where the next read starts and `len` how
//! many bytes are queued; the write position is derived from them, so there is no state that can
//! disagree with itself. Every copy touches at most two contiguous segments: up to the end of the
//! array, then from its start.
//!
//! The ring knows nothing about locking or waiting; [`crate::pipe`] holds it under a mutex.

use kernel::{
    alloc::KVVec,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    prelude::*,
};

/// A fixed-capacity byte ring.
///
/// # Invariants
///
/// `tail < buf.len()` and `len <= buf.len()`, and `buf.len() > 0`.
pub(crate) struct Ring {
    buf: KVVec<u8>,
    tail: usize,
    len: usize,
}

impl Ring {
    /// Allocates a zeroed ring of `capacity` bytes (so that nothing but what writers wrote can
    /// ever be read back).
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(EINVAL);
        }
        Ok(Self {
            buf: KVVec::from_elem(0u8, capacity, GFP_KERNEL)?,
            tail: 0,
            len: 0,
        })
    }

    /// The capacity in bytes, fixed at creation.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes queued for readers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes a writer could add now.
    pub(crate) fn room(&self) -> usize {
        self.capacity() - self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every queued byte, as a FIFO frees its buffers when the last user leaves.
    pub(crate) fn clear(&mut self) {
        self.tail = 0;
        self.len = 0;
    }

    /// The queued bytes as at most two slices, oldest first, no more than `max` bytes in all.
    fn filled(&self, max: usize) -> (&[u8], &[u8]) {
        let n = max.min(self.len);
        let first = n.min(self.capacity() - self.tail);
        (
            &self.buf[self.tail..self.tail + first],
            &self.buf[..n - first],
        )
    }

    /// The free space as at most two slices, in the order writes fill it, no more than `max`
    /// bytes in all.
    fn free(&mut self, max: usize) -> (&mut [u8], &mut [u8]) {
        let n = max.min(self.room());
        let cap = self.capacity();
        // The write position: `tail + len` wrapped once, without an overflowing sum.
        let head = if self.len < cap - self.tail {
            self.tail + self.len
        } else {
            self.len - (cap - self.tail)
        };
        let first = n.min(cap - head);
        let (front, back) = self.buf.split_at_mut(head);
        (&mut back[..first], &mut front[..n - first])
    }

    /// Drops `n` bytes from the front: they have been read.
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let to_end = self.capacity() - self.tail;
        self.tail = if n < to_end {
            self.tail + n
        } else {
            n - to_end
        };
        self.len -= n;
        if self.len == 0 {
            // Start the next writes at the front: fewer copies are split in two.
            self.tail = 0;
        }
    }

    /// Copies up to `max` queued bytes to `dst` and drops them from the ring.
    ///
    /// Returns how many bytes moved. Fewer than asked means `dst` faulted or is full; the bytes
    /// that did not reach `dst` stay queued.
    pub(crate) fn read_into(&mut self, dst: &mut IovIterDest<'_>, max: usize) -> usize {
        let (a, b) = self.filled(max);
        let mut copied = dst.copy_to_iter(a);
        if copied == a.len() && !b.is_empty() {
            copied += dst.copy_to_iter(b);
        }
        self.consume(copied);
        copied
    }

    /// Copies up to `max` bytes from `src` into the free space and queues them.
    ///
    /// Returns how many bytes moved. Fewer than asked means `src` faulted or ran out; only the
    /// bytes that arrived are queued.
    pub(crate) fn write_from(&mut self, src: &mut IovIterSource<'_>, max: usize) -> usize {
        let (a, b) = self.free(max);
        let mut copied = src.copy_from_iter(a);
        if copied == a.len() && !b.is_empty() {
            copied += src.copy_from_iter(b);
        }
        self.len += copied;
        copied
    }
}
