// SPDX-License-Identifier: GPL-2.0

//! Beyond a FIFO: rendezvous channels (`capacity=0`), where a write returns once readers have
//! taken its bytes, and synchronous writes (`O_DSYNC`, `O_SYNC`) on a buffered pipe. The bytes
//! move from one user buffer to the other with one copy, out of or into the waiting side's
//! pinned pages; the last test checks that every pin was released.

use crate::{
    devices::counters,
    reliability::{byte_stream_chunks, kill_blocked, signal_storm, stress_on},
    util::{
        blocked_in_syscall, describe_task, ensure, is_loaded, open, open_within, pattern, queued,
        reload, test, unload, wait_until, TestResult, DEV, SYS_READ, SYS_WRITE,
    },
    Test,
};
use nix::{
    errno::Errno,
    fcntl::{splice, SpliceFFlags},
    kmod::{delete_module, DeleteModuleFlags},
    libc,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        mman::{mmap_anonymous, munmap, MapFlags, ProtFlags},
        pthread::{pthread_kill, pthread_self, Pthread},
        signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
        stat::Mode,
        wait::waitpid,
    },
    unistd::{fork, gettid, mkfifo, ForkResult},
};
use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read, Write},
    num::NonZeroUsize,
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(60);
const PIPE_BUF: usize = 4096;
/// Where the FIFO of the comparison is made.
const FIFO: &str = "/tmp/rendezvous_fifo";

pub fn tests() -> Vec<Test> {
    vec![
        test("rendezvous_meet_and_wait", meet_and_wait),
        test("slots_one_cpu_reader_waits_with_its_buffer", one_cpu_slot),
        test(
            "rendezvous_nonblocking_needs_a_waiting_partner",
            nonblocking,
        ),
        test("rendezvous_signal_and_last_reader_end_a_write", write_ended),
        test("rendezvous_like_a_fifo", like_a_fifo),
        test("rendezvous_splice_both_ways", splice_both_ways),
        test("rendezvous_unmapped_while_waiting", unmapped_while_waiting),
        test("rendezvous_bad_buffers_keep_the_bytes_before", bad_buffers),
        test("rendezvous_small_writes_whole_under_signals", || {
            whole_under_signals("capacity=0", 0)
        }),
        test("sync_small_writes_whole_under_signals", || {
            whole_under_signals("capacity=65536", libc::O_DSYNC)
        }),
        test("rendezvous_fork_while_waiting", fork_while_waiting),
        test("rendezvous_unload_refused_while_waiting", unload_refused),
        test("rendezvous_stress_8x8", stress),
        test("rendezvous_kill_blocked", || kill_blocked(0)),
        test("rendezvous_signal_storm", || signal_storm(0)),
        test("sync_writes_wait_for_readers", sync_writes),
        test("rendezvous_pins_all_released", pins_released),
    ]
}

extern "C" fn on_interrupt(_: i32) {}

/// A call made on a thread of its own, so that the test can see it wait in the kernel,
/// interrupt it with a signal, and collect its result, each bounded.
struct Call<T> {
    what: String,
    tid: i32,
    pthread: Pthread,
    rx: mpsc::Receiver<T>,
    result: Option<T>,
    _thread: thread::JoinHandle<()>,
}

impl<T: Send + 'static> Call<T> {
    fn start(what: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel();
        let (idtx, idrx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let _ = idtx.send((gettid().as_raw(), pthread_self()));
            let _ = tx.send(f());
        });
        let (tid, pthread) = idrx
            .recv_timeout(WAIT)
            .map_err(|_| format!("{what}: the thread did not start"))?;
        Ok(Self {
            what: what.into(),
            tid,
            pthread,
            rx,
            result: None,
            _thread: thread,
        })
    }

    /// Whether the call has returned (its result is kept for [`Call::join`]).
    fn returned(&mut self) -> bool {
        if self.result.is_none() {
            self.result = self.rx.try_recv().ok();
        }
        self.result.is_some()
    }

    /// Waits until the call sleeps in system call `nr`.
    fn waits_in(&mut self, nr: u32) -> TestResult {
        let tid = self.tid as u32;
        wait_until(&format!("{} waits in the kernel", self.what), WAIT, || {
            blocked_in_syscall(tid, nr)
        })?;
        ensure!(
            !self.returned(),
            "{} returned instead of waiting",
            self.what
        );
        Ok(())
    }

    /// Sends the thread SIGUSR2, caught without `SA_RESTART`: a wait ends as for any signal.
    fn interrupt(&self) -> TestResult {
        let act = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: The handler does nothing, which is async-signal-safe.
        unsafe { sigaction(Signal::SIGUSR2, &act) }.map_err(|e| e.to_string())?;
        pthread_kill(self.pthread, Signal::SIGUSR2).map_err(|e| e.to_string())
    }

    /// The call's result, waiting for it at most [`WAIT`].
    fn join(mut self) -> Result<T, String> {
        if let Some(v) = self.result.take() {
            return Ok(v);
        }
        self.rx.recv_timeout(WAIT).map_err(|_| {
            format!(
                "{}: no result within {WAIT:?}\n{}",
                self.what,
                describe_task(&format!("/proc/self/task/{}", self.tid))
            )
        })
    }
}

/// `len` bytes of the test pattern `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    pattern(seed, 0, &mut v);
    v
}

