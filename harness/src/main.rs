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
/// a student's own allocator, then the grader, then the book's generators.
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
usage: harness bench [--reps N] [--quick] [--only A,B,...] [--timeout S] [--out FILE]
  --reps N       repetitions of each run, interleaved (default 3; --quick: 1); the
                 report gives medians and spreads, and ratios to glibc paired by
                 repetition (the median of each repetition's ratio)
  --quick        tiny workloads, one malloc-lab and one recorded trace: a smoke test
  --only A,B     only the workloads and allocators whose names contain A or B
                 (e.g. larson,phase2); glibc always runs, as the reference
  --timeout S    stop a run after S seconds and report it as a timeout (default 20;
                 --quick: 10)
  --out FILE     where to write the report (default docs/benchmarks.md); the charts
                 go to src/bench/ beside it",
        main: bench,
    },
    Subcommand {
        name: "record",
        summary: "record a program's allocation calls as a threaded trace (harness/traces/recorded/)",
        usage: "\
usage: harness record --out FILE.trc -- CMD [ARGS...]
  runs CMD with the malloc-recorder preload (served by glibc's allocator) and writes the
  calls of its busiest process, thread by thread; `bench_alloc --trace FILE.trc` replays it",
        main: record,
    },
    Subcommand {
        name: "traces",
        summary: "write the generated trace suite (harness/traces/)",
        usage: "usage: harness traces --out DIR",
        main: traces,
    },
    Subcommand {
        name: "gen-traces",
        summary: "write generated traces of shapes the suite does not have, for any seeds",
        usage: "\
usage: harness gen-traces [--shapes A,B,...] [--seeds N] [--first-seed K] --out DIR
  writes DIR/SHAPE_SEED.rep for every shape and seeds K..K+N-1: the same file for the
  same shape and seed, on every machine (harness::generate says what each shape models)
  --shapes A,B    only these shapes (default: all twenty; a wrong name lists them)
  --seeds N       how many seeds (default 5)
  --first-seed K  the first seed (default 1)
  --out DIR       where to write them (created if missing)",
        main: gen_traces,
    },
    Subcommand {
        name: "compare-traces",
        summary: "compare allocators' utilization with glibc's on a folder of traces",
        usage: "\
usage: harness compare-traces DIR (--phase N | --lib PATH.so)... [--variants N]
  replays every trace in DIR (.rep, .trc) once under glibc's allocator and once under
  each allocator named, and prints their utilization (peak live payload over peak
  footprint, exact to about a page: a replay gives the same figure every time) trace
  by trace, then by shape (DIR/NAME_SEED.rep is of shape NAME), with how often each
  allocator was under glibc. Times are for `harness bench`, which repeats its runs.
  --phase N      phase N's .so (built first); may be given more than once
  --lib PATH.so  any allocator; may be given more than once
  --variants N   replay N variants of each trace (default 1): the trace, and N - 1
                 with one stray 48-byte block each (`bench_alloc --variant V`), and
                 compare medians. On traces of few large blocks (realloc_buffers,
                 large_mix) one block more moves any allocator's figure by up to 20
                 points: one replay is one draw; 5 or more variants show the spread
  e.g.: harness gen-traces --seeds 5 --out /tmp/unseen
        harness compare-traces /tmp/unseen --phase 4 --variants 5",
        main: compare_traces,
    },
    Subcommand {
        name: "new",
        summary: "write a starter for your own allocator (a Rust crate, or C with --lang c)",
        usage: NEW_USAGE,
        main: new,
    },
    Subcommand {
        name: "check",
        summary: "build your allocator and run a phase's stages on it, up to the first failure",
        usage: CHECK_USAGE,
        main: check,
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
        name: "bench-quotes",
        summary: "rewrite the benchmark rows the chapters quote from docs/benchmarks.md",
        usage: "\
usage: harness bench-quotes
  Rewrites each row that a page of docs/src quotes from docs/benchmarks.md with the
  report's row (`harness bench` does this after writing the report); exits 1 when a
  quoted table or row is no longer in the report.",
        main: bench_quotes,
    },
    Subcommand {
        name: "phase-diff",
        summary: "write the diff from the previous phase to phase N that its chapter shows (docs/src/)",
        usage: "\
usage: harness phase-diff --phase N
  --phase N  a phase whose chapter shows the diff from the phase before
             (diff_from_previous in `harness phases N`: the pairs of files or
             folders it compares)",
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

/// `harness compare-traces DIR (--phase N | --lib PATH.so)...`: see [`harness::compare`].
fn compare_traces(args: &[String]) -> ExitCode {
    let mut dir: Option<PathBuf> = None;
    // Each allocator asked for: its library, and for a phase, its name.
    let mut asked: Vec<(PathBuf, Option<String>)> = Vec::new();
    let mut variants = 1u32;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let allocator = match arg.as_str() {
            "--variants" => match rest.next().map(|n| n.parse::<u32>()) {
                Some(Ok(n)) if n > 0 => {
                    variants = n;
                    continue;
                }
                _ => {
                    return usage_error(
                        "compare-traces",
                        "--variants needs a whole number above 0",
                    );
                }
            },
            "--phase" => match rest.next().map(|n| phases::parse(n)) {
                Some(Ok(phase)) => (phase.lib_path(), Some(phase.package.to_string())),
                Some(Err(problem)) => return usage_error("compare-traces", &problem),
                None => return usage_error("compare-traces", "--phase needs a phase number"),
            },
            "--lib" => match rest.next() {
                Some(path) => (PathBuf::from(path), None),
                None => return usage_error("compare-traces", "--lib needs a path to a .so"),
            },
            other if other.starts_with('-') => {
                return usage_error("compare-traces", &format!("unknown argument {other:?}"));
            }
            folder if dir.is_none() => {
                dir = Some(PathBuf::from(folder));
                continue;
            }
            other => {
                return usage_error("compare-traces", &format!("one folder only: {other:?}"));
            }
        };
        asked.push(allocator);
    }
    let Some(dir) = dir else {
        return usage_error("compare-traces", "say which folder of traces: DIR");
    };
    if asked.is_empty() {
        return usage_error(
            "compare-traces",
            "say which allocators: --phase N or --lib PATH.so",
        );
    }
    let traces = match harness::compare::traces_in(&dir) {
        Ok(traces) if traces.is_empty() => {
            eprintln!("harness: no .rep or .trc files in {}", dir.display());
            return ExitCode::from(2);
        }
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("harness: cannot read {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    };
    // The phases' libraries and bench_alloc, which replays the traces.
    if let Err(problem) = phases::build_all() {
        eprintln!("harness: {problem}");
        return ExitCode::from(2);
    }
    let mut contenders = vec![harness::bench::Contender::glibc()];
    for (lib, name) in asked {
        if !lib.is_file() {
            eprintln!("harness: {} does not exist", lib.display());
            return ExitCode::from(2);
        }
        // A library is called by its file name: libfoo.so.2 is foo.
        let name = name.unwrap_or_else(|| {
            let file = lib.file_name().map_or_else(
                || lib.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            );
            let file = file.strip_prefix("lib").unwrap_or(&file);
            file.split(".so").next().unwrap_or(file).to_string()
        });
        contenders.push(harness::bench::Contender {
            name,
            lib: Some(lib.canonicalize().unwrap_or(lib)),
            env: Vec::new(),
        });
    }
    let total = traces.len() * contenders.len() * variants as usize;
    let mut done = 0;
    let (rows, problems) = harness::compare::measure(&traces, &contenders, variants, |what| {
        done += 1;
        eprintln!("harness compare-traces: [{done}/{total}] {what}");
    });
    let names: Vec<String> = contenders.iter().map(|c| c.name.clone()).collect();
    print!("{}", harness::compare::render(&names, &rows, variants));
    for problem in &problems {
        eprintln!("harness compare-traces: {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
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

/// Writes generated traces of the shapes of `harness::generate`, one file per shape and
/// seed, with one line each on stderr (operations, ids, peak payload).
fn gen_traces(args: &[String]) -> ExitCode {
    let mut shapes: Vec<&harness::generate::Shape> = harness::generate::SHAPES.iter().collect();
    let (mut seeds, mut first) = (5u64, 1u64);
    let mut out: Option<PathBuf> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--shapes" => {
                let Some(list) = rest.next() else {
                    return usage_error("gen-traces", "--shapes needs names, e.g. pow2,bimodal");
                };
                let chosen: Option<Vec<_>> =
                    list.split(',').map(harness::generate::shape).collect();
                let Some(chosen) = chosen else {
                    let names: Vec<&str> =
                        (harness::generate::SHAPES.iter()).map(|s| s.name).collect();
                    return usage_error(
                        "gen-traces",
                        &format!("unknown shape in {list:?}; the shapes: {}", names.join(",")),
                    );
                };
                shapes = chosen;
            }
            "--seeds" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => seeds = n,
                _ => return usage_error("gen-traces", "--seeds needs a whole number above 0"),
            },
            "--first-seed" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) => first = n,
                None => return usage_error("gen-traces", "--first-seed needs a whole number"),
            },
            "--out" => match rest.next() {
                Some(dir) => out = Some(PathBuf::from(dir)),
                None => return usage_error("gen-traces", "--out needs a folder"),
            },
            other => return usage_error("gen-traces", &format!("unknown argument {other:?}")),
        }
    }
    let Some(out) = out else {
        return usage_error("gen-traces", "say where to write them: --out DIR");
    };
    let Some(last) = first.checked_add(seeds - 1) else {
        return usage_error(
            "gen-traces",
            "--first-seed plus --seeds is past the last seed",
        );
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("harness: cannot create {}: {e}", out.display());
        return ExitCode::from(2);
    }
    for shape in shapes {
        for seed in first..=last {
            let path = out.join(shape.file_name(seed));
            let trace = shape.generate(seed);
            if let Err(e) = std::fs::write(&path, trace.to_text()) {
                eprintln!("harness: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            eprintln!(
                "{}: {} ops, {} ids, peak payload {:.1} MiB",
                path.display(),
                trace.ops.len(),
                trace.ids,
                trace.heap_hint as f64 / f64::from(1 << 20)
            );
        }
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
                _ => return usage_error("bench", "--reps needs a whole number above 0"),
            },
            "--timeout" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => options.timeout = Duration::from_secs(n),
                _ => {
                    return usage_error(
                        "bench",
                        "--timeout needs a whole number of seconds above 0",
                    );
                }
            },
            "--only" => match rest.next() {
                Some(list) => options.only = list.split(',').map(str::to_string).collect(),
                None => return usage_error("bench", "--only needs names, e.g. larson,phase2"),
            },
            "--quick" => {}
            "--out" => match rest.next() {
                Some(path) => out = PathBuf::from(path),
                None => return usage_error("bench", "--out needs a file"),
            },
            other => return usage_error("bench", &format!("unknown argument {other:?}")),
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
            for (file, svg) in harness::book::pictures::bench_chart::draw(&results) {
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
    // The chapters quote rows of the committed report: when that is the file written,
    // their quotes follow it.
    let report = phases::workspace_root().join(harness::book::bench_quotes::REPORT);
    if std::fs::canonicalize(&out).ok() == std::fs::canonicalize(&report).ok() {
        return write_bench_quotes("harness bench");
    }
    ExitCode::SUCCESS
}

/// Rewrites the rows the chapters quote from docs/benchmarks.md (see
/// `harness::book::bench_quotes`).
fn bench_quotes(args: &[String]) -> ExitCode {
    if let Some(arg) = args.first() {
        return usage_error("bench-quotes", &format!("unknown argument {arg:?}"));
    }
    write_bench_quotes("harness bench-quotes")
}

/// Refreshes the book's quotes of the report; says which pages changed and which
/// quotes it could not refresh (exit 1: the book's test fails on them).
fn write_bench_quotes(who: &str) -> ExitCode {
    let refreshed =
        match harness::book::bench_quotes::refresh_book(harness::book::bench_quotes::REPORT) {
            Ok(refreshed) => refreshed,
            Err(problem) => {
                eprintln!("{who}: {problem}");
                return ExitCode::from(2);
            }
        };
    for page in &refreshed.pages {
        eprintln!("{who}: rewrote the quoted rows in {}", page.display());
    }
    if refreshed.problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "{who}: these quotes of {} are not in it any more; edit them by hand \
         (the book's test, cargo test -p harness --test docs, fails until then):",
        harness::book::bench_quotes::REPORT
    );
    for problem in &refreshed.problems {
        eprintln!("  {problem}");
    }
    ExitCode::from(1)
}

