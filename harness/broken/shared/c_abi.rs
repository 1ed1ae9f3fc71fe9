//! The malloc family's C functions over phase 1's heap, for the two deliberately broken
//! crates whose defect is in the locking (`no-lock`, `fork-deadlock`), so they cannot
//! use `preload_kit::export_malloc!` and its lock. Each includes this file with
//! `#[path]` and defines `crate::with_heap`, which is where they differ.
//!
//! The C semantics (overflow checks, `errno`, alignment validation, `realloc`'s special
//! cases) are those of `preload_kit::abi`, written out again because the kit's
//! functions take the kit's lock. No function here calls `with_heap` while inside it.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use preload_kit::os::{errno, page_size, set_errno};
use preload_kit::report::fail;
use preload_kit::{Heap, MIN_ALIGN, libc};

use crate::with_heap;

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
    raw(with_heap(|heap| heap.alloc(size, align)))
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
    let saved = errno();
    with_heap(|heap| {
        if let Err(fault) = heap.free(block) {
            fail(heap, "free", fault);
        }
    });
    set_errno(saved);
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => raw(with_heap(|heap| heap.alloc_zeroed(total))),
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
    raw(with_heap(|heap| match heap.realloc(block, size) {
        Ok(moved) => moved,
        Err(fault) => fail(heap, "realloc", fault),
    }))
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
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let saved = errno();
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
    allocate(size, page_size())
}

#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(page_size()) {
        Some(rounded) => allocate(rounded, page_size()),
        None => raw(None),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return 0;
    };
    with_heap(|heap| match heap.usable_size(block) {
        Ok(size) => size,
        Err(fault) => fail(heap, "malloc_usable_size", fault),
    })
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

/// Never called: nothing unwinds with `panic = "abort"` (see `export_malloc!`).
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {
    preload_kit::report::panicked_in_unwind()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    preload_kit::report::panicked(info)
}
