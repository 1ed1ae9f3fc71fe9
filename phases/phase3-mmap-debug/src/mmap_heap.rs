//! Phase 3 without its debug mode: phase 2's brk heap for small blocks, a mapping of
//! its own for each large one.
//!
//! ```text
//!   malloc(size)
//!     size <  threshold  ->  phase 2's heap (split_coalesce): split, coalesce, trim;
//!                            grown with sbrk, then with mmap-backed regions when sbrk
//!                            fails (Growth::BrkThenMmap)
//!     size >= threshold  ->  memory the brk heap holds already, if the threshold is
//!                            not the user's and some fits (no break moved); else its
//!                            own mapping (crate::mappings), unmapped by free
//!
//!   free(p) / realloc(p) / malloc_usable_size(p)
//!     p inside the brk heap's regions  ->  phase 2's heap, which checks p itself
//!     anything else                    ->  the mapping registry, checked before use
//! ```
//!
//! Why a threshold: a large block in the brk heap pins the break. Freed in the middle
//! of the heap, its memory cannot go back to the OS until everything above it is
//! freed; as a mapping, `free` returns it at once, and `realloc` resizes it with
//! `mremap` without copying. Below the threshold, whole pages and two system calls
//! per block would cost far more than they save. 128 KiB is glibc's default too.
//!
//! The threshold moves, as glibc's does: when a mapped block is freed, blocks of its
//! size evidently come and go, so the threshold rises to its length (up to
//! [`MAX_DYNAMIC_MMAP_THRESHOLD`]) and the next ones are served, and reused, by the
//! brk heap, instead of each getting fresh pages the kernel must zero. A threshold the
//! user set (`MALLOC_MMAP_THRESHOLD_`, `mallopt`) never moves, nor does one set beside
//! a trim threshold the user set.
//!
//! The fast path is phase 2's: one comparison with the threshold on `malloc`, and on
//! `free` a check that the pointer lies in one of the heap's regions (usually one).

use core::ptr::NonNull;

use preload_kit::arena::Growth;
use preload_kit::{Config, Fault, Heap, Location, MIN_ALIGN, MallInfo, Out, Stats, WhyInvalid};

use crate::mappings::Mappings;
use split_coalesce::heap::{M_TRIM_THRESHOLD, SplitCoalesceHeap};
use split_coalesce::{FreeIndex, FreeList};

/// Requests of this many bytes or more get their own mapping (glibc's default
/// `M_MMAP_THRESHOLD`). `MALLOC_MMAP_THRESHOLD_` and `mallopt` change it.
pub const DEFAULT_MMAP_THRESHOLD: usize = 128 * 1024;

/// How high the threshold climbs by itself: glibc's `DEFAULT_MMAP_THRESHOLD_MAX` on
/// 64-bit systems. A block larger than this stays a mapping of its own.
pub const MAX_DYNAMIC_MMAP_THRESHOLD: usize = 32 * 1024 * 1024;

/// `mallopt`'s parameter number for the mmap threshold (glibc's `M_MMAP_THRESHOLD`).
pub const M_MMAP_THRESHOLD: i32 = -3;

/// Generic, as phase 2's heap is, over how the brk heap finds free blocks: phase 3
/// uses phase 2's [`FreeList`]; a later phase can route the same way around a heap
/// with another index (`MmapHeap<ItsIndex>`).
pub struct MmapHeap<L: FreeIndex = FreeList> {
    /// Blocks below the threshold: phase 2's heap, unchanged.
    brk: SplitCoalesceHeap<L>,
    /// Blocks at or above it.
    mapped: Mappings,
    mmap_threshold: usize,
    /// Set by the user (the environment or `mallopt`, of this threshold or of the trim
    /// threshold): then the threshold never moves by itself.
    mmap_threshold_fixed: bool,
}

impl<L: FreeIndex> MmapHeap<L> {
    /// An empty heap. `growth` is for its brk heap: `BrkThenMmap` when preloaded,
    /// `MmapOnly` in unit tests (whose process has another allocator moving the break).
    pub fn with_growth(config: &Config, growth: Growth) -> Self {
        MmapHeap {
            brk: SplitCoalesceHeap::with_growth(config, growth),
            mapped: Mappings::new(),
            mmap_threshold: config.mmap_threshold.unwrap_or(DEFAULT_MMAP_THRESHOLD),
            mmap_threshold_fixed: config.mmap_threshold.is_some()
                || config.trim_threshold.is_some(),
        }
    }

