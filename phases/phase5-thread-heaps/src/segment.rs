//! Segments: where pages come from, and how a pointer finds its page.
//!
//! ```text
//!   segment (4 MiB, aligned to 4 MiB)
//!   +-----------------+--------+--------+-----   --------+
//!   | header: 63 page | page 1 | page 2 |  ...   page 63 |
//!   | descriptors     | 64 KiB | 64 KiB |                |
//!   +-----------------+--------+--------+-----   --------+
//!   ^ addr & !(SEGMENT_SIZE - 1)          page index = (addr - segment) / PAGE_SIZE
//! ```
//!
//! A pointer finds its page by arithmetic alone: mask to the segment, divide to the page,
//! index the header. Before reading the header, [`page_of`] asks the segment map (one
//! bit per possible segment address, in a static) whether that segment is ours, so a
//! pointer this allocator never gave out is never followed into memory it does not own.
//! Segments are never unmapped (their pages are returned to the kernel with
//! `MADV_DONTNEED` instead), so a bit once set stays true.
//!
//! Pages without an owner wait in the [`Pool`], under its lock: the only lock a small
//! `malloc` can meet, and only when its thread needs a whole new page.
//!
//! A new segment comes from the program break when it can ([`make_segment`]: the break
//! is rounded up to a segment boundary, then moved by one segment), as the earlier
//! phases' small blocks did, so tools and checks that look for small blocks in the
//! `[heap]` mapping still find them there; otherwise from `mmap`. Moving the break is
//! not thread-safe, so the caller holds the lock of the fallback heap, the only other
//! code of ours that moves it.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};

use preload_kit::lock::Lock;
use preload_kit::os;

use crate::page::{PAGE_SIZE, Page};

pub const SEGMENT_SIZE: usize = 4 * 1024 * 1024;
pub const PAGES_PER_SEGMENT: usize = SEGMENT_SIZE / PAGE_SIZE;
/// Page 0's room holds the descriptors of pages 1..63.
const FIRST_PAGE: usize = 1;
const _: () = assert!(PAGES_PER_SEGMENT * core::mem::size_of::<Page>() <= PAGE_SIZE);

/// User-space addresses below this (47 bits on x86-64 and on aarch64 with 48-bit
/// addresses) can be segments; anything above is not ours.
pub const ADDRESS_LIMIT: usize = 1 << 47;
const MAP_WORDS: usize = ADDRESS_LIMIT / SEGMENT_SIZE / 64;

/// One bit per 4 MiB of address space: set when a segment of ours starts there.
/// 4 MiB of zeroed static memory, of which the kernel makes resident only the pages a
/// set bit lies in.
static SEGMENT_MAP: [AtomicU64; MAP_WORDS] = [const { AtomicU64::new(0) }; MAP_WORDS];

fn map_position(segment: usize) -> Option<(usize, u64)> {
    if segment >= ADDRESS_LIMIT {
        return None;
    }
    let index = segment / SEGMENT_SIZE;
    Some((index / 64, 1 << (index % 64)))
}

/// Whether a segment of ours starts at `segment`.
#[inline(always)]
fn is_segment(segment: usize) -> bool {
    match map_position(segment) {
        // Relaxed: a pointer into a segment reaches a thread only after the segment was
        // registered (the bit was set before any block of it was handed out, and the
        // pointer's hand-over orders the two); for a pointer not ours the bit is 0.
        Some((word, bit)) => SEGMENT_MAP[word].load(Ordering::Relaxed) & bit != 0,
        None => false,
    }
}

/// The segment header: the descriptors of its pages, the segment's number, and the
/// pool's notes on the pages it has not handed out yet.
#[repr(C)]
struct Header {
    pages: [Page; PAGES_PER_SEGMENT],
    number: UnsafeCell<usize>,
    /// The first page the pool has never handed out (pages from there on are
    /// untouched, descriptors included). Pool's lock.
    fresh: UnsafeCell<usize>,
    /// The next older segment that still has untouched pages. Pool's lock.
    older_with_fresh: UnsafeCell<*mut Header>,
    /// The segment the pool was given before this one (null for the first). Written
    /// once, under the pool's lock, before the segment is linked in.
    older: UnsafeCell<*mut Header>,
}

