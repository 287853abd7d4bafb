// SPDX-License-Identifier: GPL-2.0

//! Handoffs: bytes that move straight from a writer's buffer to a reader's, with one copy.
//!
//! A Linux pipe copies every byte twice, writer's memory to pipe buffer to reader's memory, and a
//! write returns once its bytes are buffered. Two things in mini_pipe wait for the reader
//! instead: every write on a pipe loaded with `capacity=0` (a rendezvous channel, with no ring),
//! and a synchronous write (`O_DSYNC`, `O_SYNC`) on any pipe. Their bytes skip the ring. As in
//! Go's unbuffered channels (`sendDirect`, `recvDirect` in runtime/chan.go), whichever side
//! comes first waits with its buffer, and the side that comes second does the one copy:
//!
//! - a writer that finds no reader waiting leaves an [`Offer`]: its pages, pinned
//!   ([`PinnedPages`]), which readers copy out of, oldest offer first, as FreeBSD's
//!   `pipe_direct_write` has readers copy from a writer's held pages;
//! - at `capacity=0`, a reader that finds nothing offered leaves a [`Slot`]: its own pages,
//!   pinned, which the next writer copies into ([`Handoffs::fill`]). On one CPU, a reader of a
//!   buffered pipe that asks for more than the ring holds does the same, and writers fill its
//!   slot before the ring (`Pipe::reader_slots`).
//!
//! Every copy happens with the pipe's mutex held, as the ring's copies do, so a write of at most
//! `PIPE_BUF` bytes reaches readers whole, never mixed with another writer's bytes, and an offer
//! or slot is never copied while its owner takes it back. The owner alone removes its offer or
//! slot, with the mutex held, when it leaves; what was copied by then is what it reports. So no
//! byte is lost or delivered twice, whatever ends the wait (the partner, a signal, the last
//! partner leaving).
//!
//! Small writes (at most `PIPE_BUF` bytes) and buffers in kernel memory (splice) are offered as a
//! copy in a kernel buffer instead of pinned pages: pinning a page or two costs about what
//! copying a page does, and a kernel buffer needs no pin. Such a write is atomic: once readers
//! have taken a byte of it, it is committed. A signal or the last reader leaving then no longer
//! takes the rest back ([`Handoffs::detach`]): it stays queued, as a FIFO's buffered bytes do,
//! and the write reports all its bytes. So no reader ever sees a small write cut short.
//!
//! The pages pinned for one pipe are bounded ([`MAX_PINNED_PER_PIPE`]): past that, a writer
//! offers a copy and a reader waits without a slot, as for memory that cannot be pinned.

use crate::pin::PinnedPages;
use kernel::{
    alloc::KVVec,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    prelude::*,
    sync::aref::ARef,
    task::Task,
};

/// The most bytes of user memory the offers and slots of one pipe keep pinned: 16 MiB.
pub(crate) const MAX_PINNED_PER_PIPE: usize = 16 << 20;

/// The bytes a waiting writer offers.
pub(crate) enum Offered {
    /// The writer's own pages, pinned: readers copy from them, the only copy.
    Pinned(PinnedPages),
    /// A copy in a kernel buffer, `done` bytes of it already taken.
    Copied { buf: KVVec<u8>, done: usize },
}

impl Offered {
    /// Copies up to `max` bytes of `src` into a kernel buffer. A short copy (a fault) offers what
    /// arrived; `EFAULT` if nothing did.
    pub(crate) fn copy(src: &mut IovIterSource<'_>, max: usize) -> Result<Self> {
        let mut buf = KVVec::from_elem(0u8, max.min(src.len()), GFP_KERNEL)?;
        let copied = src.copy_from_iter(&mut buf);
        if copied == 0 {
            return Err(EFAULT);
        }
        buf.truncate(copied);
        Ok(Self::Copied { buf, done: 0 })
    }

    fn len(&self) -> usize {
        match self {
            Self::Pinned(pages) => pages.len(),
            Self::Copied { buf, .. } => buf.len(),
        }
    }

