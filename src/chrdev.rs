// SPDX-License-Identifier: GPL-2.0

//! The character devices: a region of device numbers, a class, one node per pipe, and one
//! `cdev` that routes every open of those numbers to [`crate::fops`].
//!
//! Why not a misc device: `misc_open` calls a misc device's `open` with the misc core's global
//! `misc_mtx` held, and a FIFO's open waits for its partner. A partner arriving through
//! `misc_open` would then wait for that mutex for ever, and so would every other misc device on
//! the system. A `cdev` added beside the misc device for the same number avoided that for
//! `/dev/mini_pipe`, but the misc core's cdev still covered the number: an inode that had met
//! the number while the module was away kept the misc core's cdev cached and went through
//! `misc_open` for good. So the module owns its numbers, as LDD3's scullpipe does: opens of them
//! can only ever reach this module's `cdev`, or fail with `ENXIO` while it is not there.
//!
//! The order makes every failure path safe by construction. A file can be opened from the moment
//! the `cdev` is added, through any node carrying one of the numbers, including one made by hand
//! before the module was loaded. So everything that can fail comes before `cdev_add`: the pipes,
//! the region, the class and the nodes (`device_create`; until the `cdev` is added an open of a
//! node fails with `ENXIO`, as before the module was loaded). `cdev_add`, for all the numbers at
//! once, is the last step that can fail, and once it has succeeded nothing can: a failed load
//! never leaves a file open on memory that it frees. On unload, `cdev_del` comes first; the
//! module cannot be unloaded while a file is open (each holds a reference on it, taken by
//! `chrdev_open` before it calls `open`).
//!
//! The `cdev`, the nodes' `struct device`s and the class are allocated by the kernel
//! (`cdev_alloc`, `device_create`, `class_create`) and freed by the kernel's own release
//! functions, so a release that runs late (`CONFIG_DEBUG_KOBJECT_RELEASE`) calls no module code.
//! It reads one byte range of the module: the class's name, which `class_create` keeps a pointer
//! to and `class_release` prints with `pr_debug` (only with dynamic debug on for it).

use crate::{
    debugfs::StatsFiles,
    pipe::Pipe,
    Pipes, //
};
use core::marker::PhantomPinned;
use kernel::{
    bindings,
    error::{
        from_err_ptr,
        to_result, //
    },
    ffi::c_uint,
    prelude::*,
    str::CString,
    sync::atomic::{
        Acquire,
        Atomic,
        Relaxed,
        Release, //
    },
};

/// The pipes that opens of the module's device numbers reach: set before the `cdev` is added,
/// cleared after it is deleted. While it is set, it points at the module's [`Pipes`], which
/// outlive the [`Chrdev`] (the module drops the `Chrdev` first).
static PIPES: Atomic<*const Pipes> = Atomic::new(core::ptr::null());

/// The name of pipe `index`'s node, sysfs device and debugfs file: `mini_pipe` for the first,
/// `mini_pipe1`, `mini_pipe2`, ... for the others, so that the first is `/dev/mini_pipe` however
/// many there are.
pub(crate) fn node_name(index: usize) -> Result<CString> {
    if index == 0 {
        CString::try_from_fmt(fmt!("mini_pipe"))
    } else {
        CString::try_from_fmt(fmt!("mini_pipe{index}"))
    }
}

/// Everything a load registers, in the order that keeps every failure path safe: the pipes
/// first, then their counters files, then the device numbers, with the `cdev` added last; and
/// torn down the other way round (fields drop in declaration order).
#[pin_data]
pub(crate) struct Devices {
    /// Dropped first: once it is gone, no open can reach the pipes.
    chrdev: Chrdev,
    /// Dropped second: the counters files, which show the pipes.
    stats: StatsFiles,
    /// The pipes, at a fixed address for as long as the `Devices` lives (it is pinned and
    /// `!Unpin`), which `stats` and `chrdev` rely on.
    pipes: Pipes,
    #[pin]
    _pin: PhantomPinned,
}

impl Devices {
    /// Registers `pipes` under `name` (in /proc/devices, /sys/class and debugfs).
    pub(crate) fn new(name: &'static CStr, pipes: Pipes) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            pipes,
            // SAFETY: `pipes` is a field of this pinned, `!Unpin` value, so it stays at its
            // address; it is declared after `stats`, so it is dropped after it.
            stats: unsafe { StatsFiles::new(pipes) },
            // SAFETY: As above: `chrdev` is declared first, so it is dropped first.
            chrdev: unsafe { Chrdev::register(name, pipes)? },
            _pin: PhantomPinned,
        })
    }
}

/// The module's device numbers, class, nodes and `cdev`.
///
/// # Invariants
///
/// `base` is the first of `count` device numbers registered with `alloc_chrdev_region`;
/// `class` is a live class from `class_create`, with one device made by `device_create` for each
/// of the numbers; `cdev` is a `cdev_alloc`'d `cdev` added with `cdev_add` for all of them, with
/// `MINI_PIPE_FOPS` and this module as its owner; and [`PIPES`] points at the pipes, one per
/// number, which outlive this value (the caller of [`Chrdev::register`] guarantees it).
pub(crate) struct Chrdev {
    base: bindings::dev_t,
    count: u32,
    class: *mut bindings::class,
    cdev: *mut bindings::cdev,
}

// SAFETY: The pointers are only passed to the chrdev, class and device cores, which take their
// own locks, from whichever thread loads or unloads the module.
unsafe impl Send for Chrdev {}
// SAFETY: Shared references to a `Chrdev` give access to nothing.
unsafe impl Sync for Chrdev {}

