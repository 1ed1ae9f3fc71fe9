//! The lock wrapper: a single-threaded [`Heap`] made into a [`SharedAllocator`].

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use crate::lock::Lock;
use crate::out::Out;
use crate::shared::SharedAllocator;
use crate::{Config, Fault, Heap, Location, MallInfo, Stats, abi, config};

/// A heap behind one lock, built lazily on the first call: what a phase whose policy
/// knows nothing of threads exports (`export_malloc!(Locked<TheHeap>)`).
///
/// Lazy, because `malloc` can be called before any constructor of ours runs (the
/// dynamic loader and libc allocate early); so nothing may depend on an init function
/// having run.
pub struct Locked<H> {
    lock: Lock,
    heap: UnsafeCell<Option<H>>,
    /// Builds the heap on the first call: [`Heap::new`], unless the wrapper was made by
    /// [`Locked::with_builder`].
    build: fn(&Config) -> H,
}

// SAFETY: `heap` is only reached through `with`, which holds `lock` for the whole access,
// so one thread at a time uses the heap; across `fork` the lock is held (see
// `prepare_fork`), so the child's copy is not in the middle of a change.
unsafe impl<H> Sync for Locked<H> {}

impl<H: Heap> Locked<H> {
    /// The wrapper around a heap that [`Heap::new`] will build on the first call.
    pub const fn new() -> Self {
        Self::with_builder(H::new)
    }

    /// The wrapper around a heap that `build` will make on the first call (tests build
    /// heaps that grow with `mmap` rather than `sbrk`).
    pub const fn with_builder(build: fn(&Config) -> H) -> Self {
        Locked {
            lock: Lock::new(),
            heap: UnsafeCell::new(None),
            build,
        }
    }

    /// Runs `f` on the heap with the lock held, building the heap first if this is the
    /// first call. `f` must not call back into the allocator (the lock is not recursive).
    /// Always inlined: it is the lock around every call, and as a function of its own it
    /// was one more call on each `malloc` (phase 2's, once its heap's `alloc` was inlined).
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held, so this is the only reference to the heap.
        let slot = unsafe { &mut *self.heap.get() };
        let heap = match slot {
            Some(heap) => heap,
            None => self.build(slot),
        };
        f(heap)
    }

    /// The first call's work, kept out of line: a heap's state is kilobytes (phase 4's
    /// bins, phase 3's ring of recent mappings), and building it inline would give every
    /// call a frame that size, with a stack probe per page.
    #[cold]
    #[inline(never)]
    fn build<'a>(&self, slot: &'a mut Option<H>) -> &'a mut H {
        slot.insert((self.build)(&config::current()))
    }
}

impl<H: Heap> Default for Locked<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Heap> SharedAllocator for Locked<H> {
    const NEW: Self = Self::new();
    const CHECK_IN_DEBUG_MODE: bool = H::CHECK_IN_DEBUG_MODE;
    /// The lock keeps `errno` where it may sleep or wake a sleeper; the rest is the heap's.
    const FREE_KEEPS_ERRNO: bool = H::FREE_KEEPS_ERRNO;

    fn alloc(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.with(|heap| heap.alloc(size, align))
    }

    fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        self.with(|heap| heap.alloc_zeroed(size))
    }

    fn free(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.with(|heap| heap.free(ptr))
    }

    fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        self.with(|heap| heap.usable_size(ptr))
    }

    fn realloc(&self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        self.with(|heap| heap.realloc(ptr, size))
    }

    fn set_option(&self, param: i32, value: i32) -> bool {
        self.with(|heap| heap.set_option(param, value))
    }

    fn locate(&self, addr: usize) -> Location {
        self.with(|heap| heap.locate(addr))
    }

    fn dump(&self, out: &mut Out) {
        self.with(|heap| {
            heap.dump_blocks(out);
            abi::write_stats(&heap.stats(), out);
        })
    }

    fn stats(&self) -> Stats {
        self.with(|heap| heap.stats())
    }

    /// The totals and the heap's detail under one hold of the lock: one picture.
    fn stats_report(&self, out: &mut Out) {
        self.with(|heap| {
            abi::write_stats(&heap.stats(), out);
            heap.stats_detail(out);
        })
    }

    fn check(&self) -> Result<(), Fault> {
        self.with(|heap| heap.check())
    }

    fn mallinfo(&self) -> MallInfo {
        self.with(|heap| heap.mallinfo())
    }

    fn trim(&self, pad: usize) -> bool {
        self.with(|heap| heap.trim(pad))
    }

    /// Holds the lock across `fork`, so no other thread is inside the heap.
    fn prepare_fork(&self) {
        self.lock.hold_for_fork();
    }

    fn after_fork_in_parent(&self) {
        self.lock.release_after_fork();
    }

    /// The child's only thread is the one that took the lock in `prepare_fork`.
    fn after_fork_in_child(&self) {
        self.lock.reset_in_child();
    }
}
