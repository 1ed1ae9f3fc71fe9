//! The mymalloc harness: run programs under any allocator `.so`, check, grade and
//! benchmark allocators.
//!
//! - [`phases`]: the reference phases, where their `.so` files are, how to build them.
//! - [`runner`]: runs one command under a preload with a time limit, capturing
//!   everything (the grader runs every check this way, so a crash costs one check).
//! - [`rng`]: the seeded generator behind every workload, so runs repeat exactly.
//! - [`grade`]: the grader: any `.so` against a phase's rubric of [`checks`], for points.
//! - [`phase_diff`]: the diff of one phase's sources to the next, committed in `docs/src/`.
//! - [`pictures`]: the book's heap maps and footprint chart, drawn from heap dumps.
//! - [`starters`] and [`stages`]: a student's own allocator, `harness new` and
//!   `harness check` (stage by stage, stopping at the first failure).

pub mod bench;
pub mod checks;
pub mod grade;
pub mod phase_diff;
pub mod phases;
pub mod pictures;
pub mod rng;
pub mod runner;
pub mod stages;
pub mod starters;
pub mod trace;
