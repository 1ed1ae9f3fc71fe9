//! Output that never allocates: text is formatted into a buffer on the stack and
//! handed to `write(2)`.
//!
//! `core::fmt` formats without a heap, so `write!(out, "{:#x}", addr)` is safe to use
//! inside `malloc`; `format!` and `println!` are not (they allocate, and `println!`
//! also takes stdout's lock, which may be held by the code that called `malloc`).
//!
//! A heap dump on a terminal is coloured: [`Out::painted`] wraps the state word of each
//! `[BLOCK … USED]` / `[BLOCK … FREE]` line (and phase 3's `[MMAP … USED]`) in ANSI
//! colour codes, when [`colour_dumps`] says stderr is a terminal that wants colour.
//! Files and pipes always get plain text, so golden files and tests never see a code.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// Standard error: where dumps, stats, the debug log and errors go (as glibc's
/// `malloc_stats` does), so that a program's own stdout stays untouched.
pub const STDERR: i32 = 2;

/// The colour of `USED` on a terminal (yellow; amber in the book's pictures).
pub const USED_COLOUR: &[u8] = b"\x1b[33m";
/// The colour of `FREE` on a terminal (green, as in the book's pictures).
pub const FREE_COLOUR: &[u8] = b"\x1b[32m";
/// Back to the terminal's own colour.
pub const RESET_COLOUR: &[u8] = b"\x1b[0m";

/// A buffered writer to a file descriptor. Flushes when the buffer fills and when dropped.
pub struct Out {
    fd: i32,
    len: usize,
    buf: [u8; 512],
    /// Colour the state words of block lines (see [`Out::painted`]).
    paint: bool,
}

impl Out {
    pub const fn new(fd: i32) -> Self {
        Out {
            fd,
            len: 0,
            buf: [0; 512],
            paint: false,
        }
    }

    pub const fn stderr() -> Self {
        Out::new(STDERR)
    }

    /// A writer that, when `paint` is true, colours each ` USED]` and ` FREE]` it writes
    /// (the end of a `[BLOCK …]` line). It writes whole lines only, so that a word is
    /// never cut in two by a full buffer.
    pub const fn painted(fd: i32, paint: bool) -> Self {
        let mut out = Out::new(fd);
        out.paint = paint;
        out
    }

    pub fn bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.len == self.buf.len() {
                self.make_room();
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
        self.write_out(self.len);
    }

    /// Empties a full buffer: all of it, or when painting, every whole line in it (the
    /// unfinished line moves to the front).
    fn make_room(&mut self) {
        let whole_lines = match self.buf.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) if self.paint => last_newline + 1,
            _ => self.len,
        };
        self.write_out(whole_lines);
    }

    /// Writes the first `count` buffered bytes and keeps the rest.
    fn write_out(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let saved = crate::os::errno();
        let text = self.buf.get(..count).unwrap_or(&[]);
        if self.paint {
            write_painted(self.fd, text);
        } else {
            crate::os::write_all(self.fd, text);
        }
        crate::os::set_errno(saved);
        self.buf.copy_within(count..self.len, 0);
        self.len -= count;
    }
}

/// Writes `text` with every ` USED]` and ` FREE]` coloured.
fn write_painted(fd: i32, mut text: &[u8]) {
    const WORD: usize = 4;
    while let Some(at) = text.windows(WORD + 2).position(|w| {
        w.first() == Some(&b' ') && w.last() == Some(&b']') && state_colour(&w[1..=WORD]).is_some()
    }) {
        let (before, rest) = text.split_at(at + 1);
        let (word, after) = rest.split_at(WORD);
        crate::os::write_all(fd, before);
        crate::os::write_all(fd, state_colour(word).unwrap_or(b""));
        crate::os::write_all(fd, word);
        crate::os::write_all(fd, RESET_COLOUR);
        text = after;
    }
    crate::os::write_all(fd, text);
}

fn state_colour(word: &[u8]) -> Option<&'static [u8]> {
    match word {
        b"USED" => Some(USED_COLOUR),
        b"FREE" => Some(FREE_COLOUR),
        _ => None,
    }
}