/// Opens the device with `flags` (`O_RDONLY` or `O_WRONLY` by `read`), bounded.
fn dev(read: bool, flags: i32) -> Result<File, String> {
    open_within(DEV, read, !read, flags, WAIT)
}

/// The poll events of `file` now (no waiting).
fn events(file: &File, want: PollFlags) -> Result<PollFlags, String> {
    let mut fds = [PollFd::new(file.as_fd(), want)];
    poll(&mut fds, PollTimeout::ZERO).map_err(|e| e.to_string())?;
    Ok(fds[0].revents().unwrap_or(PollFlags::empty()))
}

/// Reads exactly `len` bytes from a non-blocking `file`, polling for each read (bounded).
fn read_exactly(file: &mut File, len: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(60_000u16)).map_err(|e| e.to_string())?;
        ensure!(n == 1, "nothing to read after {got} of {len} bytes");
        match file.read(&mut out[got..]) {
            Ok(0) => return Err(format!("end-of-file after {got} of {len} bytes")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("read after {got} of {len}: {e}")),
        }
    }
    Ok(out)
}

/// The errno of an I/O result, or the count.
fn outcome(r: &io::Result<usize>) -> Result<usize, Errno> {
    match r {
        Ok(n) => Ok(*n),
        Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    }
}

fn counter(c: &HashMap<String, u64>, key: &str) -> Result<u64, String> {
    c.get(key)
        .copied()
        .ok_or(format!("no {key} in the counters"))
}

/// A reader that comes first waits with its buffer and the writer's bytes land in it; a writer
/// that comes first waits until readers have taken every byte, and FIONREAD and poll show what
/// it offers meanwhile. The counters show the bytes that moved with one copy.
fn meet_and_wait() -> TestResult {
    reload(&["capacity=0"])?;
    ensure!(
        counter(&counters(0)?, "capacity")? == 0,
        "capacity is not 0"
    );
    let mut reader = Call::start("a read on an empty rendezvous pipe", || {
        let mut f = open(DEV, true, false, 0)?;
        let mut buf = vec![0u8; 65536];
        let n = f.read(&mut buf)?;
        buf.truncate(n);
        io::Result::Ok(buf)
    })?;
    let w = dev(false, 0)?;
    reader.waits_in(SYS_READ)?;
    let mut wc = w.try_clone().map_err(|e| e.to_string())?;
    let n = Call::start("a write to a waiting reader", move || wc.write(b"hello"))?
        .join()?
        .map_err(|e| format!("write: {e}"))?;
    ensure!(n == 5, "the write returned {n}, not 5");
    let got = reader.join()?.map_err(|e| format!("read: {e}"))?;
    ensure!(got == b"hello", "the reader got {got:?}");

    // A writer first: its write waits for readers to take all 100000 bytes.
    let data = bytes(3, 100_000);
    let mut r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let (mut wc, d) = (w.try_clone().map_err(|e| e.to_string())?, data.clone());
    let mut writer = Call::start("a write of 100000 bytes", move || wc.write(&d))?;
    writer.waits_in(SYS_WRITE)?;
    ensure!(
        queued(&r) == Ok(100_000),
        "FIONREAD {:?}, not the 100000 bytes offered",
        queued(&r)
    );
    ensure!(
        events(&r, PollFlags::POLLIN)?.contains(PollFlags::POLLIN),
        "no POLLIN while a writer offers bytes"
    );
    let first = read_exactly(&mut r, 40_000)?;
    ensure!(first == data[..40_000], "the first 40000 bytes differ");
    ensure!(
        !writer.returned() && queued(&r) == Ok(60_000),
        "the write returned before all was read (FIONREAD {:?})",
        queued(&r)
    );
    let rest = read_exactly(&mut r, 60_000)?;
    ensure!(rest == data[40_000..], "the last 60000 bytes differ");
    let n = writer.join()?.map_err(|e| format!("write: {e}"))?;
    ensure!(n == 100_000, "the write returned {n}");
    let c = counters(0)?;
    let (direct, sync, offered) = (
        counter(&c, "bytes_direct")?,
        counter(&c, "sync_writes")?,
        counter(&c, "offered")?,
    );
    println!("# rendezvous: {direct} bytes moved with one copy, {sync} writes waited for readers");
    ensure!(
        direct >= 100_005 && sync >= 2 && offered == 0,
        "counters: bytes_direct {direct}, sync_writes {sync}, offered {offered}"
    );
    drop((w, r));
    Ok(())
}

/// Whether the kernel can run only one CPU (`nr_cpu_ids`, which the module looks at).
fn one_cpu() -> Result<bool, String> {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|e| format!("/sys/devices/system/cpu/possible: {e}"))?;
    Ok(possible.trim() == "0")
}

