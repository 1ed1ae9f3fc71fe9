//! # DELIBERATELY BROKEN: blocks 8 bytes off the 16-byte boundary
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (its modules, included unchanged) with one defect: `malloc`, `calloc` and `realloc`
//! return blocks aligned to 8 bytes only, as an allocator with an 8-byte header would
//! (enough on 32-bit machines, not for x86-64's `max_align_t`). Larger alignments
//! asked of the memalign family are still honoured; 16 is not.

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

/// How far past phase 1's payload the program's block starts.
const OFFSET: usize = 8;

pub struct Align8(FreeListHeap);

/// Phase 1's payload pointer for a pointer the program holds, and the offset between
/// them. Shifted blocks are exactly those 8 bytes off a 16-byte boundary.
fn unshifted(ptr: NonNull<u8>) -> (NonNull<u8>, usize) {
    if ptr.as_ptr() as usize % MIN_ALIGN == OFFSET {
        // Only address 8 would give null: it is no block, and phase 1 refuses it.
        match NonNull::new(ptr.as_ptr().wrapping_sub(OFFSET)) {
            Some(inner) => (inner, OFFSET),
            None => (ptr, 0),
        }
    } else {
        (ptr, 0)
    }
}

impl Heap for Align8 {
    const NAME: &'static str = "broken-align8";

    fn new(config: &Config) -> Self {
        Align8(FreeListHeap::new(config))
    }

    /// The defect: an ordinary request gets phase 1's block, 8 bytes in.
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if align > MIN_ALIGN {
            return self.0.alloc(size, align);
        }
        let block = self.0.alloc(size.checked_add(OFFSET)?, MIN_ALIGN)?;
        // SAFETY: the block holds `size + OFFSET` bytes, so `OFFSET` bytes in is inside it.
        Some(unsafe { block.add(OFFSET) })
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.0.free(unshifted(ptr).0)
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let (inner, offset) = unshifted(ptr);
        Ok(self.0.usable_size(inner)? - offset)
    }

    // `realloc` and `alloc_zeroed` are the trait's defaults, through the methods above.

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

preload_kit::export_malloc!(Align8);
