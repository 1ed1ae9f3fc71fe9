//! The free list: every free block, doubly linked through its first two payload words.
//!
//! Phase 1's list was singly linked: taking a block out meant finding its predecessor,
//! which first fit did anyway as it walked. Coalescing takes out a *neighbour in the
//! heap*, reached through the boundary tags rather than by walking the list, so each
//! block also points back at its predecessor and [`FreeList::unlink`] is O(1).
//!
//! Order: newest first ([`FreeList::push`]), except that a block that absorbs or is
//! cut from a listed block takes that block's place ([`FreeList::replace`]), so a
//! large free block keeps serving requests from wherever it was in the list.
//!
//! One number makes a hopeless search O(1): `size_bound`, a size that no listed block
//! exceeds. Adding or growing a block raises it; a first-fit search that walks the
//! whole list in vain lowers it to the largest size it saw. A request above it fails
//! at once, so a program holding many small free blocks that asks again and again for
//! a large one does not walk them all each time.

use crate::block::Block;

pub struct FreeList {
    head: Option<Block>,
    /// No block on the list is larger than this (it may be larger than all of them).
    size_bound: usize,
}

impl Default for FreeList {
    fn default() -> Self {
        Self::new()
    }
}

impl FreeList {
    pub const fn new() -> Self {
        FreeList {
            head: None,
            size_bound: 0,
        }
    }

    pub fn head(&self) -> Option<Block> {
        self.head
    }

    /// A size no listed block exceeds (for the heap check).
    pub fn size_bound(&self) -> usize {
        self.size_bound
    }

    /// Puts a free block at the front of the list.
    pub fn push(&mut self, block: Block) {
        block.set_prev_in_list(None);
        block.set_next_in_list(self.head);
        if let Some(head) = self.head {
            head.set_prev_in_list(Some(block));
        }
        self.head = Some(block);
        self.grew(block);
    }

    /// Takes `block`, which must be on this list, out of it: O(1), through its links.
    pub fn unlink(&mut self, block: Block) {
        let prev = block.prev_in_list();
        let next = block.next_in_list();
        match prev {
            None => self.head = next,
            Some(prev) => prev.set_next_in_list(next),
        }
        if let Some(next) = next {
            next.set_prev_in_list(prev);
        }
    }

    /// Puts the free block `new` where `old` (on the list) is, and takes `old` off.
    /// `new`'s links must not overlap `old`'s.
    pub fn replace(&mut self, old: Block, new: Block) {
        let prev = old.prev_in_list();
        let next = old.next_in_list();
        new.set_prev_in_list(prev);
        new.set_next_in_list(next);
        match prev {
            None => self.head = Some(new),
            Some(prev) => prev.set_next_in_list(Some(new)),
        }
        if let Some(next) = next {
            next.set_prev_in_list(Some(new));
        }
        self.grew(new);
    }

    /// Records that the listed `block` has grown in place (merged with a neighbour).
    pub fn grew(&mut self, block: Block) {
        self.size_bound = self.size_bound.max(block.size());
    }

    /// First fit: the first block, in list order, of at least `size` bytes. It stays on
    /// the list; the caller takes it off whole ([`FreeList::unlink`]) or splits it
    /// ([`FreeList::replace`]).
    pub fn first_fit(&mut self, size: usize) -> Option<Block> {
        if size > self.size_bound {
            return None;
        }
        let mut largest = 0;
        let mut current = self.head;
        while let Some(block) = current {
            if block.size() >= size {
                return Some(block);
            }
            largest = largest.max(block.size());
            current = block.next_in_list();
        }
        self.size_bound = largest;
        None
    }
}
