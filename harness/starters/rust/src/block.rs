//! A block: a 16-byte header, then the program's bytes. Given, except for
//! [`block_size_for`] (chapter 1, step 1).
//!
//! ```text
//!   block ->  +--------------------------------+
//!             | size | USED                    |  the whole block's size, header included
//!             |                                |  (a multiple of 16); bit 0: in use
//!             +--------------------------------+
//!             | stamp                          |  size word ^ address ^ STAMP_KEY: tells a
//!             |                                |  header we wrote from any other 8 bytes
//! payload ->  +--------------------------------+  <- what malloc returns (16-byte aligned)
//!             | next free block (while free)   |
//!             | ... the program's bytes ...    |
//!    next ->  +--------------------------------+  block + size: the next block's header
//! ```

use core::ptr::NonNull;

use crate::steps;

/// Bytes before every payload.
pub const HEADER_SIZE: usize = 16;

/// The smallest block: a header and room for the free-list link, rounded up to 16.
pub const MIN_BLOCK: usize = 32;

/// Every block size, and so every block address, is a multiple of this.
pub const BLOCK_ALIGN: usize = 16;

const USED: usize = 1;
const STAMP_KEY: usize = 0x5354_5544_454e_5421;

/// A handle to a block's header.
///
/// Invariant: the 16 bytes at `self.0` are mapped and writable, inside the carved part
/// of the heap. Whether they hold a header this allocator wrote is what
/// [`Block::is_stamped`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block(NonNull<[usize; 2]>);

impl Block {
    /// # Safety
    /// `addr` must be non-null, 16-byte aligned, and `[addr, addr + HEADER_SIZE)` inside
    /// the carved part of the heap.
    pub unsafe fn at(addr: usize) -> Block {
        // SAFETY: the caller guarantees that `addr` is not null.
        Block(unsafe { NonNull::new_unchecked(addr as *mut [usize; 2]) })
    }

    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }

    /// Writes a new header: the block is `size` bytes long (a multiple of 16, at least
    /// `MIN_BLOCK`), used or free.
    pub fn write_header(self, size: usize, used: bool) {
        let word = size | if used { USED } else { 0 };
        // SAFETY: the type invariant: 16 writable bytes at `self.0`.
        unsafe { self.0.write([word, word ^ self.addr() ^ STAMP_KEY]) }
    }

    fn word(self) -> usize {
        // SAFETY: the type invariant: 16 readable bytes at `self.0`.
        unsafe { self.0.read()[0] }
    }

    /// The whole block's size, header included.
    pub fn size(self) -> usize {
        self.word() & !(BLOCK_ALIGN - 1)
    }

    pub fn is_used(self) -> bool {
        self.word() & USED != 0
    }

    pub fn set_used(self, used: bool) {
        self.write_header(self.size(), used);
    }

    /// Does the header carry the stamp this allocator writes? False for a pointer into
    /// the middle of a block or into memory that never was one.
    pub fn is_stamped(self) -> bool {
        // SAFETY: the type invariant: 16 readable bytes at `self.0`.
        let [word, stamp] = unsafe { self.0.read() };
        stamp == word ^ self.addr() ^ STAMP_KEY
    }

    /// What `malloc` returns: the first byte after the header.
    pub fn payload(self) -> NonNull<u8> {
        // SAFETY: a block is at least MIN_BLOCK bytes, so the payload is inside it.
        unsafe { self.0.cast::<u8>().add(HEADER_SIZE) }
    }

    /// The bytes the program may use.
    pub fn payload_size(self) -> usize {
        self.size() - HEADER_SIZE
    }

    /// The address just past this block: the next block's header, or the heap's top.
    pub fn next_in_heap(self) -> usize {
        self.addr() + self.size()
    }

    /// The next block on the free list (only meaningful while this block is free).
    pub fn next_free(self) -> Option<Block> {
        // SAFETY: a free block's first payload word holds the link (see `set_next_free`).
        let link = unsafe { self.payload().cast::<*mut [usize; 2]>().read() };
        NonNull::new(link).map(Block)
    }

    pub fn set_next_free(self, next: Option<Block>) {
        let link = next.map_or(core::ptr::null_mut(), |block| block.0.as_ptr());
        // SAFETY: the payload holds at least 16 bytes, no longer the program's.
        unsafe { self.payload().cast::<*mut [usize; 2]>().write(link) }
    }
}

/// Chapter 1, step 1 ("Blocks and their headers"): the size of the block that serves a
/// request of `size` bytes: the header added, rounded up to [`BLOCK_ALIGN`], at least
/// [`MIN_BLOCK`]. `None` when that does not fit in memory at all: `malloc(SIZE_MAX)`
/// must fail, not wrap around to a tiny block (use `checked_add`).
pub fn block_size_for(size: usize) -> Option<usize> {
    let _ = size;
    steps::not_written(&steps::BLOCK_SIZE)
}
