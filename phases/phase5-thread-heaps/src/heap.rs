//! A heap per thread: for each size class, a queue of pages the thread owns.
//!
//! ```text
//!   HEAPS[i]  owner = thread pointer          THREADS (kit ThreadTable)
//!             queues[class] --> page --> page --> page     thread pointer -> &HEAPS[i]
//!             current[class] ----------------^  allocate here, until its lists are empty;
//!             last_freed[class] ------^           then here: the page last freed into
//! ```
//!
//! A thread finds its heap through the kit's [`ThreadTable`] (thread pointer -> heap),
//! which never allocates and never calls `__tls_get_addr`. It learns it is exiting
//! from the kit's [`ThreadKey`]: [`on_thread_exit`] gives the heap's empty pages back
//! to the pool and leaves the others, with their live blocks, in the heap, marked
//! abandoned; the next thread that needs a heap adopts it, pages and all. Until then a
//! free of one of its blocks is a remote free (the page has no owner thread), so it
//! is safe from any thread, the exiting one included.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use preload_kit::Fault;
use preload_kit::lock::Lock;
use preload_kit::thread::{ThreadKey, ThreadTable, thread_pointer};

use crate::page::{Page, REMOTE_FREES};
use crate::segment::Pool;
use crate::size_class::{CLASSES, class_size};

/// Heaps that can exist at once; a thread beyond that uses the fallback heap.
pub const MAX_HEAPS: usize = 1024;

const FREE: u8 = 0;
const OWNED: u8 = 1;
const ABANDONED: u8 = 2;
/// Owned, in a `fork` parent, by a thread the child does not have: its lists may have
/// been half-way through a change when memory was copied, so nobody uses them again.
const LOST_IN_FORK: u8 = 3;

/// Aligned to a cache line, so that no two heaps (of two threads) share one, and no
/// heap shares [`FIRST`]'s: the compiler may split `FIRST` into its two words and drop
/// their alignment (LLVM's scalar replacement of globals), so the heaps keep their
/// distance instead.
#[repr(align(64))]
pub struct ThreadHeap {
    /// The owning thread's pointer, or 0.
    owner: AtomicUsize,
    state: AtomicU8,
    /// For each class, the first page of a doubly linked queue; null when empty.
    queues: [Cell<*const Page>; CLASSES],
    /// For each class, the last page of its queue (null when empty), so a page can be
    /// sent to the back without a walk.
    lasts: [Cell<*const Page>; CLASSES],
    /// For each class, the page `malloc` takes blocks from: until both its lists are
    /// empty, then the page in `last_freed`, else the page `alloc_slow` found room in.
    /// Null when the queue is empty, else a page of the queue (`unlink` points it at
    /// the front when its page leaves the queue). Only `malloc` writes it, so `malloc`
    /// never reads what the `free` just before it wrote (see `last_freed`).
    current: [Cell<*const Page>; CLASSES],
    /// For each class, the page the owner last freed a block into
    /// ([`Page::note_freed_into`]; that block, still in cache, is the head of its
    /// `local_free`), where `malloc` goes when its current page's lists are empty.
    /// Null when the queue is empty, else a page of the queue. A slot apart from
    /// `current`: when `free` stored into `current` itself, the next `malloc`'s first
    /// load waited for that store (3.8% of `bench_alloc --small`, chapter 5).
    last_freed: [Cell<*const Page>; CLASSES],
}

// SAFETY: `queues` and the pages they hold are only touched by the owning thread, or
// under HEAP_LOCK while the heap has no owner (abandoning and adopting take the lock,
// which orders one thread's last use before the next one's first).
unsafe impl Sync for ThreadHeap {}

pub static HEAPS: [ThreadHeap; MAX_HEAPS] = [const {
    ThreadHeap {
        owner: AtomicUsize::new(0),
        state: AtomicU8::new(FREE),
        queues: [const { Cell::new(ptr::null()) }; CLASSES],
        lasts: [const { Cell::new(ptr::null()) }; CLASSES],
        current: [const { Cell::new(ptr::null()) }; CLASSES],
        last_freed: [const { Cell::new(ptr::null()) }; CLASSES],
    }
}; MAX_HEAPS];

