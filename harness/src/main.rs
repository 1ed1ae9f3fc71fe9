//! `harness`: run, check, grade and benchmark allocators, and make the book's generated
//! files. `harness help` lists the subcommands ([`SUBCOMMANDS`], one line each);
//! `harness SUBCOMMAND --help` gives one's usage.
//!
//! `harness run` passes the command's output through, and its exit status becomes ours
//! (128 + signal for a crash, as a shell reports it; 124 for a time-out, as `timeout(1)`
//! does). Every subcommand exits 2 on arguments it does not understand, after printing
//! its usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use harness::phases;
use harness::runner::{Ending, Run};

/// One subcommand: its name, its line in `harness help`, its usage (`--help`), and the
/// function that runs it on the arguments after its name. Adding a subcommand is one
/// entry here.
struct Subcommand {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    main: fn(&[String]) -> ExitCode,
}

/// Every subcommand, in the order `harness help` lists them: what everyone runs, then
/// the grader, then the book's generators.
const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "run",
        summary: "run a command under a phase's allocator or any allocator .so",
        usage: "\
usage: harness run (--phase N | --lib PATH.so) [--timeout SECONDS] -- CMD [ARGS...]
  --phase N          phase N's .so (built first)
  --lib PATH.so      any allocator
  --timeout SECONDS  stop the command after this long (exit 124); default 3600",
        main: run,
    },
    Subcommand {
        name: "demo",
        summary: "build a phase, show its heap step by step, then run ls under it",
        usage: "\
usage: harness demo [--phase N]
  --phase N  the phase to show (default 1)",
        main: demo,
    },
    Subcommand {
        name: "phases",
        summary: "list the registered phases; with N, phase N's entry as key-TAB-value lines",
        usage: "\
usage: harness phases [N]
  (none)  one line per phase: number, .so package, title
  N       phase N's registry entry, one `key<TAB>value` line per field (for scripts)",
        main: list_phases,
    },
    Subcommand {
        name: "bench",
        summary: "benchmark every phase against glibc and others (docs/benchmarks.md)",
        usage: "\
usage: harness bench [--reps N] [--quick] [--out FILE]
  --reps N    repetitions of each run (default 5); the report gives medians
  --quick     small workloads and one trace, for a smoke test
  --out FILE  where to write the report (default docs/benchmarks.md)",
        main: bench,
    },
    Subcommand {
        name: "traces",
        summary: "write the generated trace suite (harness/traces/)",
        usage: "usage: harness traces --out DIR",
        main: traces,
    },
    Subcommand {
        name: "grade",
        summary: "grade any allocator .so, or a folder of them, on a phase's rubric",
        usage: harness::grade::cli::USAGE,
        main: harness::grade::cli::main,
    },
    Subcommand {
        name: "gradescope",
        summary: "write a complete Gradescope autograder for a phase's rubric",
        usage: harness::grade::gradescope::USAGE,
        main: harness::grade::gradescope::main,
    },
    Subcommand {
        name: "pictures",
        summary: "draw the book's heap maps and footprint chart (docs/src/pictures)",
        usage: "usage: harness pictures --out DIR",
        main: pictures,
    },
    Subcommand {
        name: "phase-diff",
        summary: "write the diff of the previous phase's sources to phase N's (docs/src/)",
        usage: "\
usage: harness phase-diff --phase N
  --phase N  a phase whose chapter shows the diff from the phase before
             (diff_from_previous in `harness phases N`)",
        main: phase_diff,
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Interrupted, the harness ends the programs it started before it goes.
    harness::runner::end_children_on_signals();
    let Some(first) = args.first() else {
        print!("{}", overview());
        return ExitCode::SUCCESS;
    };
    match first.as_str() {
        "-h" | "--help" | "help" => help(&args[1..]),
        name => match subcommand(name) {
            Some(sub) if asks_for_help(&args[1..]) => {
                println!("{}", sub.usage);
                ExitCode::SUCCESS
            }
            Some(sub) => (sub.main)(&args[1..]),
            None => {
                eprint!("harness: unknown subcommand {name:?}\n{}", overview());
                ExitCode::from(2)
            }
        },
    }
}

fn subcommand(name: &str) -> Option<&'static Subcommand> {
    SUBCOMMANDS.iter().find(|sub| sub.name == name)
}

/// `-h` or `--help` among a subcommand's own arguments (those before a `--`, after
/// which they belong to the command `harness run` runs).
fn asks_for_help(args: &[String]) -> bool {
    (args.iter())
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "-h" || arg == "--help")
}

/// `harness help [SUBCOMMAND]`.
fn help(args: &[String]) -> ExitCode {
    match args {
        [] => {
            print!("{}", overview());
            ExitCode::SUCCESS
        }
        [name] => match subcommand(name) {
            Some(sub) => {
                println!("{}", sub.usage);
                ExitCode::SUCCESS
            }
            None => {
                eprint!("harness: unknown subcommand {name:?}\n{}", overview());
                ExitCode::from(2)
            }
        },
        _ => {
            eprint!("harness: help takes one subcommand\n{}", overview());
            ExitCode::from(2)
        }
    }
}

/// Every subcommand with its one line.
fn overview() -> String {
    let width = SUBCOMMANDS
        .iter()
        .map(|sub| sub.name.len())
        .max()
        .unwrap_or(0);
    let mut text = String::from(
        "usage: harness SUBCOMMAND [ARGS...]\n\
         (harness SUBCOMMAND --help, or harness help SUBCOMMAND, for its usage)\n\n",
    );
    for sub in SUBCOMMANDS {
        text.push_str(&format!("  {:<width$}  {}\n", sub.name, sub.summary));
    }
    text
}

