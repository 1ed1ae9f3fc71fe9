//! # DELIBERATELY BROKEN: a spin lock that ignores `fork`
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged), exported by the kit like any shared allocator, with a
//! spin lock around the heap and a fork contract it does not keep: its fork handlers
//! do nothing. When a thread holds the lock at the moment another thread forks, the
//! child inherits it held by a thread that does not exist there, and its first
//! `malloc` spins for ever. `threads/fork` forks 40 times while four threads allocate.
//!
//! (A `pthread_mutex_t` would hide the defect on glibc 2.34 and later: in a
//! single-threaded process, which a forked child is, glibc takes a private mutex
//! without looking at it. A spin lock, as students often write, does not.)

#![cfg_attr(not(test), no_std)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use broken_frame::{Access, SharedThrough};
use preload_kit::{Heap, config, libc};
use sbrk_freelist::FreeListHeap;

pub struct SpinLocked {
    held: AtomicBool,
    heap: UnsafeCell<Option<FreeListHeap>>,
}

// SAFETY: `heap` is only reached by `with`, with `held` taken (between threads of one
// process, that is sound; across `fork` it is the defect).
unsafe impl Sync for SpinLocked {}

impl Access for SpinLocked {
    const NEW: Self = SpinLocked {
        held: AtomicBool::new(false),
        heap: UnsafeCell::new(None),
    };

    /// Runs `f` on the heap with the spin lock held.
    fn with<R>(&self, f: impl FnOnce(&mut FreeListHeap) -> R) -> R {
        while self
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: sched_yield has no preconditions; yielding lets the holder run when
            // threads outnumber cores.
            unsafe { libc::sched_yield() };
        }
        // SAFETY: the lock is held, so this is the only reference to the heap.
        let slot = unsafe { &mut *self.heap.get() };
        let result = f(slot.get_or_insert_with(|| FreeListHeap::new(&config::current())));
        self.held.store(false, Ordering::Release);
        result
    }

    /// The defect: another thread may hold the lock across the `fork`...
    fn prepare_fork(&self) {}

    fn after_fork_in_parent(&self) {}

    /// ...and nothing releases it in the child.
    fn after_fork_in_child(&self) {}
}

preload_kit::export_malloc!(SharedThrough<SpinLocked>);
