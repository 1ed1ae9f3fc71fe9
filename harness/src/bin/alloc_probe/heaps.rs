//! Per-thread heaps (phase 5 on): what a program sees when each thread allocates from
//! memory of its own. Threads that do not share blocks should not slow each other
//! down; blocks freed by another thread, or after their thread exited, must come back
//! into use; and a `dlopen` of libraries with `__thread` data while threads allocate
//! (glibc then calls `malloc` from inside its TLS code) must not hang or crash.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use crate::{Outcome, ensure};

/// Resident memory of this process, in KiB (`/proc/self/statm`'s second field).
fn resident_kib() -> Result<usize, String> {
    let statm = std::fs::read_to_string("/proc/self/statm").map_err(|e| e.to_string())?;
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or("unreadable /proc/self/statm")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    Ok(pages * page / 1024)
}

/// One thread's share of the no-sharing workload: batches of small blocks, allocated,
/// written and freed by the same thread.
fn private_work(pairs: usize) -> Result<(), String> {
    let mut blocks = [std::ptr::null_mut::<libc::c_void>(); 256];
    let mut done = 0;
    let mut round = 0usize;
    while done < pairs {
        for (i, slot) in blocks.iter_mut().enumerate() {
            let size = 1 + (i * 13 + round) % 200;
            // SAFETY: plain malloc; written only when not null.
            let p = unsafe { crate::c::malloc(size) };
            ensure!(!p.is_null(), "malloc({size}) returned NULL");
            // SAFETY: the block holds at least one byte.
            unsafe { p.cast::<u8>().write(i as u8) };
            *slot = p;
        }
        for slot in &blocks {
            // SAFETY: each block came from malloc above and is freed once.
            unsafe { crate::c::free(*slot) };
        }
        done += blocks.len();
        round += 1;
    }
    Ok(())
}

/// Seconds for `threads` threads to each do `pairs` malloc/free pairs, all at once.
fn timed(threads: usize, pairs: usize) -> Result<f64, String> {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || private_work(pairs)))
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a thread panicked")??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Throughput on a workload where threads share nothing grows with the number of
/// threads: with `nproc` threads (at least 2), the process does at least 1.3 times
/// the malloc/free pairs per second it does with one. One lock around one heap gives
/// about 1.0 or less here (the threads queue, and the lock's cache line bounces).
/// Each configuration runs three times, alternating, and the fastest run of each
/// counts, so a machine busy with other work disturbs the ratio less.
pub fn thread_scaling() -> Outcome {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    const PAIRS: usize = 1_000_000;
    // A warm-up, so both measurements find the allocator's structures built.
    timed(threads, 100_000)?;
    let (mut one, mut many) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        one = one.min(timed(1, PAIRS)?);
        many = many.min(timed(threads, PAIRS)?);
    }
    let speedup = threads as f64 * one / many;
    let scales = speedup >= 1.3;
    ensure!(
        scales,
        "{threads} threads sharing nothing did {speedup:.2}x the work per second of one \
         thread (expected at least 1.3x; best of 3 runs each): they wait for each other"
    );
    Ok(format!(
        "{threads} threads sharing nothing: {speedup:.2}x the throughput of one thread (best of 3)"
    ))
}

/// Raw pointers handed from one thread to another.
struct Batch(Vec<usize>);

/// One thread allocates, another frees, for 2 million blocks of 64 bytes (128 MB
/// passed through in all, a few hundred KiB alive at a time): resident memory must
/// stay within 24 MB of where it started, so the blocks the other thread freed are
/// reused by the one that allocates.
pub fn remote_free() -> Outcome {
    const BLOCKS: usize = 2_000_000;
    const BATCH: usize = 1000;
    let before = resident_kib()?;
    let (to_freer, batches) = mpsc::sync_channel::<Batch>(4);
    let freer = std::thread::spawn(move || -> Result<(), String> {
        for batch in batches {
            for p in batch.0 {
                // SAFETY: a block of 64 bytes filled by the producer; freed once here.
                let first = unsafe { *(p as *const u8) };
                ensure!(first == 0x5a, "a block lost its contents in transit");
                // SAFETY: as above.
                unsafe { crate::c::free(p as *mut libc::c_void) };
            }
        }
        Ok(())
    });
    let mut peak = before;
    for round in 0..BLOCKS / BATCH {
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            // SAFETY: plain malloc; filled only when not null.
            let p = unsafe { crate::c::malloc(64) };
            ensure!(!p.is_null(), "malloc(64) returned NULL");
            // SAFETY: the block holds 64 bytes.
            unsafe { p.cast::<u8>().write_bytes(0x5a, 64) };
            batch.push(p as usize);
        }
        if to_freer.send(Batch(batch)).is_err() {
            break;
        }
        if round % 100 == 0 {
            peak = peak.max(resident_kib()?);
        }
    }
    drop(to_freer);
    freer.join().map_err(|_| "the freeing thread panicked")??;
    peak = peak.max(resident_kib()?);
    let grown = peak.saturating_sub(before);
    ensure!(
        grown <= 24 * 1024,
        "resident memory grew by {grown} KiB while another thread freed every block \
         (128 MB passed through): blocks freed by another thread are not reused"
    );
    Ok(format!(
        "2M blocks freed by another thread: resident memory grew by {grown} KiB"
    ))
}

