//! # DELIBERATELY BROKEN: blocks 8 bytes off the 16-byte boundary
//!
//! A test subject for `harness grade`, not an allocator to learn from. Phase 1's policy
//! (`sbrk-freelist`, unchanged) with one defect: `malloc`, `calloc` and `realloc`
//! return blocks aligned to 8 bytes only, as an allocator with an 8-byte header would
//! (enough on 32-bit machines, not for x86-64's `max_align_t`). Larger alignments
//! asked of the memalign family are still honoured; 16 is not.

#![cfg_attr(not(test), no_std)]

use core::ptr::NonNull;

use broken_frame::{Defect, WithDefect, alloc_then_zero, move_block};
use preload_kit::{Fault, Heap, MIN_ALIGN};
use sbrk_freelist::FreeListHeap;

/// How far past phase 1's payload the program's block starts.
const OFFSET: usize = 8;

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

pub enum Align8 {}

impl Defect for Align8 {
    const NAME: &'static str = "broken-align8";

    /// The defect: an ordinary request gets phase 1's block, 8 bytes in.
    fn alloc(heap: &mut FreeListHeap, size: usize, align: usize) -> Option<NonNull<u8>> {
        if align > MIN_ALIGN {
            return heap.alloc(size, align);
        }
        let block = heap.alloc(size.checked_add(OFFSET)?, MIN_ALIGN)?;
        // SAFETY: the block holds `size + OFFSET` bytes, so `OFFSET` bytes in is inside it.
        Some(unsafe { block.add(OFFSET) })
    }

    fn free(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<(), Fault> {
        heap.free(unshifted(ptr).0)
    }

    fn usable_size(heap: &mut FreeListHeap, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let (inner, offset) = unshifted(ptr);
        Ok(heap.usable_size(inner)? - offset)
    }

    /// Through the shifted `alloc`, so `calloc` is misaligned too.
    fn alloc_zeroed(heap: &mut FreeListHeap, size: usize) -> Option<NonNull<u8>> {
        alloc_then_zero::<Self>(heap, size)
    }

    /// Through the shifted `alloc`, so a moved block is misaligned too.
    fn realloc(
        heap: &mut FreeListHeap,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        move_block::<Self>(heap, ptr, size)
    }
}

preload_kit::export_malloc!(preload_kit::Locked<WithDefect<Align8>>);
