//! The harness's dependency rule (see `src/lib.rs`): the core modules never use the
//! grader (`grade`) or the book's generators (`book`), and those two never use each
//! other. Separate crates would make this a build error; in one crate, this test does.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, in a stable order.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Which group a file of `harness/src` belongs to: `grade`, `book`, `cli` (the
/// `harness` binary, which uses everything) or `core`.
fn group(relative: &Path) -> &'static str {
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy());
    match first.as_deref() {
        Some("grade" | "grade.rs") => "grade",
        Some("book" | "book.rs") => "book",
        Some("main.rs") => "cli",
        _ => "core",
    }
}

#[test]
fn core_uses_neither_the_grader_nor_the_book_and_they_do_not_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    let mut counted = [0; 3];
    for path in sources(&src) {
        let relative = path.strip_prefix(&src).expect("under src");
        let forbidden: &[&str] = match group(relative) {
            "core" => &[
                "crate::grade",
                "crate::book",
                "harness::grade",
                "harness::book",
            ],
            "grade" => &["crate::book", "harness::book"],
            "book" => &["crate::grade", "harness::grade"],
            _ => &[],
        };
        match group(relative) {
            "core" => counted[0] += 1,
            "grade" => counted[1] += 1,
            "book" => counted[2] += 1,
            _ => {}
        }
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        for (number, line) in text.lines().enumerate() {
            for name in forbidden {
                if line.contains(name) {
                    broken.push(format!(
                        "src/{}:{}: {}",
                        relative.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        counted.iter().all(|&n| n > 0),
        "some group has no files: {counted:?}"
    );
    assert!(
        broken.is_empty(),
        "the dependency rule is broken:\n{}",
        broken.join("\n")
    );
}
