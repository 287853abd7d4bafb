// SPDX-License-Identifier: GPL-2.0

//! The device model: one module, `pipes=N` independent pipes, each with its node, every node
//! carrying one of their numbers behaving the same whatever its history, and the counters each
//! pipe shows in debugfs and fdinfo.

use crate::{
    reliability::stress_on,
    util::{
        blocked_in_syscall, chrdev_major, ensure, is_loaded, meminfo_kib, open, open_within,
        reload, run, test, unload, wait_until, within, Helper, TestResult, DEV, KO,
    },
    Test,
};
use nix::{
    errno::Errno,
    libc,
    sys::stat::{major, makedev, minor, mknod, stat, Mode, SFlag},
};
use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(60);
/// The most pipes a load may ask for.
const MAX_PIPES: usize = 64;
/// Where a test makes a node by hand.
const HAND: &str = "/tmp/mini_pipe_hand";
/// The x86_64 number of openat, where an open that waits for a partner sleeps.
const SYS_OPENAT: u32 = 257;

pub fn tests() -> Vec<Test> {
    vec![
        test("devices_pipes_out_of_range", pipes_out_of_range),
        test("devices_nodes_named_and_numbered", nodes_named_and_numbered),
        test("devices_pipes_independent", pipes_independent),
        test("devices_hand_made_node", hand_made_node),
        test(
            "devices_opens_race_load_and_unload",
            opens_race_load_and_unload,
        ),
        test(
            "devices_unload_refused_while_any_pipe_open",
            unload_refused_while_any_pipe_open,
        ),
        test("devices_stress_several_pipes", stress_several_pipes),
        test(
            "devices_load_cycles_leave_nothing",
            load_cycles_leave_nothing,
        ),
        test("stats_count_a_rendezvous", stats_count_a_rendezvous),
        test("stats_count_sleeps_wakeups_and_eagain", stats_count_sleeps),
        test(
            "stats_fdinfo_shows_the_counters",
            stats_fdinfo_shows_the_counters,
        ),
        test("stats_watcher_prints_rates", stats_watcher_prints_rates),
        test(
            "stats_demo_tells_the_counters",
            stats_demo_tells_the_counters,
        ),
    ]
}

/// Pipe `i`'s name: `mini_pipe`, `mini_pipe1`, `mini_pipe2`, ...
pub fn name(i: usize) -> String {
    if i == 0 {
        "mini_pipe".into()
    } else {
        format!("mini_pipe{i}")
    }
}

/// Pipe `i`'s node.
pub fn node(i: usize) -> String {
    format!("/dev/{}", name(i))
}

/// Pipe `i`'s counters, from debugfs: `name: value` lines.
pub fn counters(i: usize) -> Result<HashMap<String, u64>, String> {
    let path = format!("/sys/kernel/debug/mini_pipe/{}", name(i));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_counters(&text, ": ").map_err(|e| format!("{path}: {e}\n{text}"))
}

