//! `harness gradescope --phase N --out DIR`: a complete Gradescope autograder.
//!
//! Gradescope unpacks the autograder's files into `/autograder/source`, runs
//! `setup.sh` once to build its image (Ubuntu), then runs `/autograder/run_autograder`
//! for each submission, which must leave `/autograder/results/results.json`. The
//! folder written here holds:
//!
//! - `setup.sh`: installs a C toolchain, make, git, python3 and Rust (rustup), then
//!   builds this repository's harness;
//! - `run_autograder`: copies the upload (a `Makefile` or `*.c` files, a Rust crate,
//!   or a prebuilt `.so`) to a scratch folder, and runs `harness grade --submission`
//!   on it, which builds it and writes `results.json` (a build that fails gets a
//!   `results.json` with score 0 and the compiler's words);
//! - `mymalloc/`: the repository's tracked files, which setup.sh builds.
//!
//! Zip the folder's contents (not the folder) and upload the zip as the autograder.
//! `AUTOGRADER_ROOT` (default `/autograder`) and `MYMALLOC_HARNESS` (default: the
//! harness setup.sh built) let run_autograder run elsewhere, as the tests do.

use std::path::Path;
use std::process::ExitCode;

use crate::phases;

pub const USAGE: &str = "\
usage: harness gradescope --phase N --out DIR
  writes a Gradescope autograder for phase N's rubric into DIR: setup.sh,
  run_autograder and mymalloc/ (this repository's tracked files). Zip DIR's
  contents and upload the zip as the assignment's autograder. A submission may be
  a Makefile (make must leave one .so in the folder), *.c files (compiled with gcc
  -shared -fPIC -O2 ... -lpthread -ldl), a Rust crate (cargo build --release; a
  cdylib), or a prebuilt .so. Its results.json has one test per check, with name,
  score, max_score, status, output, visibility and execution_time.";

pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (mut phase, mut out) = (None, None);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next()) {
            ("--phase", Some(n)) => match phases::parse(n) {
                Ok(found) => phase = Some(found.number),
                Err(problem) => return usage(&problem),
            },
            ("--out", Some(dir)) => out = Some(Path::new(dir).to_path_buf()),
            _ => return usage(&format!("unexpected {arg:?}")),
        }
    }
    let (Some(phase), Some(out)) = (phase, out) else {
        return usage("needs --phase N (`harness phases` lists them) and --out DIR");
    };
    match write_package(&out, phase) {
        Ok(()) => {
            eprintln!(
                "harness gradescope: wrote the phase {phase} autograder to {}; zip its contents \
                 (cd {} && zip -r ../autograder.zip .) and upload the zip",
                out.display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("harness gradescope: {problem}");
            ExitCode::from(2)
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("harness gradescope: {problem}\n{USAGE}");
    ExitCode::from(2)
}

/// Writes the autograder for phase `phase` into `out`.
pub fn write_package(out: &Path, phase: u32) -> Result<(), String> {
    let source = out.join("mymalloc");
    std::fs::create_dir_all(&source)
        .map_err(|e| format!("cannot create {}: {e}", source.display()))?;
    copy_tracked_files(&phases::workspace_root(), &source)?;
    write_script(&out.join("setup.sh"), SETUP)?;
    write_script(
        &out.join("run_autograder"),
        &RUN_AUTOGRADER.replace("@PHASE@", &phase.to_string()),
    )?;
    Ok(())
}

fn write_script(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", path.display()))
}

/// Copies the files git tracks in `root` (the sources, without `target/`) to `to`.
fn copy_tracked_files(root: &Path, to: &Path) -> Result<(), String> {
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .map_err(|e| format!("cannot run git to list the repository's files: {e}"))?;
    if !listed.status.success() {
        return Err(format!(
            "git ls-files failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&listed.stderr).trim()
        ));
    }
    for name in listed.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        let (from, into) = (root.join(&*name), to.join(&*name));
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        if let Some(parent) = into.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::copy(&from, &into)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), into.display()))?;
    }
    Ok(())
}

const SETUP: &str = r#"#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu base image, to build the
# autograder's image: the tools submissions are built with, Rust, then the harness.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends \
    build-essential make ca-certificates curl git python3
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable
fi
. "$HOME/.cargo/env"
cd /autograder/source/mymalloc
# Everything, so that a student's crate depending on phases/preload-kit (by path:
# /autograder/source/mymalloc/phases/preload-kit) builds offline from the same cache.
cargo build --release --locked --workspace
"#;

const RUN_AUTOGRADER: &str = r#"#!/usr/bin/env bash
# Gradescope runs this for each submission: builds what the student uploaded (a
# Makefile or *.c files, a Rust crate, or a prebuilt .so), grades it on the phase
# @PHASE@ rubric and writes results/results.json under the autograder's root.
#   AUTOGRADER_ROOT   the root (default /autograder)
#   MYMALLOC_HARNESS  the harness binary (default: the one setup.sh built)
# Arguments are passed on to `harness grade` (e.g. --only api for a quick try).
set -uo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
harness="${MYMALLOC_HARNESS:-$root/source/mymalloc/target/release/harness}"
if [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
mkdir -p "$root/results"
# Built in a copy, so the upload stays as it was.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -R "$root/submission/." "$work/"
"$harness" grade --phase @PHASE@ --submission "$work" \
    --json "$root/results/results.json" "$@"
status=$?
# 2: the upload could not be graded; results.json says why, for the student to read.
if [ "$status" -eq 2 ] && [ -s "$root/results/results.json" ]; then
    exit 0
fi
exit "$status"
"#;