/// On one CPU, a buffered pipe's one reader that waits in read waits with its buffer, as at
/// `capacity=0`: a writer fills that buffer before the ring, so a non-blocking write of 68 KiB
/// into a 4 KiB ring goes in whole, and the read returns its 64 KiB at once, moved with one
/// copy, the rest waiting in the ring. On several CPUs the same calls go as with a FIFO: the
/// write takes the ring's room, and the read returns at most the ring's 4 KiB.
fn one_cpu_slot() -> TestResult {
    reload(&["capacity=4096"])?;
    let one_cpu = one_cpu()?;
    let mut reader = Call::start("a 64 KiB read on an empty pipe", || {
        let mut f = open(DEV, true, false, 0)?;
        let mut buf = vec![0u8; 65536];
        let n = f.read(&mut buf)?;
        buf.truncate(n);
        io::Result::Ok((f, buf))
    })?;
    // A blocking open meets the reader's; the write is made on a second, non-blocking one.
    let w0 = dev(false, 0)?;
    let mut w = dev(false, libc::O_NONBLOCK)?;
    reader.waits_in(SYS_READ)?;
    let data = bytes(5, 69632);
    let n = w.write(&data).map_err(|e| format!("write: {e}"))?;
    let (mut r, got) = reader.join()?.map_err(|e| format!("read: {e}"))?;
    let direct = counter(&counters(0)?, "bytes_direct")?;
    println!(
        "# slots: {}: the write took {n} bytes, the read returned {}, {direct} with one copy",
        if one_cpu { "one CPU" } else { "several CPUs" },
        got.len()
    );
    ensure!(
        got == data[..got.len()],
        "the read returned other bytes than written"
    );
    if one_cpu {
        ensure!(
            n == 69632 && got.len() == 65536 && direct == 65536,
            "one CPU: write {n} (not 69632), read {} (not 65536), bytes_direct {direct} \
             (not 65536)",
            got.len()
        );
        ensure!(
            queued(&r) == Ok(4096),
            "FIONREAD {:?}, not the 4096 bytes in the ring",
            queued(&r)
        );
        let mut rest = vec![0u8; 8192];
        let m = r.read(&mut rest).map_err(|e| format!("read: {e}"))?;
        ensure!(
            rest[..m] == data[65536..],
            "the next read returned {m} bytes, not the ring's 4096"
        );
    } else {
        ensure!(
            n >= 4096 && got.len() <= 4096 && direct == 0,
            "several CPUs: write {n}, read {}, bytes_direct {direct}: not a FIFO's",
            got.len()
        );
    }
    drop((w0, w, r));
    Ok(())
}

