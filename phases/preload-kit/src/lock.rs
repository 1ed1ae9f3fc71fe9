//! The one lock around the heap, and what `fork` needs from it.
//!
//! A futex lock (the three-state mutex of Drepper's "Futexes Are Tricky"): an
//! uncontended `malloc` pays one compare-and-swap to lock and one swap to unlock, with
//! no function call into libpthread; a contended one sleeps in the kernel instead of
//! spinning, which matters when threads outnumber cores. No allocation, no
//! initialisation call: the lock is a zeroed word in a static.
//!
//! ```text
//!   state 0: free     1: held, nobody waiting     2: held, someone may be sleeping
//! ```
//!
//! While the process has a single thread, nobody can contend, so the lock skips its
//! atomic read-modify-write instructions (each costs about as much as a whole glibc
//! `malloc` fast path) and uses plain stores. glibc's allocator does the same, and
//! exports the flag it uses: `__libc_single_threaded`, cleared by `pthread_create`
//! before the new thread runs and never set again. A thread cannot appear while this
//! lock is held, since the heap's code never creates one.
//!
//! Fork: only the forking thread survives in the child. If another thread held the
//! lock at that instant, the child's lock would stay held forever and its first
//! `malloc` would deadlock. The `pthread_atfork` handlers (installed by
//! [`crate::export_malloc!`]) take the lock before the fork, so the heap is consistent
//! when copied, and release it on both sides afterwards. They are registered by the
//! first lock taken while the process has threads ([`crate::fork::ensure_registered`]):
//! before that no other thread can hold a lock.

use core::sync::atomic::{AtomicU32, Ordering};

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;

/// Spins this many times before sleeping: the heap lock is held for a few hundred
/// nanoseconds at most, often less than a trip through the kernel.
const SPINS: u32 = 100;

pub struct Lock {
    state: AtomicU32,
}

impl Lock {
    pub const fn new() -> Self {
        Lock {
            state: AtomicU32::new(FREE),
        }
    }

    pub fn acquire(&self) -> Guard<'_> {
        if single_threaded() {
            debug_assert_eq!(
                self.state.load(Ordering::Relaxed),
                FREE,
                "the allocator re-entered itself"
            );
            self.state.store(HELD, Ordering::Relaxed);
        } else {
            // Before the lock is taken: registering may allocate.
            crate::fork::ensure_registered();
            if self
                .state
                .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                self.acquire_contended();
            }
        }
        Guard { lock: self }
    }

    /// Slow path of [`Lock::acquire`]: spin briefly, then mark the lock contended and
    /// sleep until the holder's release wakes us.
    #[cold]
    fn acquire_contended(&self) {
        for _ in 0..SPINS {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == FREE
                && self
                    .state
                    .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        // From here on we may sleep, so we take the lock as CONTENDED: its release
        // then knows to wake a sleeper (perhaps needlessly, never wrongly). A futex
        // wait that finds the word changed sets errno (EAGAIN), and `free` keeps errno.
        let _errno_kept = crate::os::KeepErrno::new();
        while self.state.swap(CONTENDED, Ordering::Acquire) != FREE {
            futex_wait(&self.state, CONTENDED);
        }
    }

    fn release(&self) {
        // Still single-threaded: nobody can be waiting. (The flag only ever goes from
        // true to false, and not while the lock is held.)
        if single_threaded() {
            self.state.store(FREE, Ordering::Relaxed);
        } else if self.state.swap(FREE, Ordering::Release) == CONTENDED {
            wake_one_keeping_errno(&self.state);
        }
    }

    /// Takes the lock and keeps it until [`Lock::release_after_fork`]: the
    /// `pthread_atfork` "prepare" handler.
    pub fn hold_for_fork(&self) {
        core::mem::forget(self.acquire());
    }

    /// Releases the lock taken by [`Lock::hold_for_fork`], in the parent.
    pub fn release_after_fork(&self) {
        self.release();
    }

    /// Resets the lock in the child: the child's only thread is the one that took it
    /// in the prepare handler, and nobody can be waiting.
    pub fn reset_in_child(&self) {
        self.state.store(FREE, Ordering::Relaxed);
    }
}

impl Default for Lock {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Guard<'a> {
    lock: &'a Lock,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.release();
    }
}

unsafe extern "C" {
    /// glibc's "this process has one thread" flag (`<sys/single_threaded.h>`, glibc 2.32).
    static __libc_single_threaded: core::ffi::c_char;
}

pub(crate) fn single_threaded() -> bool {
    // SAFETY: glibc defines the flag for the life of the process; it is a byte that only
    // this thread can change while no other thread exists. A volatile read, so the
    // compiler does not keep a stale copy across calls that may create threads.
    unsafe { core::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// Sleeps while `*word == expected` (returns at once if it is not, or on any wake-up:
/// callers re-check).
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the word (a live AtomicU32 in a static) and may sleep;
    // the null timeout means no time limit. Process-private: the heap is not shared.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

/// [`futex_wake_one`] for [`Lock::release`], out of line: only a contended release
/// wakes, and `free` keeps errno.
#[cold]
#[inline(never)]
fn wake_one_keeping_errno(word: &AtomicU32) {
    let _errno_kept = crate::os::KeepErrno::new();
    futex_wake_one(word);
}

fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only wakes threads sleeping on this address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::Lock;
    use std::sync::Arc;

    /// Four threads add to a counter that only the lock protects; lost updates would
    /// show as a short total.
    #[test]
    fn the_lock_excludes() {
        struct Shared {
            lock: Lock,
            count: core::cell::UnsafeCell<u64>,
        }
        // SAFETY: `count` is only touched with `lock` held.
        unsafe impl Sync for Shared {}
        let shared = Arc::new(Shared {
            lock: Lock::new(),
            count: core::cell::UnsafeCell::new(0),
        });
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        let _guard = shared.lock.acquire();
                        // SAFETY: the lock is held.
                        unsafe { *shared.count.get() += 1 };
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // SAFETY: all threads have finished.
        assert_eq!(unsafe { *shared.count.get() }, 400_000);
    }
}
