//! `--trace FILE`: replays a malloc-lab trace and reports throughput and memory use.
//!
//! - ops/s: operations replayed per second (the file is read and parsed first, off
//!   the clock);
//! - peak payload: the most bytes the trace had live at once;
//! - peak footprint: the most memory the process held for them: the anonymous memory
//!   resident (exact to the page, `memory::anonymous_bytes`) less what was resident
//!   before the trace was read (after one `malloc` and `free`, so that the allocator's
//!   one-time set-up is not counted, as the C library's is not) and less the harness's
//!   own data (the trace and the table of blocks), so it works for any allocator, brk-
//!   or mmap-based, and counts its headers, holes, free lists and the tables it grows
//!   but not its code. Every payload is
//!   written in full, so the pages an allocator hands out are really resident. It is
//!   sampled ([`Footprint`]) right after the operation that brings the live payload to
//!   its peak (found by a first pass over the trace), after every 1/64th of the
//!   operations (a footprint can peak later than the payload: holes that fill up
//!   only late, memory never given back) and after the last. Sampling after every
//!   operation instead finds the same peaks to within a page on the suite's traces
//!   under glibc and phases 1-4. The clock stops while a sample is read (60 µs or more
//!   each), so ops/s does not count them. (The kernel's resident-set counters behind
//!   `VmHWM` would catch a peak between samples, but the kernel updates them in per-CPU
//!   batches: they moved the suite's figures by 3 points from run to run.)
//! - utilization = peak payload / peak footprint (CS:APP's measure; 100% is perfect).
//!
//! For `harness pictures`, the allocator's own view ([`Show`]): `--dump-at-peak` calls
//! `heap_dump()` before the first operation and right after the one that brings the live
//! payload to its peak (found by a first pass over the trace); `--stats-every N` calls
//! `malloc_stats()` before the first operation, after every Nth and after the last. Each
//! dump or stats line follows a `[trace ops=K payload=P heap_dump]` (or `malloc_stats`)
//! line on stderr: K operations done, P bytes live. Neither allocates, so the heap they
//! show holds the replay's blocks and the harness's own data (the trace text and the two
//! tables, live throughout) and nothing else. The time they take counts in ops/s.

use core::ffi::{CStr, c_void};
use core::fmt::Write as _;
use std::time::Instant;

use harness::trace::{Op, Trace, stray_block_at};

use crate::memory::{Footprint, peak_resident_bytes};
use preload_kit::Out;

/// Exit code for a trace that cannot be read or parsed (as for bad arguments).
const EXIT_BAD_TRACE: i32 = 2;

/// What to show of the allocator's heap during a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Show {
    /// `--dump-at-peak`
    pub dump_at_peak: bool,
    /// `--stats-every N`
    pub stats_every: Option<usize>,
}

