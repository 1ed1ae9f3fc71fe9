//! A phase-2 block: one header word, plus a footer while the block is free.
//!
//! ```text
//!             a used block                          a free block
//!   block ->  +--------------------------------+    +--------------------------------+
//!             | tag | size | flags             |    | tag | size | flags             |
//! payload ->  +--------------------------------+    +--------------------------------+
//!             | the program's bytes            |    | next_in_list                   |
//!             |                                |    +--------------------------------+
//!             |                                |    | prev_in_list                   |
//!             |                                |    +--------------------------------+
//!             |                                |    | (unused)                       |
//!             |                                |    +--------------------------------+
//!             |                                |    | footer: the block's size       |
//!    next ->  +--------------------------------+    +--------------------------------+
//!             | tag | size | PREV_FREE: 0      |    | tag | size | PREV_FREE: 1      |
//! ```
//!
//! The header is one 64-bit word, as in glibc's chunks (whose in-use chunk costs 8
//! bytes too):
//!
//! - bits 0-3, the flags. Bit 0, `USED`: handed out. Bit 1, `PREV_FREE`: the block just
//!   before this one in the heap is free, so the word just before this header is that
//!   block's footer. Bit 2, `QUICK` (below).
//! - bits 4-39, the size: the whole block's, header included, a multiple of 16 (so
//!   its low four bits are free for the flags) and less than [`MAX_BLOCK_SIZE`], 1 TiB.
//!   The heap never carves a region past that bound (its `carve` and `grow_in_place`
//!   check it), and every block lies inside one region, so no block can outgrow the
//!   field.
//! - bits 40-63, the tag: 24 bits of a hash of the block's address and its size.
//!   A pointer into the middle of a block, or to memory that was never a block,
//!   finds there a word whose tag does not match and is reported instead of followed.
//!   Changing the size rewrites the tag; the flags are outside it, so that marking a
//!   block used, free or quick, or its neighbour free, is one bit operation (hashing
//!   there cost a twentieth of phase 4's instructions on xmalloc). A stray write that
//!   changes only flag bits is left to the heap check, which compares every block's
//!   flags with its neighbours and with the free lists.
//!
//! How sure the tag is: a word the allocator did not write passes with a chance of
//! 2^-24 (one in 16.7 million), and only if its size also stays inside its region
//! (and is at least [`MIN_BLOCK`]) and the pointer is 16-aligned inside the heap; a
//! block `free` merges must also have an intact next header. A pointer from the stack
//! or static data is outside the heap and never reaches the tag.
//! Phase 1's 64-bit check word made that chance 2^-64, at 8 more bytes per block.
//!
//! Blocks start 8 bytes past a multiple of 16 (the first block of a region at
//! `start + 8`, [`FIRST_BLOCK_OFFSET`]), so that payloads, one word further, are
//! 16-byte aligned, and every block size stays a multiple of 16.
//!
//! - `next_in_list`, `prev_in_list`: the free list's links ([`crate::free_list`]),
//!   in the first two payload words. Only valid while the block is free.
//! - footer: a copy of the size in the block's last word. Only valid while the block
//!   is free, and only read when the next block's `PREV_FREE` bit says so.
//!
//! These are *boundary tags* (Knuth's name): from any block both neighbours are one
//! step away. The next one is at `block + size` ([`Block::next_in_heap`]); the previous
//! one, when it is free, is at `block - footer` ([`Block::prev_footer`]). That is what
//! makes merging on `free` O(1). Used blocks carry no footer, so the program gets all
//! their bytes but the header word; the price is that allocating or freeing a block
//! rewrites the `PREV_FREE` bit in the next block's header.
//!
//! The smallest block ([`MIN_BLOCK`], 32 bytes) is what a free block needs: header,
//! two links and a footer.
//!
//! The third flag, `QUICK`, is for a later phase's index that keeps some freed blocks
//! unmerged ("deferred coalescing", see [`crate::free_list::FreeIndex::defer`]); phase
//! 2's own list never sets it. A quick block keeps `USED` set, so that to its
//! neighbours, to coalescing and to the heap's walk it is a used block (no footer, the
//! next block's `PREV_FREE` clear); to `free`, `realloc` and `malloc_usable_size` it is
//! a freed block, so freeing it again is a double free. Its first payload word links it
//! to the next block of its quick list.
//!
//! Stale headers: a freed block merged into a free neighbour, or given back to the top
//! of the heap, keeps its old header, marked free, in bytes nobody uses. A second
//! `free` of it finds an intact header that says "free" and is reported as a double
//! free, until those bytes are handed out again and overwritten (or trimmed away: then
//! the pointer is outside the heap). A header that `realloc` takes into the block it
//! grows is erased with [`Block::erase`], so that a pointer to it is reported as an
//! interior pointer, not taken for a block.

