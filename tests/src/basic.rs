// SPDX-License-Identifier: GPL-2.0

//! The foundation tests: the module loads and unloads, the node is a character device, bytes get
//! through intact, readers and writers block and wake as a pipe's do.

use crate::{
    util::{
        blocked_in_syscall, ensure, is_loaded, open, open_within, pattern, reload, run, test,
        wait_until, within, Helper, TestResult, DEV, KO, SYS_READ, SYS_WRITE,
    },
    Test,
};
use nix::{
    errno::Errno,
    fcntl::{fcntl, FcntlArg, OFlag},
    libc,
    poll::PollFlags,
    sys::{
        epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
        select::{select, FdSet},
        signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
        stat::{major, minor, stat, SFlag},
        time::TimeVal,
    },
    unistd::Pid,
};
use std::{
    fs::File,
    io::{Read, Write},
    os::fd::{AsFd, AsRawFd},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

pub fn tests() -> Vec<Test> {
    vec![
        test("device_node", device_node),
        test("rmmod_insmod", rmmod_insmod),
        test("capacity_out_of_range", capacity_out_of_range),
        test("cat_echo_rendezvous", cat_echo_rendezvous),
        test("writer_blocks_at_capacity", writer_blocks_at_capacity),
        test("bulk_16mib_intact", bulk_16mib_intact),
        test("signal_interrupts_read", signal_interrupts_read),
        test("nonblock_eagain", nonblock_eagain),
        test("eof_after_last_writer", eof_after_last_writer),
        test("epipe_without_reader", epipe_without_reader),
        test("fdinfo_shows_state", fdinfo_shows_state),
        test(
            "poll_reports_only_documented_events",
            poll_reports_only_documented_events,
        ),
        test("fuzz", crate::fuzz::test),
    ]
}

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(240);

/// Bytes queued in the pipe, by FIONREAD on `f`.
fn queued(f: &impl AsRawFd) -> Result<i32, String> {
    crate::util::queued(f).map_err(|e| format!("FIONREAD: {e}"))
}

/// The device's dev_t as the kernel publishes it in sysfs: "MAJOR:MINOR".
fn sysfs_dev() -> Option<String> {
    std::fs::read_to_string("/sys/class/mini_pipe/mini_pipe/dev")
        .ok()
        .map(|s| s.trim().to_string())
}

/// /dev/mini_pipe is a character device with the module's own major (/proc/devices) and
/// minor 0, as sysfs says, mode 0600.
fn device_node() -> TestResult {
    reload(&[])?;
    let st = stat(DEV).map_err(|e| format!("stat {DEV}: {e}"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    ensure!(
        kind == SFlag::S_IFCHR,
        "{DEV} is not a character device (mode {:o})",
        st.st_mode
    );
    let (maj, min) = (major(st.st_rdev), minor(st.st_rdev));
    let proc_major = crate::util::chrdev_major().ok_or("no mini_pipe in /proc/devices")?;
    ensure!(
        (maj, min) == (proc_major, 0),
        "node is {maj}:{min}, /proc/devices says major {proc_major}"
    );
    let published = sysfs_dev().ok_or("no /sys/class/mini_pipe/mini_pipe/dev")?;
    ensure!(
        published == format!("{maj}:{min}"),
        "node is {maj}:{min}, sysfs says {published}"
    );
    ensure!(
        st.st_mode & 0o777 == 0o600,
        "permissions are {:o}, not 600",
        st.st_mode & 0o777
    );
    Ok(())
}

/// rmmod removes the node, insmod brings it back, and the device works after the cycle.
fn rmmod_insmod() -> TestResult {
    reload(&[])?;
    let (st, out) = run("rmmod", &["mini_pipe"], SHORT)?;
    ensure!(st.success(), "rmmod failed: {out}");
    ensure!(!is_loaded(), "mini_pipe still in /proc/modules after rmmod");
    wait_until("the node is gone", SHORT, || stat(DEV).is_err())?;
    let (st, out) = run("insmod", &[KO], SHORT)?;
    ensure!(st.success(), "insmod failed: {out}");
    wait_until("the node is back", SHORT, || stat(DEV).is_ok())?;
    // Non-blocking, so that a broken device fails the calls instead of hanging them.
    let mut f =
        open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| format!("open after reload: {e}"))?;
    let n = f.write(b"again").map_err(|e| format!("write: {e}"))?;
    ensure!(n == 5, "write of 5 bytes wrote {n}");
    let mut buf = [0u8; 8];
    let n = f.read(&mut buf).map_err(|e| format!("read: {e}"))?;
    ensure!(&buf[..n] == b"again", "read back {:?}", &buf[..n]);
    Ok(())
}

/// A capacity above the limit: insmod fails with EINVAL, dmesg says why, no node appears. 0 (a
/// rendezvous channel), 1 and the limit load.
fn capacity_out_of_range() -> TestResult {
    if is_loaded() {
        let (st, out) = run("rmmod", &["mini_pipe"], SHORT)?;
        ensure!(st.success(), "rmmod failed: {out}");
    }
    for bad in ["16777217", "18446744073709551615"] {
        let param = format!("capacity={bad}");
        let (st, out) = run("insmod", &[KO, &param], SHORT)?;
        ensure!(!st.success(), "insmod {param} succeeded");
        ensure!(
            out.contains("Invalid argument") || out.contains("EINVAL"),
            "insmod {param}: {out}"
        );
        ensure!(
            !is_loaded() && stat(DEV).is_err(),
            "{param}: module or node present"
        );
        let (_, dmesg) = run("dmesg", &[], SHORT)?;
        let said = format!("capacity={bad} is out of range");
        ensure!(dmesg.contains(&said), "dmesg does not say '{said}'");
    }
    for good in ["0", "1", "16777216"] {
        reload(&[&format!("capacity={good}")])?;
    }
    reload(&[])
}

/// `cat /dev/mini_pipe` waits for a writer; `echo hi > /dev/mini_pipe` reaches it; the cat
/// sees end-of-file when echo closes and exits.
fn cat_echo_rendezvous() -> TestResult {
    reload(&[])?;
    let cat = Command::new("cat")
        .arg(DEV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cat: {e}"))?;
    let mut cat = Helper::new(cat);
    let (st, out) = run("sh", &["-c", &format!("echo hi > {DEV}")], SHORT)?;
    ensure!(st.success(), "echo failed: {out}");
    let got = cat.output_within(SHORT)?;
    ensure!(got == "hi\n", "cat printed {got:?}, not \"hi\\n\"");
    let st = cat.wait_within(SHORT)?;
    ensure!(st.success(), "cat exited with {st}");
    Ok(())
}

/// The seeds' scenario, capacity=128: a writer's 200-byte write fills the ring and blocks;
/// only then does the reader start, reading 64 bytes at a time; all 200 bytes arrive intact.
fn writer_blocks_at_capacity() -> TestResult {
    reload(&["capacity=128"])?;
    // Open the read side without waiting, so that the writer's open does not wait either.
    let mut rd = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| format!("open: {e}"))?;
    let mut writer = Helper::spawn("write", &["7".into(), "200".into(), "0".into()])?;
    wait_until("the writer sleeps in write()", SHORT, || {
        blocked_in_syscall(writer.pid(), SYS_WRITE)
    })?;
    // The reader has not read a byte, the writer is asleep, and the ring is full.
    ensure!(
        queued(&rd)? == 128,
        "{} bytes queued while the writer sleeps, not 128",
        queued(&rd)?
    );
    ensure!(
        blocked_in_syscall(writer.pid(), SYS_WRITE),
        "the writer woke up with no reader"
    );
    fcntl(&rd, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| e.to_string())?;
    // Blocking reads until end-of-file, on a thread of their own with a deadline.
    let got = within("reading the 200 bytes to end-of-file", SHORT, move || {
        let mut got = Vec::new();
        let mut chunk = [0u8; 64];
        loop {
            let n = rd
                .read(&mut chunk)
                .map_err(|e| format!("read after {}: {e}", got.len()))?;
            if n == 0 {
                return Ok(got);
            }
            ensure!(got.len() + n <= 200, "more than 200 bytes arrived");
            got.extend_from_slice(&chunk[..n]);
        }
    })??;
    let mut want = vec![0u8; 200];
    pattern(7, 0, &mut want);
    ensure!(got == want, "the 200 bytes differ from what was written");
    let out = writer.output_within(SHORT)?;
    ensure!(out.trim() == "200", "the writer reports {:?}", out.trim());
    let st = writer.wait_within(SHORT)?;
    ensure!(st.success(), "writer exited with {st}");
    reload(&[])
}

/// 16 MiB from one process to another: every byte checked, in odd-sized writes.
fn bulk_16mib_intact() -> TestResult {
    reload(&[])?;
    const TOTAL: u64 = 16 << 20;
    const SEED: u64 = 16;
    let mut writer = Helper::spawn(
        "write",
        &[SEED.to_string(), TOTAL.to_string(), "4099".into()],
    )?;
    // The blocking open (it waits for the writer) and reads, with a deadline.
    let (off, sum) = within("reading 16 MiB to end-of-file", LONG, move || {
        let mut rd = open(DEV, true, false, 0).map_err(|e| format!("open: {e}"))?;
        let mut buf = vec![0u8; 65536];
        let mut want = vec![0u8; 65536];
        let mut off = 0u64;
        let mut sum = 0u64;
        loop {
            let n = rd
                .read(&mut buf)
                .map_err(|e| format!("read at {off}: {e}"))?;
            if n == 0 {
                return Ok((off, sum));
            }
            pattern(SEED, off, &mut want[..n]);
            ensure!(
                buf[..n] == want[..n],
                "bytes {off}..{} differ from what was written",
                off + n as u64
            );
            sum = buf[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(b as u64));
            off += n as u64;
        }
    })??;
    ensure!(off == TOTAL, "read {off} bytes, not {TOTAL}");
    let out = writer.output_within(LONG)?;
    ensure!(
        out.trim() == TOTAL.to_string(),
        "the writer reports {:?}",
        out.trim()
    );
    ensure!(writer.wait_within(SHORT)?.success(), "writer failed");
    println!("# bulk_16mib_intact: {TOTAL} bytes, checksum {sum:016x}");
    Ok(())
}

/// A signal ends a blocked read: with a handler and no SA_RESTART, read fails with EINTR.
fn signal_interrupts_read() -> TestResult {
    reload(&[])?;
    let mut reader = Helper::spawn("read-until-signal", &[])?;
    wait_until("the reader sleeps in read()", SHORT, || {
        blocked_in_syscall(reader.pid(), SYS_READ)
    })?;
    kill(Pid::from_raw(reader.pid() as i32), Signal::SIGUSR1).map_err(|e| e.to_string())?;
    let out = reader.output_within(SHORT)?;
    ensure!(out.trim() == "EINTR", "the reader reports {:?}", out.trim());
    ensure!(reader.wait_within(SHORT)?.success(), "reader failed");
    Ok(())
}

/// O_NONBLOCK: a read of an empty pipe and a write into a full one fail with EAGAIN and move
/// nothing; a non-atomic write into a nearly full pipe moves what fits.
fn nonblock_eagain() -> TestResult {
    reload(&["capacity=128"])?;
    let mut f = open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let err = f.read(&mut [0u8; 8]).err().and_then(|e| e.raw_os_error());
    ensure!(
        err == Some(libc::EAGAIN),
        "read of an empty pipe: {err:?}, not EAGAIN"
    );
    ensure!(
        f.write(&[1u8; 100]).map_err(|e| e.to_string())? == 100,
        "first write short"
    );
    // 100 bytes is atomic (<= capacity): 28 bytes of room is not enough, so EAGAIN.
    let err = f.write(&[2u8; 100]).err().and_then(|e| e.raw_os_error());
    ensure!(
        err == Some(libc::EAGAIN),
        "atomic write without room: {err:?}, not EAGAIN"
    );
    ensure!(queued(&f)? == 100, "the failed write moved bytes");
    // 200 bytes is larger than the capacity, so not atomic: it takes the 28 bytes of room.
    let n = f.write(&[3u8; 200]).map_err(|e| e.to_string())?;
    ensure!(n == 28, "non-atomic write into 28 bytes of room wrote {n}");
    let err = f.write(&[4u8; 1]).err().and_then(|e| e.raw_os_error());
    ensure!(
        err == Some(libc::EAGAIN),
        "write into a full pipe: {err:?}, not EAGAIN"
    );
    drop(f);
    reload(&[])
}

/// A blocked reader sees end-of-file (0) when the last writer closes.
fn eof_after_last_writer() -> TestResult {
    reload(&[])?;
    let mut writer = Helper::spawn("write", &["1".into(), "10".into(), "0".into()])?;
    // The blocking open and reads, with a deadline (the thread gives up on EINTR, which is
    // how `within` ends a read that did not end by itself).
    let got = within("reading to end-of-file", SHORT, move || {
        let mut rd = open(DEV, true, false, 0).map_err(|e| format!("open: {e}"))?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        loop {
            match rd.read(&mut buf[got..]) {
                Ok(0) => return Ok::<_, String>(got),
                Ok(n) => got += n,
                Err(e) => return Err(format!("read after {got}: {e}")),
            }
        }
    })??;
    ensure!(got == 10, "read {got} bytes before end-of-file, not 10");
    ensure!(writer.wait_within(SHORT)?.success(), "writer failed");
    Ok(())
}

/// A write with no reader left fails with EPIPE and raises SIGPIPE.
fn epipe_without_reader() -> TestResult {
    reload(&[])?;
    let rd = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut wr = open_within(DEV, false, true, 0, SHORT)?;
    drop(rd);
    SIGPIPE_SEEN.store(false, Ordering::SeqCst);
    let act = SigAction::new(
        SigHandler::Handler(on_sigpipe),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: The handler only stores to an atomic, which is async-signal-safe.
    let old = unsafe { sigaction(Signal::SIGPIPE, &act) }.map_err(|e| e.to_string())?;
    // SIGPIPE goes to the thread that writes, and the handler runs there.
    let err = within("a write with no reader", SHORT, move || {
        wr.write(b"x").err().and_then(|e| e.raw_os_error())
    });
    // SAFETY: Restores the disposition the Rust runtime had set (SIG_IGN).
    unsafe { sigaction(Signal::SIGPIPE, &old) }.map_err(|e| e.to_string())?;
    let err = err?;
    ensure!(
        err == Some(libc::EPIPE),
        "write without a reader: {err:?}, not EPIPE"
    );
    ensure!(SIGPIPE_SEEN.load(Ordering::SeqCst), "no SIGPIPE was raised");
    Ok(())
}

static SIGPIPE_SEEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigpipe(_: i32) {
    SIGPIPE_SEEN.store(true, Ordering::SeqCst);
}

/// /proc/PID/fdinfo/FD shows the capacity, the bytes queued and the readers and writers.
fn fdinfo_shows_state() -> TestResult {
    reload(&["capacity=4096"])?;
    let mut f = open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let n = f.write(b"12345").map_err(|e| e.to_string())?;
    ensure!(n == 5, "write of 5 bytes wrote {n}");
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .map_err(|e| format!("fdinfo: {e}"))?;
    for want in [
        "capacity:\t4096\n",
        "queued:\t5\n",
        "readers:\t2\n",
        "writers:\t1\n",
    ] {
        ensure!(info.contains(want), "fdinfo lacks {want:?}:\n{info}");
    }
    drop((f, r));
    reload(&[])
}

/// The events mini_pipe must never report, even when asked for: it has no urgent data
/// (POLLPRI, so select's exceptfds), no priority bands (POLLRDBAND, POLLWRBAND) and no
/// half-close (POLLRDHUP), as pipe_poll.
const NEVER: i16 = libc::POLLPRI | libc::POLLRDHUP | libc::POLLRDBAND | libc::POLLWRBAND;
/// What the tests ask poll and epoll for: the documented events and the never-reported ones.
const ASKED: i16 = libc::POLLIN | libc::POLLRDNORM | libc::POLLOUT | libc::POLLWRNORM | NEVER;
/// The documented events (README, DIFF.md "poll, select, epoll"): data queued, room for an
/// atomic write, no writer left (a reader), no reader left (a writer).
const IN: i16 = libc::POLLIN | libc::POLLRDNORM;
const OUT: i16 = libc::POLLOUT | libc::POLLWRNORM;
const HUP: i16 = libc::POLLHUP;
const ERR: i16 = libc::POLLERR;

fn events(bits: i16) -> String {
    format!("{:?}", PollFlags::from_bits_retain(bits))
}

/// What poll, epoll and select report for `f` now (zero timeouts: nothing waits) must be
/// exactly `want`, with every event asked for.
fn expect_events(f: &impl AsFd, what: &str, want: i16) -> TestResult {
    let mut p = libc::pollfd {
        fd: f.as_fd().as_raw_fd(),
        events: ASKED,
        revents: 0,
    };
    // SAFETY: One valid pollfd, and a zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    ensure!(n >= 0, "{what}: poll: {}", Errno::last());
    ensure!(
        p.revents & NEVER == 0,
        "{what}: poll reports {}, which mini_pipe must never report",
        events(p.revents & NEVER)
    );
    ensure!(
        p.revents == want,
        "{what}: poll reports {}, not the documented {}",
        events(p.revents),
        events(want)
    );
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| e.to_string())?;
    let asked = EpollFlags::from_bits_retain(ASKED as u16 as i32);
    ep.add(f.as_fd(), EpollEvent::new(asked, 0))
        .map_err(|e| format!("{what}: epoll_ctl: {e}"))?;
    let mut evs = [EpollEvent::empty()];
    let n = ep
        .wait(&mut evs, EpollTimeout::ZERO)
        .map_err(|e| format!("{what}: epoll_wait: {e}"))?;
    let got = if n == 1 { evs[0].events().bits() } else { 0 };
    ensure!(
        got == i32::from(want as u16),
        "{what}: epoll reports {:?}, not the documented {}",
        EpollFlags::from_bits_retain(got),
        events(want)
    );
    let mut except = FdSet::new();
    except.insert(f.as_fd());
    let mut tv = TimeVal::new(0, 0);
    select(None, None, None, Some(&mut except), Some(&mut tv))
        .map_err(|e| format!("{what}: select: {e}"))?;
    ensure!(
        !except.contains(f.as_fd()),
        "{what}: select reports an exceptional condition (POLLPRI)"
    );
    Ok(())
}

/// One non-blocking write of `n` bytes, which must all go in.
fn put(mut f: &File, n: usize) -> TestResult {
    let w = f
        .write(&vec![b'p'; n])
        .map_err(|e| format!("write {n}: {e}"))?;
    ensure!(w == n, "write of {n} bytes wrote {w}");
    Ok(())
}

/// One non-blocking read of `n` bytes, which must all be there.
fn take(mut f: &File, n: usize) -> TestResult {
    let r = f
        .read(&mut vec![0u8; n])
        .map_err(|e| format!("read {n}: {e}"))?;
    ensure!(r == n, "read of {n} bytes read {r}");
    Ok(())
}

/// poll, epoll and select report exactly the documented events and never POLLPRI, POLLRDHUP,
/// POLLRDBAND or POLLWRBAND, though every one of them is asked for: on reader, writer and
/// O_RDWR files, empty, with some data, around the PIPE_BUF threshold, full, and after the
/// writers or the reader have gone.
fn poll_reports_only_documented_events() -> TestResult {
    const CAP: usize = 8192;
    reload(&[&format!("capacity={CAP}")])?;
    let nb = libc::O_NONBLOCK;
    let openf = |r: bool, w: bool| open(DEV, r, w, nb).map_err(|e| format!("open: {e}"));
    let r = openf(true, false)?;
    expect_events(&r, "reader, no writer yet", 0)?;
    let w = openf(false, true)?;
    let rw = openf(true, true)?;
    let all = |state: &str, rm: i16, wm: i16, rwm: i16| -> TestResult {
        expect_events(&r, &format!("reader, {state}"), rm)?;
        expect_events(&w, &format!("writer, {state}"), wm)?;
        expect_events(&rw, &format!("O_RDWR, {state}"), rwm)
    };
    all("empty", 0, OUT, OUT)?;
    put(&w, 1)?;
    all("1 byte queued", IN, OUT, IN | OUT)?;
    put(&w, CAP - 4096 - 1)?;
    all("4096 bytes of room", IN, OUT, IN | OUT)?;
    put(&w, 1)?;
    all("4095 bytes of room", IN, 0, IN)?;
    put(&w, 4095)?;
    all("full", IN, 0, IN)?;
    // The writers go: the reader sees POLLHUP, with data and once drained.
    drop(rw);
    expect_events(&r, "reader, full, a writer left", IN)?;
    drop(w);
    expect_events(&r, "reader, full, no writer", IN | HUP)?;
    take(&r, CAP)?;
    expect_events(&r, "reader, drained, no writer", HUP)?;
    // A writer again: no POLLHUP. Filled, then the reader goes: POLLERR.
    let w = openf(false, true)?;
    expect_events(&r, "reader, empty, a writer again", 0)?;
    put(&w, CAP)?;
    expect_events(&w, "writer, full", 0)?;
    drop(r);
    expect_events(&w, "writer, full, no reader", ERR)?;
    let r = openf(true, false)?;
    expect_events(&r, "reader, full, a writer", IN)?;
    expect_events(&w, "writer, full, a reader again", 0)?;
    take(&r, 4096)?;
    drop(r);
    expect_events(&w, "writer, 4096 bytes of room, no reader", OUT | ERR)?;
    // An O_RDWR file is a reader and a writer: never POLLHUP nor POLLERR.
    let rw = openf(true, true)?;
    expect_events(&w, "writer, 4096 bytes of room, an O_RDWR reader", OUT)?;
    expect_events(&rw, "O_RDWR, 4096 bytes queued, a writer", IN | OUT)?;
    drop(w);
    expect_events(&rw, "O_RDWR alone, 4096 bytes queued", IN | OUT)?;
    take(&rw, 4096)?;
    expect_events(&rw, "O_RDWR alone, empty", OUT)?;
    put(&rw, CAP)?;
    expect_events(&rw, "O_RDWR alone, full", IN)?;
    drop(rw);
    reload(&[])
}