/// Whether heap dumps are coloured: only when stderr is a terminal and `NO_COLOR` is
/// unset or empty (<https://no-color.org>: present and not empty means no colour,
/// whatever the value). Decided once, on the first dump; neither `getenv` nor `isatty`
/// allocates.
pub fn colour_dumps() -> bool {
    const UNDECIDED: u8 = 0;
    const PLAIN: u8 = 1;
    const COLOUR: u8 = 2;
    static DECISION: AtomicU8 = AtomicU8::new(UNDECIDED);
    match DECISION.load(Ordering::Relaxed) {
        PLAIN => false,
        COLOUR => true,
        _ => {
            let no_color = crate::os::env_var(c"NO_COLOR").is_some_and(|v| !v.is_empty());
            let colour = !no_color && crate::os::is_terminal(STDERR);
            DECISION.store(if colour { COLOUR } else { PLAIN }, Ordering::Relaxed);
            colour
        }
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

/// Where debug mode's log goes: the file named by `MALLOC_DEBUG_LOG` (opened on first
/// use, appended to, so that the processes of a program tree can share one), or stderr.
/// A file that cannot be opened is reported once, and stderr used instead.
pub fn debug_log() -> Out {
    use core::fmt::Write as _;
    use core::sync::atomic::AtomicI32;
    /// The log's file descriptor; `UNOPENED` before the first line.
    static LOG_FD: AtomicI32 = AtomicI32::new(UNOPENED);
    const UNOPENED: i32 = -1;
    let fd = LOG_FD.load(Ordering::Relaxed);
    if fd != UNOPENED {
        return Out::new(fd);
    }
    let fd = match crate::config::current().debug_log_file {
        None => STDERR,
        Some(path) => {
            // SAFETY: `path` is NUL-terminated; open does not allocate.
            let opened = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if opened < 0 {
                let mut out = Out::stderr();
                let _ = writeln!(
                    out,
                    "mymalloc: cannot open MALLOC_DEBUG_LOG={:?}; logging to stderr",
                    path
                );
                STDERR
            } else {
                opened
            }
        }
    };
    // Two threads opening at once (debug mode's first calls) keep the first file
    // descriptor; the other is closed.
    match LOG_FD.compare_exchange(UNOPENED, fd, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => Out::new(fd),
        Err(first) => {
            if fd != STDERR {
                // SAFETY: `fd` is ours, opened above and never shared.
                unsafe { libc::close(fd) };
            }
            Out::new(first)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write as _;
    use std::io::Read as _;
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    use std::string::String;
    use std::vec::Vec;

    /// What `write` produced through an `Out` on a pipe.
    fn through_pipe(paint: bool, write: impl FnOnce(&mut Out)) -> Vec<u8> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors are fresh from pipe and owned only here.
        let (mut reader, writer) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        {
            let mut out = Out::painted(writer.as_raw_fd(), paint);
            write(&mut out);
        }
        drop(writer);
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn painting_colours_only_the_state_words() {
        let painted = through_pipe(true, |out| {
            let _ = writeln!(out, "[BLOCK 0x0 96 USED]\n[BLOCK 0x60 32 FREE]");
            let _ = writeln!(out, "[MMAP #1 262144 USED]\n[stats] in_use=96 free=32");
        });
        let expected = [
            b"[BLOCK 0x0 96 ".as_slice(),
            USED_COLOUR,
            b"USED",
            RESET_COLOUR,
            b"]\n[BLOCK 0x60 32 ",
            FREE_COLOUR,
            b"FREE",
            RESET_COLOUR,
            b"]\n[MMAP #1 262144 ",
            USED_COLOUR,
            b"USED",
            RESET_COLOUR,
            b"]\n[stats] in_use=96 free=32\n",
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&painted),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn a_full_buffer_never_cuts_a_painted_word() {
        // 700 lines of 20 bytes: the 512-byte buffer fills mid-line many times.
        let lines = 700;
        let write = |out: &mut Out| {
            for i in 0..lines {
                let state = if i % 2 == 0 { "USED" } else { "FREE" };
                let _ = writeln!(out, "[BLOCK {:#06x} {state}]", i * 16);
            }
        };
        let painted = String::from_utf8(through_pipe(true, write)).unwrap();
        let plain = String::from_utf8(through_pipe(false, write)).unwrap();
        assert_eq!(painted.matches("\x1b[33mUSED\x1b[0m]").count(), lines / 2);
        assert_eq!(painted.matches("\x1b[32mFREE\x1b[0m]").count(), lines / 2);
        assert!(!plain.contains('\x1b'));
        let unpainted = painted
            .replace("\x1b[33m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(unpainted, plain);
    }
}