use core::ptr::NonNull;

/// Bytes before every payload: the one header word.
pub const HEADER_SIZE: usize = 8;

/// The footer of a free block: one word, its size.
pub const FOOTER_SIZE: usize = 8;

/// The smallest block: a header, two free-list links and a footer (glibc's `MINSIZE`
/// is the same 32 bytes).
pub const MIN_BLOCK: usize = HEADER_SIZE + 2 * 8 + FOOTER_SIZE;

/// Every block size is a multiple of this, and so is every payload address.
pub const BLOCK_ALIGN: usize = 16;

/// Where a region's first block starts, from the region's (16-aligned) start: block
/// addresses are `FIRST_BLOCK_OFFSET` past a multiple of [`BLOCK_ALIGN`], so that
/// payloads, [`HEADER_SIZE`] further, are aligned.
pub const FIRST_BLOCK_OFFSET: usize = BLOCK_ALIGN - HEADER_SIZE;

/// Can a block start at `addr`: is it [`FIRST_BLOCK_OFFSET`] past a multiple of 16?
pub fn is_block_address(addr: usize) -> bool {
    addr % BLOCK_ALIGN == FIRST_BLOCK_OFFSET
}

/// Bit 0 of the header: the block is handed out.
const USED: usize = 1;
/// Bit 1 of the header: the block just before this one in the heap is free, and its
/// footer is the word before this header.
const PREV_FREE: usize = 2;
/// Bit 2 of the header, only with `USED`: the program freed the block, and the free
/// index keeps it unmerged in a quick list.
const QUICK: usize = 4;
const FLAGS: usize = BLOCK_ALIGN - 1;

/// Bits of the header below the tag: size and flags.
const TAG_SHIFT: u32 = 40;
const SIZE_AND_FLAGS: usize = (1 << TAG_SHIFT) - 1;
const SIZE_MASK: usize = SIZE_AND_FLAGS & !FLAGS;

/// Blocks are smaller than this (1 TiB): their size must fit below the tag.
pub const MAX_BLOCK_SIZE: usize = 1 << TAG_SHIFT;

/// What [`Block::erase`] leaves: size 0, which no intact header has.
const ERASED: usize = 0;

/// The tag of a block at `addr` of `size` bytes: the top 24 bits of a multiplicative
/// hash (Fibonacci hashing) of the two. The top bits of a product depend on every bit
/// of its operand. The flags stay out of it (see the module's notes); a zeroed word
/// has size 0, which no intact header has, so no key is needed to tell it apart.
#[inline]
fn tag(addr: usize, size: usize) -> usize {
    (size ^ addr).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> TAG_SHIFT
}

/// The header a block at `addr` with these size and flags carries: its tag above them.
#[inline]
fn header_word(addr: usize, size_and_flags: usize) -> usize {
    tag(addr, size_and_flags & SIZE_MASK) << TAG_SHIFT | size_and_flags
}

/// A handle to a block header.
///
/// Invariant: `self.0` points at `HEADER_SIZE` mapped, writable bytes inside one of
/// this heap's regions (see `preload_kit::arena`). Whether those bytes hold a header
/// we wrote is what [`Block::header_is_intact`] tells; the other accessors are
/// meaningful only if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<usize>);

