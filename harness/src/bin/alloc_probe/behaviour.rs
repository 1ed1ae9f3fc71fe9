//! Phase 2's lessons, shown by behaviour: where blocks land and whether the program
//! break moves, measured in this process. Nothing here trusts the allocator's dump.
//!
//! Sizes stay below 128 KiB so that allocators with an mmap threshold (phase 3, glibc)
//! keep these blocks in the brk heap.

use crate::placed::{free, malloc};
use crate::{Outcome, ensure};

fn program_break() -> usize {
    // SAFETY: sbrk(0) only reads the break.
    unsafe { libc::sbrk(0) as usize }
}

/// A freed 100 KiB block (kept off the top of the heap by a small block after it)
/// serves eight 10 KiB requests: they land inside it, and the break stays put.
pub fn split() -> Outcome {
    const BIG: usize = 100 * 1024;
    let large = malloc(BIG)?;
    let fence = malloc(16)?;
    free(large);
    let before = program_break();
    let mut small = [0usize; 8];
    for slot in &mut small {
        *slot = malloc(BIG / 10)?;
    }
    let after = program_break();
    let inside = small
        .iter()
        .filter(|&&p| (large..large + BIG).contains(&p))
        .count();
    small.iter().for_each(|&p| free(p));
    free(fence);
    ensure!(
        inside >= 6,
        "only {inside} of 8 small blocks were carved from the freed 100 KiB block (no splitting?)"
    );
    ensure!(
        after == before,
        "the program break grew by {} bytes although a free block could serve",
        after - before
    );
    Ok(format!(
        "{inside} of 8 10-KiB requests served from a freed 100 KiB block, break unchanged"
    ))
}

/// Two freed 40 KiB neighbours serve one 80000-byte request: it lands where they were.
pub fn coalesce() -> Outcome {
    const HALF: usize = 40 * 1024;
    let first = malloc(HALF)?;
    let second = malloc(HALF)?;
    let fence = malloc(16)?;
    free(first);
    free(second);
    let before = program_break();
    let both = malloc(80_000)?;
    let after = program_break();
    let low = first.min(second);
    let high = first.max(second) + HALF;
    free(both);
    free(fence);
    ensure!(
        (low..high).contains(&both),
        "the 80000-byte block did not reuse the two freed neighbours (no coalescing?)"
    );
    ensure!(
        after == before,
        "the program break grew by {} bytes",
        after - before
    );
    Ok("two freed 40 KiB neighbours served one 80000-byte request, break unchanged".into())
}

/// realloc grows into a freed neighbour and shrinks where it stands. (Sizes above
/// glibc's per-thread cache, 1032 bytes, so that glibc merges the freed neighbour too.)
pub fn realloc_in_place() -> Outcome {
    let block = malloc(2000)?;
    let neighbour = malloc(2000)?;
    let fence = malloc(16)?;
    // SAFETY: `block` holds 1000 bytes.
    unsafe { (block as *mut u8).write_bytes(7, 2000) };
    free(neighbour);
    // SAFETY: `block` is live; realloc's result replaces it.
    let grown = unsafe { crate::c::realloc(block as *mut libc::c_void, 3800) } as usize;
    ensure!(grown != 0, "realloc to 3800 returned NULL");
    // SAFETY: the grown block holds at least 2000 kept bytes.
    let kept = unsafe { std::slice::from_raw_parts(grown as *const u8, 2000) }
        .iter()
        .all(|&b| b == 7);
    // SAFETY: as above.
    let shrunk = unsafe { crate::c::realloc(grown as *mut libc::c_void, 1000) } as usize;
    free(shrunk);
    free(fence);
    ensure!(kept, "realloc lost the contents");
    ensure!(
        grown == block,
        "realloc moved the block although the next block was free"
    );
    ensure!(shrunk == grown, "realloc moved the block to shrink it");
    Ok("realloc grew into the freed neighbour and shrank in place".into())
}

/// After 4 MB of small blocks are freed, the break comes back down.
pub fn trim() -> Outcome {
    let mut blocks = Vec::with_capacity(2000);
    let start = program_break();
    for _ in 0..2000 {
        blocks.push(malloc(2000)?);
    }
    let peak = program_break();
    while let Some(p) = blocks.pop() {
        free(p);
    }
    let end = program_break();
    ensure!(
        peak >= start + 3_000_000,
        "4 MB of small blocks did not come from the brk heap (break grew {} bytes)",
        peak - start
    );
    ensure!(
        end + 3_000_000 <= peak,
        "freeing 4 MB at the top gave back only {} bytes",
        peak - end
    );
    Ok(format!(
        "break rose {} KiB, then fell {} KiB after the frees",
        (peak - start) / 1024,
        (peak - end) / 1024
    ))
}
