//! The `.so` of phase 2: `libphase2_split_coalesce.so`.
//!
//! The policy is the `split-coalesce` library (`phases/phase2-split-coalesce/src`);
//! this crate only puts it behind the kit's lock ([`preload_kit::Locked`]) and hands
//! it to the kit, which exports `malloc`, `free` and the rest.

#![cfg_attr(not(test), no_std)]

preload_kit::export_malloc!(preload_kit::Locked<split_coalesce::SplitCoalesceHeap>);
