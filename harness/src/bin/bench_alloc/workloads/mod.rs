//! The standard allocator workloads, each written here from its published description
//! (mimalloc-bench's collection; the Larson, Hoard, mimalloc and snmalloc papers), so a
//! reader of those papers finds them under the same names. No code is copied.
//!
//! | mode | models | what it stresses |
//! |---|---|---|
//! | `larson` | Larson and Krishnan's server simulation | churn in a large live set; each round's blocks are freed by the next round's thread |
//! | `xmalloc` | xmalloc-test (Lever and Boreham) | producers allocate, consumers free: every free is remote |
//! | `cache-scratch` | Hoard's cache-scratch | passive false sharing: one thread's small blocks handed to others |
//! | `cache-thrash` | Hoard's cache-thrash | active false sharing: small blocks of different threads on one cache line |
//! | `mstress` | mimalloc's stress test | random sizes and lifetimes, blocks swapped between threads, threads restarted |
//! | `rptest` | rpmalloc's benchmark | log-uniform sizes up to 16 KiB, batches freed by the next thread |
//! | `alloc-test` | ithare's alloc-test | a large live set of sizes up to 1 KiB, replaced at random |
//! | `malloc-large` | mimalloc-bench's malloc-large | buffers of 5-25 MiB, filled, replaced |
//! | `mleak` | mimalloc-bench's mleak | a live set that only grows, among short-lived blocks |
//!
//! Every mode takes `--threads T` (default 1) and `--iterations N` (its main loop count,
//! per thread; each mode has a default sized for about a quarter of a second under
//! glibc here), and prints one line in one format:
//!
//! ```text
//! larson: 2 threads, 400000 ops in 0.2113 s, 1893043 ops/s; peak RSS 6144 KiB; ok
//! ```
//!
//! where ops counts calls into the allocator. Every block is written when it is
//! allocated and checked when it is freed; a block that lost its contents (or came back
//! NULL) turns `ok` into `FAILED: N blocks ...` and the exit code into 1.

mod alloc_test;
mod cache;
mod larson;
mod malloc_large;
mod mleak;
mod mstress;
mod rptest;
mod xmalloc;

use std::time::Instant;

use harness::rng::Rng;

/// How a workload is run, from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub threads: usize,
    /// `--iterations N`, or the mode's default.
    pub iterations: Option<usize>,
    pub seed: u64,
}

impl Config {
    fn iterations_or(&self, default: usize) -> usize {
        self.iterations.unwrap_or(default)
    }

    /// The seed of thread `index`'s generator.
    fn rng(&self, index: usize) -> Rng {
        Rng::new(self.seed.wrapping_add(0x1000 * index as u64 + 1))
    }
}

/// What a thread did: calls into the allocator, and blocks that were NULL or came back
/// changed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub ops: u64,
    pub broken: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ops += other.ops;
        self.broken += other.broken;
    }

    /// Frees `block` (checking it first) and counts the call.
    fn free(&mut self, block: Block) {
        self.ops += 1;
        self.broken += u64::from(!block.free());
    }

    /// Allocates a block of `size` bytes marked with `tag`, and counts the call.
    fn alloc(&mut self, size: usize, tag: u8) -> Block {
        self.ops += 1;
        let block = Block::alloc(size, tag);
        self.broken += u64::from(block.ptr.is_null());
        block
    }
}

/// Whether `name` is a workload's: the list is `harness bench`'s, so that a workload
/// added here is benchmarked too.
pub fn is_workload(name: &str) -> bool {
    harness::bench::STANDARD
        .iter()
        .any(|(known, _)| *known == name)
}