    /// The current threshold: requests of this many bytes or more are mapped.
    pub fn mmap_threshold(&self) -> usize {
        self.mmap_threshold
    }

    /// Unmaps a large block, then raises the threshold to its length (see the module
    /// comment), and the brk heap's trim threshold to twice that, as glibc does.
    fn free_mapped(&mut self, addr: usize) -> Result<(), Fault> {
        let len = self.mapped.len_of(addr);
        self.mapped.unmap(addr)?;
        // Just above the length: a request as large as the mapping (a whole number of
        // pages, like 5 MiB) must go to the heap next time too.
        if let Ok(len) = len
            && !self.mmap_threshold_fixed
            && len >= self.mmap_threshold
            && len < MAX_DYNAMIC_MMAP_THRESHOLD
        {
            self.mmap_threshold = len + 1;
            self.brk.raise_trim_threshold(2 * len);
        }
        Ok(())
    }

    /// The brk heap, for a later phase's reports (phase 4 dumps its bins).
    pub fn brk(&self) -> &SplitCoalesceHeap<L> {
        &self.brk
    }

    /// The brk heap, for a later phase to configure when it builds the heap.
    pub fn brk_mut(&mut self) -> &mut SplitCoalesceHeap<L> {
        &mut self.brk
    }

    fn is_large(&self, size: usize) -> bool {
        size >= self.mmap_threshold
    }

    /// Slow path of [`Heap::alloc`] for a large request: memory the brk heap already
    /// holds (see [`MmapHeap::prepare_heap_for_large`]), else a mapping, else the brk heap
    /// grown (if the kernel will not map, as glibc falls back too).
    fn alloc_mapped(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if align <= MIN_ALIGN
            && self.prepare_heap_for_large()
            && let Some(block) = self.brk.alloc_without_growing(size)
        {
            return Some(block);
        }
        self.map(size, align)
            .or_else(|| self.brk.alloc(size, align))
    }

    /// Whether a large request may take memory the brk heap already holds, before a
    /// mapping is made: only when the threshold is not the user's, who set it to have
    /// large blocks mapped. Then first the room kept for swings goes back (as before a
    /// mapping: see [`MmapHeap::map`]), and what is left, free blocks and the room the
    /// trim threshold keeps since the mmap threshold rose (twice it), serves large
    /// blocks, which is what it was kept for. glibc does the same: its `malloc` maps
    /// only when its heap would have to grow. Mapping every large block, phase 4 left
    /// megabytes idle at the top beside new mappings on the generated
    /// `realloc_buffers` traces (chapter 3, "Large blocks in the room kept for them").
    fn prepare_heap_for_large(&mut self) -> bool {
        if self.mmap_threshold_fixed {
            return false;
        }
        self.brk.give_back_swing_room();
        true
    }

    /// Maps a block of its own for a large request, once the brk heap has given back
    /// the room it kept at its top beyond its initial trim threshold: for swings
    /// (beyond its base trim threshold), and for large blocks since the mmap threshold
    /// rose. A large block that must be mapped all the same means the program's memory
    /// grows outside the heap, and that room would sit idle through the peak. On the
    /// recorded git trace, whose blocks of 0.3-1.3 MiB come in one burst at its peak,
    /// the doubled threshold kept about 300 KiB there: 97.5% utilization without this,
    /// 99.1% with it (glibc 98.5%).
    fn map(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.brk.give_back_room();
        self.mapped.map(size, align)
    }