impl Chrdev {
    /// Registers one device number and node per pipe of `pipes` (see [`node_name`]), named
    /// `name` in /proc/devices and /sys/class.
    ///
    /// # Safety
    ///
    /// `pipes` must stay at its address and outlive the returned value: opens find the pipes
    /// through [`PIPES`] until it is dropped.
    pub(crate) unsafe fn register(name: &'static CStr, pipes: &Pipes) -> Result<Self> {
        let count = u32::try_from(pipes.len()).map_err(|_| EINVAL)?;
        let mut base: bindings::dev_t = 0;
        // SAFETY: `base` is valid for writes, `name` is a 'static C string.
        to_result(unsafe {
            bindings::alloc_chrdev_region(&mut base, 0, count, name.as_char_ptr())
        })?;
        // From here on, `Undo` gives back what has been taken if a later step fails.
        let mut undo = Undo {
            base,
            count,
            class: core::ptr::null_mut(),
            devices: 0,
        };
        // SAFETY: `name` is a 'static C string; the class keeps the pointer.
        undo.class = from_err_ptr(unsafe { bindings::class_create(name.as_char_ptr()) })?;
        for index in 0..count {
            let node = node_name(index as usize)?;
            // SAFETY: The class is live; the device number is one of ours; `%s` with a valid C
            // string, which `device_create` copies into the device's name.
            from_err_ptr(unsafe {
                bindings::device_create(
                    undo.class,
                    core::ptr::null_mut(),
                    base + index,
                    core::ptr::null_mut(),
                    c"%s".as_char_ptr(),
                    node.as_char_ptr(),
                )
            })?;
            undo.devices += 1;
        }
        // SAFETY: No precondition; the result is checked.
        let cdev = unsafe { bindings::cdev_alloc() };
        if cdev.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `cdev` is a fresh `cdev_alloc`'d cdev that nothing else knows about: its ops
        // are 'static, and its owner is this module, so that `chrdev_open` holds a reference on
        // the module, and so on the pipes, while it calls `open` and for as long as the file is
        // open.
        unsafe {
            (*cdev).ops = crate::fops::fops();
            (*cdev).owner = crate::compat::this_module();
        }
        // Before the numbers can be opened: `open` finds the pipes here.
        PIPES.store(core::ptr::from_ref(pipes), Release);
        // SAFETY: `cdev` is set up (above); the numbers are ours. The last step that can fail.
        let added = to_result(unsafe { bindings::cdev_add(cdev, base, count) });
        if let Err(e) = added {
            PIPES.store(core::ptr::null(), Relaxed);
            // SAFETY: `cdev` was never added, so nobody else holds it: this frees it (its
            // release is the kernel's `cdev_dynamic_release`).
            unsafe { bindings::kobject_put(&raw mut (*cdev).kobj) };
            return Err(e);
        }
        let class = undo.class;
        core::mem::forget(undo);
        // INVARIANT: the region, class, nodes and cdev are all in place, and `PIPES` is set.
        Ok(Self {
            base,
            count,
            class,
            cdev,
        })
    }
}

impl Drop for Chrdev {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the cdev is added. After this no open can reach the
        // module: `chrdev_open` no longer finds the cdev, and inodes that cached it forget it.
        unsafe { bindings::cdev_del(self.cdev) };
        PIPES.store(core::ptr::null(), Relaxed);
        drop(Undo {
            base: self.base,
            count: self.count,
            class: self.class,
            devices: self.count,
        });
    }
}

/// What [`Chrdev::register`] has taken so far, given back when dropped: the nodes of the first
/// `devices` numbers, the class (if not null) and the region.
///
/// # Invariants
///
/// `base` and `count` are a region from `alloc_chrdev_region`; `class` is null or a live class
/// from `class_create`; if `devices > 0`, the class is live and has a device for each of the
/// first `devices` numbers.
struct Undo {
    base: bindings::dev_t,
    count: u32,
    class: *mut bindings::class,
    devices: u32,
}

impl Drop for Undo {
    fn drop(&mut self) {
        for index in 0..self.devices {
            // SAFETY: By the type invariant the class is live and has this device.
            unsafe { bindings::device_destroy(self.class, self.base + index) };
        }
        if !self.class.is_null() {
            // SAFETY: By the type invariant the class is live, and has no device left.
            unsafe { bindings::class_destroy(self.class) };
        }
        // SAFETY: By the type invariant the region is ours; no cdev covers it any more.
        unsafe { bindings::unregister_chrdev_region(self.base, self.count as c_uint) };
    }
}

/// The pipe behind the device number of `inode`, being opened.
///
/// # Safety
///
/// `inode` must be valid. Must be called from `open` of a file that `chrdev_open` found this
/// module's cdev for: it holds a reference on the module until the file is released, and the
/// returned pipe must not be used after that.
pub(crate) unsafe fn pipe_of_inode<'a>(inode: *const bindings::inode) -> Option<&'a Pipe> {
    let pipes = PIPES.load(Acquire);
    if pipes.is_null() {
        return None;
    }
    // SAFETY: The caller passes a valid inode.
    let rdev = unsafe { (*inode).i_rdev };
    let minor = rdev & ((1 << bindings::MINORBITS) - 1);
    // SAFETY: `chrdev_open` took the caller's module reference with `try_module_get` (in
    // `cdev_get`), which fails once the module's exit has begun, so the `Chrdev` is not dropped
    // yet and `PIPES` points at the module's pipes (its invariant); `cdev_add` published the
    // cdev after the store to `PIPES` (under `kobj_map`'s mutex), and the load above is an
    // acquire. The reference keeps the pipes alive until the file is released.
    let pipes = unsafe { &*pipes };
    pipes.get(minor as usize)
}