    fn done(&self) -> usize {
        match self {
            Self::Pinned(pages) => pages.done(),
            Self::Copied { done, .. } => *done,
        }
    }

    fn left(&self) -> usize {
        self.len() - self.done()
    }

    /// The bytes of user memory it keeps pinned.
    fn pinned(&self) -> usize {
        match self {
            Self::Pinned(pages) => pages.pinned(),
            Self::Copied { .. } => 0,
        }
    }

    /// Copies up to `max` of the bytes not yet taken into `dst`; returns how many.
    fn copy_to_iter(&mut self, dst: &mut IovIterDest<'_>, max: usize) -> usize {
        match self {
            Self::Pinned(pages) => pages.copy_to_iter(dst, max),
            Self::Copied { buf, done } => {
                let end = buf.len().min(*done + max);
                let copied = dst.copy_to_iter(&buf[*done..end]);
                *done += copied;
                copied
            }
        }
    }
}

/// Names an offer or a slot for its owner, who alone may take it back. Not `Clone`: it is
/// given up when the offer or slot is removed.
pub(crate) struct Ticket(u64);

/// A writer waiting for readers to take its bytes.
struct Offer {
    ticket: u64,
    /// Its place in the stream: the bytes ever read from the ring once those queued before it
    /// have been read ([`Handoffs::head_mark`]).
    mark: u64,
    bytes: Offered,
    /// Woken once all the bytes are taken; `None` once the writer has left them committed
    /// ([`Handoffs::detach`]).
    writer: Option<ARef<Task>>,
}

/// A reader waiting in read (at `capacity=0`) with its buffer pinned for writers to fill.
struct Slot {
    ticket: u64,
    pages: PinnedPages,
    reader: ARef<Task>,
}

/// What a read took from offers.
#[derive(Default)]
pub(crate) struct Taken {
    /// Bytes copied.
    pub(crate) bytes: usize,
    /// Of those, bytes copied from a writer's own pages (one copy in all).
    pub(crate) direct: usize,
}

/// The offers and slots of one pipe, kept under its mutex.
///
/// # Invariants
///
/// `offered` is the sum of the offers' bytes not yet taken, `slot_room` the sum of the slots'
/// room left, and `pinned` the bytes of user memory they all keep pinned. Offers are taken from
/// in order, so the offers with nothing left come first; a detached offer (no writer) has bytes
/// left.
pub(crate) struct Handoffs {
    offers: KVec<Offer>,
    slots: KVec<Slot>,
    next_ticket: u64,
    offered: usize,
    slot_room: usize,
    pinned: usize,
}

impl Handoffs {
    pub(crate) const fn new() -> Self {
        Self {
            offers: KVec::new(),
            slots: KVec::new(),
            next_ticket: 0,
            offered: 0,
            slot_room: 0,
            pinned: 0,
        }
    }

    /// How many more bytes of user memory this pipe may pin now ([`MAX_PINNED_PER_PIPE`]).
    pub(crate) fn pin_budget(&self) -> usize {
        MAX_PINNED_PER_PIPE.saturating_sub(self.pinned)
    }

    /// Bytes waiting writers offer and readers have not taken yet.
    pub(crate) fn offered(&self) -> usize {
        self.offered
    }

    /// Bytes readers waiting in read could take now, in the slots they left.
    pub(crate) fn slot_room(&self) -> usize {
        self.slot_room
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.next_ticket
    }

    /// The place in the stream of the first offer with bytes left (see [`Offer::mark`]).
    pub(crate) fn head_mark(&self) -> Option<u64> {
        self.offers
            .iter()
            .find(|o| o.bytes.left() > 0)
            .map(|o| o.mark)
    }

    /// Queues `bytes` for readers, behind the bytes queued so far; `writer` is woken once all
    /// are taken.
    pub(crate) fn offer(
        &mut self,
        mark: u64,
        bytes: Offered,
        writer: ARef<Task>,
    ) -> Result<Ticket> {
        let ticket = self.ticket();
        let (left, pinned) = (bytes.left(), bytes.pinned());
        self.offers.push(
            Offer {
                ticket,
                mark,
                bytes,
                writer: Some(writer),
            },
            GFP_KERNEL,
        )?;
        self.offered += left;
        self.pinned += pinned;
        Ok(Ticket(ticket))
    }

