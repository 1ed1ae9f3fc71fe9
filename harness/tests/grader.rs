//! The grader grades.
//!
//! - Each deliberately broken allocator (`harness/broken/`) loses the points of exactly
//!   the checks that notice its defect, and keeps every other check's.
//! - Each reference phase gets full marks on its own rubric.
//! - The command line refuses what it cannot grade (exit 2, one line saying why),
//!   writes Gradescope's `results.json`, grades a folder into a CSV, and its rubric
//!   table is the one in `docs/src/grading.md`.
//!
//! Timing checks are left out throughout (`skip_timing`, `--no-timing`, or `--only`
//! naming other checks): the suite never asserts wall-clock time on a shared machine.
//! Test names start with the phase whose rubric they grade on, so that
//! `cargo test -p harness -- phase1` includes them, or with `each_phase_` when they
//! grade every registered phase (`HARNESS_PHASE=N` narrows them to one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use assert_cmd::cargo::CommandCargoExt;
use harness::checks;
use harness::grade::json::Json;
use harness::grade::{self, Options, Report};
use harness::phases;

/// The crates under `harness/broken/`, by folder name.
const BROKEN: &[&str] = &[
    "never-reuses",
    "align8",
    "calloc-dirty",
    "realloc-no-copy",
    "no-double-free-check",
    "no-lock",
    "fork-deadlock",
];

/// Builds the phases, the tools and every broken allocator, once per test process.
fn build() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        phases::build_all()?;
        let packages: Vec<String> = BROKEN.iter().map(|name| format!("broken-{name}")).collect();
        let args: Vec<&str> = packages
            .iter()
            .flat_map(|package| ["-p", package.as_str()])
            .collect();
        phases::cargo_build_release(&args)
    });
    if let Err(problem) = built {
        panic!("cannot build the allocators: {problem}");
    }
}

fn broken_lib(name: &str) -> PathBuf {
    build();
    phases::target_dir()
        .join("release")
        .join(format!("libbroken_{}.so", name.replace('-', "_")))
}

fn phase_lib(number: u32) -> PathBuf {
    build();
    phases::phase(number)
        .expect("the phase is registered")
        .lib_path()
}

/// Grades `lib` on phase `phase`'s rubric, timing checks left out.
fn grade(lib: &Path, phase: u32) -> Report {
    build();
    let tools = checks::release_tools();
    grade::validate(lib, &tools).unwrap_or_else(|problem| panic!("{problem}"));
    let mut options = Options::new(phase);
    options.skip_timing = true;
    grade::grade(lib, &tools, &options, &|_| {}).unwrap_or_else(|problem| panic!("{problem}"))
}

/// The failed checks must be exactly `must_fail`, give or take the `either_way` ones
/// (whose outcome depends on the machine or on a race; each with the reason).
fn assert_fails_exactly(report: &Report, must_fail: &[&str], either_way: &[(&str, &str)]) {
    let rubric: Vec<&str> = report.results.iter().map(|g| g.check.id).collect();
    for id in must_fail.iter().chain(either_way.iter().map(|(id, _)| id)) {
        assert!(rubric.contains(id), "{id} is not in the rubric: {rubric:?}");
    }
    let failed = report.ids("FAIL");
    let table = report.table();
    for id in must_fail {
        assert!(
            failed.contains(id),
            "{id} should fail on {}, and did not:\n{table}",
            report.lib.display()
        );
    }
    for id in &failed {
        assert!(
            must_fail.contains(id) || either_way.iter().any(|(e, _)| e == id),
            "{id} should pass on {}, and failed:\n{table}",
            report.lib.display()
        );
    }
    // The score is what the passing checks are worth, and skipped ones count for nothing.
    let kept: u32 = report
        .results
        .iter()
        .filter(|g| !failed.contains(&g.check.id) && g.earned().is_some())
        .map(|g| g.check.points)
        .sum();
    assert_eq!(report.score(), kept, "{table}");
    let lost: u32 = must_fail
        .iter()
        .filter_map(|id| report.result(id))
        .map(|g| g.check.points)
        .sum();
    assert!(report.max_score() - report.score() >= lost, "{table}");
    println!("{table}");
}

#[test]
fn each_phase_gets_full_marks_on_its_own_rubric() {
    for phase in phases::under_test() {
        let report = grade(&phase_lib(phase.number), phase.number);
        assert_fails_exactly(&report, &[], &[]);
        assert_eq!(report.score(), report.max_score(), "{}", report.table());
        assert!(report.max_score() > 0);
    }
}

