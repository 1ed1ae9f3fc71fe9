//! A whole class at once: every submission in a folder, graded one after the other,
//! one CSV row each.
//!
//! A submission is an entry of the folder:
//! - a `.so` file;
//! - a crate folder (it has a `Cargo.toml`): built with `cargo build --release`, and
//!   the `cdylib` it produced is graded (when it builds several, the one whose name
//!   holds `phaseN`);
//! - a folder without a `Cargo.toml` that holds `.so` files (a student's upload);
//! - a folder of C: with a `Makefile`, built with `make` (the `.so` it leaves in the
//!   folder is graded); without one, its `*.c` files are compiled with
//!   `gcc -shared -fPIC -O2 … -lpthread -ldl`.
//!
//! Anything else (notes, the CSV itself, hidden files) is ignored. A submission that
//! cannot be built or is not an allocator gets a row with its problem and no score;
//! the others are graded all the same.
//!
//! Building runs the submission's build scripts and procedural macros: treat a folder
//! of student crates as you would any student code (a container, a spare account).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::json::Json;
use super::{Options, Report};
use crate::runner::{self, Limits, Run};

/// How long one submission may take to build.
pub const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// The largest file a build may write.
pub const BUILD_OUTPUT_LIMIT: u64 = 2 << 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A library to grade as it is.
    Lib(PathBuf),
    /// A crate to build first.
    Crate(PathBuf),
    /// C sources to build first (with their `Makefile`, or with gcc).
    C(PathBuf),
    /// A folder that holds several `.so` files, none of them named for the phase.
    Ambiguous(Vec<PathBuf>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The entry's file name: what the CSV calls it.
    pub name: String,
    pub source: Source,
}

/// The submissions in `dir`, sorted by name.
pub fn find(dir: &Path, phase: u32) -> Result<Vec<Submission>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if let Some(source) = classify(&path, phase) {
            found.push(Submission { name, source });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// What kind of submission `path` is, if any (see the module's comment).
pub fn classify(path: &Path, phase: u32) -> Option<Source> {
    if path.is_file() && is_shared_object_name(path) {
        Some(Source::Lib(path.to_path_buf()))
    } else if path.is_dir() && path.join("Cargo.toml").is_file() {
        Some(Source::Crate(path.to_path_buf()))
    } else if path.is_dir() {
        let libs = shared_objects_in(path);
        match pick(libs.clone(), phase) {
            Some(lib) => Some(Source::Lib(lib)),
            None if !libs.is_empty() => Some(Source::Ambiguous(libs)),
            None if path.join("Makefile").is_file() || !c_sources_in(path).is_empty() => {
                Some(Source::C(path.to_path_buf()))
            }
            None => None,
        }
    } else {
        None
    }
}

fn c_sources_in(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|ext| ext == "c"))
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    sources
}

/// Builds C sources in `dir`: `make` when there is a `Makefile` (then the one `.so`
/// in the folder, or the one named for the phase, is graded), else every `*.c`
/// compiled into `libsubmission.so`.
pub fn build_c(dir: &Path, phase: u32) -> Result<PathBuf, String> {
    let (run, what) = if dir.join("Makefile").is_file() {
        (Run::new("make").cwd(dir), "make".to_string())
    } else {
        let sources = c_sources_in(dir);
        let names: Vec<String> = sources
            .iter()
            .filter_map(|s| s.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let run = Run::new("gcc")
            .args(["-shared", "-fPIC", "-O2", "-o", "libsubmission.so"])
            .args(&names)
            .args(["-lpthread", "-ldl"])
            .cwd(dir);
        let what = format!(
            "gcc -shared -fPIC -O2 -o libsubmission.so {} -lpthread -ldl",
            names.join(" ")
        );
        (run, what)
    };
    let outcome = run
        .timeout(BUILD_LIMIT)
        .merge_stderr()
        .run()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !outcome.succeeded() {
        let said = outcome.stdout_text();
        // The compiler's own words: its error lines, or all it said.
        let errors: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("error"))
            .take(5)
            .collect();
        let words = if errors.is_empty() {
            said.trim().to_string()
        } else {
            errors.join(" / ")
        };
        return Err(format!("{what} failed ({outcome}): {words}"));
    }
    let libs = shared_objects_in(dir);
    match pick(libs.clone(), phase) {
        Some(lib) => Ok(lib),
        None if libs.is_empty() => Err(format!("{what} made no .so in the folder")),
        None => Err(format!(
            "{what} made several .so files and none is named for phase {phase}: {}",
            names(&libs)
        )),
    }
}

