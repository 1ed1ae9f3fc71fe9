//! # my-malloc: your allocator
//!
//! You write the policy (how blocks are laid out, found, split, merged); `preload-kit`
//! does the rest: `Locked` puts your heap behind one lock (your code never sees two
//! threads) and handles `fork`; `export_malloc!` exports `malloc`, `free` and the
//! whole family with C linkage, checks sizes for overflow, sets `errno` and validates
//! alignments. The last line of this file hands your [`MyHeap`] to them.
//!
//! Each part to write is a function whose body calls [`steps::not_written`]: its
//! comment names the chapter and the step that explain it. Until you write it, the
//! allocator fails safely and says what to write next (`malloc` returns NULL with
//! `ENOMEM`). Check your work with `harness check --phase N .` (see the handout).
//!
//! Read in this order: [`block`] (given: the header of every block), then [`heap`]
//! (yours: the steps of chapters 1, 2 and 3, in the same file as you go).

#![cfg_attr(not(test), no_std)]
// Some given parts are used only once the steps that call them are written.
#![allow(dead_code)]

pub mod block;
pub mod heap;
pub mod steps;

pub use heap::MyHeap;

// Chapter 3, step 4 ("Catching bugs: guards, poison and a quarantine"): the debug mode
// (canaries, poisoned freed blocks, the heap check after every call) is a layer around
// a heap. Write your own, or compose the kit's: `Locked<preload_kit::debug::Debugged<MyHeap>>`.

preload_kit::export_malloc!(preload_kit::Locked<MyHeap>);
