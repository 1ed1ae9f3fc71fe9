//! # DELIBERATELY BROKEN: `calloc` does not zero large blocks
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged) with one defect: `calloc` zeroes blocks under
//! 4 KiB only, as if larger ones always came fresh (and so zeroed) from the OS. They
//! come from the free list as often: a freed 5000-byte block is handed out dirty,
//! which is what `api/calloc` arranges.

#![cfg_attr(not(test), no_std)]

use core::ptr::NonNull;

use broken_frame::{Defect, WithDefect};
use preload_kit::{Heap, MIN_ALIGN};
use sbrk_freelist::FreeListHeap;

/// From this size on, `calloc` wrongly takes the block to be fresh from the OS.
const ASSUMED_FRESH: usize = 4096;

pub enum CallocDirty {}

impl Defect for CallocDirty {
    const NAME: &'static str = "broken-calloc-dirty";

    /// The defect: no `write_bytes(0, size)` for a large block.
    fn alloc_zeroed(heap: &mut FreeListHeap, size: usize) -> Option<NonNull<u8>> {
        let block = heap.alloc(size, MIN_ALIGN)?;
        if size < ASSUMED_FRESH {
            // SAFETY: the block holds at least `size` writable bytes.
            unsafe { block.as_ptr().write_bytes(0, size) };
        }
        Some(block)
    }
}

preload_kit::export_malloc!(preload_kit::Locked<WithDefect<CallocDirty>>);
