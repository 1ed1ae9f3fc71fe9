//! # DELIBERATELY BROKEN: no lock
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (its modules, included unchanged) behind the C functions (`../shared/c_abi.rs`)
//! with nothing around the heap: two threads that call `malloc` at once both edit the
//! free list. Single-threaded programs cannot tell; `threads/stress` and
//! `threads/bench` must.

#![cfg_attr(not(test), no_std)]

#[path = "../../../../phases/phase1-sbrk-freelist/src/block.rs"]
pub mod block;
#[path = "../../../../phases/phase1-sbrk-freelist/src/free_list.rs"]
pub mod free_list;
#[path = "../../../../phases/phase1-sbrk-freelist/src/heap.rs"]
pub mod heap;

// The exported C functions; left out of test builds, which use the C library's malloc.
#[cfg(not(test))]
#[path = "../../shared/c_abi.rs"]
pub mod c_abi;

use core::cell::UnsafeCell;

use heap::FreeListHeap;
use preload_kit::{Config, Heap};

/// The heap, built on first use, with no lock.
struct Unlocked(UnsafeCell<Option<FreeListHeap>>);

// SAFETY: this is the defect under test. `Unlocked` is NOT safe to share: threads reach
// the heap through it at the same time. The claim is made so that it can live in a
// static, as the heap of an allocator without a lock does.
unsafe impl Sync for Unlocked {}

static HEAP: Unlocked = Unlocked(UnsafeCell::new(None));

/// The defect: `f` runs on the heap whoever else is using it.
pub fn with_heap<R>(f: impl FnOnce(&mut FreeListHeap) -> R) -> R {
    // SAFETY: sound only while one thread at a time calls in, which is exactly what this
    // crate fails to ensure. Single-threaded programs are fine.
    let slot = unsafe { &mut *HEAP.0.get() };
    f(slot.get_or_insert_with(|| FreeListHeap::new(&Config::from_env())))
}
