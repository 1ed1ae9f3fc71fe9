//! The grader grades.
//!
//! - Each deliberately broken allocator (`harness/broken/`) loses the points of exactly
//!   the checks that notice its defect, and keeps every other check's.
//! - Each reference phase gets full marks on its own rubric.
//! - The command line refuses what it cannot grade (exit 2, one line saying why),
//!   writes Gradescope's `results.json`, grades a folder into a CSV, and its rubric
//!   table is the one in `docs/src/grading.md`.
//!
//! - The C allocators of `harness/broken/c/` (built here with gcc, once per test
//!   process) are scored as an instructor would want: glibc's blocks handed out score
//!   0, a bump allocator cannot pass phase 1, a spinning function costs one check.
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
    // The points are what the passing checks are worth, and skipped ones count for
    // nothing; the rules (gate, core checks) can only lower the score.
    let kept: u32 = report
        .results
        .iter()
        .filter(|g| !failed.contains(&g.check.id) && g.earned().is_some())
        .map(|g| g.check.points)
        .sum();
    assert_eq!(report.points(), kept, "{table}");
    assert!(report.score() <= kept, "{table}");
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

/// Why `threads/fork` may fail on an allocator that never reuses memory.
const NEVER_FREES_AND_FORKS: &str = "never reusing, the heap of the four allocating threads \
    grows for as long as the 40 forks take: on a loaded machine the probe can run out of time \
    or memory";

/// Reuse is phase 1's subject: without it the phase is not passed.
#[test]
fn phase1_never_reuses_loses_the_reuse_check_and_cannot_pass() {
    let report = grade(&broken_lib("never-reuses"), 1);
    assert_fails_exactly(
        &report,
        &["behaviour/reuse"],
        &[("threads/fork", NEVER_FREES_AND_FORKS)],
    );
    assert!(!report.passed(), "{}", report.table());
    assert_eq!(report.score(), report.pass_mark() - 1, "{}", report.table());
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
    assert!(!report.passed(), "{}", report.table());
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
    let dir = scratch();
    let class = dir.path().join("class");
    write_student_crate(&class.join("carol"), "carol-malloc");

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

/// broken/no-double-free-check as a crate of its own named `package`, outside the
/// workspace, in `student`.
fn write_student_crate(student: &Path, package: &str) {
    let root = phases::workspace_root();
    std::fs::create_dir_all(student.join("src")).unwrap();
    let source =
        std::fs::read_to_string(root.join("harness/broken/no-double-free-check/src/lib.rs"))
            .unwrap();
    std::fs::write(student.join("src/lib.rs"), source).unwrap();
    std::fs::write(
        student.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
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

// ---------------------------------------------------------------------------------
// Allocators written in C, as students write them (`harness/broken/c/`).

/// The C allocators: output name, source file, and the defines that break it.
const C_ALLOCATORS: &[(&str, &str, &[&str])] = &[
    ("student", "student.c", &[]),
    ("align8", "student.c", &["-DALIGN=8"]),
    ("bump", "student.c", &["-DNEVER_FREE"]),
    ("calloc-wraps", "student.c", &["-DCALLOC_NO_OVERFLOW"]),
    ("only-four", "student.c", &["-DONLY_FOUR"]),
    ("spin-in-calloc", "student.c", &["-DSPIN_IN_CALLOC"]),
    (
        "spin-in-usable-size",
        "student.c",
        &["-DSPIN_IN_USABLE_SIZE"],
    ),
    ("forward-libc", "forward_libc.c", &[]),
    ("forward-dlsym", "forward_dlsym.c", &["-ldl"]),
];

/// The C allocator `name` of [`C_ALLOCATORS`], built with gcc (all of them, once per
/// test process) into `target/broken-c/libNAME.so`.
fn c_lib(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let sources = phases::workspace_root().join("harness/broken/c");
        let out = phases::target_dir().join("broken-c");
        std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
        for (lib, source, defines) in C_ALLOCATORS {
            // Each test process builds into its own file, then renames it into place:
            // test binaries running side by side never see a half-written library.
            let target = out.join(format!("lib{lib}.so"));
            let partial = out.join(format!("lib{lib}.so.{}", std::process::id()));
            let status = Command::new("gcc")
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
                .arg(&partial)
                .arg(sources.join(source))
                .args(*defines)
                .arg("-lpthread")
                .status()
                .map_err(|e| format!("cannot run gcc: {e}"))?;
            if !status.success() {
                return Err(format!("gcc failed on {source} {defines:?}"));
            }
            std::fs::rename(&partial, &target).map_err(|e| e.to_string())?;
        }
        Ok(out)
    });
    match built {
        Ok(out) => out.join(format!("lib{name}.so")),
        Err(problem) => panic!("cannot build the C allocators: {problem}"),
    }
}

/// Grades the checks of groups `only` with each check limited to `limit` (all of its
/// programs together).
fn grade_within(
    lib: &Path,
    phase: u32,
    only: &[&str],
    limit: std::time::Duration,
) -> (Report, Options) {
    build();
    let tools = checks::release_tools();
    grade::validate(lib, &tools).unwrap_or_else(|problem| panic!("{problem}"));
    let mut options = Options::new(phase);
    options.skip_timing = true;
    options.check_limit = limit;
    options.only = only.iter().map(|s| s.to_string()).collect();
    let report =
        grade::grade(lib, &tools, &options, &|_| {}).unwrap_or_else(|problem| panic!("{problem}"));
    (report, options)
}

/// The processes that have `lib` mapped: what a grade must not leave behind.
fn processes_mapping(lib: &Path) -> Vec<String> {
    let lib = lib.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("maps")).is_ok_and(|maps| maps.contains(&lib))
        })
        .map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect()
}

