//! A phase-2 block: phase 1's 16-byte header, plus a footer while the block is free.
//!
//! ```text
//!             a used block                          a free block
//!   block ->  +--------------------------------+    +--------------------------------+
//!             | size_and_flags                 |    | size_and_flags                 |
//!             +--------------------------------+    +--------------------------------+
//!             | check                          |    | check                          |
//! payload ->  +--------------------------------+    +--------------------------------+
//!             | the program's bytes            |    | next_in_list                   |
//!             |                                |    +--------------------------------+
//!             |                                |    | prev_in_list                   |
//!             |                                |    +--------------------------------+
//!             |                                |    | (unused)                       |
//!             |                                |    +--------------------------------+
//!             |                                |    | footer: the block's size       |
//!    next ->  +--------------------------------+    +--------------------------------+
//!             | size_and_flags  (PREV_FREE: 0) |    | size_and_flags  (PREV_FREE: 1) |
//! ```
//!
//! - `size_and_flags`: the whole block's size, header included, a multiple of 16, so
//!   the low four bits hold flags. Bit 0, `USED`: handed out. Bit 1, `PREV_FREE`: the
//!   block just before this one in the heap is free, so the word just before this
//!   header is that block's footer.
//! - `check`: `size_and_flags ^ block address ^ HEADER_KEY`, as in phase 1. A pointer
//!   into the middle of a block, or to memory that was never a block, fails the check
//!   and is reported instead of followed. Changing a flag rewrites the check.
//! - `next_in_list`, `prev_in_list`: the free list's links ([`crate::free_list`]),
//!   in the first two payload words. Only valid while the block is free.
//! - footer: a copy of the size in the block's last word. Only valid while the block
//!   is free, and only read when the next block's `PREV_FREE` bit says so.
//!
//! These are *boundary tags* (Knuth's name): from any block both neighbours are one
//! step away. The next one is at `block + size` ([`Block::next_in_heap`]); the previous
//! one, when it is free, is at `block - footer` ([`Block::prev_footer`]). That is what
//! makes merging on `free` O(1). Used blocks carry no footer, so the program gets all
//! their bytes; the price is that allocating or freeing a block rewrites the
//! `PREV_FREE` bit in the next block's header.
//!
//! The smallest block ([`MIN_BLOCK`], 48 bytes) is what a free block needs: header,
//! two links and a footer (40 bytes), rounded up to 16.
//!
//! A third flag, `QUICK`, is for a later phase's index that keeps some freed blocks
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

/// Bytes before every payload. Two words, which also keeps payloads 16-byte aligned.
pub const HEADER_SIZE: usize = 16;

/// The footer of a free block: one word, its size.
pub const FOOTER_SIZE: usize = 8;

/// The smallest block: a header, two free-list links and a footer, rounded up to 16.
pub const MIN_BLOCK: usize = 48;

/// Every block size is a multiple of this (and so every block address).
pub const BLOCK_ALIGN: usize = 16;

/// Bit 0 of `size_and_flags`: the block is handed out.
const USED: usize = 1;
/// Bit 1 of `size_and_flags`: the block just before this one in the heap is free, and
/// its footer is the word before this header.
const PREV_FREE: usize = 2;
/// Bit 2 of `size_and_flags`, only with `USED`: the program freed the block, and the
/// free index keeps it unmerged in a quick list.
const QUICK: usize = 4;
const SIZE_MASK: usize = !(BLOCK_ALIGN - 1);

/// Mixed into every check word ("mymalloc" in ASCII), so that a zeroed or
/// program-written word is never a valid check by accident.
const HEADER_KEY: usize = 0x6d79_6d61_6c6c_6f63;

/// What [`Block::erase`] leaves in both header words: not a size any block can have,
/// and never a valid check for it.
const ERASED: usize = 0xdead_dead_dead_dead;

#[repr(C)]
struct Header {
    size_and_flags: usize,
    check: usize,
}

/// A handle to a block header.
///
/// Invariant: `self.0` points at `HEADER_SIZE` mapped, writable bytes inside one of
/// this heap's regions (see `preload_kit::arena`). Whether those bytes hold a header
/// we wrote is what [`Block::header_is_intact`] tells; the other accessors are
/// meaningful only if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<Header>);

impl Block {
    /// # Safety
    /// `addr` must be 16-byte aligned, and `[addr, addr + HEADER_SIZE)` must lie inside
    /// one of this heap's regions (`[start, end)`: mapped and writable).
    pub unsafe fn at(addr: usize) -> Block {
        debug_assert!(addr != 0 && addr.is_multiple_of(BLOCK_ALIGN));
        // SAFETY: the caller guarantees `addr` is a non-null heap address.
        Block(unsafe { NonNull::new_unchecked(addr as *mut Header) })
    }

