//! `bench_alloc`: workloads that exercise an allocator through the C ABI.
//!
//! ```text
//! bench_alloc                      the demo: a seeded workload that shows the heap at each step
//! bench_alloc --small N            allocate and free N small blocks (1-64 B), report ops/s
//! bench_alloc --threads T [--small N]   the same, split over T threads
//! bench_alloc WORKLOAD [--threads T] [--iterations N]
//!                                  a standard workload (larson, xmalloc, ...: see `workloads`)
//! bench_alloc --trace FILE         replay a malloc-lab or threaded trace: ops/s, peak payload, utilization
//!     [--dump-at-peak] [--stats-every N]   ...with heap dumps / stats for `harness pictures`
//!     [--variant V]                 ...with one stray block more (`harness compare-traces --variants`)
//! bench_alloc --ops 'a 0 64, f 0'  a few calls named on the command line, then a heap dump
//! bench_alloc --double-free        free a block twice (a mymalloc heap exits 3)
//! bench_alloc --invalid-free       free a stack address (a mymalloc heap exits 2)
//! bench_alloc --overflow           write one byte past a block, free it (phase 3's debug mode exits 3)
//! bench_alloc --use-after-free     write to a freed block, check the heap (phase 3's debug mode exits 3)
//! ```
//!
//! Every workload calls `malloc` and friends by their C names, so it runs on whatever
//! allocator is loaded: glibc's, or any `.so` given with `LD_PRELOAD`.
//!
//! The demo must show only its own blocks, whatever the Rust toolchain: so this binary
//! has no Rust `main` (`#![no_main]`), the standard library's start-up (which allocates)
//! never runs, arguments are read from the C `argv` without allocating, and the demo
//! prints through a stack buffer. Its first heap dump shows an empty heap, which the
//! harness's tests check.

#![no_main]

mod demo;
mod memory;
mod misuse;
mod ops;
mod replay;
mod small;
mod trace;
mod workloads;

use core::ffi::{CStr, c_char, c_int};
use core::fmt::Write as _;

use preload_kit::Out;

/// Exit code for bad arguments, as for API misuse in the allocator.
const EXIT_USAGE: c_int = 2;