#[test]
fn phase1_a_correct_c_allocator_gets_every_check() {
    let report = grade(&c_lib("student"), 1);
    assert_fails_exactly(&report, &[], &[]);
    assert!(report.missing.is_empty(), "{}", report.table());
}

#[test]
fn phase1_c_align8_loses_the_alignment_check() {
    let report = grade(&c_lib("align8"), 1);
    assert_fails_exactly(&report, &["api/alignment"], &[]);
    assert!(report.passed());
}

/// A bump allocator passes most checks (programs are short), but reuse is the
/// subject of phase 1: it cannot pass.
#[test]
fn phase1_c_bump_allocator_cannot_pass() {
    let report = grade(&c_lib("bump"), 1);
    assert_fails_exactly(
        &report,
        &[
            "behaviour/reuse",
            "misuse/double-free",
            "misuse/invalid-free",
        ],
        &[("threads/fork", NEVER_FREES_AND_FORKS)],
    );
    assert!(!report.passed(), "{}", report.table());
    assert!(report.score() < report.pass_mark());
    assert!(
        report
            .summary()
            .contains("capped under the pass mark because a core check failed: behaviour/reuse"),
        "{}",
        report.summary()
    );
}

/// `(SIZE_MAX/16 + 2) * 16` wraps to 16: only a checked multiplication notices.
#[test]
fn phase1_c_calloc_without_overflow_check_loses_the_calloc_check() {
    let report = grade(&c_lib("calloc-wraps"), 1);
    assert_fails_exactly(&report, &["api/calloc"], &[]);
    let note = report.note_of(report.result("api/calloc").unwrap());
    assert!(note.contains("SIZE_MAX/16 + 2, 16"), "{note}");
}

