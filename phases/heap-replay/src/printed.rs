//! Reading what a heap prints, for tests of dumps and stats.

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;

use preload_kit::Out;

/// What `write` prints through an [`Out`], as text. `Out` writes to a file descriptor
/// (it must not allocate), so the text goes through an unlinked temporary file.
pub fn printed(write: impl FnOnce(&mut Out)) -> String {
    let path = std::env::temp_dir().join(format!(
        "heap-replay-printed-{}-{:?}.txt",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("a temporary file for the printed text");
    let _ = std::fs::remove_file(&path);
    {
        let mut out = Out::new(file.as_raw_fd());
        write(&mut out);
    }
    let mut text = String::new();
    file.rewind().expect("rewind the temporary file");
    file.read_to_string(&mut text)
        .expect("read back the printed text");
    text
}
