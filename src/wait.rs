// SPDX-License-Identifier: GPL-2.0

//! Wait queues whose wakeups carry a poll key: `wait_queue_head_t` with fs/pipe.c's
//! `wake_up_interruptible_poll` and `wake_up_interruptible_sync_poll`.
//!
//! The kernel crate's `CondVar` and `PollCondVar` wake with no key. A wait queue is shared by
//! the tasks sleeping in read or write and by the poll, epoll and io_uring entries registered on
//! it, and a keyless wakeup matches every such entry: an `EPOLLEXCLUSIVE` epitem that waits for
//! `EPOLLIN` can take the one exclusive wakeup meant for a writer asleep on the same queue, and
//! that writer then sleeps for good. With a key (`EPOLLOUT | EPOLLWRNORM` for room,
//! `EPOLLIN | EPOLLRDNORM` for data), `ep_poll_callback`, `pollwake` and `io_poll_wake` pass over
//! the entries that did not ask for it, and the exclusive wakeup goes on to one that did.
//!
//! [`WaitQueue`] is what a keyed `notify` on `PollCondVar` would be, written so that it could be
//! proposed as one: waits and wakeups with a key, and registration with a poll table.

use core::marker::PhantomData;
use kernel::{
    bindings,
    ffi::{
        c_int,
        c_uint,
        c_void, //
    },
    fs::File,
    prelude::*,
    sync::{
        atomic::{
            Atomic,
            Relaxed, //
        },
        LockClassKey,
        Mutex,
        MutexGuard, //
    },
    task::TASK_INTERRUPTIBLE,
    types::Opaque,
};

/// `EPOLLET` from include/uapi/linux/eventpoll.h (a `__force` cast hides it from bindgen): set
/// in a poll table's key when the poller is an edge-triggered epoll.
const EPOLLET: u32 = 1 << 31;

/// The task state the wakeups target: the waits below are all interruptible, as in fs/pipe.c.
const WAKE_MODE: c_uint = TASK_INTERRUPTIBLE as c_uint;

/// Creates a [`WaitQueue`] initialiser with a lockdep class of its own for the queue's spinlock.
macro_rules! new_wait_queue {
    ($name:literal) => {
        $crate::wait::WaitQueue::new(kernel::c_str!($name), kernel::static_lock_class!())
    };
}
pub(crate) use new_wait_queue;

/// A wait queue head (`wait_queue_head_t`) for tasks that sleep with a mutex released, and for
/// poll tables, woken with a poll key.
///
/// # Invariants
///
/// `head` is an initialised wait queue head for as long as the `WaitQueue` exists, and stays at
/// its address (the type is pinned). Every entry that [`WaitQueue::wait`] adds is removed before
/// that call returns; poll table entries are removed by their owners, or by `drop`.
#[pin_data(PinnedDrop)]
pub(crate) struct WaitQueue {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
    /// Wakeups sent on this queue (each call, whether or not it found a sleeper).
    wakeups: Atomic<u64>,
}

// SAFETY: A wait queue head is used from any thread; its spinlock serialises every access.
unsafe impl Send for WaitQueue {}
// SAFETY: As for `Send`: every operation takes the queue's spinlock.
unsafe impl Sync for WaitQueue {}

/// Mutex guards that [`WaitQueue::wait`] releases while it sleeps: one, or an inner one with an
/// optional outer one, released inner first and taken again outer first, in the order they nest.
pub(crate) trait Held: Sized {
    /// What takes the locks again.
    type Locks;
    /// Releases the locks.
    fn unlock(self) -> Self::Locks;
    /// Takes the locks again.
    fn relock(locks: Self::Locks) -> Self;
}

impl<'a, T> Held for MutexGuard<'a, T> {
    type Locks = &'a Mutex<T>;
    fn unlock(self) -> Self::Locks {
        self.lock_ref()
    }
    fn relock(lock: Self::Locks) -> Self {
        lock.lock()
    }
}