/// Non-blocking calls succeed only against a waiting partner: a write copies into a reader
/// waiting in read (all or nothing up to PIPE_BUF, as much as fits above), a read takes from a
/// waiting writer; otherwise EAGAIN. poll agrees, and end-of-file and EPIPE are a FIFO's.
fn nonblocking() -> TestResult {
    reload(&["capacity=0"])?;
    let mut r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut w = open(DEV, false, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    ensure!(
        outcome(&w.write(b"x")) == Err(Errno::EAGAIN),
        "a write with no reader waiting did not fail with EAGAIN"
    );
    ensure!(
        !events(&w, PollFlags::POLLOUT)?.contains(PollFlags::POLLOUT),
        "POLLOUT with no reader waiting"
    );
    let mut buf = [0u8; 100];
    ensure!(
        outcome(&r.read(&mut buf)) == Err(Errno::EAGAIN),
        "a read with no writer waiting did not fail with EAGAIN"
    );

    // A reader waiting in read with room for 10 bytes.
    let mut rb = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let mut reader = Call::start("a 10-byte read", move || {
        let mut buf = [0u8; 10];
        rb.read(&mut buf).map(|n| buf[..n].to_vec())
    })?;
    reader.waits_in(SYS_READ)?;
    ensure!(
        events(&w, PollFlags::POLLOUT)?.contains(PollFlags::POLLOUT),
        "no POLLOUT while a reader waits in read"
    );
    ensure!(
        outcome(&w.write(&[7u8; 100])) == Err(Errno::EAGAIN),
        "an atomic 100-byte write went partly into a 10-byte reader"
    );
    let big = bytes(4, 5000);
    ensure!(
        outcome(&w.write(&big)) == Ok(10),
        "a 5000-byte non-blocking write did not fill the 10-byte reader"
    );
    let got = reader.join()?.map_err(|e| e.to_string())?;
    ensure!(got == big[..10], "the reader got {got:?}");

    // A non-blocking read takes from a waiting writer.
    let mut wb = open(DEV, false, true, 0).map_err(|e| e.to_string())?;
    let mut writer = Call::start("a 10-byte write", move || wb.write(b"0123456789"))?;
    writer.waits_in(SYS_WRITE)?;
    let n = r.read(&mut buf).map_err(|e| e.to_string())?;
    ensure!(&buf[..n] == b"0123456789", "read {:?}", &buf[..n]);
    let n = writer.join()?.map_err(|e| e.to_string())?;
    ensure!(n == 10, "the write returned {n}");

    // No writer left: end-of-file and POLLHUP. No reader left: EPIPE and POLLERR.
    drop(w);
    ensure!(
        outcome(&r.read(&mut buf)) == Ok(0),
        "no end-of-file with no writer"
    );
    ensure!(
        events(&r, PollFlags::POLLIN)?.contains(PollFlags::POLLHUP),
        "no POLLHUP with no writer"
    );
    let mut w = open(DEV, false, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    drop(r);
    ensure!(
        outcome(&w.write(b"x")) == Err(Errno::EPIPE),
        "no EPIPE with no reader"
    );
    ensure!(
        events(&w, PollFlags::POLLOUT)?.contains(PollFlags::POLLERR),
        "no POLLERR with no reader"
    );
    Ok(())
}

/// A signal ends a waiting write with the bytes readers took, and the rest is never read; the
/// last reader leaving does the same, and the next write is EPIPE.
fn write_ended() -> TestResult {
    reload(&["capacity=0"])?;
    let mut r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let w = dev(false, 0)?;
    let data = bytes(5, 1 << 20);
    let (mut wc, d) = (w.try_clone().map_err(|e| e.to_string())?, data.clone());
    let mut writer = Call::start("a 1 MiB write", move || wc.write(&d))?;
    writer.waits_in(SYS_WRITE)?;
    let got = read_exactly(&mut r, 100_000)?;
    ensure!(got == data[..100_000], "the bytes read differ");
    writer.interrupt()?;
    let n = writer.join()?.map_err(|e| format!("write: {e}"))?;
    ensure!(
        n == 100_000,
        "the interrupted write returned {n}, not the 100000 bytes read"
    );
    ensure!(
        queued(&r) == Ok(0) && outcome(&r.read(&mut [0u8; 16])) == Err(Errno::EAGAIN),
        "bytes of the interrupted write are still there to read"
    );

    // Interrupted before a byte was taken: EINTR, nothing delivered.
    let (mut wc, d) = (w.try_clone().map_err(|e| e.to_string())?, data.clone());
    let mut writer = Call::start("a 1 MiB write", move || wc.write(&d))?;
    writer.waits_in(SYS_WRITE)?;
    writer.interrupt()?;
    let r2 = writer.join()?;
    ensure!(
        outcome(&r2) == Err(Errno::EINTR),
        "an interrupted write that moved nothing returned {r2:?}"
    );
    ensure!(queued(&r) == Ok(0), "bytes of it are still offered");

    // The last reader leaves after taking 5000 bytes.
    let (mut wc, d) = (w.try_clone().map_err(|e| e.to_string())?, data.clone());
    let mut writer = Call::start("a 1 MiB write", move || wc.write(&d))?;
    writer.waits_in(SYS_WRITE)?;
    let got = read_exactly(&mut r, 5000)?;
    ensure!(got == data[..5000], "the bytes read differ");
    drop(r);
    let n = writer.join()?.map_err(|e| format!("write: {e}"))?;
    ensure!(
        n == 5000,
        "the write returned {n} when the last reader left after 5000 bytes"
    );
    let mut wc = w.try_clone().map_err(|e| e.to_string())?;
    ensure!(
        outcome(&wc.write(b"x")) == Err(Errno::EPIPE),
        "no EPIPE after the last reader left"
    );
    Ok(())
}

/// What a FIFO defines, the same at capacity=0: open rendezvous (ENXIO for a non-blocking writer
/// alone, a non-blocking reader alone opens and reads end-of-file), the byte stream a blocking
/// writer and reader see, end-of-file, EPIPE.
fn like_a_fifo() -> TestResult {
    reload(&["capacity=0"])?;
    let _ = std::fs::remove_file(FIFO);
    mkfifo(FIFO, Mode::from_bits_truncate(0o600)).map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for path in [FIFO, DEV] {
        let mut log = Vec::new();
        let w = open(path, false, true, libc::O_NONBLOCK);
        log.push(format!(
            "writer alone: {:?}",
            w.map(|_| ()).map_err(|e| e.raw_os_error())
        ));
        let mut r = open(path, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
        log.push(format!(
            "reader alone reads {:?}",
            outcome(&r.read(&mut [0u8; 8]))
        ));
        drop(r);
        // The byte stream: writes of 1 B to 1 MiB, read with an 8 KiB buffer to end-of-file.
        let p = path.to_string();
        let writer = Call::start("a writer of several sizes", move || {
            let mut f = open(&p, false, true, 0)?;
            let mut off = 0u64;
            for len in [1usize, 100, 5000, 70_000, 1 << 20, 3] {
                let mut buf = vec![0u8; len];
                pattern(6, off, &mut buf);
                f.write_all(&buf)?;
                off += len as u64;
            }
            io::Result::Ok(off)
        })?;
        let mut r = open_within(path, true, false, 0, WAIT)?;
        let mut stream = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = r.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            stream.extend_from_slice(&buf[..n]);
        }
        let sent = writer.join()?.map_err(|e| e.to_string())?;
        let mut want = vec![0u8; sent as usize];
        pattern(6, 0, &mut want);
        log.push(format!(
            "stream of {} bytes intact: {}",
            stream.len(),
            stream == want
        ));
        // EPIPE once the reader has gone.
        let mut w = open(path, false, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
        drop(r);
        log.push(format!(
            "write with no reader: {:?}",
            outcome(&w.write(b"x"))
        ));
        seen.push(log);
    }
    let _ = std::fs::remove_file(FIFO);
    ensure!(
        seen[0] == seen[1],
        "FIFO: {:?}\nmini_pipe capacity=0: {:?}",
        seen[0],
        seen[1]
    );
    ensure!(
        seen[0][2].ends_with("true"),
        "the stream was not intact: {:?}",
        seen[0]
    );
    Ok(())
}

/// splice from a rendezvous pipe into a pipe, and from a pipe into it (the kernel's pages, not
/// user memory, on the device's side).
fn splice_both_ways() -> TestResult {
    reload(&["capacity=0"])?;
    let data = bytes(7, 200_000);
    let d = data.clone();
    let writer = Call::start("a writer for splice", move || {
        let mut f = open(DEV, false, true, 0)?;
        f.write_all(&d)
    })?;
    let r = dev(true, 0)?;
    let (pr, pw) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let (mut pr, mut got) = (File::from(pr), Vec::new());
    loop {
        let n = splice(&r, None, &pw, None, 65536, SpliceFFlags::empty())
            .map_err(|e| format!("splice out of the device after {}: {e}", got.len()))?;
        if n == 0 {
            break;
        }
        let mut buf = vec![0u8; n];
        pr.read_exact(&mut buf).map_err(|e| e.to_string())?;
        got.extend_from_slice(&buf);
    }
    writer.join()?.map_err(|e| e.to_string())?;
    ensure!(
        got == data,
        "splice out: {} bytes, intact: false",
        got.len()
    );

    let reader = Call::start("a reader for splice", || {
        let mut f = open(DEV, true, false, 0)?;
        let mut all = Vec::new();
        f.read_to_end(&mut all)?;
        io::Result::Ok(all)
    })?;
    let w = dev(false, 0)?;
    let mut pw = File::from(pw);
    for chunk in data.chunks(50_000) {
        pw.write_all(chunk).map_err(|e| e.to_string())?;
        let mut left = chunk.len();
        while left > 0 {
            left -= splice(&pr, None, &w, None, left, SpliceFFlags::empty())
                .map_err(|e| format!("splice into the device: {e}"))?;
        }
    }
    drop(w);
    let all = reader.join()?.map_err(|e| e.to_string())?;
    ensure!(
        all == data,
        "splice in: {} bytes of {}, intact: false",
        all.len(),
        data.len()
    );
    Ok(())
}

/// A waiting reader's or writer's memory unmapped by another thread: the pinned pages stay,
/// the bytes move, nothing crashes and nothing stays pinned.
fn unmapped_while_waiting() -> TestResult {
    const LEN: usize = 128 << 10;
    reload(&["capacity=0"])?;
    let len = NonZeroUsize::new(LEN).unwrap();
    let map = || {
        // SAFETY: A new anonymous mapping, used only through the address returned.
        unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map(|p| p.as_ptr() as usize)
        .map_err(|e| e.to_string())
    };
    let unmap = |addr: usize| {
        // SAFETY: `addr` is a mapping of `LEN` bytes made by `map`; the thread that uses it is
        // asleep in the kernel and does not touch it again.
        unsafe { munmap(std::ptr::NonNull::new(addr as *mut _).unwrap(), LEN) }
            .map_err(|e| e.to_string())
    };
    // A reader waits with its buffer in a mapping, which is then unmapped.
    let addr = map()?;
    let mut rf = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut w = dev(false, 0)?;
    let fd = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let mut reader = Call::start("a read into a mapping", move || {
        // SAFETY: The mapping is `LEN` bytes, readable and writable, until the test unmaps it
        // while this read waits; after the read this thread does not touch it.
        let buf = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, LEN) };
        nix::unistd::read(&fd, buf)
    })?;
    reader.waits_in(SYS_READ)?;
    unmap(addr)?;
    let n = w.write(&bytes(8, 1000)).map_err(|e| e.to_string())?;
    ensure!(n == 1000, "the write returned {n}");
    let got = reader.join()?;
    ensure!(
        got == Ok(1000),
        "the read into the unmapped buffer returned {got:?}"
    );

    // A writer waits with its bytes in a mapping, which is then unmapped.
    let addr = map()?;
    let data = bytes(9, LEN);
    // SAFETY: The mapping was just made, `LEN` bytes, writable.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, LEN) }.copy_from_slice(&data);
    let wfd = w.try_clone().map_err(|e| e.to_string())?;
    let mut writer = Call::start("a write from a mapping", move || {
        // SAFETY: As for the reader: valid until unmapped while this write waits.
        let buf = unsafe { std::slice::from_raw_parts(addr as *const u8, LEN) };
        nix::unistd::write(&wfd, buf)
    })?;
    writer.waits_in(SYS_WRITE)?;
    unmap(addr)?;
    let got = read_exactly(&mut rf, LEN)?;
    ensure!(got == data, "the bytes of the unmapped writer differ");
    let n = writer.join()?;
    ensure!(
        n == Ok(LEN),
        "the write from the unmapped buffer returned {n:?}"
    );
    Ok(())
}

/// Two pages, the second inaccessible: a buffer that faults half way. Returns its address.
fn half_bad(seed: u64) -> Result<usize, String> {
    let len = NonZeroUsize::new(8192).unwrap();
    // SAFETY: A new anonymous mapping, used only through the address returned.
    let p = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }
    .map_err(|e| e.to_string())?;
    let addr = p.as_ptr() as usize;
    // SAFETY: The first page of the mapping just made is writable.
    pattern(seed, 0, unsafe {
        std::slice::from_raw_parts_mut(addr as *mut u8, 4096)
    });
    // SAFETY: The second page of that mapping; nothing uses it.
    unsafe {
        nix::sys::mman::mprotect(
            std::ptr::NonNull::new((addr + 4096) as *mut _).unwrap(),
            4096,
            ProtFlags::PROT_NONE,
        )
    }
    .map_err(|e| e.to_string())?;
    Ok(addr)
}

