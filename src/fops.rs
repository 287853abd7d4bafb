// SPDX-License-Identifier: GPL-2.0

//! The `file_operations` of the pipes' nodes: the only place mini_pipe handles files.
//!
//! The kernel crate's `MiscDevice` trait has no `poll` and gives every open file its own state,
//! while a pipe is one object shared by all its files. So, as the Rust Binder driver does, this
//! module has its own static `file_operations`, whose entries are thin `unsafe extern "C"`
//! trampolines: each turns its raw pointers into safe references and calls a method of
//! [`Pipe`], where all the logic lives. [`crate::chrdev`] registers them for the pipes' device
//! numbers.
//!
//! How a file finds its pipe: `open` looks up the pipe of the inode's device number
//! ([`crate::chrdev::pipe_of_inode`]) and points the file's `private_data` at it. Nothing is
//! allocated per open file: like a FIFO, the file's mode says whether it counts as a reader, a
//! writer or both.

use crate::{
    pipe::{
        OpenMode,
        Pipe, //
    },
    wait::PollTable,
};
use core::cell::UnsafeCell;
use kernel::{
    bindings,
    error::to_result,
    ffi::{
        c_int,
        c_long,
        c_uint,
        c_ulong, //
    },
    fs::{
        file::flags::{
            O_DSYNC,
            O_NONBLOCK, //
        },
        File, //
    },
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    prelude::*,
    seq_file::SeqFile,
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

/// Makes the `file_operations` table usable as a `static`: it is never written after
/// compilation, and the function pointers in it are safe to call from any thread.
struct AssertSync<T>(T);
// SAFETY: See the type's documentation.
unsafe impl<T> Sync for AssertSync<T> {}

static MINI_PIPE_FOPS: AssertSync<bindings::file_operations> =
    AssertSync(bindings::file_operations {
        owner: crate::compat::this_module(),
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

/// The pipes' `file_operations`, for their `cdev`.
pub(crate) fn fops() -> &'static bindings::file_operations {
    &MINI_PIPE_FOPS.0
}

/// The pipe behind an open `file`.
///
/// # Safety
///
/// `file` must be a file of a pipe's node that `mini_pipe_open` opened and that is not yet
/// released, for the whole of `'a`.
unsafe fn pipe_of<'a>(file: *const bindings::file) -> &'a Pipe {
    // SAFETY: `mini_pipe_open` pointed `private_data` at one of the module's pipes, which
    // outlive the file because the file holds a reference on the module that owns them.
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

/// Opens a file of a pipe's node: finds its pipe, and waits for a partner as a FIFO does.
///
/// # Safety
///
/// Called by `chrdev_open` with a valid inode and a file being opened, after it found the pipes'
/// cdev for the inode's device number.
unsafe extern "C" fn mini_pipe_open(
    inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `chrdev_open` found our cdev, and holds a reference on this module for as long as
    // the file is open; `private_data` keeps the pipe only that long (`pipe_of`).
    let Some(pipe) = (unsafe { crate::chrdev::pipe_of_inode(inode) }) else {
        return ENXIO.to_errno();
    };
    // SAFETY: The caller passes a valid inode and a file being opened: a pipe has no file
    // position, so mark it a stream (no lseek, pread or pwrite: ESPIPE).
    let ret = unsafe { bindings::stream_open(inode, file) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: The file is valid.
    let mode = unsafe { mode_of(file) };
    let f_pipe = match pipe.open(mode) {
        Ok(f_pipe) => f_pipe,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: The file is being opened and is ours to set up: from now on its private data is
    // the pipe (`pipe_of`). `f_pipe` shares a union with `f_pos_lock`, which only files with
    // FMODE_ATOMIC_POS use; `stream_open` cleared that, so the field is ours, as for a FIFO.
    unsafe {
        (*file).private_data = core::ptr::from_ref(pipe).cast_mut().cast();
        (*file).__bindgen_anon_2.f_pipe = f_pipe;
    }
    0
}

/// # Safety
///
/// Called by the VFS once, with a valid file of a pipe's node that was opened successfully.
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
/// Called by the VFS with a valid kiocb for an open file of a pipe's node and a valid
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
/// Called by the VFS with a valid kiocb for an open file of a pipe's node and a valid
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
    // A file opened with O_DSYNC or O_SYNC (which includes it) writes synchronously: the write
    // returns once readers have the bytes. pwritev2's RWF_DSYNC and RWF_SYNC stay what they are
    // on a FIFO, accepted and without effect.
    // SAFETY: The caller guarantees the kiocb and its file are valid for this call.
    let sync = unsafe { (*(*kiocb).ki_filp).f_flags } & O_DSYNC != 0;
    let mut sigpipe = false;
    let ret = pipe.write(src, nonblock, sync, &mut sigpipe);
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
/// Called by the splice code with a valid, open file of a pipe's node, and arguments valid
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
/// Called by the splice code with a valid, open file of a pipe's node, and arguments valid
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
/// Called by the VFS with a valid, open file of a pipe's node.
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
/// Called by the VFS with a valid, open file of a pipe's node and a poll table that is NULL
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
/// a pipe's node.
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
/// a pipe's node.
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
