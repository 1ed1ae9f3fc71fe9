//! The one lock around the heap, and what `fork` needs from it.
//!
//! A `pthread_mutex_t` with a static initialiser: no allocation, no initialisation
//! call, and the futex-based slow path sleeps instead of spinning when threads
//! outnumber cores.
//!
//! Fork: only the forking thread survives in the child. If another thread held the
//! lock at that instant, the child's lock stays held forever and its first `malloc`
//! deadlocks. The `pthread_atfork` handlers (registered by [`crate::export_malloc!`])
//! take the lock before the fork, so the heap is consistent when copied, and release
//! it on both sides afterwards.

use core::cell::UnsafeCell;

pub struct Lock {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: the mutex is designed to be shared between threads; all access goes through
// pthread calls, which synchronise.
unsafe impl Sync for Lock {}

impl Lock {
    pub const fn new() -> Self {
        Lock {
            mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
        }
    }

    pub fn acquire(&self) -> Guard<'_> {
        // SAFETY: the mutex was statically initialised and is never moved (it lives
        // in a static).
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        Guard { lock: self }
    }

    /// Takes the lock and keeps it until [`Lock::release_after_fork`]: the
    /// `pthread_atfork` "prepare" handler.
    pub fn hold_for_fork(&self) {
        core::mem::forget(self.acquire());
    }

    /// Releases the lock taken by [`Lock::hold_for_fork`], in parent and child alike.
    /// In the child the calling thread is the one that took it, so unlocking is valid.
    pub fn release_after_fork(&self) {
        // SAFETY: this thread holds the lock since `hold_for_fork` (in the child,
        // the thread that called fork is the one that survives).
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
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
        // SAFETY: a Guard exists only while its thread holds the lock.
        unsafe { libc::pthread_mutex_unlock(self.lock.mutex.get()) };
    }
}
