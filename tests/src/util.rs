// SPDX-License-Identifier: GPL-2.0

//! What the tests share: the device, module reloads, helper processes, bounded waits, and a
//! reproducible byte stream.
//!
//! Every wait is bounded. A call that may block on the device runs in a helper process
//! ([`Helper`]) or on a thread of its own ([`within`]), and the test waits for it with a
//! deadline. A helper or thread that is still there when its deadline (or, for a helper, the
//! SIGKILL that follows) has passed is reported with what the kernel says it is doing
//! ([`describe_task`]) in the failing test's reason, and the run moves on.

use crate::Test;
use nix::{
    kmod::{delete_module, DeleteModuleFlags},
    sys::{
        pthread::{pthread_kill, pthread_self},
        signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal},
    },
    unistd::gettid,
};
use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::OpenOptionsExt,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Mutex},
    thread,
    time::{Duration, Instant},
};

pub const DEV: &str = "/dev/mini_pipe";
pub const KO: &str = "/lib/modules/mini_pipe.ko";

/// A test's verdict: `Err` carries the reason, printed as a KTAP diagnostic.
pub type TestResult = Result<(), String>;

/// Fails with `msg` unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

/// How long a helper process gets to be gone after SIGKILL, and a thread to return after the
/// signal that interrupts it, before it is reported as stuck.
pub const KILL_WAIT: Duration = Duration::from_secs(30);

/// Reports of helpers that did not go away when dropped, for the running test's reason
/// (`Some` while a test made by [`test`] runs).
static LATE: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Adds `why` to the running test's reason (the test fails); outside such a test, prints it as
/// a KTAP diagnostic at once.
fn report_late(why: String) {
    let mut late = LATE.lock().unwrap_or_else(|e| e.into_inner());
    match late.as_mut() {
        Some(v) => v.push(why),
        None => why.lines().for_each(|l| println!("# {l}")),
    }
}

/// A test named `name` running `run`.
pub fn test(name: &str, run: fn() -> TestResult) -> Test {
    Test::new(name, Box::new(run))
}

/// Runs one test: what a dropped [`Helper`] reports while it runs (one that did not die after
/// SIGKILL) fails the test and joins its reason. main.rs runs every test through this.
pub fn with_late_reports(run: impl FnOnce() -> TestResult) -> TestResult {
    *LATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    let verdict = run();
    let late = LATE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    if late.is_empty() {
        return verdict;
    }
    let mut why = verdict.err().map(|e| vec![e]).unwrap_or_default();
    why.extend(late);
    Err(why.join("\n"))
}

/// The contents of a /proc file, trimmed, or why it could not be read.
fn proc_text(path: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => "(empty)".into(),
        Ok(s) => s.trim_end().to_string(),
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// What the kernel says task `dir` (`/proc/PID` or `/proc/PID/task/TID`) is doing: its stat
/// line, wchan and kernel stack, and the wchan and stack of each of its threads. (The standard
/// kernel has no CONFIG_STACKTRACE, so no stack files; the debug kernel has them.)
pub fn describe_task(dir: &str) -> String {
    let mut s = format!(
        "{dir}/stat: {}\n{dir}/wchan: {}\n{dir}/stack:\n{}",
        proc_text(&format!("{dir}/stat")),
        proc_text(&format!("{dir}/wchan")),
        proc_text(&format!("{dir}/stack"))
    );
    let mut tids: Vec<String> = std::fs::read_dir(format!("{dir}/task"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    tids.sort();
    for tid in tids {
        let t = format!("{dir}/task/{tid}");
        s += &format!(
            "\n{t}/wchan: {}\n{t}/stack:\n{}",
            proc_text(&format!("{t}/wchan")),
            proc_text(&format!("{t}/stack"))
        );
    }
    s
}

extern "C" fn on_interrupt(_: i32) {}

/// Runs `f` on a thread of its own and waits at most `timeout` for its result: how a test
/// makes a call that may block on the device (an open, a read, a write, an unload) a bounded
/// wait. If `f` is still running then, the error says what the kernel says the thread is
/// doing; the thread is then sent SIGUSR2, caught without SA_RESTART, so that an interruptible
/// wait ends with EINTR and `f` returns, dropping the files it owns (`f` should give up on
/// EINTR); whether it did within [`KILL_WAIT`] is in the error too.
pub fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    let (idtx, idrx) = mpsc::channel();
    // Kept until the end, so that the pthread_t stays valid for pthread_kill.
    let _handle = thread::spawn(move || {
        let _ = idtx.send((gettid().as_raw(), pthread_self()));
        let _ = tx.send(f());
    });
    let (tid, pthread) = idrx
        .recv_timeout(timeout)
        .map_err(|_| format!("{what}: the thread did not start within {timeout:?}"))?;
    match rx.recv_timeout(timeout) {
        Ok(v) => return Ok(v),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(format!(
                "{what}: the thread ended without a result (a panic)"
            ))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {}
    }
    let state = describe_task(&format!("/proc/self/task/{tid}"));
    let act = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: The handler does nothing, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGUSR2, &act) };
    let after = match pthread_kill(pthread, Signal::SIGUSR2) {
        Err(e) => format!("SIGUSR2 to thread {tid}: {e}"),
        Ok(()) if rx.recv_timeout(KILL_WAIT).is_ok() => {
            format!("thread {tid} returned once interrupted by SIGUSR2")
        }
        Ok(()) => format!(
            "thread {tid} still there {KILL_WAIT:?} after SIGUSR2 (left behind):\n{}",
            describe_task(&format!("/proc/self/task/{tid}"))
        ),
    };
    Err(format!(
        "{what}: still blocked after {timeout:?} (thread {tid})\n{state}\n{after}"
    ))
}

