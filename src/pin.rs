// SPDX-License-Identifier: GPL-2.0

//! Pinned user pages: the buffer of a task waiting in read or write, held so that the task that
//! comes next can copy straight into it or out of it.
//!
//! The kernel crate has no abstraction for this, so this is a small one, after
//! mm/process_vm_access.c: the pages behind a user-backed `iov_iter` are pinned segment by
//! segment with `pin_user_pages_fast` (as `iov_iter_extract_pages` does, which cannot be asked
//! for the flag below), and the other task copies page by page with `copy_page_to_iter` or
//! `copy_page_from_iter`, which map each page for the copy. A pin keeps the page itself, not the
//! mapping: if the owner unmaps its buffer while it waits, the copy still lands in (or comes
//! from) the page it pinned, and the page is freed when the pin goes.
//!
//! The pins are `FOLL_LONGTERM`: a waiting reader or writer may wait for ever, and a pin that
//! long must not sit in a CMA or movable zone (the pages are migrated out first) nor hold a
//! writable page of a file that needs dirty tracking (refused). A buffer that cannot be pinned
//! that way, or at all (`VM_IO`, `VM_PFNMAP`), is no error for the caller, which then waits
//! without pinning; the copy, when it comes, is an ordinary one.
//!
//! One [`PinnedPages`] holds at most [`MAX_PINNED_PAGES`] pages (1 MiB with 4 KiB pages), so no
//! caller pins unbounded memory however large its buffer: a larger read or write is served a
//! chunk at a time. Only user memory is pinned; for an `iov_iter` over kernel pages (splice,
//! `kernel_write`) there is nothing to pin, and [`PinnedPages::from_source`] and
//! [`PinnedPages::from_dest`] return `None`.

use kernel::{
    bindings,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    page::PAGE_SIZE,
    prelude::*,
};

/// The most pages one [`PinnedPages`] holds.
pub(crate) const MAX_PINNED_PAGES: usize = 256;

/// The bytes of one pinned page that belong to the buffer.
#[derive(Clone, Copy)]
struct Span {
    offset: usize,
    len: usize,
}

/// Pages of a user buffer, pinned (`FOLL_PIN`) and released on drop, with a cursor: the bytes
/// before it have been copied.
///
/// # Invariants
///
/// - `pages.len() == spans.len() <= MAX_PINNED_PAGES`; each `pages[i]` holds one pin taken by
///   `pin_user_pages_fast` (`FOLL_PIN`), owned by `self` and released in `drop`;
///   `spans[i]` lies inside that page (`offset + len <= PAGE_SIZE`, `len > 0`).
/// - `len` is the sum of the spans' lengths; `done <= len`; `cur` and `cur_off` locate byte
///   `done` (`cur == pages.len()` once `done == len`).
/// - `dest`: the pages were pinned for writing (`FOLL_WRITE`).
pub(crate) struct PinnedPages {
    pages: KVec<*mut bindings::page>,
    spans: KVec<Span>,
    len: usize,
    done: usize,
    cur: usize,
    cur_off: usize,
    dest: bool,
    /// Some byte was written into the pages: they are marked dirty when unpinned.
    dirty: bool,
}

// SAFETY: A pin belongs to no thread: it is taken and released with the page's refcount, from
// any task; the pointers are only used for copies, which map the page for themselves.
unsafe impl Send for PinnedPages {}

/// Whether an `iov_iter` is over user memory (`user_backed_iter`), so that its pages can be
/// pinned.
///
/// # Safety
///
/// `iter` must be a valid `iov_iter`.
unsafe fn user_backed(iter: *const bindings::iov_iter) -> bool {
    // SAFETY: The caller guarantees `iter` is valid.
    let ty = u32::from(unsafe { (*iter).iter_type });
    ty == bindings::iter_type_ITER_UBUF || ty == bindings::iter_type_ITER_IOVEC
}