/// The library to grade for `source`, built first when it is a crate or C.
pub fn library(source: &Source, phase: u32) -> Result<PathBuf, String> {
    match source {
        Source::Lib(lib) => Ok(lib.clone()),
        Source::Ambiguous(libs) => Err(format!(
            "several .so files and none named for phase {phase}: {}",
            names(libs)
        )),
        // A build script can write without end too.
        Source::Crate(dir) => with_build_limits(|| build(dir, phase)),
        Source::C(dir) => with_build_limits(|| build_c(dir, phase)),
    }
}

fn with_build_limits(body: impl FnOnce() -> Result<PathBuf, String>) -> Result<PathBuf, String> {
    runner::with_limits(Limits::new(None, Some(BUILD_OUTPUT_LIMIT)), body).0
}

fn is_shared_object_name(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "so")
}

fn shared_objects_in(dir: &Path) -> Vec<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_shared_object_name(p))
                .collect()
        })
        .unwrap_or_default();
    libs.sort();
    libs
}

/// The one library to grade among `libs`: the only one, or the only one whose file
/// name holds `phaseN`.
pub fn pick(libs: Vec<PathBuf>, phase: u32) -> Option<PathBuf> {
    if libs.len() == 1 {
        return libs.into_iter().next();
    }
    let tag = format!("phase{phase}");
    let mut named = libs.into_iter().filter(|lib| {
        lib.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(&tag))
    });
    match (named.next(), named.next()) {
        (Some(lib), None) => Some(lib),
        _ => None,
    }
}

/// Builds the crate in `dir` (release profile, its own `target/` folder) and returns
/// the `cdylib` to grade, read from Cargo's build messages.
pub fn build(dir: &Path, phase: u32) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let outcome = Run::new(cargo)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .cwd(dir)
        // Each submission builds into its own folder, so two crates with one package
        // name cannot overwrite each other's library.
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .timeout(BUILD_LIMIT)
        .run()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !outcome.succeeded() {
        let stderr = outcome.stderr_text();
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .take(3)
            .collect();
        let said = if errors.is_empty() {
            outcome.to_string()
        } else {
            errors.join(" / ")
        };
        return Err(format!("cargo build --release failed: {said}"));
    }
    let mut libs = Vec::new();
    for line in outcome.stdout_text().lines() {
        let Ok(message) = Json::parse(line) else {
            continue;
        };
        let is_cdylib = message.get("reason").and_then(Json::as_str) == Some("compiler-artifact")
            && message
                .get("target")
                .and_then(|t| t.get("kind"))
                .and_then(Json::as_array)
                .is_some_and(|kinds| kinds.iter().any(|k| k.as_str() == Some("cdylib")));
        if !is_cdylib {
            continue;
        }
        let files = message.get("filenames").and_then(Json::as_array);
        for file in files.unwrap_or_default().iter().filter_map(Json::as_str) {
            if file.ends_with(".so") {
                libs.push(PathBuf::from(file));
            }
        }
    }
    match libs.len() {
        0 => Err(
            "the crate builds no cdylib (its Cargo.toml needs crate-type = [\"cdylib\"])".into(),
        ),
        _ => pick(libs.clone(), phase).ok_or_else(|| {
            format!(
                "the crate builds several libraries and none is named for phase {phase}: {}",
                names(&libs)
            )
        }),
    }
}

fn names(libs: &[PathBuf]) -> String {
    libs.iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One submission's row.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: String,
    /// The report, or why there is none.
    pub graded: Result<Report, String>,
}

/// Grades every submission in `dir`, telling stderr how it goes.
pub fn grade_folder(dir: &Path, tools: &Path, options: &Options) -> Result<Vec<Row>, String> {
    let submissions = find(dir, options.phase)?;
    if submissions.is_empty() {
        return Err(format!(
            "{}: no submissions (.so files, crate folders, or folders holding a .so)",
            dir.display()
        ));
    }
    let total = submissions.len();
    let mut rows = Vec::new();
    for (number, submission) in submissions.into_iter().enumerate() {
        let started = Instant::now();
        eprint!("[{}/{total}] {}", number + 1, submission.name);
        if matches!(submission.source, Source::Crate(_) | Source::C(_)) {
            eprint!(": building...");
        }
        let lib = library(&submission.source, options.phase);
        let graded = lib.and_then(|lib| {
            super::validate(&lib, tools)?;
            eprint!(" ");
            super::grade(&lib, tools, options, &|_| eprint!("."))
        });
        match &graded {
            Ok(report) => eprintln!(
                " {}/{} ({:.1} s)",
                report.score(),
                report.max_score(),
                started.elapsed().as_secs_f64()
            ),
            Err(problem) => eprintln!(" not graded: {problem}"),
        }
        rows.push(Row {
            name: submission.name,
            graded,
        });
    }
    Ok(rows)
}