#[test]
fn phase1_never_reuses_loses_the_reuse_check() {
    let report = grade(&broken_lib("never-reuses"), 1);
    assert_fails_exactly(&report, &["behaviour/reuse"], &[]);
}

#[test]
fn phase1_align8_loses_the_alignment_checks() {
    let report = grade(&broken_lib("align8"), 1);
    assert_fails_exactly(&report, &["api/alignment", "api/memalign"], &[]);
}

#[test]
fn phase1_calloc_dirty_loses_the_calloc_check() {
    let report = grade(&broken_lib("calloc-dirty"), 1);
    assert_fails_exactly(&report, &["api/calloc"], &[]);
}

/// Programs that grow a filled buffer with realloc break too; which ones do depends on
/// the versions installed, so they are not asserted either way.
#[test]
fn phase1_realloc_no_copy_loses_the_realloc_and_contents_checks() {
    let report = grade(&broken_lib("realloc-no-copy"), 1);
    let programs = "a program fails if it grows a filled buffer with realloc: version-dependent";
    assert_fails_exactly(
        &report,
        // threads/stress: the probe's own Vecs grow by realloc and lose their contents.
        &["api/contents", "api/realloc", "threads/stress"],
        &[
            ("programs/ls", programs),
            ("programs/cat", programs),
            ("programs/sort", programs),
            ("programs/grep", programs),
            ("programs/python3", programs),
            ("programs/git", programs),
            ("programs/gcc", programs),
        ],
    );
}

#[test]
fn phase1_no_double_free_check_loses_the_double_free_check() {
    let report = grade(&broken_lib("no-double-free-check"), 1);
    assert_fails_exactly(&report, &["misuse/double-free"], &[]);
}

/// A data race shows with high probability, not certainty: on a loaded machine the
/// eight threads of `threads/stress` can run without overlapping (this suite runs tests
/// side by side). So: at least one thread check must catch it, and nothing else may
/// fail but the checks where threads allocate at once.
#[test]
fn phase1_no_lock_loses_the_thread_checks() {
    let report = grade(&broken_lib("no-lock"), 1);
    let race = "threads allocate at once: a race shows with high probability, not certainty";
    assert_fails_exactly(
        &report,
        &[],
        &[
            ("threads/stress", race),
            ("threads/bench", race),
            ("threads/fork", race),
            (
                "programs/sort",
                "GNU sort sorts on several threads, which may allocate at once",
            ),
        ],
    );
    let failed = report.ids("FAIL");
    assert!(
        failed.contains(&"threads/stress") || failed.contains(&"threads/bench"),
        "no thread check caught the missing lock:\n{}",
        report.table()
    );
}

#[test]
fn phase1_fork_deadlock_loses_the_fork_check() {
    let report = grade(&broken_lib("fork-deadlock"), 1);
    assert_fails_exactly(&report, &["threads/fork"], &[]);
}

/// No coalescing needs no crate of its own: phase 1 is that allocator.
#[test]
fn phase2_rubric_on_phase1_loses_exactly_the_phase2_behaviour_checks() {
    let report = grade(&phase_lib(1), 2);
    assert_fails_exactly(
        &report,
        &[
            "behaviour/split",
            "behaviour/coalesce",
            "behaviour/realloc-in-place",
            "behaviour/trim",
        ],
        &[],
    );
}

/// The performance index is a timing check, so its points are never asserted; but
/// its measurement must work: every trace replays, and bench_alloc's report is read
/// (utilization is a ratio of bytes, not of time).
#[test]
fn phase2_trace_suite_is_measured() {
    build();
    let scratch = scratch();
    let subject = checks::Subject {
        lib: phase_lib(2),
        tools: checks::release_tools(),
        scratch: scratch.path().into(),
    };
    let index = grade::perf::measure(&subject).unwrap_or_else(|problem| panic!("{problem}"));
    assert_eq!(
        index.replays.len(),
        harness::trace::SUITE.len(),
        "{index:?}"
    );
    assert!(
        index.utilization > 0.3 && index.utilization <= 1.0,
        "phase 2 coalesces: its utilization is well above 30%: {index:?}"
    );
    assert!(index.throughput > 0.0 && index.reference > 0.0, "{index:?}");
    assert!((0.0..=1.0).contains(&index.p), "{index:?}");
}

