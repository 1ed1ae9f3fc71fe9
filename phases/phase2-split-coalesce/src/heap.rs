//! The phase-2 heap: phase 1's arena and first fit, with splitting, coalescing and
//! memory given back at the top.
//!
//! - `alloc` (fast path: `alloc_block`) takes the first free block that is big enough
//!   and splits off the rest when the rest can be a block of its own (`take`). `grow`
//!   (slow path) carves a new block from the top of the heap when nothing fits. The
//!   free list keeps a bound on its largest block, so a search that cannot succeed is
//!   skipped (see [`crate::free_list`]).
//! - `free` (`release`) merges the block with its free neighbours, found in O(1)
//!   through the boundary tags (see [`crate::block`]). If the merged block ends at the
//!   top of the heap it is not listed at all: it goes back into the arena's uncarved
//!   room, and when that room exceeds the trim threshold the break moves down.
//! - `realloc` resizes in place when it can: shrinking splits the tail off, growing
//!   takes in a free next block or the top of the heap. Only otherwise does it move.
//!
//! Merging never crosses a region boundary: the first block of a region has no block
//! before it, and a block that ends at its region's top has none after it.

use core::fmt::Write as _;
use core::ptr::NonNull;

use preload_kit::arena::{Arena, Growth, Region};
use preload_kit::{
    Config, Fault, Heap, Location, MIN_ALIGN, MallInfo, Out, Stats, Totals, WhyInvalid, os,
};

use crate::block::{
    BLOCK_ALIGN, Block, FIRST_BLOCK_OFFSET, HEADER_SIZE, MAX_BLOCK_SIZE, MIN_BLOCK, block_size_for,
    is_block_address,
};
use crate::free_list::{FreeIndex, FreeList};

/// Free memory at the top of the heap beyond this many bytes goes back to the OS:
/// glibc's default `M_TRIM_THRESHOLD`. `MALLOC_TRIM_THRESHOLD_` and `mallopt` change it.
pub const DEFAULT_TRIM_THRESHOLD: usize = 128 * 1024;

/// How high the trim threshold may climb by itself (see [`SplitCoalesceHeap::grow`]):
/// glibc lets its dynamic thresholds reach 32 MiB too.
pub const MAX_DYNAMIC_TRIM_THRESHOLD: usize = 32 * 1024 * 1024;

/// Before the heap carves past the page its top is in (into memory that may never
/// have been touched), it merges the quick blocks that its index merges first (phase
/// 4: the fast lists) if the quick lists hold at least a sixteenth of its blocks'
/// bytes (see [`SplitCoalesceHeap::grow`]).
pub const QUICK_SHARE_TO_MERGE: usize = 16;

/// Added to [`SplitCoalesceHeap`]'s `last_freed_end` (a block address: [`HEADER_SIZE`]
/// below a 16-aligned payload, so its lowest bit is clear) when the program's last
/// `free` kept its block in a quick list.
const LAST_FREED_KEPT: usize = 1;

/// The smallest leftover phase 2 splits off a free block it hands out: twice
/// [`MIN_BLOCK`]. A 32-byte leftover serves only requests of up to 24 bytes, and on one
/// first-fit list every later search steps over it: with them, `bench_alloc --small`
/// took 1.3x phase 2's time (valgrind --tool=cachegrind: 104.3 M instructions for
/// 200 000 blocks, against 90.0 M with this). Phase 4, whose bins never step over a
/// block too small, splits down to [`MIN_BLOCK`] (see
/// [`SplitCoalesceHeap::set_min_leftover`]).
pub const MIN_LEFTOVER: usize = 2 * MIN_BLOCK;

/// `mallopt`'s parameter number for the trim threshold (glibc's `M_TRIM_THRESHOLD`).
pub const M_TRIM_THRESHOLD: i32 = -1;

/// The heap, generic over how it finds free blocks (see [`FreeIndex`]): phase 2 uses
/// one [`FreeList`]; a later phase can bring another index and keep everything here.
pub struct SplitCoalesceHeap<L: FreeIndex = FreeList> {
    arena: Arena,
    free_list: L,
    /// See [`DEFAULT_TRIM_THRESHOLD`]; `usize::MAX` never trims. At least
    /// `base_trim_threshold`: more once swings have doubled it (see
    /// [`SplitCoalesceHeap::grow`]).
    trim_threshold: usize,
    /// The trim threshold before any doubling: the default, the user's, or what phase 3
    /// raised it to with its mmap threshold. Room at the top between this and
    /// `trim_threshold` is kept only for the heap's swings (see
    /// [`SplitCoalesceHeap::give_back_swing_room`]).
    base_trim_threshold: usize,
    /// How far a swing may double the trim threshold: [`MAX_DYNAMIC_TRIM_THRESHOLD`]
    /// in phase 2 (see [`SplitCoalesceHeap::set_doubling_limit`]).
    doubling_limit: usize,
    /// Set by `MALLOC_TRIM_THRESHOLD_` or `mallopt`: then the threshold never moves.
    trim_threshold_fixed: bool,
    /// How far the room at the top may exceed the trim threshold before a trim: 0 in
    /// phase 2 (see [`SplitCoalesceHeap::set_trim_slack`]).
    trim_slack: usize,
    /// Only a free of a block larger than this looks at the top for a trim: 0 in
    /// phase 2 (see [`SplitCoalesceHeap::set_trim_free_above`]).
    trim_free_above: usize,
    /// A free block handed out for a smaller request is split only if at least this
    /// much is left: [`MIN_LEFTOVER`] in phase 2 (see
    /// [`SplitCoalesceHeap::set_min_leftover`]).
    min_leftover: usize,
    /// The last thing that happened at the top was a trim: memory went back to the OS
    /// and has not been asked for again.
    just_trimmed: bool,
    /// Where the block the program freed last ended (0 before the first `free`). A
    /// block that starts there and follows a free block is not deferred (see
    /// [`FreeIndex::defer`]) but merged at once: the program is freeing in address
    /// order, as it allocated, and the free block it joins was touched by the last
    /// `free`. Kept quick, it would cut that free run in two, to be merged later in
    /// bulk at a cache miss each (`bench_alloc xmalloc`: see chapter 4). With
    /// [`LAST_FREED_KEPT`] added when that `free` kept the block in a quick list.
    last_freed_end: usize,
    /// The block the program freed last, when that `free` kept it in a quick list (see
    /// [`SplitCoalesceHeap::take_back_last_kept`]). Meaningful only while
    /// `last_freed_end` carries [`LAST_FREED_KEPT`], and even then the block may have
    /// been handed out since: it is checked before use.
    last_kept: usize,
    /// Running totals, so `malloc_stats` need not walk the heap. `check` verifies them.
    /// Quick blocks count as used here (see [`SplitCoalesceHeap::reported_totals`]).
    totals: Totals,
}

impl<L: FreeIndex> SplitCoalesceHeap<L> {
    /// An empty heap whose arena grows as `growth` says: `BrkOnly` when preloaded as
    /// phase 2, `BrkThenMmap` inside phase 3, `MmapOnly` in unit tests (whose process
    /// has another allocator moving the break).
    pub fn with_growth(config: &Config, growth: Growth) -> Self {
        SplitCoalesceHeap {
            arena: Arena::new(growth),
            free_list: L::new(),
            trim_threshold: config.trim_threshold.unwrap_or(DEFAULT_TRIM_THRESHOLD),
            base_trim_threshold: config.trim_threshold.unwrap_or(DEFAULT_TRIM_THRESHOLD),
            trim_threshold_fixed: config.trim_threshold.is_some(),
            doubling_limit: MAX_DYNAMIC_TRIM_THRESHOLD,
            trim_slack: 0,
            trim_free_above: 0,
            min_leftover: MIN_LEFTOVER,
            just_trimmed: false,
            last_freed_end: 0,
            last_kept: 0,
            totals: Totals::ZERO,
        }
    }

    /// Raises the trim threshold to at least `bytes`, unless the user set it. Phase 3
    /// calls this when it raises its mmap threshold: the large blocks the heap now
    /// serves would otherwise be given back at every free and faulted in again at the
    /// next malloc (glibc keeps its trim threshold at twice its mmap threshold).
    pub fn raise_trim_threshold(&mut self, bytes: usize) {
        if !self.trim_threshold_fixed {
            self.base_trim_threshold = self.base_trim_threshold.max(bytes);
            self.trim_threshold = self.trim_threshold.max(bytes);
        }
    }

    /// A swing doubles the trim threshold only up to `bytes` (or leaves it where it is,
    /// if something else raised it further). Phase 4 sets a limit: the room a large
    /// threshold keeps for swings of megabytes sits idle at the peaks in between.
    pub fn set_doubling_limit(&mut self, bytes: usize) {
        self.doubling_limit = bytes.min(MAX_DYNAMIC_TRIM_THRESHOLD);
    }

    /// Gives back the room at the top of the heap beyond the base trim threshold: what
    /// the doubled threshold kept for the heap's swings (see [`SplitCoalesceHeap::grow`]).
    /// The threshold stays doubled, so the next swing keeps room again. Phase 3 calls
    /// this before it maps a large block: the program's memory is then growing outside
    /// the heap, and room kept idle at the top would only add to that peak (on the
    /// recorded git trace, a few hundred KiB at the peak of its large blocks).
    pub fn give_back_swing_room(&mut self) {
        self.give_back_room_beyond(self.base_trim_threshold);
    }

