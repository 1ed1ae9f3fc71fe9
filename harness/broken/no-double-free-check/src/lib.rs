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
#[path = "../../phase1_with_a_defect.rs"]
pub mod phase1_with_a_defect;

use core::ptr::NonNull;

use heap::FreeListHeap;
use phase1_with_a_defect::{Defect, WithDefect};
use preload_kit::{Fault, Heap};

pub enum NoDoubleFreeCheck {}

impl Defect for NoDoubleFreeCheck {
    const NAME: &'static str = "broken-no-double-free-check";

    /// The defect: `Fault::DoubleFree` is swallowed.
    fn free(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<(), Fault> {
        match heap.free(ptr) {
            Err(Fault::DoubleFree { .. }) => Ok(()),
            other => other,
        }
    }
}

preload_kit::export_malloc!(WithDefect<NoDoubleFreeCheck>);
