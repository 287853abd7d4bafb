// SPDX-License-Identifier: GPL-2.0

//! The ring's bytes, and the claims through which one reader and one writer copy out of and
//! into them at the same time, without the pipe's mutex.
//!
//! fs/pipe.c copies with `pipe->mutex` held, so a reader and a writer take turns. mini_pipe's
//! ring is one array, and what a reader copies out of (queued bytes) and what a writer copies
//! into (free space) never overlap, so the two can copy at once: each claims its part with the
//! mutex held, copies without it, and hands the claim back with the mutex held again
//! ([`crate::ring`] says which part, [`crate::pipe`] when).
//!
//! [`Storage`] makes that safe whatever its callers do: it records the claims it has handed
//! out, refuses a second one of a kind and any that would overlap the other, and frees the
//! array only when no claim is out. A claim is the only way to the bytes.

use kernel::{
    alloc::KVVec,
    prelude::*, //
};

/// A part of the array: `len` bytes from `start`, wrapping past the end to the front. (32-bit
/// fields: [`Storage`] keeps two of these in the cache line of the pipe's mutex.)
#[derive(Clone, Copy, PartialEq, Debug)]
struct Extent {
    start: u32,
    len: u32,
}

impl Extent {
    /// `len` bytes from `start`, both at most the array's size, which fits in 32 bits.
    fn new(start: usize, len: usize) -> Self {
        Self {
            start: start as u32,
            len: len as u32,
        }
    }

    /// No bytes: what a claim of nothing covers, and what `Storage` records when no claim is
    /// out.
    const NONE: Extent = Extent { start: 0, len: 0 };

    /// The extent as at most two plain ranges `(start, len)` of an array of `cap` bytes, in
    /// order: up to the end, then from the front.
    #[inline]
    fn segments(self, cap: usize) -> [(usize, usize); 2] {
        let (start, len) = (self.start as usize, self.len as usize);
        let first = len.min(cap - start);
        [(start, first), (0, len - first)]
    }

    /// Runs `copy` on each segment in order (at most two; see [`Extent::segments`]), handed its
    /// start and length, until one comes back short. Returns the sum of what it returned.
    ///
    /// Written out segment by segment rather than as a loop over the array: the loop called
    /// into `core` for the array's iterator on every copy (logs/bench/NOTES.md, section 18).
    #[inline]
    fn copy_segments(self, cap: usize, mut copy: impl FnMut(usize, usize) -> usize) -> usize {
        let [(start, len), (wrapped_start, wrapped_len)] = self.segments(cap);
        if len == 0 {
            return 0;
        }
        let n = copy(start, len).min(len);
        if n < len || wrapped_len == 0 {
            return n;
        }
        n + copy(wrapped_start, wrapped_len).min(wrapped_len)
    }

    /// Whether the two extents share a byte, in an array of `cap` bytes.
    #[inline]
    fn overlaps(self, other: Extent, cap: usize) -> bool {
        if self.len == 0 || other.len == 0 {
            return false;
        }
        self.segments(cap).iter().any(|&(a, an)| {
            other
                .segments(cap)
                .iter()
                .any(|&(b, bn)| an > 0 && bn > 0 && a < b + bn && b < a + an)
        })
    }
}

/// The ring's array of bytes, reached only through claims.
///
/// # Invariants
///
/// - `buf` holds `cap` initialised bytes, which are never touched through `buf` itself (its
///   pointer and length are read; the bytes are freed in `drop`, only when no claim is out).
/// - `read` and `write` are the extents of the [`ReadClaim`] and [`WriteClaim`] handed out and
///   not yet handed back ([`Extent::NONE`] if none, or if the claim is of nothing); both lie
///   inside the array, and they never overlap.
///
/// The size and the claims come first, for [`crate::ring::Ring`] to keep them next to its
/// indices ([`crate::cacheline`]); `buf`, which no call writes, after them.
#[repr(C)]
pub(crate) struct Storage {
    cap: u32,
    read: Extent,
    write: Extent,
    buf: core::mem::ManuallyDrop<KVVec<u8>>,
}