    /// Gives back the room at the top of the heap beyond the trim threshold the heap
    /// started with (the default, or the user's): also what phase 3 kept there when it
    /// raised the threshold for the large blocks the heap now serves. Phase 3 calls this
    /// when it must map a large block all the same (the heap holds no room for it): the
    /// room kept would sit idle beside the mapping.
    pub fn give_back_room(&mut self) {
        let initial = if self.trim_threshold_fixed {
            self.base_trim_threshold
        } else {
            DEFAULT_TRIM_THRESHOLD
        };
        self.give_back_room_beyond(initial);
    }

    fn give_back_room_beyond(&mut self, keep: usize) {
        if self.arena.newest().is_some_and(|top| top.room() > keep) {
            self.arena.trim(keep);
        }
    }

    /// [`Heap::alloc`] (of 16-aligned memory) from what the heap already holds: a free
    /// block that fits, or the room at the top of its newest region. `None` when it
    /// would have to ask the OS for more. Phase 3 asks this first for a block at or
    /// above its mmap threshold, as glibc's `malloc` serves such a request from its bins
    /// and top and maps only when the heap would have to grow: a mapping beside idle
    /// free memory adds to the peak.
    pub fn alloc_without_growing(&mut self, size: usize) -> Option<NonNull<u8>> {
        let size = block_size_for(size)?;
        let block = match self.free_list.find_fit(size) {
            Some(block) => self.take(block, size),
            None if self.room_holds(size) => self.grow(size)?,
            None => return None,
        };
        Some(block.payload())
    }

    /// [`Heap::realloc`] within what the heap already holds: in place (shrinking, or
    /// growing into a free next block or the room at the top), else moved into a block
    /// [`SplitCoalesceHeap::alloc_without_growing`] finds. `Ok(None)` when it would
    /// have to ask the OS for more; a fault as `realloc` reports it.
    pub fn realloc_without_growing(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        self.realloc_within(ptr, size, false)
    }

    /// Does the room at the top of the newest region (already holding blocks) hold a
    /// `size`-byte block without moving the break? (`carve`'s fast path.)
    fn room_holds(&self, size: usize) -> bool {
        self.arena.newest().is_some_and(|r| {
            r.top != r.start && r.room() >= size && r.top - r.start + size < MAX_BLOCK_SIZE
        })
    }

    /// Trim only once the room at the top exceeds the threshold by more than `bytes`
    /// (then down to the threshold, as always). With no slack, a program that frees a
    /// large heap from the top down moves the break back a page every few frees, one
    /// system call each; glibc checks for a trim only when a freed block (merged) is
    /// 64 KiB or more, which has the same effect as a slack. Phase 4 sets one.
    pub fn set_trim_slack(&mut self, bytes: usize) {
        self.trim_slack = bytes;
    }

    /// A free of a block of at most `bytes` (its size with the header) still merges
    /// into the top, but never moves the break down: the next free of a larger block
    /// that reaches the top, or `malloc_trim`, gives the room back. In glibc, freed
    /// blocks up to about 1 KiB go to its per-thread cache or fast bins and do not
    /// reach the top, so freeing many small blocks moves its break down rarely too.
    /// Phase 4 sets this.
    pub fn set_trim_free_above(&mut self, bytes: usize) {
        self.trim_free_above = bytes;
    }

    /// Split a free block handed out for a smaller request only if at least `bytes`
    /// (a multiple of 16, at least [`MIN_BLOCK`]) are left over; a smaller leftover
    /// stays with the program's block. Phase 4 sets [`MIN_BLOCK`]: a leftover is
    /// memory another request may use, and its bins find blocks without walking past
    /// the ones that are too small.
    pub fn set_min_leftover(&mut self, bytes: usize) {
        debug_assert!(bytes >= MIN_BLOCK && bytes.is_multiple_of(BLOCK_ALIGN));
        self.min_leftover = bytes.max(MIN_BLOCK);
    }

    /// The free index, for a later phase's reports (phase 4 dumps its bins).
    pub fn free_index(&self) -> &L {
        &self.free_list
    }

    /// Is `addr` inside memory this heap got from the OS (carved into blocks or not)?
    /// Cheap (regions are few): phase 3 asks it to route a pointer to this heap, whose
    /// `free` then says what is wrong with it if it is not a live block.
    pub fn owns(&self, addr: usize) -> bool {
        self.region_around(addr).is_some()
    }

    /// The region whose memory, `[start, end)`, holds `addr`.
    fn region_around(&self, addr: usize) -> Option<&Region> {
        let around = |r: &&Region| r.start <= addr && addr < r.end;
        // The newest region first, on its own: it holds nearly every block.
        match self.arena.newest() {
            Some(newest) if around(&newest) => Some(newest),
            _ => self.arena.regions().iter().rev().find(around),
        }
    }

    fn is_newest(&self, region: &Region) -> bool {
        self.arena
            .newest()
            .is_some_and(|newest| newest.start == region.start)
    }

    /// Fast path of [`Heap::alloc`]: first fit on the free list, split by
    /// [`SplitCoalesceHeap::take`]; [`SplitCoalesceHeap::grow`] when nothing fits.
    /// `size` is a block size (see [`block_size_for`]).
    fn alloc_block(&mut self, size: usize) -> Option<Block> {
        match self.free_list.find_fit(size) {
            Some(block) => Some(self.take(block, size)),
            None => self.grow(size),
        }
    }

    /// Hands out the listed free `block` for a request of `size` bytes. If at least
    /// `min_leftover` bytes are left over, they become a free block that takes
    /// `block`'s place on the list; otherwise the program gets the whole block.
    fn take(&mut self, block: Block, size: usize) -> Block {
        let rest_size = block.size() - size;
        if rest_size >= self.min_leftover {
            // SAFETY: `block` is a free block of `size + rest_size` bytes, so its last
            // `rest_size >= MIN_BLOCK` bytes start inside the heap, at a block address
            // (`size` is a multiple of 16).
            let rest = unsafe { Block::at(block.addr() + size) };
            rest.init_free(rest_size);
            self.free_list.replace_with_rest(block, rest);
            // The block before a free block is used (free neighbours merge), so
            // PREV_FREE is clear; the block after `rest` still follows a free block.
            block.init_used(size, false);
        } else {
            self.free_list.remove(block);
            self.totals.free.blocks -= 1;
            block.set_used(true);
            self.set_next_prev_free(block, false);
        }
        // Either way, `block`'s bytes move from free to used.
        self.totals.free.bytes -= block.size();
        self.totals.used.add(block.size());
        block
    }

    /// Slow path of [`Heap::alloc`]: no free block fits, so carve a new `size`-byte
    /// block from the top of the heap, moving the program break when the top is used
    /// up.
    ///
    /// Moving the break up right after trimming it down means the program's use of
    /// memory swings by more than the trim threshold: giving memory back and faulting it
    /// in again on every swing costs far more than keeping it. So the threshold doubles
    /// (up to [`MAX_DYNAMIC_TRIM_THRESHOLD`] or a later phase's limit, and only if the
    /// user did not set it).
    /// glibc has no such rule (its trim threshold moves only with its mmap threshold);
    /// phase 3 gives the doubled part's room back when it maps a large block (see
    /// [`SplitCoalesceHeap::give_back_swing_room`]).
    fn grow(&mut self, size: usize) -> Option<Block> {
        let mut moves_break = self.carving_moves_break(size);
        if self.free_list.holds_deferred() {
            // Quick blocks (see `FreeIndex::defer`) are merged before the heap asks the
            // OS for more, and those merged first before it touches a new page while
            // the quick lists hold much of the heap: merged, they may serve the
            // request, or go back to the top.
            let merged = if moves_break {
                self.merge_deferred();
                true
            } else if self.quick_blocks_outweigh_a_new_page(size) {
                self.merge_deferred_first();
                true
            } else {
                false
            };
            if merged {
                if let Some(block) = self.free_list.find_fit(size) {
                    return Some(self.take(block, size));
                }
                moves_break = self.carving_moves_break(size);
            }
        }
        let addr = self.carve(size)?;
        if moves_break {
            if self.just_trimmed && !self.trim_threshold_fixed {
                let doubled = self.trim_threshold.saturating_mul(2);
                self.trim_threshold = doubled.min(self.doubling_limit).max(self.trim_threshold);
            }
            self.just_trimmed = false;
        }
        // SAFETY: `carve` just carved `size >= MIN_BLOCK` bytes at `addr`, a block
        // address.
        let block = unsafe { Block::at(addr) };
        // The block below the top is never free (it would have gone back into the
        // top), and the first block of a new region has nothing before it.
        block.init_used(size, false);
        self.totals.used.add(size);
        Some(block)
    }

    /// Whether carving `size` bytes from the top needs more from the OS: the newest
    /// region's room does not hold them (or there is no region yet).
    fn carving_moves_break(&self, size: usize) -> bool {
        self.arena.newest().is_none_or(|top| top.room() < size)
    }

