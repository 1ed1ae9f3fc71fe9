//! `harness grade`: the command line of the grader.
//!
//! Exit status: 0 whenever grading ran, whatever the score; 2 when it could not
//! (bad arguments, a missing file, a file that is not an allocator `.so`, a folder
//! without submissions, tools that cannot be built), with one line saying why.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Options, batch, checks_markdown, gradescope_refusal};
use crate::phases;

pub const USAGE: &str = "\
usage: harness grade --lib PATH.so --phase N [--json FILE] [OPTIONS]
       harness grade --submission PATH --phase N [--json FILE] [OPTIONS]
       harness grade --dir SUBMISSIONS --phase N [--csv FILE] [OPTIONS]
       harness grade --list-checks [--phase N]
       harness grade --list-rules
  --lib PATH.so   grade one allocator; the table goes to stdout
  --submission PATH  build one submission first, then grade it as --lib does: a
                  .so, a crate (cargo build --release), a folder with a Makefile
                  (make; the .so it leaves) or with *.c files (gcc -shared -fPIC)
  --dir FOLDER    grade every .so, crate folder (built with cargo build --release)
                  and folder holding a .so in FOLDER, each in a scratch folder of its
                  own; progress on stderr
  --phase N       the rubric: phase N's checks and every earlier phase's
                  (`harness phases` lists the phases)
  --json FILE     also write Gradescope's results.json (with --lib, --submission);
                  a submission that cannot be built or graded gets one with score 0
                  saying why
  --csv FILE      also write one row per submission (with --dir), and beside it a
                  folder FILE-feedback/ with each submission's table (NAME.txt) and
                  results.json (NAME.json)
  --only IDS      only these checks, comma-separated ids or groups (api,threads/fork)
  --jobs N        checks run N at a time (default: cores, at most 4); timing checks
                  always run alone
  --no-timing     leave out the checks that measure time
  --check-limit S seconds one check may take, all its programs together (default
                  180); a timing check's retry and a race check's repetitions get
                  their own. A grade ends within this times the number of runs, and
                  whatever the allocator does, no program it ran outlives it (also
                  when the grader is interrupted)
  --list-checks   print the rubric as a Markdown table and exit
  --list-rules    run every check under glibc's own malloc and print the table of
                  rules: each check, what glibc here does with it, and why the course
                  asks it (docs/src/grading.md holds it)

