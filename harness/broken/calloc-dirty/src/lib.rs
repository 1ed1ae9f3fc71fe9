//! # DELIBERATELY BROKEN: `calloc` does not zero large blocks
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (its modules, included unchanged) with one defect: `calloc` zeroes blocks under
//! 4 KiB only, as if larger ones always came fresh (and so zeroed) from the OS. They
//! come from the free list as often: a freed 5000-byte block is handed out dirty,
//! which is what `api/calloc` arranges.

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

/// From this size on, `calloc` wrongly takes the block to be fresh from the OS.
const ASSUMED_FRESH: usize = 4096;

pub struct CallocDirty(FreeListHeap);

impl Heap for CallocDirty {
    const NAME: &'static str = "broken-calloc-dirty";

    fn new(config: &Config) -> Self {
        CallocDirty(FreeListHeap::new(config))
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size, align)
    }

    /// The defect: no `write_bytes(0, size)` for a large block.
    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        let block = self.0.alloc(size, MIN_ALIGN)?;
        if size < ASSUMED_FRESH {
            // SAFETY: the block holds at least `size` writable bytes.
            unsafe { block.as_ptr().write_bytes(0, size) };
        }
        Some(block)
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.0.free(ptr)
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        self.0.usable_size(ptr)
    }

    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        self.0.realloc(ptr, size)
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

preload_kit::export_malloc!(CallocDirty);