impl Block {
    /// # Safety
    /// `addr` must be [`FIRST_BLOCK_OFFSET`] past a multiple of 16, and
    /// `[addr, addr + HEADER_SIZE)` must lie inside one of this heap's regions
    /// (`[start, end)`: mapped and writable).
    pub unsafe fn at(addr: usize) -> Block {
        debug_assert!(is_block_address(addr));
        // SAFETY: the caller guarantees `addr` is a non-null heap address.
        Block(unsafe { NonNull::new_unchecked(addr as *mut usize) })
    }

    /// Writes the header of a block the program is about to own: `size` bytes long,
    /// with `prev_free` saying whether the block before it is free.
    ///
    /// The block's `size` bytes must lie inside the carved part of a region.
    pub fn init_used(self, size: usize, prev_free: bool) {
        debug_assert!(size >= MIN_BLOCK && size.is_multiple_of(BLOCK_ALIGN));
        debug_assert!(size < MAX_BLOCK_SIZE);
        self.write(size | USED | if prev_free { PREV_FREE } else { 0 });
    }

    /// Writes the header and the footer of a free block of `size` bytes. Its `PREV_FREE`
    /// bit is clear: two free blocks are never neighbours (they would have merged).
    ///
    /// The block's `size` bytes must lie inside the carved part of a region.
    pub fn init_free(self, size: usize) {
        debug_assert!(size >= MIN_BLOCK && size.is_multiple_of(BLOCK_ALIGN));
        debug_assert!(size < MAX_BLOCK_SIZE);
        self.write(size);
        self.write_footer();
    }

    fn write(self, size_and_flags: usize) {
        // SAFETY: the type invariant: the header's word is mapped and writable.
        unsafe { self.0.write(header_word(self.addr(), size_and_flags)) }
    }

    fn size_and_flags(self) -> usize {
        // SAFETY: the type invariant: the header's word is mapped.
        unsafe { self.0.read() & SIZE_AND_FLAGS }
    }

    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// The whole block's size, header included.
    pub fn size(self) -> usize {
        self.size_and_flags() & SIZE_MASK
    }

    pub fn is_used(self) -> bool {
        self.size_and_flags() & USED != 0
    }

    pub fn is_free(self) -> bool {
        !self.is_used()
    }

    /// Freed by the program but kept unmerged by the free index (a quick block is also
    /// [`Block::is_used`]: see the module's notes).
    pub fn is_quick(self) -> bool {
        self.size_and_flags() & QUICK != 0
    }

    /// Is the block just before this one free (so that [`Block::prev_footer`] is valid)?
    pub fn prev_is_free(self) -> bool {
        self.size_and_flags() & PREV_FREE != 0
    }

    /// Marks the block used or free, keeping its size and `PREV_FREE` bit. Does not
    /// write a footer: a block that becomes free for good goes through
    /// [`Block::init_free`]; this alone is for a header about to be left stale inside
    /// a merged block, or for a block leaving the free list whole.
    pub fn set_used(self, used: bool) {
        debug_assert!(
            self.is_used() != used,
            "block {:#x} already in that state",
            self.addr()
        );
        self.set_flag(USED, used);
    }

    /// Marks a used block quick (the program freed it, the free index keeps it
    /// unmerged) or, taking it out of its quick list, used again.
    pub fn set_quick(self, quick: bool) {
        debug_assert!(self.is_used() && self.is_quick() != quick);
        self.set_flag(QUICK, quick);
    }

    /// Records whether the block before this one is free. The header must be intact
    /// (rewriting a damaged one would hide the damage).
    pub fn set_prev_free(self, prev_free: bool) {
        debug_assert!(self.header_is_intact());
        self.set_flag(PREV_FREE, prev_free);
    }

