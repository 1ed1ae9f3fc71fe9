//! A page: 64 KiB of blocks of one size class, owned by one thread's heap.
//!
//! ```text
//!   page (64 KiB, in a segment)              its descriptor (in the segment's header)
//!   +------+------+------+------+----        +--------------------------------------+
//!   | blk0 | blk1 | blk2 | blk3 |...         | owner_thread  block_size  class      |
//!   +------+------+------+------+----        | allocated: 1 0 0 1 0 0 ...           |  owner writes
//!     used   free   free   used              | free --> blk2 --> null               |  owner only
//!                                            | local_free --> blk1 --> null         |  owner only
//!                                            | used = 2  bump = 4  high_water = 4   |  owner only
//!                                            | thread_free --> blk3 --> null        |  one CAS
//!                                            +--------------------------------------+
//!   a free block on a list:  | next | rest of the block ...                 |
//!   a block on thread_free:  | next | tag = remote_tag(address) | rest ...  |
//! ```
//!
//! - `free` and `local_free`: the owner's free blocks, linked through their first word.
//!   `malloc` pops `free`; the owner's `free` pushes onto `local_free`, which becomes
//!   `free` when `free` runs out (mimalloc's split). Last freed, first reused: the
//!   program touched that block last, so its memory is likely still in cache. Two
//!   lists rather than one, so that `malloc` does not read what the `free` just before
//!   it wrote (a chain of stores and loads from call to call).
//! - `bump`: blocks from `bump` up have not been handed out since the page was last
//!   empty, and are on no list; `malloc` takes them in address order when both lists
//!   are empty. A page whose last block comes back starts again from block 0, so a
//!   program that fills and empties it gets blocks in address order again, not in
//!   the random order it freed them.
//! - `allocated`: one bit per 16 bytes of the page (every block starts on a multiple
//!   of 16), set while the block starting there is out, written by the owner with plain
//!   loads and stores; other threads only read it. A bit is found from the address
//!   alone (its low 16 bits), with no division by the block size, and only a block's
//!   start ever has its bit set. It is what catches misuse: `free` checks the bit
//!   before anything else, so a double free (a bit already 0) is caught with no lock,
//!   and a set bit also says the address starts a block; `malloc` checks that a block
//!   it pops is a free block of the page before it reads its link (a link overwritten
//!   after the free is heap corruption, reported, not followed).
//! - `thread_free`: blocks freed by other threads, linked through their first word,
//!   pushed with one compare-and-swap; the owner takes the whole list with one swap
//!   ([`Page::collect`]) when the page looks full, or when its own `free` finds the
//!   flag [`REMOTE_FREES`] in the owner word, clears their bits and moves them to
//!   `local_free`.
//! - The second word of a block on `thread_free` holds its *tag*, [`remote_tag`] of its
//!   address, written by the remote free before its push and wiped by the owner when
//!   it collects the block. It is how a second free of a block that waits on the list
//!   is caught, whichever thread makes it: a remote free finds the tag already there;
//!   the owner's free collects the list first (the flag sends it that way), and then
//!   finds the block's bit clear.
//!   The descriptor has no room for a second bitmap (63 descriptors share the
//!   segment's first 64 KiB), and the block's own memory is free at that moment anyway.
//! - `high_water`: `bump` at its highest since the page took its class, as of the
//!   page's last start-over (raised then, not on every block `bump` hands out). The
//!   larger of the two is one more than the highest block index ever handed out: a
//!   free of a block-aligned address at or above it is a pointer this heap never gave
//!   out (exit 2), not a double free (exit 3).
//!
//! The first version of this page had the lists; the second replaced them with the
//! bitmap alone (the lowest free block first, then a ring of the last eight frees),
//! and the lists came back measured: see chapter 5.
//!
//! The invariant, with `|list|` the length of a list:
//!
//! ```text
//!   popcount(allocated) == used
//!   a bit is set only at the start of a block below bump
//!   a block is on free or local_free (once)  <=>  it is below bump and its bit is clear
//!   every block on thread_free is marked allocated, so |thread_free| <= used
//!   every block on thread_free carries its tag; no other block does
//!   bump <= capacity, high_water <= capacity
//!   the program holds used - |thread_free| blocks
//! ```
//!
//! `used` counts blocks the owner has not seen come back: blocks on `thread_free` are
//! still "used" until collected, so `used == 0` means nobody holds a block of the page.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use preload_kit::{Fault, WhyInvalid};

use crate::size_class::{CLASSES, class_size};

