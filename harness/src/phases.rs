//! The reference phases: one crate each under `phases/`, each building a preloadable
//! `.so` in `target/release/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    pub number: u32,
    /// The Cargo package, also the folder under `phases/`.
    pub package: &'static str,
}

impl Phase {
    /// `phase1-sbrk-freelist` builds `libphase1_sbrk_freelist.so`.
    pub fn lib_file(&self) -> String {
        format!("lib{}.so", self.package.replace('-', "_"))
    }

    pub fn lib_path(&self) -> PathBuf {
        target_dir().join("release").join(self.lib_file())
    }
}

/// Every phase, in chapter order. Each passes every earlier phase's checks too.
pub const PHASES: &[Phase] = &[
    Phase {
        number: 1,
        package: "phase1-sbrk-freelist",
    },
    Phase {
        number: 2,
        package: "phase2-split-coalesce",
    },
    Phase {
        number: 3,
        package: "phase3-mmap-debug",
    },
    Phase {
        number: 4,
        package: "phase4-segregated-fits",
    },
    Phase {
        number: 5,
        package: "phase5-thread-heaps",
    },
];

pub fn phase(number: u32) -> Option<Phase> {
    PHASES.iter().copied().find(|p| p.number == number)
}

/// The workspace root (the folder with the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Cargo's target folder, honouring `CARGO_TARGET_DIR` as Cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Builds every phase's `.so` (release profile) once per process, so that tests work on
/// a fresh clone with a plain `cargo test`. Returns Cargo's complaint on failure.
pub fn build_all() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut args: Vec<&str> = PHASES
                .iter()
                .flat_map(|phase| ["-p", phase.package])
                .collect();
            // `--lib` as well as the `--bin`s: naming only bins would make Cargo skip the
            // phases' libraries, which are what this is for.
            args.extend([
                "-p",
                "harness",
                "--lib",
                "--bin",
                "bench_alloc",
                "--bin",
                "alloc_probe",
            ]);
            cargo_build_release(&args)
        })
        .clone()
}

/// `cargo build --release --quiet ARGS` in the workspace, with the Cargo that runs us
/// (if any). Returns Cargo's complaint on failure.
pub fn cargo_build_release(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The release build of `bench_alloc` (built by [`build_all`]).
pub fn bench_alloc_release() -> PathBuf {
    target_dir().join("release").join("bench_alloc")
}
