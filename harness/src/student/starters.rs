//! `harness new`: a student's own allocator, ready to grow through the chapters.
//!
//! The templates are ordinary files under `harness/starters/` (a Rust crate and a C
//! folder), read into the harness at compile time, so they can be read as they are
//! and are built by the tests (`harness/tests/stages.rs`) from a fresh copy.

use std::path::{Path, PathBuf};

use crate::phases;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
}

impl Lang {
    pub fn parse(name: &str) -> Option<Lang> {
        match name {
            "rust" => Some(Lang::Rust),
            "c" => Some(Lang::C),
            _ => None,
        }
    }

    /// Each file of the template: its path in the new folder and its text.
    pub fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => RUST,
            Lang::C => C,
        }
    }
}

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../starters/rust/Cargo.toml")),
    (".gitignore", include_str!("../../starters/rust/.gitignore")),
    ("src/lib.rs", include_str!("../../starters/rust/src/lib.rs")),
    (
        "src/steps.rs",
        include_str!("../../starters/rust/src/steps.rs"),
    ),
    (
        "src/block.rs",
        include_str!("../../starters/rust/src/block.rs"),
    ),
    (
        "src/heap.rs",
        include_str!("../../starters/rust/src/heap.rs"),
    ),
];

const C: &[(&str, &str)] = &[
    ("Makefile", include_str!("../../starters/c/Makefile")),
    (".gitignore", include_str!("../../starters/c/.gitignore")),
    ("mymalloc.c", include_str!("../../starters/c/mymalloc.c")),
];

/// The kit's path as the template's `Cargo.toml` gives it: right for the template
/// where it lies in the repository, and replaced by an absolute path in a copy.
const TEMPLATE_KIT_PATH: &str = "path = \"../../../phases/preload-kit\"";

/// Writes the `lang` starter into `dir` (which must not exist, or be empty) and
/// returns the files written.
pub fn create(dir: &Path, lang: Lang) -> Result<Vec<PathBuf>, String> {
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(format!(
            "{} already exists and is not empty: choose a new folder",
            dir.display()
        ));
    }
    let kit = phases::workspace_root().join("phases").join("preload-kit");
    let mut written = Vec::new();
    for (name, text) in lang.files() {
        let path = dir.join(name);
        let text = if *name == "Cargo.toml" {
            let absolute = format!("path = {:?}", kit.display().to_string());
            text.replace(TEMPLATE_KIT_PATH, &absolute)
        } else {
            text.to_string()
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    if lang == Lang::Rust {
        // The workspace's lock file pins the kit's dependencies (libc) to the versions
        // the kit is tested with, and lets a clone that has built once build the
        // starter without the registry. Cargo drops the entries the starter does not use.
        let lock = dir.join("Cargo.lock");
        let pinned = phases::workspace_root().join("Cargo.lock");
        if pinned.is_file() {
            std::fs::copy(&pinned, &lock)
                .map_err(|e| format!("cannot write {}: {e}", lock.display()))?;
            written.push(lock);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_template_names_the_kit_where_the_copy_can_find_it() {
        let (_, manifest) = RUST[0];
        assert!(manifest.contains(TEMPLATE_KIT_PATH));
        let template_dir = phases::workspace_root().join("harness/starters/rust");
        assert!(
            template_dir
                .join("../../../phases/preload-kit/Cargo.toml")
                .is_file()
        );
    }

    #[test]
    fn a_starter_is_not_written_over_existing_work() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.c"), "int x;").unwrap();
        let refused = create(dir.path(), Lang::C).unwrap_err();
        assert!(refused.contains("not empty"), "{refused}");
        let fresh = dir.path().join("fresh");
        let files = create(&fresh, Lang::C).unwrap();
        assert_eq!(files.len(), C.len());
        assert!(fresh.join("mymalloc.c").is_file());
    }
}
