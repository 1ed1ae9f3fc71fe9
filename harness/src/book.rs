//! The book's generators: what `docs/src/` holds that a command makes rather than an
//! author types. Each has a test that fails when the committed copy is stale.
//!
//! - [`pictures`]: the heap maps and the footprint chart (`harness pictures`).
//! - [`phase_diff`]: the diff of one phase's sources to the next (`harness phase-diff`).
//! - [`bench_quotes`]: the benchmark rows the chapters quote, rewritten from the report
//!   (`harness bench` after writing it, or `harness bench-quotes`).
//!
//! Like the grader, this part uses the core modules (the registry of phases, the
//! runner, the traces) and nothing in the core uses it.

pub mod bench_quotes;
pub mod phase_diff;
pub mod pictures;