    /// Whether the quick lists hold at least a [`QUICK_SHARE_TO_MERGE`]th of the heap's
    /// blocks' bytes while carving `size` bytes from the top would cross into the page
    /// above the one the top is in. The lists are added up only then: once a page, not
    /// once a block. Without this, a program that frees many small blocks and then
    /// asks for other sizes grows the heap beside free memory that only its frees'
    /// sizes could use (a generated binary-tree trace: chapter 4, "Quick blocks and
    /// the page above").
    fn quick_blocks_outweigh_a_new_page(&self, size: usize) -> bool {
        let Some(top) = self.arena.newest() else {
            return false;
        };
        if top.top + size <= top.top.next_multiple_of(os::page_size()) {
            return false;
        }
        let blocks = self.totals.used.bytes + self.totals.free.bytes;
        self.free_list
            .deferred_totals()
            .bytes
            .saturating_mul(QUICK_SHARE_TO_MERGE)
            >= blocks
    }

    /// Carves `size` bytes for a block from the top of the heap and returns their
    /// address. A region's first block starts [`FIRST_BLOCK_OFFSET`] bytes into it (so
    /// that payloads are 16-aligned), and no region's carved part may reach
    /// [`MAX_BLOCK_SIZE`], so that no block, merged or grown, can outgrow its header's
    /// size field. `None` when the OS gives no more memory or the bound is reached.
    fn carve(&mut self, size: usize) -> Option<usize> {
        // Fast path: the newest region already holds blocks and has the room.
        let fits = |r: &Region| {
            r.top != r.start && r.room() >= size && r.top - r.start + size < MAX_BLOCK_SIZE
        };
        if self.arena.newest().is_some_and(fits) {
            return Some(self.arena.carve(size)?.as_ptr() as usize);
        }
        // The room a new region needs; in a region already carved, whose top is 8 past
        // a multiple of 16 and whose end a multiple of 16, `size` bytes of room (a
        // multiple of 16) mean as many as this.
        if !self.arena.make_room(size.checked_add(FIRST_BLOCK_OFFSET)?) {
            return None;
        }
        let (start, top) = self.arena.newest().map(|r| (r.start, r.top))?;
        if top - start + FIRST_BLOCK_OFFSET + size >= MAX_BLOCK_SIZE {
            return None;
        }
        if top == start {
            self.arena.carve(FIRST_BLOCK_OFFSET)?;
        }
        Some(self.arena.carve(size)?.as_ptr() as usize)
    }

    /// For `align > 16`: over-allocates by enough to find an aligned payload with a
    /// gap of 0 or at least [`MIN_BLOCK`] bytes before it, then frees the gap and the
    /// tail as blocks of their own. No block ever has two headers.
    fn alloc_aligned(&mut self, size: usize, align: usize) -> Option<Block> {
        // `padding_before` is always less than `align + MIN_BLOCK`.
        let padded = size.checked_add(align)?.checked_add(MIN_BLOCK)?;
        if padded >= MAX_BLOCK_SIZE {
            return None;
        }
        let mut block = self.alloc_block(padded)?;
        let gap = padding_before(block.addr(), align);
        if gap > 0 {
            let aligned = self.split(block, gap);
            self.release_quietly(block);
            block = aligned;
        }
        if block.size() - size >= MIN_BLOCK {
            let rest = self.split(block, size);
            self.release_quietly(rest);
        }
        Some(block)
    }

    /// Cuts the used `block` in two used blocks, the first `size` bytes long, and
    /// returns the second (for the caller to free).
    fn split(&mut self, block: Block, size: usize) -> Block {
        debug_assert!(size >= MIN_BLOCK && block.size() - size >= MIN_BLOCK);
        let rest_size = block.size() - size;
        // SAFETY: `block` spans `size + rest_size` heap bytes, so `rest` starts at a
        // block address inside it (`size` is a multiple of 16) with
        // `rest_size >= MIN_BLOCK` bytes after it.
        let rest = unsafe { Block::at(block.addr() + size) };
        rest.init_used(rest_size, false);
        block.init_used(size, block.prev_is_free());
        // One used block becomes two, with the same bytes.
        self.totals.used.blocks += 1;
        rest
    }

    /// Frees the used `block` of `region`: merges it with its free neighbours, then
    /// either gives the result back to the top of the heap (if it ends at the newest
    /// region's top) or puts it on the free list.
    ///
    /// Both neighbours are checked before anything changes, so a damaged one is
    /// reported with the heap as it was. `region` must be current (taken after the
    /// last change to the arena).
    fn release(&mut self, block: Block, region: &Region) -> Result<(), Fault> {
        let prev = if block.prev_is_free() {
            Some(prev_neighbour(block, region)?)
        } else {
            None
        };
        let next = next_neighbour(block, region)?;

        let freed = block.size();
        self.totals.used.remove(freed);
        // From here on `block`'s own header is stale (inside a merged block, or above
        // the top): it says "free", so that freeing it again is a double free.
        block.set_used(false);
        let next_free = next.filter(|next| next.is_free());
        let start = prev.unwrap_or(block);
        let prev_size = prev.map_or(0, Block::size);
        let size = prev_size + freed + next_free.map_or(0, Block::size);

        if next.is_none() && self.is_newest(region) {
            // The merged block ends at the top of the heap: it goes back to the arena.
            if let Some(prev) = prev {
                self.free_list.remove(prev);
                self.totals.free.remove(prev.size());
            }
            self.arena.uncarve(start.addr());
            if freed > self.trim_free_above {
                self.trim_top();
            }
            return Ok(());
        }

        start.init_free(size);
        // Where the merged block goes on the list: where a listed neighbour already is.
        match (prev, next_free) {
            (None, None) => {
                self.free_list.insert(block);
                self.totals.free.blocks += 1;
            }
            (None, Some(next)) => self.free_list.replace(next, block),
            (Some(prev), None) => self.free_list.grew(prev, prev_size),
            (Some(prev), Some(next)) => {
                self.free_list.remove(next);
                self.free_list.grew(prev, prev_size);
                self.totals.free.blocks -= 1;
            }
        }
        // The merged free block holds the freed bytes as well.
        self.totals.free.bytes += freed;
        if let Some(next) = next
            && next.is_used()
        {
            next.set_prev_free(true);
        }
        Ok(())
    }

    /// [`SplitCoalesceHeap::release`] for the allocation paths, which cannot report a
    /// fault: if a neighbour is damaged, `block` stays used (owned by nobody) and the
    /// next `free` or heap check near it reports the damage.
    fn release_quietly(&mut self, block: Block) {
        if let Some(region) = self.arena.region_of(block.addr()).copied() {
            let _ = self.release(block, &region);
        }
    }

    /// Keeps the used `block`, which the program is freeing, unmerged in the index's
    /// quick lists if the index wants it (see [`FreeIndex::defer`]). No neighbour is
    /// read or written (as in glibc's per-thread cache): an overflow out of `block`
    /// into the next header is found when that block is freed or merged, or by the
    /// debug mode, not here. Reading the neighbour's header cost `bench_alloc --small`
    /// a tenth of its time, a cache miss on most frees.
    fn defer(&mut self, block: Block) -> bool {
        if !self.free_list.defer(block) {
            return false;
        }
        // The running totals still count it as used: see `FreeIndex::deferred_totals`.
        block.set_quick(true);
        true
    }

    /// Hands out the quick block of `size` bytes that the index keeps, if it has one.
    /// A request the index wants served from merged blocks (a large one: see
    /// [`FreeIndex::merge_first`]) first merges them all, and gets `None`.
    ///
    /// Inlined into `alloc`: as a call, saving and restoring registers cost more than
    /// the few instructions of a look at an empty list, on every request (chapter 4,
    /// "The rest of the last split").
    #[inline(always)]
    fn take_deferred(&mut self, size: usize) -> Option<Block> {
        if self.free_list.merge_first(size) {
            self.merge_deferred_first();
            return None;
        }
        let block = self.free_list.take_deferred(size)?;
        block.set_quick(false);
        Some(block)
    }

    /// The blocks' totals, quick blocks counted as free: the running totals, which
    /// count them as used so that neither `free` nor `malloc` of one touches them
    /// (four additions fewer on each: chapter 4, "The last few percent of `--small`"),
    /// with what the quick lists hold moved across.
    fn reported_totals(&self) -> Totals {
        let quick = self.free_list.deferred_totals();
        let mut totals = self.totals;
        // Wrapping: on a damaged heap the check reports the disagreement; it must not
        // stop at an overflow first.
        totals.used.bytes = totals.used.bytes.wrapping_sub(quick.bytes);
        totals.used.blocks = totals.used.blocks.wrapping_sub(quick.blocks);
        totals.free.bytes = totals.free.bytes.wrapping_add(quick.bytes);
        totals.free.blocks = totals.free.blocks.wrapping_add(quick.blocks);
        totals
    }

    /// Merges every quick block with its free neighbours, as `free` does without a
    /// quick list: before the break moves up, and before `malloc_trim`.
    fn merge_deferred(&mut self) {
        while let Some(block) = self.free_list.take_any_deferred() {
            self.merge_quick_block(block);
        }
    }

    /// Merges the quick blocks that the index merges first (see
    /// [`FreeIndex::take_deferred_to_merge_first`]). Rare, and kept out of line so
    /// that [`SplitCoalesceHeap::take_deferred`] stays small where it is inlined.
    #[cold]
    #[inline(never)]
    fn merge_deferred_first(&mut self) {
        while let Some(block) = self.free_list.take_deferred_to_merge_first() {
            self.merge_quick_block(block);
        }
    }

