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

/// Writes one byte (a string's terminating zero) just past the end of a 20-byte block,
/// then frees it. Most allocators round 20 bytes up to 24 or 32, so the stray byte
/// lands in padding and harms nothing they can see; only a canary that starts right
/// after the 20th byte catches it.
pub fn overflow() -> i32 {
    // SAFETY: plain malloc.
    let block = unsafe { libc::malloc(20) }.cast::<u8>();
    if block.is_null() {
        return survived("buffer overflow (malloc(20) returned NULL)");
    }
    // SAFETY: deliberately wrong (the point of this mode): byte 20 is past the block.
    // A checking allocator stops the process at the `free`.
    unsafe {
        block.add(20).write_volatile(0);
        libc::free(std::hint::black_box(block).cast());
    }
    survived("buffer overflow")
}

/// Frees a 64-byte block, writes into it, then gives the allocator two chances to
/// notice: another allocation (phase 3's debug mode checks the heap after calls) and
/// `heap_check()` itself, when the allocator has one.
///
/// The write goes to byte 40: past the first 16 bytes, where allocators keep a freed
/// block's links, and clear of its last 8 (phase 2's footer). Without a debug mode no
/// allocator's bookkeeping is hit, so the write goes unnoticed.
pub fn use_after_free() -> i32 {
    // SAFETY: plain malloc and free; the block is not used after the free (except by
    // the deliberate write below).
    let block = unsafe {
        let block = libc::malloc(64).cast::<u8>();
        if block.is_null() {
            return survived("use after free (malloc(64) returned NULL)");
        }
        libc::free(block.cast());
        block
    };
    // SAFETY: deliberately wrong: the block was freed. It stays mapped (a 64-byte
    // block is in the brk heap, which keeps at least its trim threshold), so the
    // write itself cannot fault.
    unsafe { std::hint::black_box(block).add(40).write_volatile(0x5a) };
    // One more call, so a debug mode that checks after every call catches the write
    // here. Through black_box: the compiler would delete an unused malloc/free pair.
    // SAFETY: plain malloc and free.
    unsafe { libc::free(std::hint::black_box(libc::malloc(std::hint::black_box(64)))) };
    if let Some(heap_check) = find_heap_check() {
        heap_check();
    }
    survived("use after free")
}

/// `heap_check` from whatever allocator is loaded, if it has one (looked up at run
/// time, so that this also runs on the C library's allocator).
fn find_heap_check() -> Option<extern "C" fn() -> i32> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"heap_check".as_ptr()) };
    // SAFETY: every mymalloc phase exports `heap_check` as `extern "C" fn() -> i32`.
    (!symbol.is_null())
        .then(|| unsafe { core::mem::transmute::<*mut c_void, extern "C" fn() -> i32>(symbol) })
}
