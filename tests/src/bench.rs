// SPDX-License-Identifier: GPL-2.0

//! `mini_pipe_test bench ...`: the benchmarks (see scripts/bench.sh). Not written yet.

/// Runs the benchmarks; returns the exit status.
pub fn run(_args: &[String]) -> i32 {
    eprintln!("bench: not implemented yet");
    2
}