/// A buffer that faults part way, on either side: the bytes before the fault move and count,
/// as for a FIFO; the rest stays with the writer, and nothing is lost.
fn bad_buffers() -> TestResult {
    reload(&["capacity=0"])?;
    let mut r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let w = dev(false, 0)?;
    let src = half_bad(13)?;
    let want = bytes(13, 4096);
    // A writer whose second page faults, with no reader waiting: it offers the first page,
    // which a reader takes, then its write ends with that count.
    let wc = w.try_clone().map_err(|e| e.to_string())?;
    let mut writer = Call::start("a write that faults half way", move || {
        // SAFETY: 8192 bytes of address space; the kernel faults on the second page, and this
        // thread reads none of it.
        nix::unistd::write(&wc, unsafe {
            std::slice::from_raw_parts(src as *const u8, 8192)
        })
    })?;
    writer.waits_in(SYS_WRITE)?;
    let got = read_exactly(&mut r, 4096)?;
    ensure!(got == want, "the bytes before the fault differ");
    let n = writer.join()?;
    ensure!(
        n == Ok(4096),
        "the write that faulted after 4096 bytes returned {n:?}"
    );
    // The same write into a reader waiting in read: the same 4096 bytes, straight into it.
    let rb = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let mut reader = Call::start("a read", move || {
        let mut buf = vec![0u8; 65536];
        nix::unistd::read(&rb, &mut buf).map(|n| buf[..n].to_vec())
    })?;
    reader.waits_in(SYS_READ)?;
    // SAFETY: As above.
    let n = nix::unistd::write(&w, unsafe {
        std::slice::from_raw_parts(src as *const u8, 8192)
    });
    ensure!(
        n == Ok(4096),
        "the write into a waiting reader returned {n:?}"
    );
    let got = reader.join()?.map_err(|e| e.to_string())?;
    ensure!(got == want, "the waiting reader got other bytes");
    // A reader whose buffer faults waits, as a FIFO's does, then gets EFAULT when a writer
    // comes; the writer's bytes stay offered.
    let bad = half_bad(0)? + 4096;
    let rb = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let mut reader = Call::start("a read into a bad buffer", move || {
        // SAFETY: An inaccessible page: the kernel faults on it, this thread never touches it.
        nix::unistd::read(&rb, unsafe {
            std::slice::from_raw_parts_mut(bad as *mut u8, 4096)
        })
    })?;
    reader.waits_in(SYS_READ)?;
    let wc = w.try_clone().map_err(|e| e.to_string())?;
    let mut writer = Call::start("a write of 100 bytes", move || {
        nix::unistd::write(&wc, &[9u8; 100])
    })?;
    let n = reader.join()?;
    ensure!(
        n == Err(Errno::EFAULT),
        "a waiting read into a bad buffer returned {n:?}"
    );
    writer.waits_in(SYS_WRITE)?;
    let got = read_exactly(&mut r, 100)?;
    ensure!(got == [9u8; 100], "the bytes after the faulted read differ");
    ensure!(writer.join()? == Ok(100), "the write did not return 100");
    // A reader whose buffer faults while bytes are offered: EFAULT, and the writer's bytes
    // stay offered for the next read, all of them.
    let data = bytes(14, 10_000);
    let (mut wc, d) = (w.try_clone().map_err(|e| e.to_string())?, data.clone());
    let mut writer = Call::start("a write of 10000 bytes", move || wc.write(&d))?;
    writer.waits_in(SYS_WRITE)?;
    let bad = half_bad(0)? + 4096;
    // SAFETY: An inaccessible page: the kernel faults on it, this thread never touches it.
    let n = nix::unistd::read(&r, unsafe {
        std::slice::from_raw_parts_mut(bad as *mut u8, 4096)
    });
    ensure!(
        n == Err(Errno::EFAULT),
        "a read into a bad buffer returned {n:?}"
    );
    ensure!(
        queued(&r) == Ok(10_000),
        "FIONREAD {:?} after the fault",
        queued(&r)
    );
    let got = read_exactly(&mut r, 10_000)?;
    ensure!(got == data, "the bytes after a faulted read differ");
    let n = writer.join()?.map_err(|e| e.to_string())?;
    ensure!(n == 10_000, "the write returned {n}");
    Ok(())
}

