//! Utilization on traces that no phase was tuned for: shapes the suite in
//! `harness/traces/` does not have, generated here from fixed seeds and replayed by
//! `bench_alloc --trace` under glibc and under phase 4. The footprint is read from the
//! page tables (exact to the page), so comparing two of them is a comparison of
//! memory, which machine load does not change.
//!
//! `cargo test -p harness --test unseen -- --nocapture` prints each trace's peak
//! footprint under both allocators.

use std::fmt::Write as _;
use std::path::Path;

use harness::rng::Rng;

/// A trace being written: malloc-lab lines, the next id, and the live blocks' sizes.
#[derive(Default)]
struct Writer {
    lines: String,
    ops: usize,
    live: Vec<(usize, usize)>,
    next_id: usize,
    payload: usize,
    peak: usize,
}

impl Writer {
    fn alloc(&mut self, size: usize) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.op(format_args!("a {id} {size}"));
        self.live.push((id, size));
        self.grew(0, size);
        id
    }

    /// Resizes the live block at `index` of `live` to `size` bytes.
    fn realloc_at(&mut self, index: usize, size: usize) {
        let (id, old) = self.live[index];
        self.op(format_args!("r {id} {size}"));
        self.live[index].1 = size;
        self.grew(old, size);
    }

    /// Frees the live block at `index` of `live` (the last live block takes its place).
    fn free_at(&mut self, index: usize) {
        let (id, size) = self.live.swap_remove(index);
        self.op(format_args!("f {id}"));
        self.payload -= size;
    }

    /// Frees the oldest live block, keeping the others in order.
    fn free_oldest(&mut self) {
        let (id, size) = self.live.remove(0);
        self.op(format_args!("f {id}"));
        self.payload -= size;
    }

    fn op(&mut self, line: std::fmt::Arguments) {
        let _ = writeln!(self.lines, "{line}");
        self.ops += 1;
    }

    fn grew(&mut self, old: usize, new: usize) {
        self.payload = self.payload - old + new;
        self.peak = self.peak.max(self.payload);
    }

    /// Frees what is left and writes the trace to `path`.
    fn finish(mut self, path: &Path) {
        while !self.live.is_empty() {
            let last = self.live.len() - 1;
            self.free_at(last);
        }
        let header = format!("{}\n{}\n{}\n1\n", self.peak, self.next_id, self.ops);
        std::fs::write(path, header + &self.lines).expect("the trace is written");
    }
}

/// A sliding window: each block lives for the next 2000 allocations, sizes 32 B to 4 KiB
/// (a queue of messages, a log buffer).
fn fifo_window(path: &Path) {
    let mut rng = Rng::new(10);
    let mut w = Writer::default();
    for _ in 0..60_000 {
        w.alloc(rng.between(32, 4096));
        if w.live.len() > 2000 {
            w.free_oldest();
        }
    }
    w.finish(path);
}

/// 5000 live blocks, each freed at random and replaced by a new one, sizes spread
/// evenly over powers of two from 16 B to 2 KiB: a long-running program's steady state.
fn steady_churn(path: &Path) {
    let mut rng = Rng::new(8);
    let mut w = Writer::default();
    let size = |rng: &mut Rng| {
        let bits = rng.between(4, 11);
        rng.between(1, 1 << bits)
    };
    for _ in 0..5000 {
        let s = size(&mut rng);
        w.alloc(s);
    }
    for _ in 0..100_000 {
        let index = rng.between(0, w.live.len() - 1);
        w.free_at(index);
        let s = size(&mut rng);
        w.alloc(s);
    }
    w.finish(path);
}

/// 64 buffers that grow (mostly) and shrink by `realloc`, with small blocks allocated
/// between, most of them freed at once: buffers of a program that reads and trims.
fn realloc_grow_shrink(path: &Path) {
    let mut rng = Rng::new(4);
    let mut w = Writer::default();
    for _ in 0..64 {
        w.alloc(64);
    }
    for step in 0..30_000 {
        // The buffers are the first 64 live blocks: small blocks are freed at once or
        // stay after them (`free_at` of the last one keeps the buffers in place).
        let index = rng.between(0, 63);
        let size = w.live[index].1;
        let size = if rng.chance(60) {
            if rng.chance(20) {
                size * 2
            } else {
                size + rng.between(16, 512)
            }
            .min(1 << 20)
        } else {
            (size / rng.between(2, 4)).max(16)
        };
        w.realloc_at(index, size);
        if step % 3 == 0 {
            w.alloc(rng.between(16, 256));
            if rng.chance(70) {
                let last = w.live.len() - 1;
                w.free_at(last);
            }
        }
    }
    w.finish(path);
}

/// A trace of this file: its name and the function that writes it to a path.
type Generator = (&'static str, fn(&Path));

/// Peak footprint in bytes of `trace` under `lib` (glibc's allocator if `None`).
fn footprint(trace: &Path, lib: Option<&Path>) -> usize {
    let outcome = harness::runner::Run::new(harness::phases::bench_alloc_release())
        .arg("--trace")
        .arg(trace)
        .preload(lib)
        .run()
        .expect("bench_alloc starts");
    assert!(outcome.succeeded(), "{}: {outcome}", trace.display());
    let line = outcome.stdout_text();
    line.split("peak footprint ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("no footprint in {line:?}"))
}

/// Issue 14's goal for phase 4, on traces it was not tuned for: a peak footprint no
/// larger than glibc's for the same trace (so a utilization at least glibc's). These
/// three it meets with room to spare (5 to 15 points of utilization on the machine the
/// test was written on), so a change that gives that up fails here.
#[test]
fn phase4_needs_no_more_memory_than_glibc_on_unseen_traces() {
    harness::phases::build_all().expect("the phases build");
    let lib = harness::phases::phase(4)
        .expect("phase 4 is registered")
        .lib_path();
    let dir = tempfile::tempdir().unwrap();
    let traces: [Generator; 3] = [
        ("fifo_window", fifo_window),
        ("steady_churn", steady_churn),
        ("realloc_grow_shrink", realloc_grow_shrink),
    ];
    for (name, make) in traces {
        let path = dir.path().join(format!("{name}.rep"));
        make(&path);
        let (glibc, phase4) = (
            footprint(&path, None),
            footprint(&path, Some(lib.as_path())),
        );
        println!("{name}: peak footprint glibc {glibc} B, phase 4 {phase4} B");
        assert!(
            phase4 <= glibc,
            "{name}: phase 4's peak footprint {phase4} B is above glibc's {glibc} B"
        );
    }
}
