//! The catalogue of checks: what "this allocator works" means, phase by phase.
//!
//! One list serves two users. The test suite runs, for every reference phase, every
//! check whose `since` is at most that phase (a phase passes all earlier phases'
//! checks: that is the rule, not a copy of tests). The grader runs the same checks on
//! any student's `.so` and adds up their points.
//!
//! Every check runs its program in a separate process under the allocator's preload,
//! with a time limit, and judges only what can be observed from outside the allocator:
//! output, exit codes, the probes' verdicts (see `alloc_probe`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::phases;
use crate::runner::{Outcome, Run};

/// A check's verdict. `Skip` is for checks that cannot run on this machine (a program
/// is not installed) or in this context; it costs no points and earns none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass(String),
    Fail(String),
    Skip(String),
}

/// What a check runs against.
#[derive(Clone, Debug)]
pub struct Subject {
    /// The allocator under test.
    pub lib: PathBuf,
    /// Where the harness's own programs (`bench_alloc`, `alloc_probe`) are.
    pub tools: PathBuf,
    /// A folder the check may fill with files.
    pub scratch: PathBuf,
}

impl Subject {
    pub fn tool(&self, name: &str) -> PathBuf {
        self.tools.join(name)
    }

    /// A run of `program` under the allocator being checked.
    pub fn under_test(&self, program: impl AsRef<std::ffi::OsStr>) -> Run {
        Run::new(program.as_ref())
            .preload(Some(&self.lib))
            .timeout(Duration::from_secs(30))
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Area {
    Api,
    Programs,
    Threads,
    Misuse,
    Behaviour,
    Performance,
}

pub struct Check {
    /// Stable name, e.g. `api/alignment`.
    pub id: &'static str,
    /// What it shows, for people.
    pub title: &'static str,
    pub area: Area,
    /// The first phase whose rubric includes it.
    pub since: u32,
    pub points: u32,
    /// Measures time: graded, but never asserted in the test suite (shared machines
    /// are noisy; speed is reported by the benchmarks instead).
    pub timing: bool,
    pub run: fn(&Subject) -> Verdict,
}

/// The checks of phase `phase`'s rubric: its own and every earlier phase's.
pub fn rubric(phase: u32) -> impl Iterator<Item = &'static Check> {
    CATALOGUE.iter().filter(move |check| check.since <= phase)
}

pub fn run_check(check: &Check, subject: &Subject) -> Verdict {
    (check.run)(subject)
}

macro_rules! probe_check {
    ($id:literal, $title:literal, $area:expr, $since:literal, $points:literal, $probe:literal) => {
        Check {
            id: $id,
            title: $title,
            area: $area,
            since: $since,
            points: $points,
            timing: false,
            run: |subject| probe(subject, $probe),
        }
    };
}

pub static CATALOGUE: &[Check] = &[
    probe_check!(
        "api/alignment",
        "every block is 16-byte aligned",
        Area::Api,
        1,
        5,
        "alignment"
    ),
    probe_check!(
        "api/contents",
        "blocks never overlap and keep their contents",
        Area::Api,
        1,
        10,
        "contents"
    ),
    probe_check!(
        "api/calloc",
        "calloc zeroes, and detects overflow",
        Area::Api,
        1,
        5,
        "calloc"
    ),
    probe_check!(
        "api/realloc",
        "realloc's special cases and failure",
        Area::Api,
        1,
        5,
        "realloc"
    ),
    probe_check!(
        "api/memalign",
        "the memalign family aligns and validates",
        Area::Api,
        1,
        5,
        "memalign"
    ),
    probe_check!(
        "api/usable-size",
        "malloc_usable_size is honest",
        Area::Api,
        1,
        3,
        "usable-size"
    ),
    probe_check!(
        "api/huge",
        "impossible sizes fail with ENOMEM",
        Area::Api,
        1,
        4,
        "huge"
    ),
    probe_check!("api/errno", "free keeps errno", Area::Api, 1, 2, "errno"),
    probe_check!(
        "threads/stress",
        "eight threads with cross-thread frees",
        Area::Threads,
        1,
        8,
        "threads"
    ),
    probe_check!(
        "threads/fork",
        "a child forked mid-allocation can allocate",
        Area::Threads,
        1,
        6,
        "fork"
    ),
    Check {
        id: "threads/bench",
        title: "bench_alloc --threads 4 keeps every block",
        area: Area::Threads,
        since: 1,
        points: 2,
        timing: false,
        run: threads_bench,
    },
    Check {
        id: "programs/ls",
        title: "ls -la as under glibc",
        area: Area::Programs,
        since: 1,
        points: 3,
        timing: false,
        run: ls,
    },
    Check {
        id: "programs/cat",
        title: "cat of a 4 MB file",
        area: Area::Programs,
        since: 1,
        points: 3,
        timing: false,
        run: cat,
    },
    Check {
        id: "programs/sort",
        title: "sort of 200000 lines",
        area: Area::Programs,
        since: 1,
        points: 3,
        timing: false,
        run: sort,
    },
    Check {
        id: "programs/grep",
        title: "grep over 200000 lines",
        area: Area::Programs,
        since: 1,
        points: 3,
        timing: false,
        run: grep,
    },
    Check {
        id: "programs/python3",
        title: "a python3 script",
        area: Area::Programs,
        since: 1,
        points: 4,
        timing: false,
        run: python,
    },
    Check {
        id: "programs/git",
        title: "git log and status",
        area: Area::Programs,
        since: 1,
        points: 3,
        timing: false,
        run: git,
    },
    Check {
        id: "programs/gcc",
        title: "gcc compiles and links",
        area: Area::Programs,
        since: 1,
        points: 3,
        timing: false,
        run: gcc,
    },
    Check {
        id: "misuse/double-free",
        title: "a double free is reported, exit 3",
        area: Area::Misuse,
        since: 1,
        points: 4,
        timing: false,
        run: double_free,
    },
    Check {
        id: "misuse/invalid-free",
        title: "freeing a stack address is reported, exit 2",
        area: Area::Misuse,
        since: 1,
        points: 4,
        timing: false,
        run: invalid_free,
    },
    Check {
        id: "behaviour/reuse",
        title: "freed memory is reused: 1M small blocks in under 32 MiB resident",
        area: Area::Behaviour,
        since: 1,
        points: 15,
        timing: false,
        run: reuse,
    },
    Check {
        id: "perf/small-1m",
        title: "bench_alloc --small 1000000 in under 2 s",
        area: Area::Performance,
        since: 1,
        points: 5,
        timing: true,
        run: small_blocks_speed,
    },
    probe_check!(
        "behaviour/split",
        "a freed large block serves small requests",
        Area::Behaviour,
        2,
        10,
        "split"
    ),
    probe_check!(
        "behaviour/coalesce",
        "freed neighbours serve a request as large as both",
        Area::Behaviour,
        2,
        10,
        "coalesce"
    ),
    probe_check!(
        "behaviour/realloc-in-place",
        "realloc grows and shrinks in place",
        Area::Behaviour,
        2,
        4,
        "realloc-in-place"
    ),
    probe_check!(
        "behaviour/trim",
        "freed memory at the top goes back to the OS",
        Area::Behaviour,
        2,
        4,
        "trim"
    ),
    probe_check!(
        "behaviour/mmap-large",
        "large blocks get mappings of their own, unmapped on free",
        Area::Behaviour,
        3,
        10,
        "mmap-large"
    ),
    Check {
        id: "behaviour/mmap-threshold",
        title: "the mmap threshold follows MALLOC_MMAP_THRESHOLD_ and mallopt",
        area: Area::Behaviour,
        since: 3,
        points: 4,
        timing: false,
        run: mmap_threshold,
    },
    probe_check!(
        "behaviour/sbrk-failure",
        "the heap keeps growing when sbrk fails",
        Area::Behaviour,
        3,
        5,
        "brk-blocked"
    ),
    Check {
        id: "misuse/overflow",
        title: "debug mode catches a one-byte overflow, exit 3",
        area: Area::Misuse,
        since: 3,
        points: 4,
        timing: false,
        run: debug_overflow,
    },
    Check {
        id: "misuse/use-after-free",
        title: "debug mode catches a write after free, exit 3",
        area: Area::Misuse,
        since: 3,
        points: 4,
        timing: false,
        run: debug_use_after_free,
    },
    probe_check!(
        "behaviour/good-fit",
        "a request takes the smallest free block that holds it",
        Area::Behaviour,
        4,
        6,
        "good-fit"
    ),
    Check {
        id: "perf/bounded-search",
        title: "a request is as fast with 100 000 free fragments as with 100",
        area: Area::Performance,
        since: 4,
        points: 6,
        timing: true,
        run: |subject| probe(subject, "bounded-search"),
    },
    Check {
        id: "threads/scaling",
        title: "threads that share nothing do not wait for each other",
        area: Area::Threads,
        since: 5,
        points: 6,
        timing: true,
        run: |subject| probe(subject, "thread-scaling"),
    },
    probe_check!(
        "threads/remote-free",
        "blocks freed by another thread are reused",
        Area::Threads,
        5,
        4,
        "remote-free"
    ),
    probe_check!(
        "threads/exit",
        "blocks outlive their thread; short-lived threads do not grow memory",
        Area::Threads,
        5,
        4,
        "thread-exit"
    ),
    Check {
        id: "misuse/double-free-threads",
        title: "a double free is reported whichever threads free the block, exit 3",
        area: Area::Misuse,
        since: 5,
        points: 4,
        timing: false,
        run: double_free_threads,
    },
    Check {
        id: "misuse/never-given-out",
        title: "freeing a block boundary no malloc returned is reported, exit 2",
        area: Area::Misuse,
        since: 5,
        points: 2,
        timing: false,
        run: |subject| misuse_probe(subject, "never-given-out", 2, "invalid pointer"),
    },
    Check {
        id: "threads/dlopen-tls",
        title: "dlopen of libraries with __thread data while threads allocate",
        area: Area::Threads,
        since: 5,
        points: 4,
        timing: false,
        run: dlopen_tls,
    },
    Check {
        id: "programs/python3-threads",
        title: "a python3 script with threads",
        area: Area::Programs,
        since: 5,
        points: 3,
        timing: false,
        run: python_threads,
    },
];

/// Runs `alloc_probe NAME` under the allocator: its own verdict line decides.
pub fn probe(subject: &Subject, name: &str) -> Verdict {
    probe_verdict(
        subject
            .under_test(subject.tool("alloc_probe"))
            .arg(name)
            .run(),
    )
}

/// The verdict of one `alloc_probe` run: its last line, `ok: …` or `FAIL: …`.
fn probe_verdict(run: std::io::Result<Outcome>) -> Verdict {
    match run {
        Err(e) => Verdict::Fail(format!("could not start alloc_probe: {e}")),
        Ok(outcome) => {
            let stdout = outcome.stdout_text();
            let verdict = stdout.lines().last().unwrap_or("").to_string();
            match verdict.strip_prefix("ok: ") {
                Some(note) if outcome.succeeded() => Verdict::Pass(note.to_string()),
                _ => match verdict.strip_prefix("FAIL: ") {
                    Some(problem) if outcome.exit_code() == Some(1) => {
                        Verdict::Fail(problem.to_string())
                    }
                    _ => Verdict::Fail(outcome.to_string()),
                },
            }
        }
    }
}

fn threads_bench(subject: &Subject) -> Verdict {
    match subject
        .under_test(subject.tool("bench_alloc"))
        .args(["--threads", "4", "--small", "200000"])
        .run()
    {
        Ok(outcome) if outcome.succeeded() => {
            Verdict::Pass(outcome.stdout_text().trim().to_string())
        }
        Ok(outcome) => Verdict::Fail(outcome.to_string()),
        Err(e) => Verdict::Fail(format!("could not start bench_alloc: {e}")),
    }
}

/// Runs `program args` with and without the preload; passes when both succeed with the
/// same stdout. The glibc run is the reference, so a missing program is a skip.
fn same_as_glibc(
    subject: &Subject,
    program: &str,
    args: &[&str],
    cwd: &Path,
    stdin: &[u8],
) -> Verdict {
    if !installed(program) {
        return Verdict::Skip(format!("{program} is not installed on this machine"));
    }
    let run = |preload: Option<&Path>| {
        Run::new(program)
            .args(args)
            .cwd(cwd)
            .stdin(stdin.to_vec())
            .preload(preload)
            .env("LC_ALL", "C")
            .timeout(Duration::from_secs(60))
            .run()
    };
    let (reference, tested) = match (run(None), run(Some(&subject.lib))) {
        (Ok(reference), Ok(tested)) => (reference, tested),
        (Err(e), _) | (_, Err(e)) => {
            return Verdict::Fail(format!("could not start {program}: {e}"));
        }
    };
    if !reference.succeeded() {
        return Verdict::Skip(format!(
            "{program} fails even on glibc's malloc here: {reference}"
        ));
    }
    if !tested.succeeded() {
        return Verdict::Fail(format!("{program} {tested}"));
    }
    if tested.stdout != reference.stdout {
        return Verdict::Fail(format!(
            "{program}'s output differs from its output under glibc{}",
            first_difference(&reference, &tested)
        ));
    }
    Verdict::Pass(format!(
        "{} bytes of output, identical to glibc's",
        tested.stdout.len()
    ))
}

fn first_difference(reference: &Outcome, tested: &Outcome) -> String {
    let (a, b) = (reference.stdout_text(), tested.stdout_text());
    for (number, (left, right)) in a.lines().zip(b.lines()).enumerate() {
        if left != right {
            return format!(" (line {}: expected {left:?}, got {right:?})", number + 1);
        }
    }
    format!(
        " ({} lines expected, {} got)",
        a.lines().count(),
        b.lines().count()
    )
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Deterministic text: `lines` lines of seeded words.
fn text(lines: usize, seed: u64) -> String {
    let mut rng = crate::rng::Rng::new(seed);
    let words = [
        "malloc", "free", "heap", "block", "arena", "brk", "mmap", "split", "merge", "header",
    ];
    let mut out = String::new();
    for i in 0..lines {
        for _ in 0..rng.between(1, 8) {
            out.push_str(words[rng.between(0, words.len() - 1)]);
            out.push(' ');
        }
        out.push_str(&(i * 7919 % 100_003).to_string());
        out.push('\n');
    }
    out
}

fn write_scratch(subject: &Subject, name: &str, contents: &[u8]) -> Result<PathBuf, Verdict> {
    let path = subject.scratch.join(name);
    std::fs::create_dir_all(&subject.scratch)
        .and_then(|()| std::fs::write(&path, contents))
        .map_err(|e| Verdict::Fail(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

fn ls(subject: &Subject) -> Verdict {
    let dir = subject.scratch.join("listing");
    for (i, name) in ["alpha", "beta", "gamma.txt", "delta.rs", "epsilon"]
        .iter()
        .enumerate()
    {
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(name), "x".repeat(i * 100)));
        if let Err(e) = made {
            return Verdict::Fail(format!("cannot prepare the listing folder: {e}"));
        }
    }
    same_as_glibc(subject, "ls", &["-la", "--time-style=+%F", "."], &dir, b"")
}

fn cat(subject: &Subject) -> Verdict {
    let contents = text(60_000, 1);
    match write_scratch(subject, "big.txt", contents.as_bytes()) {
        Ok(path) => same_as_glibc(
            subject,
            "cat",
            &[&path.to_string_lossy()],
            &subject.scratch,
            b"",
        ),
        Err(verdict) => verdict,
    }
}

fn sort(subject: &Subject) -> Verdict {
    same_as_glibc(
        subject,
        "sort",
        &[],
        &subject.scratch,
        text(200_000, 2).as_bytes(),
    )
}

fn grep(subject: &Subject) -> Verdict {
    same_as_glibc(
        subject,
        "grep",
        &["-n", "-E", "heap (block|arena) [0-9]+7$"],
        &subject.scratch,
        text(200_000, 3).as_bytes(),
    )
}

fn python(subject: &Subject) -> Verdict {
    let script = "import json, collections\n\
        words = collections.Counter()\n\
        rows = []\n\
        for i in range(200000):\n\
        \x20   key = 'k' + str(i * 7919 % 1000)\n\
        \x20   words[key] += 1\n\
        \x20   rows.append({'i': i, 'k': key, 's': key * (i % 7)})\n\
        print(len(json.dumps(rows[::97])))\n\
        print(words.most_common(3))\n\
        print(sum(len(r['s']) for r in rows))\n";
    same_as_glibc(subject, "python3", &["-c", script], &subject.scratch, b"")
}

/// Builds `count` shared libraries with gcc, each with an 8 KiB `__thread` array and a
/// function `touch` that writes to it, then runs `alloc_probe dlopen-tls` on them.
fn dlopen_tls(subject: &Subject) -> Verdict {
    if !installed("gcc") {
        return Verdict::Skip("gcc is not installed on this machine".into());
    }
    let mut libraries = Vec::new();
    for i in 0..16 {
        let source = match write_scratch(
            subject,
            &format!("tls{i}.c"),
            format!(
                "__thread char block[8192] = {{ {} }};\n\
                 int touch(void) {{ block[100] += 1; return block[0]; }}\n",
                i + 1
            )
            .as_bytes(),
        ) {
            Ok(path) => path,
            Err(verdict) => return verdict,
        };
        let library = subject.scratch.join(format!("libtls{i}.so"));
        let built = Run::new("gcc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&library)
            .arg(&source)
            .run();
        match built {
            Ok(outcome) if outcome.succeeded() => libraries.push(library),
            Ok(outcome) => {
                return Verdict::Fail(format!("gcc could not build a test library: {outcome}"));
            }
            Err(e) => return Verdict::Fail(format!("could not run gcc: {e}")),
        }
    }
    probe_verdict(
        subject
            .under_test(subject.tool("alloc_probe"))
            .arg("dlopen-tls")
            .args(libraries.iter().map(|l| l.as_os_str()))
            .run(),
    )
}

/// Python with eight threads that build and free objects and pass them to each other
/// through a queue, compared with its output under glibc.
fn python_threads(subject: &Subject) -> Verdict {
    let script = "import threading, queue, json\n\
        results = queue.Queue()\n\
        def work(n):\n\
        \x20   rows = [{'n': n, 'i': i, 's': str(i) * (i % 13)} for i in range(40000)]\n\
        \x20   results.put((n, len(json.dumps(rows[::11])), sum(len(r['s']) for r in rows)))\n\
        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]\n\
        for t in threads: t.start()\n\
        for t in threads: t.join()\n\
        print(sorted(results.get() for _ in range(8)))\n";
    same_as_glibc(subject, "python3", &["-c", script], &subject.scratch, b"")
}

fn git(subject: &Subject) -> Verdict {
    if !installed("git") {
        return Verdict::Skip("git is not installed on this machine".into());
    }
    let repo = subject.scratch.join("repo");
    let setup = format!(
        "set -e; rm -rf '{0}'; mkdir -p '{0}'; cd '{0}'; git init -q -b main; \
         for i in 1 2 3 4 5; do echo \"line $i\" >> file.txt; git add file.txt; \
         git -c user.name=t -c user.email=t@t commit -q -m \"commit $i\"; done; echo changed >> file.txt",
        repo.display()
    );
    let fixed_dates = [
        ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
        ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
    ];
    let mut prepare = Run::new("sh").args(["-c", &setup]);
    for (key, value) in fixed_dates {
        prepare = prepare.env(key, value);
    }
    match prepare.run() {
        Ok(outcome) if outcome.succeeded() => {}
        Ok(outcome) => {
            return Verdict::Skip(format!("could not prepare a git repository: {outcome}"));
        }
        Err(e) => return Verdict::Skip(format!("could not prepare a git repository: {e}")),
    }
    same_as_glibc(
        subject,
        "git",
        &["-c", "core.pager=cat", "log", "--stat", "-p"],
        &repo,
        b"",
    )
}

fn gcc(subject: &Subject) -> Verdict {
    if !installed("gcc") {
        return Verdict::Skip("gcc is not installed on this machine".into());
    }
    let source = "#include <stdio.h>\nstruct p { int x, y; };\n\
        static int area(struct p a, struct p b) { return (b.x - a.x) * (b.y - a.y); }\n\
        int main(void) { struct p a = {1, 2}, b = {7, 9}; printf(\"%d\\n\", area(a, b)); return 0; }\n";
    if let Err(verdict) = write_scratch(subject, "prog.c", source.as_bytes()) {
        return verdict;
    }
    // Compile to assembly on stdout (deterministic), then build and run the program.
    let assembly = same_as_glibc(
        subject,
        "gcc",
        &["-O2", "-S", "-o", "-", "prog.c"],
        &subject.scratch,
        b"",
    );
    if !matches!(assembly, Verdict::Pass(_)) {
        return assembly;
    }
    match subject
        .under_test("gcc")
        .args(["-O2", "-o", "prog", "prog.c"])
        .cwd(&subject.scratch)
        .run()
    {
        Ok(outcome) if outcome.succeeded() => {}
        Ok(outcome) => return Verdict::Fail(format!("gcc (compile and link) {outcome}")),
        Err(e) => return Verdict::Fail(format!("could not start gcc: {e}")),
    }
    match Run::new(subject.scratch.join("prog")).run() {
        Ok(outcome) if outcome.stdout_text() == "42\n" => {
            Verdict::Pass("compiled, linked, and the program printed 42".into())
        }
        Ok(outcome) => Verdict::Fail(format!(
            "the program gcc built printed {:?} ({outcome})",
            outcome.stdout_text()
        )),
        Err(e) => Verdict::Fail(format!("could not run the program gcc built: {e}")),
    }
}

/// Runs a bench_alloc misuse mode: the process must exit with `code` and say `words`
/// on its last line of stderr.
fn misuse(subject: &Subject, flag: &str, code: i32, words: &str) -> Verdict {
    misuse_verdict(
        subject
            .under_test(subject.tool("bench_alloc"))
            .arg(flag)
            .run(),
        code,
        words,
    )
}

/// Runs `alloc_probe NAME`, which ends in misuse: exit `code` with `words` expected.
fn misuse_probe(subject: &Subject, name: &str, code: i32, words: &str) -> Verdict {
    misuse_verdict(
        subject
            .under_test(subject.tool("alloc_probe"))
            .arg(name)
            .run(),
        code,
        words,
    )
}

/// The verdict of one misuse run: exit `code`, and `words` on the last line of stderr.
fn misuse_verdict(run: std::io::Result<Outcome>, code: i32, words: &str) -> Verdict {
    let outcome = match run {
        Ok(outcome) => outcome,
        Err(e) => return Verdict::Fail(format!("could not start the program: {e}")),
    };
    let stderr = outcome.stderr_text();
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if outcome.exit_code() == Some(code) && last.contains(words) {
        Verdict::Pass(format!("exit {code}: {last}"))
    } else {
        Verdict::Fail(format!(
            "expected exit {code} with a line saying \"{words}\"; got {outcome}"
        ))
    }
}

fn double_free(subject: &Subject) -> Verdict {
    misuse(subject, "--double-free", 3, "double free")
}

fn invalid_free(subject: &Subject) -> Verdict {
    misuse(subject, "--invalid-free", 2, "invalid pointer")
}

/// A small block freed twice, in the three orders that involve another thread than
/// its owner: both frees remote, the owner's then another's, another's then the
/// owner's. Each order runs in its own process, with no allocation between the two
/// frees (which could hand the block out again and make the second free legal).
fn double_free_threads(subject: &Subject) -> Verdict {
    let mut last = Verdict::Fail("no order ran".into());
    for (probe, order) in [
        ("double-free-remote-remote", "freed by two other threads"),
        (
            "double-free-local-remote",
            "freed by its owner, then another thread",
        ),
        (
            "double-free-remote-local",
            "freed by another thread, then its owner",
        ),
    ] {
        last = match misuse_probe(subject, probe, 3, "double free") {
            Verdict::Pass(line) => Verdict::Pass(format!("in all three orders, {line}")),
            Verdict::Fail(why) => {
                return Verdict::Fail(format!("{order} (alloc_probe {probe}): {why}"));
            }
            skip @ Verdict::Skip(_) => return skip,
        };
    }
    last
}

/// An allocator that never reuses freed memory passes every other phase-1 check (the
/// programs are short-lived), so this one runs `bench_alloc --small 1000000`, which
/// never holds more than 10000 blocks of 1-64 bytes at once (under 1 MiB) and writes
/// to every block it gets, and reads the peak resident memory bench_alloc reports
/// (its own `VmHWM`). A million blocks that are never reused touch 32 MiB at the very
/// least (each has a header); reused, they fit in a few.
///
/// Resident memory, not a limit on the address space: allocators that reserve address
/// space up front (mimalloc, jemalloc) reuse memory just as well.
fn reuse(subject: &Subject) -> Verdict {
    const LIMIT_KIB: u64 = 32 * 1024;
    let outcome = match subject
        .under_test(subject.tool("bench_alloc"))
        .args(["--small", "1000000"])
        .run()
    {
        Ok(outcome) => outcome,
        Err(e) => return Verdict::Fail(format!("could not start bench_alloc: {e}")),
    };
    if !outcome.succeeded() {
        return Verdict::Fail(format!("bench_alloc --small 1000000 {outcome}"));
    }
    match crate::bench::parse_sample(&outcome.stdout_text()) {
        Some(sample) if sample.peak_rss_kib < LIMIT_KIB => Verdict::Pass(format!(
            "1M blocks of 1-64 B, at most 10000 live: peak resident memory {} KiB",
            sample.peak_rss_kib
        )),
        Some(sample) => Verdict::Fail(format!(
            "1M blocks of 1-64 B, at most 10000 live at once, took {} KiB of resident memory \
             (the limit is {LIMIT_KIB} KiB): is freed memory reused?",
            sample.peak_rss_kib
        )),
        None => Verdict::Fail(format!(
            "bench_alloc printed no peak RSS: {:?}",
            outcome.stdout_text()
        )),
    }
}

/// The spec's speed bar. Noise-tolerant: the best of up to three runs counts.
fn small_blocks_speed(subject: &Subject) -> Verdict {
    const LIMIT: Duration = Duration::from_secs(2);
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        let run = subject
            .under_test(subject.tool("bench_alloc"))
            .args(["--small", "1000000"])
            .timeout(Duration::from_secs(20));
        match run.run() {
            Ok(outcome) if outcome.succeeded() => {
                best = Some(best.map_or(outcome.elapsed, |b| b.min(outcome.elapsed)));
                if outcome.elapsed < LIMIT {
                    break;
                }
            }
            Ok(outcome) => return Verdict::Fail(format!("bench_alloc --small 1000000 {outcome}")),
            Err(e) => return Verdict::Fail(format!("could not start bench_alloc: {e}")),
        }
    }
    match best {
        Some(time) if time < LIMIT => Verdict::Pass(format!(
            "{:.2} s (best of up to 3 runs)",
            time.as_secs_f64()
        )),
        Some(time) => Verdict::Fail(format!(
            "{:.2} s, best of 3 runs; the limit is 2 s",
            time.as_secs_f64()
        )),
        None => Verdict::Fail("no run finished".into()),
    }
}

/// The threshold from the environment and from `mallopt` (`alloc_probe mmap-threshold`
/// under `MALLOC_MMAP_THRESHOLD_=65536`); and a malformed value reported once on
/// stderr and ignored, the default in force (`alloc_probe mmap-threshold-default`).
fn mmap_threshold(subject: &Subject) -> Verdict {
    let probe_with = |name: &str, threshold: &str| {
        subject
            .under_test(subject.tool("alloc_probe"))
            .arg(name)
            .env("MALLOC_MMAP_THRESHOLD_", threshold)
            .run()
    };
    let honoured = probe_verdict(probe_with("mmap-threshold", "65536"));
    let Verdict::Pass(note) = honoured else {
        return honoured;
    };
    let malformed = probe_with("mmap-threshold-default", "lots");
    let warnings = match &malformed {
        Ok(outcome) => outcome
            .stderr_text()
            .lines()
            .filter(|line| line.contains("MALLOC_MMAP_THRESHOLD_"))
            .count(),
        Err(_) => 0,
    };
    match probe_verdict(malformed) {
        Verdict::Pass(_) if warnings == 1 => Verdict::Pass(format!(
            "{note}; MALLOC_MMAP_THRESHOLD_=lots reported once and the default used"
        )),
        Verdict::Pass(_) => Verdict::Fail(format!(
            "MALLOC_MMAP_THRESHOLD_=lots was ignored, but stderr named it {warnings} times \
             (once expected)"
        )),
        Verdict::Fail(problem) => Verdict::Fail(format!(
            "with MALLOC_MMAP_THRESHOLD_=lots (malformed, so the default): {problem}"
        )),
        skip => skip,
    }
}

/// A bench_alloc misuse mode under `MALLOC_DEBUG=1`: must exit 3 naming `words`.
fn debug_misuse(subject: &Subject, flag: &str, words: &str) -> Verdict {
    misuse_verdict(
        subject
            .under_test(subject.tool("bench_alloc"))
            .arg(flag)
            .env("MALLOC_DEBUG", "1")
            .env("MALLOC_DEBUG_SEED", "42")
            .run(),
        3,
        words,
    )
}

fn debug_overflow(subject: &Subject) -> Verdict {
    debug_misuse(subject, "--overflow", "buffer overflow")
}

fn debug_use_after_free(subject: &Subject) -> Verdict {
    debug_misuse(subject, "--use-after-free", "use after free")
}

/// Where the release builds of the harness tools are (built by [`phases::build_all`]).
pub fn release_tools() -> PathBuf {
    phases::target_dir().join("release")
}

/// Where the book explains what a check tests: a page of `docs/src` and a heading on
/// it. `harness check` names it when the check fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub page: &'static str,
    pub heading: &'static str,
}

impl Section {
    const fn new(page: &'static str, heading: &'static str) -> Section {
        Section { page, heading }
    }

    /// The heading's anchor as mdBook makes it: lower case, spaces to hyphens, other
    /// punctuation dropped ("realloc in place" is `#realloc-in-place`).
    pub fn anchor(&self) -> String {
        self.heading
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
                _ => None,
            })
            .collect()
    }
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "docs/src/{}#{} (\"{}\")",
            self.page,
            self.anchor(),
            self.heading
        )
    }
}