/// Runs the workload called `name`; its exit code.
pub fn run(name: &str, config: Config) -> i32 {
    let started = Instant::now();
    let tally = match name {
        "larson" => larson::run(config),
        "xmalloc" => xmalloc::run(config),
        "cache-scratch" => cache::scratch(config),
        "cache-thrash" => cache::thrash(config),
        "mstress" => mstress::run(config),
        "rptest" => rptest::run(config),
        "alloc-test" => alloc_test::run(config),
        "malloc-large" => malloc_large::run(config),
        "mleak" => mleak::run(config),
        _ => unreachable!("the parser accepts only names for which is_workload holds"),
    };
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let threads = config.threads;
    let plural = if threads == 1 { "" } else { "s" };
    let verdict = if tally.broken == 0 {
        "ok".to_string()
    } else {
        format!(
            "FAILED: {} blocks were NULL or lost their contents",
            tally.broken
        )
    };
    println!(
        "{name}: {threads} thread{plural}, {} ops in {seconds:.4} s, {:.0} ops/s; peak RSS {} KiB; {verdict}",
        tally.ops,
        tally.ops as f64 / seconds,
        crate::memory::peak_resident_bytes() / 1024
    );
    i32::from(tally.broken > 0)
}

/// Runs `work(index)` on `threads` threads at once and adds up their tallies.
fn on_threads(threads: usize, work: impl Fn(usize) -> Tally + Sync) -> Tally {
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                let work = &work;
                scope.spawn(move || work(index))
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(tally) => total.add(tally),
                Err(_) => total.broken += 1,
            }
        }
    });
    total
}

/// A block the workload owns: where it is, its size, and the byte written into it.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    ptr: *mut u8,
    size: usize,
    tag: u8,
}

// SAFETY: a Block is a plain address and size; the workloads hand each one to exactly
// one thread at a time (through joins, mutexes or atomic swaps, which order the writes).
unsafe impl Send for Block {}
// SAFETY: shared `&Block`s only give out the address and size (copies); the block's
// bytes are read and written only by the one thread that holds it by value.
unsafe impl Sync for Block {}

/// Bytes written in full; in a larger block, one byte in each page of it, as a program
/// filling a buffer would touch every page without the bench timing memset.
const FILL_IN_FULL: usize = 4096;
const PAGE: usize = 4096;

impl Block {
    pub const EMPTY: Block = Block {
        ptr: core::ptr::null_mut(),
        size: 0,
        tag: 0,
    };

    pub fn is_empty(&self) -> bool {
        self.ptr.is_null()
    }

    /// `malloc(size)` (size at least 1), written with `tag`; `ptr` is NULL on failure.
    fn alloc(size: usize, tag: u8) -> Block {
        // SAFETY: plain malloc; the result is checked before it is written.
        let ptr = unsafe { libc::malloc(size) }.cast::<u8>();
        if ptr.is_null() {
            return Block::EMPTY;
        }
        // SAFETY: the block holds `size` bytes.
        unsafe {
            if size <= FILL_IN_FULL {
                ptr.write_bytes(tag, size);
            } else {
                let mut offset = 0;
                while offset < size {
                    ptr.add(offset).write(tag);
                    offset += PAGE;
                }
                ptr.add(size - 1).write(tag);
                ptr.add(size / 2).write(tag);
            }
        }
        Block { ptr, size, tag }
    }

    /// Whether its first, middle and last bytes still hold the tag.
    fn is_intact(&self) -> bool {
        if self.ptr.is_null() || self.size == 0 {
            return false;
        }
        // SAFETY: a live block of `size >= 1` bytes.
        unsafe {
            self.ptr.read() == self.tag
                && self.ptr.add(self.size / 2).read() == self.tag
                && self.ptr.add(self.size - 1).read() == self.tag
        }
    }

    /// Checks and frees the block; false if it had lost its contents (or was NULL).
    fn free(self) -> bool {
        if self.ptr.is_null() {
            return false;
        }
        let intact = self.is_intact();
        // SAFETY: a live block from malloc, freed once (the caller gave it up by value).
        unsafe { libc::free(self.ptr.cast()) };
        intact
    }
}

/// A size in `low..=high` whose logarithm is uniform: as many blocks of 16-32 bytes as
/// of 512-1024, the shape of the size distributions in the papers' traces.
fn log_uniform(rng: &mut Rng, low: usize, high: usize) -> usize {
    let (low_f, high_f) = ((low as f64).ln(), (high as f64).ln());
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((low_f + unit * (high_f - low_f)).exp() as usize).clamp(low, high)
}