/// [`open`] on a thread of its own, bounded by `timeout` (see [`within`]): for opens that wait
/// for a partner, or that a broken device could make wait.
pub fn open_within(
    path: &str,
    read: bool,
    write: bool,
    flags: i32,
    timeout: Duration,
) -> Result<File, String> {
    let (p, what) = (
        path.to_string(),
        format!("open({path}, r={read} w={write})"),
    );
    within(&what, timeout, move || open(&p, read, write, flags))?
        .map_err(|e| format!("{what}: {e}"))
}

/// Opens `path` with `O_RDONLY`, `O_WRONLY` or `O_RDWR` (`read`, `write`) plus `flags`.
pub fn open(path: &str, read: bool, write: bool, flags: i32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(read)
        .write(write)
        .custom_flags(flags)
        .open(path)
}

/// Runs a command to completion, bounded; returns its status and combined output.
pub fn run(cmd: &str, args: &[&str], timeout: Duration) -> Result<(ExitStatus, String), String> {
    let child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let mut child = Helper::new(child);
    let what = |e: String| format!("{cmd} {args:?}: {e}");
    let out = child.output_within(timeout).map_err(what)?;
    let status = child.wait_within(timeout).map_err(what)?;
    Ok((status, out))
}

/// Unloads mini_pipe (if loaded) and loads it again with `params`.
pub fn reload(params: &[&str]) -> TestResult {
    if is_loaded() {
        let (st, out) = run("rmmod", &["mini_pipe"], Duration::from_secs(30))?;
        ensure!(st.success(), "rmmod mini_pipe failed: {out}");
    }
    let mut args = vec![KO];
    args.extend_from_slice(params);
    let (st, out) = run("insmod", &args, Duration::from_secs(30))?;
    ensure!(st.success(), "insmod {params:?} failed: {out}");
    Ok(())
}

/// Whether mini_pipe is in /proc/modules.
pub fn is_loaded() -> bool {
    std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.starts_with("mini_pipe ")))
        .unwrap_or(false)
}

/// Polls `cond` until it holds, for at most `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> TestResult {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting until {what}"));
        }
        thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Whether process `pid` is asleep inside system call number `nr` (from /proc/PID/syscall
/// and /proc/PID/stat): the proof that a helper is blocked where the test expects it.
pub fn blocked_in_syscall(pid: u32, nr: u32) -> bool {
    let sleeping = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('S')))
        .unwrap_or(false);
    let in_nr = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(|n| n == nr.to_string()))
        .unwrap_or(false);
    sleeping && in_nr
}

nix::ioctl_read_bad!(fionread_raw, nix::libc::FIONREAD, nix::libc::c_int);

/// Bytes queued in the pipe behind `fd`, by FIONREAD.
pub fn queued(fd: &impl std::os::fd::AsRawFd) -> Result<i32, nix::errno::Errno> {
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    unsafe { fionread_raw(fd.as_raw_fd(), &mut n) }?;
    Ok(n)
}