    /// `free` of `block`, a used block of this heap, right after the block the program
    /// freed last, which a quick list kept: the program frees in address order, as it
    /// allocated. That block comes back out of its list and merges, if it is still the
    /// newest there (a request may have taken it since); `block` then follows a free
    /// block and merges with it, and so does the rest of the run after it. Kept, it
    /// would fence the run off from the free blocks before it, and each block after it
    /// would follow a quick block, not a free one, and be kept too, to be merged later
    /// in bulk at a cache miss each (chapter 4, "The rest of the last split").
    #[cold]
    #[inline(never)]
    fn free_after_kept(&mut self, ptr: NonNull<u8>, block: Block) -> Result<(), Fault> {
        let follows_free = self.take_back_last_kept(block);
        if !follows_free && self.defer(block) {
            self.last_freed_end = block.next_in_heap() + LAST_FREED_KEPT;
            self.last_kept = block.addr();
            return Ok(());
        }
        self.last_freed_end = block.next_in_heap();
        // Asked again rather than passed (a call that takes the region's address needs
        // a frame in `free`): merging the block before it changed nothing of `block`
        // but its PREV_FREE bit, so the answer is the same.
        let (block, region) = self.used_block_of(ptr)?;
        self.release(block, &region)
    }

    /// Takes the block the program freed last out of its quick list and merges it, if
    /// it is still there and ends where `block` starts; then whether `block` follows a
    /// free block.
    fn take_back_last_kept(&mut self, block: Block) -> bool {
        // Read the kept block's header only if it is still carved memory: if a request
        // took the block since, it may have been merged into the top and trimmed.
        let kept_addr = self.last_kept;
        let carved = self
            .arena
            .region_of(kept_addr)
            .is_some_and(|region| kept_addr < region.top);
        if !carved {
            return false;
        }
        // SAFETY: `last_kept` was a block address of this heap (the start of a block
        // freed by the program) and is below its region's top, so its header word is
        // carved memory; `take_back_newest` trusts it only if the quick
        // list of the size it reads holds this very block.
        let kept = unsafe { Block::at(kept_addr) };
        if kept.next_in_heap() != block.addr() || !self.free_list.take_back_newest(kept) {
            return false;
        }
        self.merge_quick_block(kept);
        block.prev_is_free()
    }

    /// Merges `block`, just taken off its quick list, with its free neighbours.
    fn merge_quick_block(&mut self, block: Block) {
        block.set_quick(false);
        self.release_quietly(block);
    }

    /// Records in the header of the block after `block` (if there is one in its region
    /// and its header is intact) whether `block` is free.
    fn set_next_prev_free(&self, block: Block, prev_free: bool) {
        let Some(region) = self.arena.region_of(block.addr()) else {
            return;
        };
        let addr = block.next_in_heap();
        if addr < region.top {
            // SAFETY: `addr` is a block address (block sizes are multiples of 16) below
            // the region's top (another block address), so its word is in the carved part.
            let next = unsafe { Block::at(addr) };
            if next.header_is_intact() {
                next.set_prev_free(prev_free);
            }
        }
    }

    /// Gives uncarved room at the top of the heap beyond the trim threshold back to
    /// the OS.
    fn trim_top(&mut self) {
        if self
            .arena
            .newest()
            .is_some_and(|top| top.room() > self.trim_threshold.saturating_add(self.trim_slack))
        {
            self.just_trimmed |= self.arena.trim(self.trim_threshold) > 0;
        }
    }

    /// Shrinks the used `block` to `size` bytes, if what is cut off can be a block: it
    /// is freed (merging with a free next block, or going back to the top).
    fn shrink(&mut self, block: Block, size: usize, region: &Region) -> Result<(), Fault> {
        if block.size() - size >= MIN_BLOCK {
            let rest = self.split(block, size);
            self.release(rest, region)?;
        }
        Ok(())
    }

