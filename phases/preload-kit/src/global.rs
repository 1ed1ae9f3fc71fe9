//! The one heap of the process, behind the lock, built on first use.

use core::cell::UnsafeCell;

use crate::lock::Lock;
use crate::{Config, Heap};

/// What lives behind the lock: the settings and the phase's heap.
pub struct State<H> {
    pub config: Config,
    pub heap: H,
    /// Calls since start-up, for debug mode's "check every Nth call".
    pub calls: u64,
}

/// A lazily built heap behind a lock, meant to live in a `static`.
///
/// Lazy, because `malloc` can be called before any constructor of ours runs (the
/// dynamic loader and libc allocate early); so nothing may depend on an init function
/// having run.
pub struct Global<H> {
    lock: Lock,
    state: UnsafeCell<Option<State<H>>>,
}

// SAFETY: `state` is only reached through `with`, which holds `lock` for the whole access.
unsafe impl<H> Sync for Global<H> {}

impl<H: Heap> Global<H> {
    pub const fn new() -> Self {
        Global {
            lock: Lock::new(),
            state: UnsafeCell::new(None),
        }
    }

    /// Runs `f` on the heap with the lock held, building the heap first if this is the
    /// first call. `f` must not call back into the allocator (the lock is not recursive).
    pub fn with<R>(&self, f: impl FnOnce(&mut State<H>) -> R) -> R {
        let _guard = self.lock.acquire();
        // SAFETY: the lock is held, so this is the only reference to the state.
        let slot = unsafe { &mut *self.state.get() };
        let state = match slot {
            Some(state) => state,
            None => Self::build(slot),
        };
        f(state)
    }

    /// The first call's work, kept out of line: a heap's state is kilobytes (the
    /// arena's region table, phase 3's tables), and building it inline would give every
    /// call a frame that size, with a stack probe per page.
    #[cold]
    #[inline(never)]
    fn build(slot: &mut Option<State<H>>) -> &mut State<H> {
        let config = Config::from_env();
        slot.insert(State {
            heap: H::new(&config),
            config,
            calls: 0,
        })
    }

    /// `pthread_atfork` prepare handler: hold the lock across `fork`.
    pub fn before_fork(&self) {
        self.lock.hold_for_fork();
    }

    /// `pthread_atfork` parent handler.
    pub fn after_fork_in_parent(&self) {
        self.lock.release_after_fork();
    }

    /// `pthread_atfork` child handler.
    pub fn after_fork_in_child(&self) {
        self.lock.reset_in_child();
    }
}

impl<H: Heap> Default for Global<H> {
    fn default() -> Self {
        Self::new()
    }
}