/// glibc's `memalign` and `malloc_usable_size` run on the student's blocks: the
/// failures say which function is missing and what that causes.
#[test]
fn phase1_c_library_exporting_four_functions_is_told_what_is_missing() {
    let report = grade(&c_lib("only-four"), 1);
    assert_fails_exactly(&report, &["api/memalign", "api/usable-size"], &[]);
    let missing: Vec<&str> = report.missing.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        missing,
        [
            "posix_memalign",
            "aligned_alloc",
            "memalign",
            "valloc",
            "pvalloc",
            "malloc_usable_size",
            "reallocarray"
        ]
    );
    let usable = report.note_of(report.result("api/usable-size").unwrap());
    assert!(
        usable.contains("does not export malloc_usable_size: glibc's runs on your blocks"),
        "{usable}"
    );
    let memalign = report.note_of(report.result("api/memalign").unwrap());
    assert!(
        memalign.contains("does not export posix_memalign, aligned_alloc, memalign"),
        "{memalign}"
    );
    // The crash names its step and the commands that run it alone.
    let lines = report
        .result("api/usable-size")
        .unwrap()
        .reproduction(&report.lib, 1);
    let text = lines.join("\n");
    assert!(
        text.contains("in the step `")
            && text.contains("alloc_probe usable-size`, which crashed with SIGSEGV"),
        "{text}"
    );
    assert!(text.contains("run it alone: LD_PRELOAD="), "{text}");
    assert!(
        text.contains("gdb -q -ex 'set startup-with-shell off'"),
        "{text}"
    );
    assert!(report.table().contains("run it alone: LD_PRELOAD="));
}

/// Blocks from glibc's malloc (by its internal name, or by dlsym): zero, and why.
#[test]
fn phase2_c_allocators_that_forward_to_glibc_score_zero() {
    for name in ["forward-libc", "forward-dlsym"] {
        let report = grade(&c_lib(name), 2);
        assert_eq!(
            report.ids("FAIL")[0],
            "api/own-memory",
            "{}",
            report.table()
        );
        assert!(
            report.points() > report.max_score() / 2,
            "{}",
            report.table()
        );
        assert_eq!(report.score(), 0, "{}", report.table());
        assert!(
            report.summary().contains("0 because api/own-memory failed"),
            "{}",
            report.summary()
        );
        let note = report.note_of(report.result("api/own-memory").unwrap());
        assert!(note.contains("glibc's own heap"), "{note}");
    }
}

