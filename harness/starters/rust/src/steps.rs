//! The parts of the allocator still to write, and what an unwritten one says.
//!
//! An unwritten step prints one line on stderr, once per process, naming itself:
//!
//! ```text
//! my-malloc: chapter 1, step 1 is not written yet: block_size_for in src/block.rs (see "Blocks and their headers")
//! ```
//!
//! Printing goes through `preload_kit::Out` (a buffer on the stack and `write(2)`):
//! nothing here allocates, so it is safe inside `malloc`.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use preload_kit::Out;

/// One step of a chapter: where it is explained and where it is written.
pub struct Step {
    pub chapter: u32,
    pub number: u32,
    /// The function to write and its file.
    pub what: &'static str,
    /// The section of the chapter that explains it.
    pub section: &'static str,
    /// What the allocator does instead until the step is written, if it can go on.
    pub meanwhile: Option<&'static str>,
    said: AtomicBool,
}

impl Step {
    pub const fn new(chapter: u32, number: u32, what: &'static str, section: &'static str) -> Step {
        Step {
            chapter,
            number,
            what,
            section,
            meanwhile: None,
            said: AtomicBool::new(false),
        }
    }

    /// A step the allocator can do without for now, doing `meanwhile` instead.
    pub const fn optional(mut self, meanwhile: &'static str) -> Step {
        self.meanwhile = Some(meanwhile);
        self
    }
}

/// Says (once) that `step` is not written yet. Returns `None`, so that an unwritten
/// step that should produce a block makes `malloc` fail cleanly.
pub fn not_written<T>(step: &Step) -> Option<T> {
    if !step.said.swap(true, Ordering::Relaxed) {
        let mut out = Out::stderr();
        let _ = write!(
            out,
            "my-malloc: chapter {}, step {} is not written yet: {} (see \"{}\")",
            step.chapter, step.number, step.what, step.section
        );
        if let Some(meanwhile) = step.meanwhile {
            let _ = write!(out, "; until then, {meanwhile}");
        }
        let _ = writeln!(out);
        out.flush();
    }
    None
}

// Chapter 1: sbrk and a free list.
pub static BLOCK_SIZE: Step = Step::new(
    1,
    1,
    "block_size_for in src/block.rs",
    "Blocks and their headers",
);
pub static GROW: Step = Step::new(1, 2, "MyHeap::grow in src/heap.rs", "The program break");
pub static FREE: Step = Step::new(1, 3, "MyHeap::free in src/heap.rs", "The free list")
    .optional("no block is ever freed");
pub static FIRST_FIT: Step = Step::new(1, 4, "MyHeap::take_first_fit in src/heap.rs", "First fit")
    .optional("every block comes from the top of the heap");
pub static CHECK: Step = Step::new(1, 5, "MyHeap::check in src/heap.rs", "The implementation")
    .optional("heap_check() only walks the blocks");
