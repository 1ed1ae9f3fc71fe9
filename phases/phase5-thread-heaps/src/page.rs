//! A page: 64 KiB of blocks of one size class, owned by one thread's heap.
//!
//! ```text
//!   page (64 KiB, in a segment)            its descriptor (in the segment's header)
//!   +------+------+------+------+----      +------------------------------------+
//!   | blk0 | blk1 | blk2 | blk3 |...       | owner_thread  block_size  class    |
//!   +------+------+------+------+----      | free --> blk2 --> blk0 --> null    |  owner only
//!     used   free   free   used  never     | bump = 4   used = 2                |  owner only
//!                  ^                       | thread_free --> (other threads')   |  one CAS
//!                  a block's first word    | allocated: 1 0 0 1 ... (bitmap)    |
//!                  links it into a list    +------------------------------------+
//! ```
//!
//! - `free`: the owner's list: where `malloc` pops from and where the owner's `free`
//!   pushes, with plain loads and stores.
//! - `thread_free`: blocks freed by other threads, pushed with one compare-and-swap;
//!   the owner takes the whole list with one swap ([`Page::collect`]) when `free` is
//!   empty.
//! - `bump`: blocks at or past it were never handed out, so a fresh page costs no
//!   list building and touches no memory until used.
//! - `allocated`: one bit per block, set while the block is the program's. `free`
//!   checks it before anything else: a clear bit is a double free, caught with no lock.
//!   Only the owner writes it; other threads only read it.
//!
//! The invariant, with `|list|` the length of a list:
//!
//! ```text
//!   used + |free| == bump                 every block handed out is used or on free
//!   popcount(allocated) == used           a block on thread_free keeps its bit
//!                                         until the owner collects it
//!   |thread_free| <= used                 the program holds used - |thread_free|
//! ```
//!
//! `used` counts blocks the owner has not seen come back: blocks on `thread_free` are
//! still "used" until collected, so `used == 0` means nobody holds a block of the page.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use preload_kit::Fault;

/// The size of a page: every block of a page has the same size class.
pub const PAGE_SIZE: usize = 64 * 1024;
/// The smallest block, so the most blocks a page can hold.
const MAX_BLOCKS: usize = PAGE_SIZE / 16;
const BITMAP_WORDS: usize = MAX_BLOCKS / 64;

/// A free block: its first word links it to the next one in a list.
#[repr(C)]
pub struct FreeBlock {
    next: *mut FreeBlock,
}

/// A page's descriptor. Lives in its segment's header, never in the page itself, so a
/// page's blocks are all the program's and a stray write into a block cannot reach it.
///
/// Fields are grouped by who may write them (see the module's picture). Cells are
/// touched only by the thread that owns the page (or, while the page has no owner,
/// under the pool's lock); atomics may be read by any thread.
#[repr(C)]
pub struct Page {
    /// The thread pointer of the owning thread, or 0 while nobody owns the page (in the
    /// pool, or in an abandoned heap). `free` compares it with its own thread pointer.
    pub owner_thread: AtomicUsize,
    /// 0 while the page is in the pool; the class's block size while in use.
    pub block_size: AtomicU32,
    /// The size class (meaningful while in use).
    pub class: AtomicU32,
    /// The index of the heap whose queue holds this page (meaningful while in use).
    pub heap: AtomicU32,
    /// Where the page's memory starts (set once, when its segment is made).
    pub start: Cell<usize>,
    /// `ceil(2^32 / block_size)`: turns an offset into a block index with a multiply
    /// and a shift instead of a division (exact for offsets below 2^16 and block sizes
    /// up to 2^13: the error, below `offset * block_size / 2^32`, stays under one).
    pub reciprocal: AtomicU32,
    /// Blocks in the page (`PAGE_SIZE / block_size`).
    pub capacity: Cell<u32>,
    /// Blocks handed out at least once: `[0, bump)`.
    pub bump: Cell<u32>,
    /// Blocks handed out and not seen back by the owner.
    pub used: Cell<u32>,
    /// The owner's free blocks.
    pub free: Cell<*mut FreeBlock>,
    /// Links in the owner's queue of pages of this class, or in the pool's list.
    pub next: Cell<*mut Page>,
    pub prev: Cell<*mut Page>,
    /// Whether the memory may be resident (false after `MADV_DONTNEED`).
    pub committed: Cell<bool>,
    /// Blocks freed by other threads, not yet collected by the owner.
    pub thread_free: AtomicPtr<FreeBlock>,
    /// One bit per block: set while the program holds the block.
    pub allocated: [AtomicU64; BITMAP_WORDS],
}

/// What a pointer is to its page: the index of the block it starts.
pub enum BlockOf {
    /// `addr` is the start of block `index`.
    Start(usize),
    /// `addr` is inside the page but not at a block's start (or past the last block).
    Inside,
    /// The page holds no blocks now (it is in the pool).
    Unused,
}

