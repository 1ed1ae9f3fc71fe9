//! Links the `.so` with the code a run executes first, so that it lies in the first
//! 64 KiB of the code: the kernel maps a file's pages in blocks of 64 KiB around the
//! page a fault touches, and code that no run executes then stays unmapped (see
//! chapter 5, *What is left*, for the measurement and how `hot-code.txt` was made).
//! A name in the list that the build no longer has is skipped; nothing else changes.
//!
//! The list is an option of `lld`, which rustc uses to link on x86-64 Linux from 1.90
//! on; with an older rustc the system's linker (GNU `ld`) links, which does not take
//! it, and the library is linked in the default order.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hot-code.txt");
    if !linked_by_lld() {
        return;
    }
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("hot-code.txt");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc links this target with its own `lld`: x86-64 Linux, rustc 1.90 or
/// later (its version as `rustc --version` prints it: `rustc 1.95.0 (...)`).
fn linked_by_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    let mut numbers = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