    /// Sets or clears one flag bit. The tag leaves the flags out (see `header_word`),
    /// so the rest of the word stays as it is.
    fn set_flag(self, flag: usize, on: bool) {
        // SAFETY: the type invariant: the header's word is mapped and writable.
        unsafe {
            let word = self.0.read() & !flag;
            self.0.write(if on { word | flag } else { word });
        }
    }

    /// Makes this word stop being a header: for a header that has just become part of
    /// a used block's payload, so that a pointer to it is reported as not the start of
    /// a block.
    pub fn erase(self) {
        // SAFETY: the type invariant: the header's word is mapped and writable.
        unsafe { self.0.write(ERASED) }
    }

    /// Does the tag match, for a size a block can have? False for any word this
    /// allocator did not write as a header (or that was overwritten since), but for
    /// one in 2^24 of them (see the module's notes).
    pub fn header_is_intact(self) -> bool {
        // SAFETY: the type invariant: the header's word is mapped.
        let word = unsafe { self.0.read() };
        let size = word & SIZE_MASK;
        word >> TAG_SHIFT == tag(self.addr(), size) && size != 0
    }

    /// What `malloc` hands out: the first byte after the header, 16-byte aligned.
    pub fn payload(self) -> NonNull<u8> {
        // SAFETY: a block is at least MIN_BLOCK bytes, so header + 8 is inside it.
        unsafe { self.0.cast::<u8>().add(HEADER_SIZE) }
    }

    /// Bytes the program may use: the block less its header.
    pub fn payload_size(self) -> usize {
        self.size() - HEADER_SIZE
    }

    /// The address just past this block: the next block's header, or the region's top.
    pub fn next_in_heap(self) -> usize {
        self.addr() + self.size()
    }

    /// Where this block's footer is: its last word. Meaningful only while it is free.
    fn footer_of(self) -> NonNull<usize> {
        // SAFETY: a block is at least MIN_BLOCK bytes, so its last word is inside it.
        unsafe {
            self.0
                .cast::<u8>()
                .add(self.size() - FOOTER_SIZE)
                .cast::<usize>()
        }
    }

    /// Copies the size into the footer. The block must be free (the program owns a
    /// used block's last word).
    pub fn write_footer(self) {
        debug_assert!(self.is_free());
        // SAFETY: the footer lies inside the block (see `footer_of`), which the
        // type invariant and `init_free`'s contract place in the heap.
        unsafe { self.footer_of().write(self.size()) }
    }

    /// This (free) block's footer, for the heap check to compare with the header.
    pub fn footer(self) -> usize {
        // SAFETY: as in `write_footer`: the footer's word lies inside the block.
        unsafe { self.footer_of().read() }
    }

    /// The word just before this header: the previous block's footer, that is, its
    /// size. Only valid if [`Block::prev_is_free`], and only readable if this block
    /// is not the first of its region (the caller checks both).
    pub fn prev_footer(self) -> usize {
        // SAFETY: the caller checked that this block is not the first of its region,
        // so the word before it belongs to the previous block, inside the region.
        unsafe { self.0.sub(1).read() }
    }

    fn link(self, index: usize) -> Option<Block> {
        debug_assert!(self.is_free());
        // SAFETY: a free block's payload holds at least 24 bytes; words 0 and 1 are the
        // links written by `set_links` (a Block or null).
        let link = unsafe { self.payload().cast::<*mut usize>().add(index).read() };
        NonNull::new(link).map(Block)
    }

    /// The next block on the free list. Only valid while free.
    pub fn next_in_list(self) -> Option<Block> {
        self.link(0)
    }

    /// The previous block on the free list. Only valid while free.
    pub fn prev_in_list(self) -> Option<Block> {
        self.link(1)
    }

    fn set_link(self, index: usize, to: Option<Block>) {
        debug_assert!(self.is_free());
        let link = to.map_or(core::ptr::null_mut(), |b| b.0.as_ptr());
        // SAFETY: the payload holds at least 24 bytes (two links and the footer) and
        // the block is free, so the program no longer owns them.
        unsafe { self.payload().cast::<*mut usize>().add(index).write(link) }
    }

