//! The C semantics of the malloc family, written once for every phase.
//!
//! Each function here takes the exported [`SharedAllocator`] and does what the C
//! standard, POSIX and glibc's manual promise: size arithmetic that cannot wrap,
//! `errno` set on every failure (and kept by `free`), alignment arguments validated,
//! `realloc`'s special cases. The allocator only ever sees well-formed requests.
//!
//! Debug mode (`MALLOC_DEBUG=1`) logs each call here, with heap offsets:
//! `[alloc] 64 -> 0x10`, `[free ] 0x10`.

use core::ffi::c_void;
use core::fmt::Write as _;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::config;
use crate::options;
use crate::os::{self, set_errno};
use crate::out::Out;
use crate::report::fail;
use crate::shared::SharedAllocator;
use crate::{MIN_ALIGN, Stats};

type Ptr = *mut c_void;

fn raw(block: Option<NonNull<u8>>) -> Ptr {
    block.map_or(ptr::null_mut(), |p| p.as_ptr().cast())
}

/// After a call: the debug log line, and in debug mode the periodic heap check.
/// Outside debug mode this is one test of a flag (the log is built only inside).
fn after_call<A: SharedAllocator>(allocator: &A, log: impl FnOnce(&A, &mut Out)) {
    if config::debug_mode() {
        log_and_check(allocator, log);
    }
}

/// Debug mode's part of [`after_call`], out of the fast path.
#[cold]
fn log_and_check<A: SharedAllocator>(allocator: &A, log: impl FnOnce(&A, &mut Out)) {
    /// Calls since start-up, for "check every Nth call".
    static CALLS: AtomicU64 = AtomicU64::new(0);
    if config::current().debug_log {
        let mut out = crate::out::debug_log();
        log(allocator, &mut out);
        out.flush();
    }
    if A::CHECK_IN_DEBUG_MODE {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let every = config::current().check_every.unwrap_or(1);
        if calls.is_multiple_of(every)
            && let Err(fault) = allocator.check()
        {
            fail(allocator, "heap_check", fault);
        }
    }
}

fn show<A: SharedAllocator>(allocator: &A, p: Ptr) -> impl core::fmt::Display + use<A> {
    struct Shown(Option<crate::Location>);
    impl core::fmt::Display for Shown {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                Some(location) => location.fmt(f),
                None => f.write_str("NULL"),
            }
        }
    }
    Shown((!p.is_null()).then(|| allocator.locate(p as usize)))
}

/// Allocates `size` bytes aligned to `align` (already validated), logging as `name`.
/// The full path: [`malloc`] skips it when [`config::plain_calls`].
#[inline(never)]
fn allocate<A: SharedAllocator>(allocator: &A, name: &str, size: usize, align: usize) -> Ptr {
    let block = raw(allocator.alloc(size, align));
    if let Some(byte) = options::perturb()
        && !block.is_null()
    {
        // SAFETY: the allocator returned `size` writable bytes at `block`.
        unsafe { block.cast::<u8>().write_bytes(byte ^ 0xff, size) };
    }
    after_call(allocator, |allocator, out| {
        if align == MIN_ALIGN {
            let _ = writeln!(out, "[{name}] {size} -> {}", show(allocator, block));
        } else {
            let _ = writeln!(
                out,
                "[{name}] {size} align {align} -> {}",
                show(allocator, block)
            );
        }
    });
    if block.is_null() {
        set_errno(libc::ENOMEM);
    }
    block
}

/// `malloc`. With no log, no checks and no perturbing to do ([`config::plain_calls`]),
/// the allocator's answer is all there is: the call goes straight to it
/// ([`SharedAllocator::malloc_plain`]), and the allocator's own fast path is the whole
/// cost of the call.
#[inline(always)]
pub fn malloc<A: SharedAllocator>(allocator: &A, size: usize) -> Ptr {
    if config::plain_calls() {
        return allocator.malloc_plain(size).cast();
    }
    allocate(allocator, "alloc", size, MIN_ALIGN)
}

/// `free`: like [`malloc`], straight to the allocator when there is nothing else to
/// do, and when the allocator keeps `errno` itself
/// ([`SharedAllocator::FREE_KEEPS_ERRNO`]; [`SharedAllocator::free_plain`]).
#[inline(always)]
pub fn free<A: SharedAllocator>(allocator: &A, p: Ptr) {
    if A::FREE_KEEPS_ERRNO && config::plain_calls() {
        allocator.free_plain(p.cast());
        return;
    }
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return;
    };
    free_in_full(allocator, block);
}

