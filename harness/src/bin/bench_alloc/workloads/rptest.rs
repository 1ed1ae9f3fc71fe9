//! `rptest`: modelled on rpmalloc's benchmark (Mattias Jansson's rpmalloc-benchmark).
//! Each thread keeps a working set of blocks with sizes uniform in their logarithm
//! (16 B to 16 KiB), replaces random ones (random lifetimes), and every so often
//! hands a batch of its blocks to the next thread, which frees them: a steady share
//! of cross-thread frees without the threads ever stopping.
//!
//! `--iterations N`: replacements per thread.

use std::sync::Mutex;

use super::{Block, Config, Tally, log_uniform, on_threads};

const WORKING_SET: usize = 2000;
/// Every this many replacements, a batch goes to the next thread.
const HAND_OFF_EVERY: usize = 100;
const BATCH: usize = 20;

pub fn run(config: Config) -> Tally {
    let steps = config.iterations_or(150_000);
    let threads = config.threads;
    let inboxes: Vec<Mutex<Vec<Block>>> = (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    let lock = |t: usize| inboxes[t].lock().unwrap_or_else(|e| e.into_inner());
    let mut tally = on_threads(threads, |index| {
        let mut rng = config.rng(index);
        let mut tally = Tally::default();
        let tag = index as u8;
        let mut set: Vec<Block> = (0..WORKING_SET)
            .map(|_| tally.alloc(log_uniform(&mut rng, 16, 16384), tag))
            .collect();
        for step in 1..=steps {
            let victim = rng.between(0, WORKING_SET - 1);
            tally.free(set[victim]);
            set[victim] = tally.alloc(log_uniform(&mut rng, 16, 16384), tag);
            if step % HAND_OFF_EVERY == 0 {
                // Hand BATCH blocks to the next thread, replaced by fresh ones...
                let mut outgoing = Vec::with_capacity(BATCH);
                for _ in 0..BATCH {
                    let slot = rng.between(0, WORKING_SET - 1);
                    outgoing.push(set[slot]);
                    set[slot] = tally.alloc(log_uniform(&mut rng, 16, 16384), tag);
                }
                lock((index + 1) % threads).append(&mut outgoing);
                // ...and free what the previous thread handed us.
                let incoming = std::mem::take(&mut *lock(index));
                for block in incoming {
                    tally.free(block);
                }
            }
        }
        for block in set {
            tally.free(block);
        }
        tally
    });
    for inbox in inboxes {
        for block in inbox.into_inner().unwrap_or_else(|e| e.into_inner()) {
            tally.free(block);
        }
    }
    tally
}