    /// Grows the used `block` to at least `size` bytes without moving it: into a free
    /// next block, or into the top of the heap if `block` is the last one. False when
    /// neither is possible.
    fn grow_in_place(
        &mut self,
        block: Block,
        size: usize,
        region: &Region,
        may_grow: bool,
    ) -> Result<bool, Fault> {
        let extra = size - block.size();
        match next_neighbour(block, region)? {
            Some(next) if next.is_free() && next.size() >= extra => {
                let after = next_neighbour(next, region)?;
                self.free_list.remove(next);
                self.totals.free.remove(next.size());
                let merged = block.size() + next.size();
                // Still one used block, larger by `next`.
                self.totals.used.bytes += next.size();
                // `next`'s header is now inside the program's block: erase it, so that
                // a pointer to it is an interior pointer, not a freed block.
                next.erase();
                block.init_used(merged, block.prev_is_free());
                if let Some(after) = after {
                    after.set_prev_free(false);
                }
                self.shrink(block, size, region)?;
                Ok(true)
            }
            None if self.is_newest(region) => {
                // The bound of `carve`: no region's carved part reaches MAX_BLOCK_SIZE.
                if region.top - region.start + extra >= MAX_BLOCK_SIZE
                    || (!may_grow && region.room() < extra)
                    || !self.arena.make_room_in_place(extra)
                {
                    return Ok(false);
                }
                let Some(carved) = self.arena.carve(extra) else {
                    return Ok(false);
                };
                debug_assert_eq!(carved.as_ptr() as usize, block.next_in_heap());
                block.init_used(size, block.prev_is_free());
                self.totals.used.bytes += extra;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// [`Heap::realloc`]; with `may_grow` false, only within what the heap already
    /// holds (see [`SplitCoalesceHeap::realloc_without_growing`]).
    fn realloc_within(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        may_grow: bool,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        let (block, region) = self.used_block_of(ptr)?;
        let Some(needed) = block_size_for(size) else {
            return Ok(None);
        };
        if needed <= block.size() {
            self.shrink(block, needed, &region)?;
            return Ok(Some(ptr));
        }
        if self.grow_in_place(block, needed, &region, may_grow)? {
            return Ok(Some(ptr));
        }
        let moved = if may_grow {
            self.alloc(size, MIN_ALIGN)
        } else {
            self.alloc_without_growing(size)
        };
        let Some(moved) = moved else {
            return Ok(None);
        };
        // SAFETY: both blocks are used (distinct) and hold at least `payload_size`
        // bytes of the old block, which is smaller than the new request.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), block.payload_size())
        };
        // Through `free`, not `release`: allocating may have changed the region. Not
        // a `free` of the program's, so it leaves `last_freed_end` as it was: counted,
        // the small blocks between the buffers of `harness/traces/realloc.rep` merged
        // into the buffers' holes, and its heap grew from 2.63 to 2.89 MiB.
        let (last_freed_end, last_kept) = (self.last_freed_end, self.last_kept);
        self.free(ptr)?;
        (self.last_freed_end, self.last_kept) = (last_freed_end, last_kept);
        Ok(Some(moved))
    }

    /// Finds the used block whose payload starts at `ptr`, and its region, or says why
    /// `ptr` is not one. Reads memory only after proving it lies inside the heap, so
    /// checking a wild pointer cannot crash.
    ///
    /// A header that is intact but says "free" is a double free: a block freed before,
    /// whether it is still a free block, was merged into a neighbour (its header left
    /// behind, marked free) or went back to the top of the heap.
    fn used_block_of(&self, ptr: NonNull<u8>) -> Result<(Block, Region), Fault> {
        let addr = ptr.as_ptr() as usize;
        let invalid = |why| Fault::InvalidPointer { addr, why };
        let Some(region) = self.region_around(addr) else {
            return Err(invalid(WhyInvalid::OutsideTheHeap));
        };
        if !addr.is_multiple_of(MIN_ALIGN) {
            return Err(invalid(WhyInvalid::Misaligned));
        }
        if addr - region.start < FIRST_BLOCK_OFFSET + HEADER_SIZE {
            return Err(invalid(WhyInvalid::NotABlockStart));
        }
        // SAFETY: `addr` is 16-aligned, so `addr - 8` is a block address, and
        // `region.start < addr - 8 < addr < end`: the header word lies in the region's
        // mapped memory.
        let block = unsafe { Block::at(addr - HEADER_SIZE) };
        if !block.header_is_intact() {
            return Err(invalid(WhyInvalid::NotABlockStart));
        }
        if block.is_free() || block.is_quick() {
            return Err(Fault::DoubleFree { addr });
        }
        if block.addr() >= region.top
            || block.size() < MIN_BLOCK
            || block.size() > region.top - block.addr()
        {
            return Err(Fault::Corruption {
                addr: block.addr(),
                what: "block size runs past the heap",
            });
        }
        Ok((block, *region))
    }

    /// Every block of every region, in address order, with its region. Stops at a
    /// header that is not intact or a size that leaves the region, reporting it as
    /// `Err`.
    fn walk(
        &self,
        mut visit: impl FnMut(&Region, Block) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        for region in self.arena.regions() {
            walk_region(region, &mut visit)?;
        }
        Ok(())
    }
}

/// Where `region`'s first block starts (its top, while it holds none): one word in,
/// so that payloads are 16-aligned (see [`crate::block`]).
fn first_block(region: &Region) -> usize {
    region.start + FIRST_BLOCK_OFFSET
}

fn walk_region(
    region: &Region,
    visit: &mut impl FnMut(&Region, Block) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let mut addr = first_block(region);
    while addr < region.top {
        let block = checked_block_at(addr, region)?;
        visit(region, block)?;
        addr = block.next_in_heap();
    }
    Ok(())
}

/// The block whose header is at `addr` (a block address in `[region.start, region.top)`),
/// after checking that its header is intact and its size stays inside the region.
fn checked_block_at(addr: usize, region: &Region) -> Result<Block, Fault> {
    if region.top - addr < MIN_BLOCK {
        return Err(Fault::Corruption {
            addr,
            what: "a block runs past the top of the heap",
        });
    }
    // SAFETY: `addr` is a block address (a region's first block is one, and block
    // sizes are multiples of 16) at least MIN_BLOCK bytes below the region's top.
    let block = unsafe { Block::at(addr) };
    if !block.header_is_intact() {
        return Err(Fault::Corruption {
            addr,
            what: "block header overwritten",
        });
    }
    if block.size() < MIN_BLOCK || block.size() > region.top - addr {
        return Err(Fault::Corruption {
            addr,
            what: "block size out of range",
        });
    }
    Ok(block)
}

/// The block after `block` in `region`, its header checked; `None` when `block` ends
/// at the region's top.
fn next_neighbour(block: Block, region: &Region) -> Result<Option<Block>, Fault> {
    let addr = block.next_in_heap();
    if addr >= region.top {
        return Ok(None);
    }
    checked_block_at(addr, region).map(Some)
}

/// The free block before `block`, found through its footer (so `block.prev_is_free()`
/// must hold), and checked against its own header.
fn prev_neighbour(block: Block, region: &Region) -> Result<Block, Fault> {
    let damaged = Fault::Corruption {
        addr: block.addr(),
        what: "the footer of the free block before this one is damaged",
    };
    let room = block.addr() - first_block(region);
    if room < MIN_BLOCK {
        return Err(damaged);
    }
    let size = block.prev_footer();
    if size < MIN_BLOCK || !size.is_multiple_of(BLOCK_ALIGN) || size > room {
        return Err(damaged);
    }
    // SAFETY: `block.addr() - size` is a block address (`size` is a multiple of 16), at
    // or above the region's first block, and a whole block's size below `block`.
    let prev = unsafe { Block::at(block.addr() - size) };
    if !prev.header_is_intact() || prev.is_used() || prev.size() != size {
        return Err(damaged);
    }
    Ok(prev)
}

/// Bytes to leave before a block at `addr` so that its payload is `align`-aligned: zero,
/// or at least `MIN_BLOCK` so that the gap can be a free block of its own. Always less
/// than `align + MIN_BLOCK`.
fn padding_before(addr: usize, align: usize) -> usize {
    let payload = (addr + HEADER_SIZE).next_multiple_of(align);
    let padding = payload - HEADER_SIZE - addr;
    if padding != 0 && padding < MIN_BLOCK {
        padding + align
    } else {
        padding
    }
}

/// A hash of a block's address. Summed over a set of blocks it gives a fingerprint of
/// the set in one word, so the heap check can compare the free list with the heap
/// without allocating.
fn fingerprint(addr: usize) -> u64 {
    let x = (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

impl<L: FreeIndex> Heap for SplitCoalesceHeap<L> {
    const NAME: &'static str = "phase2-split-coalesce";
    /// `free` keeps `errno` by itself: the heap's system calls (the break, the arena's
    /// mappings) are made through [`preload_kit::os`], which leaves `errno` alone.
    const FREE_KEEPS_ERRNO: bool = true;

    fn new(config: &Config) -> Self {
        SplitCoalesceHeap::with_growth(config, Growth::BrkOnly)
    }

    /// Inlined into the layer that wraps this heap (phase 3's, phase 4's), so that a
    /// request served from a quick list crosses one call, not two: each was a
    /// prologue and an epilogue saving registers, about 5% of the instructions of
    /// `bench_alloc --small` (chapter 4, "The last few percent of `--small`").
    #[inline(always)]
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let size = block_size_for(size)?;
        let block = if align > MIN_ALIGN {
            self.alloc_aligned(size, align)?
        } else if let Some(block) = self.take_deferred(size) {
            block
        } else {
            self.alloc_block(size)?
        };
        Some(block.payload())
    }

    /// Inlined, as `alloc` above is, and for the same reason.
    #[inline(always)]
    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        let (block, region) = self.used_block_of(ptr)?;
        // (Stored after `defer`, which reads the block: a store first made the
        // compiler read the header again.)
        let follows_last = block.prev_is_free() && block.addr() == self.last_freed_end;
        if !follows_last && block.addr() + LAST_FREED_KEPT == self.last_freed_end {
            // A call in tail position, with no frame to keep: the common path needs none.
            return self.free_after_kept(ptr, block);
        }
        if !follows_last && self.defer(block) {
            self.last_freed_end = block.next_in_heap() + LAST_FREED_KEPT;
            self.last_kept = block.addr();
            return Ok(());
        }
        self.last_freed_end = block.next_in_heap();
        self.release(block, &region)
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        match self.used_block_of(ptr) {
            Ok((block, _)) => Ok(block.payload_size()),
            Err(Fault::DoubleFree { addr }) => Err(Fault::InvalidPointer {
                addr,
                why: WhyInvalid::FreedBlock,
            }),
            Err(fault) => Err(fault),
        }
    }

    /// In place when it can be: shrinking splits, growing takes in the next free block
    /// or the top of the heap. Otherwise allocate, copy, free.
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        self.realloc_within(ptr, size, true)
    }

    fn locate(&self, addr: usize) -> Location {
        match self.arena.offset_of(addr) {
            Some(offset) => Location::Heap(offset),
            None => Location::Outside(addr),
        }
    }

    fn dump_blocks(&self, out: &mut Out) {
        let result = self.walk(|_, block| {
            let state = if block.is_quick() {
                "QUICK"
            } else if block.is_used() {
                "USED"
            } else {
                "FREE"
            };
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
    /// free (the newest region's is what a trim gives back).
    fn mallinfo(&self) -> MallInfo {
        MallInfo::of_arena(&self.arena, &self.stats())
    }

    /// `malloc_trim(pad)`: free memory at the top beyond `pad` bytes goes back now,
    /// whatever the trim threshold says. Free blocks at the top are already part of
    /// the uncarved room (see `release`), so this is the arena's trim, once quick
    /// blocks (if the index keeps any) have merged.
    fn trim(&mut self, pad: usize) -> bool {
        self.merge_deferred();
        self.arena.trim(pad) > 0
    }

    fn stats(&self) -> Stats {
        // The largest free block from a walk of the heap rather than of the list: a
        // walk is bounded even if the list is damaged.
        let mut largest_free = 0;
        let _ = self.walk(|_, block| {
            if block.is_free() || block.is_quick() {
                largest_free = largest_free.max(block.size());
            }
            Ok(())
        });
        self.reported_totals().stats(largest_free)
    }

    /// The phase-2 invariants:
    /// 1. blocks tile the carved part of every region: each header intact, each size
    ///    a multiple of 16, at least `MIN_BLOCK` and inside the region;
    /// 2. the boundary tags agree: a block's `PREV_FREE` bit is set exactly when the
    ///    block before it is free (so never on a region's first block), and a free
    ///    block's footer equals its size;
    /// 3. no two free blocks are neighbours (they would have merged), and no free block
    ///    ends at the newest region's top (it would have gone back into the top);
    /// 4. the free list holds every free block exactly once: it has exactly as many
    ///    entries as the heap has free blocks, and they are the same blocks (the sums
    ///    of a hash of their addresses are equal: a set compared in O(1) memory); the
    ///    index checks its own invariants on the way ([`FreeIndex::check_each`]);
    /// 5. the running totals equal what the walk counted.
    fn check(&self) -> Result<(), Fault> {
        // With an index that defers (see `FreeIndex::defer`), also: quick blocks are
        // walked as used blocks (1 to 3) but counted as free (5), and the index's
        // quick lists hold every quick block exactly once, compared as in 4.
        let mut seen = Totals::ZERO;
        let mut walked_fingerprint = 0u64;
        let mut quick_walked = 0;
        let mut quick_fingerprint = 0u64;
        let mut before: Option<Block> = None;
        self.walk(|region, block| {
            let addr = block.addr();
            if block.is_quick() {
                quick_walked += 1;
                quick_fingerprint = quick_fingerprint.wrapping_add(fingerprint(addr));
            }
            let prev_free = addr != first_block(region) && before.is_some_and(Block::is_free);
            if block.prev_is_free() != prev_free {
                return Err(Fault::Corruption {
                    addr,
                    what: "PREV_FREE bit disagrees with the block before",
                });
            }
            seen.count(block.is_used() && !block.is_quick(), block.size());
            if block.is_free() {
                if prev_free {
                    return Err(Fault::Corruption {
                        addr,
                        what: "two free blocks side by side",
                    });
                }
                if block.footer() != block.size() {
                    return Err(Fault::Corruption {
                        addr,
                        what: "free block's footer disagrees with its header",
                    });
                }
                if block.next_in_heap() == region.top && self.is_newest(region) {
                    return Err(Fault::Corruption {
                        addr,
                        what: "free block at the top was not given back",
                    });
                }
                walked_fingerprint = walked_fingerprint.wrapping_add(fingerprint(addr));
            }
            before = Some(block);
            Ok(())
        })?;

        let free_walked = seen.free.blocks - quick_walked;
        let mut listed = 0;
        let mut listed_fingerprint = 0u64;
        self.free_list.check_each(free_walked, |block| {
            let addr = block.addr();
            let inside = self
                .arena
                .region_of(addr)
                .is_some_and(|r| r.top - addr >= MIN_BLOCK);
            if !is_block_address(addr) || !inside || !block.header_is_intact() {
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
            listed_fingerprint = listed_fingerprint.wrapping_add(fingerprint(addr));
            Ok(())
        })?;
        let start = self.arena.regions().first().map_or(0, |r| r.start);
        if listed != free_walked {
            return Err(Fault::Corruption {
                addr: start,
                what: "a free block is missing from the free list",
            });
        }
        if listed_fingerprint != walked_fingerprint {
            return Err(Fault::Corruption {
                addr: start,
                what: "free list holds something that is not a free block of the heap",
            });
        }

        let mut quick_listed = 0;
        let mut quick_listed_fingerprint = 0u64;
        self.free_list.check_each_deferred(quick_walked, |block| {
            let addr = block.addr();
            let inside = self
                .arena
                .region_of(addr)
                .is_some_and(|r| r.top - addr >= MIN_BLOCK);
            if !is_block_address(addr) || !inside || !block.header_is_intact() || !block.is_quick()
            {
                return Err(Fault::Corruption {
                    addr,
                    what: "quick list holds something that is not a quick block",
                });
            }
            quick_listed += 1;
            quick_listed_fingerprint = quick_listed_fingerprint.wrapping_add(fingerprint(addr));
            Ok(())
        })?;
        if quick_listed != quick_walked || quick_listed_fingerprint != quick_fingerprint {
            return Err(Fault::Corruption {
                addr: start,
                what: "a quick block is missing from the quick lists",
            });
        }
        self.reported_totals().agree_with(&seen, start)
    }

    /// `mallopt(M_TRIM_THRESHOLD, n)`: keep at most `n` free bytes at the top of the
    /// heap; a negative `n` turns trimming off (as in glibc, where it becomes huge).
    fn set_option(&mut self, param: i32, value: i32) -> bool {
        if param != M_TRIM_THRESHOLD {
            return false;
        }
        self.trim_threshold = usize::try_from(value).unwrap_or(usize::MAX);
        self.base_trim_threshold = self.trim_threshold;
        self.trim_threshold_fixed = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heap_replay::{Profile, Replay, script};
    use std::vec::Vec;

    fn heap() -> SplitCoalesceHeap {
        SplitCoalesceHeap::with_growth(&Config::DEFAULT, Growth::MmapOnly)
    }

    fn addr(p: NonNull<u8>) -> usize {
        p.as_ptr() as usize
    }

    fn alloc(heap: &mut SplitCoalesceHeap, size: usize) -> NonNull<u8> {
        heap.alloc(size, MIN_ALIGN)
            .expect("a small allocation succeeds")
    }

    /// The newest region's top: where the next block would be carved.
    fn top(heap: &SplitCoalesceHeap) -> usize {
        heap.arena.newest().expect("the heap has a region").top
    }

    /// Where the newest region's first block starts: its top when it holds none.
    fn start(heap: &SplitCoalesceHeap) -> usize {
        heap.arena.newest().expect("the heap has a region").start + FIRST_BLOCK_OFFSET
    }

    fn fill(p: NonNull<u8>, size: usize, byte: u8) {
        // SAFETY: callers pass a live block of at least `size` bytes.
        unsafe { p.as_ptr().write_bytes(byte, size) };
    }

    fn holds(p: NonNull<u8>, size: usize, byte: u8) -> bool {
        // SAFETY: callers pass a live block of at least `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(p.as_ptr(), size) };
        bytes.iter().all(|&b| b == byte)
    }

    /// The heap as `(offset, size, used)` per block, in address order.
    fn blocks(heap: &SplitCoalesceHeap) -> Vec<(usize, usize, bool)> {
        let mut seen = Vec::new();
        heap.walk(|region, block| {
            seen.push((block.addr() - region.start, block.size(), block.is_used()));
            Ok(())
        })
        .unwrap();
        seen
    }

    #[test]
    fn a_freed_large_block_is_split_to_serve_several_small_requests() {
        let mut heap = heap();
        let big = alloc(&mut heap, 4000);
        let _guard = alloc(&mut heap, 16);
        heap.free(big).unwrap();
        let top_before = top(&heap);
        let smalls: Vec<_> = (0..10).map(|_| alloc(&mut heap, 100)).collect();
        assert_eq!(
            smalls[0], big,
            "first fit takes the front of the free block"
        );
        for p in &smalls {
            assert!(addr(*p) >= addr(big) && addr(*p) < addr(big) + 4000);
            assert_eq!(
                heap.usable_size(*p).unwrap(),
                104,
                "each block is cut to size"
            );
        }
        assert_eq!(top(&heap), top_before, "the heap did not grow");
        let stats = heap.stats();
        assert_eq!(stats.free_blocks, 1, "the rest stays one free block");
        assert_eq!(stats.free_bytes, 4016 - 10 * 112);
        heap.check().unwrap();
    }

    #[test]
    fn a_small_leftover_is_not_split_off() {
        let mut heap = heap();
        let p = alloc(&mut heap, 100); // a 112-byte block
        let _guard = alloc(&mut heap, 16);
        heap.free(p).unwrap();
        let q = alloc(&mut heap, 80); // needs 96: 16 bytes left, less than MIN_BLOCK
        assert_eq!(q, p);
        assert_eq!(heap.usable_size(q).unwrap(), 104);
        assert_eq!(heap.stats().free_blocks, 0);
        heap.check().unwrap();
    }

    #[test]
    fn a_leftover_below_the_minimum_stays_with_the_block_unless_lowered() {
        for (min_leftover, split) in [(MIN_LEFTOVER, false), (MIN_BLOCK, true)] {
            let mut heap = heap();
            heap.set_min_leftover(min_leftover);
            let p = alloc(&mut heap, 100); // a 112-byte block
            let _guard = alloc(&mut heap, 16);
            heap.free(p).unwrap();
            let q = alloc(&mut heap, 56); // needs 64: 112 - 64 = 48 bytes left
            assert_eq!(q, p);
            let expected = if split { 56 } else { 104 };
            assert_eq!(heap.usable_size(q).unwrap(), expected, "{min_leftover}");
            assert_eq!(heap.stats().free_blocks, usize::from(split));
            heap.check().unwrap();
        }
    }

    #[test]
    fn freed_neighbours_merge_on_both_sides() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 100);
        let c = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
        heap.free(a).unwrap();
        heap.free(c).unwrap();
        assert_eq!(heap.stats().free_blocks, 2);
        heap.free(b).unwrap();
        assert_eq!(heap.stats().free_blocks, 1, "a, b and c are one block");
        assert_eq!(heap.stats().free_bytes, 3 * 112);
        heap.check().unwrap();
        let top_before = top(&heap);
        let all = alloc(&mut heap, 3 * 112 - HEADER_SIZE);
        assert_eq!(
            all, a,
            "a request as large as all three fits where they were"
        );
        assert_eq!(top(&heap), top_before, "without growing the heap");
        heap.check().unwrap();
    }

    #[test]
    fn a_freed_block_merges_with_the_block_before_and_after() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
        heap.free(a).unwrap();
        heap.free(b).unwrap(); // into the free block before it
        assert_eq!(blocks(&heap)[..2], [(8, 224, false), (232, 112, true)]);
        heap.check().unwrap();

        let mut heap2 = self::heap();
        let a = alloc(&mut heap2, 100);
        let b = alloc(&mut heap2, 100);
        let _guard = alloc(&mut heap2, 100);
        heap2.free(b).unwrap();
        heap2.free(a).unwrap(); // with the free block after it
        assert_eq!(blocks(&heap2)[..2], [(8, 224, false), (232, 112, true)]);
        heap2.check().unwrap();
    }

    #[test]
    fn a_search_that_cannot_succeed_is_skipped() {
        let mut heap = heap();
        let blocks: Vec<_> = (0..100).map(|_| alloc(&mut heap, 32)).collect();
        for &p in blocks.iter().step_by(2) {
            heap.free(p).unwrap(); // 50 free 48-byte blocks between used ones
        }
        assert_eq!(heap.stats().free_blocks, 50);
        let large = alloc(&mut heap, 1000); // walks all 50 in vain, then grows
        assert!(addr(large) > addr(blocks[99]));
        assert_eq!(
            heap.free_list.size_bound(),
            48,
            "the failed search lowered the bound to the largest listed block"
        );
        let guard = alloc(&mut heap, 100); // too large for the holes: after `large`
        heap.free(large).unwrap();
        assert_eq!(
            heap.free_list.size_bound(),
            1008,
            "a larger free block raises it"
        );
        assert_eq!(alloc(&mut heap, 1000), large);
        heap.free(guard).unwrap();
        heap.check().unwrap();
    }

    #[test]
    fn free_space_at_the_top_goes_back_to_the_arena() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 1000);
        heap.free(b).unwrap();
        assert_eq!(
            top(&heap),
            addr(b) - HEADER_SIZE,
            "b went back into the top"
        );
        assert_eq!(heap.stats().free_blocks, 0, "and is not listed");
        heap.free(a).unwrap();
        assert_eq!(top(&heap), start(&heap), "the heap is empty again");

        // A listed free block below the top joins it when its neighbour is freed.
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 100);
        heap.free(a).unwrap();
        assert_eq!(heap.stats().free_blocks, 1);
        heap.free(b).unwrap();
        assert_eq!(top(&heap), start(&heap));
        assert_eq!(heap.stats(), Stats::default());
        heap.check().unwrap();
    }