/// [`free`] with everything around it: `errno` kept, the log, perturbing.
#[inline(never)]
fn free_in_full<A: SharedAllocator>(allocator: &A, block: NonNull<u8>) {
    let p: Ptr = block.as_ptr().cast();
    let _errno_kept = os::KeepErrno::new();
    // Log first: once freed, the block may be merged and its offset means less.
    after_call(allocator, |allocator, out| {
        let _ = writeln!(out, "[free ] {}", show(allocator, p));
    });
    if let Some(byte) = options::perturb() {
        perturb_freed(allocator, block, byte);
    }
    if let Err(fault) = allocator.free(block) {
        fail(allocator, "free", fault);
    }
}

/// `M_PERTURB` on `free`: the block's bytes are overwritten before it goes back, so a
/// program that reads freed memory reads the byte, not its old data (as glibc does).
/// A pointer the allocator does not know is left alone: `free` reports it.
#[cold]
fn perturb_freed<A: SharedAllocator>(allocator: &A, block: NonNull<u8>, byte: u8) {
    if let Ok(size) = allocator.usable_size(block) {
        // SAFETY: the allocator says the live block at `block` has `size` usable bytes.
        unsafe { block.as_ptr().write_bytes(byte, size) };
    }
}

pub fn calloc<A: SharedAllocator>(allocator: &A, count: usize, size: usize) -> Ptr {
    let Some(total) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    let block = raw(allocator.alloc_zeroed(total));
    after_call(allocator, |allocator, out| {
        let _ = writeln!(
            out,
            "[calloc] {count} x {size} -> {}",
            show(allocator, block)
        );
    });
    if block.is_null() {
        set_errno(libc::ENOMEM);
    }
    block
}

pub fn realloc<A: SharedAllocator>(allocator: &A, p: Ptr, size: usize) -> Ptr {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return malloc(allocator, size);
    };
    if size == 0 {
        // glibc's behaviour (and C17's "implementation-defined"): free, return NULL.
        free(allocator, p);
        return ptr::null_mut();
    }
    let moved = match allocator.realloc(block, size) {
        Ok(moved) => raw(moved),
        Err(fault) => fail(allocator, "realloc", fault),
    };
    after_call(allocator, |allocator, out| {
        // `p` may be freed now; only its number is printed, from before the call.
        let _ = writeln!(out, "[realloc] {size} -> {}", show(allocator, moved));
    });
    if moved.is_null() {
        set_errno(libc::ENOMEM);
    }
    moved
}

