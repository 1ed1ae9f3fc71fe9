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
#[path = "../../phase1_with_a_defect.rs"]
pub mod phase1_with_a_defect;

use core::ptr::NonNull;

use heap::FreeListHeap;
use phase1_with_a_defect::{Defect, WithDefect};
use preload_kit::{Fault, Heap, MIN_ALIGN};

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

preload_kit::export_malloc!(WithDefect<ReallocNoCopy>);