impl<'a, 'b, O, T> Held for (Option<MutexGuard<'b, O>>, MutexGuard<'a, T>) {
    type Locks = (Option<&'b Mutex<O>>, &'a Mutex<T>);
    fn unlock(self) -> Self::Locks {
        let (outer, inner) = self;
        let locks = (outer.as_ref().map(|o| o.lock_ref()), inner.lock_ref());
        drop(inner);
        drop(outer);
        locks
    }
    fn relock((outer, inner): Self::Locks) -> Self {
        let outer = outer.map(|o| o.lock());
        (outer, inner.lock())
    }
}

/// Whom a sleeper is: one of many that each take a wakeup in turn (readers, writers), or one of
/// all that a wakeup must reach (opens waiting for a partner).
#[derive(Clone, Copy)]
pub(crate) enum Sleep {
    /// `prepare_to_wait_exclusive`: a wake-one wakeup wakes one such sleeper.
    Exclusive,
    /// `prepare_to_wait`: every wakeup wakes it.
    Shared,
}

impl WaitQueue {
    /// An initialiser for an empty queue; `name` and `key` are its spinlock's lockdep class.
    pub(crate) fn new(name: &'static CStr, key: Pin<&'static LockClassKey>) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes while the closure runs; `name` and `key` are
            // 'static, so they outlive the queue.
            head <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.as_ptr())
            }),
            wakeups: Atomic::new(0),
        })
    }

    /// Releases the mutexes that `held` holds, sleeps (interruptibly) until woken, and takes
    /// them again. Returns the new guards and whether a signal is pending.
    ///
    /// The entry goes on the queue before the mutexes are released, so a wakeup issued by
    /// whoever takes them next cannot be missed. Wakeups may also be spurious: the caller
    /// rechecks its condition.
    pub(crate) fn wait<H: Held>(&self, held: H, sleep: Sleep) -> (H, bool) {
        let entry = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `entry` is valid for writes; `init_wait` makes it an autoremove entry for the
        // current task.
        unsafe { bindings::init_wait(entry.get()) };
        // SAFETY: `head` is initialised (type invariant), `entry` is initialised and stays at its
        // address (it is never moved) until `finish_wait` below takes it off the queue.
        unsafe {
            match sleep {
                Sleep::Exclusive => {
                    bindings::prepare_to_wait_exclusive(
                        self.head.get(),
                        entry.get(),
                        TASK_INTERRUPTIBLE,
                    );
                }
                Sleep::Shared => {
                    bindings::prepare_to_wait(self.head.get(), entry.get(), TASK_INTERRUPTIBLE)
                }
            }
        };
        let locks = held.unlock();
        // SAFETY: No lock is held, and the task state was set by `prepare_to_wait*`: this
        // sleeps until a wakeup or a signal, or returns at once if either came meanwhile.
        unsafe { bindings::schedule() };
        let held = H::relock(locks);
        // SAFETY: `entry` was added to `head` above (or already removed by its wake function);
        // `finish_wait` takes it off the queue if needed and sets the task running again.
        unsafe { bindings::finish_wait(self.head.get(), entry.get()) };
        (held, kernel::current!().signal_pending())
    }

    /// Wakes every shared sleeper and poll entry whose events include `key` (all of them for a
    /// `key` of 0), and one exclusive sleeper: `wake_up_interruptible_poll`.
    pub(crate) fn wake_one(&self, key: u32) {
        self.wake(1, key);
    }

    /// As [`WaitQueue::wake_one`], wakes every matching exclusive sleeper too:
    /// `wake_up_interruptible_all` when `key` is 0.
    pub(crate) fn wake_all(&self, key: u32) {
        self.wake(0, key);
    }

    /// The wakeups sent on this queue so far.
    pub(crate) fn wakeups(&self) -> u64 {
        self.wakeups.load(Relaxed)
    }

    fn wake(&self, nr_exclusive: c_int, key: u32) {
        self.wakeups.fetch_add(1, Relaxed);
        // SAFETY: `head` is initialised (type invariant). The key is passed by value in the
        // pointer (`poll_to_key`), never dereferenced; NULL means no key.
        unsafe {
            bindings::__wake_up(
                self.head.get(),
                WAKE_MODE,
                nr_exclusive,
                key as usize as *mut c_void,
            )
        };
    }

    /// As [`WaitQueue::wake_one`], hinting that the caller is about to sleep or return, so the
    /// woken task may run on this CPU: `wake_up_interruptible_sync_poll`.
    pub(crate) fn wake_one_sync(&self, key: u32) {
        self.wakeups.fetch_add(1, Relaxed);
        // SAFETY: As in `wake`.
        unsafe {
            bindings::__wake_up_sync_key(self.head.get(), WAKE_MODE, key as usize as *mut c_void)
        };
    }
}

