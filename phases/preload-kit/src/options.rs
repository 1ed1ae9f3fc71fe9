//! `mallopt`: every parameter glibc accepts is accepted, and each is honoured where it
//! means something to the allocator.
//!
//! | parameter | number | here |
//! |---|---|---|
//! | `M_TRIM_THRESHOLD` | -1 | honoured by phase 2 onwards (the heap's `set_option`); accepted by phase 1, which never trims |
//! | `M_MMAP_THRESHOLD` | -3 | honoured by phase 3; accepted by phases 1-2, which map no blocks (glibc's limit: at most 32 MiB) |
//! | `M_PERTURB` | -6 | honoured by the kit, as glibc does it: `malloc`'s blocks are filled with the byte XOR 0xff, freed blocks with the byte |
//! | `M_MXFAST` | 1 | accepted up to glibc's limit (160), ignored: no fast bins |
//! | `M_TOP_PAD`, `M_MMAP_MAX`, `M_CHECK_ACTION`, `M_ARENA_TEST`, `M_ARENA_MAX` | -2, -4, -5, -7, -8 | accepted, ignored: no padding policy, no limit on mappings, the misuse reports are fixed, one heap, no arenas |
//!
//! glibc answers 1 for a parameter it does not know, too, so every other number is
//! accepted (and ignored) the same way.

use core::sync::atomic::{AtomicI32, Ordering};

pub const M_MXFAST: i32 = 1;
pub const M_TRIM_THRESHOLD: i32 = -1;
pub const M_TOP_PAD: i32 = -2;
pub const M_MMAP_THRESHOLD: i32 = -3;
pub const M_MMAP_MAX: i32 = -4;
pub const M_CHECK_ACTION: i32 = -5;
pub const M_PERTURB: i32 = -6;
pub const M_ARENA_TEST: i32 = -7;
pub const M_ARENA_MAX: i32 = -8;

/// glibc's `MAX_FAST_SIZE` on 64-bit systems: the largest `M_MXFAST` it accepts.
const MAX_FAST_SIZE: i32 = 160;

/// glibc refuses an mmap threshold above half its largest heap: 32 MiB on 64-bit.
const MAX_MMAP_THRESHOLD: u32 = 32 * 1024 * 1024;

/// glibc's answer for a parameter the allocator did not honour: 1 (accepted), except
/// for values glibc itself refuses.
pub fn accepted_by_glibc(param: i32, value: i32) -> bool {
    match param {
        M_MXFAST => (0..=MAX_FAST_SIZE).contains(&value),
        M_MMAP_THRESHOLD => u32::try_from(value).is_ok_and(|v| v <= MAX_MMAP_THRESHOLD),
        _ => true,
    }
}

/// `M_PERTURB`'s value (0: off). The environment's `MALLOC_PERTURB_` is stored here
/// when the settings are read (on the first call, before any block exists); `mallopt`
/// overwrites it. One relaxed load on the fast path: nothing else depends on it.
static PERTURB: AtomicI32 = AtomicI32::new(0);

/// `mallopt(M_PERTURB, value)`, or the environment's value.
pub fn set_perturb(value: i32) {
    PERTURB.store(value, Ordering::Relaxed);
    crate::config::update_plain_calls();
}

/// The perturb byte, or `None` when perturbing is off. As in glibc, any non-zero value
/// turns it on and the byte is its low byte.
#[inline]
pub fn perturb() -> Option<u8> {
    let value = PERTURB.load(Ordering::Relaxed);
    (value != 0).then_some(value as u8)
}