/// Taken to give a heap an owner or take it away (never on a fast path).
pub static HEAP_LOCK: Lock = Lock::new();
/// Thread pointer -> the address of the thread's heap (an element of [`HEAPS`]): the
/// fast path gets its heap with no index arithmetic and no bounds check.
pub static THREADS: ThreadTable<{ 2 * MAX_HEAPS }> = ThreadTable::new();
/// Tells us when a thread that has a heap exits; its value is the heap index + 1.
static EXIT: ThreadKey = ThreadKey::new(on_thread_exit);
/// Pages without an owner.
pub static POOL: Pool = Pool::new();

/// The first thread to get a heap, and that heap: in most programs the main thread,
/// which allocates before it starts any other (and a single-threaded program's only
/// one). `malloc`'s common case asks this first: two loads on one line and a compare,
/// where the thread table's home slot costs a hash (a multiply) and two loads on a
/// line found from it; any other thread pays the compare. Set once, under
/// [`HEAP_LOCK`]; when that thread exits, or a fork leaves a child without it,
/// `thread` becomes [`FIRST_GONE`], which no thread pointer equals, for good (a new
/// thread may get the same thread pointer, and must not find this heap). A cache line
/// of its own: every thread reads it on every `malloc`, so nothing written often may
/// share it.
#[repr(C, align(64))]
struct FirstThread {
    thread: AtomicUsize,
    /// The address of its heap, an element of [`HEAPS`]; read only by that thread.
    heap: AtomicUsize,
}

static FIRST: FirstThread = FirstThread {
    thread: AtomicUsize::new(FIRST_UNSET),
    heap: AtomicUsize::new(0),
};
/// [`FIRST`] has not been given a thread yet.
const FIRST_UNSET: usize = 0;
/// [`FIRST`]'s thread is gone: no thread pointer is 1 (they are aligned).
const FIRST_GONE: usize = 1;

/// Takes the calling thread out of [`FIRST`], if it is that thread (it is exiting, or
/// giving up its heap).
fn leave_first(me: usize) {
    if FIRST.thread.load(Ordering::Relaxed) == me {
        FIRST.thread.store(FIRST_GONE, Ordering::Relaxed);
    }
}

/// In a `fork` child, whose only thread is `me`: [`FIRST`]'s thread is gone unless it
/// is `me`.
fn leave_first_unless(me: usize) {
    let first = FIRST.thread.load(Ordering::Relaxed);
    if first != me && first != FIRST_UNSET {
        FIRST.thread.store(FIRST_GONE, Ordering::Relaxed);
    }
}

/// The calling thread's heap, if it has one: the fast path's only lookup.
#[inline(always)]
pub fn current() -> Option<&'static ThreadHeap> {
    THREADS.get().map(|heap| {
        // SAFETY: the table's values are addresses of elements of the static HEAPS
        // (stored by `acquire`, the only writer), which live as long as the process.
        unsafe { &*(heap as *const ThreadHeap) }
    })
}

/// [`current`] for `malloc`'s common case: found with no call ([`FIRST`], else the
/// thread table's home slot), or `None` (no heap, or its table entry is not in its
/// home slot: then the full path looks again).
#[inline(always)]
pub fn current_at_home() -> Option<&'static ThreadHeap> {
    let me = thread_pointer();
    // Relaxed: only the thread itself stores its own pointer in FIRST (after the heap,
    // in program order), and no other thread's pointer equals it.
    let heap = if FIRST.thread.load(Ordering::Relaxed) == me {
        FIRST.heap.load(Ordering::Relaxed)
    } else {
        THREADS.find_at_home(me)?
    };
    // SAFETY: FIRST's heap and the table's values are addresses of elements of the
    // static HEAPS (stored by `acquire`), which live as long as the process; so the
    // address is not 0 either (which spares the compiler a test).
    unsafe {
        core::hint::assert_unchecked(heap != 0);
        Some(&*(heap as *const ThreadHeap))
    }
}

/// The calling thread's heap, giving it one if it has none; `None` when no heap or
/// table slot is left (the caller then uses the fallback heap).
#[inline(always)]
pub fn current_or_new() -> Option<&'static ThreadHeap> {
    match current() {
        Some(heap) => Some(heap),
        None => acquire(),
    }
}