/// The size of a page: every block of a page has the same size class.
pub const PAGE_SIZE: usize = 64 * 1024;
/// Every block starts on a multiple of this many bytes from its page's start (every
/// class is a multiple of 16): the bitmap has one bit per granule.
pub const GRANULE: usize = 16;
const BITMAP_WORDS: usize = PAGE_SIZE / GRANULE / 64;

/// A free block on one of a page's lists: its first word links it to the next one; on
/// `thread_free`, its second holds its tag (every block is at least 16 bytes).
#[repr(C)]
pub struct FreeBlock {
    next: *mut FreeBlock,
    /// [`remote_tag`] of the block's address while it waits on `thread_free`; 0 once
    /// the owner has collected it (and the program's data after it is handed out again).
    tag: AtomicUsize,
}

/// The tag a remote free leaves in a block on `thread_free`: its address mixed with a
/// per-process secret, so that no value a program plausibly stores in a live block
/// (its own address, for instance, in a circular list) looks like one.
#[inline]
pub fn remote_tag(addr: usize) -> usize {
    addr ^ remote_tag_secret()
}

/// 8 of the 16 random bytes the kernel gives every process (`AT_RANDOM`), read once;
/// never 0, so a zeroed word is never a tag.
fn remote_tag_secret() -> usize {
    static SECRET: AtomicUsize = AtomicUsize::new(0);
    let secret = SECRET.load(Ordering::Relaxed);
    if secret != 0 {
        return secret;
    }
    // getauxval sets errno when the entry is missing; `free` keeps errno.
    let _errno = preload_kit::os::KeepErrno::new();
    // SAFETY: getauxval only reads the auxiliary vector; AT_RANDOM, when present,
    // points at 16 bytes the kernel placed on the initial stack, which stay for the
    // life of the process.
    let random = unsafe {
        match libc::getauxval(libc::AT_RANDOM) as usize {
            0 => 0x9e37_79b9_7f4a_7c15_u64 as usize,
            bytes => (bytes as *const usize).read_unaligned(),
        }
    };
    // Racing threads compute the same value: whichever store wins is the same.
    let secret = random | 1;
    SECRET.store(secret, Ordering::Relaxed);
    secret
}

/// A page's descriptor. Lives in its segment's header, never in the page itself, so a
/// page's blocks are all the program's and a stray write into a block cannot reach it.
///
/// Fields are grouped by who may write them (see the module's picture). Cells are
/// touched only by the thread that owns the page (or, while the page has no owner,
/// under the pool's lock); atomics may be read by any thread.
///
/// Aligned to a cache line: neighbouring descriptors in a segment's header often belong
/// to different threads, and the owner writes its descriptor on every call; sharing a
/// line would make two threads that share no block wait for each other's writes.
#[repr(C, align(64))]
pub struct Page {
    /// The thread pointer of the owning thread, or 0 while nobody owns the page (in the
    /// pool, or in an abandoned heap), plus the flags [`REMOTE_FREES`] and [`FULL`]
    /// (a thread pointer is aligned, to 64 bytes on x86-64, so its low bits are free).
    /// The owner's `free` compares the whole word with its own thread pointer: one
    /// compare says "my page, and nothing unusual" ([`Page::owner`] leaves the flags
    /// out).
    pub owner_thread: AtomicUsize,
    /// 0 while the page is in the pool; the class's block size while in use.
    pub block_size: AtomicU32,
    /// The size class (meaningful while in use).
    pub class: AtomicU32,
    /// The index of the heap whose queue holds this page (meaningful while in use).
    pub heap: AtomicU32,
    /// Where the page's memory starts (set once, when its segment is made).
    pub start: Cell<usize>,
    /// `floor((2^64 - 1) / block_size) + 1`: with it, one multiply tells whether an
    /// offset is a multiple of the block size (the low 64 bits of the product are below
    /// it) and which block it is in (the high 64 bits), instead of a division (exact
    /// for every offset below 2^32: Lemire, Kaser and Kurz, "Faster remainder by
    /// direct computation", 2019).
    pub magic: AtomicU64,
    /// Blocks in the page (`PAGE_SIZE / block_size`).
    pub capacity: Cell<u32>,
    /// Blocks handed out and not seen back by the owner.
    pub used: Cell<u32>,
    /// Blocks from `bump` up have not been handed out since the page was last empty.
    /// Owner writes (plain stores); other threads read it only to word an error
    /// ([`Page::handed_out_limit`]).
    pub bump: AtomicU32,
    /// Free blocks `malloc` pops, linked through their first word.
    pub free: Cell<*mut FreeBlock>,
    /// Blocks the owner freed, linked through their first word: `free` when it runs out.
    pub local_free: Cell<*mut FreeBlock>,
    /// The highest `bump` reached since [`Page::init`] before the page last started
    /// over: raised when it starts over, not on every block `bump` hands out (which
    /// cost 2-3% of `bench_alloc --small`). With `bump`, it says which blocks have been
    /// handed out ([`Page::handed_out_limit`]). Kept when the page goes to the pool, so
    /// a free into a page that is back in the pool can still tell a block it gave out
    /// from one it never did. Owner writes; other threads read it only to word an
    /// error.
    pub high_water: AtomicU32,
    /// The owning heap's slot for this class's page last freed into
    /// (`ThreadHeap::last_freed`), set with the class: the owner's `free` stores the
    /// page there, with no lookup and no branch. Null while the page is in the pool.
    pub freed_slot: Cell<*const Cell<*const Page>>,
    /// Links in the owner's queue of pages of this class, or in the pool's list.
    pub next: Cell<*mut Page>,
    pub prev: Cell<*mut Page>,
    /// Whether the memory may be resident (false after `MADV_DONTNEED`).
    pub committed: Cell<bool>,
    /// Blocks freed by other threads, not yet collected by the owner.
    pub thread_free: AtomicPtr<FreeBlock>,
    /// One bit per 16 bytes: set while the program holds the block that starts there.
    pub allocated: [AtomicU64; BITMAP_WORDS],
}