/// The user address and length of what a user-backed `iter` reads or writes next, at most
/// `max` bytes of it: its first non-empty segment (lib/iov_iter.c: `first_iovec_segment`).
/// `None` when it has nothing left.
///
/// # Safety
///
/// `iter` must be a valid, user-backed `iov_iter` (`ITER_UBUF` or `ITER_IOVEC`).
unsafe fn first_segment(iter: *const bindings::iov_iter, max: usize) -> Option<(usize, usize)> {
    // SAFETY: `iter` is valid (the caller).
    let i = unsafe { &*iter };
    // SAFETY: For a user-backed iterator the first union holds the segment pointer (or, for
    // `ITER_UBUF`, the buffer) and the count: include/linux/uio.h overlays them for that.
    let head = unsafe { i.__bindgen_anon_1.__bindgen_anon_1.as_ref() };
    let max = max.min(head.count);
    if max == 0 {
        return None;
    }
    if u32::from(i.iter_type) == bindings::iter_type_ITER_UBUF {
        // SAFETY: An `ITER_UBUF` iterator's pointer is `ubuf`.
        let base = unsafe { head.__bindgen_anon_1.ubuf } as usize;
        return Some((base + i.iov_offset, max));
    }
    // SAFETY: An `ITER_IOVEC` iterator's pointer is `__iov`, an array of `nr_segs` iovecs.
    let (iov, segs) = unsafe { (head.__bindgen_anon_1.__iov, i.__bindgen_anon_2.nr_segs) };
    let mut skip = i.iov_offset;
    for k in 0..segs {
        // SAFETY: `k < nr_segs`, and the iovecs stay valid while the iterator is.
        let seg = unsafe { &*iov.add(k) };
        let len = seg.iov_len - skip;
        if len > 0 {
            return Some((seg.iov_base as usize + skip, len.min(max)));
        }
        skip = 0;
    }
    None
}

impl PinnedPages {
    /// Pins up to `max` bytes (at most [`MAX_PINNED_PAGES`] pages) of what `src` would be read
    /// from next, and advances `src` past them. `None` if `src` is not over user memory.
    /// `EFAULT` (or whatever pinning said) if not a byte could be pinned.
    pub(crate) fn from_source(src: &mut IovIterSource<'_>, max: usize) -> Result<Option<Self>> {
        // SAFETY: `as_raw` gives a valid `iov_iter`, readable as a source for this call.
        unsafe { Self::extract(src.as_raw(), max, false) }
    }

    /// As [`PinnedPages::from_source`], for the buffer `dst` would be written to next (pinned for
    /// writing).
    pub(crate) fn from_dest(dst: &mut IovIterDest<'_>, max: usize) -> Result<Option<Self>> {
        // SAFETY: `as_raw` gives a valid `iov_iter`, writable as a destination for this call.
        unsafe { Self::extract(dst.as_raw(), max, true) }
    }

    /// # Safety
    ///
    /// `iter` must be a valid `iov_iter` that the caller may advance, of direction `dest`.
    unsafe fn extract(
        iter: *mut bindings::iov_iter,
        max: usize,
        dest: bool,
    ) -> Result<Option<Self>> {
        // SAFETY: `iter` is valid (the caller).
        if !unsafe { user_backed(iter) } {
            return Ok(None);
        }
        let mut flags = bindings::FOLL_LONGTERM;
        if dest {
            flags |= bindings::FOLL_WRITE;
        }
        // SAFETY: `iter` is valid (the caller).
        if unsafe { (*iter).nofault } {
            flags |= bindings::FOLL_NOFAULT;
        }
        // Room for the pages of `max` bytes in one segment, which may start and end mid-page;
        // a readv's further segments may then find none left, and what is pinned stops short.
        let cap = (max.div_ceil(PAGE_SIZE) + 1).min(MAX_PINNED_PAGES);
        let mut this = Self {
            pages: KVec::with_capacity(cap, GFP_KERNEL)?,
            spans: KVec::with_capacity(cap, GFP_KERNEL)?,
            len: 0,
            done: 0,
            cur: 0,
            cur_off: 0,
            dest,
            dirty: false,
        };
        // A segment at a time (a readv or writev has several), until `max` bytes or the page
        // limit.
        while this.len < max && this.pages.len() < cap {
            // SAFETY: `iter` is valid and user-backed.
            let Some((addr, len)) = (unsafe { first_segment(iter, max - this.len) }) else {
                break;
            };
            let offset = addr % PAGE_SIZE;
            let want = (offset + len)
                .div_ceil(PAGE_SIZE)
                .min(cap - this.pages.len());
            let array = this.pages.spare_capacity_mut().as_mut_ptr().cast();
            // SAFETY: `array` points to at least `want` writable slots, where the call stores
            // the pages it pins; it returns how many it pinned (at most `want`), or an error.
            let got =
                unsafe { bindings::pin_user_pages_fast(addr - offset, want as i32, flags, array) };
            if got <= 0 {
                if this.len == 0 {
                    return Err(if got < 0 {
                        Error::from_errno(got)
                    } else {
                        EFAULT
                    });
                }
                break;
            }
            let count = got as usize;
            // SAFETY: The call pinned `count` pages (no more than `want`) and stored them in the
            // first `count` spare slots. INVARIANT: `drop` releases them from now on.
            unsafe { this.pages.inc_len(count) };
            let bytes = len.min(count * PAGE_SIZE - offset);
            let (mut offset, mut left) = (offset, bytes);
            for _ in 0..count {
                let len = left.min(PAGE_SIZE - offset);
                // Within the capacity reserved above: never allocates, never fails.
                this.spans.push(Span { offset, len }, GFP_KERNEL)?;
                left -= len;
                offset = 0;
            }
            this.len += bytes;
            // SAFETY: `iter` is valid and the caller's to advance; `bytes` is within its count.
            unsafe { bindings::iov_iter_advance(iter, bytes) };
            if bytes < len {
                // Pinned short (a hole, or a page that cannot be pinned): stop there.
                break;
            }
        }
        Ok(Some(this))
    }

