//! # Phase 5: size-class pages and a heap per thread
//!
//! Phases 1-4 keep one heap behind one lock: threads queue on it, and every call pays
//! for a header, a search and the lock. Phase 5 serves small requests the way
//! production allocators do (mimalloc's "free list sharding" is the model): blocks of
//! one size class live together in a 64 KiB page that knows their size, and each page
//! belongs to one thread's heap, so the common `malloc` and `free` take no lock and no
//! atomic instruction. A block freed by another thread goes onto its page's
//! `thread_free` list with one compare-and-swap; the owner collects it later.
//!
//! ```text
//!   thread pointer --(kit ThreadTable)--> ThreadHeap (heap.rs)
//!                                            queues[class] --> Page --> Page ...
//!   Segment, 4 MiB aligned (segment.rs)                         |
//!   +---------------------+---------+---------+----            v
//!   | descriptors of the  | page 1  | page 2  |  ...   Page (page.rs): blocks of one
//!   | 63 pages            | 64 KiB  | 64 KiB  |        class; free / thread_free lists;
//!   +---------------------+---------+---------+----    a bitmap of allocated blocks
//!   pointer & !(4 MiB - 1) = segment; (pointer - segment) / 64 KiB = page
//!
//!   larger than SMALL_LIMIT, or aligned beyond 16: the fallback heap (phase 4's
//!   phase 4's policy), under its lock, as it was.
//! ```
//!
//! Read the files in this order: [`size_class`], [`page`], [`segment`], [`heap`], then
//! this file's [`ThreadHeaps`], which routes each call.
//!
//! Misuse is still caught in normal mode, without a lock: `free` checks the block's bit
//! in its page's bitmap (clear: a double free, exit 3, or, above the page's high-water
//! mark, a pointer never given out, exit 2), and a block waiting on `thread_free` carries
//! a tag that a second free finds, from whichever thread (see [`page`]); a pointer
//! outside every segment goes to the fallback heap, which checks it as before; a
//! pointer inside a page but not at a block's start is invalid (exit 2). The segment
//! map tells whether an address is one of our segments before anything of the segment
//! is read.
//!
//! The stats (`mallinfo2`, `malloc_stats`, the `[stats]` line) add up every thread's
//! pages by walking every segment's descriptors, reading only their atomics: no lock,
//! no thread stopped, each page read as it is at that moment (see `Census`).

#![cfg_attr(not(test), no_std)]

pub mod heap;
pub mod page;
pub mod segment;
pub mod size_class;

use core::fmt::Write as _;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use preload_kit::thread::thread_pointer;
use preload_kit::{
    Fault, Heap, Location, Locked, MIN_ALIGN, MallInfo, Out, SharedAllocator, Stats, WhyInvalid,
    abi, report,
};

use page::{BlockOf, PAGE_SIZE, Page};
use segment::{Owner, SEGMENT_SIZE};
use size_class::{SMALL_LIMIT, class_of, class_of_nonzero};

/// Where an address is, printed the same in every run: inside our segments, as an
/// offset in the segments laid end to end in order of creation (segment `n` covers
/// `[(n-1) * 4 MiB, n * 4 MiB)`); elsewhere, whatever the fallback heap says.
fn locate_in_segments(addr: usize) -> Option<Location> {
    segment::locate(addr)
        .map(|(number, offset)| Location::Heap((number - 1) * SEGMENT_SIZE + offset))
}

/// Reports a fault found in the pages where no allocator value is at hand (a thread's
/// exit notification), in the kit's words, and exits with the documented code.
pub fn report_in_pages(fault: Fault, operation: &str) -> ! {
    let addr = match fault {
        Fault::DoubleFree { addr }
        | Fault::InvalidPointer { addr, .. }
        | Fault::Corruption { addr, .. } => addr,
    };
    let location = locate_in_segments(addr).unwrap_or(Location::Outside(addr));
    write_fault(fault, operation, location)
}

