// SPDX-License-Identifier: GPL-2.0

//! What the tests share: the device, module reloads, helper processes, bounded waits, and a
//! reproducible byte stream.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    os::unix::fs::OpenOptionsExt,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
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
    let out = child.output_within(timeout)?;
    let status = child.wait_within(timeout)?;
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
                "no end of output from pid {} within {timeout:?}",
                self.pid()
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
                    "pid {} still running after {timeout:?}",
                    self.pid()
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
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