/// In [`Page::owner_thread`]: other threads' frees may wait on `thread_free`. Set by a
/// remote free that finds the list empty, after its push; cleared by the owner just
/// before it takes the list ([`Page::collect`]). While it is set, the owner's `free`
/// leaves its common case for the one that collects first, so a second free of a
/// waiting block finds its bit already clear. It may be set with the list empty (a
/// push collected before its flag landed, or a page adopted with it set): then one
/// `free` takes the longer way and clears it.
pub const REMOTE_FREES: usize = 1;
/// In [`Page::owner_thread`]: `malloc` found the page full and moved on
/// ([`crate::heap::ThreadHeap::alloc_slow`]). The owner's next `free` into it takes the
/// longer way, which clears the flag and brings the page to the front of its queue.
/// mimalloc's `in_full` flag, tested the same way.
pub const FULL: usize = 2;
const OWNER_FLAGS: usize = REMOTE_FREES | FULL;

/// A set bit of a page's bitmap, as [`Page::out_bit`] read it.
pub struct OutBit<'a> {
    cell: &'a AtomicU64,
    /// The word as it was read, the bit cleared.
    cleared: u64,
}

impl OutBit<'_> {
    /// Clears the bit. Owner only: nobody else writes the word, so it still holds what
    /// was read.
    #[inline(always)]
    fn clear(self) {
        self.cell.store(self.cleared, Ordering::Relaxed);
    }
}

/// What a pointer is to its page: the index of the block it starts.
pub enum BlockOf {
    /// `addr` is the start of block `index`.
    Start(usize),
    /// `addr` is inside the page but not at a block's start (or past the last block).
    Inside,
    /// The page holds no blocks now (it is in the pool).
    Unused,
}

impl Page {
    /// The owning thread's pointer (0 for none), without the flags.
    #[inline(always)]
    pub fn owner(&self) -> usize {
        self.owner_thread.load(Ordering::Relaxed) & !OWNER_FLAGS
    }

    /// Sets [`FULL`] (owner only; an atomic OR, as remote frees set [`REMOTE_FREES`]
    /// in the same word).
    pub fn mark_full(&self) {
        self.owner_thread.fetch_or(FULL, Ordering::Relaxed);
    }

    /// Clears [`FULL`] and says whether it was set (owner only).
    pub fn take_full(&self) -> bool {
        self.owner_thread.load(Ordering::Relaxed) & FULL != 0
            && self.owner_thread.fetch_and(!FULL, Ordering::Relaxed) & FULL != 0
    }

    /// The block index `addr` starts, judged from fields any thread may read. `addr`
    /// must lie in this page's `PAGE_SIZE` bytes (as [`crate::segment::page_of`] finds
    /// them): a page starts at a multiple of `PAGE_SIZE`, so the offset is the
    /// address's low bits, with no load of `start`.
    #[inline(always)]
    pub fn block_of(&self, addr: usize) -> BlockOf {
        let size = self.block_size.load(Ordering::Relaxed) as usize;
        if size == 0 {
            return BlockOf::Unused;
        }
        debug_assert!(addr.wrapping_sub(self.start.get()) < PAGE_SIZE);
        let offset = addr % PAGE_SIZE;
        let index = Self::divide(offset, self.magic.load(Ordering::Relaxed));
        // Not at a block's start, or in the tail too short for a whole block.
        if index * size != offset || offset + size > PAGE_SIZE {
            return BlockOf::Inside;
        }
        BlockOf::Start(index)
    }