    fn offer_index(&self, ticket: &Ticket) -> usize {
        // The owner holds the ticket, and only the owner removes the offer.
        self.offers
            .iter()
            .position(|o| o.ticket == ticket.0)
            .unwrap_or(usize::MAX)
    }

    /// How many of its bytes readers have taken, and how many it offers.
    pub(crate) fn offer_progress(&self, ticket: &Ticket) -> (usize, usize) {
        self.offers
            .get(self.offer_index(ticket))
            .map_or((0, 0), |o| (o.bytes.done(), o.bytes.len()))
    }

    /// Takes the offer back; returns how many of its bytes readers took. Its pages are unpinned.
    pub(crate) fn withdraw(&mut self, ticket: Ticket) -> usize {
        match self.offers.remove(self.offer_index(&ticket)) {
            Ok(offer) => {
                self.offered -= offer.bytes.left();
                self.pinned -= offer.bytes.pinned();
                offer.bytes.done()
            }
            Err(_) => 0,
        }
    }

    /// Leaves the rest of the offer queued for readers, with no writer waiting for it: the
    /// writer is done. For a write that must not be cut short once a reader has some of it (an
    /// atomic write's kernel copy, which pins nothing). Returns the bytes it offered in all.
    pub(crate) fn detach(&mut self, ticket: Ticket) -> usize {
        let i = self.offer_index(&ticket);
        match self.offers.get_mut(i) {
            Some(offer) if offer.bytes.left() > 0 => {
                offer.writer = None;
                offer.bytes.len()
            }
            Some(_) => self.withdraw(ticket),
            None => 0,
        }
    }

    /// Drops the detached offers: nobody is left to read them (the pipe's last file closed).
    /// Nothing else can be left then.
    pub(crate) fn discard_detached(&mut self) {
        self.offers.retain(|o| o.writer.is_some());
        self.offered = self.offers.iter().map(|o| o.bytes.left()).sum();
    }

    /// Copies up to `max` bytes of the first offer with bytes left into `dst`, and wakes its
    /// writer if that was the last of them.
    pub(crate) fn take(&mut self, dst: &mut IovIterDest<'_>, max: usize) -> Taken {
        let Some(i) = self.offers.iter().position(|o| o.bytes.left() > 0) else {
            return Taken::default();
        };
        let offer = &mut self.offers[i];
        let bytes = offer.bytes.copy_to_iter(dst, max);
        let direct = if matches!(offer.bytes, Offered::Pinned(_)) {
            bytes
        } else {
            0
        };
        self.offered -= bytes;
        if offer.bytes.left() == 0 {
            match &offer.writer {
                Some(writer) => writer.wake_up(),
                // Nobody will withdraw a detached offer: it goes once read.
                None => drop(self.offers.remove(i)),
            }
        }
        Taken { bytes, direct }
    }

    /// Leaves `pages` for writers to fill; `reader` is woken when bytes arrive.
    pub(crate) fn open_slot(&mut self, pages: PinnedPages, reader: ARef<Task>) -> Result<Ticket> {
        let ticket = self.ticket();
        let (room, pinned) = (pages.left(), pages.pinned());
        self.slots.push(
            Slot {
                ticket,
                pages,
                reader,
            },
            GFP_KERNEL,
        )?;
        self.slot_room += room;
        self.pinned += pinned;
        Ok(Ticket(ticket))
    }

