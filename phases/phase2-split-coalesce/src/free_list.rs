//! The free list: every free block, doubly linked through its first two payload words.
//!
//! The heap reaches it only through [`FreeIndex`], what splitting, coalescing, trimming
//! and `realloc` need from *any* way of finding free blocks; [`FreeList`] is phase 2's.
//! A later phase can index the same free blocks differently (bins by size) and keep the
//! rest of the heap unchanged.
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

use preload_kit::{Fault, Tally};

use crate::block::Block;

/// How the heap finds its free blocks. Every block handed to these methods is a free
/// block of the heap (header intact and saying free) unless a method says otherwise.
///
/// Generic, not `dyn`: the heap is compiled once per index, so a call through this
/// trait costs what a call to [`FreeList`]'s own method does.
pub trait FreeIndex {
    /// An index of no blocks.
    fn new() -> Self;

    /// Adds `block`, which is not indexed yet.
    fn insert(&mut self, block: Block);

    /// Takes the indexed `block` out. Its header still holds the size it was indexed
    /// with.
    fn remove(&mut self, block: Block);

    /// Puts `new` in the place of the indexed `old` and takes `old` out (`old`'s
    /// header still holds its size). `new`'s first payload words must not overlap
    /// `old`'s.
    fn replace(&mut self, old: Block, new: Block);

    /// [`FreeIndex::replace`] where `rest` is what is left of `old` after a request
    /// was cut from its start: an index may keep it apart to serve the next requests
    /// (phase 4's bins do). The default files it as any other replacement.
    fn replace_with_rest(&mut self, old: Block, rest: Block) {
        self.replace(old, rest);
    }

    /// The indexed `block` has grown in place (merged with a neighbour) from
    /// `old_size` bytes to the size its header now holds.
    fn grew(&mut self, block: Block, old_size: usize);

    /// An indexed block of at least `size` bytes. It stays indexed: the caller takes it
    /// out whole ([`FreeIndex::remove`]) or splits it ([`FreeIndex::replace`]).
    fn find_fit(&mut self, size: usize) -> Option<Block>;

    /// Deferred coalescing: may keep `block`, a used block the program has just freed,
    /// unmerged in a quick list of its size (true), from which
    /// [`FreeIndex::take_deferred`] hands it out again as it is. The heap then marks it
    /// quick ([`Block::set_quick`]); the index links it with [`Block::set_next_quick`].
    /// Phase 2's list keeps nothing: every freed block merges at once.
    fn defer(&mut self, block: Block) -> bool {
        let _ = block;
        false
    }

    /// Should quick blocks merge before a request for `size` bytes searches the index?
    /// (glibc merges its fast bins before serving a large request.)
    fn merge_first(&self, size: usize) -> bool {
        let _ = size;
        false
    }

    /// A quick block of exactly `size` bytes, taken out of its quick list.
    fn take_deferred(&mut self, size: usize) -> Option<Block> {
        let _ = size;
        None
    }

    /// Takes `block` out of its quick list if it is the newest there (true); the heap
    /// calls it with the block the program freed last, which it kept.
    fn take_back_newest(&mut self, block: Block) -> bool {
        let _ = block;
        false
    }

    /// Any quick block, taken out of its quick list: for the heap to merge them all
    /// ([`FreeIndex::holds_deferred`] says whether there is one).
    fn take_any_deferred(&mut self) -> Option<Block> {
        None
    }

    /// A quick block to merge before a request that [`FreeIndex::merge_first`] names,
    /// taken out of its quick list: by default any ([`FreeIndex::take_any_deferred`]).
    /// An index whose quick lists are bounded may keep those; they merge before the
    /// heap grows.
    fn take_deferred_to_merge_first(&mut self) -> Option<Block> {
        self.take_any_deferred()
    }

    /// Does any quick list hold a block?
    fn holds_deferred(&self) -> bool {
        false
    }

    /// How many blocks the quick lists hold, and their bytes. The heap's running totals
    /// count a quick block as used, as its header does, so that keeping a block and
    /// handing it out again leave them alone; the heap moves these to free when it is
    /// asked for figures (see `SplitCoalesceHeap::reported_totals`).
    fn deferred_totals(&self) -> Tally {
        Tally::default()
    }