const CH00: &str = "ch00-taking-over-malloc.md";
const CH01: &str = "ch01-sbrk-freelist.md";
const CH02: &str = "ch02-split-coalesce.md";
const CH03: &str = "ch03-mmap-debug.md";
const CH04: &str = "ch04-segregated-fits.md";
const CH05: &str = "ch05-thread-heaps.md";
const HANDOUT: &str = "handout.md";

impl Check {
    /// The section of the book that explains this check. The stages of `harness check
    /// --phase N` are phase N's rubric in catalogue order; this says where to read when
    /// one fails. A check without an entry points at its phase's part of the handout.
    pub fn section(&self) -> Section {
        match self.id {
            "api/alignment" => Section::new(CH01, "Blocks and their headers"),
            "api/contents" => Section::new(CH01, "The free list"),
            "api/calloc" | "api/realloc" | "api/memalign" | "api/usable-size" | "api/errno" => {
                Section::new(HANDOUT, "The functions and their contracts")
            }
            "api/huge" => Section::new(CH01, "The implementation"),
            "threads/stress" | "threads/bench" => Section::new(CH00, "One lock, built lazily"),
            "threads/fork" => Section::new(CH00, "Fork"),
            "misuse/double-free" | "misuse/invalid-free" => Section::new(CH01, "Misuse"),
            "misuse/double-free-threads" | "misuse/never-given-out" => {
                Section::new(CH05, "Misuse across threads")
            }
            "behaviour/reuse" => Section::new(CH01, "First fit"),
            "perf/small-1m" => Section::new(CH01, "Speed"),
            "behaviour/split" => Section::new(CH02, "Splitting"),
            "behaviour/coalesce" => Section::new(CH02, "Coalescing"),
            "behaviour/realloc-in-place" => Section::new(CH02, "realloc in place"),
            "behaviour/trim" => Section::new(CH02, "Giving memory back"),
            "behaviour/mmap-large" => Section::new(CH03, "sbrk or mmap"),
            "behaviour/mmap-threshold" => Section::new(CH03, "Choosing the threshold"),
            "behaviour/sbrk-failure" => Section::new(CH03, "When the break cannot grow"),
            "misuse/overflow" | "misuse/use-after-free" => {
                Section::new(CH03, "Catching bugs: guards, poison and a quarantine")
            }
            "behaviour/good-fit" => Section::new(CH04, "A good fit"),
            "perf/bounded-search" => Section::new(CH04, "Where first fit spends its time"),
            "threads/scaling" => Section::new(CH05, "A heap per thread"),
            "threads/remote-free" => Section::new(CH05, "Frees from other threads"),
            "threads/exit" => Section::new(CH05, "Threads that end"),
            "threads/dlopen-tls" => Section::new(CH05, "Finding \"this thread's heap\""),
            id if id.starts_with("programs/") => Section::new(CH01, "Real programs"),
            _ => Section::new(HANDOUT, "What to write, phase by phase"),
        }
    }
}