    /// Writes the header of a block the program is about to own: `size` bytes long,
    /// with `prev_free` saying whether the block before it is free.
    ///
    /// The block's `size` bytes must lie inside the carved part of a region.
    pub fn init_used(self, size: usize, prev_free: bool) {
        debug_assert!(size >= MIN_BLOCK && size.is_multiple_of(BLOCK_ALIGN));
        self.write(size | USED | if prev_free { PREV_FREE } else { 0 });
    }

    /// Writes the header and the footer of a free block of `size` bytes. Its `PREV_FREE`
    /// bit is clear: two free blocks are never neighbours (they would have merged).
    ///
    /// The block's `size` bytes must lie inside the carved part of a region.
    pub fn init_free(self, size: usize) {
        debug_assert!(size >= MIN_BLOCK && size.is_multiple_of(BLOCK_ALIGN));
        self.write(size);
        self.write_footer();
    }

    fn write(self, size_and_flags: usize) {
        let check = size_and_flags ^ self.addr() ^ HEADER_KEY;
        // SAFETY: the type invariant: the header's 16 bytes are mapped and writable.
        unsafe {
            self.0.write(Header {
                size_and_flags,
                check,
            })
        }
    }

    fn size_and_flags(self) -> usize {
        // SAFETY: the type invariant: the header's 16 bytes are mapped.
        unsafe { (*self.0.as_ptr()).size_and_flags }
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
        let flags = self.size_and_flags() & !USED;
        self.write(flags | if used { USED } else { 0 });
    }

    /// Marks a used block quick (the program freed it, the free index keeps it
    /// unmerged) or, taking it out of its quick list, used again.
    pub fn set_quick(self, quick: bool) {
        debug_assert!(self.is_used() && self.is_quick() != quick);
        let flags = self.size_and_flags() & !QUICK;
        self.write(flags | if quick { QUICK } else { 0 });
    }

    /// Records whether the block before this one is free. The header must be intact
    /// (rewriting a damaged one would hide the damage).
    pub fn set_prev_free(self, prev_free: bool) {
        debug_assert!(self.header_is_intact());
        let flags = self.size_and_flags() & !PREV_FREE;
        self.write(flags | if prev_free { PREV_FREE } else { 0 });
    }

    /// Makes these 16 bytes stop being a header: for a header that has just become
    /// part of a used block's payload, so that a pointer to it is reported as not the
    /// start of a block.
    pub fn erase(self) {
        // SAFETY: the type invariant: the header's 16 bytes are mapped and writable.
        unsafe {
            self.0.write(Header {
                size_and_flags: ERASED,
                check: ERASED,
            })
        }
    }

    /// Does the check word match? False for any 16 bytes this allocator did not write
    /// as a header (or that were overwritten since).
    pub fn header_is_intact(self) -> bool {
        // SAFETY: the type invariant: the header's 16 bytes are mapped.
        let header = unsafe { self.0.read() };
        header.check == header.size_and_flags ^ self.addr() ^ HEADER_KEY
    }

    /// What `malloc` hands out: the first byte after the header.
    pub fn payload(self) -> NonNull<u8> {
        // SAFETY: a block is at least MIN_BLOCK bytes, so header + 16 is inside it.
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
        unsafe { self.0.cast::<usize>().sub(1).read() }
    }

    fn link(self, index: usize) -> Option<Block> {
        debug_assert!(self.is_free());
        // SAFETY: a free block's payload holds at least 32 bytes; words 0 and 1 are the
        // links written by `set_links` (a Block or null).
        let link = unsafe { self.payload().cast::<*mut Header>().add(index).read() };
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
        // SAFETY: the payload holds at least 32 bytes and the block is free, so the
        // program no longer owns them.
        unsafe { self.payload().cast::<*mut Header>().add(index).write(link) }
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
        // SAFETY: a block's payload holds at least 32 bytes; word 0 of a quick block's
        // is the link written by `set_next_quick` (a Block or null).
        let link = unsafe { self.payload().cast::<*mut Header>().read() };
        NonNull::new(link).map(Block)
    }

    /// Links this block, which the program has freed (it is used, about to be quick,
    /// or quick), to the next block of its quick list.
    pub fn set_next_quick(self, next: Option<Block>) {
        debug_assert!(self.is_used());
        let link = next.map_or(core::ptr::null_mut(), |b| b.0.as_ptr());
        // SAFETY: the payload holds at least 32 bytes, and the program has freed the
        // block, so it no longer owns them.
        unsafe { self.payload().cast::<*mut Header>().write(link) }
    }
}

/// The block size that serves a request of `size` bytes: the header added, rounded up
/// to [`BLOCK_ALIGN`], at least [`MIN_BLOCK`]. `None` when the sum does not fit in
/// memory at all (`malloc(SIZE_MAX)` must fail, not wrap to a tiny block).
pub fn block_size_for(size: usize) -> Option<usize> {
    let size = size
        .checked_add(HEADER_SIZE)?
        .checked_next_multiple_of(BLOCK_ALIGN)?;
    (size <= isize::MAX as usize).then_some(size.max(MIN_BLOCK))
}