    #[test]
    fn realloc_grows_into_a_free_next_block_in_place() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 1000);
        let _guard = alloc(&mut heap, 16);
        fill(a, 100, 0xa1);
        heap.free(b).unwrap();
        let grown = heap.realloc(a, 500).unwrap().unwrap();
        assert_eq!(grown, a, "same pointer");
        assert!(holds(grown, 100, 0xa1), "contents kept");
        assert_eq!(heap.usable_size(grown).unwrap(), 512 - HEADER_SIZE);
        assert_eq!(heap.stats().free_blocks, 1, "the rest of b is still free");
        heap.check().unwrap();
    }

    #[test]
    fn realloc_grows_the_last_block_into_the_top() {
        let mut heap = heap();
        let _first = alloc(&mut heap, 100);
        let last = alloc(&mut heap, 100);
        fill(last, 100, 0x1a);
        let grown = heap.realloc(last, 100_000).unwrap().unwrap();
        assert_eq!(grown, last);
        assert!(holds(grown, 100, 0x1a));
        assert_eq!(top(&heap), addr(last) - HEADER_SIZE + 100_016);
        heap.check().unwrap();
    }

    #[test]
    fn realloc_shrinks_in_place_and_frees_the_tail() {
        let mut heap = heap();
        let a = alloc(&mut heap, 1000);
        let _guard = alloc(&mut heap, 16);
        fill(a, 1000, 0x5e);
        let shrunk = heap.realloc(a, 100).unwrap().unwrap();
        assert_eq!(shrunk, a);
        assert!(holds(shrunk, 100, 0x5e));
        assert_eq!(heap.usable_size(a).unwrap(), 104);
        assert_eq!(heap.stats().free_blocks, 1);
        let reused = alloc(&mut heap, 500);
        assert_eq!(
            addr(reused),
            addr(a) + 112,
            "the tail serves the next request"
        );
        heap.check().unwrap();
    }

    #[test]
    fn realloc_moves_only_when_it_must() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 16);
        fill(a, 100, 0x77);
        let moved = heap.realloc(a, 1000).unwrap().unwrap();
        assert_ne!(moved, a);
        assert!(holds(moved, 100, 0x77));
        assert!(matches!(heap.free(a), Err(Fault::DoubleFree { .. })));
        heap.check().unwrap();
    }

    /// Without growing, a request is served from a free block or the room the newest
    /// region holds (a unit test's region, mapped, holds 4 MiB), and refused beyond:
    /// the heap's regions stay as they were.
    #[test]
    fn without_growing_the_heap_serves_only_from_what_it_holds() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 5000);
        let _guard = alloc(&mut heap, 16);
        heap.free(b).unwrap();
        let room = heap.arena.newest().unwrap().room();
        let from_free = heap.alloc_without_growing(4000).unwrap();
        assert_eq!(from_free, b, "the free block first");
        assert!(heap.alloc_without_growing(room + 1).is_none());
        fill(a, 100, 0x5a);
        assert_eq!(heap.realloc_without_growing(a, room + 1), Ok(None));
        let end = top(&heap);
        let moved = heap.realloc_without_growing(a, 200_000).unwrap().unwrap();
        assert_eq!(addr(moved), end + 8, "moved into the room");
        assert!(holds(moved, 100, 0x5a));
        let grown = heap
            .realloc_without_growing(moved, 300_000)
            .unwrap()
            .unwrap();
        assert_eq!(grown, moved, "the last block grows into the room in place");
        assert_eq!(heap.arena.regions().len(), 1);
        heap.check().unwrap();
    }

    #[test]
    fn misuse_is_reported_not_followed() {
        let mut heap = heap();
        let p = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
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
        assert!(matches!(
            heap.usable_size(p),
            Err(Fault::InvalidPointer {
                why: WhyInvalid::FreedBlock,
                ..
            })
        ));
        heap.check().unwrap();
    }

    #[test]
    fn a_double_free_is_caught_after_the_block_was_merged() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 100);
        let c = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
        heap.free(a).unwrap();
        heap.free(b).unwrap(); // merged into a: its header is left inside, marked free
        assert_eq!(heap.free(b), Err(Fault::DoubleFree { addr: addr(b) }));
        heap.free(c).unwrap(); // merged into a+b from behind
        assert_eq!(heap.free(c), Err(Fault::DoubleFree { addr: addr(c) }));
        assert_eq!(heap.free(a), Err(Fault::DoubleFree { addr: addr(a) }));
        heap.check().unwrap();
    }

    #[test]
    fn a_double_free_is_caught_after_the_block_went_back_to_the_top() {
        let mut heap = heap();
        let _a = alloc(&mut heap, 100);
        let last = alloc(&mut heap, 100);
        heap.free(last).unwrap();
        assert!(top(&heap) <= addr(last) - HEADER_SIZE);
        assert_eq!(heap.free(last), Err(Fault::DoubleFree { addr: addr(last) }));
    }

    #[test]
    fn a_header_taken_into_a_used_block_is_no_longer_a_block() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
        heap.free(b).unwrap();
        let grown = heap.realloc(a, 200).unwrap().unwrap(); // takes in all of b
        assert_eq!(grown, a);
        assert!(matches!(
            heap.free(b),
            Err(Fault::InvalidPointer {
                why: WhyInvalid::NotABlockStart,
                ..
            })
        ));
        heap.check().unwrap();
    }

    #[test]
    fn damaged_neighbours_are_reported_not_followed() {
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let _b = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
        // An overflow out of `a` into `b`'s header.
        fill(a, 120, 0xee);
        assert!(matches!(
            heap.free(a),
            Err(Fault::Corruption {
                what: "block header overwritten",
                ..
            })
        ));

        let mut heap = self::heap();
        let a = alloc(&mut heap, 100);
        let b = alloc(&mut heap, 100);
        let _guard = alloc(&mut heap, 100);
        heap.free(a).unwrap();
        // A write through the dangling `a` hits its footer, which `b`'s free reads.
        fill(a, 104, 0xee);
        assert!(matches!(
            heap.free(b),
            Err(Fault::Corruption {
                what: "the footer of the free block before this one is damaged",
                ..
            })
        ));
    }

    #[test]
    fn sizes_that_cannot_exist_fail_cleanly() {
        let mut heap = heap();
        assert_eq!(heap.alloc(usize::MAX, MIN_ALIGN), None);
        assert_eq!(heap.alloc(usize::MAX - 8, MIN_ALIGN), None);
        assert_eq!(heap.alloc(isize::MAX as usize, MIN_ALIGN), None);
        assert_eq!(heap.alloc(1, 1 << 62), None);
        assert_eq!(heap.alloc(usize::MAX - 100, 4096), None);
        let p = alloc(&mut heap, 10);
        fill(p, 10, 0x42);
        assert_eq!(heap.realloc(p, usize::MAX), Ok(None));
        assert_eq!(heap.realloc(p, isize::MAX as usize), Ok(None));
        assert!(
            holds(p, 10, 0x42),
            "a failed realloc leaves the block alone"
        );
        heap.check().unwrap();
    }

    #[test]
    fn aligned_blocks_are_aligned_and_leave_no_waste_behind() {
        let mut heap = heap();
        let first = alloc(&mut heap, 8);
        let mut aligned = Vec::new();
        for align in [32, 64, 128, 4096, 65536] {
            let p = heap.alloc(100, align).unwrap();
            assert_eq!(addr(p) % align, 0);
            fill(p, 100, align as u8);
            heap.check().unwrap();
            aligned.push((p, align));
        }
        assert!(
            heap.stats().free_blocks > 0,
            "the gaps went onto the free list"
        );
        for (p, align) in aligned {
            assert!(holds(p, 100, align as u8));
            heap.free(p).unwrap();
            heap.check().unwrap();
        }
        heap.free(first).unwrap();
        assert_eq!(heap.stats(), Stats::default(), "every gap merged back");
        assert_eq!(top(&heap), start(&heap));
    }

    #[test]
    fn the_check_finds_broken_invariants() {
        let setup = || {
            let mut heap = heap();
            let a = alloc(&mut heap, 100);
            let b = alloc(&mut heap, 100);
            let c = alloc(&mut heap, 100);
            let _guard = alloc(&mut heap, 100);
            heap.free(a).unwrap();
            heap.free(c).unwrap();
            heap.check().unwrap();
            // SAFETY: a, b and c are blocks of this heap.
            let block = |p: NonNull<u8>| unsafe { Block::at(addr(p) - HEADER_SIZE) };
            (heap, block(a), block(b), block(c))
        };

        let (heap, a, _, _) = setup();
        fill(a.payload(), 104, 0);
        assert!(heap.check().is_err(), "a's links and footer are gone");

        let (heap, _, b, _) = setup();
        b.set_prev_free(false);
        assert!(matches!(
            heap.check(),
            Err(Fault::Corruption {
                what: "PREV_FREE bit disagrees with the block before",
                ..
            })
        ));

        let (heap, a, _, c) = setup();
        // A list that loops: c -> a -> a.
        assert_eq!(heap.free_list.head(), Some(c));
        a.set_next_in_list(Some(a));
        assert!(matches!(
            heap.check(),
            Err(Fault::Corruption {
                what: "free list links disagree (next and prev)",
                ..
            })
        ));

        let (mut heap, a, _, _) = setup();
        heap.free_list.remove(a);
        assert!(matches!(
            heap.check(),
            Err(Fault::Corruption {
                what: "a free block is missing from the free list",
                ..
            })
        ));

        let (mut heap, _, _, _) = setup();
        heap.totals.used.bytes += 16;
        assert!(matches!(
            heap.check(),
            Err(Fault::Corruption {
                what: "block totals disagree with the heap",
                ..
            })
        ));
    }

    #[test]
    fn the_dump_has_one_line_per_block_in_phase_one_format() {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        let mut heap = heap();
        let a = alloc(&mut heap, 100);
        let _b = alloc(&mut heap, 10);
        heap.free(a).unwrap();
        let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(
                    std::env::temp_dir()
                        .join(std::format!("phase2-dump-{}.txt", std::process::id())),
                )
                .unwrap(),
        ));
        {
            let mut out = Out::new(file.as_raw_fd());
            heap.dump_blocks(&mut out);
        }
        let mut text = std::string::String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "[BLOCK 0x8 112 FREE]\n[BLOCK 0x78 32 USED]\n");
        assert_eq!(heap.stats().fragmentation_percent(), 0);
    }

    #[test]
    fn mallopt_sets_the_trim_threshold() {
        let mut heap = heap();
        assert_eq!(heap.trim_threshold, DEFAULT_TRIM_THRESHOLD);
        assert!(heap.set_option(M_TRIM_THRESHOLD, 4096));
        assert_eq!(heap.trim_threshold, 4096);
        assert!(heap.set_option(M_TRIM_THRESHOLD, -1));
        assert_eq!(heap.trim_threshold, usize::MAX, "negative: never trim");
        assert!(!heap.set_option(-3, 0), "M_MMAP_THRESHOLD is phase 3's");
        let config = Config {
            trim_threshold: Some(1000),
            ..Config::DEFAULT
        };
        let heap: SplitCoalesceHeap = SplitCoalesceHeap::with_growth(&config, Growth::MmapOnly);
        assert_eq!(heap.trim_threshold, 1000);
    }

    /// The brk heap, in a forked child: the only thread there, so nothing else moves
    /// the break. Returns the number of the first step that failed, 0 if none.
    fn trim_scenario() -> i32 {
        use preload_kit::os::{current_break, page_size};
        let config = Config {
            trim_threshold: Some(256 * 1024),
            ..Config::DEFAULT
        };
        let mut heap: SplitCoalesceHeap = SplitCoalesceHeap::with_growth(&config, Growth::BrkOnly);
        let (Some(big), Some(small)) = (heap.alloc(1 << 20, MIN_ALIGN), heap.alloc(100, MIN_ALIGN))
        else {
            return 1;
        };
        let grown = current_break();
        if heap.free(big).is_err() || current_break() != grown {
            return 2; // not at the top: nothing to give back
        }
        if heap.free(small).is_err() {
            return 3;
        }
        let Some(region) = heap.arena.newest().copied() else {
            return 4;
        };
        if region.top != region.start + FIRST_BLOCK_OFFSET || current_break() != region.end {
            return 5; // everything merged into the top, and the break is its end
        }
        if region.room() < 256 * 1024 || region.room() >= 256 * 1024 + page_size() {
            return 6; // the threshold's worth stays, the rest went back
        }
        if grown - current_break() < (1 << 20) - 256 * 1024 {
            return 7;
        }
        if !heap.set_option(M_TRIM_THRESHOLD, 0) {
            return 8;
        }
        let Some(p) = heap.alloc(600 * 1024, MIN_ALIGN) else {
            return 9;
        };
        if heap.free(p).is_err() || heap.arena.newest().is_none_or(|r| r.room() >= page_size()) {
            return 10; // with a threshold of 0, every whole page goes back
        }
        heap.set_trim_free_above(1024);
        let (Some(large), Some(small)) = (
            heap.alloc(600 * 1024, MIN_ALIGN),
            heap.alloc(100, MIN_ALIGN),
        ) else {
            return 11;
        };
        if heap.free(large).is_err() || heap.free(small).is_err() {
            return 12;
        }
        if heap.arena.newest().is_none_or(|r| r.room() < 600 * 1024) {
            return 13; // a small block's free reached the top but kept the room
        }
        let Some(medium) = heap.alloc(2000, MIN_ALIGN) else {
            return 14;
        };
        if heap.free(medium).is_err() || heap.arena.newest().is_none_or(|r| r.room() >= page_size())
        {
            return 15; // a larger block's free gave it all back
        }
        if heap.check().is_err() {
            return 16;
        }
        0
    }

    /// Growing the brk heap right after trimming it (a swing): the trim threshold
    /// doubles; `give_back_swing_room` then returns the room kept beyond the base
    /// threshold and leaves the doubled threshold. In a forked child, as `trim_scenario`.
    fn doubling_scenario() -> i32 {
        let mut heap: SplitCoalesceHeap =
            SplitCoalesceHeap::with_growth(&Config::DEFAULT, Growth::BrkOnly);
        let Some(big) = heap.alloc(1 << 20, MIN_ALIGN) else {
            return 1;
        };
        if heap.free(big).is_err() || !heap.just_trimmed {
            return 2; // freeing the top megabyte trims
        }
        if heap.trim_threshold != DEFAULT_TRIM_THRESHOLD {
            return 3;
        }
        // The same megabyte again: the top is too small, so the break moves up.
        let Some(again) = heap.alloc(1 << 20, MIN_ALIGN) else {
            return 4;
        };
        if heap.trim_threshold != 2 * DEFAULT_TRIM_THRESHOLD {
            return 5;
        }
        let room = |heap: &SplitCoalesceHeap| heap.arena.newest().map_or(0, |top| top.room());
        if heap.free(again).is_err() || room(&heap) < 2 * DEFAULT_TRIM_THRESHOLD {
            return 6; // the doubled threshold's worth stays at the top
        }
        heap.give_back_swing_room();
        if room(&heap) >= DEFAULT_TRIM_THRESHOLD + preload_kit::os::page_size() {
            return 7; // beyond the base threshold, the room went back (whole pages)
        }
        if heap.trim_threshold != 2 * DEFAULT_TRIM_THRESHOLD || heap.check().is_err() {
            return 8;
        }
        0
    }

    /// Runs `scenario` in a forked child and returns its exit status: the brk heap's
    /// tests need to be the only thread moving the break.
    fn in_forked_child(scenario: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child runs only the scenario, which neither allocates nor takes
        // locks another thread may hold, and leaves with `_exit`.
        let pid = unsafe { preload_kit::libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let step = scenario();
            // SAFETY: `_exit` has no preconditions.
            unsafe { preload_kit::libc::_exit(step) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid int to write.
        let waited = unsafe { preload_kit::libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(preload_kit::libc::WIFEXITED(status));
        preload_kit::libc::WEXITSTATUS(status)
    }

    #[test]
    fn memory_at_the_top_of_the_brk_heap_goes_back_to_the_os() {
        assert_eq!(
            in_forked_child(trim_scenario),
            0,
            "trim scenario failed at that step"
        );
    }

    #[test]
    fn the_trim_threshold_doubles_on_a_swing_and_its_room_can_be_given_back() {
        assert_eq!(
            in_forked_child(doubling_scenario),
            0,
            "doubling scenario failed at that step"
        );
    }

    /// A seeded workload of malloc, calloc, memalign, free and realloc, mostly small
    /// blocks with some of tens of KiB, replayed by `heap_replay`: every block keeps its
    /// contents and never overlaps another, and the heap check passes every 7 actions.
    /// At the end, freeing everything leaves an empty heap: every block merged back.
    #[test]
    fn seeded_workload_keeps_contents_and_invariants() {
        let mut replay = Replay::new(heap()).check_every(7);
        replay.run(&script(2, 20_000, &Profile::MIXED)).unwrap();
        replay.free_all().unwrap();
        assert_eq!(replay.heap().stats(), Stats::default());
        assert_eq!(blocks(replay.heap()), []);
    }

    /// Random scripts of the same actions, shrunk to a minimal one on failure
    /// (`PROPTEST_CASES=N` runs more than the bounded default).
    #[test]
    fn fuzzed_scripts_keep_contents_and_invariants() {
        heap_replay::fuzz(heap, &Profile::MIXED, 64);
    }
}
