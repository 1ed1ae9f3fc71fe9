//! "This thread's" data, found inside `malloc` without allocating and without
//! global-dynamic TLS, and a notification when a thread exits.
//!
//! # Why not `thread_local!`
//!
//! In a `cdylib`, Rust's `thread_local!` uses the general-dynamic TLS model: each access
//! may call `__tls_get_addr`, and glibc's `__tls_get_addr` calls `malloc` when a
//! `dlopen` has grown the thread's vector of TLS blocks (the DTV) since the thread last
//! looked. A `malloc` that reaches `__tls_get_addr` can therefore recurse into itself
//! (glibc 2.39's release notes warn of exactly this). C allocators (mimalloc, jemalloc)
//! ask for the initial-exec model instead; stable Rust cannot choose a TLS model.
//!
//! # What this module offers instead
//!
//! - [`thread_pointer`]: the thread pointer register (`%fs` base on x86-64,
//!   `tpidr_el0` on aarch64), read with one instruction. In glibc it is the address of
//!   the thread's control block, so it is different for every *live* thread and never
//!   changes during a thread's life. It is reused: glibc caches the stacks (and the
//!   control blocks inside them) of exited threads, so a new thread may get the value of
//!   one that has ended, but only after the kernel has reported that thread gone.
//! - [`ThreadTable`]: a lock-free table from thread pointer to one word of the caller's
//!   choosing (typically a pointer to the thread's heap). No allocation: the slots are a
//!   fixed array, meant to live in a `static`.
//! - [`ThreadKey`]: a POSIX thread-specific key, created on first use, whose destructor
//!   is the exit notification. glibc keeps the values of the first 32 keys
//!   (`PTHREAD_KEY_2NDLEVEL_SIZE`) in an array inside the thread's control block:
//!   `pthread_getspecific`/`pthread_setspecific` on such a key neither allocate nor
//!   call `__tls_get_addr`. A key numbered 32 or more would make `pthread_setspecific`
//!   call `calloc`, so [`ThreadKey`] refuses one ([`ThreadKey::set`] returns false) and
//!   the caller falls back to a shared, locked path.
//!
//! # Which one to use on a fast path
//!
//! Measured with `cargo run --release -p preload-kit --example thread_lookup_cost`
//! (100 million lookups each, three runs on a shared 2-core x86-64 VM, glibc 2.36; the
//! loop alone costs 0.6-1.1 ns): reading the thread pointer adds about 0.2 ns; finding
//! its entry in a [`ThreadTable`] about 1.5-2 ns in all; `pthread_getspecific` about
//! 3 ns (a call through the PLT into libc, then a sequence-number check).
//! So the table answers "which heap is mine" and the key only tells us when a thread
//! ends. The thread pointer alone answers "is this page mine" (one compare with the
//! owner recorded in the page), which `free` asks on every call.
//!
//! # Exit
//!
//! glibc runs key destructors after the thread's function has returned and its C++
//! `thread_local` destructors have run, and then frees some of its own per-thread memory
//! (`__libc_thread_freeres`) from the same thread. So a thread may still call `free`,
//! and rarely `malloc`, *after* its destructor: the caller's data must stay usable for
//! that (for example a heap marked abandoned, whose frees take the path other threads'
//! frees take). The destructor runs only if the thread's value is non-null.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The calling thread's thread pointer: the address of its control block in glibc.
/// Never 0 in a thread started by glibc (or the main thread).
#[inline(always)]
pub fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: on x86-64 Linux the `%fs` segment base is the thread's control block,
    // whose first word is a pointer to itself (the TLS ABI requires it); reading it has
    // no side effect and touches no memory but that word.
    unsafe {
        core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
            options(nostack, readonly, preserves_flags, pure));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading the EL0 thread ID register is always allowed at EL0 and has no
    // side effect; glibc keeps the thread's control block address there.
    unsafe {
        core::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
            options(nostack, nomem, preserves_flags, pure));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!("thread_pointer: only x86-64 and aarch64 are supported");
    tp
}