    /// The bytes pinned.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes of memory pinned: whole pages.
    pub(crate) fn pinned(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }

    /// The bytes copied so far, from the front.
    pub(crate) fn done(&self) -> usize {
        self.done
    }

    /// The bytes not yet copied.
    pub(crate) fn left(&self) -> usize {
        self.len - self.done
    }

    /// Runs `copy(page, offset, len)` over the next bytes, up to `max`, a page at a time, and
    /// moves the cursor past what it copied; a short copy (a fault on the other side) ends it.
    /// Returns the bytes copied.
    fn copy_with(
        &mut self,
        max: usize,
        mut copy: impl FnMut(*mut bindings::page, usize, usize) -> usize,
    ) -> usize {
        let mut copied = 0;
        while copied < max && self.cur < self.pages.len() {
            let span = self.spans[self.cur];
            let want = (span.len - self.cur_off).min(max - copied);
            let got = copy(self.pages[self.cur], span.offset + self.cur_off, want);
            copied += got;
            self.done += got;
            self.cur_off += got;
            if self.cur_off == span.len {
                self.cur += 1;
                self.cur_off = 0;
            }
            if got < want {
                break;
            }
        }
        copied
    }

    /// Copies up to `max` of the next bytes into `dst`.
    pub(crate) fn copy_to_iter(&mut self, dst: &mut IovIterDest<'_>, max: usize) -> usize {
        let iter = dst.as_raw();
        self.copy_with(max, |page, offset, len| {
            // SAFETY: `page` is pinned (type invariant) and `offset + len` lies inside it;
            // `iter` is a valid destination, borrowed for this call.
            unsafe { bindings::copy_page_to_iter(page, offset, len, iter) }
        })
    }

    /// Copies up to `max` bytes from `src` into the next bytes of the pages (pinned for writing).
    pub(crate) fn copy_from_iter(&mut self, src: &mut IovIterSource<'_>, max: usize) -> usize {
        debug_assert!(self.dest);
        let iter = src.as_raw();
        let copied = self.copy_with(max, |page, offset, len| {
            // SAFETY: `page` is pinned for writing (type invariant: `dest`) and
            // `offset + len` lies inside it; `iter` is a valid source, borrowed for this call.
            unsafe { bindings::copy_page_from_iter(page, offset, len, iter) }
        });
        self.dirty |= copied > 0;
        copied
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        let pages = self.pages.as_mut_ptr();
        let count = self.pages.len();
        // Only the pages up to the cursor were written to: those are marked dirty.
        let written = if self.dest && self.dirty {
            self.cur + usize::from(self.cur_off > 0)
        } else {
            0
        };
        // SAFETY: Each of the `count` pages holds one pin that `self` owns (type invariant),
        // released here once: the first `written` marked dirty, as a copy wrote them behind the
        // page tables' back, the others as they are. `written <= count`.
        unsafe {
            if written > 0 {
                bindings::unpin_user_pages_dirty_lock(pages, written, true);
            }
            bindings::unpin_user_pages(pages.add(written), count - written);
        }
    }
}
