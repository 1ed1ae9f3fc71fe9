//! # Phase 3: large blocks in mappings of their own, and a debug mode
//!
//! Phase 2 put every block in the brk heap. A 1 MiB buffer freed in the middle of the
//! heap then stays there: the break cannot come down past the blocks above it, and a
//! `realloc` that grows it copies every byte. Phase 3 keeps phase 2's heap for small
//! blocks, *unchanged*, and gives each request at or above a threshold (128 KiB) a
//! mapping of its own: `free` unmaps it, `realloc` resizes it with `mremap`. When `sbrk`
//! fails altogether (`RLIMIT_DATA`, or a mapping right after the break), the brk heap
//! keeps growing in mmap-backed regions.
//!
//! Then a debug mode (`MALLOC_DEBUG=1`), as a layer around that heap: canaries on both
//! sides of every block, a checksummed header, freed blocks poisoned and held in a
//! quarantine, and a full heap check run after every call (or every Nth).
//!
//! Read the files in this order:
//!
//! 1. [`table`]: an address-keyed hash table in memory of its own: the registries.
//! 2. [`mappings`]: large blocks, the registry of mappings and the ring of recently
//!    unmapped ones; why a mapped block needs no header.
//! 3. [`mmap_heap`]: [`MmapHeap`], which sends each request to the brk heap or to a
//!    mapping by its size, and each pointer to whichever owns it.
//! 4. [`debug`]: [`DebugLayer`]: the guards, the quarantine, the seed.
//! 5. This file: [`MmapDebugHeap`], the heap the `.so` exports: `MmapHeap`, with or
//!    without the debug layer around it.
//!
//! **From phase 2, unchanged**: `block.rs`, `free_list.rs` and `heap.rs` are phase 2's
//! own files, compiled into this crate with `#[path]` (not copied), so the brk heap here
//! *is* phase 2's, and phase 2's unit tests run again in this crate's.
//!
//! ## What the debug mode costs
//!
//! With `MALLOC_DEBUG` unset, the only additions to phase 2's fast path are one
//! comparison with the threshold in `malloc`, one test of an `Option` for the debug
//! layer, and the region test that routes a pointer in `free`.
//!
//! With `MALLOC_DEBUG=1`, every block costs 24 more bytes (16 before, 8 after) and a
//! registry entry; every call writes a log line; every free poisons the block. The
//! full check reads every block of the brk heap, every live block's guards and every
//! quarantined byte, so its cost grows with the heap, and running it after every call
//! (the default) makes a run's time grow with the square of its heap.
//! `MALLOC_CHECK_EVERY=N` runs it every Nth call instead.
//!
//! Measured on the development machine (`bench_alloc --small N`, best of 9 runs
//! alternating with glibc's, stderr to `/dev/null`):
//!
//! | `--small 1000000`                              | time    | vs glibc |
//! |------------------------------------------------|---------|----------|
//! | glibc                                          | 0.033 s | 1x       |
//! | phase 2                                        | 0.075 s | 2.3x     |
//! | phase 3, debug off                             | 0.077 s | 2.3x     |
//! | phase 3, `MALLOC_DEBUG=1`, check never         | 0.66 s  | 20x      |
//! | phase 3, `MALLOC_DEBUG=1 MALLOC_CHECK_EVERY=1000` | 0.97 s | 29x   |
//!
//! With the check off, about 70% of debug mode's time is the log (one `write` per
//! call); the guards, the registry and the quarantine roughly double the allocator's
//! own work. One full check costs about 17 ns per live block: 0.17 ms with 10000 live
//! blocks, so `--small 10000` takes 3.4 s checked after every call, 0.047 s checked
//! every 100th, 0.009 s never. Real programs stay usable with the check after every
//! call: `python3 -c 'print(1)'` 2.4 s, `gcc -O2 -S` of a small file 4 s.
//!
//! Chapter: `docs/src/ch03-mmap-debug.md`.

#![cfg_attr(not(test), no_std)]

#[path = "../../phase2-split-coalesce/src/block.rs"]
pub mod block;
#[path = "../../phase2-split-coalesce/src/free_list.rs"]
pub mod free_list;
#[path = "../../phase2-split-coalesce/src/heap.rs"]
pub mod heap;

pub mod debug;
pub mod mappings;
pub mod mmap_heap;
pub mod table;
#[cfg(test)]
mod test_support;

use core::ptr::NonNull;

use preload_kit::arena::Growth;
use preload_kit::{Config, Fault, Heap, Location, Out, Stats};

pub use debug::DebugLayer;
pub use mmap_heap::MmapHeap;

/// Phase 3's heap: [`MmapHeap`], with the [`DebugLayer`] around it when
/// `MALLOC_DEBUG=1`. Every method is one branch: straight to the heap, or through
/// the layer (which calls the heap itself).
pub struct MmapDebugHeap {
    heap: MmapHeap,
    debug: Option<DebugLayer>,
}

