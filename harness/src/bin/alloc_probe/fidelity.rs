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
