//! The `.so` of phase 5: `libphase5_thread_heaps.so`.
//!
//! TEMPORARY: the C functions are written here by hand until the kit's
//! `export_malloc!` takes a shared allocator (branch `kit`); then this file becomes one
//! `export_malloc!` line.

#![cfg_attr(not(test), no_std)]

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use preload_kit::os::{self, set_errno};
use preload_kit::{MIN_ALIGN, Out};
use thread_heaps::ThreadHeaps;

static HEAPS: ThreadHeaps<mmap_debug::MmapDebugHeap> = ThreadHeaps::new();

fn raw(block: Option<NonNull<u8>>) -> *mut c_void {
    match block {
        Some(p) => p.as_ptr().cast(),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

fn allocate(size: usize, align: usize) -> *mut c_void {
    raw(HEAPS.alloc(size, align))
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    allocate(size, MIN_ALIGN)
}

#[unsafe(no_mangle)]
pub extern "C" fn free(p: *mut c_void) {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return;
    };
    if let Err(fault) = HEAPS.free(block) {
        HEAPS.fail("free", fault);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => raw(HEAPS.alloc_zeroed(total)),
        None => raw(None),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return malloc(size);
    };
    if size == 0 {
        free(p);
        return ptr::null_mut();
    }
    match HEAPS.realloc(block, size) {
        Ok(moved) => raw(moved),
        Err(fault) => HEAPS.fail("realloc", fault),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => realloc(p, total),
        None => raw(None),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate(size, align.max(MIN_ALIGN))
}

#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned_alloc(align, size)
}

/// # Safety
/// `out` must be valid for a pointer-sized write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    let saved = os::errno();
    let block = allocate(size, align.max(MIN_ALIGN));
    set_errno(saved);
    if block.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(block) };
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    allocate(size, os::page_size())
}

#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = os::page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => allocate(rounded, page),
        None => raw(None),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return 0;
    };
    match HEAPS.usable_size(block) {
        Ok(size) => size,
        Err(fault) => HEAPS.fail("malloc_usable_size", fault),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn mallopt(param: i32, value: i32) -> i32 {
    use preload_kit::Heap as _;
    HEAPS
        .fallback()
        .with(|state| state.heap.set_option(param, value)) as i32
}

#[unsafe(no_mangle)]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    malloc(size)
}
#[unsafe(no_mangle)]
pub extern "C" fn __libc_free(p: *mut c_void) {
    free(p)
}
#[unsafe(no_mangle)]
pub extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut c_void {
    calloc(count, size)
}
#[unsafe(no_mangle)]
pub extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    realloc(p, size)
}
#[unsafe(no_mangle)]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    aligned_alloc(align, size)
}

#[unsafe(no_mangle)]
pub extern "C" fn heap_dump() {
    let mut out = Out::stderr();
    HEAPS.dump(&mut out);
    out.flush();
}
#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    heap_dump()
}
#[unsafe(no_mangle)]
pub extern "C" fn heap_check() -> i32 {
    match HEAPS.check() {
        Ok(()) => 0,
        Err(fault) => HEAPS.fail("heap_check", fault),
    }
}

extern "C" fn before_fork() {
    HEAPS.before_fork()
}
extern "C" fn after_fork_in_parent() {
    HEAPS.after_fork_in_parent()
}
extern "C" fn after_fork_in_child() {
    HEAPS.after_fork_in_child()
}
extern "C" fn register_fork_handlers() {
    // SAFETY: plain functions that live as long as the library.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        )
    };
}
#[used]
#[unsafe(link_section = ".init_array")]
static REGISTER_FORK_HANDLERS: extern "C" fn() = register_fork_handlers;

#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {
    preload_kit::report::panicked_in_unwind()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    preload_kit::report::panicked(info)
}