// ---------------------------------------------------------------------------------
// The command line.

fn harness() -> Command {
    build();
    let mut command = Command::cargo_bin("harness").expect("the harness binary");
    command.current_dir(phases::workspace_root());
    command
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Ran {
    let output = command.output().expect("harness runs");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a scratch folder")
}

#[test]
fn a_missing_file_is_refused_with_exit_2() {
    let ran = run(harness().args(["grade", "--lib", "/no/such/lib.so", "--phase", "1"]));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("/no/such/lib.so: no such file"),
        "{}",
        ran.stderr
    );
    assert!(ran.stdout.is_empty());
}

/// Also: with `--json`, the refusal is written for Gradescope to show the student.
#[test]
fn a_file_that_is_not_a_shared_object_is_refused_with_exit_2() {
    let dir = scratch();
    let fake = dir.path().join("libmalloc.so");
    std::fs::write(&fake, "#include <stdlib.h>\nvoid *malloc(size_t n);\n").unwrap();
    let json = dir.path().join("results.json");
    let ran = run(harness()
        .args(["grade", "--phase", "1", "--lib"])
        .arg(&fake)
        .arg("--json")
        .arg(&json));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("not a shared object"), "{}", ran.stderr);
    let results = Json::parse(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(results.get("score"), Some(&Json::Number(0.0)));
    let output = results.get("output").and_then(Json::as_str).unwrap();
    assert!(output.contains("not a shared object"), "{output}");
}

#[test]
fn a_shared_object_without_malloc_is_refused_with_exit_2() {
    // libm is a real shared object of this machine, and no allocator.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    let Some(libm) = libm else {
        println!("no libm.so.6 where expected; nothing to check");
        return;
    };
    let ran = run(harness()
        .args(["grade", "--phase", "1", "--lib"])
        .arg(&libm));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("not an allocator"), "{}", ran.stderr);
}

#[test]
fn bad_arguments_are_refused_with_exit_2_and_the_usage() {
    for args in [
        &["grade", "--lib", "x.so"][..],
        &["grade", "--lib", "x.so", "--phase", "9"],
        &["grade", "--phase", "1"],
        &["grade", "--lib", "x.so", "--phase", "1", "--csv", "s.csv"],
        &[
            "grade",
            "--phase",
            "1",
            "--lib",
            "x.so",
            "--only",
            "no/such-check",
        ],
        &["grade", "--frobnicate"],
    ] {
        let ran = run(harness().args(args));
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("usage: harness grade"),
            "{args:?}: {}",
            ran.stderr
        );
    }
}

/// Gradescope's shape: `score`, `max_score`, `output`, and `tests` with `name`,
/// `score`, `max_score`, `output` each; the score is the sum of the tests'.
#[test]
fn phase1_json_has_gradescopes_shape() {
    let dir = scratch();
    let json = dir.path().join("results.json");
    // One check that passes and one that fails, from the same allocator.
    let ran = run(harness()
        .args([
            "grade",
            "--phase",
            "1",
            "--only",
            "api/alignment,misuse/double-free",
        ])
        .arg("--lib")
        .arg(broken_lib("no-double-free-check"))
        .arg("--json")
        .arg(&json));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("score: 5/9"), "{}", ran.stdout);
    let results = Json::parse(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(results.get("score"), Some(&Json::Number(5.0)));
    assert_eq!(results.get("max_score"), Some(&Json::Number(9.0)));
    assert!(results.get("output").and_then(Json::as_str).is_some());
    let tests = results.get("tests").and_then(Json::as_array).unwrap();
    assert_eq!(tests.len(), 2);
    let mut sum = 0.0;
    for test in tests {
        let name = test.get("name").and_then(Json::as_str).unwrap();
        let score = test.get("score").and_then(Json::as_f64).unwrap();
        let max = test.get("max_score").and_then(Json::as_f64).unwrap();
        let output = test.get("output").and_then(Json::as_str).unwrap();
        assert!(!output.is_empty() && score <= max, "{test}");
        if name.starts_with("misuse/double-free") {
            assert_eq!((score, max), (0.0, 4.0));
            assert!(
                output.contains("did not detect the double free"),
                "{output}"
            );
        }
        sum += score;
    }
    assert_eq!(sum, 5.0);
}

