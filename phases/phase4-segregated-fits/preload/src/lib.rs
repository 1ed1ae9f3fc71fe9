//! The `.so` of phase 4: `libphase4_segregated_fits.so`.
//!
//! The policy is the `segregated-fits` library (`phases/phase4-segregated-fits/src`);
//! this crate only hands it to the kit, which exports `malloc`, `free` and the rest.

#![cfg_attr(not(test), no_std)]

preload_kit::export_malloc!(preload_kit::Locked<segregated_fits::SegregatedFitsHeap>);
