//! The page engine called directly (no preload) against glibc's malloc in the same
//! process: batches of small blocks allocated then freed, one thread, then two threads
//! with no sharing. A quick look at the fast paths while the `.so` is being wired;
//! the real comparison is `harness bench`.
//!
//! `cargo run --release -p thread-heaps --example engine_vs_glibc`

use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

use thread_heaps::ThreadHeaps;

static HEAPS: ThreadHeaps<segregated_fits::SegregatedFitsHeap> = ThreadHeaps::new();
const BATCH: usize = 1000;
const ROUNDS: usize = 2000;

fn ours() {
    let mut blocks = [NonNull::<u8>::dangling(); BATCH];
    for round in 0..ROUNDS {
        for (i, slot) in blocks.iter_mut().enumerate() {
            *slot = HEAPS.alloc(1 + (i * 7 + round) % 64, 16).unwrap();
        }
        for block in blocks.iter().rev() {
            HEAPS.free(black_box(*block)).unwrap();
        }
    }
}

fn glibc() {
    let mut blocks = [std::ptr::null_mut::<libc::c_void>(); BATCH];
    for round in 0..ROUNDS {
        for (i, slot) in blocks.iter_mut().enumerate() {
            // SAFETY: plain malloc.
            *slot = black_box(unsafe { libc::malloc(1 + (i * 7 + round) % 64) });
        }
        for block in blocks.iter().rev() {
            // SAFETY: each block came from malloc above.
            unsafe { libc::free(black_box(*block)) };
        }
    }
}

fn time(name: &str, threads: usize, work: fn()) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads).map(|_| std::thread::spawn(work)).collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let ns = start.elapsed().as_secs_f64() * 1e9 / (threads * BATCH * ROUNDS) as f64;
    println!("{name:<8} {threads} thread(s): {ns:6.2} ns per malloc+free (wall / total pairs)");
    ns
}

fn main() {
    for threads in [1, 2] {
        let g = time("glibc", threads, glibc);
        let o = time("phase 5", threads, ours);
        println!("ratio at {threads}: {:.2}x glibc", o / g);
    }
}
