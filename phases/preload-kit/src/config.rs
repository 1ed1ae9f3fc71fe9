//! Settings read once from the environment, on the allocator's first call
//! ([`current`]).
//!
//! `getenv` is safe inside `malloc` (it returns a pointer into the environment block);
//! anything fancier is not. A value that does not parse is reported once on stderr and
//! the default is used, so a typo never silently changes behaviour.

use core::cell::UnsafeCell;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::os::env_var;
use crate::out::Out;

/// Everything the environment can change. Phases read only the fields their chapter uses.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// `MALLOC_DEBUG=1`: log every call and turn on the phase's debug checks;
    /// `MALLOC_DEBUG=checks`: the checks alone, silent unless they find a fault.
    pub debug: bool,
    /// Whether debug mode writes its log (`[alloc] 64 -> 0x10`, …): `MALLOC_DEBUG=1`
    /// does, `MALLOC_DEBUG=checks` does not.
    pub debug_log: bool,
    /// `MALLOC_DEBUG_LOG=FILE`: the log is appended to FILE instead of stderr. (Fault
    /// reports stay on stderr, with their exit codes.)
    pub debug_log_file: Option<&'static core::ffi::CStr>,
    /// `MALLOC_DEBUG_SEED=N`: makes everything seeded reproducible (canary values,
    /// `bench_alloc`'s workloads). `None` when unset.
    pub seed: Option<u64>,
    /// `MALLOC_MMAP_THRESHOLD_=N` (glibc's name): requests of N bytes or more get their
    /// own mapping (phase 3).
    pub mmap_threshold: Option<usize>,
    /// `MALLOC_TRIM_THRESHOLD_=N` (glibc's name): free memory at the top of the heap
    /// beyond N bytes goes back to the OS (phase 2 onwards).
    pub trim_threshold: Option<usize>,
    /// `MALLOC_CHECK_EVERY=N`: in debug mode, run the full heap check on every Nth call
    /// (default 1: every call).
    pub check_every: Option<u64>,
    /// `MALLOC_PERTURB_=N` (glibc's name): fill blocks as `mallopt(M_PERTURB, N)` does
    /// (see [`crate::options`]).
    pub perturb: Option<i32>,
}

impl Config {
    pub const DEFAULT: Config = Config {
        debug: false,
        debug_log: false,
        debug_log_file: None,
        seed: None,
        mmap_threshold: None,
        trim_threshold: None,
        check_every: None,
        perturb: None,
    };

    /// Reads every setting from the environment. Call once; it may print warnings.
    pub fn from_env() -> Config {
        let debug = flag(c"MALLOC_DEBUG");
        Config {
            debug,
            debug_log: debug && env_var(c"MALLOC_DEBUG") != Some(CHECKS_ONLY),
            debug_log_file: crate::os::env_c_str(c"MALLOC_DEBUG_LOG").filter(|f| !f.is_empty()),
            seed: number(c"MALLOC_DEBUG_SEED"),
            mmap_threshold: number(c"MALLOC_MMAP_THRESHOLD_").map(|n| n as usize),
            trim_threshold: number(c"MALLOC_TRIM_THRESHOLD_").map(|n| n as usize),
            check_every: number(c"MALLOC_CHECK_EVERY").filter(|&n| n > 0),
            perturb: number(c"MALLOC_PERTURB_").map(|n| n as i32),
        }
    }
}

/// The value of `MALLOC_DEBUG` that turns on the checks without the log.
pub const CHECKS_ONLY: &str = "checks";

/// The settings of this process: read from the environment on the first call, the
/// same value ever after. Lock-free, so the allocator's first call can make it, and
/// every call can ask it whether debug mode is on for the price of two loads.
pub fn current() -> Config {
    if SETTINGS.state.load(Ordering::Acquire) == READY {
        // SAFETY: READY is stored (with Release) only after `value` was written, and
        // `value` is never written again.
        return unsafe { *SETTINGS.value.get() };
    }
    SETTINGS.read_first()
}

/// `current().debug`, for the fast path of every call: one flag is read, where a copy
/// of the whole [`Config`] would cost a dozen instructions per call.
#[inline]
pub fn debug_mode() -> bool {
    if SETTINGS.state.load(Ordering::Acquire) == READY {
        // SAFETY: as in `current`.
        return unsafe { (*SETTINGS.value.get()).debug };
    }
    SETTINGS.read_first().debug
}

/// Whether a call needs nothing of the kit's layer around the allocator: the settings
/// have been read, debug mode is off (no log, no checks) and `M_PERTURB` is off. Then
/// `malloc` and `free` go straight to the allocator, for the price of this one load.
#[inline(always)]
pub fn plain_calls() -> bool {
    PLAIN_CALLS.load(Ordering::Relaxed)
}

/// See [`plain_calls`]. False until the settings are read: the first call takes the
/// full path, which reads them.
static PLAIN_CALLS: AtomicBool = AtomicBool::new(false);

/// Recomputes [`plain_calls`] after the settings are read or `M_PERTURB` changes.
/// Relaxed: a thread that sees the old value for a while makes calls that are correct
/// either way (the full path does everything the plain one does, and more).
pub(crate) fn update_plain_calls() {
    let ready = SETTINGS.state.load(Ordering::Acquire) == READY;
    let plain = ready && !debug_mode() && crate::options::perturb().is_none();
    PLAIN_CALLS.store(plain, Ordering::Relaxed);
}

static SETTINGS: Settings = Settings {
    state: AtomicU8::new(UNREAD),
    value: UnsafeCell::new(Config::DEFAULT),
};

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READY: u8 = 2;

struct Settings {
    state: AtomicU8,
    value: UnsafeCell<Config>,
}

// SAFETY: `value` is written once, by the one thread that moved `state` from UNREAD to
// READING, and read only after `state` is READY.
unsafe impl Sync for Settings {}

impl Settings {
    #[cold]
    fn read_first(&self) -> Config {
        let config = Config::from_env();
        if self
            .state
            .compare_exchange(UNREAD, READING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: only the thread that won the exchange writes, and nobody reads
            // before READY.
            unsafe { *self.value.get() = config };
            if let Some(perturb) = config.perturb {
                crate::options::set_perturb(perturb);
            }
            self.state.store(READY, Ordering::Release);
            update_plain_calls();
        }
        // A thread that lost the race (two first calls at once, which a process with
        // one thread at its start cannot have) uses its own reading, which is the same:
        // the environment has not changed. Nobody waits, so a fork cannot leave a
        // child waiting for a reader that is not there.
        config
    }
}

/// Unset, empty or `0` is off; anything else is on.
fn flag(name: &core::ffi::CStr) -> bool {
    matches!(env_var(name), Some(v) if !v.is_empty() && v != "0")
}

fn number(name: &core::ffi::CStr) -> Option<u64> {
    let text = env_var(name)?;
    match parse_number(text) {
        Some(n) => Some(n),
        None => {
            let mut out = Out::stderr();
            let _ = writeln!(
                out,
                "mymalloc: ignoring {}={:?}: not a non-negative whole number; using the default",
                name.to_str().unwrap_or("?"),
                text
            );
            None
        }
    }
}

/// Decimal, or hexadecimal with `0x`. No sign, no suffix.
pub fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers_parse_in_decimal_and_hex_and_reject_the_rest() {
        assert_eq!(parse_number("131072"), Some(131072));
        assert_eq!(parse_number("0x20000"), Some(131072));
        assert_eq!(parse_number(" 7 "), Some(7));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("128k"), None);
        assert_eq!(parse_number(""), None);
    }
}
