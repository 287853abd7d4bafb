// SPDX-License-Identifier: GPL-2.0

//! The byte ring behind `/dev/mini_pipe`.
//!
//! Where fs/pipe.c keeps a ring of `pipe_buffer`s, each pointing at a page, mini_pipe keeps one
//! flat array of bytes allocated at load time. `tail` is where the next read starts and `len` how
//! many bytes are queued; the write position is derived from them, so there is no state that can
//! disagree with itself. Every copy touches at most two contiguous segments: up to the end of the
//! array, then from its start.
//!
//! A copy is claimed, made, and then committed: a reader claims queued bytes from `tail`
//! ([`Ring::claim_read`]), copies them out, and [`Ring::consume`]s what it copied; a writer
//! claims free space from the write position ([`Ring::claim_write`]), copies into it, and
//! [`Ring::commit`]s what it copied. The claims are what let [`crate::pipe`] copy without its
//! mutex, one reader and one writer at once ([`crate::claim`]): between claim and commit the
//! indices change only on the other side's behalf, and the write position does not move.
//!
//! The ring knows nothing about locking or waiting; [`crate::pipe`] holds it under a mutex.

use crate::claim::{
    ReadClaim,
    Storage,
    WriteClaim, //
};
#[cfg(CONFIG_KUNIT = "y")]
use kernel::iov::{
    IovIterDest,
    IovIterSource, //
};
use kernel::prelude::*;

/// A fixed-capacity byte ring.
///
/// # Invariants
///
/// `len <= capacity`, and `tail < capacity` (or `tail == 0` for a ring of capacity 0, which a
/// rendezvous pipe has: it never holds a byte). While a write claim is out, `tail + len` (the
/// write position) does not move.
///
/// What every read and write changes comes first, in 32 bits where it fits (the capacity does:
/// [`Storage`]): a [`crate::pipe`] puts the ring right after its mutex, and this way the
/// indices, the capacity and the claims share the mutex's cache line ([`crate::cacheline`]).
#[repr(C)]
pub(crate) struct Ring {
    tail: u32,
    len: u32,
    /// Bytes ever read out of the ring (wrapping): with [`Ring::len`], a position in the stream
    /// of bytes that went through it.
    read_total: u64,
    buf: Storage,
}

impl Ring {
    /// Allocates a zeroed ring of `capacity` bytes (so that nothing but what writers wrote can
    /// ever be read back). A ring of capacity 0 is always empty and always full.
    pub(crate) fn new(capacity: usize) -> Result<Self> {
        Ok(Self {
            tail: 0,
            len: 0,
            read_total: 0,
            buf: Storage::new(capacity)?,
        })
    }

    /// Bytes ever read out of the ring, wrapping at 2^64.
    pub(crate) fn read_total(&self) -> u64 {
        self.read_total
    }