    /// For the heap check: as [`FreeIndex::check_each`], for the quick blocks.
    fn check_each_deferred(
        &self,
        max_blocks: usize,
        is_quick_block: impl FnMut(Block) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let _ = (max_blocks, is_quick_block);
        Ok(())
    }

    /// For the heap check: calls `is_free_block` on every indexed block (it checks
    /// that the block is a free block of the heap before anything reads it), checks the
    /// index's own invariants on the way, and stops with a fault when more than
    /// `max_blocks` are indexed (a loop, or a block held twice).
    fn check_each(
        &self,
        max_blocks: usize,
        is_free_block: impl FnMut(Block) -> Result<(), Fault>,
    ) -> Result<(), Fault>;
}

pub struct FreeList {
    head: Option<Block>,
    /// No block on the list is larger than this (it may be larger than all of them).
    size_bound: usize,
}

impl FreeList {
    pub fn head(&self) -> Option<Block> {
        self.head
    }

    /// A size no listed block exceeds (for the heap check).
    pub fn size_bound(&self) -> usize {
        self.size_bound
    }
}

impl FreeIndex for FreeList {
    fn new() -> Self {
        FreeList {
            head: None,
            size_bound: 0,
        }
    }

    /// Puts a free block at the front of the list.
    fn insert(&mut self, block: Block) {
        block.set_prev_in_list(None);
        block.set_next_in_list(self.head);
        if let Some(head) = self.head {
            head.set_prev_in_list(Some(block));
        }
        self.head = Some(block);
        self.size_bound = self.size_bound.max(block.size());
    }

    /// Takes `block`, which must be on this list, out of it: O(1), through its links.
    fn remove(&mut self, block: Block) {
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
    fn replace(&mut self, old: Block, new: Block) {
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
        self.size_bound = self.size_bound.max(new.size());
    }

    /// Records that the listed `block` has grown in place: it keeps its place.
    fn grew(&mut self, block: Block, _old_size: usize) {
        self.size_bound = self.size_bound.max(block.size());
    }

    /// First fit: the first block, in list order, of at least `size` bytes.
    fn find_fit(&mut self, size: usize) -> Option<Block> {
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

    /// The list's own invariants: its links agree both ways (`b.next.prev == b`, and
    /// the head has no `prev`), and no block is larger than `size_bound`.
    fn check_each(
        &self,
        max_blocks: usize,
        mut is_free_block: impl FnMut(Block) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let mut listed = 0;
        let faults = LinkFaults {
            disagree: "free list links disagree (next and prev)",
            too_many: "free list loops or holds a block twice",
        };
        walk_links(self.head, max_blocks, &mut listed, faults, |block| {
            is_free_block(block)?;
            if block.size() > self.size_bound {
                return Err(Fault::Corruption {
                    addr: block.addr(),
                    what: "free block larger than the free list's size bound",
                });
            }
            Ok(())
        })
    }
}

/// How [`walk_links`] words what it finds wrong with a list.
#[derive(Clone, Copy)]
pub struct LinkFaults {
    /// A block's `prev` does not name the block before it.
    pub disagree: &'static str,
    /// More blocks than the heap holds: the list loops, or a block is on it twice.
    pub too_many: &'static str,
}

/// Walks a doubly linked list of free blocks from `head`, for a [`FreeIndex::check_each`]:
/// calls `each` on every block first, then checks that the block's `prev` link names
/// the block before it (the head's names none), and counts it in `listed`, which
/// runs across the lists of one index; past `max_blocks` the walk stops with a fault,
/// so a loop is reported, not followed forever.
pub fn walk_links(
    head: Option<Block>,
    max_blocks: usize,
    listed: &mut usize,
    faults: LinkFaults,
    mut each: impl FnMut(Block) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let mut previous: Option<Block> = None;
    let mut entry = head;
    while let Some(block) = entry {
        each(block)?;
        let addr = block.addr();
        if block.prev_in_list() != previous {
            return Err(Fault::Corruption {
                addr,
                what: faults.disagree,
            });
        }
        *listed += 1;
        if *listed > max_blocks {
            return Err(Fault::Corruption {
                addr,
                what: faults.too_many,
            });
        }
        previous = Some(block);
        entry = block.next_in_list();
    }
    Ok(())
}