impl Page {
    /// The block index `addr` starts, judged from fields any thread may read.
    #[inline(always)]
    pub fn block_of(&self, addr: usize) -> BlockOf {
        let size = self.block_size.load(Ordering::Relaxed) as usize;
        if size == 0 {
            return BlockOf::Unused;
        }
        let offset = addr.wrapping_sub(self.start.get());
        if offset >= PAGE_SIZE {
            return BlockOf::Inside;
        }
        let index = Self::divide(offset, self.reciprocal.load(Ordering::Relaxed));
        if index * size != offset || index >= PAGE_SIZE / size {
            return BlockOf::Inside;
        }
        BlockOf::Start(index)
    }

    /// `offset / block_size`, given the page's `reciprocal` (`offset < PAGE_SIZE`).
    #[inline(always)]
    fn divide(offset: usize, reciprocal: u32) -> usize {
        ((offset as u64 * reciprocal as u64) >> 32) as usize
    }

    #[inline(always)]
    fn bit(index: usize) -> (usize, u64) {
        (index / 64, 1u64 << (index % 64))
    }

    /// Whether block `index` is the program's. Any thread may ask; the answer is exact
    /// for a block the asker was legitimately given (the owner's store that set the bit
    /// happened before the block was handed over).
    #[inline(always)]
    pub fn is_allocated(&self, index: usize) -> bool {
        let (word, bit) = Self::bit(index);
        // The index is below PAGE_SIZE / 16 (checked by block_of), so `word` is in range.
        self.allocated[word].load(Ordering::Relaxed) & bit != 0
    }

    /// Sets or clears block `index`'s bit. Owner only: a plain load and store, no
    /// read-modify-write (nobody else writes the word).
    #[inline(always)]
    fn mark(&self, index: usize, allocated: bool) {
        let (word, bit) = Self::bit(index);
        let cell = &self.allocated[word];
        let old = cell.load(Ordering::Relaxed);
        cell.store(
            if allocated { old | bit } else { old & !bit },
            Ordering::Relaxed,
        );
    }

    fn index_of(&self, block: *mut FreeBlock) -> usize {
        Self::divide(
            block as usize - self.start.get(),
            self.reciprocal.load(Ordering::Relaxed),
        )
    }

