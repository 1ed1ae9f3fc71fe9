//! `larson`: Larson and Krishnan's simulation of a server ("Memory allocation for
//! long-running server applications", ISMM 1998). Each thread owns an array of blocks
//! of random sizes (8-1000 bytes) and repeatedly frees a random one and allocates a
//! replacement. After a round its array passes to a new thread (the old one exits), so
//! most blocks are freed by a thread other than the one that allocated them, as in a
//! server whose connections move between worker threads.
//!
//! `--iterations N`: replacements per thread per round (10 rounds).

use super::{Block, Config, Tally, on_threads};

/// Blocks each thread keeps live: 5000 (the papers' runs use thousands per thread).
const SLOTS: usize = 5000;
const ROUNDS: usize = 10;
const SMALLEST: usize = 8;
const LARGEST: usize = 1000;

pub fn run(config: Config) -> Tally {
    let per_round = config.iterations_or(40_000);
    let mut tally = Tally::default();
    let mut rng = config.rng(usize::MAX);
    // The arrays are filled by the main thread, before the first round, as in the
    // original's warm-up.
    let mut arrays: Vec<Vec<Block>> = (0..config.threads)
        .map(|t| {
            (0..SLOTS)
                .map(|_| tally.alloc(rng.between(SMALLEST, LARGEST), t as u8))
                .collect()
        })
        .collect();
    for round in 0..ROUNDS {
        let slots: Vec<std::sync::Mutex<Vec<Block>>> =
            arrays.drain(..).map(std::sync::Mutex::new).collect();
        let threads = config.threads;
        let done = on_threads(threads, |index| {
            // Thread `index` takes over the array of the previous round's thread
            // `index - 1`: none of those blocks are its own.
            let mut blocks = std::mem::take(
                &mut *slots[(index + threads - 1) % threads]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            let mut rng = config.rng(round * threads + index);
            let mut tally = Tally::default();
            let tag = (round * threads + index) as u8;
            for _ in 0..per_round {
                let victim = rng.between(0, SLOTS - 1);
                tally.free(blocks[victim]);
                blocks[victim] = tally.alloc(rng.between(SMALLEST, LARGEST), tag);
            }
            *slots[(index + threads - 1) % threads]
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = blocks;
            tally
        });
        tally.add(done);
        arrays = slots
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
    }
    for block in arrays.into_iter().flatten() {
        tally.free(block);
    }
    tally
}
