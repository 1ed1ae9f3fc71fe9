//! `fork`, in one place: the `pthread_atfork` handlers of every exported allocator.
//!
//! [`crate::export_malloc!`] defines three `extern "C"` handlers that call
//! [`prepare`], [`in_parent`] and [`in_child`] with its allocator, and hands them to
//! [`install`] when the library is loaded; they are registered with `pthread_atfork`
//! when the process has more than one thread (see *When to register*, below).
//! Anything else that must happen around every `fork` belongs here, not in the macro
//! or in a phase; what the allocator itself must do is its side of the
//! [`SharedAllocator`] contract.

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
//!
//! ## When to register: the first lock taken with two threads
//!
//! The handlers matter only if, at the instant of a `fork`, a thread other than the
//! forking one may be inside the allocator. While the process has one thread that is
//! impossible, so the handlers are registered only when a lock is first taken while
//! glibc's `__libc_single_threaded` is false ([`ensure_registered`], called by
//! [`crate::lock::Lock::acquire`] before it takes the lock). Registering costs a
//! single-threaded program a 64 KiB block of libc's read-only data that
//! `__register_atfork` reads and nothing else touches (measured with `perf record -e
//! page-faults -d`; the kernel maps file pages in 64 KiB blocks).
//!
//! Why that is enough:
//! - A lock held at a `fork` by another thread was taken while the process had two
//!   threads (no thread can appear while the lock is held: the allocator never
//!   creates one), so its taker registered first, and the `fork` runs the handlers.
//!   The forking thread need not have allocated at all: `pthread_create` clears
//!   `__libc_single_threaded` before the new thread runs, so the first lock taken by
//!   *any* thread after that registers.
//! - Phase 5's lock-free paths: every thread but the first gets its heap under a lock,
//!   so it has registered before it allocates. The first thread got its heap while
//!   alone; if it is in the middle of its fast path when another thread forks without
//!   handlers, the child never uses that heap (the first thread is the main thread,
//!   whose thread pointer no new thread gets), as with handlers, which would mark it
//!   lost.
//! - A registration racing a `fork` is serialised by glibc's atfork lock, which `fork`
//!   holds from its prepare handlers to its parent handlers when the process has
//!   threads: the registering thread waits in `pthread_atfork`, outside every
//!   allocator lock, and every other thread that needs a lock waits for the
//!   registration ([`REGISTRATION`]), so nobody is inside the allocator for that
//!   `fork`. The child of such a fork inherits a registration in progress by a thread
//!   it does not have; it sees another pid in [`REGISTERING_PID`] and registers itself
//!   (unless the handlers had been recorded before the `fork`: then [`in_child`] has
//!   marked them registered).
//! - `pthread_atfork` may allocate (glibc's handler list grows on the heap beyond 48
//!   entries); that `malloc` comes from the registering thread, which goes on without
//!   waiting for itself.

use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use crate::shared::SharedAllocator;
use crate::thread::thread_pointer;

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
    // The handlers ran, so this child's copy of glibc's list holds them, even if the
    // thread that registered them had not yet said so when the process forked.
    REGISTRATION.store(REGISTERED, Ordering::Release);
    allocator.after_fork_in_child();
    // SAFETY: the child has one thread; re-initialising the list lock is what glibc
    // itself does in a child of a threaded parent.
    unsafe { _IO_list_resetlock() };
}

/// The three handlers of the library's allocator, given by [`install`]: addresses of
/// `extern "C" fn()`, 0 until then.
static HANDLERS: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

/// Where the registration stands: [`NOT_REGISTERED`], [`REGISTERED`], or else the
/// thread pointer of the thread registering them now (thread pointers are aligned, so
/// never 0 or 1).
static REGISTRATION: AtomicUsize = AtomicUsize::new(NOT_REGISTERED);
const NOT_REGISTERED: usize = 0;
const REGISTERED: usize = 1;
/// The process in which the registration in progress started: a `fork` child that
/// inherits one sees another pid, and knows its registering thread is not there.
static REGISTERING_PID: AtomicI32 = AtomicI32::new(0);

/// Records the handlers, from the library's constructor (an `.init_array` entry), and
/// registers them at once if the process already has threads (a library loaded late).
pub fn install(prepare: extern "C" fn(), in_parent: extern "C" fn(), in_child: extern "C" fn()) {
    for (slot, handler) in HANDLERS.iter().zip([prepare, in_parent, in_child]) {
        slot.store(handler as usize, Ordering::Release);
    }
    if !crate::lock::single_threaded() {
        ensure_registered();
    }
}

