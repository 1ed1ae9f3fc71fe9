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
