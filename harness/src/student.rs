//! A student's own allocator: a starter to begin from ([`starters`], `harness new`),
//! and a phase's checks run as stages on it ([`stages`], `harness check`).

pub mod stages;
pub mod starters;
