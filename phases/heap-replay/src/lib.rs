//! # heap-replay: workloads as data for the phases' unit tests
//!
//! A workload is a script: a list of [`Action`]s (`alloc`, `calloc`, `memalign`,
//! `free`, `realloc`). [`Replay`] plays a script against any [`preload_kit::Heap`]
//! and keeps a model of the blocks that should be live. Every action checks what the
//! heap promised about the block it touches:
//!
//! - the address is aligned as asked, and `usable_size` is at least the size asked;
//! - the block's usable bytes overlap no other live block;
//! - the bytes the program wrote are still there (each block is filled with a pattern
//!   made from its id, so a block that got another block's bytes, or its own bytes at
//!   the wrong offset, is told apart), `realloc` kept the old contents up to the
//!   smaller size, `calloc`'s block read as zeros;
//! - `usable_size` still gives the answer it gave when the block was made;
//!
//! and the heap's own `check()` runs every N actions. A failure names the action's
//! index in the script.
//!
//! Scripts come from two places: [`script`] draws a seeded one from a [`Profile`]
//! (the phases' long workload tests), and [`fuzz`] runs a property test over random
//! scripts of the same actions and, when one fails, shrinks it to a minimal script
//! that still fails and prints it, ready to paste into a regression test.
//!
//! ```
//! # use heap_replay::{Action::*, Replay};
//! # fn demo<H: preload_kit::Heap>(heap: H) {
//! let script = [Alloc { size: 100 }, Memalign { size: 10, align: 4096 }, Free { slot: 0 }];
//! let mut replay = Replay::new(heap).check_every(1);
//! replay.run(&script).unwrap();
//! replay.free_all().unwrap();
//! # }
//! ```

mod fuzz;
mod generate;
mod printed;
mod replay;

pub use fuzz::{fuzz, scripts};
pub use generate::{Profile, script};
pub use printed::printed;
pub use replay::{Failure, Replay};

/// One call a program makes. Blocks are named by `slot`: the index, modulo the number
/// of live blocks, in the list of live blocks in the order they were made (a block
/// that `realloc` moved keeps its place). An action on a block when none is live does
/// nothing, so every script is valid, and so is every part of one: shrinking a
/// failing script by dropping actions still gives a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `malloc(size)`.
    Alloc { size: usize },
    /// `calloc(1, size)`: the block must read as zeros.
    AllocZeroed { size: usize },
    /// `memalign(align, size)`; `align` is a power of two, at least
    /// [`preload_kit::MIN_ALIGN`].
    Memalign { size: usize, align: usize },
    /// `free` of a live block.
    Free { slot: usize },
    /// `realloc` of a live block to `size` (0 is replayed as 1: `Heap::realloc` never
    /// sees 0, the kit turns `realloc(p, 0)` into `free`).
    Realloc { slot: usize, size: usize },
}
