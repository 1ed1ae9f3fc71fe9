//! # DELIBERATELY BROKEN: a double free passes unnoticed
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (its modules, included unchanged) with one defect: when phase 1 finds that the block
//! being freed is already free, the report is dropped and `free` returns as if all were
//! well. (Phase 1 has already refused to free the block twice, so the heap itself stays
//! sound: only the program's mistake goes unreported.)

#![cfg_attr(not(test), no_std)]

#[path = "../../../../phases/phase1-sbrk-freelist/src/block.rs"]
pub mod block;
#[path = "../../../../phases/phase1-sbrk-freelist/src/free_list.rs"]
pub mod free_list;
#[path = "../../../../phases/phase1-sbrk-freelist/src/heap.rs"]
pub mod heap;

use core::ptr::NonNull;

use heap::FreeListHeap;
use preload_kit::{Config, Fault, Heap, Location, Out, Stats};

pub struct NoDoubleFreeCheck(FreeListHeap);

impl Heap for NoDoubleFreeCheck {
    const NAME: &'static str = "broken-no-double-free-check";

    fn new(config: &Config) -> Self {
        NoDoubleFreeCheck(FreeListHeap::new(config))
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.0.alloc(size, align)
    }

    /// The defect: `Fault::DoubleFree` is swallowed.
    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        match self.0.free(ptr) {
            Err(Fault::DoubleFree { .. }) => Ok(()),
            other => other,
        }
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

preload_kit::export_malloc!(NoDoubleFreeCheck);
