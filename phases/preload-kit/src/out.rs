//! Output that never allocates: text is formatted into a buffer on the stack and
//! handed to `write(2)`.
//!
//! `core::fmt` formats without a heap, so `write!(out, "{:#x}", addr)` is safe to use
//! inside `malloc`; `format!` and `println!` are not (they allocate, and `println!`
//! also takes stdout's lock, which may be held by the code that called `malloc`).

use core::fmt;

/// Standard error: where dumps, stats, the debug log and errors go (as glibc's
/// `malloc_stats` does), so that a program's own stdout stays untouched.
pub const STDERR: i32 = 2;

/// A buffered writer to a file descriptor. Flushes when the buffer fills and when dropped.
pub struct Out {
    fd: i32,
    len: usize,
    buf: [u8; 512],
}

impl Out {
    pub const fn new(fd: i32) -> Self {
        Out {
            fd,
            len: 0,
            buf: [0; 512],
        }
    }

    pub const fn stderr() -> Self {
        Out::new(STDERR)
    }

    pub fn bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let room = self.buf.len() - self.len;
            let take = room.min(bytes.len());
            let (now, later) = bytes.split_at(take);
            if let Some(dest) = self.buf.get_mut(self.len..self.len + take) {
                dest.copy_from_slice(now);
            }
            self.len += take;
            bytes = later;
        }
    }

    /// Writes out what is buffered. `errno` is left as it was: output is a side
    /// effect that must not change what the program sees (`free` keeps errno).
    pub fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        let saved = crate::os::errno();
        crate::os::write_all(self.fd, self.buf.get(..self.len).unwrap_or(&[]));
        crate::os::set_errno(saved);
        self.len = 0;
    }
}

impl fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        self.flush();
    }
}