fn write_fault(fault: Fault, operation: &str, location: Location) -> ! {
    let mut out = Out::stderr();
    let code = match fault {
        Fault::DoubleFree { .. } => {
            let _ = write!(out, "error: double free detected at {location}");
            if operation != "free" {
                let _ = write!(out, " (in {operation})");
            }
            report::EXIT_CORRUPTION
        }
        Fault::InvalidPointer { why, .. } => {
            let _ = write!(
                out,
                "error: invalid pointer {location} passed to {operation} ({why})"
            );
            report::EXIT_MISUSE
        }
        Fault::Corruption { what, .. } => {
            let _ = write!(out, "error: heap corruption detected at {location}: {what}");
            report::EXIT_CORRUPTION
        }
    };
    let _ = writeln!(out);
    out.flush();
    preload_kit::os::exit_now(code)
}

/// Whether `MALLOC_DEBUG=1`: then every request goes to the fallback heap, whose debug
/// layer (phase 3's, inside phase 4's heap) guards, poisons and checks every block; pages have no room for
/// guards. Read once (the setting cannot change), then one load per call.
#[inline(always)]
fn debug_mode() -> bool {
    match DEBUG.load(Ordering::Relaxed) {
        DEBUG_OFF => false,
        DEBUG_ON => true,
        _ => read_debug_mode(),
    }
}

/// [`debug_mode`]'s memory: unknown until the first call reads the settings.
static DEBUG: AtomicU8 = AtomicU8::new(DEBUG_UNKNOWN);
const DEBUG_UNKNOWN: u8 = 0;
const DEBUG_OFF: u8 = 1;
const DEBUG_ON: u8 = 2;

/// The first call's part of [`debug_mode`], out of line: reading the settings copies
/// them, and `malloc` should not make room for that copy on every call.
#[cold]
#[inline(never)]
fn read_debug_mode() -> bool {
    let on = preload_kit::config::current().debug;
    DEBUG.store(if on { DEBUG_ON } else { DEBUG_OFF }, Ordering::Relaxed);
    on
}

/// Phase 5's allocator: per-thread pages for small blocks, `F` behind its lock for the
/// rest. Every method takes `&self`: it is meant to live in a `static` and be called
/// from any thread at once.
pub struct ThreadHeaps<F> {
    fallback: Locked<F>,
}

/// What a pointer turned out to be.
enum Block {
    /// Block `index` of `page`.
    Small(&'static Page, usize),
    /// Not in our segments: the fallback heap's business.
    Fallback,
}

impl<F: Heap> ThreadHeaps<F> {
    pub const fn new() -> Self {
        ThreadHeaps {
            fallback: Locked::new(),
        }
    }

    /// Which block `addr` is, or why it cannot be one.
    #[inline(always)]
    fn block_at(addr: usize) -> Result<Block, Fault> {
        match segment::page_of(addr) {
            Owner::Elsewhere => Ok(Block::Fallback),
            Owner::Header => Err(Fault::InvalidPointer {
                addr,
                // Inside our segment, among the page descriptors: no block starts there.
                why: WhyInvalid::NotABlockStart,
            }),
            Owner::Page(page) => match page.block_of(addr) {
                BlockOf::Start(index) => Ok(Block::Small(page, index)),
                BlockOf::Inside => Err(Fault::InvalidPointer {
                    addr,
                    why: WhyInvalid::NotABlockStart,
                }),
                // The address is in a page of ours that holds no blocks now: a block
                // its last class gave out is a double free, anything else invalid.
                BlockOf::Unused => Err(page.fault_for_unused(addr)),
            },
        }
    }

    /// A block of at least `size` bytes aligned to `align`. The common case, a small
    /// request that the current page of its class can serve, is done here with no
    /// call ([`ThreadHeaps::alloc_from_current`]); everything else goes to
    /// [`ThreadHeaps::alloc_in_full`].
    #[inline(always)]
    pub fn alloc(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        // `DEBUG_OFF` alone: before the first call has read the setting, the full path
        // reads it.
        if align <= MIN_ALIGN
            && DEBUG.load(Ordering::Relaxed) == DEBUG_OFF
            && let Some(block) = Self::alloc_from_current(size)
        {
            return NonNull::new(block);
        }
        self.alloc_in_full(size, align)
    }

    /// `malloc` as the kit calls it when it has nothing to add: then debug mode is off
    /// (the kit's flag says so), and the common case is [`ThreadHeaps::alloc`]'s
    /// without the test of [`DEBUG`]. The rest, `errno` included, is one out-of-line
    /// call, so the common case needs no stack frame.
    #[inline(always)]
    pub fn malloc_plain(&self, size: usize) -> *mut u8 {
        if let Some(block) = Self::alloc_from_current(size) {
            return block;
        }
        self.malloc_in_full(size)
    }

