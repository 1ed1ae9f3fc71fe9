//! The operating system, seen through the few calls an allocator needs.
//!
//! Every function here is a thin wrapper that turns the C convention for failure
//! (`(void *)-1`, `MAP_FAILED`, a negative return) into `Option`, so no caller
//! forgets to check. None of these calls allocates.
//!
//! The calls that manage memory (the break, mappings, the page size) leave `errno` as
//! they found it, failing or not: they answer through their return values, and `free`,
//! which may trim or unmap, must not change what the program sees. A heap that makes
//! every system call through them keeps `errno` in `free` without saving it on every
//! call ([`crate::Heap::FREE_KEEPS_ERRNO`]); `malloc`'s `ENOMEM` is set by the kit.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Reads the calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(value: i32) {
    // SAFETY: `__errno_location` always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() = value }
}

/// Keeps the calling thread's `errno` as it was when made, restoring it when dropped:
/// `free` and the report functions must not change what the program sees. One lookup of
/// errno's address serves both ends (it sits on `free`'s fast path).
pub struct KeepErrno {
    location: *mut i32,
    value: i32,
}

impl KeepErrno {
    pub fn new() -> KeepErrno {
        // SAFETY: `__errno_location` always returns a valid pointer to this thread's
        // errno, which lives as long as the thread (and so as this guard).
        let location = unsafe { libc::__errno_location() };
        // SAFETY: as above.
        let value = unsafe { *location };
        KeepErrno { location, value }
    }
}

