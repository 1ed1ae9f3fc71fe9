//! Threads and fork: the allocator must be safe to call from many threads at once, and
//! a child forked while other threads allocate must still be able to allocate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::rng::Rng;

use crate::{Outcome, ensure};

const THREADS: usize = 8;

/// A block passed between threads: address, size, fill byte.
type Block = (usize, usize, u8);
/// One mailbox per thread, for blocks another thread allocated and it must free.
type Mailboxes = Arc<Vec<Mutex<Vec<Block>>>>;

/// Eight threads allocate, fill, check and free; a share of each thread's blocks is
/// freed by the next thread (cross-thread frees are common in real programs).
pub fn threads() -> Outcome {
    let handoff: Mailboxes = Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let handoff = Arc::clone(&handoff);
            std::thread::spawn(move || -> Result<(), String> {
                let mut rng = Rng::new(100 + t as u64);
                let mut live: Vec<Block> = Vec::new();
                for step in 0..20_000 {
                    let fill = (t * 31 + 1) as u8;
                    if live.len() < 200 && rng.chance(60) {
                        let size = rng.between(1, 512);
                        // SAFETY: plain malloc; written only when not null.
                        let p = unsafe { crate::c::malloc(size) }.cast::<u8>();
                        ensure!(!p.is_null(), "thread {t}: malloc({size}) returned NULL");
                        // SAFETY: the block holds `size` bytes.
                        unsafe { p.write_bytes(fill, size) };
                        live.push((p as usize, size, fill));
                    } else if let Some(block) = live.pop() {
                        if step % 4 == 0 {
                            handoff[(t + 1) % THREADS]
                                .lock()
                                .map_err(|e| e.to_string())?
                                .push(block);
                        } else {
                            release(block)?;
                        }
                    }
                    if step % 64 == 0 {
                        let taken: Vec<_> =
                            std::mem::take(&mut *handoff[t].lock().map_err(|e| e.to_string())?);
                        for block in taken {
                            release(block)?;
                        }
                    }
                }
                for block in live {
                    release(block)?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a thread panicked".to_string())??;
    }
    for slot in handoff.iter() {
        for block in std::mem::take(&mut *slot.lock().map_err(|e| e.to_string())?) {
            release(block)?;
        }
    }
    Ok(format!(
        "{THREADS} threads x 20000 steps with cross-thread frees, contents and errno kept"
    ))
}

fn release((p, size, fill): Block) -> Result<(), String> {
    let p = p as *mut u8;
    // SAFETY: `p` is a live block of `size` bytes, filled by its allocating thread.
    let bytes = unsafe { std::slice::from_raw_parts(p, size) };
    ensure!(
        bytes.iter().all(|&b| b == fill),
        "a {size}-byte block lost its contents (threads overlap?)"
    );
    // Threads contend for the allocator here: a lock that slept in the kernel and
    // found the lock word changed got EAGAIN back, and must not leave it in errno.
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() = libc::EBADF };
    // SAFETY: freed exactly once.
    unsafe { crate::c::free(p.cast()) };
    // SAFETY: as above.
    let errno = unsafe { *libc::__errno_location() };
    ensure!(
        errno == libc::EBADF,
        "free changed errno to {errno} (with other threads allocating)"
    );
    Ok(())
}

/// Forks 40 times while four threads allocate without pause. Each child allocates and
/// exits; a child that has not exited within 5 s is taken as deadlocked (the heap lock
/// was copied held by a thread that does not exist in the child).
pub fn fork() -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..4)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                while !stop.load(Ordering::Relaxed) {
                    let size = rng.between(1, 4000);
                    // SAFETY: plain malloc and free.
                    unsafe { crate::c::free(crate::c::malloc(size)) };
                }
            })
        })
        .collect();
    let mut result = Ok(());
    for round in 0..40 {
        // SAFETY: the child only calls async-signal-unsafe malloc deliberately (that is
        // what is tested) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child: allocate, free, exit without running atexit handlers.
            unsafe {
                let p = crate::c::malloc(100);
                let q = crate::c::calloc(10, 1000);
                let ok = !p.is_null() && !q.is_null();
                crate::c::free(p);
                crate::c::free(q);
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        if pid < 0 {
            result = Err(format!("fork failed in round {round}"));
            break;
        }
        if let Err(problem) = wait_for(pid, Duration::from_secs(5)) {
            result = Err(format!("round {round}: {problem}"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in busy {
        let _ = thread.join();
    }
    result.map(|()| "40 forks while 4 threads allocate: every child could allocate".into())
}

fn wait_for(pid: libc::pid_t, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, non-blocking.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                Ok(())
            } else {
                Err(format!("the child failed (wait status {status:#x})"))
            };
        }
        if started.elapsed() > limit {
            // SAFETY: killing our own hung child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err("the child deadlocked: it could not allocate after fork".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
