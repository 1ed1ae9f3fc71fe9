//! The phase-1 heap: blocks carved from an sbrk-grown arena, one free list, first fit.
//!
//! - `alloc` (fast path) takes the first free block that is big enough, whole: there is
//!   no splitting, so a 4000-byte free block serves a 1-byte request and the rest is
//!   wasted until it is freed again.
//! - `grow` (slow path, when no free block fits) carves a new block from the top of the
//!   heap, moving the program break when the top is used up.
//! - `free` checks the pointer, marks the block free and pushes it on the list. Free
//!   neighbours are never merged: after freeing two 32-byte neighbours a 64-byte request
//!   still grows the heap. Phase 2 fixes both limitations.

use core::fmt::Write as _;
use core::ptr::NonNull;

use preload_kit::arena::{Arena, Growth, Region};
use preload_kit::{
    Config, Fault, Heap, Location, MIN_ALIGN, MallInfo, Out, Stats, Totals, WhyInvalid,
};

use crate::block::{Block, HEADER_SIZE, MIN_BLOCK, block_size_for};
use crate::free_list::FreeList;

pub struct FreeListHeap {
    arena: Arena,
    free_list: FreeList,
    /// Running totals, so `malloc_stats` need not walk the heap. `check` verifies them.
    totals: Totals,
}

impl FreeListHeap {
    /// An empty heap whose arena grows as `growth` says (`BrkOnly` when preloaded;
    /// unit tests use `MmapOnly`).
    pub fn with_growth(growth: Growth) -> Self {
        FreeListHeap {
            arena: Arena::new(growth),
            free_list: FreeList::new(),
            totals: Totals::ZERO,
        }
    }

    /// Slow path of [`Heap::alloc`]: no free block fits, so carve a new `size`-byte
    /// block from the top of the heap. For alignments above 16 a padding block goes
    /// first, onto the free list, so the payload lands on the boundary.
    fn grow(&mut self, size: usize, align: usize) -> Option<Block> {
        if align > MIN_ALIGN {
            // Padding is less than `align + MIN_BLOCK` (see `padding_before`).
            let worst_case = size.checked_add(align)?.checked_add(MIN_BLOCK)?;
            if !self.arena.make_room(worst_case) {
                return None;
            }
            let top = self.arena.newest()?.top;
            let padding = padding_before(top, align);
            if padding > 0 {
                let pad = self.carve(padding)?;
                pad.init(padding, false);
                self.add_free(pad);
            }
        }
        let block = self.carve(size)?;
        block.init(size, false);
        self.totals.free.add(size);
        Some(block)
    }

    fn carve(&mut self, size: usize) -> Option<Block> {
        let addr = self.arena.carve(size)?.as_ptr() as usize;
        // SAFETY: the arena just carved `size >= MIN_BLOCK` bytes at `addr`, 16-aligned.
        Some(unsafe { Block::at(addr) })
    }

    fn add_free(&mut self, block: Block) {
        self.totals.free.add(block.size());
        self.free_list.push(block);
    }

