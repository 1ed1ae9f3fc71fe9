//! Drop-in fidelity: what programs written for glibc's malloc check beyond the C
//! standard (glibc's own malloc tests are where these come from).

use std::ffi::c_void;
use std::hint::black_box;

use crate::{Outcome, ensure};

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = value };
}

/// `posix_memalign` reports through its result, and on ENOMEM glibc's leaves `errno`
/// at ENOMEM too (glibc's `tst-malloc-thread-fail` reads `errno` after a failure); a
/// success or EINVAL leaves it alone.
pub fn posix_memalign_errno() -> Outcome {
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: `p` is a valid place for the result; blocks are freed once.
    unsafe {
        set_errno(0);
        let rc = libc::posix_memalign(&mut p, 64, black_box(usize::MAX - 4096));
        ensure!(
            rc == libc::ENOMEM,
            "posix_memalign of a huge size returned {rc}"
        );
        ensure!(
            errno() == libc::ENOMEM,
            "after posix_memalign failed with ENOMEM, errno is {} (glibc: ENOMEM)",
            errno()
        );
        set_errno(libc::EBADF);
        let rc = libc::posix_memalign(&mut p, 64, 100);
        ensure!(rc == 0, "posix_memalign(64, 100) returned {rc}");
        ensure!(
            errno() == libc::EBADF,
            "a successful posix_memalign changed errno"
        );
        crate::c::free(p);
        set_errno(libc::EBADF);
        let rc = libc::posix_memalign(&mut p, 24, 100);
        ensure!(rc == libc::EINVAL, "posix_memalign(24, 100) returned {rc}");
        ensure!(
            errno() == libc::EBADF,
            "posix_memalign's EINVAL changed errno"
        );
    }
    Ok("posix_memalign: ENOMEM also in errno, success and EINVAL leave errno alone".into())
}

/// How long the fork-beside-stdio scenario runs (glibc's test runs 3 s).
const FORK_STDIO_SECONDS: u64 = 3;

/// glibc's `tst-malloc-fork-deadlock` scenario (its bug 19431): threads that fork, threads
/// that read a long line with `getline` (which calls `malloc` and `realloc` while holding
/// the FILE's lock), and a thread that runs `fflush(NULL)` (which holds stdio's list
/// lock while it takes each FILE's lock). An allocator that takes its own lock in a
/// `pthread_atfork` prepare handler, before `fork` takes the list lock, closes a cycle:
/// fork thread (allocator lock, wants list lock) -> flush thread (list lock, wants the
/// FILE lock) -> read thread (FILE lock, wants the allocator lock). The run then hangs
/// until the harness's time limit.
pub fn fork_stdio() -> Outcome {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let path = std::env::temp_dir().join(format!("alloc-probe-long-line-{}", std::process::id()));
    let mut line = vec![b'x'; 50_000];
    line.push(b'\n');
    std::fs::write(&path, &line).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<std::thread::JoinHandle<Result<u64, String>>> = Vec::new();
    for _ in 0..4 {
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut forks = 0;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the child only calls `_exit`, which is async-signal-safe.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: `_exit` has no preconditions.
                    unsafe { libc::_exit(17) };
                }
                ensure!(pid > 0, "fork failed");
                let mut status = 0;
                // SAFETY: `pid` is our child; `status` is a valid int to write.
                let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
                ensure!(
                    waited == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 17,
                    "the child did not exit with 17 (status {status})"
                );
                forks += 1;
            }
            Ok(forks)
        }));
    }
    for _ in 0..8 {
        let stop = Arc::clone(&stop);
        let c_path = c_path.clone();
        threads.push(std::thread::spawn(move || {
            // SAFETY: a valid path and mode; the FILE is closed below.
            let file = unsafe { libc::fopen(c_path.as_ptr(), c"r".as_ptr()) };
            ensure!(!file.is_null(), "fopen of the long-line file failed");
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut buffer: *mut libc::c_char = std::ptr::null_mut();
                let mut allocated = 0;
                // SAFETY: `file` is open; getline allocates `buffer` with malloc.
                let read = unsafe {
                    libc::rewind(file);
                    libc::getline(&mut buffer, &mut allocated, file)
                };
                // SAFETY: getline's buffer came from malloc (or is NULL).
                unsafe { libc::free(buffer.cast()) };
                ensure!(read == 50_001, "getline read {read} bytes, not 50001");
                reads += 1;
            }
            // SAFETY: `file` is open and closed once.
            unsafe { libc::fclose(file) };
            Ok(reads)
        }));
    }
    {
        let stop = Arc::clone(&stop);
        threads.push(std::thread::spawn(move || {
            let mut flushes = 0;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: fflush(NULL) flushes every open stream.
                let flushed = unsafe { libc::fflush(std::ptr::null_mut()) };
                ensure!(flushed == 0, "fflush(NULL) failed");
                flushes += 1;
            }
            Ok(flushes)
        }));
    }
    std::thread::sleep(std::time::Duration::from_secs(FORK_STDIO_SECONDS));
    stop.store(true, Ordering::Relaxed);
    let mut counts = Vec::new();
    for thread in threads {
        counts.push(
            thread
                .join()
                .map_err(|_| "a thread panicked".to_string())??,
        );
    }
    let _ = std::fs::remove_file(&path);
    let forks: u64 = counts[..4].iter().sum();
    let reads: u64 = counts[4..12].iter().sum();
    ensure!(forks > 0 && reads > 0, "no fork or no read completed");
    Ok(format!(
        "{FORK_STDIO_SECONDS} s of fork beside getline and fflush(NULL): no hang ({forks} forks, {reads} getlines)"
    ))
}

