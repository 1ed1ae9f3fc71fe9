//! The free list: every free block, linked through its first payload word.
//!
//! Singly linked, newest first (`push` is O(1)). Taking a block out means finding its
//! predecessor, which first fit does anyway as it walks. Phase 2 makes the list doubly
//! linked, because coalescing must unlink a neighbour it did not reach by walking.

use crate::block::Block;

pub struct FreeList {
    head: Option<Block>,
}

impl Default for FreeList {
    fn default() -> Self {
        Self::new()
    }
}

impl FreeList {
    pub const fn new() -> Self {
        FreeList { head: None }
    }

    /// Puts a free block at the front of the list.
    pub fn push(&mut self, block: Block) {
        block.set_next_free(self.head);
        self.head = Some(block);
    }

    /// First fit: unlinks and returns the first block, in list order, that `fits`.
    pub fn take_first(&mut self, fits: impl Fn(Block) -> bool) -> Option<Block> {
        let mut previous: Option<Block> = None;
        let mut current = self.head;
        while let Some(block) = current {
            let next = block.next_free();
            if fits(block) {
                match previous {
                    None => self.head = next,
                    Some(previous) => previous.set_next_free(next),
                }
                return Some(block);
            }
            previous = Some(block);
            current = next;
        }
        None
    }

    /// The blocks in list order. Follows links blindly: callers that may meet a
    /// corrupted list (the heap check) bound how far they go.
    pub fn iter(&self) -> impl Iterator<Item = Block> + '_ {
        core::iter::successors(self.head, |block| block.next_free())
    }
}