/// A slot of a [`ThreadTable`]: `thread` is 0 when the slot is free, else the thread
/// pointer of the thread that claimed it; `value` is only meaningful while claimed.
struct Slot {
    thread: AtomicUsize,
    value: AtomicUsize,
}

/// A lock-free map from live threads (their [`thread_pointer`]) to one word each, with
/// room for `N` threads at once (`N` a power of two).
///
/// Each thread only ever touches its *own* entry's value, so the value needs no
/// ordering beyond the claim: a thread claims a free slot with one compare-and-swap on
/// `thread`, writes `value`, and later reads it back; another thread reads the slot's
/// `thread` field only to skip it. An entry is removed by the thread itself (typically
/// from its exit notification) or, after a `fork`, by the child for threads that no
/// longer exist.
pub struct ThreadTable<const N: usize> {
    slots: [Slot; N],
}

impl<const N: usize> ThreadTable<N> {
    pub const fn new() -> Self {
        assert!(N.is_power_of_two());
        ThreadTable {
            slots: [const {
                Slot {
                    thread: AtomicUsize::new(0),
                    value: AtomicUsize::new(0),
                }
            }; N],
        }
    }

    /// Where the search for `thread` starts: a multiplicative hash, since thread
    /// pointers are all aligned alike and differ only in their middle bits.
    #[inline(always)]
    fn home(thread: usize) -> usize {
        (thread.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (usize::BITS - N.trailing_zeros())) & (N - 1)
    }

    /// The slot `thread` claimed, if any: usually its home slot, checked inline; else
    /// [`ThreadTable::search`].
    #[inline(always)]
    fn slot_of(&self, thread: usize) -> Option<&Slot> {
        // The index is masked to the table's size: it cannot panic.
        let home = &self.slots[Self::home(thread)];
        // Relaxed: only `thread` itself ever stores its own pointer here (in `set`), so
        // if it is here, this thread put it there and sees it.
        if home.thread.load(Ordering::Relaxed) == thread {
            return Some(home);
        }
        self.search(thread)
    }

    /// Scans the whole table (slots are freed without tombstones, so an empty slot does
    /// not end the search): a thread whose home slot was taken, or that has no entry
    /// yet (it misses once, before it claims).
    #[cold]
    fn search(&self, thread: usize) -> Option<&Slot> {
        let home = Self::home(thread);
        (1..N)
            .map(|step| &self.slots[(home + step) & (N - 1)])
            .find(|slot| slot.thread.load(Ordering::Relaxed) == thread)
    }

    /// The calling thread's value, if it has one.
    #[inline(always)]
    pub fn get(&self) -> Option<usize> {
        self.find(thread_pointer())
    }

    /// The value of `thread` (the caller's own thread pointer, already read) if its
    /// entry is in its home slot, as it usually is; `None` says nothing more (ask
    /// [`ThreadTable::get`]). For a fast path that must not call anything:
    /// [`ThreadTable::get`] may search the table.
    #[inline(always)]
    pub fn find_at_home(&self, thread: usize) -> Option<usize> {
        let home = &self.slots[Self::home(thread)];
        // Relaxed: as in `slot_of`.
        if home.thread.load(Ordering::Relaxed) == thread {
            return Some(home.value.load(Ordering::Relaxed));
        }
        None
    }

    /// `thread`'s value, if it has one. Meaningful for the calling thread; for another
    /// thread the answer may be stale as soon as it is returned.
    #[inline(always)]
    pub fn find(&self, thread: usize) -> Option<usize> {
        self.slot_of(thread)
            .map(|slot| slot.value.load(Ordering::Relaxed))
    }