/// Every parameter glibc's `mallopt` accepts is accepted (four of glibc's own tests
/// stop when `mallopt(M_ARENA_MAX, …)` fails), the values glibc refuses are refused,
/// and `M_PERTURB` fills blocks as glibc does: `malloc`'s with the byte XOR 0xff,
/// freed ones with the byte, `calloc`'s still zero. (The freed block is 2000 bytes:
/// glibc's per-thread cache, which takes blocks up to 1032 bytes, skips the filling.)
pub fn mallopt() -> Outcome {
    let accepted = [
        ("M_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("M_ARENA_MAX", libc::M_ARENA_MAX, 400),
        ("M_ARENA_TEST", libc::M_ARENA_TEST, 8),
        ("M_MMAP_MAX", libc::M_MMAP_MAX, 65536),
        ("M_MXFAST", libc::M_MXFAST, 64),
        ("M_TOP_PAD", libc::M_TOP_PAD, 0),
        ("M_CHECK_ACTION", libc::M_CHECK_ACTION, 3),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, 128 * 1024),
        ("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, 128 * 1024),
        ("M_PERTURB", libc::M_PERTURB, 0),
    ];
    for (name, param, value) in accepted {
        // SAFETY: mallopt only changes the allocator's settings.
        let answer = unsafe { libc::mallopt(param, value) };
        ensure!(
            answer == 1,
            "mallopt({name}, {value}) returned {answer}, not 1"
        );
    }
    // SAFETY: as above.
    let refused = unsafe { libc::mallopt(libc::M_MXFAST, 1000) };
    ensure!(
        refused == 0,
        "mallopt(M_MXFAST, 1000) returned {refused}; glibc refuses it"
    );

    // SAFETY: as above; then plain allocations, each block read while live (or, for
    // the freed one, while its memory is still part of the heap: `keep` holds it there).
    unsafe {
        ensure!(
            libc::mallopt(libc::M_PERTURB, 0xa5) == 1,
            "mallopt(M_PERTURB) failed"
        );
        let p = crate::c::malloc(2000).cast::<u8>();
        let keep = crate::c::malloc(200);
        ensure!(!p.is_null() && !keep.is_null(), "malloc returned NULL");
        let fresh = std::slice::from_raw_parts(p, 2000);
        ensure!(
            fresh.iter().all(|&b| b == 0xa5 ^ 0xff),
            "with M_PERTURB 0xa5, malloc's block is not filled with 0x5a"
        );
        crate::c::free(p.cast());
        // The first and last bytes may hold the allocator's own links and tags now.
        let freed = std::slice::from_raw_parts(p.add(32), 1900);
        ensure!(
            freed.iter().all(|&b| b == 0xa5),
            "with M_PERTURB 0xa5, a freed block is not filled with 0xa5"
        );
        let zeroed = crate::c::calloc(1, 200).cast::<u8>();
        ensure!(
            !zeroed.is_null()
                && std::slice::from_raw_parts(zeroed, 200)
                    .iter()
                    .all(|&b| b == 0),
            "with M_PERTURB, calloc's block is not zero"
        );
        crate::c::free(zeroed.cast());
        crate::c::free(keep);
        ensure!(
            libc::mallopt(libc::M_PERTURB, 0) == 1,
            "mallopt(M_PERTURB, 0) failed"
        );
    }
    Ok("every glibc parameter accepted, M_MXFAST 1000 refused, M_PERTURB fills as glibc's".into())
}

/// `mallinfo2` and `mallinfo` report the allocator's own figures (not glibc's idle
/// arena's zeros): 100 blocks of 1000 bytes raise the bytes in use by 100 000, freeing
/// half lowers them by at least 40 000 (glibc counts the 7 blocks its per-thread cache
/// keeps as in use), a 1 MiB block counts somewhere (in the heap or, where large
/// blocks are mapped, as a mapping), and so do blocks another thread holds.
pub fn mallinfo() -> Outcome {
    fn in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's figures.
        let info = unsafe { libc::mallinfo2() };
        info.uordblks + info.hblkhd
    }
    // SAFETY: plain allocations, each freed once.
    unsafe {
        let before = in_use();
        let blocks: Vec<*mut c_void> = (0..100).map(|_| crate::c::malloc(1000)).collect();
        ensure!(
            blocks.iter().all(|p| !p.is_null()),
            "malloc(1000) returned NULL"
        );
        let full = in_use();
        ensure!(
            full >= before + 100_000,
            "mallinfo2: in use went from {before} to {full} after 100 x malloc(1000)"
        );
        let info = libc::mallinfo2();
        ensure!(
            info.arena >= info.uordblks && info.arena >= info.fordblks,
            "mallinfo2: arena {} is smaller than its parts ({} used, {} free)",
            info.arena,
            info.uordblks,
            info.fordblks
        );
        let old = libc::mallinfo();
        ensure!(
            old.uordblks as usize == info.uordblks,
            "mallinfo's uordblks {} differs from mallinfo2's {}",
            old.uordblks,
            info.uordblks
        );
        for &p in blocks.iter().step_by(2) {
            crate::c::free(p);
        }
        let half = in_use();
        ensure!(
            half + 40_000 <= full,
            "mallinfo2: freeing 50 blocks of 1000 bytes took in use from {full} to {half}"
        );
        let large = crate::c::malloc(1 << 20);
        ensure!(!large.is_null(), "malloc(1 MiB) returned NULL");
        let with_large = in_use();
        ensure!(
            with_large >= half + (1 << 20),
            "mallinfo2: a 1 MiB block took in use from {half} only to {with_large}"
        );
        crate::c::free(large);
        for &p in blocks.iter().skip(1).step_by(2) {
            crate::c::free(p);
        }
        // Blocks another thread allocated, and still holds, count too: glibc adds up
        // every arena, so an allocator with a heap per thread adds up every heap.
        let before_thread = in_use();
        let (held, holding) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let blocks: Vec<usize> = (0..100).map(|_| crate::c::malloc(200) as usize).collect();
            let _ = held.send(());
            let _ = released.recv();
            for p in blocks {
                crate::c::free(p as *mut c_void);
            }
        });
        let _ = holding.recv();
        let with_thread = in_use();
        let _ = release.send(());
        let _ = holder.join();
        ensure!(
            with_thread >= before_thread + 20_000,
            "mallinfo2: 100 x malloc(200) in another thread took in use from {before_thread} only to {with_thread}"
        );
        // malloc_info: glibc's XML, to a FILE.
        let file = libc::tmpfile();
        ensure!(!file.is_null(), "tmpfile failed");
        let answer = libc::malloc_info(0, file);
        ensure!(answer == 0, "malloc_info(0, file) returned {answer}");
        ensure!(
            libc::malloc_info(1, file) == libc::EINVAL,
            "malloc_info(1, …) is not EINVAL"
        );
        libc::rewind(file);
        let mut text = vec![0u8; 8192];
        let read = libc::fread(text.as_mut_ptr().cast(), 1, text.len(), file);
        libc::fclose(file);
        let text = String::from_utf8_lossy(&text[..read]);
        ensure!(
            text.starts_with("<malloc version=\"1\">") && text.trim_end().ends_with("</malloc>"),
            "malloc_info wrote {text:?}"
        );
        ensure!(
            text.contains("<system type=\"current\" size=\"")
                && !text.contains("size=\"0\"/>\n</malloc>"),
            "malloc_info's figures are missing: {text:?}"
        );
    }
    Ok("mallinfo2 and mallinfo follow 100 x 1000 bytes, half freed, 1 MiB, and another thread's blocks; malloc_info writes XML".into())
}