impl Default for KeepErrno {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeepErrno {
    fn drop(&mut self) {
        // SAFETY: the pointer is this thread's errno (a guard never leaves its thread:
        // it holds a raw pointer, so it is neither Send nor Sync).
        unsafe { *self.location = self.value }
    }
}

/// The current program break: where the brk heap ends now.
pub fn current_break() -> usize {
    // SAFETY: `sbrk(0)` only reads the break; it cannot fail or move memory.
    unsafe { libc::sbrk(0) as usize }
}

/// Moves the program break by `increment` bytes and returns the old break, or `None`
/// when the kernel refuses (`RLIMIT_DATA`, or a mapping in the way).
///
/// The break is process-wide state: callers serialise through the allocator lock,
/// and must not assume the break is where they left it (other code may call `sbrk`).
pub fn sbrk(increment: isize) -> Option<usize> {
    let _errno_kept = KeepErrno::new();
    // SAFETY: moving the break only changes which addresses are mapped above the old
    // break; no memory the allocator has handed out lies above it.
    let old = unsafe { libc::sbrk(increment) };
    if old as isize == -1 {
        None
    } else {
        Some(old as usize)
    }
}

/// Maps `len` bytes of fresh, zeroed, private memory, or `None` when the kernel refuses.
pub fn map_anonymous(len: usize) -> Option<NonNull<u8>> {
    let _errno_kept = KeepErrno::new();
    // SAFETY: an anonymous private mapping with a null hint cannot replace existing
    // mappings; the kernel picks a free range.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Unmaps `[start, start + len)`.
///
/// # Safety
/// The range must be a mapping (or part of one) that this allocator created with
/// [`map_anonymous`] and that nothing references any more.
pub unsafe fn unmap(start: NonNull<u8>, len: usize) -> bool {
    let _errno_kept = KeepErrno::new();
    // SAFETY: the caller guarantees the range is ours and unused.
    unsafe { libc::munmap(start.as_ptr().cast(), len) == 0 }
}

/// Replaces the pages of `[start, start + len)` with a reservation: the range stays
/// taken, so the kernel maps nothing else there, but any access faults (`PROT_NONE`)
/// and its memory goes back to the OS. False if the kernel refuses (the range is then
/// as it was).
///
/// # Safety
/// `[start, start + len)` must be a whole mapping of ours that nothing uses any more.
pub unsafe fn reserve(start: NonNull<u8>, len: usize) -> bool {
    let _errno_kept = KeepErrno::new();
    // SAFETY: MAP_FIXED replaces exactly this range, which the caller guarantees is
    // ours and unused; nothing else is touched.
    let p = unsafe {
        libc::mmap(
            start.as_ptr().cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    p == start.as_ptr().cast()
}

/// Resizes a mapping made by [`map_anonymous`], letting the kernel move it.
///
/// # Safety
/// `[start, start + old_len)` must be one whole mapping made by this allocator.
pub unsafe fn remap(start: NonNull<u8>, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
    let _errno_kept = KeepErrno::new();
    // SAFETY: the caller guarantees the range is one mapping of ours; MREMAP_MAYMOVE
    // lets the kernel move it without touching other mappings.
    let p = unsafe {
        libc::mremap(
            start.as_ptr().cast(),
            old_len,
            new_len,
            libc::MREMAP_MAYMOVE,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// The size of a virtual-memory page: the kernel's word for it in the auxiliary
/// vector, read once. Not `sysconf(_SC_PAGESIZE)`: glibc's `sysconf` jumps through a
/// table in its read-only data, and touching that page made the kernel map up to 64 KiB
/// of libc's data around it (fault-around) that glibc's own malloc never touches.
pub fn page_size() -> usize {
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => {
            // (getauxval sets errno when the entry is missing.)
            let _errno_kept = KeepErrno::new();
            // SAFETY: getauxval only reads the auxiliary vector; it does not allocate.
            let size = match unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize {
                0 => 4096,
                size => size,
            };
            // Every thread that races here stores the same value.
            PAGE_SIZE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

/// Writes all of `bytes` to `fd`, retrying after interrupts and short writes.
/// Gives up silently on any other error: there is nowhere left to report it.
pub fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice; write reads at most `bytes.len()` bytes of it.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = bytes.get(n as usize..).unwrap_or(&[]);
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// Whether `fd` is a terminal (`isatty`). Does not allocate; may set `errno`.
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only queries the descriptor (an ioctl); any fd value is allowed.
    unsafe { libc::isatty(fd) == 1 }
}

/// Ends the process at once with `code`, running no atexit handlers (which may allocate).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Reads an environment variable without allocating: `getenv` returns a pointer into
/// the environment block. Returns `None` when unset or not UTF-8.
/// The value of the environment variable `name`, as C text (for a path to `open`).
pub fn env_c_str(name: &core::ffi::CStr) -> Option<&'static core::ffi::CStr> {
    // SAFETY: `name` is NUL-terminated; getenv does not allocate.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: as in `env_var`: a NUL-terminated string in the environment block.
    (!value.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(value) })
}

pub fn env_var(name: &core::ffi::CStr) -> Option<&'static str> {
    // SAFETY: `name` is NUL-terminated; getenv does not allocate.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returned a non-null pointer to a NUL-terminated string in the
    // environment block, which lives for the whole process unless the program calls
    // setenv on the same name (the allocator reads its settings once, at start-up).
    let value = unsafe { core::ffi::CStr::from_ptr(value) };
    value.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory calls answer through their return values and leave `errno` alone even
    /// when the kernel refuses: `free` relies on it (`Heap::FREE_KEEPS_ERRNO`).
    #[test]
    fn failing_memory_calls_keep_errno() {
        const MARK: i32 = 12345;
        set_errno(MARK);
        assert_eq!(sbrk(isize::MAX), None);
        assert_eq!(errno(), MARK, "sbrk");
        assert_eq!(map_anonymous(usize::MAX - 4095), None);
        assert_eq!(errno(), MARK, "mmap");
        let misaligned = NonNull::new(4097 as *mut u8).unwrap();
        // SAFETY: the kernel refuses a misaligned start (EINVAL) before touching anything.
        assert!(!unsafe { unmap(misaligned, 4096) });
        assert_eq!(errno(), MARK, "munmap");
        // SAFETY: as above: a misaligned start is refused and nothing is replaced.
        assert!(!unsafe { reserve(misaligned, 4096) });
        assert_eq!(errno(), MARK, "mmap(MAP_FIXED)");
        // SAFETY: as above (mremap refuses a misaligned old address).
        assert_eq!(unsafe { remap(misaligned, 4096, 8192) }, None);
        assert_eq!(errno(), MARK, "mremap");
    }
}
