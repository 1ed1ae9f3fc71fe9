//! `fork`, in one place: the `pthread_atfork` handlers of every exported allocator.
//!
//! [`crate::export_malloc!`] defines three `extern "C"` handlers that call
//! [`prepare`], [`in_parent`] and [`in_child`] with its allocator, and registers them
//! with [`register`] when the library is loaded. Anything else that must happen around
//! every `fork` belongs here, not in the macro or in a phase; what the allocator
//! itself must do is its side of the [`SharedAllocator`] contract.

use crate::shared::SharedAllocator;

/// The prepare handler: runs in the forking thread before `fork`.
pub fn prepare<A: SharedAllocator>(allocator: &A) {
    allocator.prepare_fork();
}

/// The parent handler: runs in the parent after `fork`.
pub fn in_parent<A: SharedAllocator>(allocator: &A) {
    allocator.after_fork_in_parent();
}

/// The child handler: runs in the child after `fork`.
pub fn in_child<A: SharedAllocator>(allocator: &A) {
    allocator.after_fork_in_child();
}

/// Registers the three handlers with `pthread_atfork`. Called once, from the library's
/// constructor (an `.init_array` entry), not under any allocator lock: if
/// `pthread_atfork` itself allocates, that allocation simply goes through `malloc`.
pub fn register(prepare: extern "C" fn(), in_parent: extern "C" fn(), in_child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions that live as long as the library;
    // pthread_atfork only records their addresses.
    unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
}