/// Replays variant `variant` of the trace at `path` (see `harness::trace::Trace::variant`;
/// 0 is the trace as written).
pub fn run(path: &str, show: Show, variant: u32) -> i32 {
    // Looked up first, so that whatever dlsym may allocate is not in the pictures.
    let heap_dump = show
        .dump_at_peak
        .then(|| introspection(c"heap_dump"))
        .flatten();
    let malloc_stats = show
        .stats_every
        .and_then(|_| introspection(c"malloc_stats"));
    if show == Show::default() {
        // The allocator's one-time set-up is done before the baseline: the tables it
        // keeps beside its heap and the stack its first call needs. The C library's
        // allocator has those in pages the program's start-up already touched; a
        // preloaded one sets them up on its first call, which in this program (no
        // Rust start-up) would otherwise come during the replay and count as its
        // footprint. Not when showing the heap, whose first dump must be empty.
        // (`black_box`: the compiler may drop a malloc whose block is only freed.)
        // SAFETY: a plain malloc, and the free of what it returned.
        unsafe { libc::free(std::hint::black_box(libc::malloc(1))) };
    }
    let mut footprint = Footprint::start();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("bench_alloc: cannot read trace {path}: {e}");
            return EXIT_BAD_TRACE;
        }
    };
    if harness::threaded_trace::ThreadedTrace::is_threaded(&text) {
        if show != Show::default() {
            eprintln!("bench_alloc: --dump-at-peak and --stats-every need a malloc-lab trace");
            return EXIT_BAD_TRACE;
        }
        return crate::replay::run(path, text, footprint, variant);
    }
    // Room for a variant's stray block: one more op, and one more entry in `blocks`.
    let spare = usize::from(variant != 0);
    let mut trace = match Trace::parse_with_room(&text, spare) {
        Ok(trace) => trace,
        Err(e) => {
            eprintln!("bench_alloc: {path}: {e}");
            return EXIT_BAD_TRACE;
        }
    };
    let mut blocks: Vec<(*mut u8, usize)> = vec![(std::ptr::null_mut(), 0); trace.ids + spare];
    // The variant is made here, in place (`Trace::add_stray_block`), with the peak found
    // in the table the replay uses anyway: a table made and freed before the replay
    // would change the allocator under test.
    let mut peak_at = ops_to_peak(&trace.ops, &mut blocks);
    if let Some(at) = stray_block_at(peak_at, variant) {
        trace.add_stray_block(at);
        peak_at = ops_to_peak(&trace.ops, &mut blocks);
    }
    // The baseline was taken before reading the trace, so memory that parsing used and
    // freed (resident, and reusable by the replay) cannot hide part of the footprint.
    // What the harness itself keeps during the replay is subtracted; the text stays
    // alive until the report so that this sum stays true.
    let harness_bytes = text.capacity()
        + trace.ops.capacity() * std::mem::size_of::<Op>()
        + blocks.capacity() * std::mem::size_of::<(*mut u8, usize)>();
    let mut live = 0usize;
    let mut peak_payload = 0usize;
    footprint.plan(trace.ops.len(), Some(peak_at));
    let report = |call: Option<(&str, extern "C" fn())>, ops: usize, live: usize| {
        if let Some((name, call)) = call {
            let mut out = Out::stderr();
            let _ = writeln!(out, "[trace ops={ops} payload={live} {name}]");
            out.flush();
            call();
        }
    };
    report(heap_dump, 0, 0);
    report(malloc_stats, 0, 0);
    let started = Instant::now();
    for (index, op) in trace.ops.iter().enumerate() {
        let result = match *op {
            Op::Alloc { id, size } => {
                // SAFETY: plain malloc; checked before use.
                let p = unsafe { libc::malloc(size) }.cast::<u8>();
                place(&mut blocks[id], p, size, id)
            }
            Op::Realloc { id, size } => {
                let (old, old_size) = blocks[id];
                if !intact(old, old_size, id) {
                    Err(format!("block {id} lost its contents before realloc"))
                } else {
                    // SAFETY: `old` is the live block of this id; realloc replaces it.
                    let p = unsafe { libc::realloc(old.cast(), size) }.cast::<u8>();
                    live -= old_size;
                    if !p.is_null() && !intact(p, old_size.min(size), id) {
                        Err(format!("realloc of block {id} did not keep its contents"))
                    } else {
                        place(&mut blocks[id], p, size, id)
                    }
                }
            }
            Op::Free { id } => {
                let (p, size) = blocks[id];
                blocks[id] = (std::ptr::null_mut(), 0);
                live -= size;
                if intact(p, size, id) {
                    // SAFETY: `p` is the live block of this id, freed once.
                    unsafe { libc::free(p.cast()) };
                    Ok(0)
                } else {
                    Err(format!("block {id} lost its contents (overlap?)"))
                }
            }
        };
        match result {
            Ok(added) => live += added,
            Err(problem) => {
                eprintln!(
                    "bench_alloc: {path}: operation {} ({op:?}): {problem}",
                    index + 1
                );
                return 1;
            }
        }
        peak_payload = peak_payload.max(live);
        let done = index + 1;
        if footprint.is_sample_point(done) {
            footprint.sample();
        }
        if done == peak_at {
            report(heap_dump, done, live);
        }
        if show
            .stats_every
            .is_some_and(|n| done.is_multiple_of(n) || done == trace.ops.len())
        {
            report(malloc_stats, done, live);
        }
    }
    let seconds = (started.elapsed())
        .saturating_sub(footprint.sampling_time())
        .as_secs_f64();
    let footprint = footprint.peak(harness_bytes);
    // Named only now: a name that is not UTF-8 would allocate, and the pictures' heap
    // must hold the replay's blocks only.
    let name = file_name(path);
    let variant = of_variant(variant);
    println!(
        "trace {name}{variant}: {} ops in {seconds:.4} s, {:.0} ops/s; peak payload {peak_payload} B; \
         peak footprint {footprint} B; utilization {:.1}%; peak RSS {} KiB",
        trace.ops.len(),
        trace.ops.len() as f64 / seconds,
        100.0 * peak_payload as f64 / footprint as f64,
        peak_resident_bytes() / 1024
    );
    drop(text);
    0
}

