//! `cache-scratch` and `cache-thrash`: Hoard's tests of false sharing (Berger et al.,
//! "Hoard: A Scalable Memory Allocator for Multithreaded Applications", ASPLOS 2000).
//! Each thread repeatedly allocates a small object, writes it many times, and frees it.
//!
//! - `cache-thrash` (active false sharing): if the allocator gives threads objects on
//!   one cache line, their writes fight over it.
//! - `cache-scratch` (passive false sharing): the main thread first allocates one object
//!   per thread, side by side, and hands one to each thread, which frees it before its
//!   loop. An allocator that reuses a freed object for the thread that freed it puts
//!   the threads on the main thread's shared cache line.
//!
//! Throughput depends on cache traffic, so these show most on many cores.
//!
//! `--iterations N`: objects each thread allocates and frees.

use super::{Block, Config, Tally, on_threads};

/// Hoard's runs use 8-byte objects.
const OBJECT: usize = 8;
/// Writes to each byte of an object between its allocation and its free.
const WRITES: usize = 50;

pub fn thrash(config: Config) -> Tally {
    let objects = config.iterations_or(200_000);
    on_threads(config.threads, |index| churn(objects, index as u8))
}

pub fn scratch(config: Config) -> Tally {
    let objects = config.iterations_or(200_000);
    let mut handed = Tally::default();
    let shared: Vec<Block> = (0..config.threads)
        .map(|index| handed.alloc(OBJECT, index as u8))
        .collect();
    let mut tally = on_threads(config.threads, |index| {
        let mut tally = Tally::default();
        tally.free(shared[index]);
        let rest = churn(objects, index as u8);
        tally.add(rest);
        tally
    });
    tally.add(handed);
    tally
}

/// `objects` times: allocate an object, write each byte `WRITES` times, check, free.
fn churn(objects: usize, tag: u8) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..objects {
        let block = tally.alloc(OBJECT, tag);
        if block.is_empty() {
            continue;
        }
        for round in 0..WRITES {
            for byte in 0..OBJECT {
                // SAFETY: the block holds OBJECT bytes. Volatile, so that every write
                // reaches memory (the point of the test) and none is optimised away.
                unsafe { block.ptr.add(byte).write_volatile(round as u8) };
            }
        }
        // SAFETY: as above; puts the tag back before the free checks it.
        unsafe { block.ptr.write_bytes(tag, OBJECT) };
        tally.free(block);
    }
    tally
}