/// Gives the calling thread a heap: an abandoned one if any (its pages are reused),
/// else an unused one.
#[cold]
fn acquire() -> Option<&'static ThreadHeap> {
    let me = thread_pointer();
    let index = {
        let _guard = HEAP_LOCK.acquire();
        let index = HEAPS
            .iter()
            .position(|h| h.state.load(Ordering::Relaxed) == ABANDONED)
            .or_else(|| {
                HEAPS
                    .iter()
                    .position(|h| h.state.load(Ordering::Relaxed) == FREE)
            })?;
        // The index comes from `position`, so it is in range.
        let heap = &HEAPS[index];
        heap.owner.store(me, Ordering::Relaxed);
        heap.state.store(OWNED, Ordering::Relaxed);
        // With the flag that remote frees may wait (they may: the pages had no owner
        // to collect them); the owner's first `free` into each page clears it.
        heap.for_each_page(|page| {
            page.owner_thread
                .store(me | REMOTE_FREES, Ordering::Relaxed)
        });
        index
    };
    let address = &HEAPS[index] as *const ThreadHeap as usize;
    if !THREADS.set(address) {
        release(&HEAPS[index]);
        return None;
    }
    {
        let _guard = HEAP_LOCK.acquire();
        if FIRST.thread.load(Ordering::Relaxed) == FIRST_UNSET {
            FIRST.heap.store(address, Ordering::Relaxed);
            FIRST.thread.store(me, Ordering::Relaxed);
        }
    }
    // If the key cannot be used (a program that created 32 keys before our first
    // malloc), the heap is not given back at exit; it stays with the thread pointer,
    // which the next thread to reuse that control block inherits.
    EXIT.set(index + 1);
    HEAPS.get(index)
}

/// The kit's exit notification: `value` is the exiting thread's heap index + 1.
unsafe extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    let Some(heap) = (value as usize).checked_sub(1).and_then(|i| HEAPS.get(i)) else {
        return;
    };
    let me = thread_pointer();
    if heap.owner.load(Ordering::Relaxed) != me {
        return;
    }
    leave_first(me);
    THREADS.remove();
    if let Err(fault) = heap.give_back_empty_pages() {
        crate::report_in_pages(fault, "free");
    }
    release(heap);
}

/// Leaves `heap` (owned by the calling thread) for another thread to adopt.
fn release(heap: &ThreadHeap) {
    let _guard = HEAP_LOCK.acquire();
    let mut pages = 0;
    heap.for_each_page(|page| {
        // Release: a thread that later reads 0 here and frees remotely sees the page
        // as we left it. Adoption itself is ordered by HEAP_LOCK.
        page.owner_thread.store(0, Ordering::Release);
        pages += 1;
    });
    heap.owner.store(0, Ordering::Relaxed);
    heap.state
        .store(if pages > 0 { ABANDONED } else { FREE }, Ordering::Relaxed);
}

impl ThreadHeap {
    /// A block of `class` from its current page, if it has one: the whole of
    /// `malloc`'s common case. `None` says nothing more (no page, or a full one):
    /// then [`ThreadHeap::alloc`] does the rest.
    #[inline(always)]
    pub fn pop_current(&self, class: usize) -> Option<*mut u8> {
        let page = self.current.get(class)?.get();
        if page.is_null() {
            return None;
        }
        // SAFETY: pages in our queues are descriptors in our segments, which live as
        // long as the process.
        let page = unsafe { &*page };
        if let Some(block) = page.pop_listed() {
            return Some(block);
        }
        // Both lists are empty: blocks freed into another page since come first
        // (`alloc` moves there).
        if !ptr::eq(self.last_freed.get(class)?.get(), page) {
            return None;
        }
        page.pop_fresh()
    }

    /// Makes `page` the class's current page, and the last freed into (so that
    /// `malloc` does not leave it for another page before its lists are empty).
    fn set_current(&self, class: usize, page: *const Page) {
        self.current[class].set(page);
        self.last_freed[class].set(page);
    }