/// Reports a bad argument to subcommand `name`, with its usage, and exits 2.
fn usage_error(name: &str, problem: &str) -> ExitCode {
    let usage = subcommand(name).map_or("", |sub| sub.usage);
    eprintln!("harness {name}: {problem}\n{usage}");
    ExitCode::from(2)
}

/// `harness phases [N]`: the registry, for people and for scripts (the justfile).
fn list_phases(args: &[String]) -> ExitCode {
    match args {
        [] => {
            for phase in phases::PHASES {
                println!("{}\t{}\t{}", phase.number, phase.package, phase.title);
            }
            ExitCode::SUCCESS
        }
        [number] => match phases::parse(number) {
            Ok(phase) => {
                print!("{}", phase.describe());
                ExitCode::SUCCESS
            }
            Err(problem) => usage_error("phases", &problem),
        },
        _ => usage_error("phases", "expected at most one phase number"),
    }
}

fn run(args: &[String]) -> ExitCode {
    let mut lib: Option<PathBuf> = None;
    let mut timeout = Duration::from_secs(3600);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--phase" => {
                let phase = match rest.next().map(|n| phases::parse(n)) {
                    Some(Ok(phase)) => phase,
                    Some(Err(problem)) => return usage_error("run", &problem),
                    None => return usage_error("run", "--phase needs a phase number"),
                };
                if let Err(problem) = phases::build_all() {
                    eprintln!("harness: {problem}");
                    return ExitCode::from(2);
                }
                lib = Some(phase.lib_path());
            }
            "--lib" => match rest.next() {
                Some(path) => lib = Some(PathBuf::from(path)),
                None => return usage_error("run", "--lib needs a path to a .so"),
            },
            "--timeout" => match rest.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(seconds) if seconds > 0.0 => timeout = Duration::from_secs_f64(seconds),
                _ => return usage_error("run", "--timeout needs a number of seconds"),
            },
            "--" => break,
            other => return usage_error("run", &format!("unknown argument {other:?}")),
        }
    }
    let Some(lib) = lib else {
        return usage_error("run", "say which allocator: --phase N or --lib PATH.so");
    };
    if !lib.is_file() {
        eprintln!("harness: {} does not exist", lib.display());
        return ExitCode::from(2);
    }
    let lib = lib.canonicalize().unwrap_or(lib);
    let command: Vec<&String> = rest.collect();
    let Some((program, program_args)) = command.split_first() else {
        return usage_error("run", "nothing to run after --");
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
    let phase = match args {
        [] => phases::PHASES[0],
        [flag, n] if flag == "--phase" => match phases::parse(n) {
            Ok(phase) => phase,
            Err(problem) => return usage_error("demo", &problem),
        },
        _ => return usage_error("demo", &format!("unknown arguments {args:?}")),
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
        return usage_error("traces", "expected --out DIR");
    };
    if flag != "--out" {
        return usage_error("traces", &format!("unknown argument {flag:?}"));
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
                _ => return usage_error("bench", "--reps needs a whole number above 0"),
            },
            "--quick" => options.quick = true,
            "--out" => match rest.next() {
                Some(path) => out = PathBuf::from(path),
                None => return usage_error("bench", "--out needs a file"),
            },
            other => return usage_error("bench", &format!("unknown argument {other:?}")),
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

/// Draws the book's pictures (see `harness::book::pictures`) into DIR (docs/src/pictures).
fn pictures(args: &[String]) -> ExitCode {
    let [flag, dir] = args else {
        return usage_error("pictures", "expected --out DIR");
    };
    if flag != "--out" {
        return usage_error("pictures", &format!("unknown argument {flag:?}"));
    }
    eprintln!("harness: building the phases and running bench_alloc under each...");
    let pictures = match harness::book::pictures::draw_all() {
        Ok(pictures) => pictures,
        Err(problem) => {
            eprintln!("harness: {problem}");
            return ExitCode::from(2);
        }
    };
    if let Err(problem) = harness::book::pictures::write(&pictures, std::path::Path::new(dir)) {
        eprintln!("harness: {problem}");
        return ExitCode::from(2);
    }
    for picture in &pictures {
        println!("{dir}/{}", picture.file);
    }
    ExitCode::SUCCESS
}

/// Writes the diff of phase N-1's sources to phase N's into `docs/src/`, where the
/// chapter on phase N links to it (see `harness::book::phase_diff`).
fn phase_diff(args: &[String]) -> ExitCode {
    let [flag, number] = args else {
        return usage_error("phase-diff", "expected --phase N");
    };
    if flag != "--phase" {
        return usage_error("phase-diff", &format!("unknown argument {flag:?}"));
    }
    let to = match phases::parse(number) {
        Ok(phase) => phase,
        Err(problem) => return usage_error("phase-diff", &problem),
    };
    let Some((from, to)) = harness::book::phase_diff::shown().find(|(_, shown)| *shown == to)
    else {
        return usage_error(
            "phase-diff",
            &format!(
                "phase {}'s chapter shows no diff (its registry entry: diff_from_previous)",
                to.number
            ),
        );
    };
    let out = harness::book::phase_diff::file_for(to);
    let written = harness::book::phase_diff::generate(from, to)
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