/// `name SEP value` lines into a map; a line of another form is an error.
fn parse_counters(text: &str, sep: &str) -> Result<HashMap<String, u64>, String> {
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once(sep).ok_or(format!("line {l:?}"))?;
            let v = v.parse().map_err(|_| format!("value in {l:?}"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

fn get(c: &HashMap<String, u64>, key: &str) -> Result<u64, String> {
    c.get(key).copied().ok_or(format!("no {key} among {c:?}"))
}

fn unload_if_loaded() -> TestResult {
    if is_loaded() {
        unload()?;
    }
    Ok(())
}

/// pipes=0 or above 64: insmod fails with EINVAL, dmesg gives the range, nothing is left.
fn pipes_out_of_range() -> TestResult {
    unload_if_loaded()?;
    for bad in ["0", "65", "4294967295"] {
        let param = format!("pipes={bad}");
        let (st, out) = run("insmod", &[KO, &param], WAIT)?;
        ensure!(!st.success(), "insmod {param} succeeded");
        ensure!(
            out.contains("Invalid argument"),
            "insmod {param}: not EINVAL: {out}"
        );
        ensure!(
            !is_loaded() && stat(DEV).is_err() && chrdev_major().is_none(),
            "{param}: module, node or device numbers left behind"
        );
        let (_, dmesg) = run("dmesg", &[], WAIT)?;
        let said = format!("pipes={bad} is out of range: use 1 to {MAX_PIPES}");
        ensure!(dmesg.contains(&said), "dmesg does not say '{said}'");
    }
    reload(&[])
}

/// Every pipe of pipes=64 has its node, named predictably, with its own minor of the module's
/// major (as /proc/devices and sysfs say), mode 0600, and its counters file; the default load
/// has exactly /dev/mini_pipe.
fn nodes_named_and_numbered() -> TestResult {
    reload(&[&format!("pipes={MAX_PIPES}")])?;
    let maj = chrdev_major().ok_or("no mini_pipe in /proc/devices")?;
    for i in 0..MAX_PIPES {
        let n = node(i);
        wait_until(&format!("{n} exists"), WAIT, || stat(n.as_str()).is_ok())?;
        let st = stat(n.as_str()).map_err(|e| format!("stat {n}: {e}"))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        ensure!(kind == SFlag::S_IFCHR, "{n} is not a character device");
        ensure!(
            (major(st.st_rdev), minor(st.st_rdev)) == (maj, i as u64),
            "{n} is {}:{}, not {maj}:{i}",
            major(st.st_rdev),
            minor(st.st_rdev)
        );
        ensure!(st.st_mode & 0o777 == 0o600, "{n}: mode {:o}", st.st_mode);
        let sys = format!("/sys/class/mini_pipe/{}/dev", name(i));
        let dev = std::fs::read_to_string(&sys).map_err(|e| format!("{sys}: {e}"))?;
        ensure!(dev.trim() == format!("{maj}:{i}"), "{sys} says {dev}");
        let c = counters(i)?;
        ensure!(get(&c, "capacity")? == 65536, "{n}: counters {c:?}");
    }
    ensure!(
        stat(node(MAX_PIPES).as_str()).is_err(),
        "{} exists",
        node(MAX_PIPES)
    );
    reload(&[])?;
    ensure!(stat(DEV).is_ok(), "no {DEV} after the default load");
    ensure!(
        stat(node(1).as_str()).is_err(),
        "{} exists after the default load",
        node(1)
    );
    println!("# devices: {MAX_PIPES} nodes {} .. {}", node(0), node(63));
    Ok(())
}

/// Data never crosses between pipes: each keeps its own bytes, its own room and its own
/// partners, and one's last close does not touch another's data.
fn pipes_independent() -> TestResult {
    const N: usize = 4;
    const CAP: usize = 4096;
    reload(&[&format!("pipes={N}"), &format!("capacity={CAP}")])?;
    let mut files = Vec::new();
    for i in 0..N {
        let f = open(&node(i), true, true, libc::O_NONBLOCK)
            .map_err(|e| format!("{}: {e}", node(i)))?;
        files.push(f);
    }
    // Pipe i gets (i + 1) * 100 bytes of the value i.
    for (i, f) in files.iter_mut().enumerate() {
        let data = vec![i as u8; (i + 1) * 100];
        let n = f
            .write(&data)
            .map_err(|e| format!("write {}: {e}", node(i)))?;
        ensure!(n == data.len(), "{}: wrote {n}", node(i));
    }
    for (i, f) in files.iter().enumerate() {
        let q = crate::util::queued(f).map_err(|e| format!("FIONREAD: {e}"))?;
        ensure!(q as usize == (i + 1) * 100, "{}: {q} bytes queued", node(i));
    }
    // Fill pipe 0: pipe 1 keeps its room.
    let mut fill = vec![0u8; CAP];
    let room = CAP - 100;
    let n = files[0]
        .write(&fill[..room])
        .map_err(|e| format!("fill: {e}"))?;
    ensure!(n == room, "filled pipe 0 with {n}");
    let e = files[0].write(&fill[..1]).err().map(|e| e.kind());
    ensure!(e == Some(ErrorKind::WouldBlock), "full pipe 0: {e:?}");
    let n = files[1]
        .write(b"x")
        .map_err(|e| format!("pipe 1 after pipe 0 filled: {e}"))?;
    ensure!(n == 1, "pipe 1 took {n}");
    // Close pipe 0's only file: its bytes go, pipe 2's stay.
    drop(files.remove(0));
    for (j, f) in files.iter_mut().enumerate() {
        let i = j + 1;
        let want = (i + 1) * 100 + usize::from(i == 1);
        let n = f
            .read(&mut fill)
            .map_err(|e| format!("read {}: {e}", node(i)))?;
        ensure!(n == want, "{}: read {n} bytes, not {want}", node(i));
        ensure!(
            fill[..(i + 1) * 100].iter().all(|&b| b == i as u8),
            "{}: bytes of another pipe",
            node(i)
        );
    }
    let f = open(&node(0), true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let q = crate::util::queued(&f).map_err(|e| format!("FIONREAD: {e}"))?;
    ensure!(q == 0, "pipe 0 kept {q} bytes after its last close");
    for i in 0..N {
        let c = counters(i)?;
        let want = [CAP as u64, 201, 300, 400][i];
        ensure!(
            get(&c, "bytes_written")? == want,
            "{}: bytes_written {} (wrote {want})",
            node(i),
            get(&c, "bytes_written")?
        );
    }
    drop((f, files));
    reload(&[])
}

/// A node made by hand (mknod) for pipe 0's number while the module is away, and opened then
/// (ENXIO), behaves after the load exactly as /dev/mini_pipe: an open for writing waits for a
/// reader, one for reading waits for a writer, a non-blocking writer with no reader gets
/// ENXIO, and the bytes cross between the two nodes both ways. After the unload it says ENXIO
/// again.
fn hand_made_node() -> TestResult {
    reload(&[])?;
    let st = stat(DEV).map_err(|e| format!("stat {DEV}: {e}"))?;
    let (maj, min) = (major(st.st_rdev), minor(st.st_rdev));
    unload()?;
    let _ = std::fs::remove_file(HAND);
    mknod(
        HAND,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(maj, min),
    )
    .map_err(|e| format!("mknod {HAND}: {e}"))?;
    let e = open(HAND, true, true, libc::O_NONBLOCK)
        .err()
        .and_then(|e| e.raw_os_error());
    ensure!(
        e == Some(libc::ENXIO),
        "open of {HAND} while unloaded: {e:?}"
    );
    reload(&[])?;
    let st = stat(DEV).map_err(|e| format!("stat {DEV}: {e}"))?;
    ensure!(
        (major(st.st_rdev), minor(st.st_rdev)) == (maj, min),
        "the reload gave {DEV} another number ({}:{} after {maj}:{min}): the test cannot go on",
        major(st.st_rdev),
        minor(st.st_rdev)
    );
    // A writer through the hand-made node waits for a reader.
    let e = open(HAND, false, true, libc::O_NONBLOCK)
        .err()
        .and_then(|e| e.raw_os_error());
    ensure!(
        e == Some(libc::ENXIO),
        "non-blocking writer with no reader: {e:?}"
    );
    for (writer_by_hand, what) in [(true, "writer"), (false, "reader")] {
        let waiting = Helper::spawn(
            "open-rw",
            &[HAND.into(), (if writer_by_hand { "w" } else { "r" }).into()],
        )?;
        let pid = waiting.pid();
        wait_until(&format!("the {what} on {HAND} waits in open"), WAIT, || {
            blocked_in_syscall(pid, SYS_OPENAT)
        })?;
        let partner = open_within(DEV, writer_by_hand, !writer_by_hand, 0, WAIT)?;
        check_exchange(waiting, partner, writer_by_hand)
            .map_err(|e| format!("{what} by hand: {e}"))?;
    }
    unload()?;
    let e = open(HAND, true, true, libc::O_NONBLOCK)
        .err()
        .and_then(|e| e.raw_os_error());
    ensure!(
        e == Some(libc::ENXIO),
        "open of {HAND} after the unload: {e:?}"
    );
    let _ = std::fs::remove_file(HAND);
    println!("# devices: a node made by hand before the load waits and carries bytes both ways");
    reload(&[])
}

/// The helper `waiting` opened its end; `partner` is ours: the bytes go from writer to reader.
fn check_exchange(
    mut waiting: Helper,
    mut partner: std::fs::File,
    waiting_writes: bool,
) -> TestResult {
    let out = if waiting_writes {
        let mut buf = [0u8; 64];
        let n = within("read from the hand-made node's writer", WAIT, move || {
            partner.read(&mut buf).map(|n| buf[..n].to_vec())
        })?
        .map_err(|e| format!("read: {e}"))?;
        ensure!(n == b"by hand\n", "read {:?}", String::from_utf8_lossy(&n));
        waiting.output_within(WAIT)?
    } else {
        partner
            .write_all(b"to the hand\n")
            .map_err(|e| format!("write: {e}"))?;
        drop(partner);
        let out = waiting.output_within(WAIT)?;
        ensure!(out.contains("to the hand"), "the reader got {out:?}");
        out
    };
    ensure!(waiting.wait_within(WAIT)?.success(), "helper failed: {out}");
    Ok(())
}

/// Opens of the module's numbers racing its load and unload: each open fails cleanly (ENXIO,
/// or ENOENT for the node devtmpfs has not made yet) or gets a working pipe, and unloads are
/// refused while a file is open. The debug kernel's checks (KASAN, lockdep, kobject debugging)
/// see every step; the test fails on any report in the kernel log.
fn opens_race_load_and_unload() -> TestResult {
    const CYCLES: usize = 30;
    // Two pipes, one for each opener: pipe 1 through a node made by hand, pipe 0 through
    // /dev/mini_pipe.
    reload(&["pipes=2"])?;
    let st = stat(DEV).map_err(|e| format!("stat {DEV}: {e}"))?;
    let maj = major(st.st_rdev);
    let _ = std::fs::remove_file(HAND);
    mknod(
        HAND,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(maj, 1),
    )
    .map_err(|e| format!("mknod {HAND}: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (worked, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut openers = Vec::new();
    for path in [HAND, DEV] {
        let (stop, worked, failed) = (stop.clone(), worked.clone(), failed.clone());
        openers.push(thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::SeqCst) {
                match open(path, true, true, libc::O_NONBLOCK) {
                    Ok(mut f) => {
                        f.write_all(b"ping")
                            .map_err(|e| format!("{path}: write: {e}"))?;
                        let mut buf = [0u8; 8];
                        let n = f.read(&mut buf).map_err(|e| format!("{path}: read: {e}"))?;
                        if &buf[..n] != b"ping" {
                            return Err(format!("{path}: read back {:?}", &buf[..n]));
                        }
                        worked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::ENOENT)) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return Err(format!("{path}: open: {e}")),
                }
            }
            Ok(())
        }));
    }
    let mut result = Ok(());
    for i in 0..CYCLES {
        // An unload is refused while a file is open: ours, now, for certain.
        let held = open(DEV, true, true, libc::O_NONBLOCK);
        if let Ok(f) = held {
            let r = delete_module_now()?;
            drop(f);
            if r != Err(Errno::EWOULDBLOCK) {
                result = Err(format!("cycle {i}: delete_module with a file open: {r:?}"));
                break;
            }
        }
        // Then the openers' files come and go: retry, for at most 30 seconds, until an unload
        // gets in between.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match delete_module_now()? {
                Ok(()) => break,
                Err(Errno::EWOULDBLOCK) if std::time::Instant::now() < deadline => {
                    thread::sleep(Duration::from_micros(200))
                }
                Err(e) => {
                    result = Err(format!("cycle {i}: unload: {e}"));
                    break;
                }
            }
        }
        if result.is_err() {
            break;
        }
        let (st, out) = run("insmod", &[KO, "pipes=2"], WAIT)?;
        if !st.success() {
            result = Err(format!("cycle {i}: insmod: {out}"));
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in openers {
        t.join().map_err(|_| "an opener panicked")??;
    }
    result?;
    let _ = std::fs::remove_file(HAND);
    let (ok, bad) = (worked.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!("# devices: {CYCLES} unload/load cycles under opens: {ok} opens worked, {bad} failed cleanly");
    ensure!(ok > 0, "no open worked");
    reload(&[])
}

/// `delete_module(mini_pipe, O_NONBLOCK)`, bounded.
fn delete_module_now() -> Result<nix::Result<()>, String> {
    within("delete_module", WAIT, || {
        nix::kmod::delete_module(c"mini_pipe", nix::kmod::DeleteModuleFlags::O_NONBLOCK)
    })
}

/// With pipes=3, a file open on any one pipe, or a counters file open in debugfs, keeps the
/// module in: rmmod is refused until it is closed.
fn unload_refused_while_any_pipe_open() -> TestResult {
    let stats = format!("/sys/kernel/debug/mini_pipe/{}", name(1));
    let paths = [node(0), node(1), node(2), stats];
    for path in &paths {
        reload(&["pipes=3"])?;
        let f = if path.starts_with("/dev/") {
            open(path, true, true, libc::O_NONBLOCK)
        } else {
            open(path, true, false, 0)
        }
        .map_err(|e| format!("{path}: {e}"))?;
        let r = delete_module_now()?;
        ensure!(
            r == Err(Errno::EWOULDBLOCK),
            "delete_module with {path} open: {r:?}"
        );
        ensure!(is_loaded(), "unloaded with {path} open");
        drop(f);
        unload().map_err(|e| format!("after closing {path}: {e}"))?;
    }
    reload(&[])
}

/// Stress on four pipes at once: 2 writers x 2 readers of framed messages on each, nothing
/// lost, torn or crossed (each pipe's counters show its own bytes only).
fn stress_several_pipes() -> TestResult {
    const N: usize = 4;
    const PER_WRITER: u64 = 2048;
    const MSG: usize = 4096;
    reload(&[&format!("pipes={N}")])?;
    let runs: Vec<_> = (0..N)
        .map(|i| thread::spawn(move || stress_on(&node(i), 2, 2, MSG, PER_WRITER)))
        .collect();
    let mut total = 0;
    for (i, r) in runs.into_iter().enumerate() {
        let (bytes, lost, torn) = r.join().map_err(|_| "a stress thread panicked")??;
        ensure!(
            lost == 0 && torn == 0,
            "{}: {lost} lost or duplicated, {torn} torn",
            node(i)
        );
        let want = 2 * PER_WRITER * MSG as u64;
        ensure!(
            bytes == want,
            "{}: {bytes} bytes received of {want}",
            node(i)
        );
        let c = counters(i)?;
        ensure!(
            get(&c, "bytes_written")? == want && get(&c, "bytes_read")? == want,
            "{}: counters {c:?}",
            node(i)
        );
        total += bytes;
    }
    println!(
        "# stress: {N} pipes at once, 2 writers x 2 readers each: {} MiB, 0 lost, 0 torn",
        total >> 20
    );
    reload(&[])
}

/// 100 load/unload cycles with pipes=64, I/O on the last pipe of each: nothing is left behind
/// (module, nodes, class, device numbers, debugfs directory, rings).
///
/// On the debug kernel a cycle of 64 pipes takes over 3 seconds (KASAN, lockdep and kmemleak
/// watch every node, debugfs file and ring), so it runs 10 cycles there: the count is the
/// standard kernel's business, the debug kernel checks each step's memory safety and leaks.
fn load_cycles_leave_nothing() -> TestResult {
    let cycles = if crate::reliability::kasan_kernel() {
        10
    } else {
        100
    };
    /// VmallocUsed may move this much for other reasons (vmap'ed stacks of exiting processes).
    const VMALLOC_SLACK: u64 = 4 << 10;
    reload(&[])?;
    unload()?;
    let vm0 = meminfo_kib("VmallocUsed:")?;
    let param = format!("pipes={MAX_PIPES}");
    let last = node(MAX_PIPES - 1);
    for i in 0..cycles {
        let (st, out) = run("insmod", &[KO, &param], WAIT)?;
        ensure!(st.success(), "cycle {i}: insmod {param}: {out}");
        wait_until(&format!("{last} exists"), WAIT, || {
            stat(last.as_str()).is_ok()
        })?;
        let mut f = open(&last, true, true, libc::O_NONBLOCK)
            .map_err(|e| format!("cycle {i}: open {last}: {e}"))?;
        f.write_all(b"cycle")
            .map_err(|e| format!("cycle {i}: write: {e}"))?;
        let mut buf = [0u8; 8];
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cycle {i}: read: {e}"))?;
        ensure!(
            &buf[..n] == b"cycle",
            "cycle {i}: read back {:?}",
            &buf[..n]
        );
        drop(f);
        unload().map_err(|e| format!("cycle {i}: {e}"))?;
        let left: Vec<String> = [
            (chrdev_major().is_some(), "mini_pipe in /proc/devices"),
            (
                Path::new("/sys/class/mini_pipe").exists(),
                "/sys/class/mini_pipe",
            ),
            (
                Path::new("/sys/kernel/debug/mini_pipe").exists(),
                "/sys/kernel/debug/mini_pipe",
            ),
            (stat(DEV).is_ok(), DEV),
            (stat(last.as_str()).is_ok(), last.as_str()),
        ]
        .iter()
        .filter(|(there, _)| *there)
        .map(|(_, what)| what.to_string())
        .collect();
        ensure!(
            left.is_empty(),
            "cycle {i}: left behind after unload: {left:?}"
        );
    }
    let vm = meminfo_kib("VmallocUsed:")?;
    ensure!(
        vm <= vm0 + VMALLOC_SLACK,
        "VmallocUsed {vm0} KiB -> {vm} KiB after {cycles} cycles of {MAX_PIPES} pipes"
    );
    println!("# lifecycle: {cycles} cycles of pipes={MAX_PIPES}, nothing left; VmallocUsed {vm0} -> {vm} KiB");
    reload(&[])
}

/// cat and echo meeting in the pipe, as in `make demo`, counted: the reader waited in open for
/// a writer, the writer's bytes went in with one write, the reader took them and then saw
/// end-of-file.
fn stats_count_a_rendezvous() -> TestResult {
    reload(&[])?;
    let reader = Helper::spawn("open-rw", &[DEV.into(), "r".into()])?;
    let pid = reader.pid();
    wait_until("the reader waits in open", WAIT, || {
        blocked_in_syscall(pid, SYS_OPENAT)
    })?;
    let c = counters(0)?;
    ensure!(get(&c, "open_waits")? == 1, "while the reader waits: {c:?}");
    let mut w = open_within(DEV, false, true, 0, WAIT)?;
    let rd0 = get(&counters(0)?, "rd_wakeups")?;
    w.write_all(b"to the hand\n")
        .map_err(|e| format!("write: {e}"))?;
    drop(w);
    let mut reader = reader;
    let out = reader.output_within(WAIT)?;
    ensure!(reader.wait_within(WAIT)?.success(), "reader failed: {out}");
    let c = counters(0)?;
    for (key, want) in [
        ("bytes_written", 12),
        ("bytes_read", 12),
        ("writes", 1),
        ("open_waits", 1),
        ("readers", 0),
        ("writers", 0),
        ("queued", 0),
        ("eagain", 0),
    ] {
        ensure!(
            get(&c, key)? == want,
            "{key} is {}, not {want}: {c:?}",
            get(&c, key)?
        );
    }
    // The bytes went through the ring, or, on one CPU if the reader was already waiting in
    // read, straight into its buffer.
    let (peak, direct) = (get(&c, "peak_queued")?, get(&c, "bytes_direct")?);
    ensure!(
        (peak, direct) == (12, 0) || (peak, direct) == (0, 12),
        "peak_queued {peak} and bytes_direct {direct}: not the 12 bytes either way: {c:?}"
    );
    // The reader read until end-of-file: at least the data and the 0.
    ensure!(get(&c, "reads")? >= 2, "reads: {c:?}");
    // The write into the empty ring woke the readers' queue (the open's wakeup came before).
    ensure!(get(&c, "rd_wakeups")? > rd0, "the write woke nobody: {c:?}");
    reload(&[])
}

/// A reader asleep on an empty pipe shows in readers_asleep and reader_sleeps, the write that
/// wakes it in rd_wakeups; a writer asleep on a full one in writers_asleep, the read that
/// wakes it in wr_wakeups; non-blocking calls that would wait count in eagain.
fn stats_count_sleeps() -> TestResult {
    reload(&["capacity=4096"])?;
    let mut rw = open(DEV, true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 8192];
    let e = rw.read(&mut buf).err().map(|e| e.kind());
    ensure!(
        e == Some(ErrorKind::WouldBlock),
        "read of the empty pipe: {e:?}"
    );
    let eagain = get(&counters(0)?, "eagain")?;
    ensure!(eagain == 1, "eagain {eagain} after one EAGAIN");
    // A reader asleep.
    let reader = Helper::spawn("open-rw", &[DEV.into(), "r".into()])?;
    let c = asleep(&reader, crate::util::SYS_READ, "reader")?;
    let rd0 = get(&c, "rd_wakeups")?;
    rw.write_all(b"wake up\n")
        .map_err(|e| format!("write: {e}"))?;
    wait_until("the reader took the bytes", WAIT, || {
        counters(0).is_ok_and(|c| c.get("bytes_read") == Some(&8))
    })?;
    let c = counters(0)?;
    ensure!(get(&c, "rd_wakeups")? > rd0, "the write woke nobody: {c:?}");
    let mut reader = reader;
    drop(rw);
    let out = reader.output_within(WAIT)?;
    ensure!(reader.wait_within(WAIT)?.success(), "reader failed: {out}");
    // A writer asleep on a full pipe.
    let mut r = open(DEV, true, false, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let writer = Helper::spawn("write", &["1".into(), "8192".into(), "0".into()])?;
    let c = asleep(&writer, crate::util::SYS_WRITE, "writer")?;
    ensure!(get(&c, "peak_queued")? == 4096, "peak: {c:?}");
    let wr0 = get(&c, "wr_wakeups")?;
    let mut got = 0;
    while got < 8192 {
        match r.read(&mut buf) {
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                wait_until("more bytes", WAIT, || {
                    crate::util::queued(&r).is_ok_and(|q| q > 0)
                })?;
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let mut writer = writer;
    let out = writer.output_within(WAIT)?;
    ensure!(writer.wait_within(WAIT)?.success(), "writer failed: {out}");
    let c = counters(0)?;
    ensure!(
        get(&c, "wr_wakeups")? > wr0 && get(&c, "writers_asleep")? == 0,
        "after the reads: {c:?}"
    );
    drop(r);
    reload(&[])
}

/// Waits until `helper`, a `side` ("reader" or "writer"), sleeps in system call `nr`; then
/// pipe 0's counters must show it asleep, and its sleep counted. Returns the counters.
fn asleep(helper: &Helper, nr: u32, side: &str) -> Result<HashMap<String, u64>, String> {
    let pid = helper.pid();
    wait_until(&format!("the {side} sleeps"), WAIT, || {
        blocked_in_syscall(pid, nr)
    })?;
    let c = counters(0)?;
    let (now, times, calls) = match side {
        "reader" => ("readers_asleep", "reader_sleeps", "reads_slept"),
        _ => ("writers_asleep", "writer_sleeps", "writes_slept"),
    };
    ensure!(
        get(&c, now)? == 1 && get(&c, times)? >= 1 && get(&c, calls)? >= 1,
        "with a {side} asleep: {c:?}"
    );
    Ok(c)
}

/// fdinfo shows the same counters as debugfs, for the file's own pipe, in the VFS's
/// `name:\tvalue` form.
fn stats_fdinfo_shows_the_counters() -> TestResult {
    reload(&["pipes=2"])?;
    let mut f = open(&node(1), true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    f.write_all(b"12345").map_err(|e| format!("write: {e}"))?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .map_err(|e| format!("fdinfo: {e}"))?;
    // The VFS's own lines first (pos, flags, mnt_id, ino), then the pipe's.
    let ours: String = info
        .lines()
        .skip_while(|l| !l.starts_with("capacity:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let from_fdinfo = parse_counters(&ours, ":\t")?;
    let from_debugfs = counters(1)?;
    ensure!(
        from_fdinfo == from_debugfs,
        "fdinfo {from_fdinfo:?}\ndebugfs {from_debugfs:?}"
    );
    ensure!(get(&from_fdinfo, "bytes_written")? == 5, "fdinfo: {info}");
    ensure!(
        get(&counters(0)?, "bytes_written")? == 0,
        "pipe 0 saw pipe 1's bytes"
    );
    drop(f);
    reload(&[])
}

/// scripts/watch.sh prints a line per pipe per second with the rates and the sleepers.
fn stats_watcher_prints_rates() -> TestResult {
    reload(&["pipes=2"])?;
    let watch = "/tests/watch.sh";
    ensure!(Path::new(watch).exists(), "no {watch} in the guest");
    let mut w = open(&node(1), true, true, libc::O_NONBLOCK).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let mover = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while !s.load(Ordering::SeqCst) {
            let _ = w.write(&buf);
            let _ = w.read(&mut buf);
        }
    });
    let out = run("sh", &[watch, "-n", "3"], WAIT);
    stop.store(true, Ordering::SeqCst);
    mover.join().map_err(|_| "the mover panicked")?;
    let (st, out) = out?;
    ensure!(st.success(), "watch.sh failed: {out}");
    let lines: Vec<&str> = out.lines().collect();
    let of = |n: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{n} ")))
            .count()
    };
    ensure!(
        of("mini_pipe") == 3 && of("mini_pipe1") == 3,
        "not one line per pipe per second for 3 seconds:\n{out}"
    );
    let busy = lines
        .iter()
        .rfind(|l| l.starts_with("mini_pipe1 "))
        .ok_or("no line for mini_pipe1")?;
    let idle = lines
        .iter()
        .rfind(|l| l.starts_with("mini_pipe "))
        .ok_or("no line for mini_pipe")?;
    let rate = |l: &str| -> Option<u64> {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("in=")?.strip_suffix("B/s")?.parse().ok())
    };
    ensure!(
        rate(busy).is_some_and(|r| r > 0),
        "busy pipe's line: {busy}\n{out}"
    );
    ensure!(rate(idle) == Some(0), "idle pipe's line: {idle}\n{out}");
    println!("# watch.sh: {busy}");
    reload(&[])
}

/// `make demo`'s guest script runs to its end: cat and echo meet, and the counters are told as
/// a sentence with the bytes that moved.
fn stats_demo_tells_the_counters() -> TestResult {
    reload(&[])?;
    let (st, out) = run("sh", &["/tests/demo.sh"], WAIT)?;
    ensure!(st.success(), "demo.sh failed: {out}");
    // The sentence is folded into `#   ` lines: join them again.
    let words = out.replace("\n#   ", "");
    ensure!(
        out.lines().any(|l| l == "hi")
            && words.contains("# In words: cat opened first")
            && words.contains("3 bytes moved, in 1 write"),
        "demo.sh did not tell the counters:\n{out}"
    );
    reload(&[])
}