impl Storage {
    /// `cap` zeroed bytes (so that nothing but what writers wrote can ever be read back), at
    /// most `u32::MAX` (`EINVAL`).
    pub(crate) fn new(cap: usize) -> Result<Self> {
        let cap32 = u32::try_from(cap).map_err(|_| EINVAL)?;
        let buf = KVVec::from_elem(0u8, cap, GFP_KERNEL)?;
        // INVARIANT: `buf` holds `cap` initialised bytes; no claim is out.
        Ok(Self {
            cap: cap32,
            read: Extent::NONE,
            write: Extent::NONE,
            buf: core::mem::ManuallyDrop::new(buf),
        })
    }

    /// The size of the array.
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Where the bytes start.
    fn base(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr()
    }

    /// Whether a claim is out.
    #[inline]
    pub(crate) fn claimed(&self) -> bool {
        self.read.len > 0 || self.write.len > 0
    }

    /// The bytes of the read claim out (0 if none).
    #[inline]
    pub(crate) fn read_len(&self) -> usize {
        self.read.len as usize
    }

    /// The bytes of the write claim out (0 if none).
    #[inline]
    pub(crate) fn write_len(&self) -> usize {
        self.write.len as usize
    }

    /// Checks that a claim of `len` bytes from `start` fits in the array and, with `other` the
    /// claim of the other kind that is out, would not overlap it.
    #[inline]
    fn check(&self, start: usize, len: usize, other: Extent) -> Result<Extent> {
        if len == 0 {
            return Ok(Extent::NONE);
        }
        let cap = self.capacity();
        if len > cap || start >= cap {
            return Err(EINVAL);
        }
        let extent = Extent::new(start, len);
        if extent.overlaps(other, cap) {
            return Err(EBUSY);
        }
        Ok(extent)
    }

    /// Claims `len` bytes from `start` (wrapping) for a copy out. `EBUSY` if a read claim is
    /// already out or the write claim overlaps; `EINVAL` if it does not fit.
    #[inline]
    pub(crate) fn claim_read(&mut self, start: usize, len: usize) -> Result<ReadClaim> {
        if self.read.len > 0 {
            return Err(EBUSY);
        }
        let extent = self.check(start, len, self.write)?;
        self.read = extent;
        // INVARIANT: `extent` lies in the array and is recorded as the read claim until
        // `end_read` is handed this claim; `check` kept it off the write claim.
        Ok(ReadClaim {
            base: self.base(),
            cap: self.capacity(),
            extent,
        })
    }

    /// Claims `len` bytes from `start` (wrapping) for a copy in; errors as
    /// [`Storage::claim_read`].
    #[inline]
    pub(crate) fn claim_write(&mut self, start: usize, len: usize) -> Result<WriteClaim> {
        if self.write.len > 0 {
            return Err(EBUSY);
        }
        let extent = self.check(start, len, self.read)?;
        self.write = extent;
        // INVARIANT: as in `claim_read`.
        Ok(WriteClaim {
            base: self.base(),
            cap: self.capacity(),
            extent,
        })
    }

    /// Takes back the read claim: its bytes may be written again. Returns where it started.
    #[inline]
    pub(crate) fn end_read(&mut self, claim: ReadClaim) -> usize {
        // A claim of another storage leaves this one's recorded: nothing is then freed or
        // overwritten that a copy could still use.
        if claim.base == self.base() && self.read == claim.extent {
            self.read = Extent::NONE;
        }
        claim.extent.start as usize
    }

    /// Takes back the write claim. Returns where it started.
    #[inline]
    pub(crate) fn end_write(&mut self, claim: WriteClaim) -> usize {
        if claim.base == self.base() && self.write == claim.extent {
            self.write = Extent::NONE;
        }
        claim.extent.start as usize
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if self.claimed() {
            // A claim still out could be copying: leak the array rather than free it under
            // the copy. (It cannot happen: a claim lives inside one read or write, on a file
            // that keeps the pipe alive.)
            pr_warn!("mini_pipe: ring freed with a copy in progress; leaking it\n");
            return;
        }
        // SAFETY: `buf` is dropped once, here, and no claim is out to use its bytes.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.buf) };
    }
}