    /// The owner's path: a block of `class` from its current page.
    /// See [`ThreadHeap::alloc_slow`] for everything else.
    #[inline(always)]
    pub fn alloc(&self, class: usize) -> Result<Option<*mut u8>, Fault> {
        let Some(current) = self.current.get(class) else {
            return Ok(None);
        };
        let page = current.get();
        if !page.is_null() {
            // SAFETY: pages in our queues are descriptors in our segments, which live
            // as long as the process.
            let page = unsafe { &*page };
            if let Some(block) = page.pop_listed() {
                return Ok(Some(block));
            }
            let freed = self.last_freed[class].get();
            if !ptr::eq(freed, page) {
                // SAFETY: as above (`last_freed` is a page of the queue).
                let freed = unsafe { &*freed };
                if let Some(block) = freed.pop_listed() {
                    self.current[class].set(freed);
                    return Ok(Some(block));
                }
                self.last_freed[class].set(page);
            }
            if let Some(block) = page.pop_fresh() {
                return Ok(Some(block));
            }
        }
        self.alloc_slow(class)
    }

    /// The current page is full: collect other threads' frees into the front page,
    /// then go round the queue, sending full pages to the back, until a page has room
    /// (it becomes the current page); take a fresh page from the pool only when a whole round found none. Pages that regain room from
    /// their owner's frees come to the front by themselves ([`ThreadHeap::page_has_room`]),
    /// so the round usually stops at once; pages that regain room from other threads'
    /// frees are found here.
    #[cold]
    fn alloc_slow(&self, class: usize) -> Result<Option<*mut u8>, Fault> {
        // The current page had no block: full, until its owner frees into it.
        let current = self.current[class].get();
        if !current.is_null() {
            // SAFETY: as in `alloc`.
            unsafe { (*current).mark_full() };
        }
        let queue = &self.queues[class];
        let mut first_sent_back: *const Page = ptr::null();
        loop {
            let front = queue.get();
            if front.is_null() || ptr::eq(front, first_sent_back) {
                break;
            }
            // SAFETY: as in `alloc`.
            let page: &'static Page = unsafe { &*front };
            page.collect()?;
            if let Some(block) = page.pop() {
                self.set_current(class, page);
                return Ok(Some(block));
            }
            page.mark_full();
            if page.next.get().is_null() {
                break;
            }
            if first_sent_back.is_null() {
                first_sent_back = front;
            }
            self.move_to_back(class, page);
        }
        // A fresh page is needed: first give back the empty pages other classes kept
        // at the front of their queues, so the pool can hand one of them out.
        self.give_back_empty_fronts();
        // A resident page from the pool, else an empty page of another class of this
        // heap (resident too), else one the kernel has to fault in.
        let page = match POOL.take_resident() {
            Some(page) => page,
            None => match self.take_empty_page() {
                Some(page) => page,
                // No page left: the caller makes a segment (it holds the lock that
                // guards the program break) and asks again.
                None => match POOL.take() {
                    Some(page) => page,
                    None => return Ok(None),
                },
            },
        };
        let index = self.index();
        page.init(class, class_size(class), index, thread_pointer());
        page.freed_slot.set(&self.last_freed[class]);
        self.push_front(class, page);
        self.set_current(class, page);
        Ok(page.pop())
    }

    fn index(&self) -> usize {
        (self as *const ThreadHeap as usize - HEAPS.as_ptr() as usize)
            / core::mem::size_of::<ThreadHeap>()
    }

    /// The owner freed a block of `page`, which was full: bring it to the front of its
    /// queue, where `malloc` looks first.
    pub fn page_has_room(&self, page: &'static Page) {
        let class = page.class.load(Ordering::Relaxed) as usize;
        let Some(queue) = self.queues.get(class) else {
            return;
        };
        if !ptr::eq(queue.get(), page) {
            self.unlink(class, page);
            self.push_front(class, page);
        }
    }

    /// The owner freed the last block of `page`: give it back to the pool, unless it is
    /// the page its class allocates from (kept, so a thread that allocates and frees
    /// one block in a loop does not take and return a page each time).
    pub fn page_emptied(&self, page: &'static Page) {
        let class = page.class.load(Ordering::Relaxed) as usize;
        let Some(queue) = self.queues.get(class) else {
            return;
        };
        if ptr::eq(queue.get(), page) {
            return;
        }
        self.unlink(class, page);
        page.retire();
        POOL.give_back(page);
    }

