//! `alloc_probe NAME`: one behavioural probe of whatever allocator is loaded.
//!
//! Each probe exercises the malloc family through its C names and judges only what a
//! program can observe (pointers, contents, `errno`, the program break, the memory
//! map), never the allocator's own reports. It prints `ok: …` and exits 0, or prints
//! `FAIL: …` and exits 1. The harness runs each probe in its own process under the
//! allocator's preload (see `harness::checks`).

mod api;
mod behaviour;
mod fidelity;
mod fits;
mod heaps;
mod mapped;
mod misuse;
mod threads;

use std::process::ExitCode;

pub type Outcome = Result<String, String>;

/// A probe: its name on the command line and its function.
type Probe = (&'static str, fn() -> Outcome);

const PROBES: &[Probe] = &[
    ("alignment", api::alignment),
    ("contents", api::contents),
    ("calloc", api::calloc),
    ("realloc", api::realloc),
    ("memalign", api::memalign),
    ("usable-size", api::usable_size),
    ("huge", api::huge),
    ("errno", api::errno_kept),
    ("own-memory", api::own_memory),
    ("threads", threads::threads),
    ("fork", threads::fork),
    ("split", behaviour::split),
    ("coalesce", behaviour::coalesce),
    ("realloc-in-place", behaviour::realloc_in_place),
    ("trim", behaviour::trim),
    ("mmap-large", mapped::mmap_large),
    ("mmap-threshold", mapped::mmap_threshold),
    ("mmap-threshold-default", mapped::mmap_threshold_default),
    ("brk-blocked", mapped::brk_blocked),
    ("underflow", mapped::underflow),
    ("mmap-double-free", mapped::mmap_double_free),
    ("mmap-interior-free", mapped::mmap_interior_free),
    ("good-fit", fits::good_fit),
    ("bounded-search", fits::bounded_search),
    ("posix-memalign-errno", fidelity::posix_memalign_errno),
    ("fork-stdio", fidelity::fork_stdio),
    ("mallopt", fidelity::mallopt),
    ("mallinfo", fidelity::mallinfo),
    ("malloc-trim", fidelity::malloc_trim),
    (
        "write-after-free-large-reuse",
        fidelity::write_after_free_large_reuse,
    ),
    ("overflow-before-exit", fidelity::overflow_before_exit),
    ("thread-scaling", heaps::thread_scaling),
    ("remote-free", heaps::remote_free),
    ("thread-exit", heaps::thread_exit),
    ("dlopen-tls", heaps::dlopen_tls),
    (
        "double-free-remote-remote",
        misuse::double_free_remote_remote,
    ),
    ("double-free-local-remote", misuse::double_free_local_remote),
    ("double-free-remote-local", misuse::double_free_remote_local),
    ("never-given-out", misuse::never_given_out),
];

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some((_, probe)) = PROBES.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = PROBES.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: alloc_probe NAME\nprobes: {}", names.join(" "));
        return ExitCode::from(2);
    };
    match probe() {
        Ok(note) => {
            println!("ok: {note}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            println!("FAIL: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// Fails the probe with a message unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

/// The C allocator, called so that the compiler cannot see through it.
///
/// LLVM knows what `malloc`, `calloc` and `free` mean: it deletes a `malloc`/`free`
/// pair whose block is never used, folds a check that `calloc`'s memory is zero to
/// `true`, and so on, and then a probe tests nothing. Every probe calls the allocator
/// through these wrappers, which hide arguments and results behind `black_box`.
pub mod c {
    use std::ffi::c_void;
    use std::hint::black_box;

    /// # Safety
    /// As `malloc(3)`.
    pub unsafe fn malloc(size: usize) -> *mut c_void {
        // SAFETY: forwarded contract.
        black_box(unsafe { libc::malloc(black_box(size)) })
    }

    /// # Safety
    /// As `calloc(3)`.
    pub unsafe fn calloc(count: usize, size: usize) -> *mut c_void {
        // SAFETY: forwarded contract.
        black_box(unsafe { libc::calloc(black_box(count), black_box(size)) })
    }

    /// # Safety
    /// As `realloc(3)`.
    pub unsafe fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: forwarded contract.
        black_box(unsafe { libc::realloc(black_box(p), black_box(size)) })
    }

    /// # Safety
    /// As `free(3)`.
    pub unsafe fn free(p: *mut c_void) {
        // SAFETY: forwarded contract.
        unsafe { libc::free(black_box(p)) }
    }

    /// # Safety
    /// As `aligned_alloc(3)`.
    pub unsafe fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        // SAFETY: forwarded contract.
        black_box(unsafe { libc::aligned_alloc(black_box(align), black_box(size)) })
    }

    /// # Safety
    /// As `memalign(3)`.
    pub unsafe fn memalign(align: usize, size: usize) -> *mut c_void {
        // SAFETY: forwarded contract.
        black_box(unsafe { libc::memalign(black_box(align), black_box(size)) })
    }
}

/// Blocks as addresses, for the probes that judge an allocator by where its blocks land
/// (behaviour.rs, fits.rs): numbers to compare, never pointers to follow.
pub mod placed {
    /// The address of a new block of `size` bytes, or why there is none.
    pub fn malloc(size: usize) -> Result<usize, String> {
        // SAFETY: plain malloc.
        let p = unsafe { super::c::malloc(size) };
        if p.is_null() {
            Err(format!("malloc({size}) returned NULL"))
        } else {
            Ok(p as usize)
        }
    }

    /// Frees the block at `p`, an address [`malloc`] returned and not yet freed.
    pub fn free(p: usize) {
        // SAFETY: callers free each of their blocks once.
        unsafe { super::c::free(p as *mut libc::c_void) }
    }
}
