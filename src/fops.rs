// SPDX-License-Identifier: GPL-2.0

//! The misc device and its `file_operations`: the only place mini_pipe touches C structures.
//!
//! The kernel crate's `MiscDevice` trait has no `poll` and gives every open file its own state,
//! while a pipe is one object shared by all its files. So, as the Rust Binder driver does, this
//! module registers a plain `struct miscdevice` with its own static `file_operations`, whose
//! entries are thin `unsafe extern "C"` trampolines: each turns its raw pointers into safe
//! references and calls a method of [`Pipe`], where all the logic lives.
//!
//! Why a `cdev` as well: `misc_open` calls a misc device's `open` with the misc core's global
//! `misc_mtx` held. A FIFO's open waits for its partner, and a partner arriving through
//! `misc_open` would then wait for that mutex forever (and so would every other misc device on
//! the system). So the misc device provides the minor, the `/dev/mini_pipe` node and its sysfs
//! entry, and a one-minor `cdev` added for that same `dev_t` routes opens straight to
//! [`MINI_PIPE_FOPS`]: the chrdev map prefers the narrowest range covering a device number, so
//! `chrdev_open` finds it before the misc core's 256-minor range, and no global lock is held.
//!
//! How a file finds its pipe: `open` finds the [`PipeDevice`] from the inode's `i_cdev` (or, in
//! the rare case described at [`mini_pipe_open`], from the `miscdevice` `misc_open` stored) and
//! points the file's `private_data` at the pipe. Nothing is allocated per open file: like a FIFO,
//! the file's mode says whether it counts as a reader, a writer or both.