/// Registers the handlers unless that is done: for a thread about to take an
/// allocator lock while the process has threads (see the module comment). Returns
/// once they are registered (or being registered by this very thread).
#[inline(always)]
pub fn ensure_registered() {
    if REGISTRATION.load(Ordering::Acquire) != REGISTERED {
        register_or_wait();
    }
}

/// Whether the handlers are registered (for the tests).
pub fn registered() -> bool {
    REGISTRATION.load(Ordering::Acquire) == REGISTERED
}

/// The slow path of [`ensure_registered`]: claim the registration and register, or
/// wait while another thread of this process does.
#[cold]
#[inline(never)]
fn register_or_wait() {
    let handlers = HANDLERS.each_ref().map(|slot| slot.load(Ordering::Acquire));
    if handlers.contains(&0) {
        // The constructor has not run yet; it registers when it does.
        return;
    }
    let me = thread_pointer();
    // SAFETY: getpid has no preconditions and does not allocate.
    let pid = unsafe { libc::getpid() };
    loop {
        let state = REGISTRATION.load(Ordering::Acquire);
        if state == REGISTERED || state == me {
            return;
        }
        // Another thread of this process is registering: wait for it. (Its pid is
        // stored before its claim, so a claim seen here has its pid.)
        if state != NOT_REGISTERED && REGISTERING_PID.load(Ordering::Acquire) == pid {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
            continue;
        }
        // Nobody registers, or a thread that is not in this process (we are a fork
        // child) was: claim it.
        REGISTERING_PID.store(pid, Ordering::Release);
        if REGISTRATION
            .compare_exchange(state, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: each handler was stored by `install` from an `extern "C" fn()`
            // of this library, which stays loaded as long as the process.
            let [prepare, in_parent, in_child] = handlers
                .map(|address| unsafe { core::mem::transmute::<usize, extern "C" fn()>(address) });
            register(prepare, in_parent, in_child);
            REGISTRATION.store(REGISTERED, Ordering::Release);
            return;
        }
    }
}

/// Registers the three handlers with `pthread_atfork`. Called once per process (and
/// once more in a child that inherited an unfinished registration), never under an
/// allocator lock: if `pthread_atfork` itself allocates, that allocation simply goes
/// through `malloc`.
pub fn register(prepare: extern "C" fn(), in_parent: extern "C" fn(), in_child: extern "C" fn()) {
    // SAFETY: the handlers are plain functions that live as long as the library;
    // pthread_atfork only records their addresses.
    unsafe { libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::Lock;
    use core::sync::atomic::AtomicU32;

    static PREPARED: AtomicU32 = AtomicU32::new(0);
    static IN_PARENT: AtomicU32 = AtomicU32::new(0);
    static IN_CHILD: AtomicU32 = AtomicU32::new(0);

    extern "C" fn count_prepare() {
        PREPARED.fetch_add(1, Ordering::Relaxed);
    }
    extern "C" fn count_in_parent() {
        IN_PARENT.fetch_add(1, Ordering::Relaxed);
    }
    extern "C" fn count_in_child() {
        IN_CHILD.fetch_add(1, Ordering::Relaxed);
    }

    /// A process with threads (the test runner's) takes a lock: from then on `fork`
    /// runs the handlers, once each. Fails if the lock skips the registration (the
    /// counters stay at 0) or registers twice (they reach 2).
    #[test]
    fn the_first_lock_taken_with_threads_registers_the_handlers_once() {
        assert!(
            !crate::lock::single_threaded(),
            "the test runner has threads"
        );
        // What `install` stores, without its immediate registration: the lock must do it.
        for (slot, handler) in HANDLERS.iter().zip([
            count_prepare as extern "C" fn(),
            count_in_parent,
            count_in_child,
        ]) {
            slot.store(handler as usize, Ordering::Release);
        }
        let lock = Lock::new();
        drop(lock.acquire());
        drop(lock.acquire());
        assert!(registered());

        // SAFETY: the child only reads an atomic and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let status = if IN_CHILD.load(Ordering::Relaxed) == 1 {
                0
            } else {
                1
            };
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(status) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child handler did not run exactly once (wait status {status:#x})"
        );
        assert_eq!(PREPARED.load(Ordering::Relaxed), 1);
        assert_eq!(IN_PARENT.load(Ordering::Relaxed), 1);
    }
}
