//! # DELIBERATELY BROKEN: a double free passes unnoticed
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged) with one defect: when phase 1 finds that the block
//! being freed is already free, the report is dropped and `free` returns as if all were
//! well. (Phase 1 has already refused to free the block twice, so the heap itself stays
//! sound: only the program's mistake goes unreported.)

#![cfg_attr(not(test), no_std)]

use core::ptr::NonNull;

use broken_frame::{Defect, WithDefect};
use preload_kit::{Fault, Heap};
use sbrk_freelist::FreeListHeap;

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

preload_kit::export_malloc!(preload_kit::Locked<WithDefect<NoDoubleFreeCheck>>);