use crate::{
    pipe::{
        OpenMode,
        Pipe, //
    },
    wait::PollTable,
};
use core::cell::UnsafeCell;
use kernel::{
    bindings, container_of,
    error::to_result,
    ffi::{
        c_int,
        c_long,
        c_uint,
        c_ulong, //
    },
    fs::{
        file::flags::O_NONBLOCK,
        File, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    prelude::*,
    seq_file::SeqFile,
    types::Opaque,
};

/// `FMODE_READ` and `FMODE_WRITE` from include/linux/fs.h (bindgen cannot see through their
/// `__force` casts).
const FMODE_READ: u32 = 1 << 0;
const FMODE_WRITE: u32 = 1 << 1;

/// `IOCB_NOWAIT` from include/linux/fs.h, defined there as `(__force int) RWF_NOWAIT`
/// (0x8 in include/uapi/linux/fs.h): io_uring and `preadv2(RWF_NOWAIT)` ask for no waiting.
const IOCB_NOWAIT: i32 = 0x8;

/// `IOCB_NOSIGNAL` from include/linux/fs.h, defined there as `(__force int) RWF_NOSIGNAL`
/// (0x100 in include/uapi/linux/fs.h): `pwritev2(RWF_NOSIGNAL)` asks for `EPIPE` without
/// `SIGPIPE`.
const IOCB_NOSIGNAL: i32 = 0x100;

/// The misc major (include/uapi/linux/major.h).
const MISC_MAJOR: u32 = 10;

/// The two registrations that make `/dev/mini_pipe`.
struct Registration {
    misc: bindings::miscdevice,
    cdev: bindings::cdev,
}

/// `/dev/mini_pipe`: the registered device and the pipe behind it.
///
/// # Invariants
///
/// From the moment initialisation succeeds until `drop`: `reg.misc` is registered with
/// `misc_register`, and `reg.cdev` is added with `cdev_add` for the misc device's `dev_t`; both
/// use [`MINI_PIPE_FOPS`].
#[pin_data(PinnedDrop)]
pub(crate) struct PipeDevice {
    #[pin]
    reg: Opaque<Registration>,
    #[pin]
    pipe: Pipe,
}

// SAFETY: The registrations are only touched by the misc and chrdev cores' register and
// unregister calls, which may run on any thread, and by `container_of!`, which reads no field.
// The pipe is `Send`.
unsafe impl Send for PipeDevice {}
// SAFETY: Shared access never reads or writes the registrations (their cores do, under their
// own locks); the pipe is `Sync`.
unsafe impl Sync for PipeDevice {}

impl PipeDevice {
    /// Registers `/dev/NAME` with permissions `mode`, backed by the pipe `pipe` initialises.
    pub(crate) fn register(
        name: &'static CStr,
        mode: u16,
        pipe: impl PinInit<Pipe, Error>,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            // The pipe first: once the device is registered, files can be opened.
            pipe <- pipe,
            reg <- Opaque::try_ffi_init(move |slot: *mut Registration| {
                // SAFETY: `slot` is valid for writes while the initialiser runs; a zeroed
                // `miscdevice` and `cdev` are what their register functions expect to fill.
                let (misc, cdev) = unsafe { (&raw mut (*slot).misc, &raw mut (*slot).cdev) };
                // SAFETY: As above.
                unsafe {
                    misc.write(pin_init::zeroed());
                    cdev.write(pin_init::zeroed());
                }
                // SAFETY: `misc` is valid for writes (above).
                unsafe {
                    (*misc).minor = bindings::MISC_DYNAMIC_MINOR as c_int;
                    (*misc).name = name.as_char_ptr();
                    (*misc).fops = &MINI_PIPE_FOPS.0;
                    (*misc).mode = mode;
                }
                // SAFETY: `misc` is a complete `miscdevice` whose name and fops are 'static; it
                // is pinned, and `drop` deregisters it before its memory goes.
                to_result(unsafe { bindings::misc_register(misc) })?;
                // SAFETY: `misc_register` succeeded, so `minor` holds the allocated minor.
                let devt = (MISC_MAJOR << bindings::MINORBITS) | unsafe { (*misc).minor } as u32;
                // SAFETY: `cdev` is valid, pinned and zeroed; `MINI_PIPE_FOPS` is 'static. The
                // owner keeps the module, and so this memory, alive while a file is open.
                let added = unsafe {
                    bindings::cdev_init(cdev, &MINI_PIPE_FOPS.0);
                    (*cdev).owner = kernel::module::this_module::<crate::LocalModule>().as_ptr();
                    to_result(bindings::cdev_add(cdev, devt, 1))
                };
                if added.is_err() {
                    // SAFETY: `misc` was registered above and nothing else refers to it yet.
                    unsafe { bindings::misc_deregister(misc) };
                }
                // INVARIANT: on success both are registered, with `MINI_PIPE_FOPS`.
                added
            }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for PipeDevice {
    fn drop(self: Pin<&mut Self>) {
        let reg = self.reg.get();
        // SAFETY: By the type invariant both are registered. No file is open: each open file
        // holds a reference on this module (the `owner`s), so the module, and this device,
        // cannot be torn down before the last one is released.
        unsafe {
            bindings::cdev_del(&raw mut (*reg).cdev);
            bindings::misc_deregister(&raw mut (*reg).misc);
        }
    }
}

/// Makes the `file_operations` table usable as a `static`: it is never written after
/// compilation, and the function pointers in it are safe to call from any thread.
struct AssertSync<T>(T);
// SAFETY: See the type's documentation.
unsafe impl<T> Sync for AssertSync<T> {}

static MINI_PIPE_FOPS: AssertSync<bindings::file_operations> =
    AssertSync(bindings::file_operations {
        owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
        open: Some(mini_pipe_open),
        release: Some(mini_pipe_release),
        read_iter: Some(mini_pipe_read_iter),
        write_iter: Some(mini_pipe_write_iter),
        poll: Some(mini_pipe_poll),
        unlocked_ioctl: Some(mini_pipe_ioctl),
        compat_ioctl: Some(mini_pipe_ioctl),
        fasync: Some(mini_pipe_fasync),
        show_fdinfo: Some(mini_pipe_show_fdinfo),
        // splice and sendfile, both ways, through `read_iter` and `write_iter`: the generic
        // helpers copy between the device and the other end's pages, so every rule of read and
        // write (waiting, atomicity, EPIPE, end-of-file) holds for them too.
        splice_read: Some(mini_pipe_splice_read),
        splice_write: Some(mini_pipe_splice_write),
        // No `llseek`: `stream_open` in `open` makes lseek, pread and pwrite fail with ESPIPE.
        // No `mmap`: mmap fails with ENODEV, as on a FIFO.
        ..pin_init::zeroed()
    });

/// The pipe behind an open `file`.
///
/// # Safety
///
/// `file` must be a file of `/dev/mini_pipe` that `mini_pipe_open` opened and that is not yet
/// released, for the whole of `'a`.
unsafe fn pipe_of<'a>(file: *const bindings::file) -> &'a Pipe {
    // SAFETY: `mini_pipe_open` pointed `private_data` at the pipe of a live `PipeDevice`, which
    // outlives the file because the file holds a reference on the module that owns it.
    unsafe { &*(*file).private_data.cast::<Pipe>() }
}

/// The file's reader/writer role and `O_NONBLOCK`, read from its `f_mode` and `f_flags`.
///
/// # Safety
///
/// `file` must be valid.
unsafe fn mode_of(file: *const bindings::file) -> OpenMode {
    // SAFETY: The caller guarantees `file` is valid.
    let (f_mode, f_flags) = unsafe { ((*file).f_mode, (*file).f_flags) };
    OpenMode {
        read: f_mode & FMODE_READ != 0,
        write: f_mode & FMODE_WRITE != 0,
        nonblock: f_flags & O_NONBLOCK != 0,
    }
}

/// `SPLICE_F_NONBLOCK` from include/linux/splice.h, which the kernel crate's bindings leave out.
const SPLICE_F_NONBLOCK: c_uint = 0x02;

/// Whether this read or write must not wait: `O_NONBLOCK` now, or `IOCB_NOWAIT`.
///
/// # Safety
///
/// `kiocb` must be valid, with a valid `ki_filp`.
unsafe fn nonblock_of(kiocb: *const bindings::kiocb) -> bool {
    // SAFETY: The caller guarantees `kiocb` and its file are valid.
    let (ki_flags, f_flags) = unsafe { ((*kiocb).ki_flags, (*(*kiocb).ki_filp).f_flags) };
    f_flags & O_NONBLOCK != 0 || ki_flags & IOCB_NOWAIT != 0
}

/// Converts a `Result` into the `ssize_t` a read or write returns.
fn to_ssize(r: Result<usize>) -> isize {
    match r {
        // A count never exceeds the iov_iter's length, which the VFS caps at MAX_RW_COUNT.
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// Opens a file of `/dev/mini_pipe`: finds its pipe, and waits for a partner as a FIFO does.
///
/// Opens normally arrive from `chrdev_open` through the `cdev`, with `private_data` NULL. One
/// path arrives from `misc_open` instead: an open that raced with module load, between
/// `misc_register` and `cdev_add`, caches the misc core's cdev in the node's inode. There
/// `misc_mtx` is held and `private_data` holds the `miscdevice`, so such an open must not wait
/// for a partner: it is treated as `O_NONBLOCK`.
///
/// # Safety
///
/// Called by the VFS with a valid inode and a file of `/dev/mini_pipe` being opened.
unsafe extern "C" fn mini_pipe_open(
    inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The caller passes a valid file being opened, whose private data we may use.
    let misc = unsafe { (*file).private_data }.cast::<bindings::miscdevice>();
    let device = if misc.is_null() {
        // SAFETY: The inode is valid. `i_cdev` is in its fifth anonymous union (all unions
        // before it are unconditional in struct inode, so bindgen's numbering is stable).
        let cdev = unsafe { (*inode).__bindgen_anon_5.i_cdev };
        // SAFETY: `chrdev_open` found our `cdev` for this inode: the `cdev` field of a live
        // `Registration` inside a `PipeDevice`.
        let reg = unsafe { container_of!(cdev, Registration, cdev) };
        // SAFETY: `reg` is the `reg` field of a live `PipeDevice` (`Opaque` is transparent).
        unsafe { &*container_of!(reg.cast::<Opaque<Registration>>(), PipeDevice, reg) }
    } else {
        // SAFETY: `misc_open` stored our `miscdevice`: the `misc` field of a `Registration`.
        let reg = unsafe { container_of!(misc, Registration, misc) };
        // SAFETY: As above.
        unsafe { &*container_of!(reg.cast::<Opaque<Registration>>(), PipeDevice, reg) }
    };
    // SAFETY: The caller passes a valid inode and a file being opened: a pipe has no file
    // position, so mark it a stream (no lseek, pread or pwrite: ESPIPE).
    let ret = unsafe { bindings::stream_open(inode, file) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: The file is valid.
    let mut mode = unsafe { mode_of(file) };
    mode.nonblock |= !misc.is_null();
    let f_pipe = match device.pipe.open(mode) {
        Ok(f_pipe) => f_pipe,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: The file is being opened and is ours to set up: from now on its private data is
    // the pipe (`pipe_of`). `f_pipe` shares a union with `f_pos_lock`, which only files with
    // FMODE_ATOMIC_POS use; `stream_open` cleared that, so the field is ours, as for a FIFO.
    unsafe {
        (*file).private_data = (&raw const device.pipe).cast_mut().cast();
        (*file).__bindgen_anon_2.f_pipe = f_pipe;
    }
    0
}

/// # Safety
///
/// Called by the VFS once, with a valid file of `/dev/mini_pipe` that was opened successfully.
unsafe extern "C" fn mini_pipe_release(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`.
    let (pipe, mode) = unsafe { (pipe_of(file), mode_of(file)) };
    pipe.release(mode);
    0
}

/// # Safety
///
/// Called by the VFS with a valid kiocb for an open file of `/dev/mini_pipe` and a valid
/// destination iov_iter.
unsafe extern "C" fn mini_pipe_read_iter(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: The caller guarantees the kiocb and its file are valid for this call.
    let (pipe, nonblock) = unsafe { (pipe_of((*kiocb).ki_filp), nonblock_of(kiocb)) };
    // SAFETY: `iter` is a valid ITER_DEST iov_iter, used only through this reference, and
    // writable for this call.
    let dst = unsafe { IovIterDest::from_raw(iter) };
    to_ssize(pipe.read(dst, nonblock))
}

/// # Safety
///
/// Called by the VFS with a valid kiocb for an open file of `/dev/mini_pipe` and a valid
/// source iov_iter.
unsafe extern "C" fn mini_pipe_write_iter(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: The caller guarantees the kiocb and its file are valid for this call.
    let (pipe, nonblock) = unsafe { (pipe_of((*kiocb).ki_filp), nonblock_of(kiocb)) };
    // SAFETY: `iter` is a valid ITER_SOURCE iov_iter, used only through this reference, and
    // readable for this call.
    let src = unsafe { IovIterSource::from_raw(iter) };
    let mut sigpipe = false;
    let ret = pipe.write(src, nonblock, &mut sigpipe);
    // SAFETY: The caller guarantees the kiocb is valid for this call.
    if sigpipe && unsafe { (*kiocb).ki_flags } & IOCB_NOSIGNAL == 0 {
        // As anon_pipe_write: a write with no reader raises SIGPIPE in the writer, unless the
        // write asked for none.
        // SAFETY: `current` is a valid task for the duration of this call.
        unsafe { bindings::send_sig(bindings::SIGPIPE as c_int, kernel::current!().as_ptr(), 0) };
    }
    to_ssize(ret)
}

/// splice(2) from the device into a pipe: `copy_splice_read`, which reads through
/// `read_iter`, after checking `SPLICE_F_NONBLOCK`, which it does not pass on.
///
/// # Safety
///
/// Called by the splice code with a valid, open file of `/dev/mini_pipe`, and arguments valid
/// for `copy_splice_read`.
unsafe extern "C" fn mini_pipe_splice_read(
    file: *mut bindings::file,
    ppos: *mut bindings::loff_t,
    pipe: *mut bindings::pipe_inode_info,
    len: usize,
    flags: c_uint,
) -> isize {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`.
    let this = unsafe { pipe_of(file) };
    if flags & SPLICE_F_NONBLOCK != 0 && this.splice_read_would_wait() {
        return EAGAIN.to_errno() as isize;
    }
    // SAFETY: The caller passes arguments valid for a `splice_read`.
    unsafe { bindings::copy_splice_read(file, ppos, pipe, len, flags) }
}

/// splice(2) from a pipe into the device: `iter_file_splice_write`, which writes through
/// `write_iter`, cut to what fits now when `SPLICE_F_NONBLOCK` asks for no waiting.
///
/// # Safety
///
/// Called by the splice code with a valid, open file of `/dev/mini_pipe`, and arguments valid
/// for `iter_file_splice_write`.
unsafe extern "C" fn mini_pipe_splice_write(
    pipe: *mut bindings::pipe_inode_info,
    file: *mut bindings::file,
    ppos: *mut bindings::loff_t,
    len: usize,
    flags: c_uint,
) -> isize {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`.
    let this = unsafe { pipe_of(file) };
    let len = if flags & SPLICE_F_NONBLOCK != 0 {
        match this.splice_write_len(len) {
            Ok(len) => len,
            Err(e) => return e.to_errno() as isize,
        }
    } else {
        len
    };
    // SAFETY: The caller passes arguments valid for a `splice_write`; a shorter `len` is too.
    unsafe { bindings::iter_file_splice_write(pipe, file, ppos, len, flags) }
}

/// # Safety
///
/// Called by the VFS with a valid, open file of `/dev/mini_pipe`.
unsafe extern "C" fn mini_pipe_ioctl(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`.
    let pipe = unsafe { pipe_of(file) };
    // The argument is a user address (`c_ulong` is `usize`); `UserSlice` checks every access.
    match pipe.ioctl(cmd, arg) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// Called by the VFS with a valid, open file of `/dev/mini_pipe` and a poll table that is NULL
/// or valid for this call.
unsafe extern "C" fn mini_pipe_poll(
    file: *mut bindings::file,
    wait: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`.
    let (pipe, mode, f_pipe) = unsafe {
        (
            pipe_of(file),
            mode_of(file),
            (*file).__bindgen_anon_2.f_pipe,
        )
    };
    // SAFETY: `wait` is NULL or valid for the duration of this call, which outlives `table`.
    let table = unsafe { PollTable::from_raw(wait) };
    // SAFETY: The file is valid for this call and there is no fdget_pos region on it here.
    let file = unsafe { File::from_raw_file(file) };
    pipe.poll(file, &table, mode, f_pipe)
}

/// # Safety
///
/// Called by the VFS (`fcntl(F_SETFL)` with `O_ASYNC`, or `__fput`) with a valid, open file of
/// `/dev/mini_pipe`.
unsafe extern "C" fn mini_pipe_fasync(fd: c_int, file: *mut bindings::file, on: c_int) -> c_int {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`.
    let (pipe, mode) = unsafe { (pipe_of(file), mode_of(file)) };
    // SAFETY: The file is valid for this call, which `helper` runs within.
    let helper = |list: &FasyncList, on: bool| unsafe { list.helper(fd, file, on) };
    match pipe.fasync(mode, on != 0, helper) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by procfs with a valid seq_file being filled by this thread and a valid, open file of
/// `/dev/mini_pipe`.
unsafe extern "C" fn mini_pipe_show_fdinfo(m: *mut bindings::seq_file, file: *mut bindings::file) {
    // SAFETY: The caller guarantees the file is valid and was opened by `mini_pipe_open`, and
    // that `m` is valid and only used by this thread for this call.
    let (pipe, m) = unsafe { (pipe_of(file), SeqFile::from_raw(m)) };
    pipe.show_fdinfo(m);
}

/// A list of files that asked for `SIGIO` (fs/pipe.c: `pipe->fasync_readers`, `fasync_writers`).
///
/// # Invariants
///
/// `head` is only read and written by `fasync_helper` and `kill_fasync`, which synchronise
/// among themselves (`fasync_lock` and RCU); it is NULL or the list they built.
pub(crate) struct FasyncList {
    head: UnsafeCell<*mut bindings::fasync_struct>,
}

// SAFETY: By the type invariant, the C functions that use `head` synchronise themselves, and
// nothing else touches it.
unsafe impl Send for FasyncList {}
// SAFETY: As for `Send`.
unsafe impl Sync for FasyncList {}

impl FasyncList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            head: UnsafeCell::new(core::ptr::null_mut()),
        }
    }

    /// Sends `SIGIO` with `si_code` `band` (`POLL_IN`, `POLL_OUT`) to the owner of every file on
    /// the list.
    pub(crate) fn kill(&self, band: c_int) {
        // SAFETY: `head` is a valid list head (type invariant); kill_fasync synchronises itself.
        unsafe { bindings::kill_fasync(self.head.get(), bindings::SIGIO as c_int, band) };
    }

    /// Adds `file` (descriptor `fd`) to the list, or removes it.
    ///
    /// # Safety
    ///
    /// `file` must be valid for the duration of the call. The list must outlive the file's
    /// membership: the VFS removes the file (`fasync(-1, file, 0)`) before releasing it.
    unsafe fn helper(&self, fd: c_int, file: *mut bindings::file, on: bool) -> Result {
        // SAFETY: `file` is valid (the caller), `head` is a valid list head (type invariant).
        let ret = unsafe { bindings::fasync_helper(fd, file, c_int::from(on), self.head.get()) };
        to_result(ret.min(0))
    }
}
