//! `--small N`: allocate and free N small blocks (1-64 bytes), seeded, and report the
//! time and the rate. The mix is what real programs do: half the batches allocate a
//! batch and free it all (in random order), half interleave allocation and freeing
//! over a pool of live blocks.
//!
//! With `--threads T` the blocks are shared out over T threads, each with its own seed.

use std::ffi::c_void;
use std::time::Instant;

use harness::rng::Rng;

/// Blocks per batch: large enough to look like a program's working set, small enough
/// to stay in cache as glibc's would.
const BATCH: usize = 10_000;
/// Live blocks in an interleaved batch.
const POOL: usize = 1_000;

pub fn run(blocks: usize, threads: usize, seed: u64) -> i32 {
    let started = Instant::now();
    let mut broken = 0;
    if threads == 1 {
        // On the main thread, so the process stays single-threaded, as the programs it
        // stands for are (allocators, glibc's included, take a cheaper path then).
        broken = workload(blocks, seed);
    } else {
        let share = blocks / threads;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let count = if t == 0 {
                    share + blocks % threads
                } else {
                    share
                };
                let seed = seed.wrapping_add(t as u64);
                std::thread::spawn(move || workload(count, seed))
            })
            .collect();
        for worker in workers {
            broken += worker.join().unwrap_or(1);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let ops = 2.0 * blocks as f64;
    let plural = if threads == 1 { "" } else { "s" };
    println!(
        "small: {blocks} blocks of 1-64 B on {threads} thread{plural}: {seconds:.3} s, {:.0} ops/s; peak RSS {} KiB",
        ops / seconds,
        crate::memory::peak_resident_bytes() / 1024
    );
    if broken > 0 {
        eprintln!("bench_alloc: {broken} blocks did not keep their contents or were NULL");
        return 1;
    }
    0
}

/// One thread's share: returns how many blocks came back NULL or corrupted.
fn workload(blocks: usize, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(*mut u8, usize)> = Vec::with_capacity(BATCH);
    let mut broken = 0;
    let mut done = 0;
    let mut batch = 0;
    while done < blocks {
        let count = BATCH.min(blocks - done);
        if batch % 2 == 0 {
            for _ in 0..count {
                live.push(allocate(&mut rng));
            }
            while !live.is_empty() {
                let victim = rng.between(0, live.len() - 1);
                broken += release(live.swap_remove(victim));
            }
        } else {
            for _ in 0..count {
                if live.len() == POOL {
                    let victim = rng.between(0, POOL - 1);
                    broken += release(live.swap_remove(victim));
                }
                live.push(allocate(&mut rng));
            }
            for block in live.drain(..) {
                broken += release(block);
            }
        }
        done += count;
        batch += 1;
    }
    broken
}

/// A block of 1-64 bytes with its first and last byte marked.
fn allocate(rng: &mut Rng) -> (*mut u8, usize) {
    let size = rng.between(1, 64);
    // SAFETY: plain malloc; the result is checked before it is written.
    let p = unsafe { libc::malloc(size) }.cast::<u8>();
    if !p.is_null() {
        // SAFETY: the block holds `size >= 1` bytes.
        unsafe {
            p.write(size as u8);
            p.add(size - 1).write(size as u8);
        }
    }
    (p, size)
}

/// Checks the marks and frees; 1 if the block was NULL or its marks were lost.
fn release((p, size): (*mut u8, usize)) -> usize {
    if p.is_null() {
        return 1;
    }
    // SAFETY: `p` is a live block of `size` bytes from `allocate`.
    let kept = unsafe { p.read() == size as u8 && p.add(size - 1).read() == size as u8 };
    // SAFETY: `p` came from malloc and is freed once.
    unsafe { libc::free(p.cast::<c_void>()) };
    usize::from(!kept)
}
