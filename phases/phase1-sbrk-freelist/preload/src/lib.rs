//! The `.so` of phase 1: `libphase1_sbrk_freelist.so`.
//!
//! The policy is the `sbrk-freelist` library (`phases/phase1-sbrk-freelist/src`); this
//! crate only puts it behind the kit's lock ([`preload_kit::Locked`]) and hands it to
//! the kit, which exports `malloc`, `free` and the rest.

#![cfg_attr(not(test), no_std)]

preload_kit::export_malloc!(preload_kit::Locked<sbrk_freelist::FreeListHeap>);
