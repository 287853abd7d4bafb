// SPDX-License-Identifier: GPL-2.0

//! The pipes' counters in debugfs: `/sys/kernel/debug/mini_pipe/<node name>`, one file per
//! pipe, each showing [`Pipe::show`].
//!
//! Why not the kernel crate's `kernel::debugfs`: in 7.3 its `file_operations` have no `owner`,
//! so an open debugfs file holds no reference on the module. `rmmod` then succeeds while a
//! counters file is open, and the file's last close calls into `file_operations` that went with
//! the module (`full_proxy_release` in fs/debugfs/file.c reads `real_fops->release`). These
//! files use `file_operations` of this module's own, with the module as `owner`: the debugfs
//! proxy's open takes a reference on the module (`fops_get`), so the module cannot be unloaded
//! while one is open, as for the pipes' nodes.
//!
//! Without `CONFIG_DEBUG_FS` there is nothing to create, and [`StatsFiles`] is empty.

use crate::Pipes;
#[cfg(CONFIG_DEBUG_FS)]
use kernel::{
    bindings,
    ffi::{
        c_int,
        c_void, //
    },
    prelude::*,
    seq_file::SeqFile,
    seq_print,
};

/// The directory `/sys/kernel/debug/mini_pipe` and its files.
///
/// # Invariants
///
/// `dir` is null or what `debugfs_create_dir` returned (possibly an error pointer, which
/// `debugfs_remove` ignores); the `private` data of each file in it is a [`Pipe`] that outlives
/// this value.
///
/// [`Pipe`]: crate::pipe::Pipe
pub(crate) struct StatsFiles {
    #[cfg(CONFIG_DEBUG_FS)]
    dir: *mut bindings::dentry,
}

// SAFETY: The dentry pointer is only passed to `debugfs_remove`, from whichever thread unloads
// the module; debugfs synchronises itself.
unsafe impl Send for StatsFiles {}
// SAFETY: Shared references to a `StatsFiles` give access to nothing.
unsafe impl Sync for StatsFiles {}

impl StatsFiles {
    /// Creates the directory and one file per pipe of `pipes`, named as its node.
    ///
    /// Failing to create them is not an error (debugfs may be off at boot, or out of memory):
    /// the pipes work without their counters files, as the kernel's own debugfs users do.
    ///
    /// # Safety
    ///
    /// Every pipe of `pipes` must stay at its address and outlive the returned value.
    #[cfg_attr(not(CONFIG_DEBUG_FS), allow(unused_variables))]
    pub(crate) unsafe fn new(pipes: &Pipes) -> Self {
        #[cfg(CONFIG_DEBUG_FS)]
        {
            // SAFETY: A 'static name, no parent (the debugfs root).
            let dir = unsafe {
                bindings::debugfs_create_dir(c"mini_pipe".as_char_ptr(), core::ptr::null_mut())
            };
            for index in 0..pipes.len() {
                let (Some(pipe), Ok(name)) = (pipes.get(index), crate::chrdev::node_name(index))
                else {
                    continue;
                };
                // SAFETY: `name` is a valid C string, copied by debugfs; `dir` is what
                // `debugfs_create_dir` returned (an error pointer makes this a no-op); the
                // pipe outlives the file (the caller), and `STATS_FOPS` is 'static.
                unsafe {
                    bindings::debugfs_create_file_full(
                        name.as_char_ptr(),
                        0o400,
                        dir,
                        core::ptr::from_ref(pipe).cast_mut().cast(),
                        core::ptr::null(),
                        &STATS_FOPS.0,
                    )
                };
            }
            // INVARIANT: the files' private data are the caller's pipes, which outlive `self`.
            Self { dir }
        }
        #[cfg(not(CONFIG_DEBUG_FS))]
        Self {}
    }
}

impl Drop for StatsFiles {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `dir` came from `debugfs_create_dir`; removing it waits
        // for readers in the middle of a call, and no file of it is open (each open file holds a
        // reference on this module, which is being unloaded).
        #[cfg(CONFIG_DEBUG_FS)]
        unsafe {
            bindings::debugfs_remove(self.dir)
        };
    }
}

/// Makes a `file_operations` table usable as a `static`: it is never written after
/// compilation, and the function pointers in it may be called from any thread.
#[cfg(CONFIG_DEBUG_FS)]
struct AssertSync<T>(T);
// SAFETY: See the type's documentation.
#[cfg(CONFIG_DEBUG_FS)]
unsafe impl<T> Sync for AssertSync<T> {}

/// A seq_file of one record, with this module as owner.
#[cfg(CONFIG_DEBUG_FS)]
static STATS_FOPS: AssertSync<bindings::file_operations> = AssertSync(bindings::file_operations {
    owner: crate::compat::this_module(),
    open: Some(stats_open),
    read: Some(bindings::seq_read),
    llseek: Some(bindings::seq_lseek),
    release: Some(bindings::single_release),
    ..pin_init::zeroed()
});

/// # Safety
///
/// Called by debugfs's proxy `open` with a valid inode of one of the counters files and the
/// file being opened.
#[cfg(CONFIG_DEBUG_FS)]
unsafe extern "C" fn stats_open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: The caller passes a valid inode and file; `i_private` is the pipe the file was
    // created for, which `single_open` hands to `stats_show` as the seq_file's private data.
    unsafe { bindings::single_open(file, Some(stats_show), (*inode).i_private) }
}

/// # Safety
///
/// Called by `seq_read` with a valid seq_file that `stats_open` set up.
#[cfg(CONFIG_DEBUG_FS)]
unsafe extern "C" fn stats_show(m: *mut bindings::seq_file, _v: *mut c_void) -> c_int {
    // SAFETY: `private` is a pipe (`stats_open`), alive while the file is open: the open file
    // holds a reference on the module, whose pipes outlive its `StatsFiles`.
    let pipe = unsafe { &*(*m).private.cast::<crate::pipe::Pipe>() };
    // SAFETY: `m` is valid and used by this thread only for this call.
    let m = unsafe { SeqFile::from_raw(m) };
    seq_print!(m, "{}", pipe.show(": "));
    0
}
