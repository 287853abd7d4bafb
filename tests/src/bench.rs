// SPDX-License-Identifier: GPL-2.0

//! `mini_pipe_test bench [--smoke] [--reps N] [--scale F] [--capacities N,...] [--sizes N,...]
//! [--parts throughput,latency,scaling,calls,seeds,rendezvous]`: /dev/mini_pipe against a FIFO.
//!
//! Both objects run on the same kernel in the same VM, interleaved: every repetition of a cell
//! runs the FIFO and mini_pipe back to back, in alternating order. The FIFO is made with
//! mkfifo and sized with `F_SETPIPE_SZ` to mini_pipe's capacity (a module parameter: the bench
//! reloads the module between capacities). Every transfer runs in helper processes (this
//! program again, `helper bench ROLE ...`): writers and readers open the object, report
//! `ready`, wait for `go` on stdin, do their part and report `done` with their monotonic end
//! time, the bytes they moved and the context switches they made meanwhile (from
//! /proc/self/status).
//!
//! What is measured (medians over the repetitions; the raw values are in the output too):
//! - throughput in MiB/s, one writer process to one reader process, for several write sizes
//!   and capacities, and context switches (voluntary + involuntary, writer + reader) per MiB,
//!   also split by side and kind;
//! - the one-way wake-up latency: the reader sleeps in read() on the empty object, the
//!   writer stamps a message with `CLOCK_MONOTONIC`, the reader subtracts that from its clock
//!   when the message arrives (median and p99), after checking that the clock resolves
//!   microseconds. One writer and one reader have both objects open and alternate between them
//!   message by message, so that both see the same moments of a noisy host;
//! - scaling: W writers and R readers of 4 KiB messages, W and R in {1, 2, 4};
//! - calls: the cost of a write and a read with nobody to wake, in one process that holds the
//!   object open for both (nanoseconds per round, 64 B, 4 KiB and 64 KiB);
//! - the seeds' configuration (capacity 128) as a reference point.
//!
//! Output: one JSON document on one line of stdout; progress goes to stderr. Exit status: 0,
//! or 3 when the run completed but a transfer stalled (the JSON has the stall reports), or 1
//! when it failed.
//! `--smoke` runs a subset that takes seconds, with the same output format.

use crate::util::{blocked_in_syscall, open, reload, Helper, DEV, SYS_READ, SYS_WRITE};
use nix::{
    fcntl::{fcntl, FcntlArg},
    libc,
    sys::signal::{kill, Signal},
    sys::stat::Mode,
    time::{clock_getres, clock_gettime, ClockId},
    unistd::mkfifo,
    unistd::Pid,
};
use std::{
    fmt,
    io::{BufRead, BufReader, Read, Write},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// Where the FIFO is made.
const FIFO: &str = "/tmp/mini_pipe_bench.fifo";
/// The second FIFO of the ping-pong, and the second pipe (a load with `pipes=2`).
const FIFO2: &str = "/tmp/mini_pipe_bench2.fifo";
const DEV2: &str = "/dev/mini_pipe1";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// mini_pipe's default capacity, loaded again at the end.
const DEFAULT_CAPACITY: usize = 64 * KIB;
/// The seeds' configuration: a 128-byte ring.
const SEEDS_CAPACITY: usize = 128;
/// A helper that has not finished after this long kills itself (`alarm`), so a hang ends as
/// an error, never as a stuck run.
const HELPER_ALARM_SECS: u32 = 300;

/// A JSON value, enough for the bench's output.
#[derive(Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl fmt::Display for J {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            J::Null => write!(f, "null"),
            J::Bool(b) => write!(f, "{b}"),
            J::Int(i) => write!(f, "{i}"),
            J::Num(x) if x.is_finite() => write!(f, "{}", (x * 1000.0).round() / 1000.0),
            J::Num(_) => write!(f, "null"),
            J::Str(s) => {
                write!(f, "\"")?;
                for c in s.chars() {
                    match c {
                        '"' => write!(f, "\\\"")?,
                        '\\' => write!(f, "\\\\")?,
                        '\n' => write!(f, "\\n")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                write!(f, "\"")
            }
            J::Arr(v) => {
                write!(f, "[")?;
                for (i, x) in v.iter().enumerate() {
                    write!(f, "{}{x}", if i > 0 { "," } else { "" })?;
                }
                write!(f, "]")
            }
            J::Obj(v) => {
                write!(f, "{{")?;
                for (i, (k, x)) in v.iter().enumerate() {
                    write!(
                        f,
                        "{}{}:{x}",
                        if i > 0 { "," } else { "" },
                        J::Str(k.clone())
                    )?;
                }
                write!(f, "}}")
            }
        }
    }
}

