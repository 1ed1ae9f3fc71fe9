//! # DELIBERATELY BROKEN: `free` never gives a block back
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged) with one defect: `free` checks the pointer and
//! then keeps the block allocated for ever, so no memory is ever reused. Short programs
//! cannot tell; `behaviour/reuse`, which runs a million small blocks in a 32 MiB data
//! segment, must.

#![cfg_attr(not(test), no_std)]

use core::ptr::NonNull;

use broken_frame::{Defect, WithDefect, move_block};
use preload_kit::{Fault, Heap};
use sbrk_freelist::FreeListHeap;

/// Written over the first payload word of a block the program freed, so that freeing it
/// again is still reported (double frees are not this crate's defect).
const FREED_MARK: usize = 0x6672_6565_645f_6f6b;

/// The payload size of the block at `ptr`, if phase 1 gave it out and the program has
/// not freed it yet.
fn live_size(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<usize, Fault> {
    let size = heap.usable_size(ptr)?;
    // SAFETY: phase 1 vouched for the block, whose payload is 16-byte aligned and at
    // least 16 bytes long, so its first word is ours to read.
    if unsafe { ptr.cast::<usize>().read() } == FREED_MARK {
        return Err(Fault::DoubleFree {
            addr: ptr.as_ptr() as usize,
        });
    }
    Ok(size)
}

pub enum NeverReuses {}

impl Defect for NeverReuses {
    const NAME: &'static str = "broken-never-reuses";

    /// The defect: the block is marked, and stays allocated in phase 1's heap.
    fn free(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<(), Fault> {
        live_size(heap, ptr)?;
        // SAFETY: as in `live_size`: the block's first payload word is ours.
        unsafe { ptr.cast::<usize>().write(FREED_MARK) };
        Ok(())
    }

    fn usable_size(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<usize, Fault> {
        live_size(heap, ptr)
    }

    /// Allocate, copy, free through the hooks above, so a moved block is not reused
    /// either.
    fn realloc(
        heap: &mut FreeListHeap,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        move_block::<Self>(heap, ptr, size)
    }
}

preload_kit::export_malloc!(preload_kit::Locked<WithDefect<NeverReuses>>);
