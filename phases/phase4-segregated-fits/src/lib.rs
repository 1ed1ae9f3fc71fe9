//! # Phase 4: segregated fits: free blocks in bins by size
//!
//! Phases 1 to 3 find a free block by walking one list, first fit. The walk grows with
//! the number of free blocks, and splitting fills the list with small leftovers that
//! every larger request must step over; first fit also carves small requests out of
//! whatever large block comes first, pinning holes. Phase 4 keeps everything of phase
//! 3 and changes only how a free block is found: free blocks sit in bins by size class,
//! with a bitmap of the bins that hold any, so a request finds a good fit in a bounded
//! number of steps however many blocks are free.
//!
//! ```text
//!   SegregatedFitsHeap                      (this file: phase 4's name and dump)
//!   '-- Debugged<MmapHeap<Bins>>            (the kit: the debug layer, when on)
//!       '-- MmapHeap<Bins>                  (phase 3: large blocks in mappings)
//!           '-- SplitCoalesceHeap<Bins>     (phase 2: split, coalesce, trim, realloc)
//!               '-- Bins                    (phase 4: the free blocks, by class)
//! ```
//!
//! Read the files in this order:
//!
//! 1. [`bins`]: the size classes, the bins and their bitmap, and the search.
//! 2. This file: the phase's heap: phase 3's, with [`Bins`] as its free index, and a
//!    dump that shows the bins.
//!
//! **From phases 2 and 3, unchanged**: splitting, coalescing, trimming, realloc in
//! place (the `split-coalesce` package's `SplitCoalesceHeap`, generic over its free
//! index), the mappings for large blocks (the `mmap-debug` package's `MmapHeap`,
//! generic over the same index) and the debug mode (the kit's `Debugged` layer, as in
//! phase 3). This package depends on both and holds their heap as a field.
//! Still one lock around the whole heap, taken by the kit: threads are phase 5's.
//!
//! Chapter: `docs/src/ch04-segregated-fits.md`.

#![cfg_attr(not(test), no_std)]

pub mod bins;

use core::fmt::Write as _;
use core::ptr::NonNull;

use mmap_debug::MmapHeap;
use preload_kit::arena::Growth;
use preload_kit::debug::Debugged;
use preload_kit::{Config, Fault, Heap, Location, MallInfo, Out, Stats};
use split_coalesce::block::MIN_BLOCK;

pub use bins::Bins;

/// How far the free room at the top of the brk heap may exceed the trim threshold
/// before the break moves down (see `SplitCoalesceHeap::set_trim_slack`): freeing a
/// heap from the top down then costs one `brk` per 64 KiB, not one per page
/// (chapter 4, "Trimming in steps": each costs a TLB flush and unmapping too).
pub const TRIM_SLACK: usize = 64 * 1024;

/// A free of a block of at most this many bytes never moves the break down (see
/// `SplitCoalesceHeap::set_trim_free_above`): giving pages back costs the kernel time
/// per page, and a program freeing its small blocks from the top down paid it where
/// glibc, whose per-thread cache holds those blocks, does not (chapter 4, "Trimming in
/// steps").
pub const TRIM_FREE_ABOVE: usize = 1024;

/// A swing (the break moving up right after a trim) doubles the trim threshold only up
/// to this (see `SplitCoalesceHeap::set_doubling_limit`). The recorded git trace swings
/// by 100-300 KiB: with no doubling it moved the break 99 times to phase 3's 53, 7%
/// slower. Unlimited, the threshold of a generated trace whose small heap swings by
/// megabytes among large blocks climbed to 32 MiB, kept idle at its peaks (chapter 4,
/// "Trimming in steps").
pub const DOUBLING_LIMIT: usize = 512 * 1024;

/// Phase 4's heap: phase 3's, whose brk heap keeps its free blocks in [`Bins`].
/// Every call goes straight to it; only the name and the dump are phase 4's own.
/// Every method of [`Heap`] is forwarded, those with a default too: a default left in
/// place answers instead of phase 3's heap (`malloc_trim` gave nothing back).
pub struct SegregatedFitsHeap {
    heap: Debugged<MmapHeap<Bins>>,
}

impl SegregatedFitsHeap {
    /// An empty heap; `growth` is for the brk heap (`MmapOnly` in unit tests).
    pub fn with_growth(config: &Config, growth: Growth) -> Self {
        let mut heap = MmapHeap::with_growth(config, growth);
        heap.brk_mut().set_trim_slack(TRIM_SLACK);
        heap.brk_mut().set_trim_free_above(TRIM_FREE_ABOVE);
        heap.brk_mut().set_doubling_limit(DOUBLING_LIMIT);
        heap.brk_mut().set_min_leftover(MIN_BLOCK);
        SegregatedFitsHeap {
            heap: Debugged::around(config, heap),
        }
    }

