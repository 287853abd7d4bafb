// SPDX-License-Identifier: GPL-2.0

//! `mini_pipe_test`: the in-guest test program for /dev/mini_pipe.
//!
//! ```text
//! mini_pipe_test [NAME...]          run the tests (all, or those named), KTAP on stdout
//! mini_pipe_test --list             list the tests
//! mini_pipe_test helper ROLE ARGS   act as a helper process for a test (see helpers.rs)
//! mini_pipe_test bench ARGS         run the benchmarks (see bench.rs)
//! ```
//!
//! Exit status: 0 when every test ran passed, 1 otherwise. Every wait is bounded, so a hang
//! becomes a failing test with a reason, never a stuck run.

mod basic;
mod bench;
mod devices;
mod diff;
mod fuzz;
mod helpers;
mod insns;
mod reliability;
mod rendezvous;
mod util;

use util::TestResult;

/// One test: a name for the KTAP line and the code that runs it.
pub struct Test {
    pub name: String,
    pub run: Box<dyn Fn() -> TestResult>,
}

impl Test {
    pub fn new(name: impl Into<String>, run: Box<dyn Fn() -> TestResult>) -> Self {
        Self {
            name: name.into(),
            run,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("helper") => std::process::exit(helpers::run(&args[1..])),
        Some("bench") => std::process::exit(bench::run(&args[1..])),
        _ => {}
    }
    let tests: Vec<Test> = basic::tests()
        .into_iter()
        .chain(diff::tests())
        .chain(reliability::tests())
        .chain(devices::tests())
        .chain(rendezvous::tests())
        .collect();
    let all: Vec<&Test> = tests.iter().collect();
    if args.first().map(String::as_str) == Some("--list") {
        all.iter().for_each(|t| println!("{}", t.name));
        return;
    }
    let chosen: Vec<&Test> = if args.is_empty() {
        all
    } else {
        let chosen: Vec<&Test> = all.into_iter().filter(|t| args.contains(&t.name)).collect();
        if chosen.len() != args.len() {
            eprintln!("unknown test name among {args:?}; see --list");
            std::process::exit(2);
        }
        chosen
    };
    std::process::exit(if ktap(&chosen) { 0 } else { 1 });
}

/// Runs `tests` and reports them in KTAP; returns whether all passed.
fn ktap(tests: &[&Test]) -> bool {
    println!("KTAP version 1");
    println!("1..{}", tests.len());
    let mut failed = 0;
    for (i, t) in tests.iter().enumerate() {
        match util::with_late_reports(|| (t.run)()) {
            Ok(()) => println!("ok {} {}", i + 1, t.name),
            Err(why) => {
                failed += 1;
                for line in why.lines() {
                    println!("# {}: {line}", t.name);
                }
                println!("not ok {} {}", i + 1, t.name);
            }
        }
    }
    println!(
        "# mini_pipe_test: {} passed, {failed} failed",
        tests.len() - failed
    );
    failed == 0
}
