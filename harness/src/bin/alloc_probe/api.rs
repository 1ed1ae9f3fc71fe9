//! The C API's promises: alignment, contents, zeroing, realloc, the memalign family,
//! usable sizes, failure on impossible sizes, errno.

use std::ffi::c_void;

use harness::rng::Rng;

use crate::{Outcome, ensure};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_errno(value: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = value };
}

/// Calls through `black_box`: the compiler knows what `malloc` means and may delete a
/// call whose result is only tested for NULL, which would test nothing.
use std::hint::black_box;

unsafe extern "C" {
    fn pvalloc(size: usize) -> *mut c_void;
    fn valloc(size: usize) -> *mut c_void;
    fn reallocarray(p: *mut c_void, count: usize, size: usize) -> *mut c_void;
}

pub fn alignment() -> Outcome {
    let mut blocks = Vec::new();
    for size in (0..2048).chain([4095, 4096, 10_000, 100_000, 1 << 20]) {
        // SAFETY: plain malloc.
        let p = unsafe { crate::c::malloc(size) };
        ensure!(!p.is_null(), "malloc({size}) returned NULL");
        ensure!(
            (p as usize).is_multiple_of(16),
            "malloc({size}) returned {p:?}, not 16-byte aligned"
        );
        blocks.push(p);
    }
    for p in blocks {
        // SAFETY: each block came from malloc above and is freed once.
        unsafe { crate::c::free(p) };
    }
    Ok("2053 sizes from 0 to 1 MiB all 16-byte aligned".into())
}

/// A block under test: where, how long, and the byte it was filled with.
struct Live {
    p: *mut u8,
    size: usize,
    fill: u8,
}

fn fill(block: &Live) {
    // SAFETY: `p` is a live block of at least `size` bytes.
    unsafe { block.p.write_bytes(block.fill, block.size) };
}

fn intact(block: &Live) -> bool {
    // SAFETY: `p` is a live block of at least `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(block.p, block.size) };
    bytes.iter().all(|&b| b == block.fill)
}

/// Random mallocs, frees and reallocs; every block is filled with its own byte and
/// checked before it is freed, so overlapping blocks or lost contents show up.
pub fn contents() -> Outcome {
    let mut rng = Rng::new(7);
    let mut live: Vec<Live> = Vec::new();
    for step in 0..60_000u32 {
        let fill_byte = (step % 251) as u8 + 1;
        match rng.between(0, 9) {
            0..=4 => {
                let size = if rng.chance(5) {
                    rng.between(1000, 70_000)
                } else {
                    rng.between(0, 300)
                };
                // SAFETY: plain malloc.
                let p = unsafe { crate::c::malloc(size) }.cast::<u8>();
                ensure!(!p.is_null(), "malloc({size}) returned NULL at step {step}");
                let block = Live {
                    p,
                    size,
                    fill: fill_byte,
                };
                fill(&block);
                live.push(block);
            }
            5..=7 if !live.is_empty() => {
                let block = live.swap_remove(rng.between(0, live.len() - 1));
                ensure!(
                    intact(&block),
                    "a {}-byte block lost its contents (overlap?) at step {step}",
                    block.size
                );
                // SAFETY: the block is live and freed once.
                unsafe { crate::c::free(block.p.cast()) };
            }
            _ if !live.is_empty() => {
                let index = rng.between(0, live.len() - 1);
                let new_size = rng.between(1, 2000);
                let block = &mut live[index];
                ensure!(
                    intact(block),
                    "a {}-byte block lost its contents before realloc",
                    block.size
                );
                // SAFETY: the block is live; realloc's result replaces it.
                let p = unsafe { crate::c::realloc(block.p.cast(), new_size) }.cast::<u8>();
                ensure!(!p.is_null(), "realloc to {new_size} returned NULL");
                let kept = Live {
                    p,
                    size: block.size.min(new_size),
                    fill: block.fill,
                };
                ensure!(
                    intact(&kept),
                    "realloc from {} to {new_size} bytes did not keep the contents",
                    block.size
                );
                *block = Live {
                    p,
                    size: new_size,
                    fill: fill_byte,
                };
                fill(block);
            }
            _ => {}
        }
    }
    for block in live {
        ensure!(
            intact(&block),
            "a {}-byte block lost its contents at the end",
            block.size
        );
        // SAFETY: the block is live and freed once.
        unsafe { crate::c::free(block.p.cast()) };
    }
    Ok("60000 random malloc/free/realloc steps kept every block's contents".into())
}

