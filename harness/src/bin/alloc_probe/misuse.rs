//! Misuse that per-thread heaps make harder to see (phase 5 on): a block freed twice
//! when one of the frees, or both, come from another thread than the one that
//! allocated it; and a pointer at a block boundary that was never handed out. Each
//! probe ends the process with the allocator's report; if it comes back, it fails.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Outcome;

/// A small block, with a neighbour of its size kept alive so that its page (in any
/// allocator that groups blocks by size) stays in use around the misuse.
fn small_pair() -> Result<(*mut c_void, *mut c_void), String> {
    // SAFETY: plain malloc; both checked below.
    let (block, neighbour) = unsafe { (crate::c::malloc(48), crate::c::malloc(48)) };
    if block.is_null() || neighbour.is_null() {
        return Err("malloc(48) returned NULL".into());
    }
    Ok((block, neighbour))
}

/// A thread started before the misuse that frees one block when told to, so that no
/// allocation (starting a thread allocates) comes between the two frees and hands the
/// block out again: then the second free would be legal.
struct Freer {
    /// The block to free, 0 while there is none; set back to 0 once freed.
    task: &'static AtomicUsize,
}

impl Freer {
    fn start() -> Freer {
        let task: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        std::thread::spawn(move || {
            loop {
                let block = task.load(Ordering::Acquire);
                if block != 0 {
                    // SAFETY: as `free(3)`; whether the block is still out is what the
                    // probe tests.
                    unsafe { crate::c::free(block as *mut c_void) };
                    task.store(0, Ordering::Release);
                }
                std::thread::yield_now();
            }
        });
        Freer { task }
    }

    /// Has the thread free `block`, and waits until it has (or the process ended).
    fn free(&self, block: *mut c_void) {
        self.task.store(block as usize, Ordering::Release);
        while self.task.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
    }
}

/// Freed by one other thread, then by another, before the owner looks at its page.
pub fn double_free_remote_remote() -> Outcome {
    let (first, second) = (Freer::start(), Freer::start());
    let (block, _neighbour) = small_pair()?;
    first.free(block);
    second.free(block);
    Err("a block freed twice by other threads than its owner was not reported".into())
}

/// Freed by its owner, then by another thread.
pub fn double_free_local_remote() -> Outcome {
    let other = Freer::start();
    let (block, _neighbour) = small_pair()?;
    // SAFETY: the block came from malloc; freed once here.
    unsafe { crate::c::free(block) };
    other.free(block);
    Err("a block freed by its owner, then by another thread, was not reported".into())
}

/// Freed by another thread, then by its owner (before the owner could have reused it).
pub fn double_free_remote_local() -> Outcome {
    let other = Freer::start();
    let (block, _neighbour) = small_pair()?;
    other.free(block);
    // SAFETY: as `free(3)`: the second free is the misuse under test.
    unsafe { crate::c::free(std::hint::black_box(block)) };
    Err("a block freed by another thread, then by its owner, was not reported".into())
}

/// Frees the address 1000 blocks of 48 bytes past a fresh 48-byte block: an address a
/// block of that size could start at, but that no `malloc` returned.
pub fn never_given_out() -> Outcome {
    let (block, _neighbour) = small_pair()?;
    let beyond = block.cast::<u8>().wrapping_add(48 * 1000).cast::<c_void>();
    // SAFETY: as `free(3)`: the pointer is the misuse under test.
    unsafe { crate::c::free(std::hint::black_box(beyond)) };
    Err("free of an address 1000 blocks past a fresh one (never given out) was not reported".into())
}
