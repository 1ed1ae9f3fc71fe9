//! Helpers the unit tests of this crate share (compiled for tests only).

extern crate std;

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::string::String;

use preload_kit::Out;

/// What `write` prints through an [`Out`], as text. `Out` writes to a file descriptor
/// (it must not allocate), so the text goes through an unlinked temporary file.
pub fn printed(write: impl FnOnce(&mut Out)) -> String {
    let path = std::env::temp_dir().join(std::format!(
        "phase3-test-{}-{:?}.txt",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let _ = std::fs::remove_file(&path);
    {
        let mut out = Out::new(file.as_raw_fd());
        write(&mut out);
    }
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}