fn obj(pairs: Vec<(&str, J)>) -> J {
    J::Obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn nums(v: &[f64]) -> J {
    J::Arr(v.iter().map(|&x| J::Num(x)).collect())
}

fn int(x: usize) -> J {
    J::Int(x as i64)
}

/// The median of `v` (NaN if empty).
fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`th percentile of `v`, interpolated between the two nearest ranks (NaN if empty).
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = p / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process.
fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The two objects compared.
#[derive(Clone, Copy, PartialEq)]
enum Obj {
    Fifo,
    Mini,
}

impl Obj {
    fn path(self) -> &'static str {
        match self {
            Obj::Fifo => FIFO,
            Obj::Mini => DEV,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Obj::Fifo => "fifo",
            Obj::Mini => "mini_pipe",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [Obj::Fifo, Obj::Mini].into_iter().find(|o| o.name() == s)
    }

    /// The order of repetition `rep`: FIFO first on even ones, mini_pipe first on odd ones.
    fn order(rep: usize) -> [Obj; 2] {
        if rep.is_multiple_of(2) {
            [Obj::Fifo, Obj::Mini]
        } else {
            [Obj::Mini, Obj::Fifo]
        }
    }
}

/// What a run is asked to do.
struct Plan {
    smoke: bool,
    /// The guest's CPUs.
    cpus: usize,
    reps: usize,
    capacities: Vec<usize>,
    write_sizes: Vec<usize>,
    /// Multiplies every volume.
    scale: f64,
    /// Latency: runs per object, and messages per run.
    lat_reps: usize,
    lat_count: usize,
    /// Scaling: (writers, readers) pairs, and the bytes moved per cell.
    scaling: Vec<(usize, usize)>,
    scaling_bytes: usize,
    /// Which parts run: throughput, latency, scaling, calls, seeds, rendezvous.
    parts: Vec<String>,
    /// Rendezvous: the write (and read) sizes, and the ping-pong runs per object and round
    /// trips per run.
    rv_sizes: Vec<usize>,
    pp_reps: usize,
    pp_count: usize,
}

impl Plan {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut smoke = false;
        let mut reps = None;
        let mut scale = 1.0;
        let (mut caps, mut sizes, mut parts) = (None, None, None);
        let list = |s: Option<&String>| -> Result<Vec<usize>, String> {
            s.ok_or("a list is missing")?
                .split(',')
                .map(|x| x.parse().map_err(|_| format!("bad number {x:?}")))
                .collect()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--smoke" => smoke = true,
                "--count-insns" => crate::insns::enable(),
                "--reps" => {
                    reps = Some(
                        it.next()
                            .and_then(|s| s.parse().ok())
                            .filter(|&n| n > 0)
                            .ok_or("--reps wants a positive number")?,
                    )
                }
                "--scale" => {
                    scale = it
                        .next()
                        .and_then(|s| s.parse().ok())
                        .filter(|&x: &f64| x > 0.0)
                        .ok_or("--scale wants a positive number")?
                }
                "--capacities" => caps = Some(list(it.next())?),
                "--sizes" => sizes = Some(list(it.next())?),
                "--parts" => {
                    parts = Some(
                        it.next()
                            .ok_or("--parts wants a list")?
                            .split(',')
                            .map(str::to_string)
                            .collect(),
                    )
                }
                _ => return Err(format!("unknown argument {a:?}")),
            }
        }
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let all = [1, 2, 4];
        let grid = all
            .iter()
            .flat_map(|&w| all.iter().map(move |&r| (w, r)))
            .collect();
        let mut plan = if smoke {
            Plan {
                smoke,
                cpus,
                reps: reps.unwrap_or(1),
                capacities: vec![4 * KIB, 64 * KIB],
                write_sizes: vec![64, 64 * KIB],
                scale: scale / 32.0,
                lat_reps: 1,
                lat_count: 20,
                scaling: vec![(1, 1), (4, 4)],
                scaling_bytes: 32 * MIB,
                parts: Vec::new(),
                rv_sizes: vec![64 * KIB, MIB],
                pp_reps: 2,
                pp_count: 50,
            }
        } else {
            Plan {
                smoke,
                cpus,
                reps: reps.unwrap_or(9),
                capacities: vec![4 * KIB, 64 * KIB, MIB],
                write_sizes: vec![1, 64, 512, 4 * KIB, 64 * KIB, MIB],
                scale,
                lat_reps: 6,
                lat_count: 300,
                scaling: grid,
                scaling_bytes: 32 * MIB,
                parts: Vec::new(),
                rv_sizes: vec![4 * KIB, 64 * KIB, MIB],
                pp_reps: 6,
                pp_count: 300,
            }
        };
        plan.capacities = caps.unwrap_or(plan.capacities);
        plan.write_sizes = sizes.unwrap_or(plan.write_sizes);
        plan.parts = parts.unwrap_or_else(|| {
            [
                "throughput",
                "latency",
                "scaling",
                "calls",
                "seeds",
                "rendezvous",
            ]
            .map(String::from)
            .to_vec()
        });
        Ok(plan)
    }

    fn has(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }

    /// Bytes one throughput run moves with `size`-byte writes into a `capacity`-byte object:
    /// chosen so that each run takes a few tenths of a second under TCG (1-byte writes cost a
    /// system call per byte; small capacities a context switch per fill), and always a whole
    /// number of writes, at least one. Cells with writes below 512 B that no target looks at
    /// (all of them on one CPU; on several, all but 64 B into 64 KiB) move a quarter of that,
    /// which keeps the whole run under ten minutes.
    fn volume(&self, size: usize, capacity: usize) -> usize {
        let watched = size >= 512 || (size == 64 && capacity == 64 * KIB && self.cpus > 1);
        let base = match size {
            1 => 128 * KIB,
            s if s <= 64 => 8 * MIB,
            s if s <= 512 => 24 * MIB,
            s if s <= 4 * KIB => 48 * MIB,
            _ => 64 * MIB,
        };
        let base = match capacity {
            c if c < 4 * KIB => base / 8,
            c if c <= 4 * KIB => base / 2,
            _ => base,
        };
        let base = if watched { base } else { base / 4 };
        let v = (base as f64 * self.scale) as usize;
        (v / size).max(1) * size
    }
}

/// A helper process with a line protocol on its stdin and stdout.
struct Proc {
    helper: Helper,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    what: String,
}

impl Proc {
    /// Starts `mini_pipe_test helper bench ARGS...`.
    fn spawn(args: &[String]) -> Result<Self, String> {
        let mut child = Command::new("/proc/self/exe")
            .arg("helper")
            .arg("bench")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning bench helper {args:?}: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Self {
            helper: Helper::new(child),
            stdin,
            out,
            what: args.join(" "),
        })
    }

    fn pid(&self) -> u32 {
        self.helper.pid()
    }

    /// Reads the helper's next line, which must start with `tag`; returns its other words.
    fn expect(&mut self, tag: &str) -> Result<Vec<String>, String> {
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .map_err(|e| format!("{}: {e}", self.what))?;
        let mut words = line.split_whitespace();
        if words.next() != Some(tag) {
            return Err(format!(
                "helper {} said {:?}, expected {tag}",
                self.what,
                line.trim_end()
            ));
        }
        Ok(words.map(str::to_string).collect())
    }

    fn go(&mut self) -> Result<(), String> {
        writeln!(self.stdin, "go")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("{}: go: {e}", self.what))
    }

    fn finish(mut self) -> Result<(), String> {
        let st = self.helper.wait_within(Duration::from_secs(60))?;
        if !st.success() {
            return Err(format!("helper {} exited with {st}", self.what));
        }
        Ok(())
    }
}

fn num<T: std::str::FromStr>(words: &[String], i: usize) -> Result<T, String> {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("bad helper report {words:?}"))
}

/// Context switches of one side (all its writers, or all its readers) between `go` and `done`.
#[derive(Clone, Copy, Default)]
struct Switches {
    /// The process gave up the CPU: it slept, in a wait queue or on a mutex.
    voluntary: u64,
    /// The scheduler took the CPU away: preemption, time slices.
    involuntary: u64,
}

impl Switches {
    fn add(&mut self, words: &[String]) -> Result<(), String> {
        self.voluntary += num::<u64>(words, 3)?;
        self.involuntary += num::<u64>(words, 4)?;
        Ok(())
    }

    fn total(&self) -> u64 {
        self.voluntary + self.involuntary
    }
}

/// What one transfer measured.
struct Transfer {
    secs: f64,
    bytes: u64,
    /// Context switches of the writers and of the readers.
    writers: Switches,
    readers: Switches,
    /// The capacity the writers saw (`F_GETPIPE_SZ`, or mini_pipe's fdinfo).
    capacity_seen: u64,
}

impl Transfer {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.secs
    }

    fn per_mib(&self, n: u64) -> f64 {
        n as f64 / (self.bytes as f64 / MIB as f64)
    }

    /// Context switches, voluntary and involuntary, of every helper per MiB moved.
    fn csw_per_mib(&self) -> f64 {
        self.per_mib(self.writers.total() + self.readers.total())
    }
}

/// Why a transfer did not give a measurement.
enum Fail {
    /// Every writer slept in write() and every reader in read() for [`STALL_SECS`]: a lost
    /// wakeup. Carries what /proc said about the helpers before they were killed.
    Stall(String),
    /// Anything else: the bench itself is broken.
    Error(String),
}

impl From<String> for Fail {
    fn from(e: String) -> Self {
        Fail::Error(e)
    }
}

/// A transfer whose writers all sleep in write() and readers all in read() for this long is
/// stalled: in a working pipe one side always has something to do within milliseconds.
const STALL_SECS: u64 = 5;

/// Transfers that stalled in this run, all cells together. A stall is a lost wakeup, a bug:
/// the cell goes on without it and its report goes into the JSON (`stalls`, `stall_reports`),
/// but the run then ends with [`STALL_EXIT`], so that no stall passes unnoticed.
static STALLS: AtomicUsize = AtomicUsize::new(0);

/// The exit status of a bench run that completed, JSON and all, with stalls in it.
const STALL_EXIT: i32 = 3;

/// Watches a transfer's helpers from a thread; on a stall, records their state and kills
/// them, so that the protocol reads in [`transfer`] end.
struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Option<String>>,
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// What /proc says about helper `pid`: its state, wait channel, system call, and the fdinfo
/// of the files it opened (fd 3 on).
fn describe(pid: u32, role: &str) -> String {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    let state = read("stat")
        .rsplit_once(") ")
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let mut d = format!(
        "{role} pid {pid}: state {state}, wchan {}, syscall {}",
        read("wchan").trim(),
        read("syscall").split_whitespace().next().unwrap_or("?"),
    );
    for fd in 3..8 {
        let info = read(&format!("fdinfo/{fd}"));
        if !info.is_empty() {
            let info: Vec<&str> = info.lines().filter(|l| !l.starts_with("mnt_id")).collect();
            d.push_str(&format!("; fd {fd}: {}", info.join(", ")));
        }
    }
    d
}

impl Watchdog {
    fn start(writers: Vec<u32>, readers: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut since: Option<Instant> = None;
            while !stopped.load(Ordering::Relaxed) {
                let stuck = |pids: &[u32], nr| {
                    pids.iter().all(|&p| !alive(p) || blocked_in_syscall(p, nr))
                        && pids.iter().any(|&p| blocked_in_syscall(p, nr))
                };
                if stuck(&writers, SYS_WRITE) && stuck(&readers, SYS_READ) {
                    let t = *since.get_or_insert_with(Instant::now);
                    if t.elapsed() >= Duration::from_secs(STALL_SECS) {
                        let diag: Vec<String> = writers
                            .iter()
                            .map(|&p| describe(p, "writer"))
                            .chain(readers.iter().map(|&p| describe(p, "reader")))
                            .collect();
                        for &p in writers.iter().chain(&readers) {
                            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
                        }
                        return Some(format!("stalled for {STALL_SECS}s: {}", diag.join(" | ")));
                    }
                } else {
                    since = None;
                }
                thread::sleep(Duration::from_millis(20));
            }
            None
        });
        Self { stop, thread }
    }

    /// Stops watching; returns the stall report, if there was a stall.
    fn stop(self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// `writers` writers each write `writes` writes of `size` bytes into `obj` (a FIFO is sized
/// to `capacity` first), `readers` readers read with `read_size`-byte buffers until EOF.
fn transfer(
    obj: Obj,
    capacity: usize,
    (writers, readers): (usize, usize),
    size: usize,
    writes: usize,
    read_size: usize,
    sync: bool,
) -> Result<Transfer, Fail> {
    let path = obj.path().to_string();
    let mut rs = (0..readers)
        .map(|_| Proc::spawn(&["tp-reader".into(), path.clone(), read_size.to_string()]))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ws = (0..writers)
        .map(|_| {
            Proc::spawn(&[
                "tp-writer".into(),
                path.clone(),
                obj.name().into(),
                capacity.to_string(),
                size.to_string(),
                writes.to_string(),
                if sync { "sync" } else { "buffered" }.into(),
            ])
        })
        .collect::<Result<Vec<_>, _>>()?;
    for r in rs.iter_mut() {
        r.expect("ready")?;
    }
    let mut capacity_seen = 0;
    for w in ws.iter_mut() {
        capacity_seen = num(&w.expect("ready")?, 0)?;
    }
    let dog = Watchdog::start(
        ws.iter().map(Proc::pid).collect(),
        rs.iter().map(Proc::pid).collect(),
    );
    let mut run = || -> Result<(u64, u64, u64, Switches, Switches), String> {
        // Readers first, so that they are waiting when the data comes.
        crate::insns::open();
        for p in rs.iter_mut().chain(ws.iter_mut()) {
            p.go()?;
        }
        // done BYTES GO_NS END_NS VOLUNTARY INVOLUNTARY
        let (mut start, mut end, mut bytes) = (u64::MAX, 0u64, 0u64);
        let (mut w_csw, mut r_csw) = (Switches::default(), Switches::default());
        for w in ws.iter_mut() {
            let d = w.expect("done")?;
            start = start.min(num(&d, 1)?);
            w_csw.add(&d)?;
        }
        for r in rs.iter_mut() {
            let d = r.expect("done")?;
            bytes += num::<u64>(&d, 0)?;
            end = end.max(num(&d, 2)?);
            r_csw.add(&d)?;
        }
        crate::insns::close();
        Ok((start, end, bytes, w_csw, r_csw))
    };
    let result = run();
    if let Some(diag) = dog.stop() {
        return Err(Fail::Stall(diag));
    }
    let (start, end, bytes, w_csw, r_csw) = result?;
    for p in rs.into_iter().chain(ws) {
        p.finish()?;
    }
    let expected = (writers * writes * size) as u64;
    if bytes != expected {
        return Err(Fail::Error(format!(
            "{}: readers got {bytes} bytes, writers wrote {expected}",
            obj.name()
        )));
    }
    Ok(Transfer {
        secs: end.saturating_sub(start).max(1) as f64 / 1e9,
        bytes,
        writers: w_csw,
        readers: r_csw,
        capacity_seen,
    })
}

/// One cell of a table: both objects, `reps` interleaved repetitions.
fn cell(
    plan: &Plan,
    label: &str,
    run: impl Fn(Obj) -> Result<Transfer, Fail>,
) -> Result<Vec<(&'static str, J)>, String> {
    let mut res: [Vec<Transfer>; 2] = [Vec::new(), Vec::new()];
    let mut stalls: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..plan.reps {
        for o in Obj::order(rep) {
            let t = match run(o) {
                Ok(t) => t,
                Err(Fail::Stall(diag)) => {
                    eprintln!("bench: STALL: {label} rep {} {}: {diag}", rep + 1, o.name());
                    STALLS.fetch_add(1, Ordering::Relaxed);
                    stalls[(o == Obj::Mini) as usize].push(diag);
                    continue;
                }
                Err(Fail::Error(e)) => return Err(format!("{label} {}: {e}", o.name())),
            };
            eprintln!(
                "bench: {label} rep {}/{} {:9}: {:9.2} MiB/s {:9.1} csw/MiB ({:.2}s; writers {}+{}, readers {}+{})",
                rep + 1,
                plan.reps,
                o.name(),
                t.mib_s(),
                t.csw_per_mib(),
                t.secs,
                t.writers.voluntary,
                t.writers.involuntary,
                t.readers.voluntary,
                t.readers.involuntary
            );
            if crate::insns::enabled() {
                // What scripts/insn-count.sh pairs with the plugin's count for this window.
                eprintln!("bench: insns-window {label}|{}|{}", o.name(), t.bytes);
            }
            res[(o == Obj::Mini) as usize].push(t);
        }
    }
    let side = |v: &[Transfer], stalls: &[String]| {
        let mib: Vec<f64> = v.iter().map(Transfer::mib_s).collect();
        let csw: Vec<f64> = v.iter().map(Transfer::csw_per_mib).collect();
        obj(vec![
            ("stalls", int(stalls.len())),
            (
                "stall_reports",
                J::Arr(stalls.iter().map(|d| J::Str(d.clone())).collect()),
            ),
            ("mib_s", J::Num(median(&mib))),
            ("csw_per_mib", J::Num(median(&csw))),
            (
                "csw_per_mib_by_kind",
                obj(SWITCH_KINDS
                    .iter()
                    .map(|&(name, pick)| {
                        let v: Vec<f64> = v.iter().map(|t| t.per_mib(pick(t))).collect();
                        (name, J::Num(median(&v)))
                    })
                    .collect()),
            ),
            ("mib_s_runs", nums(&mib)),
            ("csw_per_mib_runs", nums(&csw)),
            (
                "secs_runs",
                nums(&v.iter().map(|t| t.secs).collect::<Vec<_>>()),
            ),
            (
                "capacity_seen",
                v.first()
                    .map_or(J::Null, |t| J::Int(t.capacity_seen as i64)),
            ),
        ])
    };
    let mib = |v: &[Transfer]| median(&v.iter().map(Transfer::mib_s).collect::<Vec<_>>());
    let csw = |v: &[Transfer]| median(&v.iter().map(Transfer::csw_per_mib).collect::<Vec<_>>());
    let out = vec![
        (
            "bytes",
            J::Int(res[0].first().map_or(0, |t| t.bytes as i64)),
        ),
        ("fifo", side(&res[0], &stalls[0])),
        ("mini_pipe", side(&res[1], &stalls[1])),
        ("ratio_mib_s", J::Num(mib(&res[1]) / mib(&res[0]))),
        ("ratio_csw_per_mib", J::Num(csw(&res[1]) / csw(&res[0]))),
    ];
    eprintln!(
        "bench: {label}: mini_pipe/fifo throughput {:.2}x, context switches {:.2}x",
        mib(&res[1]) / mib(&res[0]),
        csw(&res[1]) / csw(&res[0])
    );
    Ok(out)
}

/// A part of a transfer's context switches: its name in the JSON, and how to get it.
type SwitchKind = (&'static str, fn(&Transfer) -> u64);

/// The parts of a transfer's context switches the JSON reports separately (medians per MiB).
const SWITCH_KINDS: [SwitchKind; 4] = [
    ("writers_voluntary", |t| t.writers.voluntary),
    ("writers_involuntary", |t| t.writers.involuntary),
    ("readers_voluntary", |t| t.readers.voluntary),
    ("readers_involuntary", |t| t.readers.involuntary),
];

/// The read buffer of throughput readers: 64 KiB, or the write size if larger.
fn read_size(write_size: usize) -> usize {
    write_size.max(64 * KIB)
}

/// A throughput cell: one writer, one reader.
fn throughput_cell(plan: &Plan, capacity: usize, size: usize) -> Result<J, String> {
    let writes = plan.volume(size, capacity) / size;
    let label = format!("capacity {capacity} write {size}");
    let mut fields = vec![
        ("capacity", int(capacity)),
        ("write_size", int(size)),
        ("read_size", int(read_size(size))),
        ("writes", int(writes)),
    ];
    fields.extend(cell(plan, &label, |o| {
        transfer(o, capacity, (1, 1), size, writes, read_size(size), false)
    })?);
    Ok(obj(fields))
}

/// Whether the guest's `CLOCK_MONOTONIC` resolves microseconds: its advertised resolution, and
/// the deltas between consecutive readings.
///
/// Early after boot the kernel still runs on `tsc-early` without high-resolution timers (the
/// resolution is then a jiffy); it switches within seconds, so this waits up to 20 seconds for
/// a fine resolution before it measures.
fn clock_check() -> (bool, J) {
    let getres = || {
        clock_getres(ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(u64::MAX)
    };
    let waited = now_ns();
    while getres() > 1000 && now_ns() - waited < 20_000_000_000 {
        thread::sleep(Duration::from_millis(100));
    }
    let waited = (now_ns() - waited) as f64 / 1e9;
    let res = getres();
    let n = 20_000;
    let mut deltas = Vec::with_capacity(n);
    let mut prev = now_ns();
    for _ in 0..n {
        let t = now_ns();
        deltas.push((t - prev) as f64);
        prev = t;
    }
    let zeros = deltas.iter().filter(|&&d| d == 0.0).count();
    let nonzero: Vec<f64> = deltas.iter().copied().filter(|&d| d > 0.0).collect();
    let min_nonzero = nonzero.iter().copied().fold(f64::INFINITY, f64::min);
    let median_nonzero = median(&nonzero);
    // The clock resolves microseconds if it says so, and if it ticks in steps well below one:
    // a readout that advances between most consecutive calls, by less than a microsecond
    // in the typical case.
    let ok = res <= 1000 && min_nonzero <= 1000.0 && median_nonzero < 1000.0;
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    let j = obj(vec![
        ("clock", J::Str("CLOCK_MONOTONIC".into())),
        ("clocksource", J::Str(clocksource)),
        ("getres_ns", J::Int(res as i64)),
        ("waited_for_resolution_s", J::Num(waited)),
        ("consecutive_calls", int(n)),
        ("zero_deltas", int(zeros)),
        ("min_nonzero_delta_ns", J::Num(min_nonzero)),
        ("median_nonzero_delta_ns", J::Num(median_nonzero)),
        ("median_delta_ns", J::Num(median(&deltas))),
        ("resolves_microseconds", J::Bool(ok)),
    ]);
    (ok, j)
}

/// The object message `i` of a latency run goes through: FIFO, mini_pipe, mini_pipe, FIFO,
/// and so on, so that both see the same moments of the run and neither always goes first.
fn lat_object(i: usize) -> Obj {
    Obj::order(i / 2)[i % 2]
}

/// Latency messages per run that only warm up (one per object): not measured.
const LAT_WARMUP: usize = 2;

/// One latency run: one writer and one reader with both objects open, `count` messages
/// through each, alternating ([`lat_object`]), each written once the reader sleeps in read().
/// Returns the delays in nanoseconds, FIFO first.
fn latency_run(count: usize) -> Result<[Vec<f64>; 2], String> {
    let mut r = Proc::spawn(&["lat-reader".into(), count.to_string()])?;
    let mut w = Proc::spawn(&["lat-writer".into(), count.to_string(), r.pid().to_string()])?;
    r.expect("ready")?;
    w.expect("ready")?;
    r.go()?;
    w.go()?;
    w.expect("done")?;
    let d = r.expect("done")?;
    r.finish()?;
    w.finish()?;
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for word in &d {
        let (o, ns) = word
            .split_once(':')
            .and_then(|(o, ns)| Some((Obj::from_name(o)?, ns.parse().ok()?)))
            .ok_or_else(|| format!("bad latency sample {word:?}"))?;
        samples[(o == Obj::Mini) as usize].push(ns);
    }
    if samples.iter().any(|s| s.len() != count) {
        return Err(format!(
            "{} and {} latency samples",
            samples[0].len(),
            samples[1].len()
        ));
    }
    Ok(samples)
}

fn latency(plan: &Plan, clock_ok: bool, clock: J) -> Result<J, String> {
    let mut all: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..plan.lat_reps {
        let s = latency_run(plan.lat_count)?;
        eprintln!(
            "bench: latency rep {}/{}: median {:.1} us (FIFO) {:.1} us (mini_pipe), \
             p99 {:.1} us {:.1} us",
            rep + 1,
            plan.lat_reps,
            median(&s[0]) / 1e3,
            median(&s[1]) / 1e3,
            percentile(&s[0], 99.0) / 1e3,
            percentile(&s[1], 99.0) / 1e3
        );
        for (a, s) in all.iter_mut().zip(s) {
            a.extend(s);
        }
    }
    let side = |v: &[f64]| {
        if clock_ok {
            obj(vec![
                ("samples", int(v.len())),
                ("median_us", J::Num(median(v) / 1e3)),
                ("p99_us", J::Num(percentile(v, 99.0) / 1e3)),
                ("min_us", J::Num(percentile(v, 0.0) / 1e3)),
                ("max_us", J::Num(percentile(v, 100.0) / 1e3)),
            ])
        } else {
            obj(vec![
                ("samples", int(v.len())),
                ("median_us", J::Null),
                ("p99_us", J::Null),
            ])
        }
    };
    let ratio = |p: f64| {
        if clock_ok {
            J::Num(percentile(&all[1], p) / percentile(&all[0], p))
        } else {
            J::Null
        }
    };
    let note = if clock_ok {
        "one writer and one reader have both objects open and alternate between them message \
         by message; the reader sleeps in read() on the empty object (checked in \
         /proc/PID/syscall and stat) when the writer stamps each message"
    } else {
        "the guest clock does not resolve microseconds: no latency is reported"
    };
    Ok(obj(vec![
        ("clock", clock),
        ("capacity", int(DEFAULT_CAPACITY)),
        ("message_bytes", int(8)),
        ("runs", int(plan.lat_reps)),
        ("messages_per_object_per_run", int(plan.lat_count)),
        (
            "interleaving",
            J::Str("message by message (FIFO, mini_pipe, mini_pipe, FIFO, and again)".into()),
        ),
        ("fifo", side(&all[0])),
        ("mini_pipe", side(&all[1])),
        ("ratio_median", ratio(50.0)),
        ("ratio_p99", ratio(99.0)),
        ("note", J::Str(note.into())),
    ]))
}

fn scaling(plan: &Plan) -> Result<J, String> {
    let msg = 4 * KIB;
    let mut cells = Vec::new();
    for &(w, r) in &plan.scaling {
        let per_writer = ((plan.scaling_bytes as f64 * plan.scale) as usize / w / msg).max(1);
        let label = format!("scaling {w}x{r}");
        let mut fields = vec![
            ("writers", int(w)),
            ("readers", int(r)),
            ("message_bytes", int(msg)),
            ("read_size", int(msg)),
            ("capacity", int(DEFAULT_CAPACITY)),
            ("writes_per_writer", int(per_writer)),
        ];
        fields.extend(cell(plan, &label, |o| {
            transfer(o, DEFAULT_CAPACITY, (w, r), msg, per_writer, msg, false)
        })?);
        cells.push(obj(fields));
    }
    Ok(J::Arr(cells))
}

/// Write sizes of the `calls` part, and the write-and-read rounds one timing makes of each.
const CALL_SIZES: [(usize, usize); 4] = [
    (64, 20_000),
    (512, 20_000),
    (4 * KIB, 10_000),
    (64 * KIB, 1_000),
];

/// The cost of a call with nobody to wake: one process holds the object open for reading and
/// writing, and writes `size` bytes then reads them back, `rounds` times; nanoseconds per round.
/// No one sleeps and no one is woken, so what is left is the system calls, the locking, the
/// bookkeeping and the copies: what the two pipes spend on each call where they make the same
/// calls and context switches (the scaling cells on one CPU).
///
/// The buffers sit `rep % 16` pages into larger ones. Under TCG a copy between two pages whose
/// addresses agree in bits 12 to 19 (the index in the emulator's 256-entry TLB) runs about 14
/// times slower, and both pipes copy through the same kernel page round after round (mini_pipe
/// rewinds its empty ring, the FIFO reuses its page): with the same buffers in every
/// repetition, one such pair would slow them all (logs/bench/NOTES.md, section 16).
fn call_round_ns(o: Obj, size: usize, rounds: usize, rep: usize) -> Result<f64, String> {
    let mut f = open(o.path(), true, true, 0).map_err(|e| format!("open {}: {e}", o.path()))?;
    if o == Obj::Fifo {
        fcntl(&f, FcntlArg::F_SETPIPE_SZ(DEFAULT_CAPACITY as i32))
            .map_err(|e| format!("F_SETPIPE_SZ: {e}"))?;
    }
    let at = rep % 16 * 4 * KIB;
    let out = vec![0x5au8; at + size];
    let mut back = vec![0u8; at + size];
    let (out, back) = (&out[at..], &mut back[at..]);
    let start = now_ns();
    for _ in 0..rounds {
        f.write_all(out).map_err(|e| format!("write: {e}"))?;
        f.read_exact(back).map_err(|e| format!("read: {e}"))?;
    }
    Ok((now_ns() - start) as f64 / rounds as f64)
}

/// The `calls` part: [`call_round_ns`] for each of [`CALL_SIZES`], both objects in turn, `reps`
/// interleaved repetitions; medians, and the FIFO's time over mini_pipe's (above 1.0: mini_pipe
/// is faster).
fn calls(plan: &Plan) -> Result<J, String> {
    let mut cells = Vec::new();
    for (size, rounds) in CALL_SIZES {
        let rounds = ((rounds as f64 * plan.scale) as usize).max(10);
        let mut ns: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for rep in 0..plan.reps {
            for o in Obj::order(rep) {
                ns[(o == Obj::Mini) as usize].push(call_round_ns(o, size, rounds, rep)?);
            }
        }
        let (fifo, mini) = (median(&ns[0]), median(&ns[1]));
        eprintln!(
            "bench: calls {size} B: fifo {fifo:.0} ns, mini_pipe {mini:.0} ns per write and read, \
             mini_pipe/fifo speed {:.2}x",
            fifo / mini
        );
        cells.push(obj(vec![
            ("write_size", int(size)),
            ("rounds", int(rounds)),
            ("capacity", int(DEFAULT_CAPACITY)),
            ("fifo_ns", J::Num(fifo)),
            ("mini_pipe_ns", J::Num(mini)),
            ("fifo_ns_runs", nums(&ns[0])),
            ("mini_pipe_ns_runs", nums(&ns[1])),
            ("ratio_speed", J::Num(fifo / mini)),
        ]));
    }
    Ok(J::Arr(cells))
}

/// The parts that run at the default capacity, each if asked for (else null): latency,
/// scaling, calls.
fn at_default_capacity(plan: &Plan, clock_ok: bool, clock: &J) -> Result<[J; 3], String> {
    let part = |name: &str, run: &dyn Fn() -> Result<J, String>| {
        if plan.has(name) {
            run()
        } else {
            Ok(J::Null)
        }
    };
    Ok([
        part("latency", &|| latency(plan, clock_ok, clock.clone()))?,
        part("scaling", &|| scaling(plan))?,
        part("calls", &|| calls(plan))?,
    ])
}

/// The ways mini_pipe waits for its readers, each against a FIFO of 64 KiB: a rendezvous
/// channel, and an `O_DSYNC` writer on a 64 KiB pipe. Name, load parameters, `O_DSYNC`.
const RV_MODES: [(&str, &str, bool); 2] = [
    ("capacity=0", "capacity=0", false),
    ("O_DSYNC", "capacity=65536", true),
];

/// Bytes each ping-pong message carries.
const PP_BYTES: usize = 64;

/// Rendezvous: for each of [`RV_MODES`], one writer to one reader with writes and reads of each
/// of `rv_sizes`, and a ping-pong round trip through two pipes (a load with `pipes=2`).
fn rendezvous(plan: &Plan, clock_ok: bool) -> Result<J, String> {
    let mut tp = Vec::new();
    let mut pp = Vec::new();
    for (mode, param, sync) in RV_MODES {
        eprintln!("bench: loading mini_pipe with {param} pipes=2 ({mode})");
        reload(&[param, "pipes=2"])?;
        for &size in &plan.rv_sizes {
            // Half the throughput table's volume: each cell runs about as long.
            let writes = (plan.volume(size, DEFAULT_CAPACITY) / 2 / size).max(1);
            let label = format!("{mode} write {size}");
            let mut fields = vec![
                ("mode", J::Str(mode.into())),
                ("fifo_capacity", int(DEFAULT_CAPACITY)),
                ("write_size", int(size)),
                ("read_size", int(size)),
                ("writes", int(writes)),
            ];
            fields.extend(cell(plan, &label, |o| {
                transfer(o, DEFAULT_CAPACITY, (1, 1), size, writes, size, sync)
            })?);
            tp.push(obj(fields));
        }
        pp.push(pingpong(plan, mode, sync, clock_ok)?);
    }
    Ok(obj(vec![
        ("fifo_capacity", int(DEFAULT_CAPACITY)),
        ("throughput", J::Arr(tp)),
        ("pingpong", J::Arr(pp)),
    ]))
}

/// One ping-pong run through `o`: `count` round trips of [`PP_BYTES`] bytes, each timed by the
/// side that starts it; returns the round trips in nanoseconds.
fn pingpong_run(o: Obj, sync: bool, count: usize) -> Result<Vec<f64>, String> {
    let sync = if sync { "sync" } else { "buffered" };
    let mut b = Proc::spawn(&[
        "pp-b".into(),
        o.name().into(),
        sync.into(),
        PP_BYTES.to_string(),
    ])?;
    let mut a = Proc::spawn(&[
        "pp-a".into(),
        o.name().into(),
        sync.into(),
        PP_BYTES.to_string(),
        count.to_string(),
    ])?;
    a.expect("ready")?;
    b.expect("ready")?;
    b.go()?;
    a.go()?;
    let d = a.expect("done")?;
    b.expect("done")?;
    a.finish()?;
    b.finish()?;
    let v = d
        .iter()
        .map(|w| w.parse().map_err(|_| format!("bad round trip {w:?}")))
        .collect::<Result<Vec<f64>, _>>()?;
    if v.len() != count {
        return Err(format!("{} round trips, not {count}", v.len()));
    }
    Ok(v)
}

/// The ping-pong cell of a mode: `pp_reps` runs per object, interleaved.
fn pingpong(plan: &Plan, mode: &str, sync: bool, clock_ok: bool) -> Result<J, String> {
    let mut all: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for rep in 0..plan.pp_reps {
        for o in Obj::order(rep) {
            let v = pingpong_run(o, sync, plan.pp_count)?;
            eprintln!(
                "bench: {mode} ping-pong rep {}/{} {:9}: median {:.1} us",
                rep + 1,
                plan.pp_reps,
                o.name(),
                median(&v) / 1e3
            );
            all[(o == Obj::Mini) as usize].extend(v);
        }
    }
    let side = |v: &[f64]| {
        obj(vec![
            ("samples", int(v.len())),
            ("median_us", J::Num(median(v) / 1e3)),
            ("p99_us", J::Num(percentile(v, 99.0) / 1e3)),
        ])
    };
    Ok(obj(vec![
        ("mode", J::Str(mode.into())),
        ("message_bytes", int(PP_BYTES)),
        ("runs", int(plan.pp_reps)),
        ("round_trips_per_run", int(plan.pp_count)),
        ("clock_ok", J::Bool(clock_ok)),
        ("fifo", side(&all[0])),
        ("mini_pipe", side(&all[1])),
        ("ratio_median", J::Num(median(&all[1]) / median(&all[0]))),
    ]))
}

fn guest_info() -> J {
    let version = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let release = version.split_whitespace().nth(2).unwrap_or("").to_string();
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|(_, m)| m.trim().to_string()))
        })
        .unwrap_or_default();
    obj(vec![
        ("kernel", J::Str(release)),
        ("proc_version", J::Str(version.trim().to_string())),
        ("cpus", int(cpus)),
        ("cpu_model", J::Str(model)),
    ])
}

fn bench(plan: &Plan) -> Result<J, String> {
    let started = now_ns();
    let _ = std::fs::remove_file(FIFO);
    mkfifo(FIFO, Mode::from_bits_truncate(0o600)).map_err(|e| format!("mkfifo: {e}"))?;
    let _ = std::fs::remove_file(FIFO2);
    mkfifo(FIFO2, Mode::from_bits_truncate(0o600)).map_err(|e| format!("mkfifo: {e}"))?;
    let (clock_ok, clock) = clock_check();
    eprintln!("bench: clock: {clock}");
    let mut tp = Vec::new();
    let mut lat = J::Null;
    let mut scale = J::Null;
    let mut call_costs = J::Null;
    for &cap in &plan.capacities {
        eprintln!("bench: loading mini_pipe with capacity={cap}");
        reload(&[&format!("capacity={cap}")])?;
        if plan.has("throughput") {
            for &size in &plan.write_sizes {
                tp.push(throughput_cell(plan, cap, size)?);
            }
        }
        if cap == DEFAULT_CAPACITY {
            [lat, scale, call_costs] = at_default_capacity(plan, clock_ok, &clock)?;
        }
    }
    if !plan.capacities.contains(&DEFAULT_CAPACITY) {
        reload(&[&format!("capacity={DEFAULT_CAPACITY}")])?;
        [lat, scale, call_costs] = at_default_capacity(plan, clock_ok, &clock)?;
    }
    let mut seeds = J::Null;
    if plan.has("seeds") {
        eprintln!("bench: loading mini_pipe with capacity={SEEDS_CAPACITY} (the seeds')");
        reload(&[&format!("capacity={SEEDS_CAPACITY}")])?;
        seeds = throughput_cell(plan, SEEDS_CAPACITY, 64)?;
    }
    let rendezvous = if plan.has("rendezvous") {
        rendezvous(plan, clock_ok)?
    } else {
        J::Null
    };
    reload(&[])?;
    let _ = std::fs::remove_file(FIFO);
    let _ = std::fs::remove_file(FIFO2);
    Ok(obj(vec![
        ("bench", J::Str("mini_pipe".into())),
        ("schema", J::Int(1)),
        (
            "mode",
            J::Str(if plan.smoke { "smoke" } else { "full" }.into()),
        ),
        ("repetitions", int(plan.reps)),
        ("volume_scale", J::Num(plan.scale)),
        ("guest", guest_info()),
        (
            "method",
            J::Str(
                "FIFO (mkfifo, F_SETPIPE_SZ to the same capacity) and mini_pipe alternate \
                 within every repetition; figures are medians over the repetitions; \
                 context switches are voluntary + involuntary of all writer and reader \
                 processes (/proc/self/status) from go to done"
                    .into(),
            ),
        ),
        ("throughput", J::Arr(tp)),
        ("seeds_reference", seeds),
        ("latency", lat),
        ("scaling", scale),
        ("calls", call_costs),
        ("rendezvous", rendezvous),
        ("elapsed_s", J::Num((now_ns() - started) as f64 / 1e9)),
    ]))
}

/// Runs the benchmarks; returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let plan = match Plan::parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: {e}");
            eprintln!(
                "usage: mini_pipe_test bench [--smoke] [--reps N] [--scale F] \\
                 [--capacities N,...] [--sizes N,...] [--parts throughput,latency,scaling,calls,seeds,rendezvous] \\
                 [--count-insns]"
            );
            return 2;
        }
    };
    match bench(&plan) {
        Ok(j) => {
            println!("{j}");
            let stalls = STALLS.load(Ordering::Relaxed);
            if stalls > 0 {
                eprintln!(
                    "bench: failed: {stalls} transfer(s) stalled (lost wakeups); \
                     see stall_reports in the JSON"
                );
                return STALL_EXIT;
            }
            0
        }
        Err(e) => {
            eprintln!("bench: failed: {e}");
            1
        }
    }
}

// The helper side: `mini_pipe_test helper bench ROLE ARGS...`.

/// Context switches of this process so far: (voluntary, involuntary).
fn ctx_switches() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// The `done` line of a throughput helper: bytes moved, start and end times, and the context
/// switches since `csw` was taken.
fn say_done(bytes: u64, go: u64, end: u64, csw: (u64, u64)) {
    let now = ctx_switches();
    say(&format!(
        "done {bytes} {go} {end} {} {}",
        now.0 - csw.0,
        now.1 - csw.1
    ));
}

/// Waits for the `go` line on stdin.
fn wait_go() -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("stdin: {e}"))?;
    if line.trim() != "go" {
        return Err(format!("expected go, got {line:?}"));
    }
    Ok(())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The capacity `f` reports: `F_GETPIPE_SZ` for a FIFO, the fdinfo line for mini_pipe.
fn capacity_of(f: &std::fs::File, o: Obj) -> Result<u64, String> {
    use std::os::fd::AsRawFd;
    match o {
        Obj::Fifo => fcntl(f, FcntlArg::F_GETPIPE_SZ)
            .map(|n| n as u64)
            .map_err(|e| format!("F_GETPIPE_SZ: {e}")),
        Obj::Mini => std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
            .map_err(|e| e.to_string())?
            .lines()
            .find_map(|l| {
                l.strip_prefix("capacity:")
                    .and_then(|v| v.trim().parse().ok())
            })
            .ok_or_else(|| "no capacity in fdinfo".to_string()),
    }
}

/// `tp-writer PATH OBJ CAPACITY SIZE WRITES sync|buffered`: `sync` opens mini_pipe with
/// `O_DSYNC` (the FIFO, which ignores it, without).
fn tp_writer(args: &[String]) -> Result<(), String> {
    let path = &args[0];
    let o = Obj::from_name(&args[1]).ok_or("bad object")?;
    let capacity: usize = num(args, 2)?;
    let size: usize = num(args, 3)?;
    let writes: usize = num(args, 4)?;
    let flags = if args[5] == "sync" && o == Obj::Mini {
        libc::O_DSYNC
    } else {
        0
    };
    let mut f = open(path, false, true, flags).map_err(|e| format!("open {path}: {e}"))?;
    if o == Obj::Fifo {
        fcntl(&f, FcntlArg::F_SETPIPE_SZ(capacity as i32))
            .map_err(|e| format!("F_SETPIPE_SZ({capacity}): {e}"))?;
    }
    say(&format!("ready {}", capacity_of(&f, o)?));
    let buf = vec![0x5au8; size];
    wait_go()?;
    let go = now_ns();
    let csw = ctx_switches();
    let mut bytes = 0u64;
    for _ in 0..writes {
        f.write_all(&buf).map_err(|e| format!("write: {e}"))?;
        bytes += size as u64;
    }
    drop(f);
    let end = now_ns();
    say_done(bytes, go, end, csw);
    Ok(())
}

/// `tp-reader PATH READ_SIZE`
fn tp_reader(args: &[String]) -> Result<(), String> {
    let path = &args[0];
    let size: usize = num(args, 1)?;
    let mut f = open(path, true, false, 0).map_err(|e| format!("open {path}: {e}"))?;
    say("ready");
    let mut buf = vec![0u8; size];
    wait_go()?;
    let go = now_ns();
    let csw = ctx_switches();
    let mut bytes = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let end = now_ns();
    say_done(bytes, go, end, csw);
    Ok(())
}

/// Opens the FIFO and mini_pipe, in that order (a FIFO open waits for its partner's), to read
/// or to write.
fn open_both(read: bool) -> Result<[std::fs::File; 2], String> {
    let open_one =
        |o: Obj| open(o.path(), read, !read, 0).map_err(|e| format!("open {}: {e}", o.path()));
    Ok([open_one(Obj::Fifo)?, open_one(Obj::Mini)?])
}

/// `lat-writer COUNT READER_PID`: writes `LAT_WARMUP` + 2 x COUNT stamped 8-byte messages,
/// alternating between the objects ([`lat_object`]), each once the reader sleeps in read().
fn lat_writer(args: &[String]) -> Result<(), String> {
    let count: usize = num(args, 0)?;
    let reader: u32 = num(args, 1)?;
    let mut files = open_both(false)?;
    say("ready");
    wait_go()?;
    for i in 0..LAT_WARMUP + 2 * count {
        let mut tries = 0;
        while !blocked_in_syscall(reader, SYS_READ) {
            tries += 1;
            if tries > 200_000 {
                return Err(format!("message {i}: the reader never slept in read()"));
            }
            thread::sleep(Duration::from_micros(50));
        }
        let stamp = now_ns();
        files[(lat_object(i) == Obj::Mini) as usize]
            .write_all(&stamp.to_le_bytes())
            .map_err(|e| format!("write: {e}"))?;
    }
    say("done");
    Ok(())
}

/// `lat-reader COUNT`: reads the messages of `lat-writer COUNT`, each from the object it goes
/// through, and prints the arrival delays after the warm-up as `OBJECT:NANOSECONDS`.
fn lat_reader(args: &[String]) -> Result<(), String> {
    let count: usize = num(args, 0)?;
    let mut files = open_both(true)?;
    say("ready");
    wait_go()?;
    let mut samples = Vec::with_capacity(2 * count);
    let mut buf = [0u8; 8];
    for i in 0..LAT_WARMUP + 2 * count {
        let o = lat_object(i);
        files[(o == Obj::Mini) as usize]
            .read_exact(&mut buf)
            .map_err(|e| format!("message {i}: {e}"))?;
        let now = now_ns();
        if i >= LAT_WARMUP {
            let delay = now.saturating_sub(u64::from_le_bytes(buf));
            samples.push(format!("{}:{delay}", o.name()));
        }
    }
    say(&format!("done {}", samples.join(" ")));
    Ok(())
}

/// The ping-pong's two objects for `o`, first A to B, then B to A.
fn pp_paths(o: Obj) -> [&'static str; 2] {
    match o {
        Obj::Fifo => [FIFO, FIFO2],
        Obj::Mini => [DEV, DEV2],
    }
}

/// Opens `path` for reading or writing, `O_DSYNC` for writing to mini_pipe when `sync`.
fn pp_open(o: Obj, path: &str, read: bool, sync: &str) -> Result<std::fs::File, String> {
    let flags = if !read && sync == "sync" && o == Obj::Mini {
        libc::O_DSYNC
    } else {
        0
    };
    open(path, read, !read, flags).map_err(|e| format!("open {path}: {e}"))
}

/// `pp-a OBJ sync|buffered BYTES COUNT`: sends a message to B and waits for it back, COUNT
/// times after a warm-up; prints each round trip in nanoseconds.
fn pp_a(args: &[String]) -> Result<(), String> {
    let o = Obj::from_name(&args[0]).ok_or("bad object")?;
    let (bytes, count): (usize, usize) = (num(args, 2)?, num(args, 3)?);
    let [there, back] = pp_paths(o);
    let mut out = pp_open(o, there, false, &args[1])?;
    let mut inp = pp_open(o, back, true, &args[1])?;
    say("ready");
    wait_go()?;
    let mut buf = vec![0x3cu8; bytes];
    let mut trips = Vec::with_capacity(count);
    for i in 0..LAT_WARMUP + count {
        let t0 = now_ns();
        out.write_all(&buf).map_err(|e| format!("write: {e}"))?;
        inp.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
        if i >= LAT_WARMUP {
            trips.push((now_ns() - t0).to_string());
        }
    }
    say(&format!("done {}", trips.join(" ")));
    Ok(())
}

/// `pp-b OBJ sync|buffered BYTES`: sends back every message A sends, until end-of-file.
fn pp_b(args: &[String]) -> Result<(), String> {
    let o = Obj::from_name(&args[0]).ok_or("bad object")?;
    let bytes: usize = num(args, 2)?;
    let [there, back] = pp_paths(o);
    let mut inp = pp_open(o, there, true, &args[1])?;
    let mut out = pp_open(o, back, false, &args[1])?;
    say("ready");
    wait_go()?;
    let mut buf = vec![0u8; bytes];
    loop {
        match inp.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("read: {e}")),
        }
        out.write_all(&buf).map_err(|e| format!("write: {e}"))?;
    }
    say("done");
    Ok(())
}

/// Runs bench helper role `args[0]`; returns the exit status.
pub fn helper(args: &[String]) -> i32 {
    nix::unistd::alarm::set(HELPER_ALARM_SECS);
    let rest = &args[1.min(args.len())..];
    let r = match args.first().map(String::as_str) {
        Some("tp-writer") if rest.len() == 6 => tp_writer(rest),
        Some("pp-a") if rest.len() == 4 => pp_a(rest),
        Some("pp-b") if rest.len() == 3 => pp_b(rest),
        Some("tp-reader") if rest.len() == 2 => tp_reader(rest),
        Some("lat-writer") if rest.len() == 2 => lat_writer(rest),
        Some("lat-reader") if rest.len() == 1 => lat_reader(rest),
        _ => Err(format!("unknown bench helper {args:?}")),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench helper {args:?}: {e}");
            say(&format!("error {e}"));
            1
        }
    }
}
