//! # DELIBERATELY BROKEN: a spin lock without fork handlers
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (its modules, included unchanged) behind the C functions (`../shared/c_abi.rs`),
//! with a spin lock around the heap and no `pthread_atfork` handlers. When a thread
//! holds the lock at the moment another thread forks, the child inherits it held by a
//! thread that does not exist there, and its first `malloc` spins for ever.
//! `threads/fork` forks 40 times while four threads allocate.
//!
//! (A `pthread_mutex_t` would hide the defect on glibc 2.34 and later: in a
//! single-threaded process, which a forked child is, glibc takes a private mutex
//! without looking at it. A spin lock, as students often write, does not.)

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
use core::sync::atomic::{AtomicBool, Ordering};

use heap::FreeListHeap;
use preload_kit::{Config, Heap, libc};

struct SpinLocked {
    held: AtomicBool,
    heap: UnsafeCell<Option<FreeListHeap>>,
}

// SAFETY: `heap` is only reached by `with_heap`, with `held` taken (between threads of
// one process, that is sound; across `fork` it is the defect).
unsafe impl Sync for SpinLocked {}

static HEAP: SpinLocked = SpinLocked {
    held: AtomicBool::new(false),
    heap: UnsafeCell::new(None),
};

/// Runs `f` on the heap with the spin lock held. The defect: nothing releases the lock
/// in a child forked while another thread held it.
pub fn with_heap<R>(f: impl FnOnce(&mut FreeListHeap) -> R) -> R {
    while HEAP
        .held
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: sched_yield has no preconditions; yielding lets the holder run when
        // threads outnumber cores.
        unsafe { libc::sched_yield() };
    }
    // SAFETY: the lock is held, so this is the only reference to the heap.
    let slot = unsafe { &mut *HEAP.heap.get() };
    let result = f(slot.get_or_insert_with(|| FreeListHeap::new(&Config::from_env())));
    HEAP.held.store(false, Ordering::Release);
    result
}
