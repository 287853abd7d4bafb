// SPDX-License-Identifier: GPL-2.0

//! `iov_iter`s over kernel buffers (`ITER_KVEC`), so that the KUnit tests can drive the ring's
//! real `read_into` and `write_from` the way read(2) and write(2) do, without user memory.

use kernel::{
    bindings,
    iov::{
        IovIterDest,
        IovIterSource, //
    },
    types::Opaque,
};

/// Runs `f` with an `IovIterSource` that reads `data`.
pub(crate) fn with_source<R>(data: &[u8], f: impl FnOnce(&mut IovIterSource<'_>) -> R) -> R {
    let vec = bindings::kvec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let iter = Opaque::<bindings::iov_iter>::uninit();
    // SAFETY: `iter` is valid for writes; `vec` describes `data`, which is readable for the
    // whole call, and `vec` outlives `iter`'s use below.
    unsafe { bindings::iov_iter_kvec(iter.get(), bindings::ITER_SOURCE, &vec, 1, data.len()) };
    // SAFETY: `iov_iter_kvec` initialised `iter` as an ITER_SOURCE iterator over `data`, which
    // stays valid and unwritten while `f` runs; `iter` is only used through this reference.
    f(unsafe { IovIterSource::from_raw(iter.get()) })
}

/// Runs `f` with an `IovIterDest` that writes into `buf`.
pub(crate) fn with_dest<R>(buf: &mut [u8], f: impl FnOnce(&mut IovIterDest<'_>) -> R) -> R {
    let vec = bindings::kvec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let iter = Opaque::<bindings::iov_iter>::uninit();
    // SAFETY: `iter` is valid for writes; `vec` describes `buf`, which is writable for the whole
    // call and borrowed mutably by it, and `vec` outlives `iter`'s use below.
    unsafe { bindings::iov_iter_kvec(iter.get(), bindings::ITER_DEST, &vec, 1, buf.len()) };
    // SAFETY: `iov_iter_kvec` initialised `iter` as an ITER_DEST iterator over `buf`, which
    // nothing else touches while `f` runs; `iter` is only used through this reference.
    f(unsafe { IovIterDest::from_raw(iter.get()) })
}
