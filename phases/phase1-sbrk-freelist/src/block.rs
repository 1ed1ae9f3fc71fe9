//! A phase-1 block: a 16-byte header, then the program's bytes.
//!
//! ```text
//!   block ->  +--------------------------------+
//!             | size_and_flags                 |  size of the whole block, header
//!             |                                |  included: a multiple of 16. Bit 0: USED.
//!             +--------------------------------+
//!             | check                          |  size_and_flags ^ block address ^ HEADER_KEY
//! payload ->  +--------------------------------+  <- what malloc returns (16-byte aligned)
//!             | next_free  (only while free)   |
//!             | ... the program's bytes ...    |
//!    next ->  +--------------------------------+  the next block in the heap
//! ```
//!
//! Blocks tile each region of the heap with no gaps, so `block + size` is the next
//! block (`next_in_heap`). The `check` word lets `free` tell a header this allocator
//! wrote from any other 8 bytes: a pointer into the middle of a block, or into memory
//! that was never a block, fails the check and is reported instead of followed.

use core::ptr::NonNull;

/// Bytes before every payload. Two words, which also keeps payloads 16-byte aligned.
pub const HEADER_SIZE: usize = 16;

/// The smallest block: a header plus room for the free-list link, rounded up to 16.
pub const MIN_BLOCK: usize = 32;

/// Every block size is a multiple of this (and so every block address).
pub const BLOCK_ALIGN: usize = 16;

/// Bit 0 of `size_and_flags`: the block is handed out. (Sizes are multiples of 16, so
/// their low four bits are free for flags.)
const USED: usize = 1;
const SIZE_MASK: usize = !(BLOCK_ALIGN - 1);

/// Mixed into every check word ("mymalloc" in ASCII), so that a zeroed or
/// program-written word is never a valid check by accident.
const HEADER_KEY: usize = 0x6d79_6d61_6c6c_6f63;

#[repr(C)]
struct Header {
    size_and_flags: usize,
    check: usize,
}

/// A handle to a block header.
///
/// Invariant: `self.0` points at `HEADER_SIZE` mapped, writable bytes inside the
/// carved part of a heap region (see `preload_kit::arena`). Whether those bytes hold a
/// header we wrote is what [`Block::header_is_intact`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<Header>);

impl Block {
    /// # Safety
    /// `addr` must be 16-byte aligned, and `[addr, addr + HEADER_SIZE)` must lie inside
    /// the carved part of one of this heap's regions.
    pub unsafe fn at(addr: usize) -> Block {
        debug_assert!(addr != 0 && addr.is_multiple_of(BLOCK_ALIGN));
        // SAFETY: the caller guarantees `addr` is a non-null heap address.
        Block(unsafe { NonNull::new_unchecked(addr as *mut Header) })
    }

    /// Writes a fresh header: the block becomes `size` bytes long, used or free.
    pub fn init(self, size: usize, used: bool) {
        debug_assert!(size >= MIN_BLOCK && size.is_multiple_of(BLOCK_ALIGN));
        self.write(size | if used { USED } else { 0 });
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

    /// The whole block's size, header included. Meaningful only if the header is intact.
    pub fn size(self) -> usize {
        self.size_and_flags() & SIZE_MASK
    }

    pub fn is_used(self) -> bool {
        self.size_and_flags() & USED != 0
    }

    pub fn set_used(self, used: bool) {
        debug_assert!(
            self.is_used() != used,
            "block {:#x} already in that state",
            self.addr()
        );
        self.write(self.size() | if used { USED } else { 0 });
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

    /// The free-list link, stored in the first payload word. Only valid while free.
    pub fn next_free(self) -> Option<Block> {
        debug_assert!(!self.is_used());
        // SAFETY: the payload holds at least 16 bytes; a free block's first payload
        // word is the link written by `set_next_free` (a Block or null).
        let link = unsafe { self.payload().cast::<*mut Header>().read() };
        NonNull::new(link).map(Block)
    }

    pub fn set_next_free(self, next: Option<Block>) {
        debug_assert!(!self.is_used());
        let link = next.map_or(core::ptr::null_mut(), |b| b.0.as_ptr());
        // SAFETY: the payload holds at least 16 bytes and the block is free, so the
        // program no longer owns them.
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
