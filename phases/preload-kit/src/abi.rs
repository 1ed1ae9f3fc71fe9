//! The C semantics of the malloc family, written once for every phase.
//!
//! Each function here takes the phase's [`Global`] and does what the C standard, POSIX
//! and glibc's manual promise: size arithmetic that cannot wrap, `errno` set on every
//! failure (and kept by `free`), alignment arguments validated, `realloc`'s special
//! cases. The phase's [`Heap`] only ever sees well-formed requests.
//!
//! Debug mode (`MALLOC_DEBUG=1`) logs each call here, with heap offsets:
//! `[alloc] 64 -> 0x10`, `[free ] 0x10`.

use core::ffi::c_void;
use core::fmt::Write as _;
use core::ptr::{self, NonNull};

use crate::global::State;
use crate::os::{self, set_errno};
use crate::out::Out;
use crate::report::fail;
use crate::{Global, Heap, MIN_ALIGN};

type Ptr = *mut c_void;

fn raw(block: Option<NonNull<u8>>) -> Ptr {
    block.map_or(ptr::null_mut(), |p| p.as_ptr().cast())
}

/// After a call: the debug log line, and in debug mode the periodic heap check.
fn after_call<H: Heap>(state: &mut State<H>, log: impl FnOnce(&H, &mut Out)) {
    if !state.config.debug {
        return;
    }
    let mut out = Out::stderr();
    log(&state.heap, &mut out);
    out.flush();
    if H::CHECK_IN_DEBUG_MODE {
        state.calls += 1;
        let every = state.config.check_every.unwrap_or(1);
        if state.calls.is_multiple_of(every)
            && let Err(fault) = state.heap.check()
        {
            fail(&state.heap, "heap_check", fault);
        }
    }
}

fn show<H: Heap>(heap: &H, p: Ptr) -> impl core::fmt::Display + use<H> {
    struct Shown(Option<crate::Location>);
    impl core::fmt::Display for Shown {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                Some(location) => location.fmt(f),
                None => f.write_str("NULL"),
            }
        }
    }
    Shown((!p.is_null()).then(|| heap.locate(p as usize)))
}

/// Allocates `size` bytes aligned to `align` (already validated), logging as `name`.
fn allocate<H: Heap>(global: &Global<H>, name: &str, size: usize, align: usize) -> Ptr {
    global.with(|state| {
        let block = raw(state.heap.alloc(size, align));
        after_call(state, |heap, out| {
            if align == MIN_ALIGN {
                let _ = writeln!(out, "[{name}] {size} -> {}", show(heap, block));
            } else {
                let _ = writeln!(
                    out,
                    "[{name}] {size} align {align} -> {}",
                    show(heap, block)
                );
            }
        });
        if block.is_null() {
            set_errno(libc::ENOMEM);
        }
        block
    })
}

pub fn malloc<H: Heap>(global: &Global<H>, size: usize) -> Ptr {
    allocate(global, "alloc", size, MIN_ALIGN)
}

pub fn free<H: Heap>(global: &Global<H>, p: Ptr) {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return;
    };
    let _errno_kept = os::KeepErrno::new();
    global.with(|state| {
        // Log first: once freed, the block may be merged and its offset means less.
        after_call(state, |heap, out| {
            let _ = writeln!(out, "[free ] {}", show(heap, p));
        });
        if let Err(fault) = state.heap.free(block) {
            fail(&state.heap, "free", fault);
        }
    });
}

pub fn calloc<H: Heap>(global: &Global<H>, count: usize, size: usize) -> Ptr {
    let Some(total) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    global.with(|state| {
        let block = raw(state.heap.alloc_zeroed(total));
        after_call(state, |heap, out| {
            let _ = writeln!(out, "[calloc] {count} x {size} -> {}", show(heap, block));
        });
        if block.is_null() {
            set_errno(libc::ENOMEM);
        }
        block
    })
}

pub fn realloc<H: Heap>(global: &Global<H>, p: Ptr, size: usize) -> Ptr {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return malloc(global, size);
    };
    if size == 0 {
        // glibc's behaviour (and C17's "implementation-defined"): free, return NULL.
        free(global, p);
        return ptr::null_mut();
    }
    global.with(|state| {
        let moved = match state.heap.realloc(block, size) {
            Ok(moved) => raw(moved),
            Err(fault) => fail(&state.heap, "realloc", fault),
        };
        after_call(state, |heap, out| {
            // `p` may be freed now; only its number is printed, from before the call.
            let _ = writeln!(out, "[realloc] {size} -> {}", show(heap, moved));
        });
        if moved.is_null() {
            set_errno(libc::ENOMEM);
        }
        moved
    })
}