    /// Gives the calling thread the value `value` (replacing any it had). False when
    /// all `N` slots are taken.
    pub fn set(&self, value: usize) -> bool {
        let thread = thread_pointer();
        if let Some(slot) = self.slot_of(thread) {
            slot.value.store(value, Ordering::Relaxed);
            return true;
        }
        let home = Self::home(thread);
        for step in 0..N {
            let slot = &self.slots[(home + step) & (N - 1)];
            // Acquire: pairs with the Release in `remove`, so the previous owner's last
            // use of the slot happens before ours.
            if slot
                .thread
                .compare_exchange(0, thread, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                slot.value.store(value, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Removes the calling thread's entry and returns its value.
    pub fn remove(&self) -> Option<usize> {
        self.remove_thread(thread_pointer())
    }

    /// Removes `thread`'s entry. Only for `thread` itself, or for a thread known to be
    /// gone (in a `fork` child, every thread but the caller).
    pub fn remove_thread(&self, thread: usize) -> Option<usize> {
        let slot = self.slot_of(thread)?;
        let value = slot.value.load(Ordering::Relaxed);
        // Release: pairs with the Acquire of the next claim.
        slot.thread.store(0, Ordering::Release);
        Some(value)
    }

    /// Calls `f(thread, value)` for every entry (a snapshot: entries may come and go
    /// meanwhile). For dumps and for a `fork` child's clean-up.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        for slot in &self.slots {
            let thread = slot.thread.load(Ordering::Acquire);
            if thread != 0 {
                f(thread, slot.value.load(Ordering::Relaxed));
            }
        }
    }
}

impl<const N: usize> Default for ThreadTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// glibc keeps keys below this number in the thread's control block; for larger keys
/// `pthread_setspecific` allocates.
const KEYS_IN_CONTROL_BLOCK: libc::pthread_key_t = 32;

/// States of [`ThreadKey::state`] other than "created" (which stores `key + KEY_BASE`).
const NOT_CREATED: usize = 0;
const CREATING: usize = 1;
const UNUSABLE: usize = 2;
const KEY_BASE: usize = 3;

/// A thread-specific key whose destructor tells the caller a thread is exiting.
///
/// Created on first [`ThreadKey::set`] (not at load time: `malloc` runs before any
/// constructor of ours). The destructor receives the value the exiting thread had set,
/// and runs only for threads whose value is non-null.
pub struct ThreadKey {
    state: AtomicUsize,
    on_exit: unsafe extern "C" fn(*mut c_void),
}

impl ThreadKey {
    /// A key that calls `on_exit(value)` when a thread with a non-null value exits.
    pub const fn new(on_exit: unsafe extern "C" fn(*mut c_void)) -> Self {
        ThreadKey {
            state: AtomicUsize::new(NOT_CREATED),
            on_exit,
        }
    }

    /// The key, creating it if this is the first call; `None` if it cannot be used
    /// without allocating (see [`KEYS_IN_CONTROL_BLOCK`]) or could not be created.
    fn key(&self) -> Option<libc::pthread_key_t> {
        loop {
            // Acquire: pairs with the Release below, so the key number is complete.
            match self.state.load(Ordering::Acquire) {
                UNUSABLE => return None,
                CREATING => core::hint::spin_loop(),
                NOT_CREATED => {
                    if self
                        .state
                        .compare_exchange(
                            NOT_CREATED,
                            CREATING,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        let created = self.create();
                        // Release: publishes the key to threads waiting in CREATING.
                        self.state.store(
                            created.map_or(UNUSABLE, |key| key as usize + KEY_BASE),
                            Ordering::Release,
                        );
                        return created;
                    }
                }
                created => return Some((created - KEY_BASE) as libc::pthread_key_t),
            }
        }
    }

    #[cold]
    fn create(&self) -> Option<libc::pthread_key_t> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid place to write the key; glibc's pthread_key_create
        // claims a slot of its static key array with atomic operations and does not
        // allocate. `on_exit` is a plain function with the destructor's signature.
        let status = unsafe { libc::pthread_key_create(&mut key, Some(self.on_exit)) };
        if status != 0 {
            return None;
        }
        if key >= KEYS_IN_CONTROL_BLOCK {
            // SAFETY: the key was just created and nobody has set a value for it.
            unsafe { libc::pthread_key_delete(key) };
            return None;
        }
        Some(key)
    }

    /// Whether the key exists and is one that never allocates (after creating it).
    pub fn usable(&self) -> bool {
        self.key().is_some()
    }

    /// The calling thread's value: 0 if it set none, if it has exited past its
    /// destructor, or if the key is unusable.
    #[inline]
    pub fn get(&self) -> usize {
        match self.state.load(Ordering::Acquire) {
            created if created >= KEY_BASE => {
                // SAFETY: the key is a live key below 32: glibc reads the value from
                // the control block's array, with no allocation and no TLS call.
                let value = unsafe {
                    libc::pthread_getspecific((created - KEY_BASE) as libc::pthread_key_t)
                };
                value as usize
            }
            _ => 0,
        }
    }

    /// Sets the calling thread's value (0: no destructor call for this thread). A word,
    /// not a pointer: the key never dereferences it, only hands it to the destructor.
    /// False if the key is unusable; nothing was set then.
    pub fn set(&self, value: usize) -> bool {
        let Some(key) = self.key() else {
            return false;
        };
        // SAFETY: the key is below 32, so glibc stores the value in the control
        // block's array without allocating.
        unsafe { libc::pthread_setspecific(key, value as *const c_void) == 0 }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::vec::Vec;

    #[test]
    fn the_thread_pointer_is_stable_and_differs_between_live_threads() {
        let main = thread_pointer();
        assert_ne!(main, 0);
        assert_eq!(main, thread_pointer());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let others: Vec<usize> = (0..4)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let tp = thread_pointer();
                    // All four are alive at once here, so their pointers must differ.
                    barrier.wait();
                    assert_eq!(tp, thread_pointer());
                    tp
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        for (i, a) in others.iter().enumerate() {
            assert_ne!(*a, main);
            for b in &others[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn each_thread_finds_its_own_value_in_the_table() {
        static TABLE: ThreadTable<8> = ThreadTable::new();
        assert_eq!(TABLE.get(), None);
        assert!(TABLE.set(1000));
        let threads: Vec<_> = (1..=6)
            .map(|i| {
                std::thread::spawn(move || {
                    assert_eq!(TABLE.get(), None);
                    assert!(TABLE.set(i));
                    for _ in 0..10_000 {
                        assert_eq!(TABLE.get(), Some(i));
                    }
                    assert_eq!(TABLE.remove(), Some(i));
                    assert_eq!(TABLE.get(), None);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(TABLE.get(), Some(1000));
        assert!(TABLE.set(1001));
        assert_eq!(TABLE.get(), Some(1001));
        let mut entries = 0;
        TABLE.for_each(|_, value| {
            assert_eq!(value, 1001);
            entries += 1;
        });
        assert_eq!(entries, 1);
        assert_eq!(TABLE.remove(), Some(1001));
    }

    #[test]
    fn a_full_table_refuses_a_new_thread() {
        static TABLE: ThreadTable<2> = ThreadTable::new();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
        let holders: Vec<_> = (0..2)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    assert!(TABLE.set(i));
                    barrier.wait(); // both slots taken
                    barrier.wait(); // the main thread has tried
                    TABLE.remove();
                })
            })
            .collect();
        barrier.wait();
        assert!(!TABLE.set(7));
        assert_eq!(TABLE.get(), None);
        barrier.wait();
        for holder in holders {
            holder.join().unwrap();
        }
        assert!(TABLE.set(7));
        assert_eq!(TABLE.remove(), Some(7));
    }

    static EXITS: AtomicUsize = AtomicUsize::new(0);
    unsafe extern "C" fn count_exit(value: *mut c_void) {
        EXITS.fetch_add(value as usize, Ordering::SeqCst);
    }
    static EXIT_KEY: ThreadKey = ThreadKey::new(count_exit);

    #[test]
    fn the_key_reports_each_exiting_thread_with_its_value() {
        assert!(EXIT_KEY.usable());
        let threads: Vec<_> = (1..=4)
            .map(|i| {
                std::thread::spawn(move || {
                    assert_eq!(EXIT_KEY.get(), 0);
                    assert!(EXIT_KEY.set(i * 100));
                    assert_eq!(EXIT_KEY.get(), i * 100);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // A thread that set nothing is not reported.
        std::thread::spawn(|| ()).join().unwrap();
        assert_eq!(EXITS.load(Ordering::SeqCst), 100 + 200 + 300 + 400);
    }

    /// Builds `count` shared libraries, each with a large `__thread` array, with gcc.
    fn build_tls_libraries(dir: &std::path::Path, count: usize) -> Vec<std::path::PathBuf> {
        (0..count)
            .map(|i| {
                let source = dir.join(std::format!("tls{i}.c"));
                let library = dir.join(std::format!("libtls{i}.so"));
                std::fs::write(
                    &source,
                    std::format!(
                        "__thread char block[8192] = {{ {i} }};\n\
                         int touch{i}(void) {{ block[100] += 1; return block[0] + block[100]; }}\n"
                    ),
                )
                .unwrap();
                let status = std::process::Command::new("gcc")
                    .args(["-shared", "-fPIC", "-O1", "-o"])
                    .arg(&library)
                    .arg(&source)
                    .status()
                    .expect("gcc runs");
                assert!(status.success(), "gcc failed on {source:?}");
                library
            })
            .collect()
    }

    /// The situation that breaks `thread_local!` in a malloc: a thread created after
    /// `dlopen` has loaded libraries with `__thread` data (the DTV grew), using the
    /// mechanism before and after it touches those libraries' TLS.
    #[test]
    fn works_in_a_thread_created_after_dlopen_of_tls_libraries() {
        static TABLE: ThreadTable<64> = ThreadTable::new();
        static DLOPEN_EXITS: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" fn on_exit(value: *mut c_void) {
            DLOPEN_EXITS.fetch_add(value as usize, Ordering::SeqCst);
        }
        static KEY: ThreadKey = ThreadKey::new(on_exit);

        let dir = std::env::temp_dir().join(std::format!("kit-thread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let libraries = build_tls_libraries(&dir, 24);
        let mut touches = Vec::new();
        for (i, library) in libraries.iter().enumerate() {
            let path = std::ffi::CString::new(library.to_str().unwrap()).unwrap();
            // SAFETY: the path names a library we just built; it has no constructors.
            let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
            assert!(!handle.is_null(), "dlopen {library:?}");
            let name = std::ffi::CString::new(std::format!("touch{i}")).unwrap();
            // SAFETY: the handle is live; the symbol is a function `int (void)`.
            let symbol = unsafe { libc::dlsym(handle, name.as_ptr()) };
            assert!(!symbol.is_null());
            // SAFETY: `touch{i}` has exactly this signature.
            touches.push(unsafe {
                core::mem::transmute::<*mut c_void, extern "C" fn() -> i32>(symbol)
            });
        }
        let threads: Vec<_> = (1..=8)
            .map(|n| {
                let touches = touches.clone();
                std::thread::spawn(move || {
                    assert!(TABLE.set(n));
                    assert!(KEY.set(n));
                    for (i, touch) in touches.iter().enumerate() {
                        // Each call makes this thread's DTV entry for library i.
                        assert_eq!(touch(), i as i32 + 1);
                        assert_eq!(TABLE.get(), Some(n));
                        assert_eq!(KEY.get(), n);
                    }
                    assert_eq!(TABLE.remove(), Some(n));
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(DLOPEN_EXITS.load(Ordering::SeqCst), (1..=8).sum::<usize>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
