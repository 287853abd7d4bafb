// SPDX-License-Identifier: GPL-2.0

//! mini_pipe: a named pipe as a misc character device, `/dev/mini_pipe`.
//!
//! Every open of `/dev/mini_pipe` reaches the same pipe: a fixed-size byte ring guarded by a
//! mutex, with readers waiting on `rd_wait` for data and writers on `wr_wait` for room. It
//! behaves like a FIFO made with mkfifo(1) (fs/pipe.c and `fifo_open`): opens rendezvous, the
//! last writer's close is end-of-file, a write with no reader is `EPIPE`, writes of at most
//! `PIPE_BUF` bytes are atomic. DIFF.md lists where and why it differs.
//!
//! ```sh
//! insmod mini_pipe.ko capacity=65536
//! cat /dev/mini_pipe &          # waits for a writer
//! echo hi > /dev/mini_pipe      # the cat prints "hi" and sees end-of-file
//! ```
//!
//! The crate is laid out as:
//! - `ring`: the byte ring and its (at most two-segment) copies;
//! - `pipe`: open, release, read and write: the semantics, all safe Rust;
//! - `wait`: wait queues whose wakeups carry a poll key, and poll table registration;
//! - `fops`: the misc device registration and its `file_operations` trampolines.
//!
//! - `kvec`: `iov_iter`s over kernel buffers, for the KUnit tests (with `CONFIG_KUNIT` only).
//!
//! `fops`, `wait` and `kvec` hold all the `unsafe` code.

#[path = "src/fops.rs"]
mod fops;
#[cfg(CONFIG_KUNIT = "y")]
#[path = "src/kvec.rs"]
mod kvec;
#[path = "src/pipe.rs"]
mod pipe;
#[path = "src/ring.rs"]
mod ring;
#[path = "src/wait.rs"]
mod wait;

use fops::PipeDevice;
use kernel::prelude::*;
use pipe::Pipe;

/// The largest `capacity` accepted: 16 MiB, 256 times the default. The ring is one kvmalloc'd
/// allocation, so the limit keeps a typo from pinning a large part of memory.
const MAX_CAPACITY: usize = 16 << 20;

module! {
    type: MiniPipeModule,
    name: "mini_pipe",
    authors: ["mini_pipe developers"],
    description: "A named pipe as a misc device: /dev/mini_pipe",
    license: "GPL",
    params: {
        capacity: usize {
            default: 65536,
            description: "Ring capacity in bytes (1 to 16777216; default 65536, as a Linux pipe)",
        },
    },
}

#[pin_data]
struct MiniPipeModule {
    #[pin]
    device: PipeDevice,
}

impl kernel::InPlaceModule for MiniPipeModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            device <- PipeDevice::register(c"mini_pipe", 0o600, Pipe::new(capacity()?)),
        })
    }
}

/// The `capacity` parameter, checked: out of range, loading fails with `EINVAL` and says why.
fn capacity() -> Result<usize> {
    let capacity = module_parameters::capacity.value();
    if capacity == 0 || capacity > MAX_CAPACITY {
        pr_err!("capacity={capacity} is out of range: use 1 to {MAX_CAPACITY} bytes\n");
        return Err(EINVAL);
    }
    Ok(capacity)
}
