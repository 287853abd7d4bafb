// SPDX-License-Identifier: GPL-2.0

//! Pinned user pages: the buffer of a task waiting in read or write, held so that the task that
//! comes next can copy straight into it or out of it.
//!
//! The kernel crate has no abstraction for this, so this is a small one, after
//! mm/process_vm_access.c: `iov_iter_extract_pages` pins the pages behind a user-backed
//! `iov_iter` (`pin_user_pages_fast`, `FOLL_WRITE` for a destination), and the other task copies
//! page by page with `copy_page_to_iter` or `copy_page_from_iter`, which map each page for the
//! copy. A pin keeps the page itself, not the mapping: if the owner unmaps its buffer while it
//! waits, the copy still lands in (or comes from) the page it pinned, and the page is freed when
//! the pin goes.
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
///   `iov_iter_extract_pages` on a user-backed iterator, owned by `self` and released in `drop`;
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

/// Whether an `iov_iter` is over user memory (`user_backed_iter`), so that extracting its pages
/// pins them.
///
/// # Safety
///
/// `iter` must be a valid `iov_iter`.
unsafe fn user_backed(iter: *const bindings::iov_iter) -> bool {
    // SAFETY: The caller guarantees `iter` is valid.
    let ty = u32::from(unsafe { (*iter).iter_type });
    ty == bindings::iter_type_ITER_UBUF || ty == bindings::iter_type_ITER_IOVEC
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
        let mut this = Self {
            pages: KVec::with_capacity(MAX_PINNED_PAGES, GFP_KERNEL)?,
            spans: KVec::with_capacity(MAX_PINNED_PAGES, GFP_KERNEL)?,
            len: 0,
            done: 0,
            cur: 0,
            cur_off: 0,
            dest,
            dirty: false,
        };
        // One call pins one run of contiguous user memory (a segment of a readv or writev):
        // call again for the next, until `max` bytes or the page limit.
        while this.len < max && this.pages.len() < MAX_PINNED_PAGES {
            let room = MAX_PINNED_PAGES - this.pages.len();
            let mut array = this.pages.spare_capacity_mut().as_mut_ptr().cast();
            let mut offset = 0;
            // SAFETY: `iter` is valid, user-backed and ours to advance (the caller); `array`
            // points to `room` writable slots, where the call stores the pages it pins (it only
            // allocates an array of its own when given none).
            let got = unsafe {
                bindings::iov_iter_extract_pages(
                    iter,
                    &mut array,
                    max - this.len,
                    room as u32,
                    0,
                    &mut offset,
                )
            };
            if got <= 0 {
                if this.len == 0 {
                    // `iov_iter_extract_pages` returns a negative errno, or 0 for nothing left.
                    return Err(if got < 0 {
                        Error::from_errno(got as i32)
                    } else {
                        EFAULT
                    });
                }
                break;
            }
            let got = got as usize;
            let count = (offset + got).div_ceil(PAGE_SIZE);
            // SAFETY: The call pinned `count` pages (no more than `room`) and stored them in the
            // first `count` spare slots. INVARIANT: `drop` releases them from now on.
            unsafe { this.pages.inc_len(count) };
            let (mut offset, mut left) = (offset, got);
            for _ in 0..count {
                let len = left.min(PAGE_SIZE - offset);
                // Within the capacity reserved above: never allocates, never fails.
                this.spans.push(Span { offset, len }, GFP_KERNEL)?;
                left -= len;
                offset = 0;
            }
            this.len += got;
        }
        Ok(Some(this))
    }

    /// The bytes pinned.
    pub(crate) fn len(&self) -> usize {
        self.len
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
        let (pages, count) = (
            self.pages.as_mut_ptr(),
            self.pages.len() as kernel::ffi::c_ulong,
        );
        // SAFETY: Each of the `count` pages holds one pin that `self` owns (type invariant),
        // released here once. Pages written through the pin are marked dirty, as the pin's user
        // (here, a copy) wrote them behind the page tables' back.
        unsafe {
            if self.dest {
                bindings::unpin_user_pages_dirty_lock(pages, count, self.dirty);
            } else {
                bindings::unpin_user_pages(pages, count);
            }
        }
    }
}
