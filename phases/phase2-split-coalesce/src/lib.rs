//! # Phase 2: splitting, boundary-tag coalescing, memory given back at the top
//!
//! Phase 1 handed out free blocks whole and never merged them, so a program that freed
//! many small blocks could not reuse them for a larger one. Phase 2 keeps phase 1's
//! first-fit policy, and adds:
//!
//! - **a one-word header**: phase 1's two words (size and flags, a check word) become
//!   one, as in glibc, with a 24-bit tag in the bits above the size standing in for
//!   the check word; a used block costs 8 bytes instead of 16;
//! - **splitting**: a free block larger than the request is cut in two, the rest stays
//!   free;
//! - **coalescing in O(1)**: a freed block merges with free neighbours on both sides,
//!   found through *boundary tags* (a footer at the end of each free block and a bit
//!   in the next block's header), and leaves an explicit *doubly linked* free list in
//!   O(1);
//! - **giving memory back**: free space that reaches the top of the heap is returned to
//!   the arena, and to the OS once it exceeds the trim threshold;
//! - **realloc in place**, growing into a free neighbour or the top of the heap.
//!
//! Read the files in this order:
//!
//! 1. [`block`]: the header word (tag, size, flags), the footer, drawn once.
//! 2. [`free_list`]: the doubly linked list of free blocks, and [`FreeIndex`], what the
//!    heap needs from any way of finding free blocks.
//! 3. [`heap`]: `alloc` (first fit, split), `free` (coalesce, give back the top),
//!    `realloc`, and the heap check with its invariants.
//!
//! This package is the policy alone, a library: the package in `preload/` hands
//! [`SplitCoalesceHeap`] to the kit, which exports it as `malloc` and the rest. Phase 3
//! depends on this package and holds a `SplitCoalesceHeap` for its small blocks; a
//! later phase can hold a `SplitCoalesceHeap<ItsOwnIndex>` instead.
//!
//! Chapter: `docs/src/ch02-split-coalesce.md`.

#![cfg_attr(not(test), no_std)]

pub mod block;
pub mod free_list;
pub mod heap;

pub use free_list::{FreeIndex, FreeList};
pub use heap::SplitCoalesceHeap;
