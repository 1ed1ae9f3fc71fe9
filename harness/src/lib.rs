//! The mymalloc harness: run programs under any allocator `.so`, check, grade and
//! benchmark allocators, and make the book's generated files.
//!
//! The modules are grouped by who uses them.
//!
//! **The core**, for every user (student, instructor, author), at the crate's root:
//! - [`phases`]: the registry of reference phases, the one list the rest follows; where
//!   their `.so` files are and how to build them.
//! - [`runner`]: runs one command under a preload with a time limit, capturing
//!   everything (the grader runs every check this way, so a crash costs one check).
//! - [`checks`]: the catalogue of behaviour checks (the tests', the grader's and the
//!   stage checks' one list); the probes they run are the `alloc_probe` binary's.
//! - [`bench`]: `harness bench`, every phase against glibc and others on the same
//!   workloads; the workloads are the `bench_alloc` binary's.
//! - [`trace`]: malloc-lab traces: the generated suite, parsing and replay.
//! - [`generate`]: twenty shapes of "unseen" traces the suite does not have, drawn
//!   for any seed (`harness gen-traces`), to check that a result was not tuned to it.
//! - [`threaded_trace`]: real programs' allocation calls with their threads, and
//!   [`record`], which records them (`harness record`, through `malloc-recorder`).
//! - [`rng`]: the seeded generator behind every workload, so runs repeat exactly.
//!
//! **[`student`]**, for students: `harness new` (a starter for one's own allocator)
//! and `harness check` (a phase's checks as stages, up to the first failure). It
//! builds and validates a submission as the grader does.
//!
//! **[`grade`]**, for instructors: any `.so` (or a folder of submissions) against a
//! phase's rubric of [`checks`], for points.
//!
//! **[`book`]**, for the book's authors: the pictures and the phase diffs.
//!
//! Dependency rule: `grade` and `book` use the core; the core never uses them, and
//! they do not use each other. `student` uses the core and `grade`, and nothing uses
//! `student`. So the core can be read (and would build) alone, and a
//! change to the grader or the book cannot break `harness run` for a student.
//!
//! Why one crate with three groups of modules rather than three crates: one `harness`
//! binary serves every audience (`harness run`, `harness grade`, `harness pictures`),
//! and a binary belongs to one crate. With a crate per audience, the command line
//! would need a fourth crate depending on the other three, and every tool and test
//! would build four crates to get what one gives; the dependency rule above is what
//! separate crates would enforce, kept here by `tests/layout.rs`.

// The core.
pub mod bench;
pub mod checks;
pub mod compare;
pub mod generate;
pub mod phases;
pub mod record;
pub mod rng;
pub mod runner;
pub mod threaded_trace;
pub mod trace;

// For students.
pub mod student;

// For instructors.
pub mod grade;

// For the book's authors.
pub mod book;
