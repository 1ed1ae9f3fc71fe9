//! `fork`, in one place: the `pthread_atfork` handlers of every exported allocator.
//!
//! [`crate::export_malloc!`] defines three `extern "C"` handlers that call
//! [`prepare`], [`in_parent`] and [`in_child`] with its allocator, and registers them
//! with [`register`] when the library is loaded. Anything else that must happen around
//! every `fork` belongs here, not in the macro or in a phase; what the allocator
//! itself must do is its side of the [`SharedAllocator`] contract.

//!
//! ## Fork beside stdio: the lock order
//!
//! glibc's `fork` runs the prepare handlers *first*, and only then takes stdio's list
//! lock (the lock `fflush(NULL)` holds while it takes each FILE's lock) and its own
//! malloc's locks, in that order. An allocator that takes its lock in a prepare handler
//! takes it before the list lock, the opposite order to every other thread:
//!
//! ```text
//!   fork thread   holds the allocator lock (prepare)  waits for the list lock (fork)
//!   flush thread  holds the list lock (fflush(NULL))  waits for a FILE's lock
//!   read thread   holds that FILE's lock (getline)    waits for the allocator lock (realloc)
//! ```
//!
//! and the three wait forever (glibc's `tst-malloc-fork-deadlock`). So [`prepare`]
//! takes the list lock itself (`_IO_list_lock`, exported by glibc), then the
//! allocator's: the order glibc's own malloc keeps. `fork` takes the list lock again,
//! which is fine: it is recursive. Afterwards:
//!
//! - in the parent, glibc releases its hold, then [`in_parent`] releases the
//!   allocator's lock and ours on the list (`_IO_list_unlock`);
//! - in the child, glibc 2.36 re-initialises the list lock before the child handlers
//!   run if the parent had threads, and leaves it as it was (held by us, the one
//!   thread) if not; so [`in_child`] re-initialises it too (`_IO_list_resetlock`),
//!   which is right in both cases: the child has one thread, and it holds nothing.

use crate::shared::SharedAllocator;

unsafe extern "C" {
    /// glibc's stdio list lock (recursive), taken by `fflush(NULL)`, `fopen`, `fork`.
    fn _IO_list_lock();
    fn _IO_list_unlock();
    /// Re-initialises the list lock to unlocked: only for a child of `fork`.
    fn _IO_list_resetlock();
}

/// The prepare handler: runs in the forking thread before `fork`. Takes stdio's list
/// lock, then the allocator's locks (see the module comment for why in that order).
pub fn prepare<A: SharedAllocator>(allocator: &A) {
    // SAFETY: glibc's list lock is a recursive lock this thread may take; the parent
    // and child handlers release it.
    unsafe { _IO_list_lock() };
    allocator.prepare_fork();
}

/// The parent handler: runs in the parent after `fork`. Releases what [`prepare`]
/// took, in the opposite order.
pub fn in_parent<A: SharedAllocator>(allocator: &A) {
    allocator.after_fork_in_parent();
    // SAFETY: this thread took the list lock in `prepare` and still holds it.
    unsafe { _IO_list_unlock() };
}

/// The child handler: runs in the child after `fork`. The child's only thread is this
/// one, so both locks start again free.
pub fn in_child<A: SharedAllocator>(allocator: &A) {
    allocator.after_fork_in_child();
    // SAFETY: the child has one thread; re-initialising the list lock is what glibc
    // itself does in a child of a threaded parent.
    unsafe { _IO_list_resetlock() };
}

/// Registers the three handlers with `pthread_atfork`. Called once, from the library's
/// constructor (an `.init_array` entry), not under any allocator lock: if
/// `pthread_atfork` itself allocates, that allocation simply goes through `malloc`.
pub fn register(prepare: extern "C" fn(), in_parent: extern "C" fn(), in_child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions that live as long as the library;
    // pthread_atfork only records their addresses.
    unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
}
