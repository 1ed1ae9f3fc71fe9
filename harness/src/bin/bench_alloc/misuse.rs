//! Deliberate misuse. A mymalloc heap ends the process with a one-line error and a
//! defined code; if the allocator lets the misuse pass, we say so and exit 1.

use core::ffi::c_void;
use core::fmt::Write as _;

use preload_kit::Out;

fn survived(what: &str) -> i32 {
    let mut out = Out::stderr();
    let _ = writeln!(out, "bench_alloc: the allocator did not detect the {what}");
    1
}

pub fn double_free() -> i32 {
    // SAFETY: deliberately wrong (the point of this mode): the second free is the
    // misuse under test; a checking allocator stops the process there.
    unsafe {
        let block = libc::malloc(32);
        libc::free(block);
        libc::free(std::hint::black_box(block));
    }
    survived("double free")
}

pub fn invalid_free() -> i32 {
    let mut on_the_stack = [0u8; 32];
    let pointer = std::hint::black_box(on_the_stack.as_mut_ptr()).cast::<c_void>();
    // SAFETY: deliberately wrong: a stack address was never allocated.
    unsafe { libc::free(pointer) };
    survived("invalid free")
}