/// The class's scores: `submission,score,max_score,failed,problem`, then one column
/// per check with the points earned (`skip` for a skipped check, empty when the
/// submission could not be graded).
pub fn csv(rows: &[Row], options: &Options) -> String {
    let checks = options.checks();
    let mut header = vec!["submission", "score", "max_score", "failed", "problem"];
    header.extend(checks.iter().map(|c| c.id));
    let mut out = csv_line(header.iter().map(|s| s.to_string()));
    for row in rows {
        let mut cells = vec![row.name.clone()];
        match &row.graded {
            Ok(report) => {
                cells.push(report.score().to_string());
                cells.push(report.max_score().to_string());
                cells.push(report.ids("FAIL").join(" "));
                cells.push(String::new());
                for check in &checks {
                    cells.push(match report.result(check.id).map(|g| g.earned()) {
                        Some(Some(points)) => points.to_string(),
                        Some(None) => "skip".into(),
                        None => String::new(),
                    });
                }
            }
            Err(problem) => {
                cells.extend([String::new(), String::new(), String::new(), problem.clone()]);
                cells.extend(checks.iter().map(|_| String::new()));
            }
        }
        out.push_str(&csv_line(cells));
    }
    out
}

/// One CSV line (RFC 4180: a field with a comma, quote or newline is quoted).
fn csv_line(cells: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = cells
        .into_iter()
        .map(|cell| {
            if cell.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

/// Where the feedback files of a class graded into `csv` go: a folder beside it,
/// named after it (`scores.csv` → `scores-feedback/`).
pub fn feedback_dir(csv: &Path) -> PathBuf {
    let stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scores".into());
    csv.with_file_name(format!("{stem}-feedback"))
}

/// Writes each submission's feedback into `dir`: `NAME.txt`, the table a single grade
/// prints (or why it was not graded), and `NAME.json`, the same as Gradescope's
/// `results.json`, so each student can be sent what `harness grade --lib` would show.
pub fn write_feedback(rows: &[Row], dir: &Path, options: &Options) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for row in rows {
        let (text, json) = match &row.graded {
            Ok(report) => (report.table(), report.gradescope()),
            Err(problem) => (
                format!("{}: not graded: {problem}\n", row.name),
                super::gradescope_refusal(options, problem),
            ),
        };
        for (extension, contents) in [("txt", text), ("json", json.pretty())] {
            let path = dir.join(format!("{}.{extension}", row.name));
            std::fs::write(&path, contents)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// The class at a glance, for the terminal.
pub fn summary(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!(
        "{:<width$}  {:>9}  failed checks, or why it was not graded\n",
        "submission", "score"
    );
    for row in rows {
        let (score, detail) = match &row.graded {
            Ok(report) => (
                format!("{}/{}", report.score(), report.max_score()),
                report.ids("FAIL").join(" "),
            ),
            Err(problem) => ("-".to_string(), problem.clone()),
        };
        let line = format!("{:<width$}  {score:>9}  {detail}", row.name);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            csv_line(["a".into(), "b,c".into(), "say \"hi\"".into()]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn the_library_named_for_the_phase_is_picked() {
        let libs = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(pick(libs(&["a.so"]), 2), Some("a.so".into()));
        assert_eq!(
            pick(libs(&["libphase1_x.so", "libphase2_y.so"]), 2),
            Some("libphase2_y.so".into())
        );
        assert_eq!(pick(libs(&["a.so", "b.so"]), 1), None);
        assert_eq!(pick(libs(&[]), 1), None);
    }

    #[test]
    fn a_folder_of_submissions_is_read_by_kind_and_sorted() {
        let dir = std::env::temp_dir().join(format!("mymalloc-batch-find-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for folder in ["zed", "crate", "empty", "two"] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
        }
        for file in [
            "bob.so",
            "notes.txt",
            ".hidden.so",
            "zed/libmine.so",
            "crate/Cargo.toml",
            "two/a.so",
            "two/b.so",
        ] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        let found = find(&dir, 1).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["bob.so", "crate", "two", "zed"]);
        assert_eq!(found[1].source, Source::Crate(dir.join("crate")));
        assert!(matches!(found[2].source, Source::Ambiguous(ref libs) if libs.len() == 2));
        assert_eq!(found[3].source, Source::Lib(dir.join("zed/libmine.so")));
    }
}