    /// The capacity in bytes, fixed at creation.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes queued for readers.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Bytes a writer could add now.
    pub(crate) fn room(&self) -> usize {
        self.capacity() - self.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every queued byte, as a FIFO frees its buffers when the last user leaves (when
    /// nobody copies: nobody has the pipe open).
    pub(crate) fn clear(&mut self) {
        debug_assert!(!self.buf.claimed());
        self.len = 0;
        if !self.buf.claimed() {
            self.tail = 0;
        }
    }

    /// The write position: `tail + len` wrapped once, without an overflowing sum.
    fn head(&self) -> usize {
        let (cap, tail, len) = (self.capacity(), self.tail(), self.len());
        if len < cap - tail {
            tail + len
        } else {
            len - (cap - tail)
        }
    }

    /// Where the next read starts.
    fn tail(&self) -> usize {
        self.tail as usize
    }

    /// Claims up to `max` queued bytes, oldest first, for a copy out. Fails only if a read
    /// claim is already out (`EBUSY`): readers take turns.
    pub(crate) fn claim_read(&mut self, max: usize) -> Result<ReadClaim> {
        self.buf.claim_read(self.tail(), max.min(self.len()))
    }

    /// Hands back a read claim, of which the first `n` bytes were copied out: they leave the
    /// ring, the rest stay queued.
    pub(crate) fn consume(&mut self, claim: ReadClaim, n: usize) {
        let n = n.min(claim.len());
        let start = self.buf.end_read(claim);
        debug_assert!(n == 0 || start == self.tail());
        let to_end = self.capacity() - self.tail();
        // Both below the capacity, which fits in 32 bits.
        self.tail = if n < to_end {
            self.tail() + n
        } else {
            n - to_end
        } as u32;
        self.len -= n as u32;
        self.read_total = self.read_total.wrapping_add(n as u64);
        if self.len == 0 && !self.buf.claimed() {
            // Start the next writes at the front: fewer copies are split in two. (Not while a
            // writer copies: its bytes go where the write position was.)
            self.tail = 0;
        }
    }

    /// Claims up to `max` bytes of free space, in the order writes fill it, for a copy in.
    /// Fails only if a write claim is already out (`EBUSY`): writers take turns.
    pub(crate) fn claim_write(&mut self, max: usize) -> Result<WriteClaim> {
        self.buf.claim_write(self.head(), max.min(self.room()))
    }

    /// The bytes of the write claim out, which a writer is copying in: queued once committed.
    pub(crate) fn write_claimed(&self) -> usize {
        self.buf.write_len()
    }

    /// The bytes of the read claim out, which a reader is copying out: room once handed back.
    pub(crate) fn read_claimed(&self) -> usize {
        self.buf.read_len()
    }

    /// Hands back a write claim, of which the first `n` bytes were filled: they are queued.
    pub(crate) fn commit(&mut self, claim: WriteClaim, n: usize) {
        let n = n.min(claim.len());
        let start = self.buf.end_write(claim);
        debug_assert!(n == 0 || start == self.head());
        // At most the room, so the length stays at most the capacity.
        self.len += n as u32;
    }

    /// Takes up to `max` queued bytes out through `copy`, which is handed the queued bytes as
    /// at most two segments, oldest first, and returns how many bytes of each it took; a short
    /// copy (a fault) ends it there. Returns how many bytes left the ring.
    #[cfg(CONFIG_KUNIT = "y")]
    fn pop_with(&mut self, max: usize, copy: impl FnMut(&[u8]) -> usize) -> usize {
        let Ok(claim) = self.claim_read(max) else {
            return 0;
        };
        let copied = claim.copy_with(copy);
        self.consume(claim, copied);
        copied
    }

    /// Adds up to `max` bytes through `copy`, which is handed the free space as at most two
    /// segments, in order, and returns how many bytes it filled in each; a short copy ends it
    /// there. Returns how many bytes were queued.
    #[cfg(CONFIG_KUNIT = "y")]
    fn push_with(&mut self, max: usize, copy: impl FnMut(&mut [u8]) -> usize) -> usize {
        let Ok(mut claim) = self.claim_write(max) else {
            return 0;
        };
        let copied = claim.copy_with(copy);
        self.commit(claim, copied);
        copied
    }

    /// Copies up to `max` queued bytes to `dst` and drops them from the ring.
    ///
    /// Returns how many bytes moved. Fewer than asked means `dst` faulted or is full; the bytes
    /// that did not reach `dst` stay queued.
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn read_into(&mut self, dst: &mut IovIterDest<'_>, max: usize) -> usize {
        self.pop_with(max, |seg| dst.copy_to_iter(seg))
    }

    /// Copies up to `max` bytes from `src` into the free space and queues them.
    ///
    /// Returns how many bytes moved. Fewer than asked means `src` faulted or ran out; only the
    /// bytes that arrived are queued.
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn write_from(&mut self, src: &mut IovIterSource<'_>, max: usize) -> usize {
        self.push_with(max, |seg| src.copy_from_iter(seg))
    }
}

#[kunit_tests(mini_pipe_ring)]
mod tests {
    use super::*;
    use crate::kvec::{
        with_dest,
        with_source, //
    };

    /// The bytes `first`, `first + 1`, ... (`N` of them).
    fn bytes<const N: usize>(first: u8) -> [u8; N] {
        core::array::from_fn(|i| first.wrapping_add(i as u8))
    }

    /// Sets `ring` to start its next read at `tail` and to hold `queued`, laid out as the ring
    /// lays it (possibly wrapped). The rest of the array holds 0xee, which no test writes, so a
    /// byte read from outside the queued ones shows.
    fn set(ring: &mut Ring, tail: usize, queued: &[u8]) {
        let cap = ring.capacity();
        ring.clear();
        // The whole array, in one claim from 0.
        let mut claim = ring.claim_write(cap).unwrap();
        claim.copy_with(|all| {
            all.fill(0xee);
            for (i, &b) in queued.iter().enumerate() {
                all[(tail + i) % cap] = b;
            }
            all.len()
        });
        ring.buf.end_write(claim);
        ring.tail = tail as u32;
        ring.len = queued.len() as u32;
    }

    /// Every capacity up to 8, every start position, every fill, every length and every limit:
    /// `write_from` and `read_into`, through real `iov_iter`s, against a plain queue as the
    /// model. After each call the whole content is read back and compared.
    #[test]
    fn copies_match_a_model_everywhere() {
        const MAX: usize = 8;
        let old: [u8; MAX] = bytes(0);
        let new: [u8; MAX + 1] = bytes(0x80);
        for cap in 1..=MAX {
            let mut ring = Ring::new(cap).unwrap();
            for tail in 0..cap {
                for fill in 0..=cap {
                    let queued = &old[..fill];
                    for len in 0..=cap + 1 {
                        for max in 0..=cap + 1 {
                            // A write of `len` bytes limited to `max`: the model is the queued
                            // bytes followed by as many new ones as fit.
                            set(&mut ring, tail, queued);
                            let moved = with_source(&new[..len], |src| ring.write_from(src, max));
                            let expect = len.min(max).min(cap - fill);
                            assert_eq!(moved, expect);
                            assert_eq!(ring.len(), fill + expect);
                            let mut all = [0u8; 2 * MAX + 1];
                            let got = with_dest(&mut all, |dst| ring.read_into(dst, usize::MAX));
                            assert_eq!(got, fill + expect);
                            assert_eq!(&all[..fill], queued);
                            assert_eq!(&all[fill..got], &new[..expect]);
                            assert!(ring.is_empty());

                            // A read of `len` bytes limited to `max`: the oldest bytes leave,
                            // the rest stay queued in order.
                            set(&mut ring, tail, queued);
                            let mut out = [0u8; MAX + 1];
                            let moved = with_dest(&mut out[..len], |dst| ring.read_into(dst, max));
                            let expect = len.min(max).min(fill);
                            assert_eq!(moved, expect);
                            assert_eq!(&out[..expect], &queued[..expect]);
                            assert_eq!(ring.len(), fill - expect);
                            let mut rest = [0u8; MAX];
                            let got = with_dest(&mut rest, |dst| ring.read_into(dst, usize::MAX));
                            assert_eq!(&rest[..got], &queued[expect..]);
                        }
                    }
                }
            }
        }
    }

    /// A copy that stops short (a fault) at every possible byte, from every start position:
    /// only the bytes that moved leave or enter the ring.
    #[test]
    fn short_copies_everywhere() {
        const CAP: usize = 8;
        let old: [u8; CAP] = bytes(0);
        let mut ring = Ring::new(CAP).unwrap();
        for tail in 0..CAP {
            for fill in 0..=CAP {
                let queued = &old[..fill];
                for budget in 0..=CAP {
                    set(&mut ring, tail, queued);
                    let mut left = budget;
                    let popped = ring.pop_with(CAP, |seg| {
                        let n = seg.len().min(left);
                        left -= n;
                        n
                    });
                    assert_eq!(popped, budget.min(fill));
                    let mut rest = [0u8; CAP];
                    let got = with_dest(&mut rest, |dst| ring.read_into(dst, usize::MAX));
                    assert_eq!(&rest[..got], &queued[popped..]);

                    set(&mut ring, tail, queued);
                    let mut left = budget;
                    let pushed = ring.push_with(CAP, |seg| {
                        let n = seg.len().min(left);
                        seg[..n].fill(0x55);
                        left -= n;
                        n
                    });
                    assert_eq!(pushed, budget.min(CAP - fill));
                    let mut all = [0u8; CAP];
                    let got = with_dest(&mut all, |dst| ring.read_into(dst, usize::MAX));
                    assert_eq!(got, fill + pushed);
                    assert_eq!(&all[..fill], queued);
                    assert!(all[fill..got].iter().all(|&b| b == 0x55));
                }
            }
        }
    }

    /// Queues `data` (all of it must fit); returns the number of segments used.
    fn push(ring: &mut Ring, data: &[u8]) -> usize {
        let (mut off, mut segs) = (0, 0);
        let n = ring.push_with(data.len(), |seg| {
            seg.copy_from_slice(&data[off..off + seg.len()]);
            off += seg.len();
            segs += 1;
            seg.len()
        });
        assert_eq!(n, data.len());
        segs
    }

    /// Takes up to `max` bytes out into a vector; returns them and the segments used.
    fn pop(ring: &mut Ring, max: usize) -> (KVec<u8>, usize) {
        let mut out = KVec::new();
        let mut segs = 0;
        ring.pop_with(max, |seg| {
            out.extend_from_slice(seg, GFP_KERNEL).unwrap();
            segs += 1;
            seg.len()
        });
        (out, segs)
    }

    #[test]
    fn empty_and_full() {
        let mut ring = Ring::new(4).unwrap();
        assert!(ring.is_empty());
        assert_eq!((ring.len(), ring.room(), ring.capacity()), (0, 4, 4));
        assert_eq!(push(&mut ring, b"abcd"), 1);
        assert_eq!((ring.len(), ring.room()), (4, 0));
        // Full: nothing more goes in, and the copy is not even called with space.
        assert_eq!(ring.push_with(10, |seg| seg.len()), 0);
        assert_eq!(pop(&mut ring, 10).0.as_slice(), b"abcd");
        assert!(ring.is_empty());
    }

    #[test]
    fn wraps_in_two_segments() {
        let mut ring = Ring::new(8).unwrap();
        push(&mut ring, b"012345");
        assert_eq!(pop(&mut ring, 4).0.as_slice(), b"0123");
        // Write position 6: two bytes to the end, three from the start.
        assert_eq!(push(&mut ring, b"abcde"), 2);
        assert_eq!(ring.len(), 7);
        let (out, segs) = pop(&mut ring, 100);
        assert_eq!(out.as_slice(), b"45abcde");
        assert_eq!(segs, 2);
        assert!(ring.is_empty());
    }

    #[test]
    fn capacity_one() {
        let mut ring = Ring::new(1).unwrap();
        for b in 0..=255u8 {
            assert_eq!(push(&mut ring, &[b]), 1);
            assert_eq!(ring.room(), 0);
            assert_eq!(pop(&mut ring, 8).0.as_slice(), &[b]);
        }
        // Capacity 0 (a rendezvous pipe): nothing goes in, nothing comes out.
        let mut ring = Ring::new(0).unwrap();
        assert!(ring.is_empty());
        assert_eq!((ring.len(), ring.room(), ring.capacity()), (0, 0, 0));
        assert_eq!(ring.push_with(10, |seg| seg.len()), 0);
        assert_eq!(ring.pop_with(10, |seg| seg.len()), 0);
        assert_eq!(ring.read_total(), 0);
    }

    #[test]
    fn short_copy_keeps_the_rest() {
        let mut ring = Ring::new(8).unwrap();
        push(&mut ring, b"0123456");
        pop(&mut ring, 6);
        push(&mut ring, b"abcdef");
        // Queued: "6abcdef", in two segments ("6a" at the end, "bcdef" at the start).
        // A destination that faults after 3 bytes: only those leave the ring.
        let mut budget = 3;
        let copied = ring.pop_with(8, |seg| {
            let n = seg.len().min(budget);
            budget -= n;
            n
        });
        assert_eq!(copied, 3);
        assert_eq!(pop(&mut ring, 100).0.as_slice(), b"cdef");
        // A source that faults after 2 bytes: only those are queued.
        let mut budget = 2;
        let copied = ring.push_with(8, |seg| {
            let n = seg.len().min(budget);
            budget -= n;
            n
        });
        assert_eq!(copied, 2);
        assert_eq!(ring.len(), 2);
    }

    /// A reader and a writer with claims out at once, as when both copy without the mutex: the
    /// reader empties the ring while the writer fills, and the writer's bytes land where its
    /// claim said, after the reader's.
    #[test]
    fn claims_from_both_sides_at_once() {
        let mut ring = Ring::new(8).unwrap();
        push(&mut ring, b"012345");
        pop(&mut ring, 3);
        // Queued "345" at 3..6; the writer claims 6, 7, 0, 1, 2.
        let mut w = ring.claim_write(100).unwrap();
        assert_eq!(w.len(), 5);
        let r = ring.claim_read(100).unwrap();
        assert_eq!(r.len(), 3);
        let mut out = KVec::new();
        assert_eq!(
            r.copy_with(|seg| {
                out.extend_from_slice(seg, GFP_KERNEL).unwrap();
                seg.len()
            }),
            3
        );
        // The ring empties with the write claim out: the read position must stay put.
        ring.consume(r, 3);
        assert!(ring.is_empty());
        let mut data = b"abcde".iter();
        assert_eq!(
            w.copy_with(|seg| {
                seg.iter_mut().for_each(|b| *b = *data.next().unwrap());
                seg.len()
            }),
            5
        );
        ring.commit(w, 5);
        assert_eq!(out.as_slice(), b"345");
        let (got, segs) = pop(&mut ring, 100);
        assert_eq!(got.as_slice(), b"abcde");
        assert_eq!(segs, 2);
    }

    #[test]
    fn max_limits_copies() {
        let mut ring = Ring::new(16).unwrap();
        assert_eq!(ring.push_with(5, |seg| seg.len()), 5);
        assert_eq!(ring.pop_with(2, |seg| seg.len()), 2);
        assert_eq!(ring.len(), 3);
        // The stream position counts what left the ring, not what was cleared.
        assert_eq!(ring.pop_with(1, |seg| seg.len()), 1);
        assert_eq!(ring.read_total(), 3);
        ring.clear();
        assert_eq!(ring.read_total(), 3);
        assert!(ring.is_empty());
        assert_eq!(ring.room(), 16);
    }
}