    /// `offset / block_size`, given the page's `magic` (`offset < 2^32`).
    #[inline(always)]
    fn divide(offset: usize, magic: u64) -> usize {
        ((offset as u128 * magic as u128) >> 64) as usize
    }

    /// Whether `offset` is a multiple of the block size, given the page's `magic`
    /// (`offset < 2^32`): one multiply and one compare.
    #[inline(always)]
    fn is_multiple(offset: usize, magic: u64) -> bool {
        (offset as u64).wrapping_mul(magic) < magic
    }

    /// The word in the bitmap of the block starting at `addr`, an address in this page,
    /// and its bit in the word. A page starts at a multiple of `PAGE_SIZE`, so the
    /// address's low bits are its offset: no load of `start`, and a word index below
    /// the bitmap's length (no bounds check on the fast paths).
    #[inline(always)]
    fn bit(addr: usize) -> (usize, u64) {
        let granule = addr % PAGE_SIZE / GRANULE;
        (granule / 64, 1u64 << (granule % 64))
    }

    /// Whether the program holds a block starting at `addr` (an address in this page).
    /// Any thread may ask; the answer is exact for a block the asker was legitimately
    /// given (the owner's store that set the bit happened before the block was handed
    /// over). True only at a block's start: no other bit is ever set, and an address
    /// inside a granule (`addr + 8`) shares its granule's bit, so it is refused first.
    #[inline(always)]
    pub fn is_allocated(&self, addr: usize) -> bool {
        let (word, bit) = Self::bit(addr);
        addr.is_multiple_of(GRANULE) && self.allocated[word].load(Ordering::Relaxed) & bit != 0
    }

