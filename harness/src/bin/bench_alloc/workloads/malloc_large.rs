//! `malloc-large`: modelled on mimalloc-bench's malloc-large: buffers of 5 to 25 MiB,
//! each filled (one byte per page, as a program writing its buffer touches every page),
//! a few kept live and replaced at random. An allocator that returns such buffers to
//! the OS and maps fresh ones pays for zeroed pages each time; one that keeps them
//! (glibc raises its mmap threshold after the first free) does not.
//!
//! `--iterations N`: buffers each thread allocates.

use super::{Block, Config, Tally, on_threads};

const LIVE: usize = 4;
const MIB: usize = 1024 * 1024;

pub fn run(config: Config) -> Tally {
    let buffers = config.iterations_or(150);
    on_threads(config.threads, |index| {
        let mut rng = config.rng(index);
        let mut tally = Tally::default();
        let mut live = [Block::EMPTY; LIVE];
        for _ in 0..buffers {
            let slot = rng.between(0, LIVE - 1);
            if !live[slot].is_empty() {
                tally.free(live[slot]);
            }
            live[slot] = tally.alloc(rng.between(5 * MIB, 25 * MIB), index as u8);
        }
        for block in live {
            if !block.is_empty() {
                tally.free(block);
            }
        }
        tally
    })
}
