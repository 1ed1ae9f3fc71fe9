//! The error path: one line on stderr, then `_exit` with the documented code.
//!
//! | exit code | meaning |
//! |-----------|---------|
//! | 2 | API misuse: a pointer this heap never gave out |
//! | 3 | heap corruption detected, double free included |

use core::fmt::Write as _;

use crate::Fault;
use crate::os::exit_now;
use crate::out::Out;
use crate::shared::SharedAllocator;

/// Exit code for API misuse (e.g. freeing a pointer this heap never gave out).
pub const EXIT_MISUSE: i32 = 2;
/// Exit code for heap corruption detected (double free, smashed header or canary).
pub const EXIT_CORRUPTION: i32 = 3;

/// Reports `fault`, found during `operation` (`"free"`, `"realloc"`, …), and exits.
/// `allocator` places the addresses; no lock of it may be held.
#[cold]
#[inline(never)]
pub fn fail<A: SharedAllocator>(allocator: &A, operation: &str, fault: Fault) -> ! {
    let mut out = Out::stderr();
    let code = match fault {
        Fault::DoubleFree { addr } => {
            let _ = write!(
                out,
                "error: double free detected at {}",
                allocator.locate(addr)
            );
            if operation != "free" {
                let _ = write!(out, " (in {operation})");
            }
            EXIT_CORRUPTION
        }
        Fault::InvalidPointer { addr, why } => {
            let _ = write!(
                out,
                "error: invalid pointer {} passed to {operation} ({why})",
                allocator.locate(addr)
            );
            EXIT_MISUSE
        }
        Fault::Corruption { addr, what } => {
            let _ = write!(
                out,
                "error: heap corruption detected at {}: {what}",
                allocator.locate(addr)
            );
            EXIT_CORRUPTION
        }
    };
    let _ = writeln!(out);
    out.flush();
    exit_now(code)
}

/// The panic handler of every phase `.so` (installed by [`crate::export_malloc!`]).
/// A panic inside the allocator is a bug in it; unwinding is impossible across the C
/// ABI, so say what happened and abort.
pub fn panicked(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut out = Out::stderr();
    let _ = writeln!(out, "error: mymalloc internal error: {info}");
    out.flush();
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Stands in for the unwinder's personality routine, which nothing should ever call
/// (a phase `.so` is built with `panic = "abort"`).
pub fn panicked_in_unwind() -> ! {
    let mut out = Out::stderr();
    let _ = writeln!(
        out,
        "error: mymalloc internal error: unwinding is not supported"
    );
    out.flush();
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
