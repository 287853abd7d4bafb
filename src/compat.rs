// SPDX-License-Identifier: GPL-2.0

//! Every difference between the kernel crates mini_pipe builds against (Linux 7.2 and 7.3), in
//! one place.
//!
//! Kbuild probes the tree that `KDIR` points at (what its `rust/kernel/` and its generated
//! bindings hold) and passes what it finds as `--cfg mp_*` flags; this module turns each into
//! one name that the rest of the module uses as if it were written for a single kernel. To
//! support another release: build against it, and for each error add a probe to Kbuild and a
//! pair of items here.

use kernel::bindings;

/// A full memory barrier (`smp_mb()`).
#[inline]
pub(crate) fn smp_mb() {
    // 7.3: the ordering is an argument.
    #[cfg(mp_smp_mb_ordering)]
    kernel::sync::barrier::smp_mb(kernel::sync::barrier::Full);
    // 7.2.
    #[cfg(not(mp_smp_mb_ordering))]
    kernel::sync::barrier::smp_mb();
}

/// Waits until every RCU read-side critical section that began before the call has ended.
#[cfg(mp_rust_synchronize_rcu)]
pub(crate) use kernel::sync::rcu::synchronize_rcu;

/// Waits until every RCU read-side critical section that began before the call has ended (7.2
/// has no Rust wrapper).
#[cfg(not(mp_rust_synchronize_rcu))]
pub(crate) fn synchronize_rcu() {
    // SAFETY: `synchronize_rcu` may be called from any sleepable context, which every caller of
    // this (a pipe's teardown, in process context without locks) is.
    unsafe { bindings::synchronize_rcu() };
}

/// The `FIONREAD` ioctl number.
#[cfg(mp_bindings_fionread)]
pub(crate) const FIONREAD: u32 = bindings::FIONREAD;

/// The `FIONREAD` ioctl number: include/uapi/asm-generic/ioctls.h's, which Kbuild checked is
/// the one this architecture uses (7.2's bindings leave it out).
#[cfg(not(mp_bindings_fionread))]
pub(crate) const FIONREAD: u32 = 0x541B;

/// A module parameter's value, from what its `value()` returns: the value (7.3)...
#[cfg(not(mp_param_value_ref))]
pub(crate) fn param<T: Copy>(value: T) -> T {
    value
}

/// ... or a reference to it (7.2).
#[cfg(mp_param_value_ref)]
pub(crate) fn param<T: Copy>(value: &T) -> T {
    *value
}

/// This module's `struct module`, as `module!` itself gets it: for the `owner` of the
/// `file_operations`, the cdev and the counters files.
pub(crate) const fn this_module() -> *mut bindings::module {
    &raw mut bindings::__this_module
}
