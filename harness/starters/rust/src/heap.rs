//! Your heap. Each phase's steps are in this file, in the order the chapters ask for
//! them; phase 2's and phase 3's grow the code you wrote for phase 1.
//!
//! Given: the struct, `alloc`'s outline, `block_of` (is this pointer one of ours?),
//! the dump and the stats. Yours: every function whose body calls
//! `steps::not_written`, and the later phases' steps below, which until you write them
//! behave as the phase before.

use core::fmt::Write as _;
use core::ptr::NonNull;

use preload_kit::arena::{Arena, Growth};
use preload_kit::{Config, Fault, Heap, Location, MIN_ALIGN, Out, Stats, WhyInvalid};

use crate::block::{Block, HEADER_SIZE, MIN_BLOCK, block_size_for};
use crate::steps;

pub struct MyHeap {
    /// Memory from the OS (see `preload_kit::arena`): blocks are carved from the top
    /// of its newest region with `arena.carve(bytes)`.
    arena: Arena,
    /// The first free block; each free block links to the next (`Block::next_free`).
    free_list: Option<Block>,
}

impl MyHeap {
    /// Chapter 1, step 2 ("The program break"): a new free block of `size` bytes from
    /// the top of the heap, whose payload is a multiple of `align` (a power of two, at
    /// least 16): `self.arena.carve(size)` gives the bytes, `Block::write_header` makes
    /// them a block. For `align` above 16, leave a gap first (a free block of its own,
    /// at least `MIN_BLOCK` bytes, pushed on the free list). `None` when the OS has no
    /// more memory.
    fn grow(&mut self, size: usize, align: usize) -> Option<Block> {
        let _ = (size, align);
        steps::not_written(&steps::GROW)
    }

    /// Chapter 1, step 4 ("First fit"): unlink and return the first block on the free
    /// list that is at least `size` bytes and whose payload is a multiple of `align`;
    /// `None` if there is none (then `alloc` grows the heap). Until it is written,
    /// freed blocks are never used again.
    fn take_first_fit(&mut self, size: usize, align: usize) -> Option<Block> {
        let _ = (size, align);
        steps::not_written(&steps::FIRST_FIT)
    }

    /// Chapter 2, step 1 ("Splitting"): `block` (free, off the list) serves a request
    /// of `size` bytes. If the rest is at least `MIN_BLOCK`, make it a free block of
    /// its own and return the shortened block. Until written: the block, whole.
    fn split(&mut self, block: Block, size: usize) -> Block {
        let _ = size;
        block
    }

    /// Chapter 2, step 2 ("Boundary tags", "Coalescing"): `block` was just freed and is
    /// not on the list yet: merge it with a free neighbour after it (and, with boundary
    /// tags, before it), taking the neighbours off the free list, and return the merged
    /// block. Until written: the block as it is.
    fn coalesce(&mut self, block: Block) -> Block {
        block
    }

    /// Chapter 2, step 3 ("Giving memory back"): `block` is free and ends at the top
    /// of the heap. Give it back (`self.arena.uncarve`, then `self.arena.trim`) when it
    /// is large, and return true. Until written: false, the block is kept.
    fn give_back(&mut self, block: Block) -> bool {
        let _ = block;
        false
    }

    /// Chapter 2, step 4 ("realloc in place"): make the used `block` serve `size`
    /// bytes without moving it (shrink by splitting, grow into a free neighbour or the
    /// top of the heap); true if it now does. Until written: false, realloc moves.
    fn resize_in_place(&mut self, block: Block, size: usize) -> bool {
        let _ = (block, size);
        false
    }

    /// Finds the block whose payload is `ptr`, or says why `ptr` is not one. Reads
    /// memory only after proving it is inside the heap, so a wild pointer cannot crash.
    fn block_of(&self, ptr: NonNull<u8>) -> Result<Block, Fault> {
        let addr = ptr.as_ptr() as usize;
        let invalid = |why| Fault::InvalidPointer { addr, why };
        let Some(region) = self.arena.region_of(addr) else {
            return Err(invalid(WhyInvalid::OutsideTheHeap));
        };
        if !addr.is_multiple_of(MIN_ALIGN) {
            return Err(invalid(WhyInvalid::Misaligned));
        }
        if addr - region.start < HEADER_SIZE {
            return Err(invalid(WhyInvalid::NotABlockStart));
        }
        // SAFETY: `addr - 16` is 16-aligned and not below the region's start, so the
        // header's 16 bytes are inside the carved part of the region.
        let block = unsafe { Block::at(addr - HEADER_SIZE) };
        if !block.is_stamped() {
            return Err(invalid(WhyInvalid::NotABlockStart));
        }
        if block.size() < MIN_BLOCK || block.next_in_heap() > region.top {
            return Err(Fault::Corruption {
                addr: block.addr(),
                what: "block size runs past the heap",
            });
        }
        Ok(block)
    }