    /// The slots open, filled or not.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    fn slot_index(&self, ticket: &Ticket) -> usize {
        self.slots
            .iter()
            .position(|s| s.ticket == ticket.0)
            .unwrap_or(usize::MAX)
    }

    /// The bytes writers have put in the slot so far.
    pub(crate) fn slot_filled(&self, ticket: &Ticket) -> usize {
        self.slots
            .get(self.slot_index(ticket))
            .map_or(0, |s| s.pages.done())
    }

    /// Takes the slot back; returns the bytes writers put in it. Its pages are unpinned.
    pub(crate) fn close_slot(&mut self, ticket: Ticket) -> usize {
        match self.slots.remove(self.slot_index(&ticket)) {
            Ok(slot) => {
                self.slot_room -= slot.pages.left();
                self.pinned -= slot.pages.pinned();
                slot.pages.done()
            }
            Err(_) => 0,
        }
    }

    /// Copies up to `max` bytes of `src` into the slots, oldest first. With `wake_by_name`, it
    /// wakes each reader whose slot received its first bytes; without, the caller wakes the
    /// queue they sleep on. Returns the bytes copied; fewer than `max` and than the room means
    /// `src` faulted.
    pub(crate) fn fill(
        &mut self,
        src: &mut IovIterSource<'_>,
        max: usize,
        wake_by_name: bool,
    ) -> usize {
        let mut copied = 0;
        for slot in self.slots.iter_mut() {
            let (want, before) = (slot.pages.left().min(max - copied), slot.pages.done());
            if want == 0 {
                continue;
            }
            let got = slot.pages.copy_from_iter(src, want);
            copied += got;
            if wake_by_name && before == 0 && got > 0 {
                slot.reader.wake_up();
            }
            if got < want || copied == max {
                break;
            }
        }
        self.slot_room -= copied;
        copied
    }

    /// Nothing is offered and no slot is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.offers.is_empty() && self.slots.is_empty()
    }
}

#[kunit_tests(mini_pipe_handoff)]
mod tests {
    use super::*;
    use crate::kvec::{
        with_dest,
        with_source, //
    };

    fn me() -> ARef<Task> {
        ARef::from(&**kernel::current!())
    }

    /// An offer of `data`, copied (as a small write's is).
    fn copied(data: &[u8]) -> Offered {
        with_source(data, |src| Offered::copy(src, data.len())).unwrap()
    }

    /// Takes up to `max` bytes into a buffer; returns them.
    fn take(h: &mut Handoffs, max: usize) -> KVec<u8> {
        let mut buf = [0u8; 32];
        let n = with_dest(&mut buf[..max], |dst| h.take(dst, max).bytes);
        let mut v = KVec::new();
        v.extend_from_slice(&buf[..n], GFP_KERNEL).unwrap();
        v
    }

    #[test]
    fn offers_are_taken_in_order_and_withdrawn_with_their_count() {
        let mut h = Handoffs::new();
        let a = h.offer(0, copied(b"abcde"), me()).unwrap();
        let b = h.offer(0, copied(b"XY"), me()).unwrap();
        assert_eq!(h.offered(), 7);
        assert_eq!(h.head_mark(), Some(0));
        // A read takes from the first offer only, and never more than it asks.
        assert_eq!(take(&mut h, 3).as_slice(), b"abc");
        assert_eq!(h.offer_progress(&a), (3, 5));
        assert_eq!(take(&mut h, 10).as_slice(), b"de");
        assert_eq!(h.offer_progress(&a), (5, 5));
        assert_eq!(h.offered(), 2);
        // The first writer takes its offer back: all 5 bytes were taken.
        assert_eq!(h.withdraw(a), 5);
        assert_eq!(take(&mut h, 1).as_slice(), b"X");
        // The second is interrupted: 1 byte taken, the other never delivered.
        assert_eq!(h.withdraw(b), 1);
        assert_eq!(h.offered(), 0);
        assert!(h.is_empty());
        assert_eq!(take(&mut h, 4).as_slice(), b"");
        assert_eq!(h.head_mark(), None);
    }

    #[test]
    fn a_copy_offer_holds_only_what_arrived() {
        // A source with nothing left: nothing to offer.
        assert!(with_source(&[], |src| Offered::copy(src, 8)).is_err());
        // At most `max` bytes are taken from the source.
        let mut h = Handoffs::new();
        let t = h.offer(7, copied(&b"0123456789"[..4]), me()).unwrap();
        assert_eq!((h.offered(), h.head_mark()), (4, Some(7)));
        assert_eq!(h.withdraw(t), 0);
    }
}
