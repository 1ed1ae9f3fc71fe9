//! # DELIBERATELY BROKEN: `realloc` moves without copying
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged) with one defect: when `realloc` must move a block
//! it allocates the new one and frees the old one, but never copies the contents. A
//! request that still fits stays in place, so small shrinks seem to work.

#![cfg_attr(not(test), no_std)]

use core::ptr::NonNull;

use broken_frame::{Defect, WithDefect};
use preload_kit::{Fault, Heap, MIN_ALIGN};
use sbrk_freelist::FreeListHeap;

pub enum ReallocNoCopy {}

impl Defect for ReallocNoCopy {
    const NAME: &'static str = "broken-realloc-no-copy";

    /// The defect: allocate, free, and no `copy_nonoverlapping` in between.
    fn realloc(
        heap: &mut FreeListHeap,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        if size <= heap.usable_size(ptr)? {
            return Ok(Some(ptr));
        }
        let Some(moved) = heap.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        heap.free(ptr)?;
        Ok(Some(moved))
    }
}

preload_kit::export_malloc!(preload_kit::Locked<WithDefect<ReallocNoCopy>>);