    /// The bins of the brk heap's free blocks.
    pub fn bins(&self) -> &Bins {
        self.heap.heap().brk().free_index()
    }

    /// One `[QUICK …]` line per quick list that holds blocks, then one `[BIN …]` line
    /// per size class that holds free blocks, smallest first: the sizes (one size, or a
    /// range for the classes from 1 KiB up), how many free blocks and their bytes.
    pub fn dump_bins(&self, out: &mut Out) {
        self.bins().for_each_quick_list(|count| {
            let _ = writeln!(
                out,
                "[QUICK {} blocks={} bytes={}]",
                count.floor, count.blocks, count.bytes
            );
        });
        self.bins().for_each_class(|count| {
            let _ = if count.class < bins::EXACT_LIMIT / 16 {
                write!(out, "[BIN {}", count.floor)
            } else if count.class + 1 < bins::CLASSES {
                write!(
                    out,
                    "[BIN {}-{}",
                    count.floor,
                    bins::class_floor(count.class + 1) - 16
                )
            } else {
                write!(out, "[BIN {}+", count.floor)
            };
            let _ = writeln!(out, " blocks={} bytes={}]", count.blocks, count.bytes);
        });
    }
}

impl Heap for SegregatedFitsHeap {
    const NAME: &'static str = "phase4-segregated-fits";
    /// `free` keeps `errno` by itself: phase 3's heap does, and the bins make no
    /// system call.
    const FREE_KEEPS_ERRNO: bool = true;

    /// The kit runs [`Heap::check`] after calls in debug mode, as in phase 3.
    const CHECK_IN_DEBUG_MODE: bool = true;