/// Whether process `pid` has `path` open.
pub fn has_open(pid: u32, path: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == path))
        })
        .unwrap_or(false)
}

/// x86_64 system call numbers the tests look for in /proc/PID/syscall.
pub const SYS_READ: u32 = 0;
pub const SYS_WRITE: u32 = 1;

/// A child process that is killed, not leaked, if the test gives up on it.
pub struct Helper {
    child: Child,
    output: Option<mpsc::Receiver<String>>,
}

impl Helper {
    pub fn new(child: Child) -> Self {
        Self {
            child,
            output: None,
        }
    }

    /// Starts this test program again as helper `role` with `args` (see `main.rs`).
    pub fn spawn(role: &str, args: &[String]) -> Result<Self, String> {
        let child = Command::new("/proc/self/exe")
            .arg("helper")
            .arg(role)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning helper {role}: {e}"))?;
        Ok(Self::new(child))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the child writes to stdout until it closes it, bounded by `timeout`.
    pub fn output_within(&mut self, timeout: Duration) -> Result<String, String> {
        if self.output.is_none() {
            let (tx, rx) = mpsc::channel();
            let mut out = self.child.stdout.take().ok_or("helper has no stdout")?;
            let mut err = self.child.stderr.take();
            thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                if let Some(e) = err.as_mut() {
                    let _ = e.read_to_string(&mut s);
                }
                let _ = tx.send(s);
            });
            self.output = Some(rx);
        }
        let rx = self.output.as_ref().unwrap();
        rx.recv_timeout(timeout).map_err(|_| {
            format!(
                "no end of output from pid {} within {timeout:?}\n{}",
                self.pid(),
                describe_task(&format!("/proc/{}", self.pid()))
            )
        })
    }

    /// Waits for the child to exit, bounded by `timeout`.
    pub fn wait_within(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st);
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "pid {} still running after {timeout:?}\n{}",
                    self.pid(),
                    describe_task(&format!("/proc/{}", self.pid()))
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends SIGKILL (unless the child has exited) and reaps it, bounded by `timeout`. A child
    /// still there then (asleep where SIGKILL cannot wake it) is left behind, and the error
    /// says what the kernel says it is doing.
    pub fn kill_within(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Ok(st);
        }
        let _ = self.child.kill();
        self.wait_within(timeout).map_err(|why| {
            format!(
                "helper pid {} did not exit within {timeout:?} of SIGKILL: {why}",
                self.pid()
            )
        })
    }
}

impl Drop for Helper {
    /// Kills a child the test has not reaped; one that does not die within [`KILL_WAIT`] fails
    /// the running test (see [`test`]) rather than hanging the run.
    fn drop(&mut self) {
        if let Err(why) = self.kill_within(KILL_WAIT) {
            report_late(why);
        }
    }
}

/// Fills `buf` with bytes `offset..offset + buf.len()` of the reproducible stream `seed`, so a
/// reader can check every byte it gets whatever the chunk sizes on either side.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        // splitmix64 of the 8-byte word index; one byte of it.
        let mut z = (seed ^ (pos / 8)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        *b = z.to_le_bytes()[(pos % 8) as usize];
    }
}

/// A figure from /proc/meminfo in KiB (`key` with its colon, such as `Slab:`).
pub fn meminfo_kib(key: &str) -> Result<u64, String> {
    let m = std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("meminfo: {e}"))?;
    m.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .ok_or(format!("no {key} in /proc/meminfo"))
}

/// Unloads mini_pipe with delete_module, on a thread with a deadline (the module's exit code
/// runs in the call).
pub fn unload() -> TestResult {
    within("delete_module", Duration::from_secs(60), || {
        delete_module(c"mini_pipe", DeleteModuleFlags::O_NONBLOCK)
    })?
    .map_err(|e| format!("unload: {e}"))
}

/// The major /proc/devices gives mini_pipe's device numbers, if it is loaded.
pub fn chrdev_major() -> Option<u64> {
    std::fs::read_to_string("/proc/devices")
        .ok()?
        .lines()
        .find_map(|l| {
            let (num, name) = l.trim().split_once(' ')?;
            (name == "mini_pipe").then(|| num.parse().ok())?
        })
}