    /// The payload size of the used brk block at `ptr`, or the fault `free` would
    /// report for it. (`usable_size` calls a freed block an invalid pointer, where
    /// `realloc`, like `free`, must say "double free". Asking `free` for its verdict
    /// changes nothing: it fails at the same first check, before touching the heap.)
    fn brk_block_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        match self.brk.usable_size(ptr) {
            Ok(size) => Ok(size),
            Err(fault) => Err(self.brk.free(ptr).err().unwrap_or(fault)),
        }
    }

    /// `realloc` of a brk block to a large size: in place or within the memory the
    /// brk heap holds if it can (see [`MmapHeap::prepare_heap_for_large`]), else into a
    /// mapping of its own; then the room the old block left at the top goes back too.
    fn realloc_to_large(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        if self.prepare_heap_for_large()
            && let Some(block) = self.brk.realloc_without_growing(ptr, size)?
        {
            return Ok(Some(block));
        }
        let moved = self.move_to_mapping(ptr, size)?;
        self.brk.give_back_room();
        Ok(moved)
    }

    /// `realloc` of a brk block to a large size: into a mapping of its own.
    fn move_to_mapping(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        let old_size = self.brk_block_size(ptr)?;
        let Some(moved) = self.map(size, MIN_ALIGN) else {
            // No mapping to be had: the brk heap may still manage.
            return self.brk.realloc(ptr, size);
        };
        // SAFETY: the old block is live with `old_size` bytes, the new mapping is
        // fresh with at least `size`; they are distinct.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), old_size.min(size)) };
        self.brk.free(ptr)?;
        Ok(Some(moved))
    }

    /// `realloc` of a mapped block to a size below the threshold: into the brk heap.
    fn move_to_brk(&mut self, addr: usize, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let old_len = self.mapped.len_of(addr)?;
        let Some(moved) = self.brk.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        // SAFETY: the registry says `addr` starts a live mapping of `old_len` bytes;
        // the new block is live with at least `size` bytes, and not inside it.
        unsafe {
            core::ptr::copy_nonoverlapping(addr as *const u8, moved.as_ptr(), old_len.min(size))
        };
        self.mapped.unmap(addr)?;
        Ok(Some(moved))
    }
}

impl<L: FreeIndex> Heap for MmapHeap<L> {
    const NAME: &'static str = "phase3-mmap-debug";
    /// `free` keeps `errno` by itself: phase 2's heap does, and the mappings are made
    /// and unmapped through [`preload_kit::os`], which leaves `errno` alone.
    const FREE_KEEPS_ERRNO: bool = true;

    fn new(config: &Config) -> Self {
        MmapHeap::with_growth(config, Growth::BrkThenMmap)
    }

