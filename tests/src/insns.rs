//! Markers for counting the guest instructions a transfer executes, under QEMU's TCG with
//! scripts/insn-count.c loaded (`scripts/insn-count.sh`).
//!
//! [`open`] and [`close`] execute `xchg bx, bx` and `xchg cx, cx`: no-ops that the plugin
//! watches for. It counts every instruction any vCPU executes between the two (the writers',
//! the readers', the kernel's, the scheduler's), so that the bench can say how much work each
//! pipe does per byte, a number that varies by about 1% from run to run where a time under
//! TCG varies by a third. The bench uses them only when asked (`--count-insns`): on other
//! machines they cost a few cycles.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// From now on, [`open`] and [`close`] mark windows.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether windows are marked.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Opens a window.
pub fn open() {
    if enabled() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Exchanging a register with itself changes no register, flag or memory.
        unsafe {
            std::arch::asm!("xchg bx, bx", options(nomem, nostack, preserves_flags))
        };
    }
}

/// Closes the window [`open`] opened; the plugin logs its count.
pub fn close() {
    if enabled() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: As in `open`.
        unsafe {
            std::arch::asm!("xchg cx, cx", options(nomem, nostack, preserves_flags))
        };
    }
}
