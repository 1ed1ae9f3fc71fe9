//! `mleak`: modelled on mimalloc-bench's mleak, a program that leaks: among short-lived
//! blocks, one block in 20 is kept for good, so the live set only grows and the
//! short-lived blocks are allocated between ever more long-lived ones. (The kept blocks
//! are checked and freed at the very end, uncounted.)
//!
//! `--iterations N`: allocations per thread.

use super::{Block, Config, Tally, log_uniform, on_threads};

const KEEP_ONE_IN: usize = 20;
/// Short-lived blocks live at once.
const SHORT_LIVED: usize = 100;

pub fn run(config: Config) -> Tally {
    let allocations = config.iterations_or(400_000);
    on_threads(config.threads, |index| {
        let mut rng = config.rng(index);
        let mut tally = Tally::default();
        let tag = index as u8;
        let mut kept = Vec::with_capacity(allocations / KEEP_ONE_IN + 1);
        let mut short = [Block::EMPTY; SHORT_LIVED];
        for step in 0..allocations {
            let block = tally.alloc(log_uniform(&mut rng, 16, 512), tag);
            if step % KEEP_ONE_IN == 0 {
                kept.push(block);
            } else {
                let slot = rng.between(0, SHORT_LIVED - 1);
                if !short[slot].is_empty() {
                    tally.free(short[slot]);
                }
                short[slot] = block;
            }
        }
        for block in short {
            if !block.is_empty() {
                tally.free(block);
            }
        }
        let ops = tally.ops;
        for block in kept {
            tally.free(block);
        }
        tally.ops = ops;
        tally
    })
}