/// `malloc_trim(0)` gives free memory at the top of the heap back at once: with the
/// trim threshold raised so that `free` keeps 8 MiB of freed blocks, the program break
/// stays up until `malloc_trim(0)` brings it down and answers 1.
pub fn malloc_trim() -> Outcome {
    // SAFETY: settings, plain allocations each freed once, and sbrk(0) to read the break.
    unsafe {
        ensure!(
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) == 1,
            "mallopt(M_TRIM_THRESHOLD, 64 MiB) failed"
        );
        let blocks: Vec<*mut c_void> = (0..1024).map(|_| crate::c::malloc(8 * 1024)).collect();
        ensure!(
            blocks.iter().all(|p| !p.is_null()),
            "malloc(8 KiB) returned NULL"
        );
        for &p in blocks.iter().rev() {
            crate::c::free(p);
        }
        let kept = libc::sbrk(0) as usize;
        let answer = libc::malloc_trim(0);
        let trimmed = libc::sbrk(0) as usize;
        ensure!(
            answer == 1,
            "malloc_trim(0) returned {answer} with 8 MiB free at the top"
        );
        ensure!(
            kept >= trimmed + (4 << 20),
            "malloc_trim(0) moved the break down by {} bytes only",
            kept.saturating_sub(trimmed)
        );
        let again = libc::malloc_trim(0);
        ensure!(
            again == 0,
            "a second malloc_trim(0) returned {again}: nothing was left"
        );
    }
    Ok("malloc_trim(0) gave the freed top of the heap back at once".into())
}

