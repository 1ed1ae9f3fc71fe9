//! # malloc-recorder: every allocation call a program makes, written to a file
//!
//! Preloaded (`harness record -- CMD` does it), this library exports the malloc family,
//! serves each call with glibc's own allocator (`__libc_malloc` and friends, exported by
//! glibc for exactly this; `dlsym`, which allocates, is never needed), and appends one
//! fixed-size binary [`Record`] per call to `$MALLOC_RECORD.PID` (the `record-format`
//! package defines it, for this library and for the harness that reads it). `harness record`
//! turns those files into a thread-aware trace (`harness/src/trace.rs`) that
//! `bench_alloc --trace` replays under any allocator.
//!
//! Nothing is allocated while recording: records go into a static buffer, written out
//! with write(2) when it fills, before a fork, and at exit. One lock covers the call
//! into glibc and the record, so the file's order is the order in which the calls took
//! effect: a block freed by one thread and handed out again to another appears freed
//! first. (Recording thus serialises the program's allocation calls; it measures nothing,
//! so that costs only time.)
//!
//! A child of `fork` writes to its own file (`$MALLOC_RECORD.CHILDPID`), opened on its
//! first call; what the parent had buffered is written out before the fork, so neither
//! process writes the other's records. Records written after a process stops calling
//! `exit` (`_exit`, `exec`) are lost; `harness record` ignores frees of blocks it never
//! saw allocated, and blocks never freed are simply live at the end.
//!
//! `valloc`, `pvalloc` and `malloc_usable_size` are left to glibc: they are rare, and
//! `malloc_usable_size` needs no record.

#![cfg_attr(not(test), no_std)]

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_void};

use record_format::{Kind, Record};

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
}

const BUFFER: usize = 64 * 1024;

/// The recorder's state, behind [`LOCK`].
struct State {
    /// The file, or -1 when not open (yet, or since a fork).
    fd: c_int,
    /// Recording is off: `MALLOC_RECORD` unset, or the file could not be opened.
    off: bool,
    /// `exit` has begun: later records (other libraries' destructors) are written at once.
    exiting: bool,
    filled: usize,
    buffer: [u8; BUFFER],
}

struct Shared {
    lock: UnsafeCell<libc::pthread_mutex_t>,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is touched only with `lock` held (see `with_lock`), and `lock` is a
// pthread mutex, made to be shared.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    lock: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    state: UnsafeCell::new(State {
        fd: -1,
        off: false,
        exiting: false,
        filled: 0,
        buffer: [0; BUFFER],
    }),
};

/// Runs `call` (the call into glibc) and records what it did, with the lock held
/// throughout so that the file's order is the calls' order.
fn recorded(
    kind: Kind,
    old: *mut c_void,
    size: u64,
    align: u64,
    call: impl FnOnce() -> *mut c_void,
) -> *mut c_void {
    // SAFETY: a statically initialised mutex; unlocked below on the same thread.
    unsafe { libc::pthread_mutex_lock(SHARED.lock.get()) };
    let result = call();
    let record = Record {
        kind: kind.code(),
        // SAFETY: pthread_self has no preconditions and never allocates.
        thread: unsafe { libc::pthread_self() } as u64,
        old: old as u64,
        size,
        align,
        result: result as u64,
    };
    // SAFETY: the lock is held, so no other thread touches the state.
    let state = unsafe { &mut *SHARED.state.get() };
    append(state, &record);
    // SAFETY: locked above by this thread.
    unsafe { libc::pthread_mutex_unlock(SHARED.lock.get()) };
    result
}

fn append(state: &mut State, record: &Record) {
    if state.off {
        return;
    }
    if state.fd < 0 && !open_file(state) {
        state.off = true;
        return;
    }
    const SIZE: usize = Record::BYTES;
    if state.filled + SIZE > BUFFER {
        flush(state);
    }
    if let Some(room) = state.buffer.get_mut(state.filled..state.filled + SIZE) {
        room.copy_from_slice(&record.to_bytes());
        state.filled += SIZE;
    }
    if state.exiting {
        flush(state);
    }
}