/// Where a pointer is, as far as the pages are concerned.
pub enum Owner {
    /// In a page of ours (which may be in use or in the pool).
    Page(&'static Page),
    /// In one of our segments, but not in a page (its header).
    Header,
    /// Not in any segment of ours: the fallback heap's, or nobody's.
    Elsewhere,
}

/// The page `addr` lies in, found without reading anything but the segment map and,
/// for one of our segments, its header.
#[inline(always)]
pub fn page_of(addr: usize) -> Owner {
    let segment = addr & !(SEGMENT_SIZE - 1);
    if !is_segment(segment) {
        return Owner::Elsewhere;
    }
    let index = (addr - segment) / PAGE_SIZE;
    if index < FIRST_PAGE {
        return Owner::Header;
    }
    let header = segment as *const Header;
    // SAFETY: the segment map says a segment of ours, with its header, starts here;
    // headers live as long as the process; `index` < PAGES_PER_SEGMENT by construction.
    Owner::Page(unsafe { &(*header).pages[index] })
}

/// The descriptor of the page `addr` lies in, for `free`'s common case: like
/// [`page_of`], without telling the header from a page. For an address in the header
/// it is the descriptor of page 0, which is never used (the header fills that page) and
/// stays as the segment was made, all zeros: no owner and no bit set, so every check
/// of its bits fails and the caller takes [`page_of`]'s way.
#[inline(always)]
pub fn descriptor_of(addr: usize) -> Option<&'static Page> {
    let segment = addr & !(SEGMENT_SIZE - 1);
    if !is_segment(segment) {
        return None;
    }
    let index = (addr - segment) / PAGE_SIZE;
    let header = segment as *const Header;
    // SAFETY: as in `page_of`; page 0's descriptor is part of the header too.
    Some(unsafe { &(*header).pages[index] })
}

/// A segment's number (1-based, in order of creation) and `addr`'s offset in it, for
/// addresses printed the same in every run.
pub fn locate(addr: usize) -> Option<(usize, usize)> {
    let segment = addr & !(SEGMENT_SIZE - 1);
    if !is_segment(segment) {
        return None;
    }
    let header = segment as *const Header;
    // SAFETY: as in `page_of`; the number is written before the segment is registered.
    Some((unsafe { *(*header).number.get() }, addr - segment))
}

/// Makes a segment's memory, zeroed and aligned to [`SEGMENT_SIZE`]: from the break if
/// it can be moved, else from `mmap`. `None` when the kernel refuses both.
///
/// # Safety
/// Nothing else may move the break meanwhile: the caller holds the fallback heap's lock.
pub unsafe fn make_segment() -> Option<usize> {
    // A test process's own malloc (glibc's) moves the break too, under a lock of its
    // own: unit tests map their segments.
    if cfg!(test) {
        return mapped();
    }
    from_break().or_else(mapped)
}

/// Rounds the break up to a segment boundary and moves it one segment further. The
/// rounding (up to 4 MiB of address space) is never touched, so it costs no memory.
fn from_break() -> Option<usize> {
    let old = os::current_break();
    let segment = old.checked_next_multiple_of(SEGMENT_SIZE)?;
    let grow = isize::try_from(segment - old + SEGMENT_SIZE).ok()?;
    let before = os::sbrk(grow)?;
    if before != old {
        // Someone moved the break between our two calls: give back what we took, if
        // the break is still where we left it, and use a mapping instead.
        if os::current_break() == before.wrapping_add(grow as usize) {
            os::sbrk(-grow);
        }
        return None;
    }
    map_position(segment).map(|_| segment)
}

