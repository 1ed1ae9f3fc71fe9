//! The registry of phases: [`PHASES`], the one list the rest of the repository follows.
//!
//! Each reference phase is a folder under `phases/` holding its policy library (the
//! folder's own package) and, in `preload/`, the thin package that builds its
//! preloadable `.so` in `target/release/`; a chapter of the book; and a folder of
//! golden files. The
//! harness (`run`, `demo`, `bench`, `pictures`, `phase-diff`), the grader's `--phase`,
//! the per-phase tests and the justfile (through `harness phases`) all read this list;
//! none keeps a list or a range of phase numbers of its own.
//!
//! Adding a phase is its crate(s), its chapter, its golden folder (made by the golden
//! test on its first run, `cargo insta review`), and one entry below.
//! `tests/registry.rs` checks that every entry's folders, packages and files exist.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One reference phase: what every part of the repository needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    /// The chapter's number; phase N's rubric is every check with `since <= N`.
    pub number: u32,
    /// What the phase adds, in one line (`harness phases`, the justfile's recipe list).
    pub title: &'static str,
    /// The phase's folder, relative to the workspace root.
    pub folder: &'static str,
    /// The Cargo package that builds the `.so` (a `cdylib`): `phase1-sbrk-freelist`
    /// builds `libphase1_sbrk_freelist.so`.
    pub package: &'static str,
    /// The Cargo package that holds the phase's policy (its heap and its unit tests),
    /// at [`Phase::folder`]; a later phase depends on it.
    pub policy: &'static str,
    /// The policy's sources, relative to [`Phase::folder`].
    pub policy_src: &'static str,
    /// The chapter, relative to the workspace root.
    pub chapter: &'static str,
    /// The demo's golden files (`demo.snap`, `demo-debug.snap`), relative to the root.
    pub golden: &'static str,
    /// What the chapter's diff from the previous phase compares, in the order shown:
    /// each pair of files or folders is diffed with `diff -ruN`, and the whole is
    /// committed as `docs/src/phase{N-1}-to-phaseN.diff` (`harness phase-diff`). Empty:
    /// the chapter shows no diff. A phase that composes earlier ones compares what
    /// really took something's place (phase 4's bins against phase 2's list), not
    /// whole folders, which would show the composed code as deleted.
    pub diff_from_previous: &'static [Compared],
    /// `MALLOC_DEBUG=1` turns on a debug mode (canaries, quarantine, heap checks), not
    /// only the call log: `harness bench` races it as an allocator of its own, and the
    /// debug-mode tests run on it.
    pub debug_mode: bool,
}

/// A file or folder of an earlier phase and the one of this phase that takes its place,
/// both relative to the workspace root: one part of a chapter's diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compared {
    pub old: &'static str,
    pub new: &'static str,
}

/// Where a phase's `.so` package sits inside its folder ([`Phase::package_folder`]):
/// the policy library is the folder's own package, and the thin `cdylib` that exports
/// it through the kit is in `preload/`.
pub const SO_PACKAGE_SUBFOLDER: &str = "preload";

/// Every phase, in chapter order. Each passes every earlier phase's checks too.
pub const PHASES: &[Phase] = &[
    Phase {
        number: 1,
        title: "sbrk and a free list",
        folder: "phases/phase1-sbrk-freelist",
        package: "phase1-sbrk-freelist",
        policy: "sbrk-freelist",
        policy_src: "src",
        chapter: "docs/src/ch01-sbrk-freelist.md",
        golden: "golden/phase1",
        diff_from_previous: &[],
        debug_mode: false,
    },
    Phase {
        number: 2,
        title: "splitting and coalescing",
        folder: "phases/phase2-split-coalesce",
        package: "phase2-split-coalesce",
        policy: "split-coalesce",
        policy_src: "src",
        chapter: "docs/src/ch02-split-coalesce.md",
        golden: "golden/phase2",
        diff_from_previous: &[Compared {
            old: "phases/phase1-sbrk-freelist/src",
            new: "phases/phase2-split-coalesce/src",
        }],
        debug_mode: false,
    },
    Phase {
        number: 3,
        title: "mappings for large blocks, and a debug mode",
        folder: "phases/phase3-mmap-debug",
        package: "phase3-mmap-debug",
        policy: "mmap-debug",
        policy_src: "src",
        chapter: "docs/src/ch03-mmap-debug.md",
        golden: "golden/phase3",
        diff_from_previous: &[],
        debug_mode: true,
    },
    Phase {
        number: 4,
        title: "segregated fits: free blocks in bins by size",
        folder: "phases/phase4-segregated-fits",
        package: "phase4-segregated-fits",
        policy: "segregated-fits",
        policy_src: "src",
        chapter: "docs/src/ch04-segregated-fits.md",
        golden: "golden/phase4",
        diff_from_previous: &[
            // The free index: phase 2's one list (phase 3 kept it), phase 4's bins.
            Compared {
                old: "phases/phase2-split-coalesce/src/free_list.rs",
                new: "phases/phase4-segregated-fits/src/bins.rs",
            },
            // The composition: the packages the policy holds, and what the .so exports.
            Compared {
                old: "phases/phase3-mmap-debug/Cargo.toml",
                new: "phases/phase4-segregated-fits/Cargo.toml",
            },
            Compared {
                old: "phases/phase3-mmap-debug/preload/src/lib.rs",
                new: "phases/phase4-segregated-fits/preload/src/lib.rs",
            },
        ],
        debug_mode: true,
    },
    Phase {
        number: 5,
        title: "size-class pages and a heap per thread",
        folder: "phases/phase5-thread-heaps",
        package: "phase5-thread-heaps",
        policy: "thread-heaps",
        policy_src: "src",
        chapter: "docs/src/ch05-thread-heaps.md",
        golden: "golden/phase5",
        diff_from_previous: &[
            // The composition: phase 4's heap, once the whole allocator behind the
            // kit's lock, becomes the fallback of the thread heaps.
            Compared {
                old: "phases/phase4-segregated-fits/preload/Cargo.toml",
                new: "phases/phase5-thread-heaps/preload/Cargo.toml",
            },
            Compared {
                old: "phases/phase4-segregated-fits/preload/src/lib.rs",
                new: "phases/phase5-thread-heaps/preload/src/lib.rs",
            },
        ],
        debug_mode: true,
    },
];

