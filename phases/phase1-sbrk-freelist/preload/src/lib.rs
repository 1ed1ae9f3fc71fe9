//! The `.so` of phase 1: `libphase1_sbrk_freelist.so`.
//!
//! The policy is the `sbrk-freelist` library (`phases/phase1-sbrk-freelist/src`); this
//! crate only hands it to the kit, which exports `malloc`, `free` and the rest.

#![cfg_attr(not(test), no_std)]

preload_kit::export_malloc!(sbrk_freelist::FreeListHeap);
