//! # DELIBERATELY BROKEN: no lock
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged), exported by the kit like any shared allocator, with
//! nothing around the heap: two threads that call `malloc` at once both edit the free
//! list. Single-threaded programs cannot tell; `threads/stress` and `threads/bench`
//! must.

#![cfg_attr(not(test), no_std)]

use core::cell::UnsafeCell;

use broken_frame::{Access, SharedThrough};
use preload_kit::{Heap, config};
use sbrk_freelist::FreeListHeap;

/// The heap, built on first use, with no lock.
pub struct Unlocked(UnsafeCell<Option<FreeListHeap>>);

// SAFETY: this is the defect under test. `Unlocked` is NOT safe to share: threads reach
// the heap through it at the same time. The claim is made so that it can be exported as
// a shared allocator, as an allocator without a lock is.
unsafe impl Sync for Unlocked {}

impl Access for Unlocked {
    const NEW: Self = Unlocked(UnsafeCell::new(None));

    /// The defect: `f` runs on the heap whoever else is using it.
    fn with<R>(&self, f: impl FnOnce(&mut FreeListHeap) -> R) -> R {
        // SAFETY: sound only while one thread at a time calls in, which is exactly what
        // this crate fails to ensure. Single-threaded programs are fine.
        let slot = unsafe { &mut *self.0.get() };
        f(slot.get_or_insert_with(|| FreeListHeap::new(&config::current())))
    }

    /// Nothing to hold: there is no lock.
    fn prepare_fork(&self) {}

    fn after_fork_in_parent(&self) {}

    fn after_fork_in_child(&self) {}
}

preload_kit::export_malloc!(SharedThrough<Unlocked>);