/// The registered phase numbered `number`.
pub fn phase(number: u32) -> Option<Phase> {
    PHASES.iter().copied().find(|p| p.number == number)
}

/// The phase a command-line argument names, or a message listing the registered ones.
pub fn parse(text: &str) -> Result<Phase, String> {
    text.trim()
        .parse()
        .ok()
        .and_then(phase)
        .ok_or_else(|| format!("no phase {text:?}: the phases are {}", numbers()))
}

/// The registered numbers, for messages: `1, 2, 3`.
pub fn numbers() -> String {
    let numbers: Vec<String> = PHASES.iter().map(|p| p.number.to_string()).collect();
    numbers.join(", ")
}

/// The last phase of the book.
pub fn last() -> Phase {
    *PHASES
        .last()
        .expect("the registry lists at least one phase")
}

/// The environment variable that narrows the per-phase tests to one phase
/// (`just phase2 test` sets `HARNESS_PHASE=2`).
pub const PHASE_VARIABLE: &str = "HARNESS_PHASE";

/// The phases a per-phase test covers: every registered one, or only the one
/// [`PHASE_VARIABLE`] names. Panics (this is for tests) when it names no phase.
pub fn under_test() -> Vec<Phase> {
    match std::env::var(PHASE_VARIABLE) {
        Ok(text) if !text.is_empty() => {
            vec![parse(&text).unwrap_or_else(|problem| panic!("{PHASE_VARIABLE}: {problem}"))]
        }
        _ => PHASES.to_vec(),
    }
}

impl Phase {
    /// `phase1-sbrk-freelist` builds `libphase1_sbrk_freelist.so`.
    pub fn lib_file(&self) -> String {
        format!("lib{}.so", self.package.replace('-', "_"))
    }

    pub fn lib_path(&self) -> PathBuf {
        target_dir().join("release").join(self.lib_file())
    }

    /// The folder of the `.so`'s package, relative to the workspace root.
    pub fn package_folder(&self) -> PathBuf {
        match SO_PACKAGE_SUBFOLDER {
            "" => PathBuf::from(self.folder),
            subfolder => Path::new(self.folder).join(subfolder),
        }
    }

    /// The policy's sources, relative to the workspace root (`phases/phase2-*/src`).
    pub fn policy_sources(&self) -> PathBuf {
        Path::new(self.folder).join(self.policy_src)
    }

    /// The phase before this one, if it is registered.
    pub fn previous(&self) -> Option<Phase> {
        self.number.checked_sub(1).and_then(phase)
    }

    /// The registry entry as `key<TAB>value` lines, what `harness phases N` prints for
    /// scripts (the justfile reads `package`, `policy` and `lib`).
    pub fn describe(&self) -> String {
        let fields: [(&str, String); 12] = [
            ("number", self.number.to_string()),
            ("title", self.title.into()),
            ("folder", self.folder.into()),
            ("package", self.package.into()),
            (
                "package_folder",
                self.package_folder().display().to_string(),
            ),
            ("lib", self.lib_path().display().to_string()),
            ("policy", self.policy.into()),
            (
                "policy_sources",
                self.policy_sources().display().to_string(),
            ),
            ("chapter", self.chapter.into()),
            ("golden", self.golden.into()),
            (
                "diff_from_previous",
                (self.diff_from_previous.iter())
                    .map(|pair| format!("{} {}", pair.old, pair.new))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("debug_mode", self.debug_mode.to_string()),
        ];
        fields
            .iter()
            .map(|(key, value)| format!("{key}\t{value}\n"))
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_run_from_one_in_chapter_order() {
        for (index, phase) in PHASES.iter().enumerate() {
            assert_eq!(phase.number as usize, index + 1, "{phase:?}");
        }
        assert_eq!(last().number as usize, PHASES.len());
    }

    #[test]
    fn a_phase_is_named_by_its_number() {
        assert_eq!(parse(" 2 ").map(|p| p.number), Ok(2));
        let problem = parse("9").unwrap_err();
        assert!(
            problem.starts_with("no phase \"9\": the phases are 1, "),
            "{problem}"
        );
        assert!(parse("two").is_err());
        assert_eq!(phase(2).and_then(|p| p.previous()), phase(1));
        assert_eq!(phase(1).and_then(|p| p.previous()), None);
    }

    #[test]
    fn describe_is_one_key_and_value_per_line() {
        let text = phase(1).unwrap().describe();
        assert!(text.starts_with("number\t1\n"), "{text}");
        assert!(text.contains("\npackage\tphase1-sbrk-freelist\n"), "{text}");
        assert!(
            text.lines().all(|line| line.split('\t').count() == 2),
            "{text}"
        );
    }
}
