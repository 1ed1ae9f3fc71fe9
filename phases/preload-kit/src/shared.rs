//! What `export_malloc!` exports: an allocator that every thread may call at once.

use core::ptr::NonNull;

use crate::out::Out;
use crate::{Fault, Location, MallInfo, Stats};

/// An allocator shared by every thread of the process, in the spirit of Rust's
/// `GlobalAlloc`: `&self` methods, `Sync`, one value in a `static`.
///
/// [`crate::Locked`] makes one from any single-threaded [`crate::Heap`] by putting a
/// lock around it; an allocator with many locks, or with per-thread state, implements
/// this trait itself. [`crate::export_malloc!`] turns either into the C functions.
///
/// The contract:
/// - **Lazy.** [`SharedAllocator::NEW`] builds nothing: it is the value of a `static`,
///   and `malloc` may be called before any constructor runs (the dynamic loader and the
///   C library allocate early). The first call of any method, from any thread, builds
///   the allocator (with the settings of [`crate::config::current`]).
/// - **No re-entry.** No method calls an exported function (`malloc`, `free`, …) or
///   anything that allocates; the kit calls one method at a time per thread.
/// - **Pointers arrive unchecked.** `free`, `realloc` and `usable_size` validate them
///   and answer with a [`Fault`]; the kit reports it (through
///   [`SharedAllocator::locate`]) and exits.
/// - **Fork.** Around `fork`, the kit calls [`SharedAllocator::prepare_fork`] in the
///   forking thread, then [`SharedAllocator::after_fork_in_parent`] in the parent and
///   [`SharedAllocator::after_fork_in_child`] in the child. After `prepare_fork`
///   returns no other thread may be inside the allocator (so the child's copy is
///   consistent) until the parent handler runs; afterwards the child, whose only thread
///   is the one that forked, must be able to allocate and free: every lock free again,
///   and the state of threads that do not exist in the child given up or adopted.
pub trait SharedAllocator: Sync {
    /// The allocator before its first call: the initial value of the `static`.
    const NEW: Self;

    /// Whether debug mode runs [`SharedAllocator::check`] after calls.
    const CHECK_IN_DEBUG_MODE: bool = false;

    /// Whether [`SharedAllocator::free`] leaves `errno` as it found it by itself (it
    /// makes no system call, or saves `errno` around those it makes). Then the kit's
    /// `free` need not save and restore it on every call (a call into the C library
    /// for `errno`'s address). False by default: the kit keeps it.
    const FREE_KEEPS_ERRNO: bool = false;

    /// See [`crate::Heap::alloc`].
    fn alloc(&self, size: usize, align: usize) -> Option<NonNull<u8>>;

    /// `malloc(size)` when the kit has nothing to add ([`crate::config::plain_calls`]:
    /// the settings read, no debug mode, no `M_PERTURB`): a block aligned to
    /// [`crate::MIN_ALIGN`], or null with `errno` set to `ENOMEM`. The default asks
    /// [`SharedAllocator::alloc`]. An allocator overrides it to skip tests that the
    /// kit's flag has already made (its own debug setting), or to give its slow path
    /// the whole call, `errno` included, so that the fast one needs no stack frame.
    #[inline(always)]
    fn malloc_plain(&self, size: usize) -> *mut u8 {
        match self.alloc(size, crate::MIN_ALIGN) {
            Some(block) => block.as_ptr(),
            None => {
                crate::os::set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }

    /// See [`crate::Heap::alloc_zeroed`].
    fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>>;

    /// See [`crate::Heap::free`].
    fn free(&self, ptr: NonNull<u8>) -> Result<(), Fault>;

    /// `free(ptr)` when the kit has nothing to add ([`crate::config::plain_calls`])
    /// and [`SharedAllocator::FREE_KEEPS_ERRNO`]: nothing for null, else frees, or
    /// reports the fault with [`crate::report::fail`] and exits. The default calls
    /// [`SharedAllocator::free`]; an allocator overrides it so that its slow path
    /// reports by itself and the fast one needs no stack frame for a `Result`, or to
    /// leave null to its slow path (a null pointer is in none of its blocks).
    #[inline(always)]
    fn free_plain(&self, ptr: *mut u8)
    where
        Self: Sized,
    {
        if let Some(ptr) = NonNull::new(ptr)
            && let Err(fault) = self.free(ptr)
        {
            crate::report::fail(self, "free", fault);
        }
    }

    /// See [`crate::Heap::usable_size`].
    fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Fault>;

    /// See [`crate::Heap::realloc`].
    fn realloc(&self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault>;

    /// `mallopt(param, value)`: true if the allocator honoured the parameter.
    fn set_option(&self, param: i32, value: i32) -> bool;

    /// Where `addr` is, in terms that do not depend on ASLR (for dumps, logs, errors).
    fn locate(&self, addr: usize) -> Location;

    /// `heap_dump`: every block in address order, then the `[stats]` line (see
    /// [`crate::abi::write_stats`]), as one consistent picture.
    fn dump(&self, out: &mut Out);

    /// The byte counts behind the `[stats]` line.
    fn stats(&self) -> Stats;

    /// `malloc_stats`: the `[stats]` line, then any detail the allocator keeps beyond
    /// the totals (phase 4: its bins, through [`crate::Heap::stats_detail`]).
    fn stats_report(&self, out: &mut Out) {
        crate::abi::write_stats(&self.stats(), out);
    }

    /// Walks everything the allocator owns and checks every invariant it relies on.
    fn check(&self) -> Result<(), Fault>;

    /// See [`crate::Heap::mallinfo`].
    fn mallinfo(&self) -> MallInfo {
        MallInfo::from_stats(&self.stats())
    }

    /// See [`crate::Heap::trim`].
    fn trim(&self, _pad: usize) -> bool {
        false
    }

    /// Before `fork`, in the forking thread: keep every other thread out.
    fn prepare_fork(&self);

    /// After `fork`, in the parent: let the other threads in again.
    fn after_fork_in_parent(&self);

    /// After `fork`, in the child: make the allocator usable by the child's one thread.
    fn after_fork_in_child(&self);
}