    pub fn set_next_in_list(self, next: Option<Block>) {
        self.set_link(0, next);
    }

    pub fn set_prev_in_list(self, prev: Option<Block>) {
        self.set_link(1, prev);
    }

    /// The next block on this quick block's quick list. Only valid while quick.
    pub fn next_quick(self) -> Option<Block> {
        debug_assert!(self.is_quick());
        // SAFETY: a block's payload holds at least 24 bytes; word 0 of a quick block's
        // is the link written by `set_next_quick` (a Block or null).
        let link = unsafe { self.payload().cast::<*mut usize>().read() };
        NonNull::new(link).map(Block)
    }

    /// Links this block, which the program has freed (it is used, about to be quick,
    /// or quick), to the next block of its quick list.
    pub fn set_next_quick(self, next: Option<Block>) {
        debug_assert!(self.is_used());
        let link = next.map_or(core::ptr::null_mut(), |b| b.0.as_ptr());
        // SAFETY: the payload holds at least 24 bytes, and the program has freed the
        // block, so it no longer owns them.
        unsafe { self.payload().cast::<*mut usize>().write(link) }
    }
}

/// The block size that serves a request of `size` bytes: the header added, rounded up
/// to [`BLOCK_ALIGN`], at least [`MIN_BLOCK`]. `None` when the block could not exist:
/// at or above [`MAX_BLOCK_SIZE`] (`malloc(SIZE_MAX)` must fail, not wrap to a tiny
/// block).
pub fn block_size_for(size: usize) -> Option<usize> {
    let size = size
        .checked_add(HEADER_SIZE)?
        .checked_next_multiple_of(BLOCK_ALIGN)?;
    (size < MAX_BLOCK_SIZE).then_some(size.max(MIN_BLOCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_holds_size_flags_and_a_tag_that_depends_on_them() {
        let mut memory = [0u64; 8];
        let addr = memory.as_mut_ptr() as usize;
        let addr = if addr.is_multiple_of(16) {
            addr + 8
        } else {
            addr
        };
        // SAFETY: `addr` is 8 past a multiple of 16, inside `memory`.
        let block = unsafe { Block::at(addr) };
        assert!(!block.header_is_intact(), "zeroed memory is no header");
        block.init_used(48, true);
        assert!(block.header_is_intact());
        assert_eq!(
            (block.size(), block.is_used(), block.prev_is_free()),
            (48, true, true)
        );
        let word = memory.iter().find(|&&w| w != 0).copied().unwrap() as usize;
        assert_eq!(word & SIZE_AND_FLAGS, 48 | USED | PREV_FREE);
        for bit in (0..64).filter(|&bit| 1 << bit & FLAGS == 0) {
            // SAFETY: the header word of the block above, inside `memory`.
            unsafe { (addr as *mut usize).write(word ^ (1 << bit)) };
            assert!(
                !block.header_is_intact(),
                "bit {bit} flipped and still intact"
            );
        }
        // SAFETY: as above.
        unsafe { (addr as *mut usize).write(word) };
        block.set_quick(true);
        assert!(
            block.header_is_intact() && block.is_quick(),
            "a flag keeps the tag"
        );
        block.set_quick(false);
        block.init_used(48, false);
        block.erase();
        assert!(!block.header_is_intact());
    }

    #[test]
    fn sizes_stop_below_the_tag() {
        assert_eq!(block_size_for(0), Some(MIN_BLOCK));
        assert_eq!(block_size_for(24), Some(32));
        assert_eq!(block_size_for(25), Some(48));
        assert_eq!(
            block_size_for(MAX_BLOCK_SIZE - 24),
            Some(MAX_BLOCK_SIZE - 16)
        );
        assert_eq!(block_size_for(MAX_BLOCK_SIZE - 8), None);
        assert_eq!(block_size_for(usize::MAX), None);
    }
}