/// Records a command's allocation calls (see `harness::record`).
fn record(args: &[String]) -> ExitCode {
    let [flag, out, dashes, command @ ..] = args else {
        return usage_error("record", "expected --out FILE.trc -- CMD [ARGS...]");
    };
    if flag != "--out" || dashes != "--" {
        return usage_error("record", "expected --out FILE.trc -- CMD [ARGS...]");
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

/// Writes the diff from phase N-1 to phase N (of the sources the registry names) into
/// `docs/src/`, where the chapter on phase N links to it (see `harness::book::phase_diff`).
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
    if !harness::book::phase_diff::shown().any(|shown| shown == to) {
        return usage_error(
            "phase-diff",
            &format!(
                "phase {}'s chapter shows no diff (its registry entry: diff_from_previous)",
                to.number
            ),
        );
    };
    let out = harness::book::phase_diff::file_for(to);
    let written = harness::book::phase_diff::generate(to)
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

/// Writes a starter (see `harness::student::starters`) into a new folder.
fn new(args: &[String]) -> ExitCode {
    let (dir, lang) = match args {
        [dir] => (dir, "rust"),
        [dir, flag, lang] if flag == "--lang" => (dir, lang.as_str()),
        [flag, lang, dir] if flag == "--lang" => (dir, lang.as_str()),
        _ => return usage_error("new", "expected DIR and at most --lang rust|c"),
    };
    if dir.starts_with('-') {
        return usage_error("new", &format!("unknown option {dir:?}"));
    }
    let Some(lang) = harness::student::starters::Lang::parse(lang) else {
        return usage_error("new", "--lang is rust or c");
    };
    let dir = PathBuf::from(dir);
    match harness::student::starters::create(&dir, lang) {
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

/// Builds a submission and runs a phase's stages on it (see `harness::student::stages`).
/// Exit status: 0 every stage passed, 1 a stage failed (or the build did), 2 bad use.
fn check(args: &[String]) -> ExitCode {
    use harness::student::stages::{self, Options, Submission};
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
    submission: &harness::student::stages::Submission,
    options: &harness::student::stages::Options,
    again: &str,
) -> ExitCode {
    use harness::student::stages;
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
