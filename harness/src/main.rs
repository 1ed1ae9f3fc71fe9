//! `harness`: run any command under a phase's (or any) allocator `.so`.
//!
//! ```text
//! harness run --phase N -- CMD ARGS...     CMD under phase N's .so (built if needed)
//! harness run --lib PATH.so -- CMD ARGS... CMD under any allocator
//! harness demo [--phase N]                 build phase N, run the demo and `ls -la` under it
//! harness traces --out DIR                 write the generated trace suite (harness/traces/)
//! harness bench [--reps N] [--quick] [--out FILE]   benchmark report (docs/benchmarks.md)
//! harness pictures --out DIR               the book's heap maps and footprint chart (SVG)
//! harness grade --lib PATH.so --phase N    grade any allocator on phase N's rubric
//! harness grade --dir FOLDER --phase N     grade a folder of submissions (`harness grade -h`)
//! harness phase-diff --phase N             write docs/src/phase(N-1)-to-phaseN.diff
//! harness new DIR [--lang rust|c]          a starter for your own allocator
//! harness check --phase N PATH [--watch]   PATH (crate, C folder or .so), stage by stage
//! ```
//! The command's output passes through; its exit status becomes ours (128 + signal
//! for a crash, as a shell reports it; 124 for a time-out, as `timeout(1)` does).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use harness::phases;
use harness::runner::{Ending, Run};

const USAGE: &str =
    "usage: harness run (--phase N | --lib PATH.so) [--timeout SECONDS] -- CMD [ARGS...]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("demo") => demo(&args[1..]),
        Some("traces") => traces(&args[1..]),
        Some("grade") => harness::grade::cli::main(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("phase-diff") => phase_diff(&args[1..]),
        Some("pictures") => pictures(&args[1..]),
        Some("new") => new(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage_error("expected a subcommand"),
    }
}

