//! How much memory this process holds, from the kernel's per-process figures.
//!
//! Two kinds, for two purposes:
//!
//! - [`peak_resident_bytes`], the *peak RSS* every workload reports: `VmHWM` in
//!   `/proc/self/status`. Not `getrusage`'s `ru_maxrss`: Linux carries it across
//!   `execve` (it is the largest of this program's peak and its parent's resident set
//!   at the fork), so a bench_alloc started from a large process would report the
//!   parent's memory as its own. `VmHWM` comes from the kernel's resident-set counters,
//!   which it updates in per-CPU batches: exact only to a few hundred kilobytes, and
//!   run-to-run it moves by as much.
//! - [`anonymous_bytes`], for a trace's *footprint* (see `trace`): `Anonymous` in
//!   `/proc/self/smaps_rollup`, which the kernel computes when the file is read by
//!   walking this process's page tables, so it is exact to the page. Anonymous memory
//!   is what a heap is made of, whether from `brk` or from `mmap`: the heap, the
//!   mappings, the allocator's own data, the stacks. The pages of the allocator's
//!   code, which a replay faults in as it reaches new paths (file-backed, shared with
//!   every process that runs it), are not in it. Reading it takes about 60 µs plus
//!   10 µs per MiB mapped.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The peak resident set since this program started, in bytes.
pub fn peak_resident_bytes() -> usize {
    proc_self_kib("/proc/self/status", "VmHWM:") * 1024
}

/// The anonymous memory resident now, in bytes, exact to the page.
pub fn anonymous_bytes() -> usize {
    proc_self_kib("/proc/self/smaps_rollup", "Anonymous:") * 1024
}

/// A `Name:  N kB` field of a file of `/proc/self`, read into a stack buffer: a trace
/// replay measures the heap, so measuring must not allocate in it (the path is short
/// enough for the standard library to make its C string on the stack). 0 if the file or
/// the field is missing.
fn proc_self_kib(path: &str, field: &str) -> usize {
    use std::io::Read;
    let mut buffer = [0u8; 4096];
    let mut filled = 0;
    if let Ok(mut file) = std::fs::File::open(path) {
        while let Ok(n @ 1..) = file.read(&mut buffer[filled..]) {
            filled += n;
            if filled == buffer.len() {
                break;
            }
        }
    }
    let text = std::str::from_utf8(&buffer[..filled]).unwrap_or("");
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// How many times a replay samples its footprint at regular points, besides the
/// operation where its live payload peaks and the end.
pub const FOOTPRINT_SAMPLES: usize = 64;

/// The peak footprint of a trace replay: the most anonymous memory it added to what the
/// process held before the trace was read, sampled exactly ([`anonymous_bytes`]) at
/// chosen operations ([`Footprint::is_sample_point`]). The time samples take is kept
/// apart, for the replay's clock to leave out. Shared by a threaded replay's threads.
pub struct Footprint {
    baseline: usize,
    peak: AtomicUsize,
    sampling_ns: AtomicU64,
    /// A sample is taken after every `every`-th operation.
    every: usize,
    /// The operation (counted from 1) after which the live payload first peaks, if known.
    peak_at: Option<usize>,
    ops: usize,
}

impl Footprint {
    /// Takes the baseline: call before the trace is read.
    pub fn start() -> Footprint {
        Footprint {
            baseline: anonymous_bytes(),
            peak: AtomicUsize::new(0),
            sampling_ns: AtomicU64::new(0),
            every: usize::MAX,
            peak_at: None,
            ops: 0,
        }
    }

    /// Plans the samples over a replay of `ops` operations whose live payload peaks
    /// after operation `peak_at`.
    pub fn plan(&mut self, ops: usize, peak_at: Option<usize>) {
        self.every = ops.div_ceil(FOOTPRINT_SAMPLES).max(1);
        self.peak_at = peak_at;
        self.ops = ops;
    }

    /// Whether to sample after operation `done` (counted from 1).
    pub fn is_sample_point(&self, done: usize) -> bool {
        done.is_multiple_of(self.every) || Some(done) == self.peak_at || done == self.ops
    }

    /// Samples the footprint now.
    pub fn sample(&self) {
        let started = Instant::now();
        self.peak.fetch_max(anonymous_bytes(), Ordering::Relaxed);
        let took = started.elapsed().as_nanos().try_into().unwrap_or(u64::MAX);
        self.sampling_ns.fetch_add(took, Ordering::Relaxed);
    }

    /// The time taken by samples so far.
    pub fn sampling_time(&self) -> Duration {
        Duration::from_nanos(self.sampling_ns.load(Ordering::Relaxed))
    }

    /// The peak footprint, less `harness_bytes` of the harness's own data that was
    /// allocated after the baseline and stayed live (at least 1, to divide by).
    pub fn peak(&self, harness_bytes: usize) -> usize {
        (self.peak.load(Ordering::Relaxed))
            .saturating_sub(self.baseline + harness_bytes)
            .max(1)
    }
}
