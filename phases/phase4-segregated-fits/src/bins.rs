//! The bins: every free block of the brk heap, in one of [`CLASSES`] doubly linked
//! lists by its size, and a bitmap of the lists that are not empty.
//!
//! ```text
//!   class:     2    3    4   ...   63  |  64   65  ...  71  |  72  ...  79  | ... | 255
//!   sizes:    32   48   64   ...  1008 | 1024 1152 ... 1920 | 2048 ... 3840 | ... | 2^34 and up
//!             '---- one size each -----' '-- 8 per power of two: each 1/8 of it wide --'
//!   bitmap:    1    0    1   ...    0  |   0    1  ...   0  |   1  ...   0  | ... |  0
//!   heads:     |         |                    |                  |
//!              v         v                    v                  v
//!            [32]      [64]                [1184]             [2048]
//!              |         |                    |
//!            [32]      [64]                [1152]
//! ```
//!
//! - **Exact classes** below [`EXACT_LIMIT`] (1 KiB): one class per block size (a
//!   multiple of 16), so the head of a request's own class always fits it exactly.
//!   Most requests of most programs are this small (the traces in `harness/traces/`).
//! - **Spaced classes** from 1 KiB up: eight per power of two, as in TLSF, so a class
//!   spans one eighth of its lower bound (`[1024, 1152)`, `[1152, 1280)`, …) and a block
//!   taken from the next class up is at most a quarter larger than needed. The last
//!   class holds everything from 2^34 bytes (16 GiB) up.
//!
//! Finding a block for `size` bytes ([`Bins::find_fit`]): in the request's own class,
//! the smallest block that fits among the first [`SCAN_LIMIT`] (for an exact class that
//! is its head); if none does, the head of the next class that is not empty, found with
//! the bitmap in at most [`WORDS`] word operations: every block there is larger than
//! `size`. So a search takes a bounded number of steps whatever the number of free
//! blocks, and the block found is a good fit: the smallest class that can serve, and
//! the best of the first few blocks of a class that might.
//!
//! Within a class, order is newest first (a block just freed is likely in the cache).
//! A block's class is a function of its size, so taking a block out needs only its
//! header: the caller keeps the header's size as it was when the block was indexed
//! (see `FreeIndex`).

use preload_kit::{Fault, Tally};
use split_coalesce::block::Block;
use split_coalesce::free_list::{FreeIndex, LinkFaults, walk_links};

/// Blocks freed by the program up to this size (1 KiB: a request of up to 1016 bytes,
/// about glibc's per-thread cache's limit) wait unmerged in a quick list of their size.
pub const QUICK_LIMIT: usize = 1024;

/// The quick lists up to this size (128 bytes, glibc's fast-bin limit: a request of up
/// to 120 bytes) are *fast lists*: they hold any number of blocks, and merge before a
/// request of [`MERGE_BEFORE`] bytes or more, as glibc's fast bins do.
pub const FAST_LIMIT: usize = 128;

/// The quick lists above [`FAST_LIMIT`] hold at most this many blocks each (glibc's
/// per-thread cache holds 7); a block freed when its list is full merges at once. So
/// does one freed right after a free block (its header's `PREV_FREE`): kept quick, it
/// would fence that hole off from the blocks after it, and the hole would serve only
/// requests it already held (chapter 4, "Quick blocks beside a hole"). They are left
/// alone by a large request and merge only before the heap grows (and on
/// `malloc_trim`): on `harness/traces/random.rep` (random sizes, one request in 12 from
/// 1 to 16 KiB) merging them before every request of 2 KiB or more emptied them every
/// few calls (chapter 4, "Quick lists: small blocks kept unmerged").
pub const QUICK_CAP: u32 = 4;

/// A request for a block of this size or more merges the fast lists' blocks first (see
/// `FreeIndex::merge_first` and [`FAST_LIMIT`]). glibc's limit is its small bins' (1 KiB); at 1 KiB here,
/// larson's largest requests (1000 bytes, 1024-byte blocks) merged the quick lists
/// 2 940 times in one run, and `alloc-test`'s 2 523 times. At 2 KiB: once and three
/// times, and the realloc trace's utilization rose from 32.7% to 37.6% (median of 5
/// runs of `bench_alloc --trace harness/traces/realloc.rep`; glibc's 32.6%).
pub const MERGE_BEFORE: usize = 2048;

/// One quick list per block size from 32 to [`QUICK_LIMIT`], indexed by `size / 16`
/// (0 and 1 unused, as for the classes).
const QUICK_LISTS: usize = QUICK_LIMIT / 16 + 1;

/// The fast lists: those of sizes up to [`FAST_LIMIT`].
const FAST_LISTS: usize = FAST_LIMIT / 16 + 1;

/// Block sizes below this have a class each.
pub const EXACT_LIMIT: usize = 1024;

/// `EXACT_LIMIT`'s power of two: the first spaced class starts at `2^FIRST_SPACED_POWER`.
const FIRST_SPACED_POWER: u32 = EXACT_LIMIT.trailing_zeros();