/// Queued bytes of the ring that one reader copies out, without the mutex.
///
/// # Invariants
///
/// `extent` lies in the `cap`-byte array at `base`, which stays allocated and unwritten while
/// the claim exists: the [`Storage`] that handed it out records it, writes only through a
/// [`WriteClaim`] that does not overlap it, and frees the array only once it is handed back.
#[must_use = "a claim must be handed back to its storage"]
pub(crate) struct ReadClaim {
    base: *mut u8,
    cap: usize,
    extent: Extent,
}

impl ReadClaim {
    /// The claimed bytes.
    pub(crate) fn len(&self) -> usize {
        self.extent.len as usize
    }

    /// Copies the claimed bytes out through `copy`, handed at most two slices in order, which
    /// returns how many bytes of each it took; a short copy ends it. Returns the bytes taken.
    #[inline]
    pub(crate) fn copy_with(&self, mut copy: impl FnMut(&[u8]) -> usize) -> usize {
        self.extent.copy_segments(self.cap, |start, len| {
            // SAFETY: `start + len <= cap`, so the slice lies in the array, whose bytes are
            // initialised and not written while the claim exists (type invariant).
            copy(unsafe { core::slice::from_raw_parts(self.base.add(start), len) })
        })
    }
}

/// Free space of the ring that one writer copies into, without the mutex.
///
/// # Invariants
///
/// `extent` lies in the `cap`-byte array at `base`, which stays allocated while the claim
/// exists, and nobody else reads or writes it meanwhile: the [`Storage`] that handed it out
/// records it, lets through no [`ReadClaim`] overlapping it and no second write claim, and
/// frees the array only once it is handed back.
#[must_use = "a claim must be handed back to its storage"]
pub(crate) struct WriteClaim {
    base: *mut u8,
    cap: usize,
    extent: Extent,
}

impl WriteClaim {
    /// The claimed bytes.
    pub(crate) fn len(&self) -> usize {
        self.extent.len as usize
    }

    /// Fills the claimed space through `copy`, as [`ReadClaim::copy_with`] empties it.
    #[inline]
    pub(crate) fn copy_with(&mut self, mut copy: impl FnMut(&mut [u8]) -> usize) -> usize {
        let base = self.base;
        self.extent.copy_segments(self.cap, |start, len| {
            // SAFETY: `start + len <= cap`, so the slice lies in the array; nobody else
            // touches these bytes while the claim exists (type invariant), `&mut self` keeps
            // any other slice of the claim from being made meanwhile, and this one ends with
            // the call, before the next segment's is made.
            copy(unsafe { core::slice::from_raw_parts_mut(base.add(start), len) })
        })
    }
}

#[kunit_tests(mini_pipe_claim)]
mod tests {
    use super::*;

    #[test]
    fn extents_overlap_exactly_when_they_share_a_byte() {
        const CAP: usize = 6;
        for a in 0..CAP {
            for an in 0..=CAP {
                for b in 0..CAP {
                    for bn in 0..=CAP {
                        let x = Extent::new(a, an);
                        let y = Extent::new(b, bn);
                        let shared =
                            (0..an).any(|i| (0..bn).any(|j| (a + i) % CAP == (b + j) % CAP));
                        assert_eq!(x.overlaps(y, CAP), shared);
                    }
                }
            }
        }
    }

    #[test]
    fn claims_are_kept_apart() {
        let mut s = Storage::new(8).unwrap();
        let r = s.claim_read(6, 4).unwrap();
        // Bytes 6, 7, 0, 1 are claimed: a write may have 2..6, nothing of the rest.
        assert_eq!(s.claim_write(1, 2).err(), Some(EBUSY));
        assert_eq!(s.claim_read(2, 1).err(), Some(EBUSY));
        let mut w = s.claim_write(2, 4).unwrap();
        assert_eq!(
            w.copy_with(|seg| {
                seg.fill(7);
                seg.len()
            }),
            4
        );
        assert_eq!(r.copy_with(|seg| seg.len()), 4);
        assert_eq!(s.end_read(r), 6);
        assert_eq!(s.end_write(w), 2);
        assert!(!s.claimed());
        // Out of the array.
        assert_eq!(s.claim_read(8, 1).err(), Some(EINVAL));
        assert_eq!(s.claim_write(0, 9).err(), Some(EINVAL));
    }
}
