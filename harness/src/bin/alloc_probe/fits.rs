//! Phase 4's lessons, shown by behaviour: how a free block is found. Judged by the
//! addresses handed out and by how the time of a request changes with the number of
//! free blocks, measured in this process.
//!
//! Sizes stay between 1 KiB and 128 KiB: above glibc's per-thread cache (1032 bytes)
//! and fast bins, so that glibc takes them from its sorted bins, and below the mmap
//! thresholds, so that every block here lives in the brk heap.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::placed::{free, malloc};
use crate::{Outcome, ensure};

/// Free blocks of five sizes, 2 KB to 32 KB, each between two used fences (so none
/// merges with another), freed largest last; then one request for each, in a mixed
/// order, a little smaller than the block meant for it. A good fit serves each request
/// from the smallest free block that holds it. First fit on a list that keeps the
/// newest block first carves the first request out of the 32 KB block instead.
///
/// The fences are 1100 bytes, not smaller: an allocator that serves small blocks from
/// somewhere else (phase 5's pages take up to 1 KiB) must still put them between the
/// holes, or the holes would be neighbours and merge.
pub fn good_fit() -> Outcome {
    const SIZES: [usize; 5] = [2_000, 4_000, 8_000, 16_000, 32_000];
    const FENCE: usize = 1100;
    /// Indices into `SIZES`, the order of the requests.
    const ORDER: [usize; 5] = [1, 0, 3, 2, 4];
    let mut fences = Vec::with_capacity(SIZES.len() + 1);
    let mut holes = [0usize; SIZES.len()];
    fences.push(malloc(FENCE)?);
    for (hole, &size) in holes.iter_mut().zip(&SIZES) {
        *hole = malloc(size)?;
        fences.push(malloc(FENCE)?);
    }
    holes.iter().for_each(|&p| free(p));

    let mut served = [0usize; SIZES.len()];
    for &i in &ORDER {
        served[i] = malloc(SIZES[i] - 200)?;
    }
    let misplaced: Vec<String> = ORDER
        .iter()
        .filter(|&&i| served[i] != holes[i])
        .map(|&i| {
            let request = SIZES[i] - 200;
            let wrong_hole =
                (0..SIZES.len()).find(|&j| (holes[j]..holes[j] + SIZES[j]).contains(&served[i]));
            match wrong_hole {
                Some(j) => format!(
                    "{request} B came from the free {} B block, not the {} B one",
                    SIZES[j], SIZES[i]
                ),
                None => format!(
                    "{request} B did not come from the free {} B block",
                    SIZES[i]
                ),
            }
        })
        .collect();
    served.iter().for_each(|&p| free(p));
    fences.iter().for_each(|&p| free(p));
    ensure!(
        misplaced.is_empty(),
        "a request should take the smallest free block that holds it: {}",
        misplaced.join("; ")
    );
    Ok("each of 5 requests took the smallest free block that holds it".into())
}

/// How long a request takes when the heap holds `fragments` small free blocks that
/// cannot serve it: the time of [`MEDIUM_REQUESTS`] requests of 4 KiB, each served
/// by a free 4 KiB block freed *before* the fragments.
///
/// The heap looks the same whatever `fragments` is: [`SMALL_BLOCKS`] blocks of 64
/// bytes, each followed by a used fence, of which the first `fragments` are freed (and
/// cannot merge). So only the number of free blocks changes between two measurements,
/// not the heap's size or what is in the caches. The fragments are freed last, so an
/// allocator that walks one list newest first steps over all of them on every request.
/// Before the timing, a few untimed requests of the same size let an allocator that
/// sorts freed blocks lazily (glibc's unsorted bin) finish sorting: what is measured is
/// the steady cost of a request, not a one-time tidy-up.
fn request_time(fragments: usize) -> Result<Duration, String> {
    const MEDIUM: usize = 4096;
    const WARM_UP: usize = 50;
    let mediums = MEDIUM_REQUESTS + WARM_UP;
    let mut fences = Vec::with_capacity(mediums + SMALL_BLOCKS);
    let mut free_mediums = Vec::with_capacity(mediums);
    for _ in 0..mediums {
        free_mediums.push(malloc(MEDIUM)?);
        fences.push(malloc(64)?);
    }
    let mut small = Vec::with_capacity(SMALL_BLOCKS);
    for _ in 0..SMALL_BLOCKS {
        small.push(malloc(64)?);
        fences.push(malloc(64)?);
    }
    free_mediums.iter().for_each(|&p| free(p));
    small[..fragments].iter().for_each(|&p| free(p));

    let mut served = Vec::with_capacity(mediums);
    for _ in 0..WARM_UP {
        served.push(malloc(MEDIUM)?);
    }
    let start = Instant::now();
    for _ in 0..MEDIUM_REQUESTS {
        served.push(black_box(malloc(MEDIUM)?));
    }
    let time = start.elapsed();

    served.iter().for_each(|&p| free(p));
    small[fragments..].iter().for_each(|&p| free(p));
    fences.iter().for_each(|&p| free(p));
    Ok(time)
}

/// Small blocks in the heap during [`request_time`]; some or all of them free.
const SMALL_BLOCKS: usize = 100_000;

/// Requests timed per measurement.
const MEDIUM_REQUESTS: usize = 200;

/// The time of a request does not grow with the number of free blocks: 4 KiB requests
/// with 100 000 small free fragments in the heap take about as long as with 100.
///
/// Timed in this one process, as a ratio, so the machine's speed cancels out; each
/// count is measured five times, interleaved, and the fastest run of each counts, so a
/// run slowed by another process does not decide. A search that walks the fragments
/// makes the ratio about a thousand; one that finds a block in a bounded number of
/// steps keeps it near 1 (`MAX_RATIO` leaves room for noise).
pub fn bounded_search() -> Outcome {
    const FEW: usize = 100;
    const MANY: usize = SMALL_BLOCKS;
    const ROUNDS: usize = 5;
    const MAX_RATIO: f64 = 10.0;
    let mut few = Duration::MAX;
    let mut many = Duration::MAX;
    for _ in 0..ROUNDS {
        few = few.min(request_time(FEW)?);
        many = many.min(request_time(MANY)?);
    }
    let ratio = many.as_secs_f64() / few.as_secs_f64().max(1e-9);
    let per_request = |d: Duration| d.as_nanos() / MEDIUM_REQUESTS as u128;
    let note = format!(
        "a 4 KiB request took {} ns with {FEW} small free fragments and {} ns with {MANY} \
         (ratio {ratio:.1}, best of {ROUNDS})",
        per_request(few),
        per_request(many)
    );
    let bounded = ratio <= MAX_RATIO;
    ensure!(
        bounded,
        "{note}: the search grows with the number of free blocks (at most {MAX_RATIO}x expected)"
    );
    Ok(note)
}
