//! Helpers the unit tests of this crate share (compiled for tests only).

/// What a dump prints, as text: the test kit's helper (phase 4's tests use it too).
pub use heap_replay::printed;
