//! The `.so` of phase 3: `libphase3_mmap_debug.so`.
//!
//! The policy is the `mmap-debug` library (`phases/phase3-mmap-debug/src`); this crate
//! only puts it behind the kit's lock ([`preload_kit::Locked`]) and hands it to the
//! kit, which exports `malloc`, `free` and the rest.

#![cfg_attr(not(test), no_std)]

preload_kit::export_malloc!(preload_kit::Locked<mmap_debug::MmapDebugHeap>);
