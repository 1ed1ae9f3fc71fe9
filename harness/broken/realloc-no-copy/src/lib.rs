//! # DELIBERATELY BROKEN: `realloc` moves without copying
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (its modules, included unchanged) with one defect: when `realloc` must move a block
//! it allocates the new one and frees the old one, but never copies the contents. A
//! request that still fits stays in place, so small shrinks seem to work.

#![cfg_attr(not(test), no_std)]

#[path = "../../../../phases/phase1-sbrk-freelist/src/block.rs"]
pub mod block;
#[path = "../../../../phases/phase1-sbrk-freelist/src/free_list.rs"]
pub mod free_list;
#[path = "../../../../phases/phase1-sbrk-freelist/src/heap.rs"]
pub mod heap;

use core::ptr::NonNull;

use heap::FreeListHeap;
use preload_kit::{Config, Fault, Heap, Location, MIN_ALIGN, Out, Stats};

pub struct ReallocNoCopy(FreeListHeap);

impl Heap for ReallocNoCopy {
    const NAME: &'static str = "broken-realloc-no-copy";

    fn new(config: &Config) -> Self {
        ReallocNoCopy(FreeListHeap::new(config))
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size, align)
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.0.free(ptr)
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        self.0.usable_size(ptr)
    }

    /// The defect: allocate, free, and no `copy_nonoverlapping` in between.
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        if size <= self.0.usable_size(ptr)? {
            return Ok(Some(ptr));
        }
        let Some(moved) = self.0.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        self.0.free(ptr)?;
        Ok(Some(moved))
    }

    fn locate(&self, addr: usize) -> Location {
        self.0.locate(addr)
    }

    fn dump_blocks(&self, out: &mut Out) {
        self.0.dump_blocks(out)
    }

    fn stats(&self) -> Stats {
        self.0.stats()
    }

    fn check(&self) -> Result<(), Fault> {
        self.0.check()
    }
}

preload_kit::export_malloc!(ReallocNoCopy);