    /// Prepares a page from the pool to hold blocks of `class` for heap `heap`, owned by
    /// the thread `owner`. The page must be empty (all bits clear, no lists).
    pub fn init(&self, class: usize, block_size: usize, heap: usize, owner: usize) {
        debug_assert!(self.thread_free.load(Ordering::Relaxed).is_null());
        debug_assert!(
            self.allocated
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == 0)
        );
        self.capacity.set((PAGE_SIZE / block_size) as u32);
        self.bump.set(0);
        self.used.set(0);
        self.free.set(ptr::null_mut());
        self.class.store(class as u32, Ordering::Relaxed);
        self.heap.store(heap as u32, Ordering::Relaxed);
        self.reciprocal.store(
            ((1u64 << 32).div_ceil(block_size as u64)) as u32,
            Ordering::Relaxed,
        );
        self.block_size.store(block_size as u32, Ordering::Relaxed);
        self.owner_thread.store(owner, Ordering::Relaxed);
    }

    /// The owner's fast path: a block from `free`, or a never-used one past `bump`;
    /// `None` when both are exhausted (then the caller collects `thread_free` or moves
    /// to another page: [`crate::heap::ThreadHeap::alloc_slow`]).
    #[inline(always)]
    pub fn pop(&self) -> Option<*mut u8> {
        let block = self.free.get();
        let block = if !block.is_null() {
            // SAFETY: blocks on the owner's list are free blocks of this page, whose
            // first word is the link written when they were pushed.
            self.free.set(unsafe { (*block).next });
            block
        } else {
            let bump = self.bump.get();
            if bump >= self.capacity.get() {
                return None;
            }
            self.bump.set(bump + 1);
            (self.start.get() + bump as usize * self.block_size.load(Ordering::Relaxed) as usize)
                as *mut FreeBlock
        };
        self.mark(self.index_of(block), true);
        self.used.set(self.used.get() + 1);
        Some(block.cast())
    }

    /// The owner frees block `index` at `addr`: checked against the bitmap, then pushed
    /// on `free`. No lock, no atomic instruction. Returns whether the page is now empty.
    #[inline(always)]
    pub fn free_local(&self, addr: usize, index: usize) -> Result<bool, Fault> {
        if !self.is_allocated(index) {
            return Err(Fault::DoubleFree { addr });
        }
        self.mark(index, false);
        let block = addr as *mut FreeBlock;
        // SAFETY: the block is this page's and was the program's until now; its first
        // word becomes the link.
        unsafe { (*block).next = self.free.get() };
        self.free.set(block);
        let used = self.used.get() - 1;
        self.used.set(used);
        Ok(used == 0)
    }

    /// Another thread frees block `index` at `addr`: one compare-and-swap loop onto
    /// `thread_free`. The bitmap is only read here (a clear bit is a double free); the
    /// owner clears it when it collects the block.
    #[inline]
    pub fn free_remote(&self, addr: usize, index: usize) -> Result<(), Fault> {
        if !self.is_allocated(index) {
            return Err(Fault::DoubleFree { addr });
        }
        let block = addr as *mut FreeBlock;
        let mut head = self.thread_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is the caller's to give back; its first word becomes
            // the link. Nobody else reads it until the push below succeeds.
            unsafe { (*block).next = head };
            // Release: the link (and the program's last writes to the block) happen
            // before the owner's Acquire swap in `collect` reads them.
            match self.thread_free.compare_exchange_weak(
                head,
                block,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => head = now,
            }
        }
    }

    /// The owner takes every block other threads freed and moves it to `free`,
    /// clearing its bit. A block pushed twice is found with its bit already clear: a
    /// double free (and a list that may loop, which this check also ends).
    pub fn collect(&self) -> Result<(), Fault> {
        if self.thread_free.load(Ordering::Relaxed).is_null() {
            return Ok(());
        }
        // Acquire: pairs with the Release of each push in `free_remote`.
        let mut block = self.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
        while !block.is_null() {
            let index = self.index_of(block);
            if !self.is_allocated(index) {
                return Err(Fault::DoubleFree {
                    addr: block as usize,
                });
            }
            self.mark(index, false);
            // SAFETY: pushed by `free_remote`, so its first word is the link.
            let next = unsafe { (*block).next };
            // SAFETY: the block is now the owner's free block.
            unsafe { (*block).next = self.free.get() };
            self.free.set(block);
            self.used.set(self.used.get() - 1);
            block = next;
        }
        Ok(())
    }

    /// Whether the owner can allocate from the page without collecting.
    pub fn has_free(&self) -> bool {
        !self.free.get().is_null() || self.bump.get() < self.capacity.get()
    }

    /// Marks a page that has no blocks out as unused (before it goes to the pool).
    pub fn retire(&self) {
        debug_assert_eq!(self.used.get(), 0);
        self.free.set(ptr::null_mut());
        self.bump.set(0);
        self.owner_thread.store(0, Ordering::Relaxed);
        self.block_size.store(0, Ordering::Relaxed);
    }

    /// Length of a list of this page's blocks, stopping (and failing) past `bump` links.
    fn list_length(&self, mut block: *mut FreeBlock) -> Result<u32, Fault> {
        let mut length = 0;
        while !block.is_null() {
            length += 1;
            let addr = block as usize;
            let in_page =
                matches!(self.block_of(addr), BlockOf::Start(i) if i < self.bump.get() as usize);
            if !in_page || length > self.bump.get() {
                return Err(Fault::Corruption {
                    addr: self.start.get(),
                    what: "a page's free list leaves the page or loops",
                });
            }
            // SAFETY: `block` is a block of this page below `bump`: a free block.
            block = unsafe { (*block).next };
        }
        Ok(length)
    }

    /// Checks the page's invariant (see the module documentation). Owner only, or a
    /// page nobody can touch meanwhile.
    pub fn check(&self) -> Result<(), Fault> {
        let corrupt = |what| {
            Err(Fault::Corruption {
                addr: self.start.get(),
                what,
            })
        };
        let free = self.list_length(self.free.get())?;
        let thread_free = self.list_length(self.thread_free.load(Ordering::Acquire))?;
        let marked: u32 = self
            .allocated
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum();
        let bump = self.bump.get();
        if bump > self.capacity.get() {
            return corrupt("a page handed out more blocks than it holds");
        }
        if self.used.get() + free != bump {
            return corrupt("a page's used + |free| != bump");
        }
        if marked != self.used.get() {
            return corrupt("a page's popcount(allocated) != used");
        }
        if thread_free > self.used.get() {
            return corrupt("a page's |thread_free| > used");
        }
        let mut block = self.free.get();
        while !block.is_null() {
            if self.is_allocated(self.index_of(block)) {
                return corrupt("a block on a page's free list is marked allocated");
            }
            // SAFETY: checked above to be this page's free block.
            block = unsafe { (*block).next };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::{CLASSES, class_size};

    #[test]
    fn the_reciprocal_divides_exactly_for_every_class_and_offset() {
        for class in 0..CLASSES {
            let size = class_size(class);
            let reciprocal = ((1u64 << 32).div_ceil(size as u64)) as u32;
            for offset in 0..PAGE_SIZE {
                assert_eq!(
                    Page::divide(offset, reciprocal),
                    offset / size,
                    "{offset} / {size}"
                );
            }
        }
    }
}