/// A library whose function never returns costs the checks that call it, no more:
/// the grade ends within the rubric's time limit, and no process of it remains.
/// (The api and misuse checks only, with a short limit, to keep the suite short; the
/// whole rubric behaves the same, see the grading chapter.)
#[test]
fn phase1_c_allocator_spinning_in_a_function_costs_only_its_checks() {
    let lib = c_lib("spin-in-usable-size");
    let limit = std::time::Duration::from_secs(8);
    let started = std::time::Instant::now();
    let (report, options) = grade_within(&lib, 1, &["api", "misuse"], limit);
    let took = started.elapsed();
    assert!(
        took < options.time_limit(),
        "{took:?} is over {:?}",
        options.time_limit()
    );
    assert_fails_exactly(&report, &["api/usable-size", "api/memalign"], &[]);
    for id in report.ids("FAIL") {
        let note = report.note_of(report.result(id).unwrap());
        assert!(note.contains("timed out after 8 s"), "{id}: {note}");
    }
    let left = processes_mapping(&lib);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// glibc calls calloc as every program starts: nothing can run, said in one line.
#[test]
fn a_library_spinning_in_calloc_is_refused_and_leaves_nothing_running() {
    build();
    let lib = c_lib("spin-in-calloc");
    let problem = grade::validate(&lib, &checks::release_tools()).unwrap_err();
    assert!(problem.contains("hangs before it starts"), "{problem}");
    let left = processes_mapping(&lib);
    assert!(left.is_empty(), "left running: {left:?}");
}

/// SIGTERM (or ^C) to the grader ends what it started.
#[test]
fn an_interrupted_grader_leaves_nothing_running() {
    let lib = c_lib("spin-in-usable-size");
    // A copy of its own, so that no other test's processes count.
    let dir = scratch();
    let copy = dir.path().join("libspin-interrupted.so");
    std::fs::copy(&lib, &copy).unwrap();
    let mut grader = harness()
        .args([
            "grade",
            "--phase",
            "1",
            "--only",
            "api/usable-size",
            "--lib",
        ])
        .arg(&copy)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the probe hangs under the library, then interrupt the grader.
    let started = std::time::Instant::now();
    while processes_mapping(&copy).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the probe never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill only sends a signal to our own child.
    unsafe { libc::kill(grader.id() as i32, libc::SIGTERM) };
    let status = grader.wait().unwrap();
    assert!(!status.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left = processes_mapping(&copy);
    assert!(left.is_empty(), "left running: {left:?}");
}

// ---------------------------------------------------------------------------------
// A class at once, the rules table, and Gradescope.

/// Each submission gets its feedback beside the CSV, and a second grading of the
/// class gives the same scores.
#[test]
fn phase1_a_class_gets_feedback_files_and_the_same_scores_twice() {
    let dir = scratch();
    let class = dir.path().join("class");
    std::fs::create_dir_all(class.join("carol")).unwrap();
    std::fs::copy(c_lib("student"), class.join("alice.so")).unwrap();
    std::fs::copy(c_lib("forward-libc"), class.join("bob.so")).unwrap();
    // Carol hands in C sources: built with gcc.
    std::fs::copy(
        phases::workspace_root().join("harness/broken/c/student.c"),
        class.join("carol/malloc.c"),
    )
    .unwrap();
    let grade_class = |csv: &Path| {
        run(harness()
            .args([
                "grade",
                "--phase",
                "1",
                "--only",
                "api/own-memory,api/alignment,misuse",
                "--dir",
            ])
            .arg(&class)
            .arg("--csv")
            .arg(csv))
    };
    let (first, second) = (dir.path().join("first.csv"), dir.path().join("second.csv"));
    let ran = grade_class(&first);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let text = std::fs::read_to_string(&first).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..],
        [
            "alice.so,13,13,,,0,5,4,4",
            "bob.so,0,13,api/own-memory misuse/double-free misuse/invalid-free,,0,5,0,0",
            "carol,13,13,,,0,5,4,4",
        ],
        "{text}"
    );
    let feedback = dir.path().join("first-feedback");
    let table = std::fs::read_to_string(feedback.join("bob.so.txt")).unwrap();
    assert!(table.contains("0 because api/own-memory failed"), "{table}");
    let json =
        Json::parse(&std::fs::read_to_string(feedback.join("bob.so.json")).unwrap()).unwrap();
    assert_eq!(json.get("score"), Some(&Json::Number(0.0)));
    assert!(feedback.join("carol.txt").is_file() && feedback.join("alice.so.json").is_file());
    let ran = grade_class(&second);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(std::fs::read_to_string(&second).unwrap(), text);
}

/// `docs/src/grading.md` shows the table of rules between two markers; it must be
/// what `harness grade --list-rules` prints on this machine (regenerate it with that
/// command). It runs every check under glibc, so it also shows what the course asks
/// beyond glibc.
#[test]
fn the_rules_table_in_the_book_is_current() {
    build();
    let page = phases::workspace_root().join("docs/src/grading.md");
    let text = std::fs::read_to_string(&page).expect("docs/src/grading.md exists");
    let begin = "<!-- harness grade --list-rules: begin -->\n";
    let end = "<!-- harness grade --list-rules: end -->";
    let start = text.find(begin).expect("the begin marker") + begin.len();
    let stop = text[start..].find(end).expect("the end marker") + start;
    let generated =
        grade::rules_table(&checks::release_tools()).unwrap_or_else(|problem| panic!("{problem}"));
    // What glibc does is this machine's: the rows must match, and those the course
    // decided against glibc on purpose must say so on any machine.
    for id in [
        "api/own-memory",
        "misuse/double-free",
        "misuse/invalid-free",
    ] {
        let row = generated
            .lines()
            .find(|l| l.starts_with(&format!("| `{id}`")))
            .unwrap();
        assert!(row.contains("| fails"), "{row}");
    }
    assert_eq!(
        &text[start..stop],
        generated,
        "docs/src/grading.md's table of rules is out of date: replace it with \
         `cargo run --release -p harness --bin harness -- grade --list-rules`"
    );
}

