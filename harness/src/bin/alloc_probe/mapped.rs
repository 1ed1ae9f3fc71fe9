//! Phase 3's lessons, shown by behaviour: large blocks live in mappings of their own
//! and go back to the OS when freed, the threshold follows the environment and
//! `mallopt`, and the heap keeps growing when `sbrk` fails. Judged from
//! `/proc/self/maps` and the program break, never from the allocator's own dump.
//!
//! Then three misuse probes for the debug mode's tests. Each does one wrong thing that
//! a checking allocator stops (exit 2 or 3) before the probe can print anything; a
//! `FAIL` line means the misuse went unnoticed.

use std::ffi::c_void;

use crate::{Outcome, ensure};

/// glibc's `M_MMAP_THRESHOLD` parameter for `mallopt`.
const M_MMAP_THRESHOLD: i32 = -3;

fn program_break() -> usize {
    // SAFETY: sbrk(0) only reads the break.
    unsafe { libc::sbrk(0) as usize }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn malloc(size: usize) -> Result<*mut u8, String> {
    // SAFETY: plain malloc.
    let p = unsafe { crate::c::malloc(size) }.cast::<u8>();
    if p.is_null() {
        Err(format!("malloc({size}) returned NULL"))
    } else {
        Ok(p)
    }
}

fn free(p: *mut u8) {
    // SAFETY: callers free each of their blocks once.
    unsafe { crate::c::free(p.cast::<c_void>()) }
}

fn fill(p: *mut u8, size: usize, byte: u8) {
    // SAFETY: callers pass a live block of at least `size` bytes.
    unsafe { p.write_bytes(byte, size) }
}

fn holds(p: *const u8, size: usize, byte: u8) -> bool {
    // SAFETY: callers pass a live block of at least `size` bytes.
    unsafe { std::slice::from_raw_parts(p, size) }
        .iter()
        .all(|&b| b == byte)
}

/// The ranges of `/proc/self/maps`, with their names (`[heap]`, a path, or empty).
fn maps() -> Vec<(usize, usize, String)> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let name = fields.nth(4).unwrap_or("").to_string();
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
                name,
            ))
        })
        .collect()
}

/// Is `addr` in any of these mappings?
fn is_mapped(maps: &[(usize, usize, String)], addr: usize) -> bool {
    maps.iter()
        .any(|(start, end, _)| (*start..*end).contains(&addr))
}

/// The brk heap: from the start of `[heap]` up to the current break (empty if there
/// is no `[heap]`).
fn brk_heap() -> std::ops::Range<usize> {
    match maps().iter().find(|(_, _, name)| name == "[heap]") {
        Some((start, _, _)) => *start..program_break(),
        None => 0..0,
    }
}

fn in_brk_heap(addr: usize) -> bool {
    brk_heap().contains(&addr)
}