/// hardened_malloc's `write_after_free_large_reuse`: a large block is freed, another
/// of the same size is made (with a fixed threshold it is a mapping too, and the
/// kernel likes to put it where the old one was), and the program writes through its
/// dangling pointer to the first. A checking allocator stops the write (phase 3's
/// debug mode keeps freed mappings reserved without access, so it faults); otherwise
/// it lands in the new block, which this probe reports.
pub fn write_after_free_large_reuse() -> Outcome {
    const SIZE: usize = 256 * 1024;
    // SAFETY: the write through `old` after its free is the misuse under test.
    unsafe {
        let old = crate::c::malloc(SIZE).cast::<u8>();
        ensure!(!old.is_null(), "malloc(256 KiB) returned NULL");
        crate::c::free(old.cast());
        let new = crate::c::malloc(SIZE).cast::<u8>();
        ensure!(!new.is_null(), "malloc(256 KiB) returned NULL");
        new.write_bytes(0, SIZE);
        std::ptr::write_volatile(std::hint::black_box(old).add(64 * 1024 + 1), b'a');
        let landed = (new as usize..new as usize + SIZE).contains(&(old as usize + 64 * 1024 + 1));
        crate::c::free(new.cast());
        if landed {
            return Err("a write through a dangling pointer landed in the new large block".into());
        }
    }
    Err("a write into a freed large block went unnoticed".into())
}

/// A one-byte overflow, and then nothing more: the program ends normally. With the
/// debug mode's check spaced out (`MALLOC_CHECK_EVERY`), only a last check at exit
/// can still report it (exit 3 after this probe's `FAIL` line).
pub fn overflow_before_exit() -> Outcome {
    // SAFETY: the write one past the block is the misuse under test.
    unsafe {
        let p = crate::c::malloc(24).cast::<u8>();
        ensure!(!p.is_null(), "malloc(24) returned NULL");
        std::ptr::write_volatile(std::hint::black_box(p).add(24), 0);
    }
    Err("a one-byte overflow was not reported before the program ended".into())
}