/// `harness gradescope` writes an autograder whose `run_autograder`, run in a fake
/// `/autograder` tree, grades each kind of upload and writes Gradescope's fields.
#[test]
fn phase1_the_gradescope_autograder_grades_c_rust_and_so_uploads() {
    let dir = scratch();
    let package = dir.path().join("package");
    let ran = run(harness()
        .args(["gradescope", "--phase", "1", "--out"])
        .arg(&package));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for file in [
        "setup.sh",
        "run_autograder",
        "mymalloc/Cargo.toml",
        "mymalloc/phases/preload-kit/Cargo.toml",
    ] {
        assert!(package.join(file).is_file(), "{file} is missing");
    }
    let setup = std::fs::read_to_string(package.join("setup.sh")).unwrap();
    assert!(setup.contains("apt-get install") && setup.contains("cargo build --release"));

    let harness_binary = assert_cmd::cargo::cargo_bin("harness");
    let root_of = |name: &str| {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("submission")).unwrap();
        let source = root.join("source");
        std::fs::create_dir_all(&source).unwrap();
        root
    };
    let autograde = |root: &Path| {
        let output = Command::new(package.join("run_autograder"))
            .args(["--only", "api/own-memory,api/alignment,misuse/double-free"])
            .env("AUTOGRADER_ROOT", root)
            .env("MYMALLOC_HARNESS", &harness_binary)
            .current_dir(phases::workspace_root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        let text = std::fs::read_to_string(root.join("results/results.json"))
            .unwrap_or_else(|e| panic!("no results.json ({e}): {stderr}"));
        Json::parse(&text).unwrap()
    };
    let check_fields = |results: &Json, score: f64| {
        assert_eq!(
            results.get("score"),
            Some(&Json::Number(score)),
            "{results}"
        );
        let tests = results.get("tests").and_then(Json::as_array).unwrap();
        assert_eq!(tests.len(), 3, "{results}");
        for test in tests {
            for field in [
                "name",
                "score",
                "max_score",
                "output",
                "visibility",
                "execution_time",
            ] {
                assert!(test.get(field).is_some(), "{field} missing in {test}");
            }
        }
    };

    // C with *.c files.
    let c = root_of("c");
    std::fs::copy(
        phases::workspace_root().join("harness/broken/c/student.c"),
        c.join("submission/malloc.c"),
    )
    .unwrap();
    check_fields(&autograde(&c), 9.0);

    // C with a Makefile: the bump allocator, which keeps its double-free silent.
    let make = root_of("make");
    std::fs::copy(
        phases::workspace_root().join("harness/broken/c/student.c"),
        make.join("submission/student.c"),
    )
    .unwrap();
    std::fs::write(
        make.join("submission/Makefile"),
        "libbump.so: student.c\n\tgcc -shared -fPIC -O2 -DNEVER_FREE -o $@ $< -lpthread\n",
    )
    .unwrap();
    check_fields(&autograde(&make), 5.0);

    // A prebuilt .so that forwards to glibc: 0, and why.
    let so = root_of("so");
    std::fs::copy(c_lib("forward-dlsym"), so.join("submission/libmine.so")).unwrap();
    let results = autograde(&so);
    check_fields(&results, 0.0);
    let output = results.get("output").and_then(Json::as_str).unwrap();
    assert!(output.contains("api/own-memory failed"), "{output}");

    // A Rust crate: broken/no-double-free-check as a crate of its own.
    let rust = root_of("rust");
    write_student_crate(&rust.join("submission"), "dana-malloc");
    check_fields(&autograde(&rust), 5.0);

    // C that does not compile: score 0 with the compiler's words.
    let bad = root_of("bad");
    std::fs::write(
        bad.join("submission/malloc.c"),
        "void *malloc(unsigned long n) { return n +; }\n",
    )
    .unwrap();
    let results = autograde(&bad);
    assert_eq!(results.get("score"), Some(&Json::Number(0.0)));
    let output = results.get("output").and_then(Json::as_str).unwrap();
    assert!(
        output.contains("does not build") && output.contains("error"),
        "{output}"
    );
}