/// A writer of 512-byte records, interrupted by a signal every 100 us, and a reader taking 100
/// bytes at a time, so that most signals come while a record is partly read: every write
/// returns 512 (or EINTR with nothing taken, and is retried), and the reader sees every record
/// once, whole and in order. With `flags` (O_DSYNC) on a pipe loaded with `param`.
fn whole_under_signals(param: &str, flags: i32) -> TestResult {
    const REC: usize = 512;
    const RECORDS: u32 = 2000;
    reload(&[param])?;
    let writer = Call::start("a writer of records", move || {
        let mut f = loop {
            match open(DEV, false, true, flags) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        let mut eintr = 0u32;
        for seq in 0..RECORDS {
            let mut rec = bytes(u64::from(seq), REC);
            rec[..4].copy_from_slice(&seq.to_le_bytes());
            loop {
                match f.write(&rec) {
                    Ok(REC) => break,
                    Ok(n) => return Err(format!("record {seq}: a write returned {n}")),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => eintr += 1,
                    Err(e) => return Err(format!("record {seq}: {e}")),
                }
            }
        }
        Ok(eintr)
    })?;
    let mut r = dev(true, 0)?;
    let act = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: The handler does nothing, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR2, &act) }.map_err(|e| e.to_string())?;
    let (target, stop) = (writer.pthread, std::sync::Arc::new(AtomicBool::new(false)));
    let s2 = stop.clone();
    let storm = thread::spawn(move || {
        let mut sent = 0u64;
        while !s2.load(Ordering::Relaxed) && sent < 2_000_000 {
            if pthread_kill(target, Signal::SIGUSR2).is_err() {
                break;
            }
            sent += 1;
            thread::sleep(Duration::from_micros(100));
        }
        sent
    });
    let mut stream = Vec::new();
    let mut buf = [0u8; 100];
    let result = loop {
        match r.read(&mut buf) {
            // The writer closes when done: end-of-file.
            Ok(0) => break Ok(()),
            Ok(n) => stream.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(format!("read after {} bytes: {e}", stream.len())),
        }
    };
    stop.store(true, Ordering::Relaxed);
    let sent = storm.join().map_err(|_| "the signal thread panicked")?;
    result?;
    let eintr = writer.join()??;
    println!(
        "# signals: {sent} sent, {eintr} writes interrupted before a byte went, {} records of \
         {REC} bytes read",
        stream.len() / REC
    );
    ensure!(
        stream.len() == RECORDS as usize * REC,
        "{} bytes read, not {}",
        stream.len(),
        RECORDS as usize * REC
    );
    for (seq, rec) in stream.chunks(REC).enumerate() {
        let mut want = bytes(seq as u64, REC);
        want[..4].copy_from_slice(&(seq as u32).to_le_bytes());
        ensure!(
            rec == want.as_slice(),
            "record {seq} is torn or out of place"
        );
    }
    drop(r);
    reload(&[])
}

