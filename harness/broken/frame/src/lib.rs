//! The frame every deliberately broken allocator shares, so that each crate states
//! only its defect:
//!
//! - a defect in the policy: [`WithDefect`], phase 1's heap (the `sbrk-freelist`
//!   package) with the calls that a [`Defect`] names going wrong, exported behind the
//!   kit's lock like any phase;
//! - a defect in the sharing between threads: [`SharedThrough`], phase 1's heap
//!   reached through an [`Access`] that the crate writes (no lock, a lock without fork
//!   handling), exported by the kit like any shared allocator.

#![cfg_attr(not(test), no_std)]

use core::marker::PhantomData;
use core::ptr::NonNull;

use preload_kit::{Config, Fault, Heap, Location, MIN_ALIGN, Out, SharedAllocator, Stats};
use sbrk_freelist::FreeListHeap;

/// One way to break phase 1. Each hook does what phase 1 does unless a defect
/// overrides it; `heap` is phase 1's heap.
pub trait Defect {
    /// The `.so`'s name as the kit reports it.
    const NAME: &'static str;

    fn alloc(heap: &mut FreeListHeap, size: usize, align: usize) -> Option<NonNull<u8>> {
        heap.alloc(size, align)
    }

    fn alloc_zeroed(heap: &mut FreeListHeap, size: usize) -> Option<NonNull<u8>> {
        heap.alloc_zeroed(size)
    }

    fn free(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<(), Fault> {
        heap.free(ptr)
    }

    fn usable_size(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<usize, Fault> {
        heap.usable_size(ptr)
    }

    fn realloc(
        heap: &mut FreeListHeap,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        heap.realloc(ptr, size)
    }
}

/// `calloc` through the defect's own `alloc`: allocate, then zero.
pub fn alloc_then_zero<D: Defect>(heap: &mut FreeListHeap, size: usize) -> Option<NonNull<u8>> {
    let block = D::alloc(heap, size, MIN_ALIGN)?;
    // SAFETY: `alloc` returned a block of at least `size` writable bytes.
    unsafe { block.as_ptr().write_bytes(0, size) };
    Some(block)
}

/// `realloc` through the defect's own `alloc`, `usable_size` and `free`: allocate,
/// copy, free (so a defect in those shows in `realloc` too).
pub fn move_block<D: Defect>(
    heap: &mut FreeListHeap,
    ptr: NonNull<u8>,
    size: usize,
) -> Result<Option<NonNull<u8>>, Fault> {
    let old_size = D::usable_size(heap, ptr)?;
    let Some(new) = D::alloc(heap, size, MIN_ALIGN) else {
        return Ok(None);
    };
    // SAFETY: both blocks are live and distinct, and at least `min(old_size, size)` long.
    unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size.min(size)) };
    D::free(heap, ptr)?;
    Ok(Some(new))
}

/// Phase 1's heap with defect `D`: what the crate exports.
pub struct WithDefect<D> {
    heap: FreeListHeap,
    defect: PhantomData<D>,
}

impl<D: Defect> Heap for WithDefect<D> {
    const NAME: &'static str = D::NAME;

    fn new(config: &Config) -> Self {
        WithDefect {
            heap: FreeListHeap::new(config),
            defect: PhantomData,
        }
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        D::alloc(&mut self.heap, size, align)
    }

    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        D::alloc_zeroed(&mut self.heap, size)
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        D::free(&mut self.heap, ptr)
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        D::usable_size(&mut self.heap, ptr)
    }

    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        D::realloc(&mut self.heap, ptr, size)
    }

    fn locate(&self, addr: usize) -> Location {
        self.heap.locate(addr)
    }

    fn dump_blocks(&self, out: &mut Out) {
        self.heap.dump_blocks(out)
    }

    fn stats(&self) -> Stats {
        self.heap.stats()
    }

    fn check(&self) -> Result<(), Fault> {
        self.heap.check()
    }
}

/// How a broken crate reaches its one phase-1 heap: the part of a
/// [`SharedAllocator`] it gets wrong. [`SharedThrough`] is the rest.
pub trait Access: Sync {
    /// Nothing built yet (see [`SharedAllocator::NEW`]).
    const NEW: Self;

    /// Runs `f` on the heap, building it on the first call.
    fn with<R>(&self, f: impl FnOnce(&mut FreeListHeap) -> R) -> R;

    /// See [`SharedAllocator::prepare_fork`].
    fn prepare_fork(&self);

    /// See [`SharedAllocator::after_fork_in_parent`].
    fn after_fork_in_parent(&self);

    /// See [`SharedAllocator::after_fork_in_child`].
    fn after_fork_in_child(&self);
}

/// Phase 1's heap reached through `A`: what a crate whose defect is in the sharing
/// exports.
pub struct SharedThrough<A>(A);

impl<A: Access> SharedAllocator for SharedThrough<A> {
    const NEW: Self = SharedThrough(A::NEW);

    fn alloc(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.0.with(|heap| heap.alloc(size, align))
    }

    fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        self.0.with(|heap| heap.alloc_zeroed(size))
    }

    fn free(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.0.with(|heap| heap.free(ptr))
    }

    fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        self.0.with(|heap| heap.usable_size(ptr))
    }

    fn realloc(&self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        self.0.with(|heap| heap.realloc(ptr, size))
    }

    fn set_option(&self, param: i32, value: i32) -> bool {
        self.0.with(|heap| heap.set_option(param, value))
    }

    fn locate(&self, addr: usize) -> Location {
        self.0.with(|heap| heap.locate(addr))
    }

    fn dump(&self, out: &mut Out) {
        self.0.with(|heap| {
            heap.dump_blocks(out);
            preload_kit::abi::write_stats(&heap.stats(), out);
        })
    }

    fn stats(&self) -> Stats {
        self.0.with(|heap| heap.stats())
    }

    fn check(&self) -> Result<(), Fault> {
        self.0.with(|heap| heap.check())
    }

    fn prepare_fork(&self) {
        self.0.prepare_fork()
    }

    fn after_fork_in_parent(&self) {
        self.0.after_fork_in_parent()
    }

    fn after_fork_in_child(&self) {
        self.0.after_fork_in_child()
    }
}