Scoring: each check earns its points or none (perf/traces earns a share: `part`).
api/own-memory is a gate: an allocator whose blocks come from glibc's malloc
scores 0. Each phase has core checks (its subject: behaviour/reuse in phase 1,
split and coalesce in phase 2, mmap-large and the debug mode in phase 3); if one
fails, the score is capped one point under the pass mark (60% of the maximum).
Checks that look for races (threads/*) run up to 3 times and fail if any run does.
A check that failed because a program crashed or hung names that step, the command
that runs it again alone, and the same under gdb.

Exit status: 0 when grading ran, whatever the score; 2 when it could not.";

/// Exit status when the grader cannot run.
const CANNOT_GRADE: u8 = 2;

#[derive(Default)]
struct Args {
    lib: Option<PathBuf>,
    submission: Option<PathBuf>,
    dir: Option<PathBuf>,
    phase: Option<u32>,
    json: Option<PathBuf>,
    csv: Option<PathBuf>,
    only: Vec<String>,
    jobs: Option<usize>,
    no_timing: bool,
    list: bool,
    list_rules: bool,
    check_limit: Option<std::time::Duration>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |what: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs {what}"))
        };
        match arg.as_str() {
            "--lib" => parsed.lib = Some(value("a path to a .so")?.into()),
            "--submission" => parsed.submission = Some(value("a file or folder")?.into()),
            "--dir" => parsed.dir = Some(value("a folder of submissions")?.into()),
            "--json" => parsed.json = Some(value("a file name")?.into()),
            "--csv" => parsed.csv = Some(value("a file name")?.into()),
            "--phase" => {
                let text = value("a phase number")?;
                parsed.phase = Some(phases::parse(&text)?.number);
            }
            "--only" => {
                let ids = value("check ids")?;
                parsed
                    .only
                    .extend(ids.split(',').filter(|s| !s.is_empty()).map(String::from));
            }
            "--jobs" => {
                let text = value("a number")?;
                match text.parse() {
                    Ok(n) if n > 0 => parsed.jobs = Some(n),
                    _ => return Err(format!("--jobs needs a whole number above 0, not {text:?}")),
                }
            }
            "--no-timing" => parsed.no_timing = true,
            "--list-checks" => parsed.list = true,
            "--list-rules" => parsed.list_rules = true,
            "--check-limit" => {
                let text = value("a number of seconds")?;
                match text.parse::<f64>() {
                    Ok(s) if s > 0.0 && s.is_finite() => {
                        parsed.check_limit = Some(std::time::Duration::from_secs_f64(s))
                    }
                    _ => return Err(format!("--check-limit needs seconds above 0, not {text:?}")),
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

fn refuse(problem: &str) -> ExitCode {
    eprintln!("harness grade: {problem}");
    ExitCode::from(CANNOT_GRADE)
}

fn usage_error(problem: &str) -> ExitCode {
    eprintln!("harness grade: {problem}\n{USAGE}");
    ExitCode::from(CANNOT_GRADE)
}

pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse(args) {
        Ok(args) => args,
        Err(problem) => return usage_error(&problem),
    };
    if args.list {
        print!("{}", checks_markdown(args.phase));
        return ExitCode::SUCCESS;
    }
    if args.list_rules {
        return match tools().and_then(|tools| super::rules_table(&tools)) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(problem) => refuse(&problem),
        };
    }
    let Some(phase) = args.phase else {
        return usage_error("say which rubric: --phase N");
    };
    let mut options = Options::new(phase);
    options.only = args.only.clone();
    options.skip_timing = args.no_timing;
    if let Some(jobs) = args.jobs {
        options.jobs = jobs;
    }
    if let Some(limit) = args.check_limit {
        options.check_limit = limit;
    }
    if options.checks().is_empty() {
        return usage_error(&format!(
            "--only {} selects no check of the phase {phase} rubric (see --list-checks)",
            args.only.join(",")
        ));
    }
    if let Some(submission) = &args.submission {
        if args.lib.is_some() || args.dir.is_some() || args.csv.is_some() {
            return usage_error("--submission goes alone (no --lib, --dir or --csv)");
        }
        return grade_submission(submission, args.json.as_deref(), &options);
    }
    match (&args.lib, &args.dir) {
        (Some(lib), None) if args.csv.is_none() => grade_one(lib, args.json.as_deref(), &options),
        (None, Some(dir)) if args.json.is_none() => grade_class(dir, args.csv.as_deref(), &options),
        (Some(_), Some(_)) => usage_error("--lib and --dir exclude each other"),
        (Some(_), None) => usage_error("--csv goes with --dir"),
        (None, Some(_)) => usage_error("--json goes with --lib"),
        (None, None) => usage_error("say what to grade: --lib PATH.so or --dir FOLDER"),
    }
}

/// Builds one submission (see [`batch::classify`]), then grades it as `--lib` does. An
/// upload unpacked into a single folder is looked for inside it too.
fn grade_submission(path: &Path, json: Option<&Path>, options: &Options) -> ExitCode {
    let refuse_with_json = |problem: &str| {
        if let Some(json) = json {
            let _ = std::fs::write(json, gradescope_refusal(options, problem).pretty());
        }
        refuse(problem)
    };
    let only_folder = || {
        let entries: Vec<PathBuf> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        match entries.as_slice() {
            [one] if one.is_dir() => batch::classify(one, options.phase),
            _ => None,
        }
    };
    let Some(source) = batch::classify(path, options.phase).or_else(only_folder) else {
        return refuse_with_json(&format!(
            "{}: no submission found: expected a .so, a Rust crate (Cargo.toml), a Makefile or *.c files",
            path.display()
        ));
    };
    eprintln!("harness grade: building {}", path.display());
    match batch::library(&source, options.phase) {
        Ok(lib) => grade_one(&lib, json, options),
        Err(problem) => refuse_with_json(&format!("the submission does not build: {problem}")),
    }
}

fn grade_one(lib: &Path, json: Option<&Path>, options: &Options) -> ExitCode {
    let tools = match tools() {
        Ok(tools) => tools,
        Err(problem) => return refuse(&problem),
    };
    if let Err(problem) = super::validate(lib, &tools) {
        if let Some(json) = json {
            // The student on Gradescope sees why there is no score.
            let _ = std::fs::write(json, gradescope_refusal(options, &problem).pretty());
        }
        return refuse(&problem);
    }
    let selected = options.checks();
    eprint!(
        "harness grade: {} on the phase {} rubric, {} checks, {} at a time ",
        lib.display(),
        options.phase,
        selected.len(),
        options.jobs
    );
    let report = match super::grade(lib, &tools, options, &|_| eprint!(".")) {
        Ok(report) => report,
        Err(problem) => {
            eprintln!();
            return refuse(&problem);
        }
    };
    eprintln!(" {:.1} s", report.elapsed.as_secs_f64());
    print!("{}", report.table());
    if let Some(json) = json {
        if let Err(e) = std::fs::write(json, report.gradescope().pretty()) {
            return refuse(&format!("cannot write {}: {e}", json.display()));
        }
        eprintln!("harness grade: wrote {}", json.display());
    }
    ExitCode::SUCCESS
}

fn grade_class(dir: &Path, csv: Option<&Path>, options: &Options) -> ExitCode {
    if !dir.is_dir() {
        return refuse(&format!("{}: no such folder", dir.display()));
    }
    let tools = match tools() {
        Ok(tools) => tools,
        Err(problem) => return refuse(&problem),
    };
    let rows = match batch::grade_folder(dir, &tools, options) {
        Ok(rows) => rows,
        Err(problem) => return refuse(&problem),
    };
    print!("{}", batch::summary(&rows));
    if let Some(csv) = csv {
        if let Err(e) = std::fs::write(csv, batch::csv(&rows, options)) {
            return refuse(&format!("cannot write {}: {e}", csv.display()));
        }
        let feedback = batch::feedback_dir(csv);
        if let Err(problem) = batch::write_feedback(&rows, &feedback, options) {
            return refuse(&problem);
        }
        eprintln!(
            "harness grade: wrote {} and {}/",
            csv.display(),
            feedback.display()
        );
    }
    ExitCode::SUCCESS
}

/// The folder with release builds of `alloc_probe` and `bench_alloc`. In the
/// workspace they are (re)built first, as `harness run --phase` builds the phases;
/// a harness binary used elsewhere finds them beside itself.
pub fn tools() -> Result<PathBuf, String> {
    let present = |dir: &Path| {
        ["alloc_probe", "bench_alloc"]
            .iter()
            .all(|t| dir.join(t).is_file())
    };
    if phases::workspace_root().join("Cargo.toml").is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .current_dir(phases::workspace_root())
            .args(["build", "--release", "--quiet", "-p", "harness"])
            .args(["--bin", "alloc_probe", "--bin", "bench_alloc"])
            .output();
        let dir = crate::checks::release_tools();
        match built {
            Ok(output) if output.status.success() => return Ok(dir),
            Ok(output) if present(&dir) => eprintln!(
                "harness grade: warning: could not rebuild the tools, using the ones in {}:\n{}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(e) if present(&dir) => {
                eprintln!(
                    "harness grade: warning: cannot run cargo ({e}); using {}",
                    dir.display()
                )
            }
            Ok(output) => {
                return Err(format!(
                    "cannot build the tools:\n{}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Err(e) => return Err(format!("cannot run cargo to build the tools: {e}")),
        }
        return Ok(dir);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    match beside {
        Some(dir) if present(&dir) => Ok(dir),
        _ => Err("cannot find alloc_probe and bench_alloc (not in a mymalloc workspace, nor beside this binary)".into()),
    }
}