/// Threads exit while their blocks are still allocated; the main thread checks and
/// frees the blocks afterwards. Then 2000 short-lived threads allocate and free:
/// resident memory must stay within 24 MB of where it was before them.
pub fn thread_exit() -> Outcome {
    let left_behind: Vec<Vec<(usize, u8)>> = (0..8u8)
        .map(|t| {
            std::thread::spawn(move || {
                (0..2000)
                    .map(|i| {
                        let size = 1 + (i % 300);
                        // SAFETY: plain malloc; filled only when not null.
                        let p = unsafe { crate::c::malloc(size) }.cast::<u8>();
                        if !p.is_null() {
                            // SAFETY: the block holds `size` bytes.
                            unsafe { p.write_bytes(t + 1, size) };
                        }
                        (p as usize, t + 1)
                    })
                    .collect()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|thread| thread.join().unwrap_or_default())
        .collect();
    let mut count = 0;
    for (p, fill) in left_behind.into_iter().flatten() {
        ensure!(p != 0, "malloc returned NULL in a thread");
        // SAFETY: a live block of at least one byte, filled with `fill`.
        let first = unsafe { *(p as *const u8) };
        ensure!(first == fill, "a block changed after its thread exited");
        // SAFETY: freed once, by a thread other than the one that allocated it.
        unsafe { crate::c::free(p as *mut libc::c_void) };
        count += 1;
    }
    let before = resident_kib()?;
    for _ in 0..250 {
        let wave: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| private_work(4000)))
            .collect();
        for thread in wave {
            thread.join().map_err(|_| "a thread panicked")??;
        }
    }
    let grown = resident_kib()?.saturating_sub(before);
    ensure!(
        grown <= 24 * 1024,
        "resident memory grew by {grown} KiB over 2000 short-lived threads that freed \
         everything they allocated: exited threads' memory is not reused"
    );
    Ok(format!(
        "{count} blocks freed after their threads exited; 2000 short-lived threads \
         grew resident memory by {grown} KiB"
    ))
}

/// `alloc_probe dlopen-tls LIB...`: while four threads allocate without pause, loads
/// each library (built by the check, each with a large `__thread` array and a function
/// `touch` that writes to it) and makes every thread, old and new, call the new
/// library's `touch`: each call may grow the thread's TLS vector, which glibc does
/// with `malloc`, from inside its TLS code.
pub fn dlopen_tls() -> Outcome {
    let libraries: Vec<String> = std::env::args().skip(2).collect();
    ensure!(
        !libraries.is_empty(),
        "usage: alloc_probe dlopen-tls LIB..."
    );
    type Touch = extern "C" fn() -> i32;
    // Loaded functions, published to the threads by their count.
    let touches: Arc<Vec<AtomicUsize>> =
        Arc::new((0..libraries.len()).map(|_| AtomicUsize::new(0)).collect());
    let loaded = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let worker =
        |touches: Arc<Vec<AtomicUsize>>, loaded: Arc<AtomicUsize>, stop: Arc<AtomicBool>| {
            std::thread::spawn(move || -> Result<usize, String> {
                let mut calls = 0;
                while !stop.load(Ordering::Acquire) {
                    private_work(256)?;
                    for touch in touches.iter().take(loaded.load(Ordering::Acquire)) {
                        let address = touch.load(Ordering::Acquire);
                        // SAFETY: the address is a loaded library's `int touch(void)`.
                        let touch: Touch = unsafe { std::mem::transmute::<usize, Touch>(address) };
                        ensure!(touch() > 0, "a library's __thread data was not initialised");
                        calls += 1;
                    }
                }
                Ok(calls)
            })
        };
    let mut threads: Vec<_> = (0..4)
        .map(|_| worker(touches.clone(), loaded.clone(), stop.clone()))
        .collect();
    for (i, library) in libraries.iter().enumerate() {
        let path = std::ffi::CString::new(library.as_str()).map_err(|e| e.to_string())?;
        // SAFETY: a library built for this probe, without constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        ensure!(!handle.is_null(), "dlopen({library}) failed");
        // SAFETY: the handle is live; `touch` is the library's function.
        let symbol = unsafe { libc::dlsym(handle, c"touch".as_ptr()) };
        ensure!(!symbol.is_null(), "{library} has no `touch`");
        touches[i].store(symbol as usize, Ordering::Release);
        loaded.store(i + 1, Ordering::Release);
        // A thread created after this dlopen, too.
        threads.push(worker(touches.clone(), loaded.clone(), stop.clone()));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Release);
    let mut calls = 0;
    for thread in threads {
        calls += thread.join().map_err(|_| "a thread panicked")??;
    }
    Ok(format!(
        "{} libraries with __thread data loaded while threads allocated; {calls} calls into their TLS",
        libraries.len()
    ))
}