pub fn calloc() -> Outcome {
    // Dirty some memory first, so zeroing cannot come for free from a fresh heap.
    for _ in 0..3 {
        let mut dirty = Vec::new();
        for size in [24, 100, 1000, 5000] {
            // SAFETY: plain malloc; written only when not null.
            let p = unsafe { crate::c::malloc(size) }.cast::<u8>();
            ensure!(!p.is_null(), "malloc({size}) returned NULL");
            // SAFETY: p holds `size` bytes.
            unsafe { p.write_bytes(0xa5, size) };
            dirty.push(p);
        }
        for p in dirty {
            // SAFETY: freed once.
            unsafe { crate::c::free(p.cast()) };
        }
        for (count, size) in [(3, 8), (10, 10), (100, 10), (5, 1000)] {
            // SAFETY: plain calloc.
            let p = unsafe { crate::c::calloc(count, size) }.cast::<u8>();
            ensure!(!p.is_null(), "calloc({count}, {size}) returned NULL");
            // SAFETY: calloc returned count * size bytes.
            let bytes = unsafe { std::slice::from_raw_parts(p, count * size) };
            ensure!(
                bytes.iter().all(|&b| b == 0),
                "calloc({count}, {size}) returned memory that is not zero"
            );
            // SAFETY: freed once.
            unsafe { crate::c::free(p.cast()) };
        }
    }
    set_errno(0);
    // SAFETY: calloc must detect the overflow and return NULL.
    let p = black_box(unsafe { crate::c::calloc(black_box(usize::MAX / 2), 3) });
    ensure!(
        p.is_null(),
        "calloc(SIZE_MAX/2, 3) overflowed and returned a block"
    );
    ensure!(
        errno() == libc::ENOMEM,
        "calloc overflow set errno {} instead of ENOMEM",
        errno()
    );
    // A product that wraps to a small number: (SIZE_MAX/16 + 2) * 16 is 16 modulo
    // 2^64, which a calloc without an overflow check happily allocates.
    set_errno(0);
    // SAFETY: calloc must detect the overflow and return NULL.
    let p = black_box(unsafe { crate::c::calloc(black_box(WRAPS_TO_16.0), WRAPS_TO_16.1) });
    ensure!(
        p.is_null(),
        "calloc(SIZE_MAX/16 + 2, 16) returned a block: the product wraps to 16, so the \
         multiplication is not checked for overflow"
    );
    ensure!(
        errno() == libc::ENOMEM,
        "calloc(SIZE_MAX/16 + 2, 16) set errno {} instead of ENOMEM",
        errno()
    );
    Ok(
        "calloc zeroes reused memory; calloc(SIZE_MAX/2, 3) and calloc(SIZE_MAX/16 + 2, 16) \
        (a product that wraps to 16) are NULL with ENOMEM"
            .into(),
    )
}

/// A count and a size whose product overflows `size_t` and wraps to just 16.
const WRAPS_TO_16: (usize, usize) = (usize::MAX / 16 + 2, 16);

pub fn realloc() -> Outcome {
    // SAFETY: each call follows realloc's contract; results are checked before use.
    unsafe {
        let p = crate::c::realloc(std::ptr::null_mut(), 100).cast::<u8>();
        ensure!(
            !p.is_null(),
            "realloc(NULL, 100) returned NULL (it must act as malloc)"
        );
        let mut block = Live {
            p,
            size: 100,
            fill: 0x11,
        };
        fill(&block);
        for new_size in [200, 50, 5000, 10, 70_000, 300] {
            let q = crate::c::realloc(block.p.cast(), new_size).cast::<u8>();
            ensure!(!q.is_null(), "realloc to {new_size} returned NULL");
            let kept = Live {
                p: q,
                size: block.size.min(new_size),
                fill: block.fill,
            };
            ensure!(
                intact(&kept),
                "realloc from {} to {new_size} did not keep the contents",
                block.size
            );
            block = Live {
                p: q,
                size: new_size,
                fill: block.fill.wrapping_add(1),
            };
            fill(&block);
        }
        set_errno(0);
        let failed = black_box(crate::c::realloc(
            block.p.cast(),
            black_box(usize::MAX - 64),
        ));
        ensure!(failed.is_null(), "realloc to SIZE_MAX-64 returned a block");
        ensure!(
            errno() == libc::ENOMEM,
            "failed realloc set errno {} instead of ENOMEM",
            errno()
        );
        ensure!(
            intact(&block),
            "a failed realloc damaged the original block"
        );
        let gone = crate::c::realloc(block.p.cast(), 0);
        ensure!(
            gone.is_null(),
            "realloc(p, 0) returned {gone:?}; glibc frees and returns NULL"
        );
        let array = reallocarray(std::ptr::null_mut(), 10, 10);
        ensure!(!array.is_null(), "reallocarray(NULL, 10, 10) returned NULL");
        set_errno(0);
        let overflow = black_box(reallocarray(array, black_box(usize::MAX / 2), 3));
        ensure!(
            overflow.is_null() && errno() == libc::ENOMEM,
            "reallocarray overflow was not NULL with ENOMEM"
        );
        set_errno(0);
        let wrapped = black_box(reallocarray(array, black_box(WRAPS_TO_16.0), WRAPS_TO_16.1));
        ensure!(
            wrapped.is_null() && errno() == libc::ENOMEM,
            "reallocarray(p, SIZE_MAX/16 + 2, 16) was not NULL with ENOMEM: the product wraps \
             to 16, so the multiplication is not checked for overflow"
        );
        crate::c::free(array);
    }
    Ok(
        "realloc(NULL), grow, shrink, failure keeps the block, realloc(p, 0) frees, \
        reallocarray overflow (also one that wraps to 16)"
            .into(),
    )
}