/// A 100-byte block is in the brk heap; two 1 MiB blocks are not, and freeing one
/// unmaps its pages while the other stays mapped with its contents (each is a mapping
/// of its own). realloc between large sizes keeps the bytes.
pub fn mmap_large() -> Outcome {
    const LARGE: usize = 1 << 20;
    let small = malloc(100)?;
    ensure!(
        in_brk_heap(small as usize),
        "a 100-byte block is not in the brk heap ([heap] in /proc/self/maps)"
    );
    let first = malloc(LARGE)?;
    let second = malloc(LARGE)?;
    fill(first, LARGE, 1);
    fill(second, LARGE, 2);
    for p in [first, second] {
        ensure!(
            !in_brk_heap(p as usize),
            "a 1 MiB block is inside the brk heap (no mapping of its own)"
        );
        ensure!(
            is_mapped(&maps(), p as usize),
            "a 1 MiB block is not in /proc/self/maps"
        );
    }
    free(first);
    let after = maps();
    let unmapped = (0..LARGE)
        .step_by(page_size())
        .all(|offset| !is_mapped(&after, first as usize + offset));
    ensure!(
        unmapped,
        "freeing a 1 MiB block left its pages mapped (not given back to the OS)"
    );
    ensure!(
        holds(second, LARGE, 2),
        "freeing one large block damaged another"
    );
    // SAFETY: `second` is live; realloc's result replaces it.
    let grown = unsafe { crate::c::realloc(second.cast(), 3 * LARGE) }.cast::<u8>();
    ensure!(
        !grown.is_null(),
        "realloc of a 1 MiB block to 3 MiB returned NULL"
    );
    ensure!(holds(grown, LARGE, 2), "realloc to 3 MiB lost the contents");
    ensure!(
        !in_brk_heap(grown as usize),
        "a block grown to 3 MiB is inside the brk heap"
    );
    // SAFETY: `grown` is live; realloc's result replaces it.
    let shrunk = unsafe { crate::c::realloc(grown.cast(), 1000) }.cast::<u8>();
    ensure!(
        !shrunk.is_null(),
        "realloc of 3 MiB down to 1000 bytes returned NULL"
    );
    ensure!(
        holds(shrunk, 1000, 2),
        "realloc down to 1000 bytes lost the contents"
    );
    free(shrunk);
    free(small);
    Ok("1 MiB blocks in mappings of their own, unmapped on free; 100 bytes in the brk heap".into())
}

/// Run with `MALLOC_MMAP_THRESHOLD_=65536` (the check sets it): a 100 KiB block is
/// mapped, a 60 KiB one is not. Then `mallopt(M_MMAP_THRESHOLD, …)` moves the line
/// both ways and answers 1.
pub fn mmap_threshold() -> Outcome {
    ensure!(
        std::env::var("MALLOC_MMAP_THRESHOLD_").as_deref() == Ok("65536"),
        "run this probe with MALLOC_MMAP_THRESHOLD_=65536"
    );
    let above = malloc(100 * 1024)?;
    let below = malloc(60 * 1024)?;
    ensure!(
        !in_brk_heap(above as usize),
        "with MALLOC_MMAP_THRESHOLD_=65536, a 100 KiB block is in the brk heap"
    );
    ensure!(
        in_brk_heap(below as usize),
        "with MALLOC_MMAP_THRESHOLD_=65536, a 60 KiB block is not in the brk heap"
    );
    // SAFETY: mallopt only changes the allocator's settings.
    let raised = unsafe { libc::mallopt(M_MMAP_THRESHOLD, 1 << 20) };
    ensure!(
        raised == 1,
        "mallopt(M_MMAP_THRESHOLD, 1 MiB) returned {raised}, not 1"
    );
    let kept = malloc(512 * 1024)?;
    ensure!(
        in_brk_heap(kept as usize),
        "after mallopt(M_MMAP_THRESHOLD, 1 MiB), a 512 KiB block is not in the brk heap"
    );
    // SAFETY: as above.
    let lowered = unsafe { libc::mallopt(M_MMAP_THRESHOLD, 32 * 1024) };
    ensure!(
        lowered == 1,
        "mallopt(M_MMAP_THRESHOLD, 32 KiB) returned {lowered}, not 1"
    );
    let mapped = malloc(40 * 1024)?;
    ensure!(
        !in_brk_heap(mapped as usize),
        "after mallopt(M_MMAP_THRESHOLD, 32 KiB), a 40 KiB block is in the brk heap"
    );
    for p in [above, below, kept, mapped] {
        free(p);
    }
    Ok("the environment's 64 KiB, then mallopt's 1 MiB and 32 KiB, each honoured".into())
}

/// The default threshold (128 KiB) is in force: a 100 KiB block is in the brk heap,
/// a 200 KiB one is not. The check runs it with a malformed `MALLOC_MMAP_THRESHOLD_`,
/// which must be ignored.
pub fn mmap_threshold_default() -> Outcome {
    let below = malloc(100 * 1024)?;
    let above = malloc(200 * 1024)?;
    ensure!(
        in_brk_heap(below as usize),
        "a 100 KiB block is not in the brk heap (the default threshold is 128 KiB)"
    );
    ensure!(
        !in_brk_heap(above as usize),
        "a 200 KiB block is in the brk heap (the default threshold is 128 KiB)"
    );
    free(below);
    free(above);
    Ok("100 KiB in the brk heap, 200 KiB mapped: the 128 KiB default".into())
}

