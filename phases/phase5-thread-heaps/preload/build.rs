//! Links the `.so` with the code a run executes first, so that it lies in the first
//! 64 KiB of the code: the kernel maps a file's pages in blocks of 64 KiB around the
//! page a fault touches, and code that no run executes then stays unmapped (see
//! chapter 5, *What is left*, for the measurement and how `hot-code.txt` was made).
//! A name in the list that the build no longer has is skipped; nothing else changes.

fn main() {
    let list = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("hot-code.txt");
    println!("cargo:rerun-if-changed=hot-code.txt");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-warn-symbol-ordering");
}