/// Maps twice a segment's size and trims it to an aligned segment.
fn mapped() -> Option<usize> {
    let mapped = os::map_anonymous(2 * SEGMENT_SIZE)?.as_ptr() as usize;
    let segment = (mapped + SEGMENT_SIZE - 1) & !(SEGMENT_SIZE - 1);
    let before = segment - mapped;
    let after = 2 * SEGMENT_SIZE - before - SEGMENT_SIZE;
    // SAFETY: both ranges are parts of the mapping just made, outside the segment, and
    // nothing refers to them.
    unsafe {
        if before > 0 {
            os::unmap(NonNull::new_unchecked(mapped as *mut u8), before);
        }
        if after > 0 {
            os::unmap(
                NonNull::new_unchecked((segment + SEGMENT_SIZE) as *mut u8),
                after,
            );
        }
    }
    map_position(segment).map(|_| segment)
}

/// Pages that belong to no heap, behind the pool's lock.
pub struct Pool {
    lock: Lock,
    state: UnsafeCell<PoolState>,
}

struct PoolState {
    /// Unowned pages that have been in use and may still be resident (at most
    /// [`RETAINED_EMPTY_PAGES`]), linked through `Page::next`; the most recently
    /// returned first. `take` hands these out before any other.
    warm: *mut Page,
    /// Unowned pages that have been in use and were given back to the kernel, linked
    /// the same way: handed out once `warm` is empty.
    cold: *mut Page,
    /// The newest segment with pages never handed out, which `take` hands out in
    /// order once `warm` and `cold` are empty. Their descriptors are not written before that, so
    /// the header's memory becomes resident only as pages are used (a segment's 63
    /// descriptors are 40 KiB).
    fresh: *mut Header,
    /// How many pages on `warm`.
    committed: usize,
    /// How many pages in the pool: on `warm`, on `cold`, and never handed out.
    pages: usize,
    /// The newest segment: every segment of the pool, linked through `older`, for the
    /// stats' walk ([`Pool::for_each_page_used`]).
    newest: *mut Header,
    /// Segments made so far: a segment's number (in its header), for addresses printed
    /// without ASLR. Here rather than in a static of its own, which the linker placed
    /// after the 4 MiB segment map, on a page that only it kept resident.
    segments: usize,
}

/// Empty pages the pool keeps resident (1 MiB) for the next thread that needs one;
/// a page returned beyond that goes back to the kernel at once. So the delay before
/// memory returns is "16 more pages freed", not a clock, and a burst of short-lived
/// threads reuses warm pages while a program that shrinks gives memory back.
pub const RETAINED_EMPTY_PAGES: usize = 16;

// SAFETY: `state` is only touched with `lock` held (and in a fork child, by its only
// thread).
unsafe impl Sync for Pool {}

impl Pool {
    pub const fn new() -> Self {
        Pool {
            lock: Lock::new(),
            state: UnsafeCell::new(PoolState {
                warm: ptr::null_mut(),
                cold: ptr::null_mut(),
                fresh: ptr::null_mut(),
                committed: 0,
                pages: 0,
                newest: ptr::null_mut(),
                segments: 0,
            }),
        }
    }