    /// Gives back to the pool every page that is at the front of its queue with no
    /// block out. An emptied front page stays where it is (see
    /// [`ThreadHeap::page_emptied`]), so that a loop that allocates and frees one
    /// block does not take and return a page each time; this is where such pages go
    /// back, once the thread needs a page for some class. Without it, a program that
    /// moves on from one set of sizes to the next (a phase of 40-byte blocks, then
    /// one of 300-byte blocks) would keep a page per class it ever used.
    fn give_back_empty_fronts(&self) {
        for class in 0..CLASSES {
            let front = self.queues[class].get();
            if front.is_null() {
                continue;
            }
            // SAFETY: as in `alloc`.
            let page: &'static Page = unsafe { &*front };
            // `used` counts blocks on `thread_free` too: 0 means none is out anywhere.
            if page.used.get() == 0 {
                self.unlink(class, page);
                page.retire();
                POOL.give_back(page);
            }
        }
    }

    /// An empty page from any of this heap's queues, taken out of it (retired), for a
    /// class that needs a page when the pool has no resident one. Pages stay in their
    /// queue when they empty (only the pool's 16 resident pages are kept when they go
    /// there, the rest returned to the kernel), so a program that empties pages of one
    /// class and then needs pages of another (the `coalescing` trace's runs of sizes)
    /// reuses them here, resident, instead of faulting in new ones; and a program
    /// that empties and refills pages of the same classes (`xmalloc`'s batches) finds
    /// them in its queues without going through the pool at all.
    pub(crate) fn take_empty_page(&self) -> Option<&'static Page> {
        for class in 0..CLASSES {
            let mut page = self.queues[class].get();
            while !page.is_null() {
                // SAFETY: as in `alloc`.
                let candidate: &'static Page = unsafe { &*page };
                page = candidate.next.get();
                // `used` counts blocks on `thread_free` too: 0 means none is out.
                if candidate.used.get() == 0 {
                    self.unlink(class, candidate);
                    candidate.retire();
                    return Some(candidate);
                }
            }
        }
        None
    }

    /// At thread exit: collect every page, and give back those with no block out.
    fn give_back_empty_pages(&self) -> Result<(), Fault> {
        for class in 0..CLASSES {
            let mut page = self.queues[class].get();
            while !page.is_null() {
                // SAFETY: as in `alloc`.
                let current: &'static Page = unsafe { &*page };
                page = current.next.get();
                current.collect()?;
                if current.used.get() == 0 {
                    self.unlink(class, current);
                    current.retire();
                    POOL.give_back(current);
                }
            }
        }
        Ok(())
    }

    fn push_front(&self, class: usize, page: &'static Page) {
        let queue = &self.queues[class];
        let old = queue.get();
        page.prev.set(ptr::null_mut());
        page.next.set(old as *mut Page);
        if old.is_null() {
            self.lasts[class].set(page);
        } else {
            // SAFETY: as in `alloc`.
            unsafe { (*old).prev.set(page as *const Page as *mut Page) };
        }
        queue.set(page);
    }

    fn unlink(&self, class: usize, page: &Page) {
        let (prev, next) = (page.prev.get(), page.next.get());
        if prev.is_null() {
            self.queues[class].set(next);
        } else {
            // SAFETY: linked pages are descriptors in our segments.
            unsafe { (*prev).next.set(next) };
        }
        if next.is_null() {
            self.lasts[class].set(prev);
        } else {
            // SAFETY: as above.
            unsafe { (*next).prev.set(prev) };
        }
        page.next.set(ptr::null_mut());
        page.prev.set(ptr::null_mut());
        if ptr::eq(self.current[class].get(), page) {
            self.current[class].set(self.queues[class].get());
        }
        if ptr::eq(self.last_freed[class].get(), page) {
            self.last_freed[class].set(self.current[class].get());
        }
    }

    fn move_to_back(&self, class: usize, page: &'static Page) {
        let last = self.lasts[class].get();
        if ptr::eq(last, page) {
            return;
        }
        self.unlink(class, page);
        let last = self.lasts[class].get();
        page.prev.set(last as *mut Page);
        if !last.is_null() {
            // SAFETY: as in `unlink`.
            unsafe { (*last).next.set(page as *const Page as *mut Page) };
        }
        self.lasts[class].set(page);
    }

    /// Calls `f` on every page in the heap's queues.
    pub fn for_each_page(&self, mut f: impl FnMut(&'static Page)) {
        for queue in &self.queues {
            let mut page = queue.get();
            while !page.is_null() {
                // SAFETY: as in `alloc`.
                let current: &'static Page = unsafe { &*page };
                page = current.next.get();
                f(current);
            }
        }
    }

    /// Whether the calling thread owns this heap.
    pub fn is_mine(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == thread_pointer()
    }

    pub fn state_name(&self) -> Option<&'static str> {
        match self.state.load(Ordering::Relaxed) {
            OWNED => Some("owned"),
            ABANDONED => Some("abandoned"),
            LOST_IN_FORK => Some("lost in fork"),
            _ => None,
        }
    }

    /// Checks every page of the heap and that each is linked back to it.
    pub fn check(&self) -> Result<(), Fault> {
        let index = self.index();
        let mut result = Ok(());
        for (class, queue) in self.queues.iter().enumerate() {
            let mut page = queue.get();
            let mut prev: *const Page = ptr::null();
            let current_page = self.current[class].get();
            // An empty queue has no current page.
            let mut current_seen = current_page.is_null() && page.is_null();
            while !page.is_null() && result.is_ok() {
                current_seen |= ptr::eq(page, current_page);
                // SAFETY: as in `alloc`.
                let current: &'static Page = unsafe { &*page };
                if current.class.load(Ordering::Relaxed) as usize != class
                    || current.heap.load(Ordering::Relaxed) as usize != index
                    || !ptr::eq(current.prev.get(), prev)
                    || !ptr::eq(current.freed_slot.get(), &self.last_freed[class])
                {
                    result = Err(Fault::Corruption {
                        addr: current.start.get(),
                        what: "a page is in the wrong heap's queue",
                    });
                }
                if result.is_ok() {
                    result = current.check();
                }
                prev = page;
                page = current.next.get();
            }
            if result.is_ok() && !current_seen {
                result = Err(Fault::Corruption {
                    addr: 0,
                    what: "a heap's current page of a class is not in its queue",
                });
            }
            if result.is_ok() && !ptr::eq(self.lasts[class].get(), prev) {
                result = Err(Fault::Corruption {
                    addr: 0,
                    what: "a heap's last page of a class is not the end of its queue",
                });
            }
        }
        result
    }
}