    /// The bit of the block at `addr` if it is set (as [`Page::is_allocated`]), read
    /// once: the owner's `free` then clears it with one store, where
    /// [`Page::mark`] would read the word again.
    #[inline(always)]
    pub fn out_bit(&self, addr: usize) -> Option<OutBit<'_>> {
        let (word, bit) = Self::bit(addr);
        let cell = &self.allocated[word];
        let value = cell.load(Ordering::Relaxed);
        let cleared = value & !bit;
        (addr.is_multiple_of(GRANULE) && cleared != value).then_some(OutBit { cell, cleared })
    }

    /// Sets or clears the bit of the block at `addr`. Owner only: a plain load and
    /// store, no read-modify-write (nobody else writes the word).
    #[inline(always)]
    fn mark(&self, addr: usize, allocated: bool) {
        let (word, bit) = Self::bit(addr);
        let cell = &self.allocated[word];
        let old = cell.load(Ordering::Relaxed);
        cell.store(
            if allocated { old | bit } else { old & !bit },
            Ordering::Relaxed,
        );
    }

    /// Prepares a page from the pool to hold blocks of `class` for heap `heap`, owned by
    /// the thread `owner`. The page must be empty (all bits clear, no lists).
    pub fn init(&self, class: usize, block_size: usize, heap: usize, owner: usize) {
        debug_assert!(self.thread_free.load(Ordering::Relaxed).is_null());
        debug_assert!(
            self.allocated
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == 0)
        );
        debug_assert!(block_size.is_multiple_of(GRANULE));
        self.capacity.set((PAGE_SIZE / block_size) as u32);
        self.used.set(0);
        self.start_over();
        self.high_water.store(0, Ordering::Relaxed);
        self.class.store(class as u32, Ordering::Relaxed);
        self.heap.store(heap as u32, Ordering::Relaxed);
        self.magic
            .store(u64::MAX / block_size as u64 + 1, Ordering::Relaxed);
        self.block_size.store(block_size as u32, Ordering::Relaxed);
        self.owner_thread.store(owner, Ordering::Relaxed);
    }

    /// The owner's fast path: the first block of `free`, or of `local_free` (which
    /// becomes `free`) when `free` is empty, else the block at `bump`
    /// ([`Page::pop_fresh`]); `None` when the page is full (then the caller collects
    /// `thread_free` or moves to another page: [`crate::heap::ThreadHeap::alloc_slow`]).
    ///
    /// The block is checked before its link is read: inside the page, at a block's
    /// start, its bit clear. Only a program that wrote into a block after freeing it
    /// fails that, and it is told so instead of being handed its own bad link.
    #[inline(always)]
    pub fn pop(&self) -> Option<*mut u8> {
        match self.pop_listed() {
            Some(block) => Some(block),
            None => self.pop_fresh(),
        }
    }

    /// [`Page::pop`] from the lists alone: `None` when both are empty.
    #[inline(always)]
    pub fn pop_listed(&self) -> Option<*mut u8> {
        let mut block = self.free.get();
        if block.is_null() {
            block = self.local_free.replace(ptr::null_mut());
            if block.is_null() {
                return None;
            }
        }
        let offset = (block as usize).wrapping_sub(self.start.get());
        let (word_index, bit) = Self::bit(block as usize);
        let cell = &self.allocated[word_index];
        let word = cell.load(Ordering::Relaxed);
        // Its bit set: `marked == word` if it was set already.
        let marked = word | bit;
        if marked == word
            || offset >= PAGE_SIZE
            || !Self::is_multiple(offset, self.magic.load(Ordering::Relaxed))
        {
            Self::corrupt_link(block as usize);
        }
        cell.store(marked, Ordering::Relaxed);
        self.used.set(self.used.get() + 1);
        // SAFETY: checked just above: a free block of this page, so its first word is
        // the link its free wrote (a program's write after the free may have changed
        // it; the next pop checks whatever it says).
        self.free.set(unsafe { (*block).next });
        Some(block as *mut u8)
    }

    /// Both lists are empty: the block at `bump`, never handed out since the page was
    /// last empty; `None` when there is none.
    #[inline(always)]
    pub fn pop_fresh(&self) -> Option<*mut u8> {
        let index = self.bump.load(Ordering::Relaxed);
        if index >= self.capacity.get() {
            return None;
        }
        self.bump.store(index + 1, Ordering::Relaxed);
        let block =
            self.start.get() + index as usize * self.block_size.load(Ordering::Relaxed) as usize;
        self.mark(block, true);
        self.used.set(self.used.get() + 1);
        Some(block as *mut u8)
    }

    /// A link on `free` names no free block of the page: the program wrote into a block
    /// after freeing it.
    #[cold]
    #[inline(never)]
    fn corrupt_link(block: usize) -> ! {
        crate::report_in_pages(
            Fault::Corruption {
                addr: block,
                what: "a free block's link was overwritten (use after free)",
            },
            "malloc",
        )
    }

    /// Every block of the page is free: hand them out from block 0 again, in address
    /// order, rather than in the order they were freed. Owner only, `used == 0`.
    #[inline]
    fn start_over(&self) {
        self.free.set(ptr::null_mut());
        self.local_free.set(ptr::null_mut());
        let bump = self.bump.load(Ordering::Relaxed);
        if bump > self.high_water.load(Ordering::Relaxed) {
            self.high_water.store(bump, Ordering::Relaxed);
        }
        // Release: a thread that reads this 0 in `handed_out_limit` sees the raised
        // `high_water` too.
        self.bump.store(0, Ordering::Release);
    }

    /// One more than the highest block index handed out since [`Page::init`]: every
    /// block below it has been handed out at least once, none above it ever (blocks
    /// are first handed out in address order, from `bump`). Any thread may ask, to
    /// word an error; for a block the asker was given, the answer is above its index.
    pub fn handed_out_limit(&self) -> usize {
        // Acquire: pairs with the Release in `start_over`.
        let bump = self.bump.load(Ordering::Acquire);
        self.high_water.load(Ordering::Relaxed).max(bump) as usize
    }

    /// Whether the program holds the block at `addr`, as the owner sees it: its bit is
    /// set and it is not waiting on `thread_free` (looked for only while remote frees
    /// wait, so the owner reads the block only then).
    #[inline(always)]
    pub fn is_out(&self, addr: usize) -> bool {
        self.is_allocated(addr)
            && (self.thread_free.load(Ordering::Relaxed).is_null()
                || !Self::is_on_thread_free(addr))
    }

    /// Whether the block at `addr` carries the tag of a block waiting on `thread_free`.
    #[cold]
    fn is_on_thread_free(addr: usize) -> bool {
        let block = addr as *const FreeBlock;
        // SAFETY: `addr` is the start of a block of this page (at least 16 bytes, in
        // our segment): its second word is ours to read. A live block holds the
        // program's data there, which is a tag only by a 1 in 2^63 chance.
        unsafe { (*block).tag.load(Ordering::Relaxed) == remote_tag(addr) }
    }

    /// The fault of a free (or `realloc`) of block `index` at `addr`, whose bit is
    /// clear or which waits on `thread_free`: a block handed out since the page took
    /// its class was freed twice; one above `high_water` was never handed out.
    #[cold]
    pub fn fault_for_freed(&self, addr: usize, index: usize) -> Fault {
        if index >= self.handed_out_limit() {
            return Fault::InvalidPointer {
                addr,
                why: WhyInvalid::NotABlockStart,
            };
        }
        Fault::DoubleFree { addr }
    }

    /// The fault of a free of `addr` in this page while it is in the pool: a block of
    /// its last class below its `high_water` was given out and is free now (a double
    /// free); anything else was never given out. (A page never used has no class and
    /// a `high_water` of 0.)
    #[cold]
    pub fn fault_for_unused(&self, addr: usize) -> Fault {
        let invalid = Fault::InvalidPointer {
            addr,
            why: WhyInvalid::NotABlockStart,
        };
        let high_water = self.handed_out_limit();
        let class = self.class.load(Ordering::Relaxed) as usize;
        if class >= CLASSES {
            return invalid;
        }
        let size = class_size(class);
        let offset = addr.wrapping_sub(self.start.get());
        if high_water == 0 || size == 0 || offset >= PAGE_SIZE || !offset.is_multiple_of(size) {
            return invalid;
        }
        if offset / size >= high_water {
            return invalid;
        }
        Fault::DoubleFree { addr }
    }

    /// The owner freed a block here: when the current page's lists are empty, `malloc`
    /// moves to this page, and takes the block just freed first (the head of
    /// `local_free`). A store with no branch: a test (is it noted already? is it the front?) is
    /// mispredicted when frees land on a class's pages in random order, which cost
    /// `bench_alloc --small`'s batch half a quarter of its time (see chapter 5).
    #[inline(always)]
    pub fn note_freed_into(&self) {
        let slot = self.freed_slot.get();
        // SAFETY: the caller owns the page, so it is in use and `freed_slot` was set
        // by `ThreadHeap::alloc_slow` to an element of the static `HEAPS` (the owning
        // heap's `last_freed`), which lives as long as the process.
        unsafe { (*slot).set(self) };
    }

    /// The block at `block` is free again (owner only): its bit cleared, on
    /// `local_free`. Returns `used`, now one less.
    #[inline(always)]
    fn release(&self, block: *mut FreeBlock) -> u32 {
        self.mark(block as usize, false);
        self.push_local(block)
    }

    /// The block at `block`, its bit cleared, goes on `local_free` (owner only).
    /// Returns `used`, now one less.
    #[inline(always)]
    fn push_local(&self, block: *mut FreeBlock) -> u32 {
        let used = self.used.get() - 1;
        self.used.set(used);
        // SAFETY: the block is free now, and a block of this page: its first word is
        // the owner's to use as the link.
        unsafe { (*block).next = self.local_free.get() };
        self.local_free.set(block);
        used
    }

    /// The owner frees block `index` at `addr`: checked against the bitmap, then its bit
    /// cleared. No lock, no atomic instruction, no access to the block itself. Returns
    /// whether the page is now empty.
    #[inline(always)]
    pub fn free_local(&self, addr: usize, index: usize) -> Result<bool, Fault> {
        match self.out_bit(addr) {
            Some(bit)
                if self.thread_free.load(Ordering::Relaxed).is_null()
                    || !Self::is_on_thread_free(addr) =>
            {
                Ok(self.free_owned(addr, bit))
            }
            _ => Err(self.fault_for_freed(addr, index)),
        }
    }

    /// The owner frees the block at `addr`, which it has checked is out
    /// ([`Page::is_out`]): its bit cleared, the block on `local_free`. Returns whether
    /// the page is now empty (then its lists start over).
    #[inline(always)]
    pub fn free_owned(&self, addr: usize, bit: OutBit) -> bool {
        debug_assert!(self.is_allocated(addr));
        bit.clear();
        if self.push_local(addr as *mut FreeBlock) == 0 {
            self.start_over();
            return true;
        }
        false
    }

    /// Another thread frees block `index` at `addr`: its tag written, then one
    /// compare-and-swap loop onto `thread_free`. The bitmap is only read here (a clear
    /// bit is a double free); the owner clears it when it collects the block.
    ///
    /// Out of line: inlined into `free`, its registers made every owner's free save
    /// and restore six of them (measured on `cache-thrash`, where no free is remote).
    #[inline(never)]
    pub fn free_remote(&self, addr: usize, index: usize) -> Result<(), Fault> {
        if !self.is_allocated(addr) {
            return Err(self.fault_for_freed(addr, index));
        }
        self.tag_remote_free(addr)?;
        let block = addr as *mut FreeBlock;
        let mut head = self.thread_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is the caller's to give back; its first word becomes
            // the link. Nobody else reads it until the push below succeeds.
            unsafe { (*block).next = head };
            // Release: the link (and the program's last writes to the block) happen
            // before the owner's Acquire swap in `collect` reads them.
            match self.thread_free.compare_exchange_weak(
                head,
                block,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        // The first block to wait: tell the owner's `free` (a list that was not empty
        // has the flag already, or its owner is about to take it whole). Release: an
        // owner that clears the flag this sets (with Acquire, in `collect`) then sees
        // the push above.
        if head.is_null() {
            self.owner_thread.fetch_or(REMOTE_FREES, Ordering::Release);
        }
        Ok(())
    }

    /// Marks the block at `addr` as waiting on `thread_free` with its tag: a tag
    /// already there is a second free of a block not yet collected, whichever thread
    /// freed it first. A load and a store, not an atomic swap: two frees of one block
    /// that race (a data race in the program) can both miss the other's tag; then both
    /// push the block, and `collect` finds it twice on its list, before it can be
    /// handed out again, and reports it.
    #[inline]
    fn tag_remote_free(&self, addr: usize) -> Result<(), Fault> {
        let block = addr as *const FreeBlock;
        let tag = remote_tag(addr);
        // SAFETY: the block's bit is set, so it is a block of this page that is out;
        // its memory is ours to write from here on (the program is giving it back).
        let word = unsafe { &(*block).tag };
        // Acquire pairs with the Release in `collect`: reading the wiped tag, we see the
        // bit the owner cleared before it (checked just below).
        if word.load(Ordering::Acquire) == tag || !self.is_allocated(addr) {
            return Err(Fault::DoubleFree { addr });
        }
        // Relaxed: published to the owner by the Release of the push that follows.
        word.store(tag, Ordering::Relaxed);
        Ok(())
    }

    /// The owner takes every block other threads freed and clears its bit. A block
    /// pushed twice is found with its bit already clear: a double free (and a list that
    /// may loop, which this check also ends).
    ///
    /// [`REMOTE_FREES`] comes off first, then the list: a block pushed after the swap
    /// finds the list empty and sets the flag again; one pushed before it is taken by
    /// the swap. Acquire: when the flag cleared here was set by a remote free, its push
    /// happened before, and the list is not seen empty.
    pub fn collect(&self) -> Result<(), Fault> {
        if self.owner_thread.load(Ordering::Relaxed) & REMOTE_FREES != 0 {
            self.owner_thread
                .fetch_and(!REMOTE_FREES, Ordering::Acquire);
        }
        if self.thread_free.load(Ordering::Relaxed).is_null() {
            return Ok(());
        }
        // Acquire: pairs with the Release of each push in `free_remote`.
        let mut block = self.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
        while !block.is_null() {
            if !self.is_allocated(block as usize) {
                return Err(Fault::DoubleFree {
                    addr: block as usize,
                });
            }
            // SAFETY: pushed by `free_remote`, so its first word is the link.
            let next = unsafe { (*block).next };
            self.release(block);
            // Release, after the bit is cleared: a free that reads the wiped tag (with
            // Acquire, in `tag_remote_free`) finds the bit clear.
            // SAFETY: as above; the block is ours until `pop` hands it out again.
            unsafe { (*block).tag.store(0, Ordering::Release) };
            block = next;
        }
        Ok(())
    }

    /// The page's figures as another thread can read them without stopping the owner:
    /// its block size, its capacity, and how many blocks are out (counted from the
    /// bitmap, so blocks waiting on `thread_free` count as out, as in `used`). `None`
    /// while the page is in the pool. A page that changes meanwhile may be read half
    /// before and half after; the counts stay within `0..=capacity`.
    pub fn census(&self) -> Option<(usize, usize, usize)> {
        let size = self.block_size.load(Ordering::Relaxed) as usize;
        if size == 0 {
            return None;
        }
        let capacity = PAGE_SIZE / size;
        let marked: usize = self
            .allocated
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum();
        Some((size, capacity, marked.min(capacity)))
    }

    /// Whether the page is the first of its owner's queue (the one `malloc` takes
    /// blocks from): the only page of a queue with no `prev`. Owner only.
    #[inline(always)]
    pub fn is_front(&self) -> bool {
        self.prev.get().is_null()
    }

    /// Whether the owner can allocate from the page without collecting.
    pub fn has_free(&self) -> bool {
        self.used.get() < self.capacity.get()
    }

    /// Marks a page that has no blocks out as unused (before it goes to the pool).
    pub fn retire(&self) {
        debug_assert_eq!(self.used.get(), 0);
        // No block is out, so no bit is set: the next class starts from a clear bitmap.
        debug_assert!(
            self.allocated
                .iter()
                .all(|w| w.load(Ordering::Relaxed) == 0)
        );
        self.owner_thread.store(0, Ordering::Relaxed);
        self.block_size.store(0, Ordering::Relaxed);
        self.freed_slot.set(ptr::null());
    }

    /// Checks the page's invariant (see the module documentation). Owner only, or a
    /// page nobody can touch meanwhile.
    pub fn check(&self) -> Result<(), Fault> {
        let corrupt = |what| {
            Err(Fault::Corruption {
                addr: self.start.get(),
                what,
            })
        };
        let capacity = self.capacity.get() as usize;
        let size = self.block_size.load(Ordering::Relaxed) as usize;
        if size == 0 || capacity != PAGE_SIZE / size {
            return corrupt("a page's capacity does not match its block size");
        }
        let marked: usize = self
            .allocated
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum();
        if marked != self.used.get() as usize {
            return corrupt("a page's popcount(allocated) != used");
        }
        // Every free block is on `free` or `local_free` once, or from `bump` up: the
        // lists hold `capacity - used - (capacity - bump)` blocks, each below `bump`
        // with its bit clear (a list longer than that, a loop included, fails).
        let bump = self.bump.load(Ordering::Relaxed) as usize;
        if bump > capacity || self.high_water.load(Ordering::Relaxed) as usize > capacity {
            return corrupt("a page's bump or high-water mark is past its capacity");
        }
        let set_bits = self.allocated.iter().enumerate().flat_map(|(word, bits)| {
            let bits = bits.load(Ordering::Relaxed);
            (0..64)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| word * 64 + bit)
        });
        for granule in set_bits {
            let offset = granule * GRANULE;
            if !offset.is_multiple_of(size) || offset / size >= bump {
                return corrupt("a page's bit is set where no block below bump starts");
            }
        }
        let Some(listed) = bump.checked_sub(self.used.get() as usize) else {
            return corrupt("a page has more blocks out than it handed out");
        };
        let mut on_lists = 0;
        for head in [self.free.get(), self.local_free.get()] {
            let mut block = head;
            while !block.is_null() {
                on_lists += 1;
                let in_page = (block as usize).wrapping_sub(self.start.get()) < PAGE_SIZE;
                let free_below_bump = in_page
                    && matches!(self.block_of(block as usize),
                        BlockOf::Start(i) if i < bump && !self.is_allocated(block as usize));
                if !free_below_bump || on_lists > listed {
                    return corrupt("a page's free lists hold a block that is not free");
                }
                // SAFETY: a free block of this page: its first word is its link.
                block = unsafe { (*block).next };
            }
        }
        if on_lists != listed {
            return corrupt("a page's free lists miss a free block");
        }
        let mut on_thread_free = 0;
        let mut block = self.thread_free.load(Ordering::Acquire);
        while !block.is_null() {
            on_thread_free += 1;
            let in_page = (block as usize).wrapping_sub(self.start.get()) < PAGE_SIZE;
            let listed = in_page
                && matches!(self.block_of(block as usize), BlockOf::Start(_))
                && self.is_allocated(block as usize);
            if !listed
                || on_thread_free > self.used.get()
                || !Self::is_on_thread_free(block as usize)
            {
                return corrupt("a page's thread_free list holds a block that is not out");
            }
            // SAFETY: a block of this page that is out, pushed by `free_remote`.
            block = unsafe { (*block).next };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magic_divides_and_tests_multiples_exactly_for_every_class_and_offset() {
        for class in 0..CLASSES {
            let size = class_size(class);
            let magic = u64::MAX / size as u64 + 1;
            for offset in 0..PAGE_SIZE {
                assert_eq!(
                    Page::divide(offset, magic),
                    offset / size,
                    "{offset} / {size}"
                );
                assert_eq!(
                    Page::is_multiple(offset, magic),
                    offset.is_multiple_of(size),
                    "{offset} % {size}"
                );
            }
        }
    }
}