/// Classes per power of two above `EXACT_LIMIT`, as a power of two (8 = 2^3).
const SUBCLASS_BITS: u32 = 3;

/// How many classes: 64 exact ones (16-byte steps below 1 KiB; 0 and 1 are never used,
/// blocks being at least 32 bytes) and 192 spaced ones (24 powers of two, 8 each).
pub const CLASSES: usize = 256;

/// Words in the bitmap of non-empty classes.
pub const WORDS: usize = CLASSES / 64;

/// Blocks of its own class that a search looks at before going up a class. A spaced
/// class holds blocks up to 1/8 apart in size, so some may be smaller than the request.
/// The search stops early at a block of exactly the request's size. 64 rather than 8:
/// as good or better on every trace of the suite and on most traces of other shapes,
/// at no cost that valgrind could count (chapter 4, "Choosing the classes").
pub const SCAN_LIMIT: usize = 64;

const EXACT_CLASSES: usize = EXACT_LIMIT / 16;

/// The class of a block of `size` bytes (a multiple of 16, at least 32).
pub fn class_of(size: usize) -> usize {
    if size < EXACT_LIMIT {
        return size / 16;
    }
    let power = usize::BITS - 1 - size.leading_zeros();
    let subclass = (size >> (power - SUBCLASS_BITS)) & ((1 << SUBCLASS_BITS) - 1);
    let class = EXACT_CLASSES + ((power - FIRST_SPACED_POWER) << SUBCLASS_BITS) as usize + subclass;
    class.min(CLASSES - 1)
}

/// The smallest block size of class `class`: its lower bound.
pub fn class_floor(class: usize) -> usize {
    if class < EXACT_CLASSES {
        return class * 16;
    }
    let spaced = class - EXACT_CLASSES;
    let power = FIRST_SPACED_POWER as usize + (spaced >> SUBCLASS_BITS);
    let subclass = spaced & ((1 << SUBCLASS_BITS) - 1);
    (1 << power) + (subclass << (power - SUBCLASS_BITS as usize))
}

/// One class: how many free blocks and how many bytes, for the dump and the stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCount {
    pub class: usize,
    /// The class's smallest block size.
    pub floor: usize,
    pub blocks: usize,
    pub bytes: usize,
}

pub struct Bins {
    /// The newest block of each class; `None` for an empty class.
    heads: [Option<Block>; CLASSES],
    /// Bit `c % 64` of word `c / 64` is set exactly when class `c` is not empty.
    non_empty: [u64; WORDS],
    /// The newest quick block of each size up to [`QUICK_LIMIT`], by `size / 16`: a
    /// singly linked stack through [`Block::next_quick`].
    quick: [Option<Block>; QUICK_LISTS],
    /// How many quick blocks there are, all lists together.
    quick_blocks: usize,
    /// How many blocks each quick list holds (those above [`FAST_LIMIT`] at most
    /// [`QUICK_CAP`]).
    quick_counts: [u32; QUICK_LISTS],
    /// The rest of the block last split to serve a request, kept out of the classes
    /// (dlmalloc's "designated victim", glibc's `last_remainder`): a small request that
    /// its own class cannot serve is cut from it, and what is left takes its place
    /// here, with no class to compute, no list to relink and no bitmap to search. A
    /// program allocating a run of blocks of mixed sizes so carves them one after the
    /// other from one free block. A free block below [`EXACT_LIMIT`] that a merge moves
    /// to another class becomes the victim too (see [`FreeIndex::grew`]). Counted in
    /// its class in the dump and the stats.
    victim: Option<Block>,
}