    /// A small block from the calling thread's current page of its class, if it has
    /// one with room: the whole of `malloc`'s common case. `malloc(0)` is left to the
    /// full path, so that one compare of `size - 1` tests both ends of the range.
    #[inline(always)]
    fn alloc_from_current(size: usize) -> Option<*mut u8> {
        if size.wrapping_sub(1) < SMALL_LIMIT
            && let Some(heap) = heap::current_at_home()
        {
            return heap.pop_current(class_of_nonzero(size));
        }
        None
    }

    /// [`ThreadHeaps::malloc_plain`]'s way out: `malloc`'s answer, null with `errno`
    /// set when there is no memory.
    #[inline(never)]
    fn malloc_in_full(&self, size: usize) -> *mut u8 {
        match self.alloc_in_full(size, MIN_ALIGN) {
            Some(block) => block.as_ptr(),
            None => {
                preload_kit::os::set_errno(preload_kit::libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }

    /// [`ThreadHeaps::alloc`] in every case: small requests come from the calling
    /// thread's pages (see [`ThreadHeap::alloc`](heap::ThreadHeap::alloc)), the rest
    /// from the fallback heap. Out of line, so that `alloc`'s own path saves no
    /// registers for it.
    #[inline(never)]
    fn alloc_in_full(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        if size <= SMALL_LIMIT
            && align <= MIN_ALIGN
            && !debug_mode()
            && let Some(heap) = heap::current_or_new()
        {
            match heap.alloc(class_of(size)) {
                Ok(Some(block)) => return NonNull::new(block),
                Ok(None) => return self.alloc_after_growing(heap, size, align),
                Err(fault) => report::fail(self, "malloc", fault),
            }
        }
        self.alloc_fallback(size, align)
    }

    /// The pool had no page: make a segment (under the fallback's lock, which also
    /// guards the program break) and try the thread's heap again.
    #[cold]
    fn alloc_after_growing(
        &self,
        heap: &heap::ThreadHeap,
        size: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let grown = self.fallback.with(|_| {
            // Threads that found the pool empty at once queue here: only the first
            // makes a segment, the others find its pages. (Each making its own took a
            // burst of new threads to a segment per thread.)
            if heap::POOL.counts().0 > 0 {
                return true;
            }
            // SAFETY: the fallback's lock is held: nothing of ours moves the break
            // meanwhile.
            let Some(segment) = (unsafe { segment::make_segment() }) else {
                return false;
            };
            // Under the fallback's lock, so the next thread in the queue sees the pages
            // (the lock order is fallback, then pool).
            heap::POOL.add_segment(segment);
            true
        });
        if grown {
            match heap.alloc(class_of(size)) {
                Ok(Some(block)) => return NonNull::new(block),
                Ok(None) => {}
                Err(fault) => report::fail(self, "malloc", fault),
            }
        }
        self.alloc_fallback(size, align)
    }

    /// [`ThreadHeaps::alloc`]'s way out for what pages do not serve, out of line.
    #[inline(never)]
    fn alloc_fallback(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.fallback.alloc(size, align)
    }

    /// [`ThreadHeaps::free`]'s way out for blocks not in a page, out of line.
    #[inline(never)]
    fn free_fallback(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        // `free` keeps errno, and the fallback may make system calls: kept here
        // unless the fallback keeps it itself (phase 4's does).
        let _errno = (!F::FREE_KEEPS_ERRNO).then(preload_kit::os::KeepErrno::new);
        self.fallback.free(ptr)
    }

    /// Like [`ThreadHeaps::alloc`], zeroed.
    pub fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        if size <= SMALL_LIMIT {
            let block = self.alloc(size, MIN_ALIGN)?;
            // SAFETY: the block is ours to give and at least `size` bytes long.
            unsafe { block.as_ptr().write_bytes(0, size) };
            return Some(block);
        }
        self.fallback.alloc_zeroed(size)
    }

    /// Frees `ptr`: the common case ([`ThreadHeaps::free_common`]) with no call,
    /// everything else in [`ThreadHeaps::free_in_full`].
    #[inline(always)]
    pub fn free(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        if Self::free_common(ptr.as_ptr()) {
            return Ok(());
        }
        self.free_in_full(ptr)
    }

    /// `free` as the kit calls it when it has nothing to add: like
    /// [`ThreadHeaps::free`], but the rest reports its own faults
    /// ([`ThreadHeaps::free_in_full_or_fail`]), so the common case needs no stack
    /// frame for a `Result`.
    ///
    /// A null pointer is in no segment, so it fails the common case's first test and
    /// `free(NULL)` is the way out's business: the common case tests nothing for it.
    #[inline(always)]
    pub fn free_plain(&self, ptr: *mut u8) {
        if Self::free_common(ptr) {
            return;
        }
        self.free_in_full_or_fail(ptr)
    }

    /// `free`'s common case, the owner freeing a block of its own page while no other
    /// thread's frees wait on that page, decided and done; false for anything else
    /// (nothing done). The checks are those of [`ThreadHeaps::free_in_full`] for that
    /// case: a set bit says at once that `ptr` starts a block (no other bit is ever
    /// set) and that the block is out, so not a double free; the owner word equal to
    /// the thread pointer says the page is ours, with no flag: no other thread's frees
    /// wait on it ([`page::REMOTE_FREES`]), so the block is not one of those, and
    /// `malloc` has not found it full ([`page::FULL`]), so it need not move.
    #[inline(always)]
    fn free_common(ptr: *mut u8) -> bool {
        let addr = ptr as usize;
        // One test for two ways out that the tests below make again: an address above
        // every segment, and one off the 16-byte grid where blocks start. Testing them
        // together first lets the compiler drop both later tests (one instruction
        // and a branch instead of five).
        if addr & (!(segment::ADDRESS_LIMIT - 1) | (page::GRANULE - 1)) != 0 {
            return false;
        }
        if let Some(page) = segment::descriptor_of(addr)
            && let Some(bit) = page.out_bit(addr)
            && page.owner_thread.load(Ordering::Relaxed) == thread_pointer()
        {
            let emptied = page.free_owned(addr, bit);
            page.note_freed_into();
            // The front page of its queue stays where it is, empty or not, so a
            // thread that allocates and frees one block in a loop never leaves this
            // path (`ThreadHeap::give_back_empty_fronts` returns it to the pool later).
            if emptied && !page.is_front() {
                Self::page_changed(page, emptied);
            }
            return true;
        }
        false
    }

    /// [`ThreadHeaps::free_in_full`], reporting its fault (and exiting): `free`'s way
    /// out when the kit leaves the reporting to the allocator.
    #[inline(never)]
    fn free_in_full_or_fail(&self, ptr: *mut u8) {
        if let Some(ptr) = NonNull::new(ptr)
            && let Err(fault) = self.free_everywhere(ptr)
        {
            report::fail(self, "free", fault);
        }
    }

    /// [`ThreadHeaps::free`] in every case; see [`ThreadHeaps::free_everywhere`].
    /// Out of line, so that `free`'s own path saves no registers for it.
    #[inline(never)]
    fn free_in_full(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        self.free_everywhere(ptr)
    }

    /// Every case of `free`: the owner's path (no lock, no atomic), another thread's
    /// path (one compare-and-swap), the fallback heap's, and the faults. Inlined into
    /// the two out-of-line ways to it, [`ThreadHeaps::free_in_full`] and
    /// [`ThreadHeaps::free_in_full_or_fail`].
    #[inline(always)]
    fn free_everywhere(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        let addr = ptr.as_ptr() as usize;
        match Self::block_at(addr)? {
            Block::Fallback => self.free_fallback(ptr),
            Block::Small(page, index) => {
                if page.owner() == thread_pointer() {
                    let was_full = page.take_full();
                    // Blocks other threads freed first (their bits cleared): a second
                    // free of one of them then finds its bit clear, and the flag that
                    // sent this `free` the long way is off.
                    page.collect()?;
                    let emptied = page.free_local(addr, index)?;
                    page.note_freed_into();
                    if (emptied || was_full) && !page.is_front() {
                        Self::page_changed(page, emptied);
                    }
                    Ok(())
                } else {
                    page.free_remote(addr, index)
                }
            }
        }
    }

    /// The owner's free made `page` empty (back to the pool) or no longer full (to the
    /// front of its queue): the slow side of [`ThreadHeaps::free`].
    #[cold]
    fn page_changed(page: &'static Page, emptied: bool) {
        let Some(heap) = heap::current() else {
            return;
        };
        if emptied {
            // Giving a page back may call madvise: keep errno.
            let _errno = preload_kit::os::KeepErrno::new();
            heap.page_emptied(page);
        } else {
            heap.page_has_room(page);
        }
    }

    /// Bytes usable at `ptr`: its class's size, for a small block.
    pub fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let addr = ptr.as_ptr() as usize;
        match Self::block_at(addr)? {
            Block::Fallback => self.fallback.usable_size(ptr),
            Block::Small(page, index) => {
                if !page.is_out(addr) {
                    return Err(match page.fault_for_freed(addr, index) {
                        Fault::DoubleFree { .. } => Fault::InvalidPointer {
                            addr,
                            why: WhyInvalid::FreedBlock,
                        },
                        never_given_out => never_given_out,
                    });
                }
                Ok(page.block_size.load(Ordering::Relaxed) as usize)
            }
        }
    }

    /// Resizes: a small block stays put while the new size still fits its class and
    /// uses at least half of it; otherwise allocate, copy, free. A fallback block is
    /// resized by the fallback heap.
    pub fn realloc(&self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let addr = ptr.as_ptr() as usize;
        if let Block::Fallback = Self::block_at(addr)? {
            return self.fallback.realloc(ptr, size);
        }
        let old_size = self.usable_size(ptr)?;
        if size <= old_size && size > old_size / 2 {
            return Ok(Some(ptr));
        }
        let Some(new) = self.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        // SAFETY: both blocks are live and distinct, at least `min(old_size, size)` long.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size.min(size)) };
        self.free(ptr)?;
        Ok(Some(new))
    }

    /// Checks the calling thread's heap, every abandoned heap, and the fallback heap.
    /// Other live threads' heaps are theirs to check: their lists change under us.
    pub fn check(&self) -> Result<(), Fault> {
        if let Some(heap) = heap::current() {
            heap.check()?;
        }
        {
            let _guard = heap::HEAP_LOCK.acquire();
            for heap in &heap::HEAPS {
                if heap.state_name() == Some("abandoned") {
                    heap.check()?;
                }
            }
        }
        self.fallback.check()
    }

    /// Writes the per-thread heaps (the caller's and abandoned ones in full, with one
    /// line per page; other threads' by name), the pool, then the fallback heap's
    /// blocks and the combined stats.
    pub fn dump(&self, out: &mut Out) {
        let mine = heap::current().map(|h| h as *const heap::ThreadHeap);
        {
            let _guard = heap::HEAP_LOCK.acquire();
            for (index, heap) in heap::HEAPS.iter().enumerate() {
                let Some(state) = heap.state_name() else {
                    continue;
                };
                let is_mine = mine.is_some_and(|m| core::ptr::eq(m, heap));
                let who = if is_mine {
                    "this thread"
                } else {
                    "another thread"
                };
                let readable = is_mine || state != "owned";
                if state == "owned" {
                    let _ = writeln!(out, "[THREAD HEAP {} owned by {who}]", index + 1);
                } else {
                    let _ = writeln!(out, "[THREAD HEAP {} {state}]", index + 1);
                }
                if readable {
                    heap.for_each_page(|page| Self::dump_page(page, out));
                }
            }
        }
        let (pages, resident) = heap::POOL.counts();
        if pages > 0 {
            let _ = writeln!(out, "[POOL {pages} empty pages, {resident} kept resident]");
        }
        self.fallback.with(|heap| heap.dump_blocks(out));
        abi::write_stats(&self.stats(), out);
    }

    fn dump_page(page: &Page, out: &mut Out) {
        let size = page.block_size.load(Ordering::Relaxed) as usize;
        let location = locate_in_segments(page.start.get()).unwrap_or(Location::Outside(0));
        let free = page.capacity.get() - page.used.get();
        let waiting = if page.thread_free.load(Ordering::Relaxed).is_null() {
            ""
        } else {
            ", remote frees waiting"
        };
        let _ = writeln!(
            out,
            "[PAGE {location} of {size}-byte blocks: {} used, {free} free{waiting}]",
            page.used.get(),
        );
    }

    /// Byte counts: every thread's pages (blocks used and free, in whole blocks) plus
    /// the fallback heap's. See [`Census`] for how consistent the pages' part is.
    pub fn stats(&self) -> Stats {
        self.stats_with(&Census::take())
    }

    /// [`ThreadHeaps::stats`] with the pages' part from `census`.
    fn stats_with(&self, census: &Census) -> Stats {
        let pages = census.stats;
        let mut stats = self.fallback.stats();
        stats.used_blocks += pages.used_blocks;
        stats.used_bytes += pages.used_bytes;
        stats.free_blocks += pages.free_blocks;
        stats.free_bytes += pages.free_bytes;
        stats.largest_free = stats.largest_free.max(pages.largest_free);
        stats
    }

    /// `mallinfo2`: the fallback heap's figures (its arena, top and mappings) with
    /// every segment added to the arena: blocks in pages as used and free blocks,
    /// empty pages as free blocks of 64 KiB, and what holds no block (the descriptors'
    /// page, the tail of a page too short for a block) as used, like a header. So
    /// `arena == uordblks + fordblks` holds for the segments as for phases 1-4's heap.
    pub fn mallinfo(&self) -> MallInfo {
        let census = Census::take();
        let mut info = self.fallback.mallinfo();
        let segments = census.segments * SEGMENT_SIZE;
        let free = census.stats.free_bytes + census.empty_pages * PAGE_SIZE;
        info.heap_bytes += segments;
        info.used_bytes += segments.saturating_sub(free);
        info.free_blocks += census.stats.free_blocks + census.empty_pages;
        info.free_bytes += free;
        info
    }

    /// `malloc_stats`: the combined `[stats]` line, the pages of each class, each
    /// thread heap's pages, the pool, then the fallback heap's own detail (phase 4's
    /// bins) for the blocks it serves.
    pub fn stats_report(&self, out: &mut Out) {
        let census = Census::take();
        abi::write_stats(&self.stats_with(&census), out);
        for (class, count) in census.classes.iter().enumerate() {
            if count.pages > 0 {
                let _ = writeln!(
                    out,
                    "[CLASS {} pages={} used={} free={}]",
                    size_class::class_size(class),
                    count.pages,
                    count.used,
                    count.free
                );
            }
        }
        for (index, heap) in heap::HEAPS.iter().enumerate() {
            let Some(state) = heap.state_name() else {
                continue;
            };
            let count = Census::of_heap(index);
            let _ = writeln!(
                out,
                "[THREAD HEAP {} {state} pages={} used={} free={}]",
                index + 1,
                count.pages,
                count.used,
                count.free
            );
        }
        let (pages, resident) = heap::POOL.counts();
        let _ = writeln!(out, "[POOL {pages} empty pages, {resident} kept resident]");
        self.fallback.with(|heap| heap.stats_detail(out));
    }
}

/// What every thread's pages hold, read by one walk of all segments
/// ([`segment::Pool::for_each_page_used`]) without stopping any thread. Each page's figures are
/// read from its atomics (its block size and bitmap), so the walk needs no lock and
/// never follows another thread's lists; but owners keep allocating meanwhile, so the
/// totals are a snapshot of each page at a slightly different moment, off by the
/// blocks that changed hands during the walk, never by whole pages or segments.
/// Blocks freed by another thread and not yet collected count as used (as in the
/// page's `used`).
#[derive(Default)]
struct Census {
    /// Blocks in pages of any heap, in whole blocks.
    stats: Stats,
    segments: usize,
    /// Pages that hold no class (in the pool, or never handed out).
    empty_pages: usize,
    classes: [PageCount; size_class::CLASSES],
}

/// Pages and their blocks, for one class or one heap.
#[derive(Clone, Copy, Default)]
struct PageCount {
    pages: usize,
    used: usize,
    free: usize,
}

impl Census {
    fn take() -> Census {
        let mut census = Census::default();
        let mut pages_in_use = 0;
        let segments = heap::POOL.for_each_page_used(|page| {
            let Some((size, capacity, used)) = page.census() else {
                return;
            };
            pages_in_use += 1;
            let free = capacity - used;
            let stats = &mut census.stats;
            stats.used_blocks += used;
            stats.used_bytes += used * size;
            stats.free_blocks += free;
            stats.free_bytes += free * size;
            stats.largest_free = stats.largest_free.max(if free > 0 { size } else { 0 });
            if let Some(count) = census
                .classes
                .get_mut(page.class.load(Ordering::Relaxed) as usize)
            {
                count.pages += 1;
                count.used += used;
                count.free += free;
            }
        });
        census.segments = segments;
        // Pages not in use: in the pool, or never handed out yet.
        census.empty_pages =
            (segments * (segment::PAGES_PER_SEGMENT - 1)).saturating_sub(pages_in_use);
        census
    }

