// SPDX-License-Identifier: GPL-2.0

//! mini_pipe: named pipes as character devices, `/dev/mini_pipe` (and `/dev/mini_pipe1`, ...).
//!
//! Every open of `/dev/mini_pipe` reaches the same pipe: a fixed-size byte ring guarded by a
//! mutex, with readers waiting on `rd_wait` for data and writers on `wr_wait` for room. It
//! behaves like a FIFO made with mkfifo(1) (fs/pipe.c and `fifo_open`): opens rendezvous, the
//! last writer's close is end-of-file, a write with no reader is `EPIPE`, writes of at most
//! `PIPE_BUF` bytes are atomic. DIFF.md lists where and why it differs. With `pipes=N`, the
//! module makes N independent pipes, `/dev/mini_pipe`, `/dev/mini_pipe1`, ...,
//! `/dev/mini_pipe<N-1>`, each with its counters in `/sys/kernel/debug/mini_pipe/<node name>`.
//! With `capacity=0`, a pipe has no ring: it is a rendezvous channel, where each write waits
//! until readers have taken its bytes, which move from the writer's buffer to the reader's with
//! one copy; a file opened with `O_DSYNC` writes that way on any pipe (`handoff`).
//!
//! ```sh
//! insmod mini_pipe.ko capacity=65536
//! cat /dev/mini_pipe &          # waits for a writer
//! echo hi > /dev/mini_pipe      # the cat prints "hi" and sees end-of-file
//! ```
//!
//! The crate is laid out as:
//! - `ring`: the byte ring, and the claims a copy in or out makes on it;
//! - `claim`: the ring's bytes, which one reader and one writer copy at the same time, each
//!   under a claim on its own part, without the pipe's mutex;
//! - `pipe`: open, release, read and write: the semantics, all safe Rust;
//! - `handoff`: bytes moved straight from a waiting writer's buffer to a reader's, or into a
//!   waiting reader's, with one copy: rendezvous pipes (`capacity=0`) and `O_DSYNC` writes;
//! - `pin`: the pinned user pages a waiting reader or writer leaves for the other side;
//! - `stats`: the counters of what happened in a pipe;
//! - `cacheline`: where the hot fields of a pipe lie, so that two CPUs share few cache lines;
//! - `wait`: wait queues whose wakeups carry a poll key, and poll table registration;
//! - `fops`: the `file_operations` trampolines;
//! - `chrdev`: the device numbers, class, nodes and `cdev` that route opens to `fops`, and the
//!   order in which a load registers everything;
//! - `debugfs`: the counters files, `/sys/kernel/debug/mini_pipe/<node name>`.
//!
//! - `kvec`: `iov_iter`s over kernel buffers, for the KUnit tests (with `CONFIG_KUNIT` only);
//! - `compat`: every difference between the kernel releases it builds against (7.2, 7.3), each
//!   chosen by a probe in Kbuild.
//!
//! `chrdev`, `claim`, `compat`, `debugfs`, `fops`, `pin`, `wait` and `kvec` hold all the `unsafe`
//! code.

#[path = "src/cacheline.rs"]
mod cacheline;
#[path = "src/chrdev.rs"]
mod chrdev;
#[path = "src/claim.rs"]
mod claim;
#[path = "src/compat.rs"]
mod compat;
#[path = "src/debugfs.rs"]
mod debugfs;
#[path = "src/fops.rs"]
mod fops;
#[path = "src/handoff.rs"]
mod handoff;
#[cfg(CONFIG_KUNIT = "y")]
#[path = "src/kvec.rs"]
mod kvec;
#[path = "src/pin.rs"]
mod pin;
#[path = "src/pipe.rs"]
mod pipe;
#[path = "src/ring.rs"]
mod ring;
#[path = "src/stats.rs"]
mod stats;
#[path = "src/wait.rs"]
mod wait;

use chrdev::Devices;
use kernel::prelude::*;
use pipe::Pipe;

/// The largest `capacity` accepted: 16 MiB, 256 times the default. Each ring is one kvmalloc'd
/// allocation, so the limit keeps a typo from pinning a large part of memory.
const MAX_CAPACITY: usize = 16 << 20;

/// The most pipes one load makes.
const MAX_PIPES: u32 = 64;

module! {
    type: MiniPipeModule,
    name: "mini_pipe",
    authors: ["mini_pipe developers"],
    description: "Named pipes as character devices: /dev/mini_pipe, /dev/mini_pipe1, ...",
    license: "GPL",
    params: {
        capacity: usize {
            default: 65536,
            description: "Ring capacity in bytes of each pipe (0 to 16777216; default 65536, as a Linux pipe; 0: a rendezvous channel, no ring)",
        },
        pipes: u32 {
            default: 1,
            description: "Number of pipes (1 to 64; default 1): /dev/mini_pipe, /dev/mini_pipe1, ...",
        },
    },
}

/// The module's pipes, one per device number.
pub(crate) struct Pipes {
    pipes: KVec<Pin<KBox<Pipe>>>,
}

impl Pipes {
    /// `count` pipes of `capacity` bytes each.
    fn new(count: u32, capacity: usize) -> Result<Self> {
        let mut pipes = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for _ in 0..count {
            pipes.push(KBox::pin_init(Pipe::new(capacity), GFP_KERNEL)?, GFP_KERNEL)?;
        }
        Ok(Self { pipes })
    }

    /// How many pipes there are.
    pub(crate) fn len(&self) -> usize {
        self.pipes.len()
    }

    /// Pipe `index`, the one behind minor `index`.
    pub(crate) fn get(&self, index: usize) -> Option<&Pipe> {
        self.pipes.get(index).map(|pipe| &**pipe)
    }
}

#[pin_data]
struct MiniPipeModule {
    #[pin]
    devices: Devices,
}

impl kernel::InPlaceModule for MiniPipeModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            devices <- Devices::new(c"mini_pipe", Pipes::new(pipe_count()?, capacity()?)?),
        })
    }
}

/// The `pipes` parameter, checked: out of range, loading fails with `EINVAL` and says why.
fn pipe_count() -> Result<u32> {
    let pipes = compat::param(module_parameters::pipes.value());
    if pipes == 0 || pipes > MAX_PIPES {
        pr_err!("pipes={pipes} is out of range: use 1 to {MAX_PIPES}\n");
        return Err(EINVAL);
    }
    Ok(pipes)
}

/// The `capacity` parameter, checked: out of range, loading fails with `EINVAL` and says why.
/// 0 makes rendezvous channels: no ring, every write waits for readers to take its bytes.
fn capacity() -> Result<usize> {
    let capacity = compat::param(module_parameters::capacity.value());
    if capacity > MAX_CAPACITY {
        pr_err!("capacity={capacity} is out of range: use 0 to {MAX_CAPACITY} bytes\n");
        return Err(EINVAL);
    }
    Ok(capacity)
}
