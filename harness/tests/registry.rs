//! The registry of phases (`harness/src/phases.rs`) says where each phase's parts are;
//! this checks that they are there: the packages in the workspace where the entry says,
//! the `.so` package a `cdylib`, the policy's sources, the chapter in the book's table
//! of contents, the golden files, and the committed diff where the chapter shows one.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::grade::json::Json;
use harness::phases::{self, PHASES};

/// Every workspace package: its name and its folder.
fn workspace_packages() -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(phases::workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata = Json::parse(&String::from_utf8_lossy(&output.stdout)).expect("JSON");
    let packages = metadata.get("packages").and_then(Json::as_array);
    (packages.expect("a package list").iter())
        .map(|package| {
            let field = |key| package.get(key).and_then(Json::as_str).unwrap_or_default();
            let manifest = Path::new(field("manifest_path"));
            (field("name").to_string(), manifest.parent().unwrap().into())
        })
        .collect()
}

fn folder_of(packages: &[(String, PathBuf)], name: &str) -> PathBuf {
    (packages.iter())
        .find(|(package, _)| package == name)
        .map(|(_, folder)| folder.clone())
        .unwrap_or_else(|| panic!("no package {name} in the workspace"))
}

#[test]
fn every_entry_names_packages_that_are_where_it_says() {
    let root = phases::workspace_root();
    let packages = workspace_packages();
    for phase in PHASES {
        assert_eq!(
            folder_of(&packages, phase.package),
            root.join(phase.package_folder()),
            "phase {}'s .so package",
            phase.number
        );
        let manifest =
            std::fs::read_to_string(root.join(phase.package_folder()).join("Cargo.toml"))
                .expect("the .so package's Cargo.toml");
        assert!(
            manifest.contains("crate-type = [\"cdylib\"]"),
            "{} does not build a .so",
            phase.package
        );
        assert_eq!(
            folder_of(&packages, phase.policy),
            root.join(phase.folder),
            "phase {}'s policy package is the phase's folder",
            phase.number
        );
        assert!(
            root.join(phase.policy_sources()).join("lib.rs").is_file(),
            "{}: no lib.rs",
            phase.policy_sources().display()
        );
    }
}

#[test]
fn every_entry_has_its_chapter_and_golden_files() {
    let root = phases::workspace_root();
    let summary = std::fs::read_to_string(root.join("docs/src/SUMMARY.md")).expect("SUMMARY.md");
    for phase in PHASES {
        let chapter = Path::new(phase.chapter);
        assert!(root.join(chapter).is_file(), "{} is missing", phase.chapter);
        let in_book = chapter
            .strip_prefix("docs/src")
            .expect("a page of docs/src");
        assert!(
            summary.contains(&format!("]({})", in_book.display())),
            "docs/src/SUMMARY.md does not list {}",
            phase.chapter
        );
        for snapshot in ["demo.snap", "demo-debug.snap"] {
            let path = root.join(phase.golden).join(snapshot);
            assert!(path.is_file(), "{} is missing", path.display());
        }
    }
}

/// A chapter's diff compares a file or folder of an earlier phase with one of its own
/// phase, both there, and both of the same kind.
#[test]
fn every_diff_compares_an_earlier_phase_with_its_own() {
    let root = phases::workspace_root();
    for phase in PHASES {
        for pair in phase.diff_from_previous {
            assert!(
                Path::new(pair.new).starts_with(phase.folder),
                "phase {}'s diff: {} is not in {}",
                phase.number,
                pair.new,
                phase.folder
            );
            assert!(
                (PHASES.iter()).any(|earlier| earlier.number < phase.number
                    && Path::new(pair.old).starts_with(earlier.folder)),
                "phase {}'s diff: {} is not an earlier phase's",
                phase.number,
                pair.old
            );
            let (old, new) = (root.join(pair.old), root.join(pair.new));
            assert!(old.exists() && new.exists(), "{pair:?}: missing");
            assert_eq!(old.is_dir(), new.is_dir(), "{pair:?}: a file and a folder");
        }
    }
}

#[test]
fn every_chapter_diff_is_committed() {
    for to in harness::book::phase_diff::shown() {
        let path = harness::book::phase_diff::file_for(to);
        assert!(path.is_file(), "{} is missing", path.display());
    }
}