impl WaitQueue {
    /// Whether any entry is on the queue, looked at with its spinlock held: a removal in
    /// progress (`remove_wait_queue`, which holds the lock) has then finished, unlock included.
    fn has_entries(&self) -> bool {
        let head = self.head.get();
        // SAFETY: `head` is initialised (type invariant); its lock is taken and released here,
        // and the list is read only while it is held.
        unsafe {
            bindings::spin_lock(&raw mut (*head).lock);
            let list = &raw mut (*head).head;
            let empty = (*list).next == list;
            bindings::spin_unlock(&raw mut (*head).lock);
            !empty
        }
    }
}

#[pinned_drop]
impl PinnedDrop for WaitQueue {
    fn drop(self: Pin<&mut Self>) {
        // Nobody sleeps here any more (each `wait` removes its entry before returning, and the
        // queue's owner outlives every caller), but poll entries may remain: tell their owners,
        // and wait until epoll has let go of them, as `PollCondVar` does.
        //
        // With no entry left, that is not needed, and the grace period (milliseconds, which an
        // unload of 64 pipes would pay 128 times) is skipped. A poller reaches the queue only
        // through its entry, or, in epoll's and io_uring's removal paths, through a pointer to
        // the queue read under RCU while its entry is on the list or just after; and those
        // paths run while the poller holds the polled file, or before that file's release can
        // finish (`eventpoll_release` waits for the epoll's mutex). The pipes' queues are
        // dropped only once every file of the pipe has been released (the files hold the
        // module), so with the list empty, looked at under the lock (`has_entries`), no such
        // path can still be running on this queue.
        if self.has_entries() {
            // SAFETY: `head` is initialised (type invariant).
            unsafe { bindings::__wake_up_pollfree(self.head.get()) };
            crate::compat::synchronize_rcu();
        }
    }
}

/// A poll table passed to `file_operations::poll` (`poll_table`), which may be NULL.
///
/// # Invariants
///
/// `table` is NULL or points to a `poll_table` valid for `'a`.
pub(crate) struct PollTable<'a> {
    table: *mut bindings::poll_table,
    _lifetime: PhantomData<&'a bindings::poll_table>,
}

impl<'a> PollTable<'a> {
    /// Wraps the poll table `table`.
    ///
    /// # Safety
    ///
    /// `table` must be NULL or point to a `poll_table` valid for `'a`.
    pub(crate) unsafe fn from_raw(table: *mut bindings::poll_table) -> Self {
        // INVARIANT: As the caller guarantees.
        Self {
            table,
            _lifetime: PhantomData,
        }
    }

    /// Whether the poller is an edge-triggered epoll (`EPOLLET` in the table's key).
    pub(crate) fn edge_triggered(&self) -> bool {
        // SAFETY: `table` is NULL or valid (type invariant).
        !self.table.is_null() && unsafe { (*self.table)._key } & EPOLLET != 0
    }

    /// Registers the poller on `queue` (`poll_wait`): the queue's wakeups then reach it.
    pub(crate) fn register(&self, file: &File, queue: &WaitQueue) {
        // SAFETY: `file` is valid for this call; `table` is NULL or valid (type invariant); the
        // queue is pinned, and its `drop` removes every poll entry and waits for an RCU grace
        // period before its memory goes, so the entry never outlives the queue.
        unsafe { bindings::poll_wait(file.as_ptr(), queue.head.get(), self.table) }
    }
}
