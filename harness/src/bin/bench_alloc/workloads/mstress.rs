//! `mstress`: modelled on mimalloc's stress test (`test-stress`, used as mstress in
//! mimalloc-bench; Leijen et al., "Mimalloc: Free List Sharding in Action", 2019).
//! Threads allocate blocks of random sizes (mostly small, a few up to 256 KiB), keep
//! them in an array with random lifetimes, and now and then swap one with a slot of a
//! shared transfer array, so blocks end their lives on another thread. The threads
//! are ended and new ones started each round; the transfer array outlives them.
//!
//! `--iterations N`: steps per thread per round (5 rounds).

use std::sync::Mutex;

use super::{Block, Config, Tally, on_threads};
use harness::rng::Rng;

const ROUNDS: usize = 5;
/// Blocks a thread keeps.
const LOCAL: usize = 2000;
/// Slots of the transfer array shared by all threads.
const TRANSFER: usize = 1000;

/// 90% 8-128 B, 9% up to 4 KiB, 1% up to 256 KiB.
fn size(rng: &mut Rng) -> usize {
    match rng.between(0, 99) {
        0 => rng.between(4096, 256 * 1024),
        1..=9 => rng.between(128, 4096),
        _ => rng.between(8, 128),
    }
}

pub fn run(config: Config) -> Tally {
    let steps = config.iterations_or(40_000);
    let transfer: Vec<Mutex<Block>> = (0..TRANSFER).map(|_| Mutex::new(Block::EMPTY)).collect();
    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        let done = on_threads(config.threads, |index| {
            let mut rng = config.rng(round * config.threads + index);
            let mut tally = Tally::default();
            let tag = (round * config.threads + index) as u8;
            let mut local = vec![Block::EMPTY; LOCAL];
            for _ in 0..steps {
                let slot = rng.between(0, LOCAL - 1);
                if rng.chance(10) {
                    // Swap with the transfer array: the block we get was probably
                    // allocated by another thread, and will be freed here.
                    let mut shared = transfer[rng.between(0, TRANSFER - 1)]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    std::mem::swap(&mut *shared, &mut local[slot]);
                } else {
                    if !local[slot].is_empty() {
                        tally.free(local[slot]);
                    }
                    local[slot] = tally.alloc(size(&mut rng), tag);
                }
            }
            // A thread ends with half its blocks freed; the rest leak into the next
            // round's threads through the transfer array, or are freed here.
            for (i, block) in local.into_iter().enumerate() {
                if block.is_empty() {
                    continue;
                }
                let mut shared = transfer[i % TRANSFER]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if i % 2 == 0 && shared.is_empty() {
                    *shared = block;
                } else {
                    drop(shared);
                    tally.free(block);
                }
            }
            tally
        });
        tally.add(done);
    }
    for slot in transfer {
        let block = slot.into_inner().unwrap_or_else(|e| e.into_inner());
        if !block.is_empty() {
            tally.free(block);
        }
    }
    tally
}
