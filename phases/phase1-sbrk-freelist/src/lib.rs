//! # Phase 1: a heap grown with `sbrk`, one free list, first fit
//!
//! The smallest allocator that can run real programs. Read the files in this order:
//!
//! 1. [`block`]: the header every block carries, drawn once.
//! 2. [`free_list`]: the list of free blocks, linked through their payloads.
//! 3. [`heap`]: `alloc` (first fit, then grow the heap), `free`, the heap check.
//!
//! Everything that is not allocation policy (the exported C functions, the lock, the
//! OS calls, printing) comes from `preload-kit`. This package is the policy alone, a
//! library; the package in `preload/` hands [`heap::FreeListHeap`] to the kit, which
//! turns it into `malloc`, `free` and the rest of the family.
//!
//! Chapter: `docs/src/ch01-sbrk-freelist.md`.

#![cfg_attr(not(test), no_std)]

pub mod block;
pub mod free_list;
pub mod heap;

pub use heap::FreeListHeap;