    /// Finds the block whose payload starts at `ptr`, or says why `ptr` is not one.
    /// Reads memory only after proving it lies inside the heap, so checking a wild
    /// pointer cannot crash.
    fn block_of(&self, ptr: NonNull<u8>) -> Result<Block, Fault> {
        let addr = ptr.as_ptr() as usize;
        let invalid = |why| Fault::InvalidPointer { addr, why };
        let Some(region) = self.arena.region_of(addr) else {
            return Err(invalid(if self.arena.offset_of(addr).is_some() {
                WhyInvalid::NotABlockStart
            } else {
                WhyInvalid::OutsideTheHeap
            }));
        };
        if !addr.is_multiple_of(MIN_ALIGN) {
            return Err(invalid(WhyInvalid::Misaligned));
        }
        if addr - region.start < HEADER_SIZE {
            return Err(invalid(WhyInvalid::NotABlockStart));
        }
        // SAFETY: `addr` is 16-aligned and `region.start <= addr - 16 < addr < top`, so
        // the 16 header bytes lie in the carved part of the region.
        let block = unsafe { Block::at(addr - HEADER_SIZE) };
        if !block.header_is_intact() {
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

    /// Like [`FreeListHeap::block_of`], for a block the program still owns.
    fn used_block_of(&self, ptr: NonNull<u8>) -> Result<Block, Fault> {
        let block = self.block_of(ptr)?;
        if !block.is_used() {
            return Err(Fault::DoubleFree {
                addr: ptr.as_ptr() as usize,
            });
        }
        Ok(block)
    }

    /// Every block of every region, in address order. Stops at a header that is not
    /// intact or a size that leaves the region, reporting it as `Err`.
    fn walk(&self, mut visit: impl FnMut(Block) -> Result<(), Fault>) -> Result<(), Fault> {
        for region in self.arena.regions() {
            walk_region(region, &mut visit)?;
        }
        Ok(())
    }
}

fn walk_region(
    region: &Region,
    visit: &mut impl FnMut(Block) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let mut addr = region.start;
    while addr < region.top {
        if region.top - addr < MIN_BLOCK {
            return Err(Fault::Corruption {
                addr,
                what: "a block runs past the top of the heap",
            });
        }
        // SAFETY: `addr` is 16-aligned (region starts and block sizes are) and at least
        // MIN_BLOCK bytes below the region's top.
        let block = unsafe { Block::at(addr) };
        if !block.header_is_intact() {
            return Err(Fault::Corruption {
                addr,
                what: "block header overwritten",
            });
        }
        if block.size() < MIN_BLOCK || block.next_in_heap() > region.top {
            return Err(Fault::Corruption {
                addr,
                what: "block size out of range",
            });
        }
        visit(block)?;
        addr = block.next_in_heap();
    }
    Ok(())
}

/// Bytes to leave before a block at `top` so that its payload is `align`-aligned: zero,
/// or at least `MIN_BLOCK` so that the gap can be a free block of its own. Always less
/// than `align + MIN_BLOCK`.
fn padding_before(top: usize, align: usize) -> usize {
    let payload = (top + HEADER_SIZE).next_multiple_of(align);
    let padding = payload - HEADER_SIZE - top;
    if padding != 0 && padding < MIN_BLOCK {
        padding + align
    } else {
        padding
    }
}

impl Heap for FreeListHeap {
    const NAME: &'static str = "phase1-sbrk-freelist";
    /// `free` keeps `errno` by itself: the heap's only system calls are the arena's
    /// (`sbrk`), made through [`preload_kit::os`], which leaves `errno` alone.
    const FREE_KEEPS_ERRNO: bool = true;

    fn new(_config: &Config) -> Self {
        FreeListHeap::with_growth(Growth::BrkOnly)
    }

    /// Fast path: first fit on the free list; [`FreeListHeap::grow`] when nothing fits.
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let size = block_size_for(size)?;
        let fits = |block: Block| {
            block.size() >= size && (block.payload().as_ptr() as usize).is_multiple_of(align)
        };
        let block = match self.free_list.take_first(fits) {
            Some(block) => block,
            None => self.grow(size, align)?,
        };
        block.set_used(true);
        self.totals.free.remove(block.size());
        self.totals.used.add(block.size());
        Some(block.payload())
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        let block = self.used_block_of(ptr)?;
        block.set_used(false);
        self.totals.used.remove(block.size());
        self.add_free(block);
        Ok(())
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let block = self.block_of(ptr)?;
        if !block.is_used() {
            let addr = ptr.as_ptr() as usize;
            return Err(Fault::InvalidPointer {
                addr,
                why: WhyInvalid::FreedBlock,
            });
        }
        Ok(block.payload_size())
    }

    /// Keeps the block when the new size still fits in it; otherwise moves.
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let block = self.used_block_of(ptr)?;
        let Some(needed) = block_size_for(size) else {
            return Ok(None);
        };
        if needed <= block.size() {
            return Ok(Some(ptr));
        }
        let Some(moved) = self.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        // SAFETY: both blocks are used (distinct) and hold at least `payload_size`
        // bytes of the old block, which is smaller than the new request.
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
        let result = self.walk(|block| {
            let state = if block.is_used() { "USED" } else { "FREE" };
            let _ = writeln!(
                out,
                "[BLOCK {} {} {state}]",
                self.locate(block.addr()),
                block.size()
            );
            Ok(())
        });
        if let Err(Fault::Corruption { addr, what }) = result {
            let _ = writeln!(out, "[BLOCK {} ? CORRUPT: {what}]", self.locate(addr));
        }
    }

    /// `mallinfo2`'s figures: the blocks' totals, and the arena's uncarved room as
    /// free. (Phase 1 never gives memory back, so `malloc_trim` keeps the default.)
    fn mallinfo(&self) -> MallInfo {
        MallInfo::of_arena(&self.arena, &self.stats())
    }

    fn stats(&self) -> Stats {
        let largest_free = self.free_list.iter().map(Block::size).max().unwrap_or(0);
        self.totals.stats(largest_free)
    }