/// Opens `$MALLOC_RECORD.PID`; false if the variable is unset or the file cannot be
/// created.
fn open_file(state: &mut State) -> bool {
    // SAFETY: getenv reads the environment without allocating; the name is NUL-terminated.
    let prefix = unsafe { libc::getenv(c"MALLOC_RECORD".as_ptr()) };
    if prefix.is_null() {
        return false;
    }
    let mut path = [0u8; 4096];
    let mut len = 0;
    // SAFETY: getenv returned a NUL-terminated string.
    let prefix = unsafe { core::ffi::CStr::from_ptr(prefix) }.to_bytes();
    if prefix.len() + 24 > path.len() {
        return false;
    }
    path[..prefix.len()].copy_from_slice(prefix);
    len += prefix.len();
    path[len] = b'.';
    len += 1;
    // SAFETY: getpid has no preconditions.
    let mut pid = unsafe { libc::getpid() } as u64;
    let mut digits = [0u8; 20];
    let mut count = 0;
    loop {
        digits[count] = b'0' + (pid % 10) as u8;
        count += 1;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    for i in (0..count).rev() {
        path[len] = digits[i];
        len += 1;
    }
    // `path[len]` is still 0: the terminating NUL.
    // SAFETY: `path` is NUL-terminated; open does not allocate.
    let fd = unsafe {
        libc::open(
            path.as_ptr().cast::<c_char>(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    state.fd = fd;
    fd >= 0
}

/// Writes the buffer out (retrying short writes and EINTR).
fn flush(state: &mut State) {
    let mut done = 0;
    while done < state.filled && state.fd >= 0 {
        // SAFETY: writes bytes of our own buffer, in bounds.
        let n = unsafe {
            libc::write(
                state.fd,
                state.buffer.as_ptr().add(done).cast(),
                state.filled - done,
            )
        };
        if n > 0 {
            done += n as usize;
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            break;
        }
    }
    state.filled = 0;
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// `free` keeps errno (POSIX 2024), and glibc's own does; our bookkeeping (write) could
/// change it, so it is put back.
fn keeping_errno<T>(body: impl FnOnce() -> T) -> T {
    let saved = errno();
    let value = body();
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = saved };
    value
}

#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: glibc's malloc, with the caller's argument.
    recorded(
        Kind::Malloc,
        core::ptr::null_mut(),
        size as u64,
        0,
        || unsafe { __libc_malloc(size) },
    )
}

/// # Safety
/// `ptr` is NULL or a live block from this allocator, as for C's `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    keeping_errno(|| {
        recorded(Kind::Free, ptr, 0, 0, || {
            // SAFETY: the caller's contract, passed on to glibc's free.
            unsafe { __libc_free(ptr) };
            core::ptr::null_mut()
        })
    });
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let total = count.checked_mul(size).map_or(u64::MAX, |t| t as u64);
    // SAFETY: glibc's calloc checks the product itself.
    recorded(Kind::Calloc, core::ptr::null_mut(), total, 0, || unsafe {
        __libc_calloc(count, size)
    })
}

/// # Safety
/// `ptr` is NULL or a live block from this allocator, as for C's `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller's contract, passed on to glibc's realloc.
    recorded(Kind::Realloc, ptr, size as u64, 0, || unsafe {
        __libc_realloc(ptr, size)
    })
}

fn aligned(align: usize, size: usize) -> *mut c_void {
    // SAFETY: glibc's memalign validates the alignment itself.
    recorded(
        Kind::Memalign,
        core::ptr::null_mut(),
        size as u64,
        align as u64,
        || unsafe { __libc_memalign(align, size) },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned(align, size)
}

#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    aligned(align, size)
}

/// # Safety
/// `out` must be valid for a pointer write, as for C's `posix_memalign`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if align < core::mem::size_of::<usize>() || !align.is_power_of_two() {
        return libc::EINVAL;
    }
    let block = aligned(align, size);
    if block.is_null() && size != 0 {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { out.write(block) };
    0
}

/// Before `fork`: take the lock (no thread is mid-record in the child) and write out the
/// buffer, so the child does not inherit records that are the parent's to write.
extern "C" fn before_fork() {
    // SAFETY: as in `recorded`; released by one of the two handlers below.
    unsafe { libc::pthread_mutex_lock(SHARED.lock.get()) };
    // SAFETY: the lock is held.
    flush(unsafe { &mut *SHARED.state.get() });
}

extern "C" fn after_fork_in_parent() {
    // SAFETY: locked by `before_fork` on this thread.
    unsafe { libc::pthread_mutex_unlock(SHARED.lock.get()) };
}

/// In the child: the parent's file is the parent's; the child opens its own on its
/// next call. The lock is made new rather than unlocked (the child has one thread).
extern "C" fn after_fork_in_child() {
    // SAFETY: the child has only this thread, which holds the lock; nothing else can
    // see the state.
    unsafe {
        let state = &mut *SHARED.state.get();
        if state.fd >= 0 {
            libc::close(state.fd);
        }
        state.fd = -1;
        state.filled = 0;
        SHARED.lock.get().write(libc::PTHREAD_MUTEX_INITIALIZER);
    }
}

extern "C" fn at_start() {
    // SAFETY: plain functions that live as long as the library.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        )
    };
}

/// At exit (after `atexit` handlers, which may still free): the last records.
extern "C" fn at_exit() {
    // SAFETY: as in `recorded`.
    unsafe { libc::pthread_mutex_lock(SHARED.lock.get()) };
    // SAFETY: the lock is held.
    let state = unsafe { &mut *SHARED.state.get() };
    flush(state);
    state.exiting = true;
    // SAFETY: locked above by this thread.
    unsafe { libc::pthread_mutex_unlock(SHARED.lock.get()) };
}

#[used]
#[unsafe(link_section = ".init_array")]
static AT_START: extern "C" fn() = at_start;

#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// The precompiled `core` names this symbol; with `panic = "abort"` it is never called.
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