fn usage_error(problem: &str) -> ExitCode {
    eprintln!("harness: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn run(args: &[String]) -> ExitCode {
    let mut lib: Option<PathBuf> = None;
    let mut timeout = Duration::from_secs(3600);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--phase" => {
                let number = rest.next().and_then(|n| n.parse().ok());
                let Some(phase) = number.and_then(phases::phase) else {
                    return usage_error("--phase needs the number of a phase (1, 2, 3)");
                };
                if let Err(problem) = phases::build_all() {
                    eprintln!("harness: {problem}");
                    return ExitCode::from(2);
                }
                lib = Some(phase.lib_path());
            }
            "--lib" => match rest.next() {
                Some(path) => lib = Some(PathBuf::from(path)),
                None => return usage_error("--lib needs a path to a .so"),
            },
            "--timeout" => match rest.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(seconds) if seconds > 0.0 => timeout = Duration::from_secs_f64(seconds),
                _ => return usage_error("--timeout needs a number of seconds"),
            },
            "--" => break,
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let Some(lib) = lib else {
        return usage_error("say which allocator: --phase N or --lib PATH.so");
    };
    if !lib.is_file() {
        eprintln!("harness: {} does not exist", lib.display());
        return ExitCode::from(2);
    }
    let lib = lib.canonicalize().unwrap_or(lib);
    let command: Vec<&String> = rest.collect();
    let Some((program, program_args)) = command.split_first() else {
        return usage_error("nothing to run after --");
    };
    let outcome = match Run::new(program.as_str())
        .args(program_args.iter().map(|s| s.as_str()))
        .preload(Some(&lib))
        .timeout(timeout)
        .run()
    {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("harness: cannot run {program}: {e}");
            return ExitCode::from(127);
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(&outcome.stdout);
    let _ = std::io::stderr().write_all(&outcome.stderr);
    match outcome.ending {
        Ending::Exited(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Ending::Signalled(signal) => {
            eprintln!("harness: {program} {outcome}");
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
        Ending::TimedOut(_) => {
            eprintln!("harness: {program} {outcome}");
            ExitCode::from(124)
        }
    }
}

/// The tour a newcomer starts with: build a phase, show its demo (with the debug log),
/// then run a real program on it next to the same program on glibc.
fn demo(args: &[String]) -> ExitCode {
    let number = match args {
        [] => 1,
        [flag, n] if flag == "--phase" => match n.parse() {
            Ok(n) => n,
            Err(_) => return usage_error("--phase needs a number"),
        },
        _ => return usage_error("usage: harness demo [--phase N]"),
    };
    let Some(phase) = phases::phase(number) else {
        return usage_error("no such phase");
    };
    eprintln!("harness: building the phases (cargo build --release)...");
    if let Err(problem) = phases::build_all() {
        eprintln!("harness: {problem}");
        return ExitCode::from(2);
    }
    let lib = phase.lib_path();
    let demo = Run::new(phases::bench_alloc_release())
        .preload(Some(&lib))
        .env("MALLOC_DEBUG", "1")
        .env("MALLOC_DEBUG_SEED", "42")
        .merge_stderr()
        .run();
    let listing = |preload: Option<&std::path::Path>| {
        Run::new("ls")
            .args(["-la", "--time-style=+"])
            .arg(phases::workspace_root())
            .preload(preload)
            .run()
    };
    let (Ok(demo), Ok(on_phase), Ok(on_glibc)) = (demo, listing(Some(&lib)), listing(None)) else {
        eprintln!("harness: could not start bench_alloc or ls");
        return ExitCode::from(2);
    };
    println!(
        "$ MALLOC_DEBUG=1 MALLOC_DEBUG_SEED=42 LD_PRELOAD={} bench_alloc",
        lib.display()
    );
    print!("{}", demo.stdout_text());
    println!(
        "\n$ LD_PRELOAD={} ls -la {}",
        lib.display(),
        phases::workspace_root().display()
    );
    print!("{}", on_phase.stdout_text());
    let same = on_phase.succeeded() && on_phase.stdout == on_glibc.stdout;
    println!(
        "\nls under {}: {} ({}); output {} the output under glibc's malloc.",
        phase.package,
        on_phase,
        if demo.succeeded() {
            "demo ok"
        } else {
            "demo FAILED"
        },
        if same {
            "is identical to"
        } else {
            "DIFFERS from"
        }
    );
    if demo.succeeded() && same {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes every trace of the suite as `DIR/NAME.rep` (malloc-lab's file extension).
fn traces(args: &[String]) -> ExitCode {
    let [flag, dir] = args else {
        return usage_error("usage: harness traces --out DIR");
    };
    if flag != "--out" {
        return usage_error("usage: harness traces --out DIR");
    }
    for (name, about, make) in harness::trace::SUITE {
        let path = std::path::Path::new(dir).join(format!("{name}.rep"));
        let trace = make();
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, trace.to_text()))
        {
            eprintln!("harness: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!(
            "{}: {} operations ({about})",
            path.display(),
            trace.ops.len()
        );
    }
    ExitCode::SUCCESS
}

/// Runs every workload under every allocator and writes the report (by default over
/// docs/benchmarks.md). Progress goes to stderr.
fn bench(args: &[String]) -> ExitCode {
    let mut options = harness::bench::Options {
        reps: 5,
        quick: false,
    };
    let mut out = phases::workspace_root().join("docs/benchmarks.md");
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--reps" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.reps = n,
                _ => return usage_error("--reps needs a whole number above 0"),
            },
            "--quick" => options.quick = true,
            "--out" => match rest.next() {
                Some(path) => out = PathBuf::from(path),
                None => return usage_error("--out needs a file"),
            },
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let results = match harness::bench::run(&options, |line| eprintln!("harness bench: {line}")) {
        Ok(results) => results,
        Err(problem) => {
            eprintln!("harness: {problem}");
            return ExitCode::from(2);
        }
    };
    let report = results.render(&harness::bench::describe_machine());
    if let Err(e) = std::fs::write(&out, &report) {
        eprintln!("harness: cannot write {}: {e}", out.display());
        return ExitCode::from(2);
    }
    eprintln!("harness bench: wrote {}", out.display());
    ExitCode::SUCCESS
}

/// Draws the book's pictures (see `harness::pictures`) into DIR (docs/src/pictures).
fn pictures(args: &[String]) -> ExitCode {
    let [flag, dir] = args else {
        return usage_error("usage: harness pictures --out DIR");
    };
    if flag != "--out" {
        return usage_error("usage: harness pictures --out DIR");
    }
    eprintln!("harness: building the phases and running bench_alloc under each...");
    let pictures = match harness::pictures::draw_all() {
        Ok(pictures) => pictures,
        Err(problem) => {
            eprintln!("harness: {problem}");
            return ExitCode::from(2);
        }
    };
    if let Err(problem) = harness::pictures::write(&pictures, std::path::Path::new(dir)) {
        eprintln!("harness: {problem}");
        return ExitCode::from(2);
    }
    for picture in &pictures {
        println!("{dir}/{}", picture.file);
    }
    ExitCode::SUCCESS
}

/// Writes the diff of phase N-1's sources to phase N's into `docs/src/`, where the
/// chapter on phase N links to it (see `harness::phase_diff`).
fn phase_diff(args: &[String]) -> ExitCode {
    let usage = "usage: harness phase-diff --phase N (N = 2, 3)";
    let [flag, number] = args else {
        return usage_error(usage);
    };
    let phase = number.parse().ok().and_then(phases::phase);
    let (Some(to), true) = (phase, flag == "--phase") else {
        return usage_error(usage);
    };
    let Some(from) = harness::phase_diff::previous(to) else {
        return usage_error("phase 1 has no phase before it to diff against");
    };
    let out = harness::phase_diff::file_for(to);
    let written = harness::phase_diff::generate(from, to)
        .and_then(|diff| std::fs::write(&out, diff).map_err(|e| e.to_string()));
    match written {
        Ok(()) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("harness: {}: {problem}", out.display());
            ExitCode::from(2)
        }
    }
}

const NEW_USAGE: &str = "usage: harness new DIR [--lang rust|c]";

/// Writes a starter (see `harness::starters`) into a new folder.
fn new(args: &[String]) -> ExitCode {
    let (dir, lang) = match args {
        [dir] => (dir, "rust"),
        [dir, flag, lang] if flag == "--lang" => (dir, lang.as_str()),
        [flag, lang, dir] if flag == "--lang" => (dir, lang.as_str()),
        _ => return usage_error(NEW_USAGE),
    };
    let Some(lang) = harness::starters::Lang::parse(lang) else {
        return usage_error("--lang is rust or c");
    };
    let dir = PathBuf::from(dir);
    match harness::starters::create(&dir, lang) {
        Ok(files) => {
            for file in files {
                println!("created {}", file.display());
            }
            println!(
                "next: harness check --phase 1 {}   (the handout in the book says what to write)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("harness new: {problem}");
            ExitCode::from(2)
        }
    }
}

const CHECK_USAGE: &str = "\
usage: harness check --phase N PATH [--only ID] [--no-timing] [--keep-going] [--watch]
       harness check --list
  PATH          your crate (Cargo.toml), C folder (Makefile) or .so
  --phase N     phase N's stages: its rubric, every earlier phase's checks first
  --only ID     run one stage (e.g. api/alignment)
  --no-timing   leave out the stages that measure time
  --keep-going  run every stage, not only up to the first failure
  --watch       build and check again whenever a file in PATH changes
  --list        print every stage as a Markdown table (the handout's) and exit";

/// Builds a submission and runs a phase's stages on it (see `harness::stages`).
/// Exit status: 0 every stage passed, 1 a stage failed (or the build did), 2 bad use.
fn check(args: &[String]) -> ExitCode {
    use harness::stages::{self, Options, Submission};
    let mut options = Options {
        phase: 0,
        only: None,
        skip_timing: false,
        keep_going: false,
    };
    let mut path: Option<PathBuf> = None;
    let mut watch = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--phase" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if !stages::stages(n).is_empty() => options.phase = n,
                _ => return check_usage("--phase needs the number of a phase"),
            },
            "--only" => match rest.next() {
                Some(id) if harness::checks::CATALOGUE.iter().any(|c| c.id == id) => {
                    options.only = Some(id.clone())
                }
                _ => return check_usage("--only needs the id of a check (api/alignment, ...)"),
            },
            "--no-timing" => options.skip_timing = true,
            "--keep-going" => options.keep_going = true,
            "--watch" => watch = true,
            "--list" => {
                print!("{}", stages::markdown());
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{CHECK_USAGE}");
                return ExitCode::SUCCESS;
            }
            other if other.starts_with('-') => {
                return check_usage(&format!("unknown option {other:?}"));
            }
            other if path.is_none() => path = Some(PathBuf::from(other)),
            other => return check_usage(&format!("one PATH only ({other:?} is a second)")),
        }
    }
    let (Some(path), true) = (path, options.phase > 0) else {
        return check_usage("say which phase (--phase N) and what to check (PATH)");
    };
    let submission = match Submission::find(&path) {
        Ok(submission) => submission,
        Err(problem) => {
            eprintln!("harness check: {problem}");
            return ExitCode::from(2);
        }
    };
    if let Err(problem) = phases::cargo_build_release(&[
        "-p",
        "harness",
        "--bin",
        "bench_alloc",
        "--bin",
        "alloc_probe",
    ]) {
        eprintln!("harness check: cannot build the harness's tools: {problem}");
        return ExitCode::from(2);
    }
    let again = format!("harness check --phase {} {}", options.phase, path.display());
    if !watch {
        return check_once(&submission, &options, &again);
    }
    let mut seen = None;
    loop {
        let change = submission.last_change();
        if change != seen {
            println!("\n=== harness check --watch: {} ===", path.display());
            let _ = check_once(&submission, &options, &again);
            println!("(watching {} for changes; Ctrl-C to stop)", path.display());
            // What the build itself wrote (Cargo.lock) is not a change of the student's.
            seen = submission.last_change();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn check_usage(problem: &str) -> ExitCode {
    eprintln!("harness check: {problem}\n{CHECK_USAGE}");
    ExitCode::from(2)
}

fn check_once(
    submission: &harness::stages::Submission,
    options: &harness::stages::Options,
    again: &str,
) -> ExitCode {
    use harness::stages;
    let lib = match submission.build(options.phase) {
        Ok(lib) => lib,
        Err(problem) => {
            println!("build failed: {problem}");
            return ExitCode::FAILURE;
        }
    };
    let tools = harness::checks::release_tools();
    if let Err(problem) = harness::grade::validate(&lib, &tools) {
        println!("cannot check it: {problem}");
        return ExitCode::FAILURE;
    }
    let scratch = match tempfile_dir() {
        Ok(dir) => dir,
        Err(problem) => {
            eprintln!("harness check: {problem}");
            return ExitCode::from(2);
        }
    };
    let subject = harness::checks::Subject {
        lib: lib.canonicalize().unwrap_or(lib),
        tools,
        scratch: scratch.clone(),
    };
    let total = stages::stages(options.phase).len();
    println!(
        "phase {}: {total} stages, on {}",
        options.phase,
        subject.lib.display()
    );
    let done = stages::run(options, &subject, |stage| {
        println!("{}", stages::progress_line(stage, total));
    });
    let _ = std::fs::remove_dir_all(&scratch);
    let failed: Vec<&stages::Stage> = done
        .iter()
        .filter(|s| matches!(s.verdict, harness::checks::Verdict::Fail(_)))
        .collect();
    for stage in &failed {
        let alone = format!("{again} --only {}", stage.check.id);
        print!("{}", stages::explain(stage, total, &alone));
    }
    if failed.is_empty() {
        println!("every stage run passed ({} of {total})", done.len());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A fresh folder for the checks' files.
fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("mymalloc-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}