    /// The phase-1 invariants:
    /// 1. blocks tile every region: each header intact, each size at least `MIN_BLOCK`
    ///    and inside the region;
    /// 2. every block on the free list is a free block of this heap, and every free
    ///    block is on it exactly once (the list has as many entries as the heap has
    ///    free blocks, and cannot hold one twice without looping);
    /// 3. the running totals agree with the heap.
    fn check(&self) -> Result<(), Fault> {
        let mut seen = Totals::ZERO;
        self.walk(|block| {
            seen.count(block.is_used(), block.size());
            Ok(())
        })?;

        let mut listed = 0;
        let mut entry = self.free_list.iter().next();
        while let Some(block) = entry {
            let addr = block.addr();
            let inside = self
                .arena
                .region_of(addr)
                .is_some_and(|r| r.top - addr >= MIN_BLOCK);
            if addr % MIN_ALIGN != 0 || !inside || !block.header_is_intact() {
                return Err(Fault::Corruption {
                    addr,
                    what: "free list points outside the heap's blocks",
                });
            }
            if block.is_used() {
                return Err(Fault::Corruption {
                    addr,
                    what: "free list holds a used block",
                });
            }
            listed += 1;
            if listed > seen.free.blocks {
                return Err(Fault::Corruption {
                    addr,
                    what: "free list loops or holds a block twice",
                });
            }
            entry = block.next_free();
        }
        let start = self.arena.regions().first().map_or(0, |r| r.start);
        if listed != seen.free.blocks {
            return Err(Fault::Corruption {
                addr: start,
                what: "a free block is missing from the free list",
            });
        }
        self.totals.agree_with(&seen, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heap_replay::{Profile, Replay, script};

    fn heap() -> FreeListHeap {
        FreeListHeap::with_growth(Growth::MmapOnly)
    }

    fn addr(p: NonNull<u8>) -> usize {
        p.as_ptr() as usize
    }

    #[test]
    fn a_freed_block_is_reused_whole_by_a_smaller_request() {
        let mut heap = heap();
        let big = heap.alloc(4000, MIN_ALIGN).unwrap();
        heap.free(big).unwrap();
        let small = heap.alloc(1, MIN_ALIGN).unwrap();
        assert_eq!(small, big, "first fit takes the only free block");
        assert_eq!(
            heap.usable_size(small).unwrap(),
            4000,
            "no splitting in phase 1"
        );
        heap.check().unwrap();
    }

    #[test]
    fn freed_neighbours_are_not_merged() {
        let mut heap = heap();
        let a = heap.alloc(16, MIN_ALIGN).unwrap();
        let b = heap.alloc(16, MIN_ALIGN).unwrap();
        heap.free(a).unwrap();
        heap.free(b).unwrap();
        let both = heap.alloc(48, MIN_ALIGN).unwrap();
        assert!(
            addr(both) > addr(b),
            "a 48-byte request grows the heap past two 32-byte holes"
        );
        assert_eq!(heap.stats().free_blocks, 2);
        heap.check().unwrap();
    }

    #[test]
    fn misuse_is_reported_not_followed() {
        let mut heap = heap();
        let p = heap.alloc(100, MIN_ALIGN).unwrap();
        let inside = NonNull::new(p.as_ptr().wrapping_add(32)).unwrap();
        assert!(matches!(
            heap.free(inside),
            Err(Fault::InvalidPointer { .. })
        ));
        let odd = NonNull::new(p.as_ptr().wrapping_add(3)).unwrap();
        assert!(matches!(heap.free(odd), Err(Fault::InvalidPointer { .. })));
        let mut local = 0u64;
        let outside = NonNull::from(&mut local).cast::<u8>();
        assert!(matches!(
            heap.free(outside),
            Err(Fault::InvalidPointer {
                why: WhyInvalid::OutsideTheHeap,
                ..
            })
        ));
        heap.free(p).unwrap();
        assert_eq!(heap.free(p), Err(Fault::DoubleFree { addr: addr(p) }));
        assert!(matches!(heap.realloc(p, 10), Err(Fault::DoubleFree { .. })));
    }

    #[test]
    fn sizes_that_cannot_exist_fail_cleanly() {
        let mut heap = heap();
        assert_eq!(heap.alloc(usize::MAX, MIN_ALIGN), None);
        assert_eq!(heap.alloc(usize::MAX - 8, MIN_ALIGN), None);
        assert_eq!(heap.alloc(1, 1 << 62), None);
        heap.check().unwrap();
    }

    #[test]
    fn aligned_blocks_are_aligned_and_padding_is_reusable() {
        let mut heap = heap();
        let _ = heap.alloc(8, MIN_ALIGN).unwrap();
        for align in [32, 64, 4096, 65536] {
            let p = heap.alloc(100, align).unwrap();
            assert_eq!(addr(p) % align, 0);
            heap.check().unwrap();
        }
        assert!(
            heap.stats().free_blocks > 0,
            "padding went onto the free list"
        );
    }

    /// A seeded workload of small blocks (malloc, calloc, memalign, free, realloc),
    /// replayed by `heap_replay`: every block keeps its contents and never overlaps
    /// another, and the heap check passes every 97 actions.
    #[test]
    fn seeded_workload_keeps_contents_and_invariants() {
        let mut replay = Replay::new(heap()).check_every(97);
        replay.run(&script(1, 4000, &Profile::SMALL)).unwrap();
        replay.free_all().unwrap();
        let stats = replay.heap().stats();
        assert_eq!((stats.used_blocks, stats.used_bytes), (0, 0));
    }

    /// Random scripts of the same actions, shrunk to a minimal one on failure
    /// (`PROPTEST_CASES=N` runs more than the bounded default).
    #[test]
    fn fuzzed_scripts_keep_contents_and_invariants() {
        heap_replay::fuzz(heap, &Profile::SMALL, 64);
    }
}