    /// Every block, in address order, until `visit` says stop or a header is broken.
    fn walk(&self, mut visit: impl FnMut(Block) -> Result<(), Fault>) -> Result<(), Fault> {
        for region in self.arena.regions() {
            let mut addr = region.start;
            while addr < region.top {
                // SAFETY: blocks tile the region from its start, so `addr` is a block
                // boundary below the top: 16-aligned, with a header inside the region.
                let block = unsafe { Block::at(addr) };
                if !block.is_stamped() || block.size() < MIN_BLOCK {
                    return Err(Fault::Corruption {
                        addr,
                        what: "block header overwritten",
                    });
                }
                visit(block)?;
                addr = block.next_in_heap();
            }
        }
        Ok(())
    }
}

impl Heap for MyHeap {
    const NAME: &'static str = "my-malloc";

    fn new(config: &Config) -> Self {
        // Chapter 3, step 2 ("Choosing the threshold"): keep `config.mmap_threshold`.
        // Chapter 3, step 3 ("When the break cannot grow"): `Growth::BrkThenMmap`.
        // Chapter 3, step 4 ("Catching bugs: guards, poison and a quarantine"): the
        // debug mode is a layer around a heap; see the last line of src/lib.rs.
        let _ = config;
        MyHeap {
            arena: Arena::new(Growth::BrkOnly),
            free_list: None,
        }
    }

    /// Given: first fit, else grow; then split (chapter 2) and mark the block used.
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // Chapter 3, step 1 ("sbrk or mmap"): large requests get a mapping of their own.
        let size = block_size_for(size)?;
        let block = match self.take_first_fit(size, align) {
            Some(block) => block,
            None => self.grow(size, align)?,
        };
        let block = self.split(block, size);
        block.set_used(true);
        Some(block.payload())
    }

    /// Chapter 1, step 3 ("The free list"): find the block (`self.block_of(ptr)?`),
    /// report a block that is already free as `Fault::DoubleFree`, mark it free and
    /// push it on the free list. (Chapter 2 adds `coalesce` and `give_back` here.)
    /// Until written: the block is never freed.
    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        let _ = ptr;
        let _ = steps::not_written::<()>(&steps::FREE);
        Ok(())
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let block = self.block_of(ptr)?;
        if !block.is_used() {
            return Err(Fault::InvalidPointer {
                addr: ptr.as_ptr() as usize,
                why: WhyInvalid::FreedBlock,
            });
        }
        Ok(block.payload_size())
    }

    /// Given: in place when it fits (chapter 2 makes that likelier), else move.
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let block = self.block_of(ptr)?;
        if !block.is_used() {
            return Err(Fault::DoubleFree {
                addr: ptr.as_ptr() as usize,
            });
        }
        let Some(needed) = block_size_for(size) else {
            return Ok(None);
        };
        if needed <= block.size() || self.resize_in_place(block, needed) {
            return Ok(Some(ptr));
        }
        let Some(moved) = self.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        // SAFETY: two distinct used blocks; the old one's payload is smaller than the
        // new request, so both hold `payload_size` bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), block.payload_size())
        };
        self.free(ptr)?;
        Ok(Some(moved))
    }

    fn locate(&self, addr: usize) -> Location {
        match self.arena.offset_of(addr) {
            Some(offset) => Location::Heap(offset),
            None => Location::Outside(addr),
        }
    }

    fn dump_blocks(&self, out: &mut Out) {
        let _ = self.walk(|block| {
            let state = if block.is_used() { "USED" } else { "FREE" };
            let at = self.locate(block.addr());
            let _ = writeln!(out, "[BLOCK {at} {} {state}]", block.size());
            Ok(())
        });
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        let _ = self.walk(|block| {
            if block.is_used() {
                stats.used_blocks += 1;
                stats.used_bytes += block.size();
            } else {
                stats.free_blocks += 1;
                stats.free_bytes += block.size();
                stats.largest_free = stats.largest_free.max(block.size());
            }
            Ok(())
        });
        stats
    }

    /// Chapter 3, step 2 ("Choosing the threshold"): `mallopt(M_MMAP_THRESHOLD, value)`
    /// arrives here as `param == -3`; set the threshold and return true. Until
    /// written: no parameter is honoured.
    fn set_option(&mut self, param: i32, value: i32) -> bool {
        let _ = (param, value);
        false
    }

    /// Chapter 1, step 5 ("The implementation"): walk the heap (`self.walk`) and the
    /// free list and check what must always be true: every block on the list is free
    /// and in the heap, every free block is on the list once. `heap_check()` calls it.
    fn check(&self) -> Result<(), Fault> {
        let _ = steps::not_written::<()>(&steps::CHECK);
        self.walk(|_| Ok(()))
    }
}