    /// An empty page from the pool; `None` when the pool is empty (then the caller
    /// makes a segment: [`make_segment`], and [`Pool::add_segment`]).
    ///
    /// Resident pages first: a class that takes a page for its last few blocks uses
    /// only the start of it, and a page given back to the kernel becomes resident only
    /// as far as those blocks reach, where a resident one stays resident whole. A
    /// program that empties and refills its pages (`xmalloc`'s batches) takes the
    /// resident ones first, and its classes' last, partly used pages are the others.
    pub fn take(&self) -> Option<&'static Page> {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held.
        let state = unsafe { &mut *self.state.get() };
        let page = if !state.warm.is_null() {
            state.committed -= 1;
            &mut state.warm
        } else if !state.cold.is_null() {
            &mut state.cold
        } else {
            return Self::take_fresh(state);
        };
        // SAFETY: pages on the pool's lists are descriptors in our segments' headers.
        let taken: &'static Page = unsafe { &**page };
        *page = taken.next.get();
        state.pages -= 1;
        taken.committed.set(true);
        taken.next.set(ptr::null_mut());
        taken.prev.set(ptr::null_mut());
        Some(taken)
    }

    /// A page from `warm` only; `None` when it is empty.
    pub fn take_resident(&self) -> Option<&'static Page> {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held.
        let state = unsafe { &mut *self.state.get() };
        if state.warm.is_null() {
            return None;
        }
        state.committed -= 1;
        // SAFETY: pages on the pool's lists are descriptors in our segments' headers.
        let taken: &'static Page = unsafe { &*state.warm };
        state.warm = taken.next.get();
        state.pages -= 1;
        taken.next.set(ptr::null_mut());
        taken.prev.set(ptr::null_mut());
        Some(taken)
    }

    /// A page never handed out, from the newest segment that has one; its descriptor
    /// is written now, for the first time. The pool's lock is held.
    fn take_fresh(state: &mut PoolState) -> Option<&'static Page> {
        while !state.fresh.is_null() {
            let header = state.fresh;
            // SAFETY: `fresh` links headers of registered segments, which live as long
            // as the process; the pool's lock is held, which guards these two fields.
            let (fresh, older) = unsafe {
                (
                    &mut *(*header).fresh.get(),
                    *(*header).older_with_fresh.get(),
                )
            };
            let index = (*fresh).max(FIRST_PAGE);
            if index >= PAGES_PER_SEGMENT {
                state.fresh = older;
                continue;
            }
            *fresh = index + 1;
            state.pages -= 1;
            // SAFETY: as above; `index` < PAGES_PER_SEGMENT.
            let page: &'static Page = unsafe { &(*header).pages[index] };
            page.start.set(header as usize + index * PAGE_SIZE);
            // Like a page taken from `free`: in use from now on, so possibly resident.
            page.committed.set(true);
            return Some(page);
        }
        None
    }

    /// Returns an empty page (retired, no blocks out) to the pool.
    pub fn give_back(&self, page: &'static Page) {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held.
        let state = unsafe { &mut *self.state.get() };
        let list = if state.committed < RETAINED_EMPTY_PAGES {
            state.committed += 1;
            &mut state.warm
        } else {
            if page.committed.get() {
                // `free` keeps errno, and this may be inside one.
                let _errno = os::KeepErrno::new();
                // SAFETY: the page's memory is ours and holds no block (it is empty):
                // the kernel may drop it and give zeroes back on the next touch.
                unsafe {
                    libc::madvise(
                        page.start.get() as *mut libc::c_void,
                        PAGE_SIZE,
                        libc::MADV_DONTNEED,
                    )
                };
                page.committed.set(false);
            }
            &mut state.cold
        };
        page.next.set(*list);
        *list = page as *const Page as *mut Page;
        state.pages += 1;
    }

    /// Pages in the pool, and how many of them may be resident.
    pub fn counts(&self) -> (usize, usize) {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held.
        let state = unsafe { &*self.state.get() };
        (state.pages, state.committed)
    }

    /// How many segments have been made since the process started.
    pub fn segments_made(&self) -> usize {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held.
        unsafe { (*self.state.get()).segments }
    }

    /// Registers a segment made by [`make_segment`] and puts its pages in the pool.
    pub fn add_segment(&self, segment: usize) {
        let Some((word, bit)) = map_position(segment) else {
            return;
        };
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held.
        let state = unsafe { &mut *self.state.get() };
        let header = segment as *mut Header;
        state.segments += 1;
        let number = state.segments;
        // SAFETY: the header is the start of fresh zeroed memory of ours (a new mapping
        // or new break memory); zero bytes are a valid empty `Page` (no lists, clear
        // bitmap, no owner, block size 0: `free` of an address in it is refused). Only
        // the fields below are written now; a page's descriptor is written when the
        // pool first hands the page out (`take_fresh`), in order, so addresses in a
        // fresh process come out the same in every run. Segments are added under the
        // pool's lock, one at a time.
        unsafe {
            *(*header).number.get() = number;
            *(*header).fresh.get() = FIRST_PAGE;
            *(*header).older_with_fresh.get() = state.fresh;
            *(*header).older.get() = state.newest;
        }
        state.newest = header;
        state.fresh = header;
        state.pages += PAGES_PER_SEGMENT - FIRST_PAGE;
        // Release: the header written above is visible to any thread that sees the bit
        // (pointers into the segment are handed out only after this, in any case).
        // Never the bit of address 0 (neither the break nor a mapping starts there):
        // `free(NULL)` finds no segment ([`descriptor_of`]).
        debug_assert_ne!(segment, 0);
        SEGMENT_MAP[word].fetch_or(bit, Ordering::Release);
    }

    /// Calls `f` on the descriptor of every page the pool has ever handed out, in
    /// every segment it was given, and returns how many segments those are. Pages
    /// never handed out are skipped, so their descriptors stay untouched (and not
    /// resident). The lock is held only to read each segment's links, never while `f`
    /// runs: the owners keep allocating meanwhile, and what `f` reads of a page is as
    /// of that moment.
    pub fn for_each_page_used(&self, mut f: impl FnMut(&'static Page)) -> usize {
        let mut header = {
            let _guard = self.lock.acquire();
            // SAFETY: the lock is held.
            unsafe { (*self.state.get()).newest }
        };
        let mut segments = 0;
        while !header.is_null() {
            segments += 1;
            let (fresh, older) = {
                let _guard = self.lock.acquire();
                // SAFETY: `newest` and `older` link headers of segments given to this
                // pool, which live as long as the process; the lock guards both fields.
                unsafe { (*(*header).fresh.get(), *(*header).older.get()) }
            };
            for index in FIRST_PAGE..fresh.min(PAGES_PER_SEGMENT) {
                // SAFETY: as above; `index` < PAGES_PER_SEGMENT, and the page's
                // descriptor was written when the pool first handed it out.
                f(unsafe { &(*header).pages[index] });
            }
            header = older;
        }
        segments
    }

    /// `fork` prepare handler: hold the lock so the child gets a consistent pool.
    pub fn before_fork(&self) {
        self.lock.hold_for_fork();
    }
    pub fn after_fork_in_parent(&self) {
        self.lock.release_after_fork();
    }
    pub fn after_fork_in_child(&self) {
        self.lock.reset_in_child();
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_from_the_pool_is_found_from_any_address_inside_it() {
        static POOL: Pool = Pool::new();
        POOL.add_segment(mapped().expect("memory"));
        let page = POOL.take().expect("a page");
        let start = page.start.get();
        assert_eq!(start % PAGE_SIZE, 0);
        for addr in [start, start + 1, start + PAGE_SIZE - 1] {
            match page_of(addr) {
                Owner::Page(found) => assert!(ptr::eq(found, page)),
                _ => panic!("page not found for {addr:#x}"),
            }
        }
        let segment = start & !(SEGMENT_SIZE - 1);
        assert!(matches!(page_of(segment + 8), Owner::Header));
        assert!(
            locate(start).is_some_and(|(number, offset)| number >= 1 && offset == start - segment)
        );
        POOL.give_back(page);
    }

    #[test]
    fn pointers_outside_every_segment_are_not_followed() {
        let on_stack = 0u64;
        for addr in [
            0,
            16,
            &on_stack as *const u64 as usize,
            usize::MAX - 15,
            1 << 50,
        ] {
            assert!(matches!(page_of(addr), Owner::Elsewhere), "{addr:#x}");
        }
    }

    #[test]
    fn the_pool_keeps_a_few_empty_pages_resident_returns_the_rest_and_hands_out_resident_ones_first()
     {
        static POOL: Pool = Pool::new();
        POOL.add_segment(mapped().expect("memory"));
        let pages: std::vec::Vec<_> = (0..RETAINED_EMPTY_PAGES + 8)
            .map(|_| {
                let page = POOL.take().expect("a page");
                page.committed.set(true);
                page
            })
            .collect();
        for page in pages {
            POOL.give_back(page);
        }
        let (_, committed) = POOL.counts();
        assert_eq!(committed, RETAINED_EMPTY_PAGES);
        // The resident ones go out first, though the others came back last.
        for taken in 1..=RETAINED_EMPTY_PAGES {
            POOL.take().expect("a page");
            assert_eq!(POOL.counts().1, RETAINED_EMPTY_PAGES - taken);
        }
    }
}