impl MmapDebugHeap {
    pub fn with_growth(config: &Config, growth: Growth) -> Self {
        MmapDebugHeap {
            heap: MmapHeap::with_growth(config, growth),
            debug: config.debug.then(|| DebugLayer::new(config)),
        }
    }
}

impl Heap for MmapDebugHeap {
    const NAME: &'static str = "phase3-mmap-debug";

    /// The kit runs [`Heap::check`] after calls in debug mode.
    const CHECK_IN_DEBUG_MODE: bool = true;

    fn new(config: &Config) -> Self {
        MmapDebugHeap::with_growth(config, Growth::BrkThenMmap)
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        match &mut self.debug {
            None => self.heap.alloc(size, align),
            Some(debug) => debug.alloc(&mut self.heap, size, align),
        }
    }

    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        match &mut self.debug {
            None => self.heap.alloc_zeroed(size),
            Some(debug) => debug.alloc_zeroed(&mut self.heap, size),
        }
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        match &mut self.debug {
            None => self.heap.free(ptr),
            Some(debug) => debug.free(&mut self.heap, ptr),
        }
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        match &mut self.debug {
            None => self.heap.usable_size(ptr),
            Some(debug) => debug.usable_size(&mut self.heap, ptr),
        }
    }

    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        match &mut self.debug {
            None => self.heap.realloc(ptr, size),
            Some(debug) => debug.realloc(&mut self.heap, ptr, size),
        }
    }

    fn locate(&self, addr: usize) -> Location {
        self.heap.locate(addr)
    }

    /// The heap's blocks, then (in debug mode) the quarantined ones.
    fn dump_blocks(&self, out: &mut Out) {
        self.heap.dump_blocks(out);
        if let Some(debug) = &self.debug {
            debug.dump(&self.heap, out);
        }
    }

    /// The heap's totals. In debug mode, quarantined blocks are still used blocks of
    /// the heap, and every block counts its guards.
    fn stats(&self) -> Stats {
        self.heap.stats()
    }

    /// The heap's invariants (phase 2's, the mapping registry's), then the debug
    /// layer's (registry, guards, quarantine).
    fn check(&self) -> Result<(), Fault> {
        self.heap.check()?;
        match &self.debug {
            Some(debug) => debug.check(),
            None => Ok(()),
        }
    }

    fn set_option(&mut self, param: i32, value: i32) -> bool {
        self.heap.set_option(param, value)
    }
}

preload_kit::export_malloc!(MmapDebugHeap);

#[cfg(test)]
mod tests {
    use super::*;
    use preload_kit::MIN_ALIGN;

    fn heap(debug: bool) -> MmapDebugHeap {
        let config = Config {
            debug,
            seed: Some(42),
            ..Config::DEFAULT
        };
        MmapDebugHeap::with_growth(&config, Growth::MmapOnly)
    }

    /// The dump of `heap`, as text.
    fn dump(heap: &MmapDebugHeap) -> std::string::String {
        crate::test_support::printed(|out| heap.dump_blocks(out))
    }

    #[test]
    fn the_debug_layer_is_there_only_in_debug_mode() {
        let mut plain = heap(false);
        let p = plain.alloc(20, MIN_ALIGN).unwrap();
        assert_eq!(
            plain.usable_size(p),
            Ok(32),
            "phase 2's rounding: 16 + 20 -> 48"
        );
        plain.free(p).unwrap();
        assert_eq!(dump(&plain), "");

        let mut debug = heap(true);
        let p = debug.alloc(20, MIN_ALIGN).unwrap();
        assert_eq!(
            debug.usable_size(p),
            Ok(20),
            "exactly the request: the canary follows"
        );
        assert_eq!(debug.locate(p.as_ptr() as usize), Location::Heap(0x20));
        debug.free(p).unwrap();
        debug.check().unwrap();
        assert_eq!(dump(&debug), "[BLOCK 0x0 64 USED]\n[QUARANTINE 0x20 20]\n");
        assert_eq!(
            debug.free(p),
            Err(Fault::DoubleFree {
                addr: p.as_ptr() as usize
            })
        );
    }

    #[test]
    fn mallopt_reaches_the_heap_in_both_modes() {
        for mode in [false, true] {
            let mut heap = heap(mode);
            assert!(heap.set_option(mmap_heap::M_MMAP_THRESHOLD, 4096));
            let p = heap.alloc(5000, MIN_ALIGN).unwrap();
            assert!(matches!(
                heap.locate(p.as_ptr() as usize),
                Location::Mapping { index: 1, .. }
            ));
            assert!(dump(&heap).contains("[MMAP #1 "));
            heap.free(p).unwrap();
            assert!(!heap.set_option(-2, 0));
            heap.check().unwrap();
        }
    }
}