pub fn reallocarray<A: SharedAllocator>(allocator: &A, p: Ptr, count: usize, size: usize) -> Ptr {
    match count.checked_mul(size) {
        Some(total) => realloc(allocator, p, total),
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
pub fn aligned_alloc<A: SharedAllocator>(allocator: &A, align: usize, size: usize) -> Ptr {
    if !valid_alignment(align) {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate(allocator, "memalign", size, align.max(MIN_ALIGN))
}

/// # Safety
/// `out` must be valid for a pointer-sized write.
pub unsafe fn posix_memalign<A: SharedAllocator>(
    allocator: &A,
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
    let block = allocate(allocator, "memalign", size, align.max(MIN_ALIGN));
    if block.is_null() {
        return libc::ENOMEM;
    }
    set_errno(saved_errno);
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(block) };
    0
}

pub fn valloc<A: SharedAllocator>(allocator: &A, size: usize) -> Ptr {
    allocate(allocator, "memalign", size, os::page_size())
}

/// Like `valloc`, with the size rounded up to whole pages (and 0 meaning one page).
pub fn pvalloc<A: SharedAllocator>(allocator: &A, size: usize) -> Ptr {
    let page = os::page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => allocate(allocator, "memalign", rounded, page),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

pub fn malloc_usable_size<A: SharedAllocator>(allocator: &A, p: Ptr) -> usize {
    let Some(block) = NonNull::new(p.cast::<u8>()) else {
        return 0;
    };
    match allocator.usable_size(block) {
        Ok(size) => size,
        Err(fault) => fail(allocator, "malloc_usable_size", fault),
    }
}

/// `mallopt`: 1 if the allocator honoured the parameter, or if glibc would have accepted
/// it (every parameter glibc knows, and any other number: see [`options`]); 0 for the
/// values glibc refuses. `M_PERTURB` is the kit's own.
pub fn mallopt<A: SharedAllocator>(allocator: &A, param: i32, value: i32) -> i32 {
    if param == options::M_PERTURB {
        // Read the settings first, so that the environment's value, stored when they
        // are read, cannot overwrite this one later.
        let _ = config::current();
        options::set_perturb(value);
        return 1;
    }
    i32::from(allocator.set_option(param, value) || options::accepted_by_glibc(param, value))
}

/// `mallinfo2()`: the allocator's figures in glibc's fields (see [`MallInfo`]).
pub fn mallinfo2<A: SharedAllocator>(allocator: &A) -> libc::mallinfo2 {
    let saved_errno = os::errno();
    let info = allocator.mallinfo();
    set_errno(saved_errno);
    libc::mallinfo2 {
        arena: info.heap_bytes,
        ordblks: info.free_blocks,
        smblks: 0,
        hblks: info.mapped_blocks,
        hblkhd: info.mapped_bytes,
        usmblks: 0,
        fsmblks: 0,
        uordblks: info.used_bytes,
        fordblks: info.free_bytes,
        keepcost: info.top_bytes,
    }
}

/// `mallinfo()`: `mallinfo2` in `int` fields, which wrap as glibc's do past 2 GiB.
pub fn mallinfo<A: SharedAllocator>(allocator: &A) -> libc::mallinfo {
    let info = mallinfo2(allocator);
    let int = |n: usize| n as libc::c_int;
    libc::mallinfo {
        arena: int(info.arena),
        ordblks: int(info.ordblks),
        smblks: int(info.smblks),
        hblks: int(info.hblks),
        hblkhd: int(info.hblkhd),
        usmblks: int(info.usmblks),
        fsmblks: int(info.fsmblks),
        uordblks: int(info.uordblks),
        fordblks: int(info.fordblks),
        keepcost: int(info.keepcost),
    }
}

/// `malloc_trim(pad)`: 1 if memory went back to the OS, 0 if not.
pub fn malloc_trim<A: SharedAllocator>(allocator: &A, pad: usize) -> i32 {
    i32::from(allocator.trim(pad))
}

/// `malloc_info(options, stream)`: the figures as XML, in the shape of glibc's (one
/// heap, no fast bins), written to `stream` with `fputs`. `options` must be 0.
///
/// # Safety
/// `stream` must be an open `FILE`.
pub unsafe fn malloc_info<A: SharedAllocator>(
    allocator: &A,
    options: i32,
    stream: *mut libc::FILE,
) -> i32 {
    if options != 0 {
        return libc::EINVAL;
    }
    let info = allocator.mallinfo();
    let mut text = crate::info::CText::<2048>::new();
    let system = info.heap_bytes + info.mapped_bytes;
    let _ = write!(
        text,
        "<malloc version=\"1\">\n\
         <heap nr=\"0\">\n<sizes>\n</sizes>\n\
         <total type=\"fast\" count=\"0\" size=\"0\"/>\n\
         <total type=\"rest\" count=\"{free_blocks}\" size=\"{free_bytes}\"/>\n\
         <system type=\"current\" size=\"{heap}\"/>\n\
         <system type=\"max\" size=\"{heap}\"/>\n\
         <aspace type=\"total\" size=\"{heap}\"/>\n\
         <aspace type=\"mprotect\" size=\"{heap}\"/>\n\
         </heap>\n\
         <total type=\"fast\" count=\"0\" size=\"0\"/>\n\
         <total type=\"rest\" count=\"{free_blocks}\" size=\"{free_bytes}\"/>\n\
         <total type=\"mmap\" count=\"{mapped_blocks}\" size=\"{mapped_bytes}\"/>\n\
         <system type=\"current\" size=\"{system}\"/>\n\
         <system type=\"max\" size=\"{system}\"/>\n\
         <aspace type=\"total\" size=\"{system}\"/>\n\
         <aspace type=\"mprotect\" size=\"{system}\"/>\n\
         </malloc>\n",
        free_blocks = info.free_blocks,
        free_bytes = info.free_bytes,
        heap = info.heap_bytes,
        mapped_blocks = info.mapped_blocks,
        mapped_bytes = info.mapped_bytes,
    );
    // SAFETY: `text` holds no NUL and is NUL-terminated by `as_c_str`; the caller
    // guarantees `stream`. Not under any allocator lock: stdio may allocate.
    if unsafe { libc::fputs(text.as_c_str().as_ptr(), stream) } < 0 {
        return -1;
    }
    0
}

/// Writes the `[stats]` line.
pub fn write_stats(stats: &Stats, out: &mut Out) {
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
pub fn heap_dump<A: SharedAllocator>(allocator: &A) {
    let saved_errno = os::errno();
    let mut out = Out::painted(crate::out::STDERR, crate::out::colour_dumps());
    allocator.dump(&mut out);
    set_errno(saved_errno);
}

/// `malloc_stats()`: the stats line, and whatever detail the allocator adds
/// ([`SharedAllocator::stats_report`]), on stderr (where glibc's goes too).
pub fn malloc_stats<A: SharedAllocator>(allocator: &A) {
    let saved_errno = os::errno();
    allocator.stats_report(&mut Out::stderr());
    set_errno(saved_errno);
}

/// At exit (a `.fini_array` entry of the library): in debug mode with the check spaced
/// out (`MALLOC_CHECK_EVERY` above 1), one last full check, so that damage done after
/// the last periodic check is still reported (exit 3). With the check after every
/// call, the last call was checked already.
pub fn check_at_exit<A: SharedAllocator>(allocator: &A) {
    if !A::CHECK_IN_DEBUG_MODE || !config::debug_mode() {
        return;
    }
    if config::current().check_every.unwrap_or(1) > 1
        && let Err(fault) = allocator.check()
    {
        fail(allocator, "heap_check at exit", fault);
    }
}

/// `heap_check()`: 0 when every invariant holds; otherwise reports the first broken one
/// and exits 3.
pub fn heap_check<A: SharedAllocator>(allocator: &A) -> i32 {
    match allocator.check() {
        Ok(()) => 0,
        Err(fault) => fail(allocator, "heap_check", fault),
    }
}

/// Exports the whole malloc family for the shared allocator type `$allocator` (see
/// [`SharedAllocator`]), with C linkage: `export_malloc!(Locked<TheHeap>)` for a heap
/// behind the kit's lock.
///
/// Use once, at the root of a phase's `cdylib` crate. Two crates that both use it cannot
/// be linked into one program (they would both define `malloc`), so a phase's policy is
/// a library of its own and its `cdylib` a thin package around it.
///
/// Under `cfg(test)` nothing is exported: unit tests drive the allocator type directly,
/// while the test harness itself keeps using the C library's allocator.
#[macro_export]
macro_rules! export_malloc {
    ($allocator:ty) => {
        // A test build exports nothing, but still names the allocator type, so the
        // compiler checks it and the crate's imports of it count as used.
        #[cfg(test)]
        const _: core::marker::PhantomData<$allocator> = core::marker::PhantomData;

        #[cfg(not(test))]
        static GLOBAL: $allocator = <$allocator as $crate::SharedAllocator>::NEW;

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
            #[unsafe(no_mangle)]
            pub extern "C" fn mallinfo() -> $crate::libc::mallinfo {
                abi::mallinfo(&GLOBAL)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn mallinfo2() -> $crate::libc::mallinfo2 {
                abi::mallinfo2(&GLOBAL)
            }
            #[unsafe(no_mangle)]
            pub extern "C" fn malloc_trim(pad: usize) -> i32 {
                abi::malloc_trim(&GLOBAL, pad)
            }
            /// # Safety
            /// `stream` must be an open `FILE`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn malloc_info(
                options: i32,
                stream: *mut $crate::libc::FILE,
            ) -> i32 {
                // SAFETY: forwarded from our caller's contract.
                unsafe { abi::malloc_info(&GLOBAL, options, stream) }
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
                $crate::fork::prepare(&GLOBAL)
            }
            extern "C" fn after_fork_in_parent() {
                $crate::fork::in_parent(&GLOBAL)
            }
            extern "C" fn after_fork_in_child() {
                $crate::fork::in_child(&GLOBAL)
            }
            /// Hands the fork handlers to the kit when the library is loaded (an
            /// `.init_array` constructor), which registers them once the process has
            /// threads; see `preload_kit::fork`.
            extern "C" fn install_fork_handlers() {
                $crate::fork::install(before_fork, after_fork_in_parent, after_fork_in_child);
            }
            /// Debug mode's last full check, when the process exits (see
            /// [`abi::check_at_exit`]).
            extern "C" fn check_at_exit() {
                abi::check_at_exit(&GLOBAL)
            }
            #[used]
            #[unsafe(link_section = ".fini_array")]
            static CHECK_AT_EXIT: extern "C" fn() = check_at_exit;

            #[used]
            #[unsafe(link_section = ".init_array")]
            static INSTALL_FORK_HANDLERS: extern "C" fn() = install_fork_handlers;

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