pub fn memalign() -> Outcome {
    // SAFETY: each call follows its contract; results are checked before use.
    unsafe {
        for align in [16usize, 32, 64, 256, 4096, 65536] {
            for size in [1usize, 100, 5000] {
                let mut p: *mut c_void = std::ptr::null_mut();
                let rc = libc::posix_memalign(&mut p, align, size);
                ensure!(
                    rc == 0 && !p.is_null(),
                    "posix_memalign({align}, {size}) failed with {rc}"
                );
                ensure!(
                    (p as usize).is_multiple_of(align),
                    "posix_memalign({align}, {size}) gave {p:?}"
                );
                (p as *mut u8).write_bytes(1, size);
                let q = crate::c::aligned_alloc(align, size);
                ensure!(
                    !q.is_null() && (q as usize).is_multiple_of(align),
                    "aligned_alloc({align}, {size}) gave {q:?}"
                );
                let r = crate::c::memalign(align, size);
                ensure!(
                    !r.is_null() && (r as usize).is_multiple_of(align),
                    "memalign({align}, {size}) gave {r:?}"
                );
                crate::c::free(p);
                crate::c::free(q);
                crate::c::free(r);
            }
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let v = valloc(100);
        ensure!(
            !v.is_null() && (v as usize).is_multiple_of(page),
            "valloc(100) gave {v:?}"
        );
        let pv = pvalloc(100);
        ensure!(
            !pv.is_null() && (pv as usize).is_multiple_of(page),
            "pvalloc(100) gave {pv:?}"
        );
        ensure!(
            libc::malloc_usable_size(pv) >= page,
            "pvalloc(100) is not a whole page"
        );
        crate::c::free(v);
        crate::c::free(pv);
        let mut p: *mut c_void = std::ptr::null_mut();
        ensure!(
            libc::posix_memalign(&mut p, 24, 10) == libc::EINVAL,
            "posix_memalign(24) did not return EINVAL"
        );
        ensure!(
            libc::posix_memalign(&mut p, 4, 10) == libc::EINVAL,
            "posix_memalign(4) did not return EINVAL"
        );
        set_errno(0);
        let bad = black_box(crate::c::aligned_alloc(black_box(24), 48));
        ensure!(
            bad.is_null() && errno() == libc::EINVAL,
            "aligned_alloc(24, …) was not NULL with EINVAL"
        );
    }
    Ok(
        "posix_memalign, aligned_alloc, memalign, valloc, pvalloc aligned; bad alignments EINVAL"
            .into(),
    )
}

pub fn usable_size() -> Outcome {
    // SAFETY: each call follows its contract; results are checked before use.
    unsafe {
        ensure!(
            libc::malloc_usable_size(std::ptr::null_mut()) == 0,
            "malloc_usable_size(NULL) is not 0"
        );
        for size in [0usize, 1, 15, 16, 17, 100, 1000, 100_000] {
            let p = crate::c::malloc(size);
            ensure!(!p.is_null(), "malloc({size}) returned NULL");
            let usable = libc::malloc_usable_size(p);
            ensure!(
                usable >= size,
                "malloc_usable_size says {usable} for a {size}-byte block"
            );
            (p as *mut u8).write_bytes(0x5a, usable);
            crate::c::free(p);
        }
    }
    Ok("usable size at least the request, and all of it writable".into())
}

pub fn huge() -> Outcome {
    for size in [
        usize::MAX,
        usize::MAX - 8,
        usize::MAX - 4096,
        usize::MAX / 2 + 1,
        1 << 62,
    ] {
        set_errno(0);
        // SAFETY: malloc must fail cleanly for sizes no machine has.
        let p = black_box(unsafe { crate::c::malloc(black_box(size)) });
        ensure!(
            p.is_null(),
            "malloc({size:#x}) returned {p:?} instead of NULL"
        );
        ensure!(
            errno() == libc::ENOMEM,
            "malloc({size:#x}) set errno {} instead of ENOMEM",
            errno()
        );
    }
    // SAFETY: as above, for the memalign family.
    let p = black_box(unsafe { crate::c::aligned_alloc(4096, black_box(usize::MAX - 100)) });
    ensure!(
        p.is_null(),
        "aligned_alloc(4096, SIZE_MAX-100) returned a block"
    );
    // The heap still works afterwards.
    // SAFETY: plain malloc and free.
    unsafe {
        let p = crate::c::malloc(100);
        ensure!(!p.is_null(), "malloc(100) failed after the huge requests");
        crate::c::free(p);
    }
    Ok("sizes near SIZE_MAX fail with NULL and ENOMEM, and the heap still works".into())
}

pub fn errno_kept() -> Outcome {
    // SAFETY: free(NULL) is a no-op; p is freed once.
    unsafe {
        set_errno(libc::EBADF);
        crate::c::free(std::ptr::null_mut());
        ensure!(errno() == libc::EBADF, "free(NULL) changed errno");
        let p = crate::c::malloc(64);
        ensure!(!p.is_null(), "malloc(64) returned NULL");
        set_errno(libc::EBADF);
        crate::c::free(p);
        ensure!(errno() == libc::EBADF, "free changed errno to {}", errno());
        // A block large enough to be mapped (unmapped by free), then one that leaves
        // free memory at the top of the heap beyond any trim threshold (given back).
        for size in [8 << 20, 512 << 10] {
            let p = crate::c::malloc(size);
            ensure!(!p.is_null(), "malloc({size}) returned NULL");
            set_errno(libc::EBADF);
            crate::c::free(p);
            ensure!(
                errno() == libc::EBADF,
                "free of a {size}-byte block changed errno to {}",
                errno()
            );
        }
    }
    Ok("free and free(NULL) keep errno (small, mapped and trimming frees)".into())
}

/// The blocks come from the allocator under test, not from glibc's malloc behind it.
///
/// glibc's own `mallinfo2` (looked up in libc.so.6 itself, so that one the preloaded
/// library may export is not the one asked) counts the bytes glibc's heap has handed
/// out, mapped chunks included. While this probe holds 4 MiB of blocks of every size,
/// that count must not grow by more than a small share of them: an allocator that
/// manages its own memory never calls glibc's malloc at all.
pub fn own_memory() -> Outcome {
    let Some(glibc_in_use) = glibc_mallinfo2() else {
        return Ok("glibc's mallinfo2 is not available here: not checked".into());
    };
    let before = glibc_in_use();
    let mut blocks = Vec::with_capacity(2100);
    let mut requested = 0usize;
    for size in (1..2048).chain([64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20]) {
        // SAFETY: plain malloc; written only when not null.
        let p = unsafe { crate::c::malloc(size) }.cast::<u8>();
        ensure!(!p.is_null(), "malloc({size}) returned NULL");
        // SAFETY: p holds `size` bytes.
        unsafe { p.write_bytes(0x5a, size) };
        blocks.push(p);
        requested += size;
    }
    let grown = glibc_in_use().saturating_sub(before);
    for p in blocks {
        // SAFETY: each block came from malloc above and is freed once.
        unsafe { crate::c::free(p.cast()) };
    }
    ensure!(
        grown < requested / 4,
        "the blocks came from glibc's own heap: glibc's malloc handed out {grown} more bytes \
         while this probe allocated {requested} (does malloc forward to __libc_malloc, or to \
         the next malloc found with dlsym(RTLD_NEXT, ...)?)"
    );
    Ok(format!(
        "{requested} bytes in 2052 blocks, none of them from glibc's heap (it grew by {grown} bytes)"
    ))
}

/// glibc's `mallinfo2` as libc.so.6 defines it: bytes in use in glibc's heap
/// (`uordblks`) plus in chunks it mapped (`hblkhd`).
fn glibc_mallinfo2() -> Option<impl Fn() -> usize> {
    // SAFETY: libc.so.6 is loaded already (RTLD_NOLOAD only finds it); dlsym with its
    // handle looks in libc itself, and mallinfo2 has this signature there.
    unsafe {
        let libc_handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if libc_handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(libc_handle, c"mallinfo2".as_ptr());
        if symbol.is_null() {
            return None;
        }
        let mallinfo2: unsafe extern "C" fn() -> libc::mallinfo2 = std::mem::transmute(symbol);
        Some(move || {
            // glibc's mallinfo2 takes no arguments and only reads its arenas.
            let info = mallinfo2();
            info.uordblks + info.hblkhd
        })
    }
}