pub fn reallocarray<H: Heap>(global: &Global<H>, p: Ptr, count: usize, size: usize) -> Ptr {
    match count.checked_mul(size) {
        Some(total) => realloc(global, p, total),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

fn valid_alignment(align: usize) -> bool {
    align.is_power_of_two()
}

/// `aligned_alloc` and `memalign`: NULL + EINVAL for an alignment that is not a power
/// of two.
pub fn aligned_alloc<H: Heap>(global: &Global<H>, align: usize, size: usize) -> Ptr {
    if !valid_alignment(align) {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate(global, "memalign", size, align.max(MIN_ALIGN))
}

/// # Safety
/// `out` must be valid for a pointer-sized write.
pub unsafe fn posix_memalign<H: Heap>(
    global: &Global<H>,
    out: *mut Ptr,
    align: usize,
    size: usize,
) -> i32 {
    if !valid_alignment(align) || !align.is_multiple_of(core::mem::size_of::<Ptr>()) {
        return libc::EINVAL;
    }
    // posix_memalign reports through its return value. A success leaves errno alone;
    // a failure leaves the ENOMEM that `allocate` set, as glibc's does (its
    // tst-malloc-thread-fail reads errno after a failed posix_memalign).
    let saved_errno = os::errno();
    let block = allocate(global, "memalign", size, align.max(MIN_ALIGN));
    if block.is_null() {
        return libc::ENOMEM;
    }
    set_errno(saved_errno);
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(block) };
    0
}

pub fn valloc<H: Heap>(global: &Global<H>, size: usize) -> Ptr {
    allocate(global, "memalign", size, os::page_size())
}

/// Like `valloc`, with the size rounded up to whole pages (and 0 meaning one page).
pub fn pvalloc<H: Heap>(global: &Global<H>, size: usize) -> Ptr {
    let page = os::page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => allocate(global, "memalign", rounded, page),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

pub fn malloc_usable_size<H: Heap>(global: &Global<H>, p: Ptr) -> usize {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return 0;
    };
    global.with(|state| match state.heap.usable_size(block) {
        Ok(size) => size,
        Err(fault) => fail(&state.heap, "malloc_usable_size", fault),
    })
}

/// `mallopt`: 1 if the phase honoured the parameter, 0 otherwise (as glibc answers for
/// parameters it does not know).
pub fn mallopt<H: Heap>(global: &Global<H>, param: i32, value: i32) -> i32 {
    global.with(|state| i32::from(state.heap.set_option(param, value)))
}

/// Writes the `[stats]` line.
pub fn write_stats<H: Heap>(heap: &H, out: &mut Out) {
    let stats = heap.stats();
    let _ = writeln!(
        out,
        "[stats] in_use={} free={} fragmentation={}%",
        stats.used_bytes,
        stats.free_bytes,
        stats.fragmentation_percent()
    );
}

/// `heap_dump()`: every block in address order, then the stats line, on stderr. On a
/// terminal the `USED` and `FREE` words are coloured (see [`crate::out::colour_dumps`]).
pub fn heap_dump<H: Heap>(global: &Global<H>) {
    let saved_errno = os::errno();
    global.with(|state| {
        let mut out = Out::painted(crate::out::STDERR, crate::out::colour_dumps());
        state.heap.dump_blocks(&mut out);
        write_stats(&state.heap, &mut out);
    });
    set_errno(saved_errno);
}

/// `malloc_stats()`: the stats line alone, on stderr (where glibc's goes too).
pub fn malloc_stats<H: Heap>(global: &Global<H>) {
    let saved_errno = os::errno();
    global.with(|state| write_stats(&state.heap, &mut Out::stderr()));
    set_errno(saved_errno);
}

/// `heap_check()`: 0 when every invariant holds; otherwise reports the first broken one
/// and exits 3.
pub fn heap_check<H: Heap>(global: &Global<H>) -> i32 {
    global.with(|state| match state.heap.check() {
        Ok(()) => 0,
        Err(fault) => fail(&state.heap, "heap_check", fault),
    })
}

/// Exports the whole malloc family for the heap type `$heap`, with C linkage.
///
/// Use once, at the root of a phase's `cdylib` crate. Two crates that both use it cannot
/// be linked into one program (they would both define `malloc`), so phases never depend
/// on each other's exporting crate.
///
/// Under `cfg(test)` nothing is exported: a phase's unit tests drive its heap type
/// directly, while the test harness itself keeps using the C library's allocator.
#[macro_export]
macro_rules! export_malloc {
    ($heap:ty) => {
        // A test build exports nothing, but still names the heap type, so the compiler
        // checks it and the crate's imports of it count as used.
        #[cfg(test)]
        const _: core::marker::PhantomData<$heap> = core::marker::PhantomData;

        #[cfg(not(test))]
        static GLOBAL: $crate::Global<$heap> = $crate::Global::new();

        #[cfg(not(test))]
        mod c_abi {
            use super::GLOBAL;
            use core::ffi::c_void;
            use $crate::abi;

            #[unsafe(no_mangle)]
            pub extern "C" fn malloc(size: usize) -> *mut c_void {
                abi::malloc(&GLOBAL, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn free(p: *mut c_void) {
                abi::free(&GLOBAL, p)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
                abi::calloc(&GLOBAL, count, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
                abi::realloc(&GLOBAL, p, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn reallocarray(
                p: *mut c_void,
                count: usize,
                size: usize,
            ) -> *mut c_void {
                abi::reallocarray(&GLOBAL, p, count, size)
            }
            /// # Safety
            /// `out` must be valid for a pointer-sized write.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn posix_memalign(
                out: *mut *mut c_void,
                align: usize,
                size: usize,
            ) -> i32 {
                // SAFETY: forwarded from our caller's contract.
                unsafe { abi::posix_memalign(&GLOBAL, out, align, size) }
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
                abi::aligned_alloc(&GLOBAL, align, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
                abi::aligned_alloc(&GLOBAL, align, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn valloc(size: usize) -> *mut c_void {
                abi::valloc(&GLOBAL, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
                abi::pvalloc(&GLOBAL, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
                abi::malloc_usable_size(&GLOBAL, p)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn mallopt(param: i32, value: i32) -> i32 {
                abi::mallopt(&GLOBAL, param, value)
            }

            // glibc's internal names, which some programs and libraries call directly
            // (mimalloc and jemalloc export them for the same reason).
            #[unsafe(no_mangle)]
            pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
                abi::malloc(&GLOBAL, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn __libc_free(p: *mut c_void) {
                abi::free(&GLOBAL, p)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn __libc_calloc(count: usize, size: usize) -> *mut c_void {
                abi::calloc(&GLOBAL, count, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
                abi::realloc(&GLOBAL, p, size)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
                abi::aligned_alloc(&GLOBAL, align, size)
            }

            // mymalloc's own introspection.
            #[unsafe(no_mangle)]
            pub extern "C" fn heap_dump() {
                abi::heap_dump(&GLOBAL)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn malloc_stats() {
                abi::malloc_stats(&GLOBAL)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn heap_check() -> i32 {
                abi::heap_check(&GLOBAL)
            }

            extern "C" fn before_fork() {
                GLOBAL.before_fork()
            }
            extern "C" fn after_fork_in_parent() {
                GLOBAL.after_fork_in_parent()
            }
            extern "C" fn after_fork_in_child() {
                GLOBAL.after_fork_in_child()
            }
            /// Registers the fork handlers when the library is loaded (an `.init_array`
            /// constructor). Not under the heap lock: if `pthread_atfork` itself
            /// allocates, that allocation simply goes through `malloc`.
            extern "C" fn register_fork_handlers() {
                // SAFETY: the handlers are plain functions that live as long as the
                // library; pthread_atfork only records their addresses.
                unsafe {
                    $crate::libc::pthread_atfork(
                        Some(before_fork),
                        Some(after_fork_in_parent),
                        Some(after_fork_in_child),
                    )
                };
            }
            #[used]
            #[unsafe(link_section = ".init_array")]
            static REGISTER_FORK_HANDLERS: extern "C" fn() = register_fork_handlers;

            /// The precompiled `core` library is built for unwinding and names this
            /// symbol; with `panic = "abort"` nothing unwinds, so it is never called.
            #[unsafe(no_mangle)]
            pub extern "C" fn rust_eh_personality() {
                $crate::report::panicked_in_unwind()
            }

            #[panic_handler]
            fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
                $crate::report::panicked(info)
            }
        }
    };
}