/// Takes the calling thread's heap out of use for good, its pages with it: for tests
/// that leave a page inconsistent on purpose (after a reported double free, a real
/// process has exited).
#[cfg(test)]
pub fn forget_current_heap() {
    if let Some(heap) = current() {
        let _guard = HEAP_LOCK.acquire();
        leave_first(thread_pointer());
        THREADS.remove();
        heap.owner.store(0, Ordering::Relaxed);
        heap.state.store(LOST_IN_FORK, Ordering::Relaxed);
    }
}

/// `fork` prepare handler: no heap changes owner and no page moves while memory is
/// copied.
pub fn before_fork() {
    // The fallback's lock is taken before this (a thread that makes a segment holds
    // it, then takes the pool's), so the order is always fallback, heaps, pool.
    HEAP_LOCK.hold_for_fork();
    POOL.before_fork();
}

pub fn after_fork_in_parent() {
    POOL.after_fork_in_parent();
    HEAP_LOCK.release_after_fork();
}

/// In the child only the forking thread exists. Its heap is intact (it was in
/// `fork`, not in `malloc`). Every other thread's heap may have been in the middle of a
/// change: it is marked lost, its pages lose their owner (so frees of its blocks take
/// the remote path, which only pushes), and its thread-table entry goes, so a new
/// thread that gets the same control block starts with a new heap.
pub fn after_fork_in_child() {
    POOL.after_fork_in_child();
    HEAP_LOCK.reset_in_child();
    let me = thread_pointer();
    leave_first_unless(me);
    THREADS.for_each(|thread, _| {
        if thread != me {
            THREADS.remove_thread(thread);
        }
    });
    for heap in &HEAPS {
        if heap.state.load(Ordering::Relaxed) == OWNED && !heap.is_mine() {
            heap.for_each_page(|page| page.owner_thread.store(0, Ordering::Relaxed));
            heap.owner.store(0, Ordering::Relaxed);
            heap.state.store(LOST_IN_FORK, Ordering::Relaxed);
        }
    }
}