impl Bins {
    /// The first class at or above `class` that holds a block.
    fn first_non_empty_from(&self, class: usize) -> Option<usize> {
        let mut word = class / 64;
        let mut bits = *self.non_empty.get(word)? & (u64::MAX << (class % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.non_empty.get(word)?;
        }
    }

    fn mark(&mut self, class: usize, non_empty: bool) {
        let bit = 1u64 << (class % 64);
        if let Some(word) = self.non_empty.get_mut(class / 64) {
            if non_empty {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn head(&self, class: usize) -> Option<Block> {
        self.heads.get(class).copied().flatten()
    }

    fn set_head(&mut self, class: usize, block: Option<Block>) {
        if let Some(head) = self.heads.get_mut(class) {
            *head = block;
        }
        self.mark(class, block.is_some());
    }

    fn push(&mut self, class: usize, block: Block) {
        let head = self.head(class);
        block.set_prev_in_list(None);
        block.set_next_in_list(head);
        if let Some(head) = head {
            head.set_prev_in_list(Some(block));
        }
        self.set_head(class, Some(block));
    }

    /// Takes `block` out of class `class`'s list: O(1), through its links.
    fn unlink(&mut self, class: usize, block: Block) {
        let prev = block.prev_in_list();
        let next = block.next_in_list();
        match prev {
            None => self.set_head(class, next),
            Some(prev) => prev.set_next_in_list(next),
        }
        if let Some(next) = next {
            next.set_prev_in_list(prev);
        }
    }

    /// The smallest block of at least `size` bytes among the first `limit` of `class`.
    fn best_of_first(&self, class: usize, size: usize, limit: usize) -> Option<Block> {
        let mut best: Option<Block> = None;
        let mut current = self.head(class);
        for _ in 0..limit {
            let Some(block) = current else { break };
            if block.size() == size {
                return Some(block);
            }
            if block.size() > size && best.is_none_or(|b| block.size() < b.size()) {
                best = Some(block);
            }
            current = block.next_in_list();
        }
        best
    }

    /// The classes' answer for a block of `size` bytes (of class `class`): in a
    /// spaced class, the best of its first [`SCAN_LIMIT`] blocks; then the head of the
    /// next class up that holds any.
    fn find_fit_in_classes(&self, class: usize, size: usize) -> Option<Block> {
        if class >= EXACT_CLASSES {
            // The last class is open-ended: walk all of it (its blocks are 16 GiB or
            // more each, so there are few).
            let limit = if class == CLASSES - 1 {
                usize::MAX
            } else {
                SCAN_LIMIT
            };
            if let Some(block) = self.best_of_first(class, size, limit) {
                return Some(block);
            }
        }
        let above = self.first_non_empty_from(class + 1)?;
        // A request of 1 KiB or more takes the smallest of the first blocks there, as
        // glibc takes the smallest chunk of its next large bin (kept sorted by size);
        // the head, the newest, may be up to a quarter larger than the smallest, and
        // its rest a hole of no use to the next request of this size (chapter 4,
        // "Quick blocks beside a hole"). A smaller request takes the head: tried with
        // them too, `random.rep` fell under glibc.
        let block = if class >= EXACT_CLASSES {
            self.best_of_first(above, size, SCAN_LIMIT)?
        } else {
            self.head(above)?
        };
        // The last class may hold blocks smaller than a request in it; every other
        // class above the request's holds only blocks larger than it.
        (block.size() >= size).then_some(block)
    }

    /// Every quick list that holds blocks, counted as [`Bins::for_each_class`] counts
    /// a class (`class` is the list's index, `size / 16`).
    pub fn for_each_quick_list(&self, mut visit: impl FnMut(ClassCount)) {
        for (index, head) in self.quick.iter().enumerate() {
            let mut count = ClassCount {
                class: index,
                floor: index * 16,
                ..ClassCount::default()
            };
            let mut current = *head;
            while let Some(block) = current {
                count.blocks += 1;
                count.bytes += block.size();
                current = block.next_quick();
            }
            if count.blocks > 0 {
                visit(count);
            }
        }
    }

    /// Every class that holds blocks, counted (for the dump and the stats): walks
    /// every free block, so it is for reports, not for the allocation path.
    pub fn for_each_class(&self, mut visit: impl FnMut(ClassCount)) {
        for class in 0..CLASSES {
            let mut count = ClassCount {
                class,
                floor: class_floor(class),
                ..ClassCount::default()
            };
            if let Some(victim) = self.victim
                && class_of(victim.size()) == class
            {
                count.blocks += 1;
                count.bytes += victim.size();
            }
            let mut current = self.head(class);
            while let Some(block) = current {
                count.blocks += 1;
                count.bytes += block.size();
                current = block.next_in_list();
            }
            if count.blocks > 0 {
                visit(count);
            }
        }
    }
}

impl FreeIndex for Bins {
    fn new() -> Self {
        Bins {
            heads: [None; CLASSES],
            non_empty: [0; WORDS],
            quick: [None; QUICK_LISTS],
            quick_blocks: 0,
            quick_counts: [0; QUICK_LISTS],
            victim: None,
        }
    }

    /// Keeps every freed block up to [`QUICK_LIMIT`] unmerged, newest first, unless
    /// its list is above [`FAST_LIMIT`] and full or the block follows a free block.
    fn defer(&mut self, block: Block) -> bool {
        let index = block.size() / 16;
        let (Some(head), Some(count)) =
            (self.quick.get_mut(index), self.quick_counts.get_mut(index))
        else {
            return false;
        };
        // Above the fast lists, a block whose neighbour before it is free merges at
        // once (see [`QUICK_CAP`]): its own header says so, no neighbour is read.
        if block.size() > FAST_LIMIT && (*count >= QUICK_CAP || block.prev_is_free()) {
            return false;
        }
        block.set_next_quick(*head);
        *head = Some(block);
        *count += 1;
        self.quick_blocks += 1;
        true
    }

    /// Before a request of [`MERGE_BEFORE`] bytes or more, as glibc merges its fast
    /// bins before a request beyond its small bins: the fast lists' blocks, merged, may
    /// serve it, rather than room at the top.
    fn merge_first(&self, size: usize) -> bool {
        size >= MERGE_BEFORE && self.quick.iter().take(FAST_LISTS).any(Option::is_some)
    }

    /// Only the fast lists' blocks: the others, a few of each size, stay for the
    /// requests of their sizes (see [`QUICK_CAP`]).
    fn take_deferred_to_merge_first(&mut self) -> Option<Block> {
        let index = self
            .quick
            .iter()
            .take(FAST_LISTS)
            .position(Option::is_some)?;
        self.take_deferred(index * 16)
    }

    fn take_deferred(&mut self, size: usize) -> Option<Block> {
        let index = size / 16;
        let (Some(head), Some(count)) =
            (self.quick.get_mut(index), self.quick_counts.get_mut(index))
        else {
            return None;
        };
        let block = (*head)?;
        *head = block.next_quick();
        *count -= 1;
        self.quick_blocks -= 1;
        Some(block)
    }

    fn take_back_newest(&mut self, block: Block) -> bool {
        let index = block.size() / 16;
        if self.quick.get(index).copied().flatten() != Some(block) {
            return false;
        }
        self.take_deferred(index * 16).is_some()
    }

    fn take_any_deferred(&mut self) -> Option<Block> {
        if self.quick_blocks == 0 {
            return None;
        }
        let size = self.quick.iter().position(Option::is_some)? * 16;
        self.take_deferred(size)
    }

    fn holds_deferred(&self) -> bool {
        self.quick_blocks > 0
    }

    /// Counted from the lists' counts: each list holds blocks of one size.
    fn deferred_totals(&self) -> Tally {
        let bytes = (self.quick_counts.iter().enumerate())
            .map(|(index, &count)| index * 16 * count as usize)
            .sum();
        Tally {
            bytes,
            blocks: self.quick_blocks,
        }
    }

    /// The quick lists' own invariants: each block in the list of its size, and as many
    /// blocks as counted.
    fn check_each_deferred(
        &self,
        max_blocks: usize,
        mut is_quick_block: impl FnMut(Block) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let mut listed = 0;
        for (index, (head, &count)) in self.quick.iter().zip(&self.quick_counts).enumerate() {
            let listed_before = listed;
            let mut entry = *head;
            while let Some(block) = entry {
                is_quick_block(block)?;
                if block.size() != index * 16 {
                    return Err(Fault::Corruption {
                        addr: block.addr(),
                        what: "quick block in the wrong quick list for its size",
                    });
                }
                listed += 1;
                if listed > max_blocks {
                    return Err(Fault::Corruption {
                        addr: block.addr(),
                        what: "quick lists loop or hold a block twice",
                    });
                }
                entry = block.next_quick();
            }
            let in_list = listed - listed_before;
            if in_list != count as usize || (index * 16 > FAST_LIMIT && count > QUICK_CAP) {
                return Err(Fault::Corruption {
                    addr: head.map_or(0, Block::addr),
                    what: "a quick list holds other than its count of blocks, or too many",
                });
            }
        }
        if listed != self.quick_blocks {
            return Err(Fault::Corruption {
                addr: 0,
                what: "quick lists hold other than their count of blocks",
            });
        }
        Ok(())
    }

    fn insert(&mut self, block: Block) {
        self.push(class_of(block.size()), block);
    }

    fn remove(&mut self, block: Block) {
        if self.victim == Some(block) {
            self.victim = None;
            return;
        }
        self.unlink(class_of(block.size()), block);
    }

    /// After a cut for a small request (below [`EXACT_LIMIT`], as in dlmalloc), the
    /// rest becomes the victim, and the victim it displaces (unless `old` was the
    /// victim itself) goes to its class. After a cut for a large one, the rest is
    /// filed like any replacement.
    fn replace_with_rest(&mut self, old: Block, rest: Block) {
        if self.victim == Some(old) {
            self.victim = Some(rest);
            return;
        }
        if old.size() - rest.size() >= EXACT_LIMIT {
            self.replace(old, rest);
            return;
        }
        self.unlink(class_of(old.size()), old);
        if let Some(victim) = self.victim.replace(rest) {
            self.push(class_of(victim.size()), victim);
        }
    }

    /// `new` is usually the rest of `old` after a split, or `old` merged with the block
    /// before it: a different size, so often a different class. In the same class it
    /// takes `old`'s place in the list; otherwise it goes to the front of its own.
    fn replace(&mut self, old: Block, new: Block) {
        if self.victim == Some(old) {
            // Merged with the block before it: still the victim.
            self.victim = Some(new);
            return;
        }
        let old_class = class_of(old.size());
        let new_class = class_of(new.size());
        if old_class != new_class {
            self.unlink(old_class, old);
            self.push(new_class, new);
            return;
        }
        let prev = old.prev_in_list();
        let next = old.next_in_list();
        new.set_prev_in_list(prev);
        new.set_next_in_list(next);
        match prev {
            None => self.set_head(new_class, Some(new)),
            Some(prev) => prev.set_next_in_list(Some(new)),
        }
        if let Some(next) = next {
            next.set_prev_in_list(Some(new));
        }
    }

    /// A block that moves to another class goes to the front of its new one, unless
    /// it is still below [`EXACT_LIMIT`]: then it becomes the victim, and the victim
    /// it displaces goes to its class. A program freeing a run of small blocks in
    /// address order merges each with the one before, whose class changes every time
    /// (16 bytes a class below 1 KiB); as the victim, it moves no more (two list
    /// operations and their cache misses each time), and small requests are cut from
    /// it, in the memory just freed. Inlined into phase 2's `release`: most calls
    /// return at the first test, and a call cost more than that.
    #[inline(always)]
    fn grew(&mut self, block: Block, old_size: usize) {
        if self.victim == Some(block) {
            return;
        }
        let old_class = class_of(old_size);
        let new_class = class_of(block.size());
        if old_class != new_class {
            self.unlink(old_class, block);
            if block.size() < EXACT_LIMIT {
                // Still small: the victim, which the next merges leave in place.
                if let Some(victim) = self.victim.replace(block) {
                    self.push(class_of(victim.size()), victim);
                }
            } else {
                self.push(new_class, block);
            }
        }
    }

    /// A request below [`EXACT_LIMIT`] that its own class cannot serve is cut from the
    /// victim if the victim holds it, as in dlmalloc, before any larger class is
    /// searched. Otherwise the victim serves only if it is a better fit than the
    /// classes' (or the only one).
    fn find_fit(&mut self, size: usize) -> Option<Block> {
        let class = class_of(size);
        if class < EXACT_CLASSES {
            // Every block of an exact class has the request's size.
            if let Some(block) = self.head(class) {
                return Some(block);
            }
        }
        let victim = self.victim.filter(|victim| victim.size() >= size);
        if class < EXACT_CLASSES && victim.is_some() {
            return victim;
        }
        match (self.find_fit_in_classes(class, size), victim) {
            (Some(block), Some(victim)) if victim.size() < block.size() => Some(victim),
            (None, victim) => victim,
            (found, _) => found,
        }
    }

    /// The bins' own invariants: each class's links agree both ways (`b.next.prev ==
    /// b`, and the head has no `prev`), every block is in the class of its size, and a
    /// class's bit in the bitmap is set exactly when it holds a block. The victim is
    /// visited last.
    fn check_each(
        &self,
        max_blocks: usize,
        mut is_free_block: impl FnMut(Block) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let mut listed = 0;
        for class in 0..CLASSES {
            let head = self.head(class);
            let marked = self.non_empty[class / 64] & (1 << (class % 64)) != 0;
            if marked != head.is_some() {
                return Err(Fault::Corruption {
                    addr: head.map_or(0, Block::addr),
                    what: "bin bitmap disagrees with the bin",
                });
            }
            let faults = LinkFaults {
                disagree: "bin links disagree (next and prev)",
                too_many: "bins loop or hold a block twice",
            };
            walk_links(head, max_blocks, &mut listed, faults, |block| {
                is_free_block(block)?;
                if class_of(block.size()) != class {
                    return Err(Fault::Corruption {
                        addr: block.addr(),
                        what: "free block in the wrong bin for its size",
                    });
                }
                Ok(())
            })?;
        }
        // The victim is one more free block; the heap's check finds it if it is also
        // in a class (one block counted twice).
        if let Some(victim) = self.victim {
            is_free_block(victim)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use split_coalesce::block::FIRST_BLOCK_OFFSET;
    use std::vec::Vec;

    #[test]
    fn classes_are_exact_below_1_kib_then_eight_per_power_of_two() {
        assert_eq!(class_of(48), 3);
        assert_eq!(class_of(1008), 63);
        assert_eq!(class_of(1024), 64);
        assert_eq!(class_of(1136), 64);
        assert_eq!(class_of(1152), 65);
        assert_eq!(class_of(2047), 71);
        assert_eq!(class_of(2048), 72);
        assert_eq!(class_of(1 << 33), CLASSES - 8);
        assert_eq!(class_of((1 << 34) - 16), CLASSES - 1);
        assert_eq!(class_of(1 << 40), CLASSES - 1);
    }

    #[test]
    fn every_size_lies_between_its_class_floor_and_the_next() {
        let mut size = 48;
        while size < 1 << 36 {
            let class = class_of(size);
            assert!(class_floor(class) <= size, "size {size} class {class}");
            if class + 1 < CLASSES {
                assert!(size < class_floor(class + 1), "size {size} class {class}");
            }
            size += 16 + size / 7;
            size = size.next_multiple_of(16);
        }
        for class in 3..CLASSES {
            assert_eq!(class_of(class_floor(class)), class);
        }
    }

    /// Free blocks in memory of the test's own, at block addresses (one word past a
    /// 16-aligned start), with their headers written.
    struct Blocks {
        memory: Vec<u128>,
    }

    impl Blocks {
        fn new(sizes: &[usize]) -> (Blocks, Vec<Block>) {
            let total: usize = sizes.iter().sum();
            let mut blocks = Blocks {
                memory: std::vec![0u128; total / 16 + 1],
            };
            let base = blocks.memory.as_mut_ptr() as usize;
            let mut addr = base + FIRST_BLOCK_OFFSET;
            let mut made = Vec::new();
            for &size in sizes {
                // SAFETY: `addr` is a block address and `size` bytes from it lie inside
                // `memory`, which the test owns and keeps alive.
                let block = unsafe { Block::at(addr) };
                block.init_free(size);
                made.push(block);
                addr += size;
            }
            (blocks, made)
        }
    }

    fn indexed(bins: &Bins) -> Vec<usize> {
        let mut addrs = Vec::new();
        bins.check_each(usize::MAX, |b| {
            addrs.push(b.addr());
            Ok(())
        })
        .expect("the bins are consistent");
        addrs.sort();
        addrs
    }

    #[test]
    fn an_exact_class_serves_its_own_size_whatever_else_is_free() {
        let (_memory, blocks) = Blocks::new(&[48, 64, 4096, 64, 80]);
        let mut bins = Bins::new();
        blocks.iter().for_each(|&b| bins.insert(b));
        assert_eq!(
            bins.find_fit(64),
            Some(blocks[3]),
            "newest of the class first"
        );
        assert_eq!(bins.find_fit(48), Some(blocks[0]));
        assert_eq!(bins.find_fit(96), Some(blocks[2]), "next class up");
        assert_eq!(bins.find_fit(8192), None);
    }

    #[test]
    fn a_spaced_class_gives_the_best_of_its_first_blocks() {
        // Class 64 spans [1024, 1152).
        let (_memory, blocks) = Blocks::new(&[1136, 1056, 1104, 2048]);
        let mut bins = Bins::new();
        blocks.iter().for_each(|&b| bins.insert(b));
        assert_eq!(bins.find_fit(1040), Some(blocks[1]), "1056 is the best fit");
        assert_eq!(bins.find_fit(1120), Some(blocks[0]));
        assert_eq!(bins.find_fit(1152), Some(blocks[3]), "class 65 is empty");
    }

    /// Class 65 spans [1152, 1280): a request of 1 KiB or more whose own class is
    /// empty takes its smallest block; a smaller one its head, the newest.
    #[test]
    fn a_large_request_takes_the_smallest_block_of_the_next_class() {
        let (_memory, blocks) = Blocks::new(&[1168, 1264, 1200]);
        let mut bins = Bins::new();
        blocks.iter().for_each(|&b| bins.insert(b));
        assert_eq!(
            bins.find_fit(1040),
            Some(blocks[0]),
            "the smallest of class 65"
        );
        assert_eq!(bins.find_fit(1008), Some(blocks[2]), "the head of class 65");
    }

    #[test]
    fn taking_blocks_out_empties_the_bitmap() {
        let (_memory, blocks) = Blocks::new(&[48, 48, 1024, 1 << 20]);
        let mut bins = Bins::new();
        blocks.iter().for_each(|&b| bins.insert(b));
        assert_eq!(indexed(&bins).len(), 4);
        bins.remove(blocks[0]);
        bins.remove(blocks[3]);
        assert_eq!(indexed(&bins), [blocks[1].addr(), blocks[2].addr()]);
        bins.remove(blocks[1]);
        bins.remove(blocks[2]);
        assert_eq!(bins.non_empty, [0; WORDS]);
        assert_eq!(bins.find_fit(48), None);
    }

    #[test]
    fn replace_and_grew_move_a_block_to_its_new_class() {
        let (_memory, blocks) = Blocks::new(&[2048, 64, 64, 64]);
        let mut bins = Bins::new();
        bins.insert(blocks[0]);
        bins.insert(blocks[1]);
        bins.insert(blocks[3]);
        // A split: the block at 2048's start is used, its last 1024 bytes are the rest.
        // SAFETY: 1024 bytes into a 2048-byte block the test owns.
        let rest = unsafe { Block::at(blocks[0].addr() + 1024) };
        rest.init_free(1024);
        bins.replace(blocks[0], rest);
        assert_eq!(bins.find_fit(1024), Some(rest));
        assert_eq!(bins.find_fit(1040), None);
        // A merge in place: block 1 absorbs block 2 (64 + 64 = 128 bytes).
        blocks[1].init_free(128);
        bins.grew(blocks[1], 64);
        assert_eq!(bins.find_fit(128), Some(blocks[1]));
        assert_eq!(bins.find_fit(64), Some(blocks[3]));
        assert_eq!(
            indexed(&bins),
            [rest.addr(), blocks[1].addr(), blocks[3].addr()]
        );
    }

    #[test]
    fn a_small_block_that_grows_becomes_the_victim() {
        let (_memory, blocks) = Blocks::new(&[64, 64, 512, 48, 48, 1024, 64]);
        let mut bins = Bins::new();
        bins.insert(blocks[0]);
        // Block 0 absorbs block 1 (64 + 64 bytes): class 4 to class 8, and the victim.
        blocks[0].init_free(128);
        bins.grew(blocks[0], 64);
        assert_eq!(bins.victim, Some(blocks[0]));
        // It absorbs block 2: still the victim, no class to change.
        blocks[0].init_free(640);
        bins.grew(blocks[0], 128);
        assert_eq!(bins.victim, Some(blocks[0]));
        // Block 3 absorbs block 4: it takes the victim's place, which goes to its class.
        bins.insert(blocks[3]);
        blocks[3].init_free(96);
        bins.grew(blocks[3], 48);
        assert_eq!(bins.victim, Some(blocks[3]));
        assert_eq!(bins.head(class_of(640)), Some(blocks[0]));
        // Block 5 absorbs block 6, to 1 KiB or more: to its class; the victim stays.
        bins.insert(blocks[5]);
        blocks[5].init_free(1088);
        bins.grew(blocks[5], 1024);
        assert_eq!(bins.victim, Some(blocks[3]));
        assert_eq!(bins.head(class_of(1088)), Some(blocks[5]));
        assert_eq!(
            indexed(&bins),
            [blocks[0].addr(), blocks[3].addr(), blocks[5].addr()]
        );
    }

    /// Cuts `size` bytes from the start of the indexed `block`, as phase 2's `take`
    /// does, and gives the rest to the bins.
    fn cut(bins: &mut Bins, block: Block, size: usize) -> Block {
        // SAFETY: `size` bytes into a block the test owns, leaving at least 48.
        let rest = unsafe { Block::at(block.addr() + size) };
        rest.init_free(block.size() - size);
        bins.replace_with_rest(block, rest);
        block.init_used(size, false);
        rest
    }

    #[test]
    fn the_rest_of_a_small_cut_serves_the_next_small_requests() {
        let (_memory, blocks) = Blocks::new(&[4096, 64, 512, 8192]);
        let mut bins = Bins::new();
        [0, 2, 3].iter().for_each(|&i| bins.insert(blocks[i]));
        // 96 bytes: class 6 is empty, so the smallest class above (512) serves.
        assert_eq!(bins.find_fit(96), Some(blocks[2]));
        let rest = cut(&mut bins, blocks[2], 96);
        assert_eq!(bins.victim, Some(rest), "416 bytes, kept apart");
        // The victim serves before the larger classes, and its rest stays the victim.
        assert_eq!(bins.find_fit(160), Some(rest));
        let rest = cut(&mut bins, rest, 160);
        assert_eq!((bins.victim, rest.size()), (Some(rest), 256));
        // Too small for the victim: the classes serve, and the 4096-byte block's rest
        // becomes the victim, the old one going to its class.
        assert_eq!(bins.find_fit(320), Some(blocks[0]));
        let next = cut(&mut bins, blocks[0], 320);
        assert_eq!(bins.victim, Some(next));
        assert_eq!(bins.find_fit(256), Some(rest), "filed in class 16");
        // A large request takes the victim only as the best fit, and a large cut's
        // rest is filed in its class.
        assert_eq!(bins.find_fit(3776), Some(next));
        assert_eq!(bins.find_fit(4096), Some(blocks[3]));
        let large_rest = cut(&mut bins, blocks[3], 4096);
        assert_eq!(bins.victim, Some(next));
        assert_eq!(
            indexed(&bins),
            [next.addr(), rest.addr(), large_rest.addr()],
            "the check visits the victim"
        );
        bins.remove(next);
        assert_eq!(bins.victim, None);
        assert_eq!(indexed(&bins), [rest.addr(), large_rest.addr()]);
    }

    #[test]
    fn the_check_finds_a_block_in_the_wrong_bin() {
        let (_memory, blocks) = Blocks::new(&[64, 256]);
        let mut bins = Bins::new();
        bins.insert(blocks[0]);
        // Rewritten without telling the bins: now in class 4's list with size 256.
        blocks[0].init_free(64 + 192);
        let fault = bins.check_each(10, |_| Ok(())).unwrap_err();
        assert!(matches!(
            fault,
            Fault::Corruption {
                what: "free block in the wrong bin for its size",
                ..
            }
        ));
    }

    #[test]
    fn the_check_finds_disagreeing_links_and_loops() {
        let (_memory, blocks) = Blocks::new(&[64, 64]);
        let mut bins = Bins::new();
        bins.insert(blocks[0]);
        bins.insert(blocks[1]); // the head now; blocks[0].prev names it
        let fault = |bins: &Bins, max_blocks| match bins.check_each(max_blocks, |_| Ok(())) {
            Err(Fault::Corruption { addr, what }) => Some((addr, what)),
            _ => None,
        };
        assert_eq!(fault(&bins, 2), None);
        assert_eq!(
            fault(&bins, 1),
            Some((blocks[0].addr(), "bins loop or hold a block twice"))
        );
        blocks[0].set_prev_in_list(None);
        assert_eq!(
            fault(&bins, 2),
            Some((blocks[0].addr(), "bin links disagree (next and prev)"))
        );
    }

    /// Blocks the program freed, as the heap hands them to `defer`: used, then marked
    /// quick once the index has kept them.
    fn deferred(bins: &mut Bins, blocks: &[Block]) {
        for &block in blocks {
            block.init_used(block.size(), false);
            assert!(bins.defer(block));
            block.set_quick(true);
        }
    }

    #[test]
    fn quick_lists_keep_small_blocks_by_exact_size_newest_first() {
        let (_memory, blocks) = Blocks::new(&[64, 48, 64, 128, 1040]);
        let mut bins = Bins::new();
        deferred(&mut bins, &blocks[..4]);
        blocks[4].init_used(1040, false);
        assert!(!bins.defer(blocks[4]), "above QUICK_LIMIT: merged at once");
        assert!(bins.holds_deferred());
        assert!(!bins.merge_first(MERGE_BEFORE - 16) && bins.merge_first(MERGE_BEFORE));
        let mut quick = Vec::new();
        bins.check_each_deferred(4, |b| {
            quick.push(b.addr());
            Ok(())
        })
        .unwrap();
        assert_eq!(quick.len(), 4);
        assert_eq!(bins.take_deferred(64), Some(blocks[2]), "newest first");
        assert_eq!(bins.take_deferred(64), Some(blocks[0]));
        assert_eq!(bins.take_deferred(64), None);
        assert_eq!(bins.take_deferred(80), None, "exact sizes only");
        assert_eq!(bins.take_any_deferred(), Some(blocks[1]));
        assert_eq!(bins.take_any_deferred(), Some(blocks[3]));
        assert_eq!(bins.take_any_deferred(), None);
        assert!(!bins.holds_deferred());
    }

    /// A quick list above [`FAST_LIMIT`] holds [`QUICK_CAP`] blocks, and a large
    /// request leaves them be: only the fast lists merge first.
    #[test]
    fn quick_lists_above_the_fast_limit_are_bounded_and_kept() {
        let sizes = [[48].as_slice(), &[160; QUICK_CAP as usize + 1]].concat();
        let (_memory, blocks) = Blocks::new(&sizes);
        let mut bins = Bins::new();
        deferred(&mut bins, &blocks[..=QUICK_CAP as usize]);
        let over = blocks[QUICK_CAP as usize + 1];
        over.init_used(160, false);
        assert!(!bins.defer(over), "a full list: merged at once");
        assert!(bins.merge_first(MERGE_BEFORE));
        assert_eq!(bins.take_deferred_to_merge_first(), Some(blocks[0]));
        assert_eq!(bins.take_deferred_to_merge_first(), None);
        assert!(!bins.merge_first(MERGE_BEFORE), "no fast block left");
        assert!(bins.holds_deferred());
        bins.check_each_deferred(10, |_| Ok(())).unwrap();
        assert_eq!(bins.take_deferred(160), Some(blocks[QUICK_CAP as usize]));
        assert!(bins.defer(over), "room again");
    }

    /// A block above the fast lists that follows a free block is not kept: merged,
    /// it joins that hole. A fast block is kept all the same.
    #[test]
    fn a_block_after_a_free_block_is_kept_only_in_a_fast_list() {
        let (_memory, blocks) = Blocks::new(&[160, 160, 48]);
        let mut bins = Bins::new();
        blocks[0].init_used(160, false);
        blocks[1].init_used(160, true);
        blocks[2].init_used(48, true);
        assert!(bins.defer(blocks[0]));
        assert!(!bins.defer(blocks[1]), "after a free block: merged at once");
        assert!(bins.defer(blocks[2]), "a fast list keeps it");
    }

    #[test]
    fn the_check_finds_a_quick_block_in_the_wrong_list() {
        let (_memory, blocks) = Blocks::new(&[64, 96]);
        let mut bins = Bins::new();
        deferred(&mut bins, &blocks[..1]);
        // Rewritten without telling the bins: a quick block of 96 bytes in the 64 list.
        blocks[0].init_used(96, false);
        blocks[0].set_quick(true);
        let fault = bins.check_each_deferred(10, |_| Ok(())).unwrap_err();
        assert!(matches!(
            fault,
            Fault::Corruption {
                what: "quick block in the wrong quick list for its size",
                ..
            }
        ));
    }

    #[test]
    fn classes_are_counted_for_the_dump() {
        let (_memory, blocks) = Blocks::new(&[48, 48, 1056, 1104]);
        let mut bins = Bins::new();
        blocks.iter().for_each(|&b| bins.insert(b));
        let mut counts = Vec::new();
        bins.for_each_class(|c| counts.push(c));
        assert_eq!(
            counts,
            [
                ClassCount {
                    class: 3,
                    floor: 48,
                    blocks: 2,
                    bytes: 96
                },
                ClassCount {
                    class: 64,
                    floor: 1024,
                    blocks: 2,
                    bytes: 2160
                }
            ]
        );
    }
}