/// Blocks the break with a page mapped right where it would grow, then allocates
/// 8 MB of small blocks: the heap must go on in mmap-backed memory, every block
/// keeping its contents.
pub fn brk_blocked() -> Outcome {
    const BLOCKS: usize = 4096;
    const SIZE: usize = 2000;
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(BLOCKS);
    let page = page_size();
    let at = program_break().next_multiple_of(page);
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it fails instead.
    let blocker = unsafe {
        libc::mmap(
            at as *mut c_void,
            page,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    ensure!(
        blocker as usize == at,
        "could not map a page at the break ({at:#x}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a failed sbrk changes nothing; a successful one is undone at once.
    let moved = unsafe { libc::sbrk(page as libc::intptr_t) };
    if moved as isize != -1 {
        // SAFETY: gives back exactly what the line above took.
        unsafe { libc::sbrk(-(page as libc::intptr_t)) };
        return Err("sbrk still grows with a page mapped at the break".into());
    }
    for i in 0..BLOCKS {
        // SAFETY: plain malloc.
        let p = unsafe { crate::c::malloc(SIZE) }.cast::<u8>();
        if p.is_null() {
            blocks.drain(..).for_each(free);
            // SAFETY: the blocker is our own one-page mapping.
            unsafe { libc::munmap(blocker, page) };
            return Err(format!(
                "malloc({SIZE}) returned NULL after {i} blocks: the heap stops growing when sbrk fails"
            ));
        }
        fill(p, SIZE, i as u8);
        blocks.push(p);
    }
    let heap = brk_heap();
    let elsewhere = blocks
        .iter()
        .filter(|&&p| !heap.contains(&(p as usize)))
        .count();
    let intact = blocks
        .iter()
        .enumerate()
        .all(|(i, &p)| holds(p, SIZE, i as u8));
    let break_now = program_break();
    blocks.drain(..).for_each(free);
    // SAFETY: the blocker is our own one-page mapping, which nothing else uses.
    unsafe { libc::munmap(blocker, page) };
    ensure!(intact, "blocks lost their contents");
    ensure!(break_now <= at, "the break moved past the blocking page");
    ensure!(
        elsewhere > 0,
        "all 8 MB fit in the brk heap below the blocking page (was the break blocked?)"
    );
    Ok(format!(
        "with the break blocked, {BLOCKS} blocks of {SIZE} B were allocated, {elsewhere} of them outside the brk heap"
    ))
}

/// Writes the 16 bytes before a block (an underflow), then frees it.
pub fn underflow() -> Outcome {
    let p = malloc(100)?;
    // SAFETY: deliberately wrong (the point of this probe): the 16 bytes before a
    // block belong to the allocator. A checking allocator stops the process at `free`.
    unsafe { p.sub(16).write_bytes(0x41, 16) };
    free(std::hint::black_box(p));
    Err("the allocator did not detect a 16-byte underflow".into())
}

/// Frees a 1 MiB block twice: after the first free its pages are unmapped, so an
/// allocator that reads a header there crashes instead of reporting.
pub fn mmap_double_free() -> Outcome {
    let p = malloc(1 << 20)?;
    free(p);
    free(std::hint::black_box(p));
    Err("the allocator did not detect a double free of a 1 MiB block".into())
}

/// Frees a pointer 4096 bytes into a 1 MiB block.
pub fn mmap_interior_free() -> Outcome {
    let p = malloc(1 << 20)?;
    // SAFETY: still inside the block.
    let inside = unsafe { p.add(4096) };
    free(std::hint::black_box(inside));
    Err("the allocator did not detect a pointer into the middle of a 1 MiB block".into())
}
