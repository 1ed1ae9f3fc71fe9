//! `harness`: run any command under a phase's (or any) allocator `.so`.
//!
//! ```text
//! harness run --phase N -- CMD ARGS...     CMD under phase N's .so (built if needed)
//! harness run --lib PATH.so -- CMD ARGS... CMD under any allocator
//! harness demo [--phase N]                 build phase N, run the demo and `ls -la` under it
//! harness traces --out DIR                 write the generated trace suite (harness/traces/)
//! harness record --out FILE.trc -- CMD...  record CMD's allocation calls as a threaded trace
//! harness bench [--reps N] [--quick] [--only A,B] [--timeout S] [--out FILE]
//!                                          benchmark report (docs/benchmarks.md)
//! harness pictures --out DIR               the book's heap maps and footprint chart (SVG)
//! harness grade --lib PATH.so --phase N    grade any allocator on phase N's rubric
//! harness grade --dir FOLDER --phase N     grade a folder of submissions (`harness grade -h`)
//! harness phase-diff --phase N             write docs/src/phase(N-1)-to-phaseN.diff
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
        Some("record") => record(&args[1..]),
        Some("phase-diff") => phase_diff(&args[1..]),
        Some("pictures") => pictures(&args[1..]),
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
/// docs/benchmarks.md, its charts into docs/src/bench/). Progress goes to stderr.
fn bench(args: &[String]) -> ExitCode {
    let quick = args.iter().any(|a| a == "--quick");
    let mut options = harness::bench::Options::new(quick);
    let mut out = phases::workspace_root().join("docs/benchmarks.md");
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--reps" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.reps = n,
                _ => return usage_error("--reps needs a whole number above 0"),
            },
            "--timeout" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.timeout = Duration::from_secs(n),
                _ => return usage_error("--timeout needs a whole number of seconds above 0"),
            },
            "--only" => match rest.next() {
                Some(list) => options.only = list.split(',').map(str::to_string).collect(),
                None => return usage_error("--only needs names, e.g. larson,phase2"),
            },
            "--quick" => {}
            "--out" => match rest.next() {
                Some(path) => out = PathBuf::from(path),
                None => return usage_error("--out needs a file"),
            },
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let started = std::time::Instant::now();
    let results = match harness::bench::run(&options, |line| eprintln!("harness bench: {line}")) {
        Ok(results) => results,
        Err(problem) => {
            eprintln!("harness: {problem}");
            return ExitCode::from(2);
        }
    };
    // The charts go beside the report: docs/benchmarks.md -> docs/src/bench/.
    let folder = out
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let charts = folder.join("src/bench");
    let report = results.render(&harness::bench::describe_machine(), "src/bench");
    let written = std::fs::create_dir_all(&charts)
        .and_then(|()| std::fs::write(&out, &report))
        .and_then(|()| {
            for (file, svg) in harness::pictures::bench_chart::draw(&results) {
                std::fs::write(charts.join(file), svg)?;
            }
            Ok(())
        });
    if let Err(e) = written {
        eprintln!("harness: cannot write {}: {e}", out.display());
        return ExitCode::from(2);
    }
    eprintln!(
        "harness bench: wrote {} and its charts in {} ({:.0} s)",
        out.display(),
        charts.display(),
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// Records a command's allocation calls (see `harness::record`).
fn record(args: &[String]) -> ExitCode {
    let usage = "usage: harness record --out FILE.trc -- CMD [ARGS...]";
    let [flag, out, dashes, command @ ..] = args else {
        return usage_error(usage);
    };
    if flag != "--out" || dashes != "--" {
        return usage_error(usage);
    }
    match harness::record::record(command, std::path::Path::new(out)) {
        Ok(summary) => {
            eprintln!("harness record: {summary}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("harness record: {problem}");
            ExitCode::from(2)
        }
    }
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