/// Stores a fresh block for `id`, written in full with the id's byte. Returns the bytes
/// now live for it.
fn place(slot: &mut (*mut u8, usize), p: *mut u8, size: usize, id: usize) -> Result<usize, String> {
    if p.is_null() {
        return Err(format!("the allocator returned NULL for {size} bytes"));
    }
    // SAFETY: the block holds `size` bytes.
    unsafe { p.write_bytes(id as u8, size) };
    *slot = (p, size);
    Ok(size)
}

fn intact(p: *const u8, size: usize, id: usize) -> bool {
    if size == 0 {
        return true;
    }
    // SAFETY: callers pass a live block of at least `size` bytes. First and last byte
    // only: a full scan would time the check rather than the allocator.
    unsafe { p.read() == id as u8 && p.add(size - 1).read() == id as u8 }
}

/// How many operations bring the live payload to its peak (the first time it is
/// reached). Uses the size half of `blocks` as scratch and leaves it as it found it
/// (all empty), so that this pass allocates nothing.
fn ops_to_peak(ops: &[Op], blocks: &mut [(*mut u8, usize)]) -> usize {
    let (mut live, mut peak, mut peak_at) = (0usize, 0usize, 0usize);
    for (index, op) in ops.iter().enumerate() {
        match *op {
            Op::Alloc { id, size } | Op::Realloc { id, size } => {
                live = live - blocks[id].1 + size;
                blocks[id].1 = size;
            }
            Op::Free { id } => live -= std::mem::take(&mut blocks[id].1),
        }
        if live > peak {
            (peak, peak_at) = (live, index + 1);
        }
    }
    blocks.fill((std::ptr::null_mut(), 0));
    peak_at
}

/// One of mymalloc's introspection calls (`heap_dump`, `malloc_stats`), if the loaded
/// allocator has it. Looked up at run time, as the demo does, so that the replay also
/// runs on the C library's allocator.
fn introspection(name: &'static CStr) -> Option<(&'static str, extern "C" fn())> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    // SAFETY: mymalloc exports both as `extern "C" fn()` (and glibc's malloc_stats has
    // the same signature).
    let call = (!symbol.is_null())
        .then(|| unsafe { core::mem::transmute::<*mut c_void, extern "C" fn()>(symbol) })?;
    Some((name.to_str().unwrap_or("?"), call))
}

/// ` (variant V)`, or nothing for variant 0, for the report line.
pub fn of_variant(variant: u32) -> String {
    if variant == 0 {
        String::new()
    } else {
        format!(" (variant {variant})")
    }
}

/// The file name of `path`, for the report line.
pub fn file_name(path: &str) -> std::borrow::Cow<'_, str> {
    std::path::Path::new(path)
        .file_name()
        .map_or(path.into(), |n| n.to_string_lossy())
}