/// fork while a reader or writer waits: the parent's pinned pages stay the parent's, so the
/// bytes land in (come from) its memory, not the child's copy.
fn fork_while_waiting() -> TestResult {
    reload(&["capacity=0"])?;
    let forked = || -> TestResult {
        // SAFETY: The child only calls `_exit`, which is async-signal-safe.
        match unsafe { fork() }.map_err(|e| e.to_string())? {
            ForkResult::Child => unsafe { libc::_exit(0) },
            ForkResult::Parent { child } => {
                waitpid(child, None).map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    };
    let mut rf = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut w = dev(false, 0)?;
    let mut rb = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let mut reader = Call::start("a read across a fork", move || {
        let mut buf = vec![0u8; 8192];
        rb.read(&mut buf).map(|n| buf[..n].to_vec())
    })?;
    reader.waits_in(SYS_READ)?;
    forked()?;
    let data = bytes(10, 3000);
    ensure!(
        w.write(&data).map_err(|e| e.to_string())? == 3000,
        "short write"
    );
    let got = reader.join()?.map_err(|e| e.to_string())?;
    ensure!(got == data, "the reader's buffer does not hold the bytes");

    let data = bytes(11, 200_000);
    let (mut wc, d) = (w.try_clone().map_err(|e| e.to_string())?, data.clone());
    let mut writer = Call::start("a write across a fork", move || wc.write(&d))?;
    writer.waits_in(SYS_WRITE)?;
    forked()?;
    let got = read_exactly(&mut rf, data.len())?;
    ensure!(got == data, "the bytes of the writer differ after a fork");
    let n = writer.join()?.map_err(|e| e.to_string())?;
    ensure!(n == data.len(), "the write returned {n}");
    Ok(())
}

/// rmmod fails while a reader waits at capacity=0, and works once it has gone.
fn unload_refused() -> TestResult {
    reload(&["capacity=0"])?;
    let mut w = open(DEV, true, true, 0).map_err(|e| e.to_string())?;
    let mut rb = open(DEV, true, false, 0).map_err(|e| e.to_string())?;
    let mut reader = Call::start("a waiting read", move || {
        let mut buf = [0u8; 16];
        rb.read(&mut buf)
    })?;
    reader.waits_in(SYS_READ)?;
    let refused = delete_module(c"mini_pipe", DeleteModuleFlags::O_NONBLOCK);
    ensure!(
        refused.is_err() && is_loaded(),
        "delete_module succeeded while a reader waited"
    );
    ensure!(
        w.write(b"abc").map_err(|e| e.to_string())? == 3,
        "short write"
    );
    let n = reader.join()?.map_err(|e| e.to_string())?;
    ensure!(n == 3, "the read returned {n}");
    drop(w);
    unload()?;
    reload(&[])
}

/// 8 writers x 8 readers through capacity=0: framed messages of PIPE_BUF and 512 bytes, then
/// large writes (1 MiB, 64 KiB, 100000 B) to one checking reader: 256 MiB, nothing lost, torn
/// or duplicated. On the debug kernel (KASAN makes every copy several times slower), a quarter
/// of it.
fn stress() -> TestResult {
    reload(&["capacity=0"])?;
    let div = if crate::reliability::kasan_kernel() {
        4
    } else {
        1
    };
    let mut total = 0;
    for (msg, bytes) in [(PIPE_BUF, 96u64 << 20), (512, 16 << 20)] {
        let bytes = bytes / div;
        let (b, lost, torn) = stress_on(DEV, 8, 8, msg, bytes / msg as u64 / 8)?;
        ensure!(
            lost == 0 && torn == 0,
            "{msg}-byte messages: {lost} lost or duplicated, {torn} torn"
        );
        total += b;
    }
    for (chunk, bytes) in [
        (1u64 << 20, 96u64 << 20),
        (65536, 32 << 20),
        (100_000, 16 << 20),
    ] {
        let bytes = bytes / div;
        let (b, lost, torn) = byte_stream_chunks(bytes, chunk)?;
        ensure!(
            lost == 0 && torn == 0,
            "{chunk}-byte writes: {lost} bytes lost, {torn} bad reads"
        );
        total += b;
    }
    println!(
        "# stress: capacity 0, 8 writers x 8 readers and large writes: {} MiB, 0 lost, 0 torn",
        total >> 20
    );
    ensure!(
        total == (256 << 20) / div,
        "{total} bytes moved, not {}",
        (256 << 20) / div
    );
    reload(&[])
}

/// `O_DSYNC` and `O_SYNC` on a buffered pipe: the write returns once readers have read its
/// bytes, which come after the bytes queued before it and before those written after it; other
/// writers are unaffected; a signal ends it with the bytes read, and the rest is never read.
fn sync_writes() -> TestResult {
    reload(&["capacity=65536"])?;
    let mut r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut w = dev(false, 0)?;
    let ws = dev(false, libc::O_DSYNC)?;
    ensure!(
        w.write(&[b'A'; 10]).map_err(|e| e.to_string())? == 10,
        "short write"
    );
    let mut wc = ws.try_clone().map_err(|e| e.to_string())?;
    let mut sync = Call::start("an O_DSYNC write", move || wc.write(&[b'B'; 5000]))?;
    sync.waits_in(SYS_WRITE)?;
    ensure!(
        queued(&r) == Ok(5010),
        "FIONREAD {:?}, not 10 queued + 5000 offered",
        queued(&r)
    );
    ensure!(
        w.write(&[b'C'; 10]).map_err(|e| e.to_string())? == 10,
        "a buffered write waited behind the O_DSYNC one"
    );
    let got = read_exactly(&mut r, 5020)?;
    let mut want = vec![b'A'; 10];
    want.extend_from_slice(&[b'B'; 5000]);
    want.extend_from_slice(&[b'C'; 10]);
    ensure!(
        got == want,
        "the stream is not A*10 B*5000 C*10 in that order"
    );
    let n = sync.join()?.map_err(|e| e.to_string())?;
    ensure!(n == 5000, "the O_DSYNC write returned {n}");

    // O_SYNC, 300000 bytes (pinned, not copied), interrupted after 30000 were read.
    let mut wsync = dev(false, libc::O_SYNC)?;
    let data = bytes(12, 300_000);
    let d = data.clone();
    let mut sync = Call::start("an O_SYNC write", move || wsync.write(&d))?;
    sync.waits_in(SYS_WRITE)?;
    let got = read_exactly(&mut r, 30_000)?;
    ensure!(got == data[..30_000], "the bytes read differ");
    sync.interrupt()?;
    let n = sync.join()?.map_err(|e| e.to_string())?;
    ensure!(
        n == 30_000,
        "the interrupted O_SYNC write returned {n}, not 30000"
    );
    ensure!(
        queued(&r) == Ok(0),
        "FIONREAD {:?}: the rest is still there",
        queued(&r)
    );

    // O_NONBLOCK wins over O_DSYNC: the bytes are buffered and the write returns at once.
    let mut wn = dev(false, libc::O_DSYNC | libc::O_NONBLOCK)?;
    ensure!(
        wn.write(&[b'D'; 10]).map_err(|e| e.to_string())? == 10 && queued(&r) == Ok(10),
        "a non-blocking O_DSYNC write was not buffered"
    );
    let c = counters(0)?;
    ensure!(
        counter(&c, "sync_writes")? >= 2,
        "sync_writes {}",
        counter(&c, "sync_writes")?
    );
    drop((w, ws, wn, r));
    reload(&[])
}

/// After everything: every page mini_pipe pinned was unpinned (`/proc/vmstat`). The counters
/// are per-CPU, folded into the global ones now and then: writing /proc/sys/vm/stat_refresh
/// folds them at once.
fn pins_released() -> TestResult {
    if is_loaded() {
        unload()?;
    }
    let pins = || -> Result<(u64, u64), String> {
        std::fs::write("/proc/sys/vm/stat_refresh", b"1")
            .map_err(|e| format!("/proc/sys/vm/stat_refresh: {e}"))?;
        let vmstat = std::fs::read_to_string("/proc/vmstat").map_err(|e| e.to_string())?;
        let get = |key: &str| {
            vmstat
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                .ok_or(format!("no {key} in /proc/vmstat"))
        };
        Ok((get("nr_foll_pin_acquired ")?, get("nr_foll_pin_released ")?))
    };
    let (acquired, released) = pins()?;
    println!("# pins: {acquired} acquired, {released} released");
    ensure!(
        acquired == released,
        "{acquired} pins acquired, {released} released: {} left pinned",
        acquired.abs_diff(released)
    );
    reload(&[])
}