const USAGE: &str = "\
usage: bench_alloc [--small N] [--threads T] [--trace FILE]
       bench_alloc WORKLOAD [--threads T] [--iterations N]
                   [--double-free | --invalid-free | --overflow | --use-after-free]
  (no flags)      run the demo workload (seeded by MALLOC_DEBUG_SEED, default 42)
  --small N       allocate and free N small blocks (1-64 B), print time and ops/s
  --threads T     run the small-block workload on T threads (N defaults to 1000000)
  WORKLOAD        one of the standard allocator workloads, named after what they
                  model: larson, xmalloc, cache-scratch, cache-thrash, mstress,
                  rptest, alloc-test, malloc-large, mleak. Prints one line:
                  NAME: T threads, N ops in S s, R ops/s; peak RSS K KiB; ok
  --iterations N  with WORKLOAD: its main loop count per thread (each has a default)
  --trace FILE    replay a malloc-lab trace (harness/traces/*.rep), or a threaded
                  trace recorded by `harness record` (harness/traces/recorded/*.trc)
                  with its threads: ops/s, peak payload, peak footprint, utilization
  --dump-at-peak  with --trace: heap_dump() before the first operation and right after
                  the one that brings the live payload to its peak
  --stats-every N with --trace: malloc_stats() before the first operation, after every
                  Nth and after the last (each dump and stats line follows a
                  [trace ops=K payload=P heap_dump|malloc_stats] line)
  --variant V     with --trace: replay variant V of the trace (0, the default, is the
                  trace as written; each other V adds one 48-byte block, allocated at
                  its own point before the live payload's peak and never freed): where
                  large blocks land is chaotic, so utilization is a spread over variants
  --ops OPS       run a few calls, then heap_dump(): OPS is like 'a 0 64, a 1 128, f 0'
                  (trace lines separated by commas: a ID SIZE, r ID SIZE, f ID)
  --double-free   free one block twice: a mymalloc heap must exit 3
  --invalid-free  free a pointer to the stack: a mymalloc heap must exit 2
  --overflow      write one byte past the end of a 20-byte block, then free it:
                  phase 3's debug mode (MALLOC_DEBUG=1) must exit 3
  --use-after-free  write into a freed block, then allocate and call heap_check():
                  phase 3's debug mode must exit 3
";

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Demo,
    Small { blocks: usize, threads: usize },
    Workload(&'static str, workloads::Config),
    Trace(&'static str, trace::Show, u32),
    Ops(&'static str),
    DoubleFree,
    InvalidFree,
    Overflow,
    UseAfterFree,
    Help,
}

/// The C entry point. See the module comment for why it is not Rust's `main`.
#[unsafe(no_mangle)]
///
/// # Safety
/// Called only by the C runtime, with its `argc` and `argv`.
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let seed = seed_from_env();
    // SAFETY: the C runtime passes `argc` valid, NUL-terminated strings in `argv`.
    let args = unsafe { Args::new(argc, argv) };
    match parse(args, seed) {
        Ok(Mode::Demo) => demo::run(seed),
        Ok(Mode::Small { blocks, threads }) => small::run(blocks, threads, seed),
        Ok(Mode::Workload(name, config)) => workloads::run(name, config),
        Ok(Mode::Trace(path, show, variant)) => trace::run(path, show, variant),
        Ok(Mode::Ops(text)) => ops::run(text),
        Ok(Mode::DoubleFree) => misuse::double_free(),
        Ok(Mode::InvalidFree) => misuse::invalid_free(),
        Ok(Mode::Overflow) => misuse::overflow(),
        Ok(Mode::UseAfterFree) => misuse::use_after_free(),
        Ok(Mode::Help) => {
            Out::new(1).bytes(USAGE.as_bytes());
            0
        }
        Err(problem) => {
            let mut err = Out::stderr();
            let _ = write!(err, "bench_alloc: {problem}\n{USAGE}");
            EXIT_USAGE
        }
    }
}

/// `MALLOC_DEBUG_SEED`, the one seed for the allocator's debug mode and the workloads.
fn seed_from_env() -> u64 {
    preload_kit::os::env_var(c"MALLOC_DEBUG_SEED")
        .and_then(preload_kit::config::parse_number)
        .unwrap_or(42)
}

/// The command line, read in place from the C `argv`.
#[derive(Clone, Copy)]
struct Args {
    argv: *const *const c_char,
    next: usize,
    len: usize,
}

impl Args {
    /// # Safety
    /// `argv` must hold `argc` pointers to NUL-terminated strings that outlive the program.
    unsafe fn new(argc: c_int, argv: *const *const c_char) -> Args {
        Args {
            argv,
            next: 1,
            len: argc.max(0) as usize,
        }
    }
}

impl Iterator for Args {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        if self.next >= self.len {
            return None;
        }
        // SAFETY: `next < argc`, so the pointer is one of the C runtime's arguments,
        // which live (unchanged by us) for the whole program.
        let arg = unsafe { CStr::from_ptr(*self.argv.add(self.next)) };
        self.next += 1;
        Some(arg.to_str().unwrap_or("<not UTF-8>"))
    }
}

fn parse(mut args: impl Iterator<Item = &'static str>, seed: u64) -> Result<Mode, Problem> {
    let mut mode = Mode::Demo;
    let mut blocks = None;
    let mut threads = None;
    let mut iterations = None;
    let mut show = trace::Show::default();
    let mut variant = None;
    while let Some(arg) = args.next() {
        match arg {
            "--small" => blocks = Some(count(arg, args.next())?),
            "--threads" => threads = Some(count(arg, args.next())?),
            "--iterations" => iterations = Some(count(arg, args.next())?),
            name if workloads::is_workload(name) => {
                let config = workloads::Config {
                    threads: 1,
                    iterations: None,
                    seed,
                };
                mode = Mode::Workload(name, config);
            }
            "--trace" => mode = Mode::Trace(args.next().ok_or(Problem::NeedsPath(arg))?, show, 0),
            "--ops" => mode = Mode::Ops(args.next().ok_or(Problem::NeedsOps)?),
            "--dump-at-peak" => show.dump_at_peak = true,
            "--stats-every" => show.stats_every = Some(count(arg, args.next())?),
            "--variant" => match args.next().map(str::parse::<u32>) {
                Some(Ok(v)) => variant = Some(v),
                _ => return Err(Problem::NeedsVariant),
            },
            "--double-free" => mode = Mode::DoubleFree,
            "--invalid-free" => mode = Mode::InvalidFree,
            "--overflow" => mode = Mode::Overflow,
            "--use-after-free" => mode = Mode::UseAfterFree,
            "-h" | "--help" => return Ok(Mode::Help),
            other => return Err(Problem::Unknown(other)),
        }
    }
    if let Mode::Workload(name, config) = mode {
        if blocks.is_some() || show != trace::Show::default() || variant.is_some() {
            return Err(Problem::Combined);
        }
        return Ok(Mode::Workload(
            name,
            workloads::Config {
                threads: threads.unwrap_or(1),
                iterations,
                ..config
            },
        ));
    }
    if iterations.is_some() {
        return Err(Problem::IterationsOnly);
    }
    match (mode, blocks, threads) {
        (Mode::Trace(path, ..), None, None) => Ok(Mode::Trace(path, show, variant.unwrap_or(0))),
        _ if show != trace::Show::default() || variant.is_some() => Err(Problem::TraceOnly),
        (Mode::Demo, None, None) => Ok(Mode::Demo),
        (Mode::Demo, blocks, threads) => Ok(Mode::Small {
            blocks: blocks.unwrap_or(1_000_000),
            threads: threads.unwrap_or(1),
        }),
        (mode, None, None) => Ok(mode),
        _ => Err(Problem::Combined),
    }
}

fn count(flag: &'static str, value: Option<&'static str>) -> Result<usize, Problem> {
    match value.map(str::parse::<usize>) {
        Some(Ok(n)) if n > 0 => Ok(n),
        _ => Err(Problem::NeedsCount(flag)),
    }
}

enum Problem {
    Unknown(&'static str),
    NeedsCount(&'static str),
    NeedsPath(&'static str),
    NeedsOps,
    NeedsVariant,
    Combined,
    TraceOnly,
    IterationsOnly,
}

impl core::fmt::Display for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Problem::Unknown(arg) => write!(f, "unknown argument {arg:?}"),
            Problem::NeedsCount(flag) => write!(f, "{flag} needs a whole number above 0"),
            Problem::NeedsPath(flag) => write!(f, "{flag} needs a file"),
            Problem::NeedsOps => f.write_str("--ops needs operations, e.g. 'a 0 64, f 0'"),
            Problem::NeedsVariant => f.write_str("--variant needs a whole number (0 or more)"),
            Problem::Combined => f.write_str("--trace, --ops and the misuse flags run alone"),
            Problem::IterationsOnly => f.write_str("--iterations needs a workload, e.g. larson"),
            Problem::TraceOnly => {
                f.write_str("--dump-at-peak, --stats-every and --variant need --trace")
            }
        }
    }
}
