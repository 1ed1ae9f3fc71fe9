//! Phase 2's heap with another way of finding free blocks, as a later phase will bring
//! (size-class bins): two free lists, one for small blocks and one for the rest. The
//! heap's splitting, coalescing, trimming and realloc run unchanged over it, and its
//! check (with the index's own invariants) holds after every step of a random workload.

use std::vec::Vec;

use preload_kit::arena::Growth;
use preload_kit::{Config, Fault, Heap, MIN_ALIGN};
use split_coalesce::block::Block;
use split_coalesce::{FreeIndex, FreeList, SplitCoalesceHeap};

/// Blocks below this size go on the small list.
const SMALL: usize = 256;

/// Two bins: a block is in the bin its size says.
struct TwoBins {
    small: FreeList,
    large: FreeList,
}

impl TwoBins {
    fn bin(&mut self, size: usize) -> &mut FreeList {
        if size < SMALL {
            &mut self.small
        } else {
            &mut self.large
        }
    }
}

impl FreeIndex for TwoBins {
    fn new() -> Self {
        TwoBins {
            small: FreeList::new(),
            large: FreeList::new(),
        }
    }

    fn insert(&mut self, block: Block) {
        self.bin(block.size()).insert(block);
    }

    fn remove(&mut self, block: Block) {
        self.bin(block.size()).remove(block);
    }

    /// `new` may belong in another bin than `old`: no taking of places here.
    fn replace(&mut self, old: Block, new: Block) {
        self.remove(old);
        self.insert(new);
    }

    /// The block is still linked in the bin of its old size.
    fn grew(&mut self, block: Block, old_size: usize) {
        self.bin(old_size).remove(block);
        self.insert(block);
    }

    fn find_fit(&mut self, size: usize) -> Option<Block> {
        if size < SMALL
            && let Some(block) = self.small.find_fit(size)
        {
            return Some(block);
        }
        self.large.find_fit(size)
    }

    /// Each list's own invariants, and every block in the bin its size says.
    fn check_each(
        &self,
        max_blocks: usize,
        mut is_free_block: impl FnMut(Block) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let mut seen = 0;
        for (list, small) in [(&self.small, true), (&self.large, false)] {
            list.check_each(max_blocks - seen, |block| {
                is_free_block(block)?;
                seen += 1;
                if (block.size() < SMALL) != small {
                    return Err(Fault::Corruption {
                        addr: block.addr(),
                        what: "free block in the wrong bin",
                    });
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[test]
fn the_heap_runs_unchanged_over_another_index() {
    let mut heap: SplitCoalesceHeap<TwoBins> =
        SplitCoalesceHeap::with_growth(&Config::DEFAULT, Growth::MmapOnly);
    let mut live: Vec<(core::ptr::NonNull<u8>, usize, u8)> = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for step in 0..4000u32 {
        let byte = step as u8;
        let size = 1 + (next() % 700) as usize;
        match next() % 3 {
            0 if !live.is_empty() => {
                let (p, size, byte) = live.swap_remove(next() as usize % live.len());
                // SAFETY: `p` is live with `size` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
                assert!(bytes.iter().all(|&b| b == byte), "contents kept");
                heap.free(p).unwrap();
            }
            1 if !live.is_empty() => {
                let i = next() as usize % live.len();
                let (p, old, old_byte) = live[i];
                let q = heap.realloc(p, size).unwrap().expect("memory");
                // SAFETY: realloc kept the first min(old, size) bytes.
                let kept = unsafe { std::slice::from_raw_parts(q.as_ptr(), old.min(size)) };
                assert!(
                    kept.iter().all(|&b| b == old_byte),
                    "realloc keeps contents"
                );
                // SAFETY: the block holds `size` bytes.
                unsafe { q.as_ptr().write_bytes(byte, size) };
                live[i] = (q, size, byte);
            }
            _ => {
                let align = if next().is_multiple_of(8) {
                    64
                } else {
                    MIN_ALIGN
                };
                let p = heap.alloc(size, align).expect("memory");
                assert_eq!(p.as_ptr() as usize % align, 0);
                // SAFETY: the block holds `size` bytes.
                unsafe { p.as_ptr().write_bytes(byte, size) };
                live.push((p, size, byte));
            }
        }
        heap.check()
            .unwrap_or_else(|fault| panic!("step {step}: {fault:?}"));
    }
    for (p, _, _) in live {
        heap.free(p).unwrap();
    }
    heap.check().unwrap();
    assert_eq!(heap.stats().used_blocks, 0);
}
