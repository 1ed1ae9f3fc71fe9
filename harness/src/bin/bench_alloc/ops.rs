//! `--ops 'a 0 64, a 1 128, f 0, a 2 32'`: a few calls named on the command line, then
//! one heap dump. For the book's small examples (the seed exercise of chapter 2): with
//! `MALLOC_DEBUG=1` the allocator logs where each call lands, and the dump shows the
//! heap they leave.
//!
//! The operations are separated by commas, each written as a line of a malloc-lab
//! trace (see `harness::trace`): `a ID SIZE` is `malloc(SIZE)` for block ID, `r ID SIZE`
//! resizes it with `realloc`, `f ID` frees it. IDs go from 0 to [`MAX_IDS`] - 1.
//!
//! As in the demo, nothing here allocates but the calls being shown, so the heap holds
//! exactly their blocks: the operations are parsed and checked in place, from the C
//! `argv`, before the first call, and the blocks live in a fixed array.

use core::ffi::c_void;
use core::fmt::Write as _;

use preload_kit::Out;

/// How many block IDs one `--ops` may use.
pub const MAX_IDS: usize = 16;

/// Exit code for operations that cannot be parsed (as for bad arguments).
const EXIT_BAD_OPS: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Alloc { id: usize, size: usize },
    Realloc { id: usize, size: usize },
    Free { id: usize },
}

/// The operations in `text`, in order; `Err` holds the text of one that is malformed.
fn ops(text: &str) -> impl Iterator<Item = Result<Op, &str>> {
    text.split(',').map(|op| {
        let words: [Option<&str>; 4] = {
            let mut words = op.split_whitespace();
            [words.next(), words.next(), words.next(), words.next()]
        };
        let id = words[1]
            .and_then(|id| id.parse::<usize>().ok())
            .filter(|&id| id < MAX_IDS);
        let size = words[2].and_then(|size| size.parse::<usize>().ok());
        match (words[0], id, size, words[2], words[3]) {
            (Some("a"), Some(id), Some(size), _, None) => Ok(Op::Alloc { id, size }),
            (Some("r"), Some(id), Some(size), _, None) => Ok(Op::Realloc { id, size }),
            (Some("f"), Some(id), None, None, None) => Ok(Op::Free { id }),
            _ => Err(op.trim()),
        }
    })
}

/// Checks every operation before the first call: each well formed, no block allocated
/// twice, none resized or freed before it exists. On `Err`, the problem is reported.
fn check(text: &str, err: &mut Out) -> Result<(), ()> {
    let mut live = [false; MAX_IDS];
    for op in ops(text) {
        let problem = match op {
            Err(bad) => {
                let _ = writeln!(
                    err,
                    "bench_alloc: --ops: cannot read {bad:?} (expected `a ID SIZE`, \
                     `r ID SIZE` or `f ID`, ID below {MAX_IDS}, separated by commas)"
                );
                return Err(());
            }
            Ok(Op::Alloc { id, .. }) if live[id] => (id, "allocated again before it was freed"),
            Ok(Op::Realloc { id, .. }) if !live[id] => (id, "resized before it was allocated"),
            Ok(Op::Free { id }) if !live[id] => (id, "freed but not allocated"),
            Ok(Op::Alloc { id, .. }) => {
                live[id] = true;
                continue;
            }
            Ok(Op::Free { id }) => {
                live[id] = false;
                continue;
            }
            Ok(Op::Realloc { .. }) => continue,
        };
        let _ = writeln!(
            err,
            "bench_alloc: --ops: block {} is {}",
            problem.0, problem.1
        );
        return Err(());
    }
    Ok(())
}

pub fn run(text: &str) -> i32 {
    let mut err = Out::stderr();
    if check(text, &mut err).is_err() {
        return EXIT_BAD_OPS;
    }
    drop(err);
    let mut out = Out::new(1);
    let heap_dump = find_heap_dump();
    let mut blocks = [core::ptr::null_mut::<c_void>(); MAX_IDS];
    for op in ops(text).flatten() {
        let (what, id, size, p) = match op {
            Op::Alloc { id, size } => {
                // SAFETY: plain malloc; the result is checked below.
                let p = unsafe { libc::malloc(size) };
                ("malloc", id, size, p)
            }
            Op::Realloc { id, size } => {
                // SAFETY: `blocks[id]` is live (checked above); realloc replaces it.
                let p = unsafe { libc::realloc(blocks[id], size) };
                ("realloc", id, size, p)
            }
            Op::Free { id } => {
                // SAFETY: `blocks[id]` is live (checked above) and freed once.
                unsafe { libc::free(blocks[id]) };
                blocks[id] = core::ptr::null_mut();
                continue;
            }
        };
        if p.is_null() {
            let _ = writeln!(out, "FAILED: {what}({size}) for block {id} returned NULL");
            return 1;
        }
        blocks[id] = p;
    }
    out.flush();
    match heap_dump {
        Some(heap_dump) => heap_dump(),
        None => {
            let _ = writeln!(
                out,
                "(no heap_dump() in this process: running on the C library's allocator)"
            );
        }
    }
    0
}

/// `heap_dump` from whatever allocator is loaded, if it has one (looked up at run time,
/// so that this also runs on the C library's allocator).
fn find_heap_dump() -> Option<extern "C" fn()> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"heap_dump".as_ptr()) };
    // SAFETY: every mymalloc phase exports `heap_dump` as `extern "C" fn()`.
    (!symbol.is_null())
        .then(|| unsafe { core::mem::transmute::<*mut c_void, extern "C" fn()>(symbol) })
}