    /// Inlined, as phase 2's `alloc` and `free` are: a small request or free crosses
    /// one call from the kit to the brk heap's code, not three (chapter 4, "The last
    /// few percent of `--small`").
    #[inline(always)]
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if self.is_large(size) {
            return self.alloc_mapped(size, align);
        }
        self.brk.alloc(size, align)
    }

    /// A fresh mapping is zero already: only brk blocks are cleared. A large block
    /// comes from the brk heap's memory first, as in [`Heap::alloc`].
    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        if self.is_large(size) {
            if self.prepare_heap_for_large()
                && let Some(block) = self.brk.alloc_without_growing(size)
            {
                // SAFETY: the brk heap returned a block of at least `size` bytes.
                unsafe { block.as_ptr().write_bytes(0, size) };
                return Some(block);
            }
            if let Some(block) = self.map(size, MIN_ALIGN) {
                return Some(block);
            }
        }
        self.brk.alloc_zeroed(size)
    }

    /// The brk heap is asked first, without a separate ownership test: its own check
    /// finds the region anyway, and small blocks are nearly every free. Only a pointer
    /// it calls [`WhyInvalid::OutsideTheHeap`] goes on to the mappings.
    #[inline(always)]
    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        match self.brk.free(ptr) {
            Err(Fault::InvalidPointer {
                why: WhyInvalid::OutsideTheHeap,
                ..
            }) => self.free_mapped(ptr.as_ptr() as usize),
            result => result,
        }
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let addr = ptr.as_ptr() as usize;
        if self.brk.owns(addr) {
            return self.brk.usable_size(ptr);
        }
        match self.mapped.len_of(addr) {
            Err(Fault::DoubleFree { addr }) => Err(Fault::InvalidPointer {
                addr,
                why: WhyInvalid::FreedBlock,
            }),
            result => result,
        }
    }

    /// Small to small: phase 2's realloc (in place when it can). Large to large:
    /// `mremap`. Across the threshold: a move, into a mapping or out of one, unless
    /// the brk heap can keep a block growing past the threshold within the memory it
    /// holds (see [`MmapHeap::realloc_to_large`]).
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let addr = ptr.as_ptr() as usize;
        match (self.brk.owns(addr), self.is_large(size)) {
            (true, false) => self.brk.realloc(ptr, size),
            (true, true) => self.realloc_to_large(ptr, size),
            (false, true) => self.mapped.resize(addr, size),
            (false, false) => self.move_to_brk(addr, size),
        }
    }

    fn locate(&self, addr: usize) -> Location {
        match self.brk.locate(addr) {
            Location::Outside(_) => match self.mapped.locate(addr) {
                Some((index, offset)) => Location::Mapping { index, offset },
                None => Location::Outside(addr),
            },
            location => location,
        }
    }

    /// The brk heap's blocks in address order, then `[MMAP #n len USED]` for each
    /// mapping in the order they were made.
    fn dump_blocks(&self, out: &mut Out) {
        self.brk.dump_blocks(out);
        self.mapped.dump(out);
    }

    /// Mapped blocks count as used blocks. Fragmentation is the brk heap's: a mapping
    /// has no free space inside to fragment.
    fn stats(&self) -> Stats {
        let (blocks, bytes) = self.mapped.totals();
        let brk = self.brk.stats();
        Stats {
            used_blocks: brk.used_blocks + blocks,
            used_bytes: brk.used_bytes + bytes,
            ..brk
        }
    }

    /// In debug mode, freed mappings stay reserved without access for a while (see
    /// [`Mappings::reserve_freed`]), so a write into one faults.
    fn enter_debug_mode(&mut self) {
        self.mapped.reserve_freed();
    }

    /// The brk heap's figures, and the mappings as glibc's `hblks` and `hblkhd`.
    fn mallinfo(&self) -> MallInfo {
        let (mapped_blocks, mapped_bytes) = self.mapped.totals();
        MallInfo {
            mapped_blocks,
            mapped_bytes,
            ..self.brk.mallinfo()
        }
    }

    /// Only the brk heap has anything to give back: a freed mapping is unmapped at once.
    fn trim(&mut self, pad: usize) -> bool {
        self.brk.trim(pad)
    }

    /// Phase 2's invariants for the brk heap, and the registry's (see
    /// [`Mappings::check`]).
    fn check(&self) -> Result<(), Fault> {
        self.brk.check()?;
        self.mapped.check()
    }

    /// `M_MMAP_THRESHOLD`: any size from 0 (every block mapped) up; a negative value is
    /// refused. `M_TRIM_THRESHOLD` goes to the brk heap. Either one fixes the mmap
    /// threshold where it is (as in glibc). Anything else: 0, not honoured.
    fn set_option(&mut self, param: i32, value: i32) -> bool {
        match param {
            M_MMAP_THRESHOLD => match usize::try_from(value) {
                Ok(threshold) => {
                    self.mmap_threshold = threshold;
                    self.mmap_threshold_fixed = true;
                    true
                }
                Err(_) => false,
            },
            M_TRIM_THRESHOLD => {
                self.mmap_threshold_fixed = true;
                self.brk.set_option(param, value)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heap_replay::{Profile, Replay, script};
    use preload_kit::os::page_size;

    fn heap() -> MmapHeap {
        MmapHeap::with_growth(&Config::DEFAULT, Growth::MmapOnly)
    }

    /// A heap whose threshold the user set at the default: every large block is
    /// mapped, however much room the brk heap holds (a unit test's region, mapped, has
    /// megabytes).
    fn mapping_heap() -> MmapHeap {
        let config = Config {
            mmap_threshold: Some(DEFAULT_MMAP_THRESHOLD),
            ..Config::DEFAULT
        };
        MmapHeap::with_growth(&config, Growth::MmapOnly)
    }

    fn addr(p: NonNull<u8>) -> usize {
        p.as_ptr() as usize
    }

    fn fill(p: NonNull<u8>, size: usize, byte: u8) {
        // SAFETY: callers pass a live block of at least `size` bytes.
        unsafe { p.as_ptr().write_bytes(byte, size) }
    }

    fn holds(p: NonNull<u8>, size: usize, byte: u8) -> bool {
        // SAFETY: callers pass a live block of at least `size` bytes.
        unsafe { core::slice::from_raw_parts(p.as_ptr(), size) }
            .iter()
            .all(|&b| b == byte)
    }

    #[test]
    fn large_blocks_get_mappings_and_small_ones_the_brk_heap() {
        let mut heap = mapping_heap();
        let small = heap.alloc(100, MIN_ALIGN).unwrap();
        let below = heap.alloc(DEFAULT_MMAP_THRESHOLD - 1, MIN_ALIGN).unwrap();
        let large = heap.alloc(DEFAULT_MMAP_THRESHOLD, MIN_ALIGN).unwrap();
        assert!(heap.brk.owns(addr(small)) && heap.brk.owns(addr(below)));
        assert!(!heap.brk.owns(addr(large)));
        assert_eq!(
            heap.locate(addr(large) + 16),
            Location::Mapping {
                index: 1,
                offset: 16
            }
        );
        assert_eq!(heap.usable_size(large), Ok(DEFAULT_MMAP_THRESHOLD));
        let stats = heap.stats();
        assert_eq!(stats.used_blocks, 3);
        heap.check().unwrap();
        heap.free(large).unwrap();
        assert_eq!(heap.stats().used_blocks, 2);
        assert_eq!(
            heap.free(large),
            Err(Fault::DoubleFree { addr: addr(large) })
        );
        assert_eq!(
            heap.usable_size(large),
            Err(Fault::InvalidPointer {
                addr: addr(large),
                why: WhyInvalid::FreedBlock
            })
        );
        heap.free(small).unwrap();
        heap.free(below).unwrap();
        heap.check().unwrap();
    }

    #[test]
    fn calloc_of_a_large_block_is_zero_without_clearing() {
        let mut heap = heap();
        let p = heap.alloc_zeroed(1 << 20).unwrap();
        assert!(!heap.brk.owns(addr(p)));
        assert!(holds(p, 1 << 20, 0));
        heap.free(p).unwrap();
    }

    #[test]
    fn realloc_moves_across_the_threshold_and_remaps_above_it() {
        let mut heap = mapping_heap();
        let p = heap.alloc(1000, MIN_ALIGN).unwrap();
        fill(p, 1000, 1);
        let up = heap.realloc(p, 200_000).unwrap().unwrap();
        assert!(!heap.brk.owns(addr(up)), "grew into a mapping");
        assert!(holds(up, 1000, 1));
        assert_eq!(heap.free(p), Err(Fault::DoubleFree { addr: addr(p) }));
        fill(up, 200_000, 2);
        let bigger = heap.realloc(up, 3 << 20).unwrap().unwrap();
        assert!(!heap.brk.owns(addr(bigger)));
        assert!(holds(bigger, 200_000, 2));
        assert_eq!(heap.usable_size(bigger), Ok(3 << 20));
        let down = heap.realloc(bigger, 5000).unwrap().unwrap();
        assert!(heap.brk.owns(addr(down)), "shrank into the brk heap");
        assert!(holds(down, 5000, 2));
        assert!(heap.free(bigger).is_err(), "the mapping is gone");
        assert_eq!(heap.stats().used_blocks, 1);
        heap.free(down).unwrap();
        heap.check().unwrap();
        assert_eq!(heap.stats(), Stats::default());
    }

    /// With the threshold not the user's, a large block comes from memory the brk
    /// heap holds when some fits (here the room of its first region, mapped, 4 MiB),
    /// and a block growing past the threshold stays in place; a block the room cannot
    /// hold is mapped.
    #[test]
    fn large_blocks_take_the_room_the_brk_heap_holds_before_a_mapping() {
        let mut heap = heap();
        let small = heap.alloc(1000, MIN_ALIGN).unwrap();
        fill(small, 1000, 1);
        let large = heap.alloc(DEFAULT_MMAP_THRESHOLD, MIN_ALIGN).unwrap();
        assert!(heap.brk.owns(addr(large)), "from the room");
        heap.free(large).unwrap();
        let grown = heap.realloc(small, 1 << 20).unwrap().unwrap();
        assert_eq!(grown, small, "grown in place into the room");
        assert!(holds(grown, 1000, 1));
        let zeroed = heap.alloc_zeroed(DEFAULT_MMAP_THRESHOLD).unwrap();
        assert!(heap.brk.owns(addr(zeroed)));
        assert!(holds(zeroed, DEFAULT_MMAP_THRESHOLD, 0));
        let huge = heap.alloc(8 << 20, MIN_ALIGN).unwrap();
        assert!(!heap.brk.owns(addr(huge)), "more than the room: mapped");
        let moved = heap.realloc(grown, 16 << 20).unwrap().unwrap();
        assert!(!heap.brk.owns(addr(moved)), "more than the room: mapped");
        assert!(holds(moved, 1000, 1));
        for block in [zeroed, huge, moved] {
            heap.free(block).unwrap();
        }
        heap.check().unwrap();
        assert_eq!(heap.stats().used_blocks, 0);
    }

    #[test]
    fn realloc_of_a_freed_block_is_a_double_free_on_either_side() {
        let mut heap = heap();
        let small = heap.alloc(100, MIN_ALIGN).unwrap();
        let _guard = heap.alloc(100, MIN_ALIGN).unwrap();
        let large = heap.alloc(200_000, MIN_ALIGN).unwrap();
        heap.free(small).unwrap();
        heap.free(large).unwrap();
        for size in [10, 300_000] {
            assert_eq!(
                heap.realloc(small, size),
                Err(Fault::DoubleFree { addr: addr(small) })
            );
            assert_eq!(
                heap.realloc(large, size),
                Err(Fault::DoubleFree { addr: addr(large) })
            );
        }
        heap.check().unwrap();
    }

    #[test]
    fn the_threshold_follows_the_environment_and_mallopt() {
        let config = Config {
            mmap_threshold: Some(4096),
            ..Config::DEFAULT
        };
        let mut heap: MmapHeap = MmapHeap::with_growth(&config, Growth::MmapOnly);
        let p = heap.alloc(5000, MIN_ALIGN).unwrap();
        assert!(!heap.brk.owns(addr(p)));
        assert!(heap.set_option(M_MMAP_THRESHOLD, 1 << 20));
        let q = heap.alloc(500_000, MIN_ALIGN).unwrap();
        assert!(heap.brk.owns(addr(q)));
        assert!(heap.set_option(M_MMAP_THRESHOLD, 0));
        let r = heap.alloc(1, MIN_ALIGN).unwrap();
        assert!(!heap.brk.owns(addr(r)), "threshold 0: everything is mapped");
        assert_eq!(heap.usable_size(r), Ok(page_size()));
        assert!(!heap.set_option(M_MMAP_THRESHOLD, -1));
        assert!(heap.set_option(M_TRIM_THRESHOLD, 0));
        assert!(!heap.set_option(-2, 0), "M_TOP_PAD is not supported");
        assert!(!heap.set_option(12345, 0));
        for block in [p, q, r] {
            heap.free(block).unwrap();
        }
        heap.check().unwrap();
    }

    #[test]
    fn large_aligned_blocks_are_aligned() {
        let mut heap = heap();
        // All live at once: a free would raise the threshold above the next request.
        let blocks = [32, 4096, 1 << 16, 1 << 20].map(|align| {
            let p = heap.alloc(300_000, align).unwrap();
            assert_eq!(addr(p) % align, 0);
            assert!(!heap.brk.owns(addr(p)));
            fill(p, 300_000, 3);
            p
        });
        for p in blocks {
            heap.free(p).unwrap();
        }
        heap.check().unwrap();
    }

    /// glibc's dynamic threshold: freeing a mapped block raises the threshold to its
    /// length, so the next block of that size comes from the brk heap; a block above
    /// 32 MiB leaves it where it is, and a threshold the user set never moves.
    #[test]
    fn freeing_a_mapped_block_raises_the_threshold_unless_the_user_set_it() {
        let mut heap = heap();
        let p = heap.alloc(5_000_000, MIN_ALIGN).unwrap();
        assert!(!heap.brk.owns(addr(p)));
        heap.free(p).unwrap();
        let raised = heap.mmap_threshold();
        assert_eq!(raised, 5_000_000_usize.next_multiple_of(page_size()) + 1);
        let q = heap.alloc(5_000_000, MIN_ALIGN).unwrap();
        assert!(heap.brk.owns(addr(q)), "the same size is now a brk block");
        heap.free(q).unwrap();
        // A whole number of pages: the mapping is exactly the request, and the same
        // request still goes to the heap afterwards.
        let p = heap.alloc(6 << 20, MIN_ALIGN).unwrap();
        heap.free(p).unwrap();
        let q = heap.alloc(6 << 20, MIN_ALIGN).unwrap();
        assert!(heap.brk.owns(addr(q)), "6 MiB again is a brk block");
        heap.free(q).unwrap();
        let raised = heap.mmap_threshold();
        let huge = heap.alloc(40 << 20, MIN_ALIGN).unwrap();
        heap.free(huge).unwrap();
        assert_eq!(heap.mmap_threshold(), raised, "40 MiB is above the cap");
        heap.check().unwrap();

        for config in [
            Config {
                mmap_threshold: Some(DEFAULT_MMAP_THRESHOLD),
                ..Config::DEFAULT
            },
            Config {
                trim_threshold: Some(1 << 20),
                ..Config::DEFAULT
            },
        ] {
            let mut fixed: MmapHeap = MmapHeap::with_growth(&config, Growth::MmapOnly);
            let p = fixed.alloc(5_000_000, MIN_ALIGN).unwrap();
            fixed.free(p).unwrap();
            assert_eq!(fixed.mmap_threshold(), DEFAULT_MMAP_THRESHOLD);
        }
        let mut set = heap_with_mallopt();
        let p = set.alloc(5_000_000, MIN_ALIGN).unwrap();
        set.free(p).unwrap();
        assert_eq!(set.mmap_threshold(), DEFAULT_MMAP_THRESHOLD);
    }

    fn heap_with_mallopt() -> MmapHeap {
        let mut heap = heap();
        assert!(heap.set_option(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD as i32));
        heap
    }

    #[test]
    fn pointers_into_mapped_blocks_are_invalid_not_followed() {
        let mut heap = heap();
        let p = heap.alloc(200_000, MIN_ALIGN).unwrap();
        let inside = NonNull::new(p.as_ptr().wrapping_add(100_000)).unwrap();
        assert_eq!(
            heap.free(inside),
            Err(Fault::InvalidPointer {
                addr: addr(inside),
                why: WhyInvalid::InsideAMapping
            })
        );
        assert!(heap.realloc(inside, 10).is_err());
        assert!(heap.usable_size(inside).is_err());
        heap.free(p).unwrap();
    }

    #[test]
    fn the_dump_lists_mappings_after_the_brk_blocks() {
        let mut heap = mapping_heap();
        let _a = heap.alloc(100, MIN_ALIGN).unwrap();
        let _b = heap.alloc(256 * 1024, MIN_ALIGN).unwrap();
        let text = crate::test_support::printed(|out| heap.dump_blocks(out));
        assert_eq!(text, "[BLOCK 0x8 112 USED]\n[MMAP #1 262144 USED]\n");
        assert_eq!(heap.stats().used_bytes, 112 + 262_144);
    }

    /// A heap whose threshold is low (20 000 bytes), so that many blocks of a
    /// [`Profile::LARGE`] workload are mapped, and `realloc` moves blocks across it.
    fn low_threshold_heap() -> MmapHeap {
        let config = Config {
            mmap_threshold: Some(20_000),
            ..Config::DEFAULT
        };
        MmapHeap::with_growth(&config, Growth::MmapOnly)
    }

    /// A seeded workload across the threshold, replayed by `heap_replay`: contents
    /// survive every realloc (in place, by `mremap`, or across the threshold), and the
    /// check passes every 50 actions. Freeing everything leaves nothing.
    #[test]
    fn seeded_workload_across_the_threshold() {
        let mut replay = Replay::new(low_threshold_heap()).check_every(50);
        replay.run(&script(3, 6000, &Profile::LARGE)).unwrap();
        replay.free_all().unwrap();
        assert_eq!(replay.heap().stats(), Stats::default());
    }

    /// Random scripts across the threshold, shrunk to a minimal one on failure
    /// (`PROPTEST_CASES=N` runs more than the bounded default).
    #[test]
    fn fuzzed_scripts_across_the_threshold() {
        heap_replay::fuzz(low_threshold_heap, &Profile::LARGE, 64);
    }
}
