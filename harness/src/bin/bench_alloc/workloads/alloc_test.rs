//! `alloc-test`: modelled on ithare's alloc-test (used as alloc-test1 and alloc-testN in
//! mimalloc-bench): a large live set of blocks of mixed sizes up to 1 KiB, small ones
//! more likely (sizes uniform in their logarithm), each step freeing a random block and
//! allocating one of a new size in its place. An allocator that searches a list of free
//! fragments pays here for every fragment it walks past.
//!
//! `--iterations N`: replacements per thread.

use super::{Block, Config, Tally, log_uniform, on_threads};

/// Live blocks per thread.
const LIVE: usize = 50_000;

pub fn run(config: Config) -> Tally {
    let steps = config.iterations_or(400_000);
    on_threads(config.threads, |index| {
        let mut rng = config.rng(index);
        let mut tally = Tally::default();
        let tag = index as u8;
        let mut live: Vec<Block> = (0..LIVE)
            .map(|_| tally.alloc(log_uniform(&mut rng, 8, 1024), tag))
            .collect();
        for _ in 0..steps {
            let victim = rng.between(0, LIVE - 1);
            tally.free(live[victim]);
            live[victim] = tally.alloc(log_uniform(&mut rng, 8, 1024), tag);
        }
        for block in live {
            tally.free(block);
        }
        tally
    })
}