/// Two `.so` files and a note: two rows, in name order, with progress on stderr.
#[test]
fn phase1_a_folder_of_submissions_becomes_a_csv() {
    let dir = scratch();
    let class = dir.path().join("class");
    std::fs::create_dir(&class).unwrap();
    std::fs::copy(phase_lib(1), class.join("alice.so")).unwrap();
    std::fs::copy(broken_lib("no-double-free-check"), class.join("bob.so")).unwrap();
    std::fs::write(class.join("notes.txt"), "not a submission").unwrap();
    let csv = dir.path().join("scores.csv");
    let ran = run(harness()
        .args(["grade", "--phase", "1", "--only", "misuse", "--dir"])
        .arg(&class)
        .arg("--csv")
        .arg(&csv));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("[1/2] alice.so"), "{}", ran.stderr);
    assert!(ran.stderr.contains("[2/2] bob.so"), "{}", ran.stderr);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "submission,score,max_score,failed,problem,misuse/double-free,misuse/invalid-free",
            "alice.so,8,8,,,4,4",
            "bob.so,4,8,misuse/double-free,,0,4",
        ]
    );
    assert!(ran.stdout.contains("bob.so"), "{}", ran.stdout);
}

/// A submission can be a crate: it is built with `cargo build --release` and the
/// cdylib it produced is graded; a folder that is no allocator gets a row saying why.
#[test]
fn phase1_a_crate_folder_is_built_and_graded() {
    let root = phases::workspace_root();
    let dir = scratch();
    let class = dir.path().join("class");
    let student = class.join("carol");
    std::fs::create_dir_all(student.join("src")).unwrap();
    // broken/no-double-free-check as a crate of its own, outside the workspace.
    let source =
        std::fs::read_to_string(root.join("harness/broken/no-double-free-check/src/lib.rs"))
            .unwrap();
    std::fs::write(student.join("src/lib.rs"), source).unwrap();
    std::fs::write(
        student.join("Cargo.toml"),
        format!(
            "[package]\nname = \"carol-malloc\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\npreload-kit = {{ path = \"{root}/phases/preload-kit\" }}\n\
             sbrk-freelist = {{ path = \"{root}/phases/phase1-sbrk-freelist\" }}\n\
             broken-frame = {{ path = \"{root}/harness/broken/frame\" }}\n\n\
             [profile.release]\npanic = \"abort\"\n\n[workspace]\n",
            root = root.display()
        ),
    )
    .unwrap();
    // The workspace's lock file pins the same libc, already downloaded: no network.
    std::fs::copy(root.join("Cargo.lock"), student.join("Cargo.lock")).unwrap();
    std::fs::create_dir_all(class.join("dave")).unwrap();
    std::fs::write(class.join("dave/README"), "I ran out of time").unwrap();
    std::fs::create_dir_all(class.join("erin/src")).unwrap();
    std::fs::write(
        class.join("erin/Cargo.toml"),
        "[package]\nname = \"erin\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(class.join("erin/src/lib.rs"), "pub fn nothing() {}\n").unwrap();

    let csv = dir.path().join("scores.csv");
    let ran = run(harness()
        .args(["grade", "--phase", "1", "--only", "misuse", "--dir"])
        .arg(&class)
        .arg("--csv")
        .arg(&csv));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "dave's folder holds no submission:\n{text}");
    assert_eq!(
        lines[1], "carol,4,8,misuse/double-free,,0,4",
        "{}",
        ran.stderr
    );
    assert!(
        lines[2].starts_with("erin,,,,") && lines[2].contains("builds no cdylib"),
        "{text}"
    );
}

/// `docs/src/grading.md` shows the rubric between two markers; it must be what
/// `harness grade --list-checks` prints (regenerate it with that command).
#[test]
fn the_rubric_in_the_book_is_the_catalogue() {
    let page = phases::workspace_root().join("docs/src/grading.md");
    let text = std::fs::read_to_string(&page).expect("docs/src/grading.md exists");
    let begin = "<!-- harness grade --list-checks: begin -->\n";
    let end = "<!-- harness grade --list-checks: end -->";
    let start = text.find(begin).expect("the begin marker") + begin.len();
    let stop = text[start..].find(end).expect("the end marker") + start;
    let generated = grade::checks_markdown(None);
    assert_eq!(
        &text[start..stop],
        generated,
        "docs/src/grading.md's rubric is out of date: replace it with \
         `cargo run -p harness --bin harness -- grade --list-checks`"
    );
    let ran = run(harness().args(["grade", "--list-checks"]));
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (Some(0), generated.as_str())
    );
}