    fn new(config: &Config) -> Self {
        SegregatedFitsHeap::with_growth(config, Growth::BrkThenMmap)
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.heap.alloc(size, align)
    }

    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        self.heap.alloc_zeroed(size)
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.heap.free(ptr)
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        self.heap.usable_size(ptr)
    }

    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        self.heap.realloc(ptr, size)
    }

    fn locate(&self, addr: usize) -> Location {
        self.heap.locate(addr)
    }

    /// Phase 3's dump (the blocks, the mappings, the quarantine), then the bins.
    fn dump_blocks(&self, out: &mut Out) {
        self.heap.dump_blocks(out);
        self.dump_bins(out);
    }

    fn stats(&self) -> Stats {
        self.heap.stats()
    }

    /// `malloc_stats()` shows the bins too, after the totals.
    fn stats_detail(&self, out: &mut Out) {
        self.dump_bins(out);
    }

    /// Phase 3's invariants; the brk heap's include the bins' own (each block in the
    /// class of its size, links that agree, the bitmap true to the bins).
    fn check(&self) -> Result<(), Fault> {
        self.heap.check()
    }

    fn set_option(&mut self, param: i32, value: i32) -> bool {
        self.heap.set_option(param, value)
    }

    fn mallinfo(&self) -> MallInfo {
        self.heap.mallinfo()
    }

    fn trim(&mut self, pad: usize) -> bool {
        self.heap.trim(pad)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use heap_replay::printed;
    use preload_kit::MIN_ALIGN;
    use split_coalesce::free_list::FreeIndex as _;
    use std::vec::Vec;

    fn heap(debug: bool) -> SegregatedFitsHeap {
        let config = Config {
            debug,
            seed: Some(42),
            ..Config::DEFAULT
        };
        SegregatedFitsHeap::with_growth(&config, Growth::MmapOnly)
    }

    fn addr(p: NonNull<u8>) -> usize {
        p.as_ptr() as usize
    }

    /// `count` blocks of `size` bytes, in the order the heap handed them out.
    fn alloc_many(heap: &mut SegregatedFitsHeap, count: usize, size: usize) -> Vec<NonNull<u8>> {
        (0..count)
            .map(|_| heap.alloc(size, MIN_ALIGN).unwrap())
            .collect()
    }

    /// Free blocks of 2, 4, 8 and 16 KB between used fences, freed largest last: each
    /// request lands in the smallest that holds it (first fit, newest first, would cut
    /// them all from the 16 KB block).
    #[test]
    fn a_request_takes_the_smallest_free_block_that_holds_it() {
        let mut heap = heap(false);
        let sizes = [2000, 4000, 8000, 16000];
        let mut fences = Vec::new();
        let mut holes = Vec::new();
        for size in sizes {
            holes.push(heap.alloc(size, MIN_ALIGN).unwrap());
            fences.push(heap.alloc(64, MIN_ALIGN).unwrap());
        }
        holes.iter().for_each(|&p| heap.free(p).unwrap());
        for (i, size) in sizes.iter().enumerate().rev() {
            let p = heap.alloc(size - 100, MIN_ALIGN).unwrap();
            assert_eq!(addr(p), addr(holes[i]), "{} bytes", size - 100);
        }
        heap.check().unwrap();
    }

    /// A small block the program frees waits unmerged in the quick list of its size
    /// and serves the next request of that size; it is still a freed block: freeing,
    /// resizing or measuring it again is misuse. (Freed newest first: in address order
    /// they would merge, see `a_run_freed_in_address_order_merges_from_its_first_block`.)
    #[test]
    fn a_small_freed_block_waits_unmerged_and_is_still_free() {
        let mut heap = heap(false);
        let a = heap.alloc(40, MIN_ALIGN).unwrap();
        let b = heap.alloc(40, MIN_ALIGN).unwrap();
        let _fence = heap.alloc(40, MIN_ALIGN).unwrap();
        heap.free(b).unwrap();
        heap.free(a).unwrap();
        assert_eq!(heap.stats().free_blocks, 2, "neighbours, not merged");
        assert_eq!(
            printed(|out| heap.dump_bins(out)),
            "[QUICK 48 blocks=2 bytes=96]\n"
        );
        heap.check().unwrap();
        assert_eq!(heap.free(a), Err(Fault::DoubleFree { addr: addr(a) }));
        assert!(matches!(
            heap.usable_size(b),
            Err(Fault::InvalidPointer {
                why: preload_kit::WhyInvalid::FreedBlock,
                ..
            })
        ));
        assert!(matches!(heap.realloc(b, 10), Err(Fault::DoubleFree { .. })));
        assert_eq!(heap.alloc(40, MIN_ALIGN), Some(a), "newest first");
        assert_eq!(heap.alloc(40, MIN_ALIGN), Some(b));
        heap.check().unwrap();
    }

    /// A small block freed right after the free block before it (the program freeing
    /// in address order) merges at once; freed after some other block, it waits on its
    /// quick list. (The big blocks are above the quick lists' sizes: they merge at once.)
    #[test]
    fn blocks_freed_in_address_order_merge_at_once() {
        let mut heap = heap(false);
        let mut alloc = |size| heap.alloc(size, MIN_ALIGN).unwrap();
        let [big, a, b, _fence, big2, d, _fence2, x, _fence3] =
            [1100, 40, 40, 40, 1100, 40, 40, 40, 40].map(&mut alloc);
        for p in [big, a, b, big2, x, d] {
            heap.free(p).unwrap();
        }
        assert_eq!(
            printed(|out| heap.dump_bins(out)),
            "[QUICK 48 blocks=2 bytes=96]\n\
             [BIN 1024-1136 blocks=1 bytes=1120]\n\
             [BIN 1152-1264 blocks=1 bytes=1216]\n",
            "big, a and b merged; x and d (freed after x) wait"
        );
        heap.check().unwrap();
    }

    /// A run of small blocks freed in address order merges into one free block even
    /// when the block before the run is used: its first block waits on its quick list
    /// only until the second is freed right after it, and then merges with it. A block
    /// freed after a quick block that a request has taken again waits as any other.
    #[test]
    fn a_run_freed_in_address_order_merges_from_its_first_block() {
        let mut heap = heap(false);
        let _fence = heap.alloc(40, MIN_ALIGN).unwrap();
        let run = alloc_many(&mut heap, 10, 100);
        let _fence2 = heap.alloc(40, MIN_ALIGN).unwrap();
        run.iter().for_each(|&p| heap.free(p).unwrap());
        assert!(!heap.bins().holds_deferred(), "nothing waits");
        assert_eq!(heap.stats().free_blocks, 1, "one free block");
        assert_eq!(
            printed(|out| heap.dump_bins(out)),
            "[BIN 1024-1136 blocks=1 bytes=1120]\n"
        );
        heap.check().unwrap();

        let [a, b] = [0, 1].map(|_| heap.alloc(100, MIN_ALIGN).unwrap());
        heap.free(a).unwrap();
        assert_eq!(
            heap.alloc(100, MIN_ALIGN),
            Some(a),
            "taken from its quick list"
        );
        heap.free(b).unwrap();
        assert_eq!(
            heap.bins().deferred_totals().blocks,
            1,
            "b waits: the block before it is used again"
        );
        heap.check().unwrap();
    }

    /// A block above the fast lists freed right after a free block merges into it at
    /// once, the last block freed or not; a fast one waits on its list.
    #[test]
    fn a_block_freed_after_a_hole_joins_it() {
        let mut heap = heap(false);
        let mut alloc = |size| heap.alloc(size, MIN_ALIGN).unwrap();
        let [big, a, _fence, b, c, _fence2] = [2000, 200, 40, 2000, 40, 40].map(&mut alloc);
        for p in [big, b, a, c] {
            heap.free(p).unwrap();
        }
        assert_eq!(
            printed(|out| heap.dump_bins(out)),
            "[QUICK 48 blocks=1 bytes=48]\n\
             [BIN 1920-2032 blocks=1 bytes=2016]\n\
             [BIN 2048-2288 blocks=1 bytes=2224]\n",
            "a merged with big; c, after b, waits"
        );
        heap.check().unwrap();
    }

    /// Quick blocks merge before the heap grows: a request that the newest region's
    /// room cannot hold is served from small blocks freed elsewhere, merged.
    #[test]
    fn quick_blocks_merge_before_the_heap_grows() {
        let config = Config {
            mmap_threshold: Some(16 << 20),
            ..Config::DEFAULT
        };
        let mut heap = SegregatedFitsHeap::with_growth(&config, Growth::MmapOnly);
        // Small blocks until one lands in a new region (not right after the last).
        let mut small: Vec<NonNull<u8>> = Vec::new();
        let jumped = loop {
            let p = heap.alloc(48, MIN_ALIGN).unwrap();
            match small.last() {
                Some(&last) if addr(p) != addr(last) + 64 => break p,
                _ => small.push(p),
            }
        };
        // Most of the new region's room, kept.
        let _large = heap.alloc(3 << 20, MIN_ALIGN).unwrap();
        // Newest first, so that they wait (in address order they would merge).
        small.iter().rev().for_each(|&p| heap.free(p).unwrap());
        assert!(heap.bins().holds_deferred());
        let merged = heap.alloc(2 << 20, MIN_ALIGN).unwrap();
        assert_eq!(
            addr(merged),
            addr(small[0]),
            "the first region's blocks, merged"
        );
        assert!(!heap.bins().holds_deferred());
        heap.free(jumped).unwrap();
        heap.check().unwrap();
    }

    /// Small blocks freed out of address order wait in the fast lists, a large share of
    /// the heap; requests of another size then carve from the top, until one would
    /// cross into a new page: the fast lists' blocks merge first, and it is served from
    /// them (without the rule, every one comes from the top).
    #[test]
    fn fast_blocks_merge_before_the_heap_touches_a_new_page() {
        let mut heap = heap(false);
        let small = alloc_many(&mut heap, 100, 48);
        let fence = heap.alloc(48, MIN_ALIGN).unwrap();
        // Newest first: no block starts where the one freed before it ended.
        small.iter().rev().for_each(|&p| heap.free(p).unwrap());
        assert!(heap.bins().holds_deferred());
        let others = alloc_many(&mut heap, 40, 200);
        assert!(!heap.bins().holds_deferred(), "the fast lists merged");
        assert!(
            others.iter().any(|&p| addr(p) < addr(fence)),
            "a request was served from the merged blocks"
        );
        heap.check().unwrap();
    }

    /// `malloc_trim` merges the quick blocks first, so that those at the top go back.
    #[test]
    fn trim_merges_quick_blocks() {
        let mut heap = heap(false);
        let blocks = alloc_many(&mut heap, 100, 100);
        blocks.iter().rev().for_each(|&p| heap.free(p).unwrap());
        assert_eq!(heap.stats().free_blocks, 100);
        heap.trim(0);
        assert_eq!(heap.stats(), Stats::default(), "all merged into the top");
        heap.check().unwrap();
    }

    /// Phase 3's dynamic threshold, inherited: freeing a mapped block raises the mmap
    /// threshold to its size: the next buffer of
    /// that size comes from the brk heap, and a freed one there is reused in place.
    /// A threshold the user set stays where it is.
    #[test]
    fn the_mmap_threshold_follows_freed_mappings() {
        const BUFFER: usize = 1 << 20;
        let mut heap = heap(false);
        let first = heap.alloc(BUFFER, MIN_ALIGN).unwrap();
        assert!(matches!(heap.locate(addr(first)), Location::Mapping { .. }));
        heap.free(first).unwrap();
        let second = heap.alloc(BUFFER, MIN_ALIGN).unwrap();
        assert!(matches!(heap.locate(addr(second)), Location::Heap(_)));
        let fence = heap.alloc(64, MIN_ALIGN).unwrap();
        heap.free(second).unwrap();
        let third = heap.alloc(BUFFER, MIN_ALIGN).unwrap();
        assert_eq!(addr(third), addr(second), "the freed buffer is reused");
        heap.free(third).unwrap();
        heap.free(fence).unwrap();
        heap.check().unwrap();

        let fixed = Config {
            mmap_threshold: Some(128 * 1024),
            ..Config::DEFAULT
        };
        let mut heap = SegregatedFitsHeap::with_growth(&fixed, Growth::MmapOnly);
        let first = heap.alloc(BUFFER, MIN_ALIGN).unwrap();
        heap.free(first).unwrap();
        let second = heap.alloc(BUFFER, MIN_ALIGN).unwrap();
        assert!(matches!(
            heap.locate(addr(second)),
            Location::Mapping { .. }
        ));
        heap.free(second).unwrap();
    }

    /// `heap_dump()` and `malloc_stats()` show one line per class holding free blocks.
    #[test]
    fn the_dump_shows_the_bins() {
        let mut heap = heap(false);
        let mut blocks = Vec::new();
        for size in [40, 40, 40, 40, 1100, 40, 5000, 40] {
            blocks.push(heap.alloc(size, MIN_ALIGN).unwrap());
        }
        for i in [0, 2, 4, 6] {
            heap.free(blocks[i]).unwrap();
        }
        let text = printed(|out| heap.dump_bins(out));
        assert_eq!(
            text,
            "[QUICK 48 blocks=2 bytes=96]\n\
             [BIN 1024-1136 blocks=1 bytes=1120]\n\
             [BIN 4608-5104 blocks=1 bytes=5008]\n"
        );
        assert_eq!(
            printed(|out| heap.stats_detail(out)),
            text,
            "malloc_stats too"
        );
        let stats = heap.stats();
        assert_eq!((stats.free_blocks, stats.free_bytes), (4, 96 + 1120 + 5008));
    }

    /// A seeded random workload of every call, small and large, aligned and not, with
    /// and without the debug layer: contents survive and the heap check (which checks
    /// the bins) passes after every call.
    #[test]
    fn random_workload_keeps_contents_and_invariants() {
        for debug in [false, true] {
            let mut heap = heap(debug);
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut random = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
            for step in 0..6000 {
                let choice = random() % 10;
                if choice < 5 || live.is_empty() {
                    let size = match random() % 20 {
                        0 => 1 + (random() % 300_000) as usize,
                        1..=4 => 1 + (random() % 8000) as usize,
                        _ => 1 + (random() % 500) as usize,
                    };
                    let align = if random() % 8 == 0 { 256 } else { MIN_ALIGN };
                    let p = heap.alloc(size, align).unwrap();
                    assert_eq!(addr(p) % align, 0);
                    let byte = step as u8;
                    // SAFETY: a fresh block of `size` bytes.
                    unsafe { p.as_ptr().write_bytes(byte, size) };
                    live.push((p, size, byte));
                } else {
                    let i = (random() as usize) % live.len();
                    let (p, size, byte) = live.swap_remove(i);
                    // SAFETY: a live block of `size` bytes.
                    let kept = unsafe { core::slice::from_raw_parts(p.as_ptr(), size) };
                    assert!(kept.iter().all(|&b| b == byte), "step {step}");
                    if choice < 8 {
                        heap.free(p).unwrap();
                    } else {
                        let new_size = 1 + (random() % 3000) as usize;
                        let q = heap.realloc(p, new_size).unwrap().unwrap();
                        // SAFETY: the kept prefix of the resized block.
                        let kept =
                            unsafe { core::slice::from_raw_parts(q.as_ptr(), size.min(new_size)) };
                        assert!(kept.iter().all(|&b| b == byte), "realloc at step {step}");
                        // SAFETY: the resized block holds `new_size` bytes.
                        unsafe { q.as_ptr().write_bytes(byte, new_size) };
                        live.push((q, new_size, byte));
                    }
                }
                if step % 7 == 0 {
                    heap.check().unwrap();
                }
            }
            for (p, _, _) in live {
                heap.free(p).unwrap();
            }
            heap.check().unwrap();
            if !debug {
                // (The debug layer's quarantine still holds blocks.)
                assert_eq!(heap.stats().used_blocks, 0);
            }
        }
    }
}
