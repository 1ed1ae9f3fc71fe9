//! Phase 1's heap knows nothing of threads; the kit's lock wrapper makes it a shared
//! allocator. Four threads hammer one: every block keeps its contents, and the heap's
//! invariants and totals hold at the end.

use std::vec::Vec;

use preload_kit::arena::Growth;
use preload_kit::{Locked, MIN_ALIGN, SharedAllocator};
use sbrk_freelist::FreeListHeap;

#[test]
fn four_threads_share_a_heap_through_the_lock_wrapper() {
    // Grown with mmap: the test process's own allocator moves the break.
    let shared: Locked<FreeListHeap> =
        Locked::with_builder(|_| FreeListHeap::with_growth(Growth::MmapOnly));
    std::thread::scope(|scope| {
        for thread in 0..4u8 {
            let shared = &shared;
            scope.spawn(move || hammer(shared, thread));
        }
    });
    shared.check().expect("the heap's invariants hold");
    let stats = shared.stats();
    assert_eq!(stats.used_blocks, 0, "every block was freed: {stats:?}");
    assert!(stats.free_blocks > 0, "and the heap was used: {stats:?}");
}

/// Allocates, fills, checks and frees blocks of varied sizes, some through `realloc`
/// and `alloc_zeroed`, keeping up to 64 alive at once.
fn hammer(shared: &Locked<FreeListHeap>, thread: u8) {
    let mut live: Vec<(std::ptr::NonNull<u8>, usize, u8)> = Vec::new();
    let mut state = 0x9e37_79b9_u32.wrapping_mul(u32::from(thread) + 1);
    for round in 0..50_000u32 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + (state % 500) as usize;
        let byte = thread.wrapping_mul(64).wrapping_add(round as u8);
        if live.len() < 64 && !state.is_multiple_of(3) {
            let block = if state.is_multiple_of(7) {
                let block = shared.alloc_zeroed(size).expect("memory");
                // SAFETY: the block holds `size` bytes, all of them just zeroed.
                let bytes = unsafe { std::slice::from_raw_parts(block.as_ptr(), size) };
                assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed zeroes");
                block
            } else {
                shared.alloc(size, MIN_ALIGN).expect("memory")
            };
            assert_eq!(block.as_ptr() as usize % MIN_ALIGN, 0);
            // SAFETY: the block holds at least `size` bytes and is this thread's alone.
            unsafe { block.as_ptr().write_bytes(byte, size) };
            live.push((block, size, byte));
        } else if let Some((block, size, byte)) = live.pop() {
            // SAFETY: the block is live and holds `size` bytes written above.
            let bytes = unsafe { std::slice::from_raw_parts(block.as_ptr(), size) };
            assert!(
                bytes.iter().all(|&b| b == byte),
                "thread {thread}: a block lost its contents"
            );
            if state.is_multiple_of(5) {
                let grown = size * 2;
                let moved = shared.realloc(block, grown).unwrap().expect("memory");
                // SAFETY: realloc kept the first `size` bytes of the block.
                let kept = unsafe { std::slice::from_raw_parts(moved.as_ptr(), size) };
                assert!(kept.iter().all(|&b| b == byte), "realloc keeps contents");
                shared.free(moved).unwrap();
            } else {
                shared.free(block).unwrap();
            }
        }
    }
    for (block, _, _) in live {
        shared.free(block).unwrap();
    }
}
