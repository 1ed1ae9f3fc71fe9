//! The `.so` of phase 5: `libphase5_thread_heaps.so`.
//!
//! The policy is the `thread-heaps` library (`phases/phase5-thread-heaps/src`): pages
//! per thread for small blocks, phase 4's heap behind the kit's lock for the rest.
//! [`ThreadHeaps`](thread_heaps::ThreadHeaps) is a shared allocator of its own (it
//! needs no lock around it), which the kit exports as `malloc`, `free` and the rest.

#![cfg_attr(not(test), no_std)]

preload_kit::export_malloc!(thread_heaps::ThreadHeaps<segregated_fits::SegregatedFitsHeap>);