    /// The pages of heap `index` (those whose descriptor names it).
    fn of_heap(index: usize) -> PageCount {
        let mut count = PageCount::default();
        heap::POOL.for_each_page_used(|page| {
            if page.heap.load(Ordering::Relaxed) as usize != index {
                return;
            }
            if let Some((_, capacity, used)) = page.census() {
                count.pages += 1;
                count.used += used;
                count.free += capacity - used;
            }
        });
        count
    }
}

/// What the kit exports (`export_malloc!(ThreadHeaps<…>)`): every method forwards to
/// the inherent one of the same name, or to the fallback heap.
impl<F: Heap> SharedAllocator for ThreadHeaps<F> {
    const NEW: Self = Self::new();
    const CHECK_IN_DEBUG_MODE: bool = F::CHECK_IN_DEBUG_MODE;
    /// The owner's and another thread's frees make no system call; the two ways that
    /// may (the fallback heap, a page emptied back to the pool) keep `errno` themselves.
    const FREE_KEEPS_ERRNO: bool = true;

    #[inline(always)]
    fn alloc(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        ThreadHeaps::alloc(self, size, align)
    }
    fn alloc_zeroed(&self, size: usize) -> Option<NonNull<u8>> {
        ThreadHeaps::alloc_zeroed(self, size)
    }
    #[inline(always)]
    fn malloc_plain(&self, size: usize) -> *mut u8 {
        ThreadHeaps::malloc_plain(self, size)
    }
    #[inline(always)]
    fn free(&self, ptr: NonNull<u8>) -> Result<(), Fault> {
        ThreadHeaps::free(self, ptr)
    }
    #[inline(always)]
    fn free_plain(&self, ptr: *mut u8) {
        ThreadHeaps::free_plain(self, ptr)
    }
    fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        ThreadHeaps::usable_size(self, ptr)
    }
    fn realloc(&self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        ThreadHeaps::realloc(self, ptr, size)
    }
    fn set_option(&self, param: i32, value: i32) -> bool {
        self.fallback.set_option(param, value)
    }
    /// Inside our segments, an offset in them laid end to end; elsewhere the fallback
    /// heap's answer.
    fn locate(&self, addr: usize) -> Location {
        locate_in_segments(addr).unwrap_or_else(|| self.fallback.locate(addr))
    }
    fn dump(&self, out: &mut Out) {
        ThreadHeaps::dump(self, out)
    }
    fn stats(&self) -> Stats {
        ThreadHeaps::stats(self)
    }
    fn mallinfo(&self) -> MallInfo {
        ThreadHeaps::mallinfo(self)
    }
    fn stats_report(&self, out: &mut Out) {
        ThreadHeaps::stats_report(self, out)
    }
    /// Only the fallback heap's break can go back: segments are never returned.
    fn trim(&self, pad: usize) -> bool {
        self.fallback.trim(pad)
    }
    fn check(&self) -> Result<(), Fault> {
        ThreadHeaps::check(self)
    }
    /// The fallback's lock, then the heaps' and the pool's: after this no thread can
    /// change a heap's owner, move a page, or be inside the fallback. A thread may still
    /// be on its own fast path; the child gives such heaps up (see
    /// [`heap::after_fork_in_child`]).
    fn prepare_fork(&self) {
        self.fallback.prepare_fork();
        heap::before_fork();
    }
    fn after_fork_in_parent(&self) {
        heap::after_fork_in_parent();
        self.fallback.after_fork_in_parent();
    }
    fn after_fork_in_child(&self) {
        heap::after_fork_in_child();
        self.fallback.after_fork_in_child();
    }
}

impl<F: Heap> Default for ThreadHeaps<F> {
    fn default() -> Self {
        Self::new()
    }
}

/// Pages are `PAGE_SIZE` bytes; exposed for the chapter's pictures and the tests.
pub const PAGE_BYTES: usize = PAGE_SIZE;

#[cfg(test)]
mod tests;
