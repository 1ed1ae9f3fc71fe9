//! `xmalloc`: xmalloc-test (Lever and Boreham, "malloc() Performance in a
//! Multithreaded Linux Environment", USENIX 2000). Producer threads allocate blocks and
//! hand them, in batches, to consumer threads, which free them: every free is remote,
//! the case that a per-thread cache must send home.
//!
//! With T threads, the first half (rounded up) produce and the rest consume. With one
//! thread it does both, so its frees are local: the baseline for the remote case.
//!
//! `--iterations N`: batches each producer makes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Block, Config, Tally, on_threads};

const BATCH: usize = 100;
/// Batches waiting at most: producers wait for consumers beyond it, so the live set
/// stays bounded (as the original's fixed queue does).
const QUEUE_LIMIT: usize = 64;
const SMALLEST: usize = 8;
const LARGEST: usize = 512;

pub fn run(config: Config) -> Tally {
    let batches = config.iterations_or(4000);
    let threads = config.threads;
    let producers = threads.div_ceil(2);
    let queue: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
    let producing = AtomicUsize::new(producers);
    let lock = || queue.lock().unwrap_or_else(|e| e.into_inner());
    on_threads(threads, |index| {
        let mut tally = Tally::default();
        let mut rng = config.rng(index);
        let consume = |tally: &mut Tally, batch: Vec<Block>| {
            for block in batch {
                tally.free(block);
            }
        };
        if index < producers {
            for _ in 0..batches {
                let batch: Vec<Block> = (0..BATCH)
                    .map(|_| tally.alloc(rng.between(SMALLEST, LARGEST), index as u8))
                    .collect();
                loop {
                    let mut waiting = lock();
                    if waiting.len() < QUEUE_LIMIT {
                        waiting.push(batch);
                        break;
                    }
                    if threads == 1 {
                        // Alone: free what waits, then queue this batch.
                        let old = std::mem::take(&mut *waiting);
                        drop(waiting);
                        old.into_iter().for_each(|b| consume(&mut tally, b));
                    } else {
                        drop(waiting);
                        std::thread::yield_now();
                    }
                }
            }
            producing.fetch_sub(1, Ordering::Release);
            if threads > 1 {
                return tally;
            }
        }
        loop {
            let batch = lock().pop();
            match batch {
                Some(batch) => consume(&mut tally, batch),
                // Acquire: pairs with the producers' Release, so their last pushes
                // are visible to the pop that follows.
                None if producing.load(Ordering::Acquire) == 0 => match lock().pop() {
                    Some(batch) => consume(&mut tally, batch),
                    None => break,
                },
                None => std::thread::yield_now(),
            }
        }
        tally
    })
}
