//! Every console transcript in the book is run, and its output compared with what the
//! chapter says it prints.
//!
//! A transcript is a fenced block opened with ```` ```console ```` in `docs/src/*.md`:
//!
//! ````text
//! ```console
//! $ LD_PRELOAD=target/release/libphase1_sbrk_freelist.so target/release/bench_alloc --double-free; echo "exit $?"
//! error: double free detected at 0x10
//! exit 3
//! ```
//! ````
//!
//! - A line starting with `$ ` is a command. It runs with `sh -c` from the workspace
//!   root, stderr merged into stdout (as a terminal shows them), with `LC_ALL=C` and
//!   with no `MALLOC_*` variable or `LD_PRELOAD` inherited from whoever runs the tests.
//! - The lines after it, up to the next command or the closing fence, are its output,
//!   compared line by line and exactly, with two wildcards for what cannot repeat
//!   (addresses under ASLR, timings):
//!   - a line that is exactly `...` matches any number of lines, none included;
//!   - `[..]` inside a line matches any text within that line.
//! - The command must exit 0. To show a failure, end it with `; echo "exit $?"`.
//!
//! Before the first command, [`harness::phases::build_all`] builds every phase's `.so`
//! and the release `bench_alloc`, so commands can name `target/release/...`. (When
//! `CARGO_TARGET_DIR` moves the target folder, a word starting `target/` is read as
//! that folder.)
//!
//! Code is checked too: a fenced block whose first line names a file of the repository
//! (`// phases/phase1-sbrk-freelist/src/heap.rs`, `# Cargo.toml`) must be quoted from
//! that file. Its lines must appear there in the same order, each run of lines
//! unbroken; a line `// ...` (or `# ...`) marks where the quote skips part of the file.
//! Rows quoted from the benchmark report are checked the same way (a block opening with
//! `# docs/benchmarks.md`): a chapter's numbers are the report's, or the test fails.
//! `harness bench` rewrites those rows from the report it writes (`harness bench-quotes`
//! does it alone; see `harness::book::bench_quotes`).
//!
//! Shell commands shown any other way are marked as not run, with the reason, on the
//! line before their fence: `<!-- not run: it rewrites a committed file -->`. That
//! holds for every ```` ```sh ````, ```` ```bash ```` or ```` ```shell ```` block, and
//! for a ```` ```text ```` block that shows a `$ ` command. And no page names a folder
//! of the machine it was written on (`/work/…`, `/root/…`): a reader's clone is
//! elsewhere.
//!
//! Each registered phase's chapter (the registry's `chapter`) is checked by
//! `each_phase_chapter` (`HARNESS_PHASE=N` narrows it to phase N's, as `just phaseN
//! test` does); chapter 0, about the kit every phase uses, by a test named after
//! phase 1, so that `cargo test -p harness -- phase1` includes it. Every other page is
//! checked by `pages_without_a_test_of_their_own`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::book::bench_quotes;
use harness::phases;
use harness::runner::{Ending, Run};

/// Chapter 0, before the phases: the kit that every phase uses.
const KIT_CHAPTER: &str = "docs/src/ch00-taking-over-malloc.md";

/// The pages with a test of their own: chapter 0 and every registered phase's chapter.
fn chapters() -> Vec<PathBuf> {
    let root = phases::workspace_root();
    std::iter::once(KIT_CHAPTER)
        .chain(phases::PHASES.iter().map(|phase| phase.chapter))
        .map(|chapter| root.join(chapter))
        .collect()
}

#[test]
fn ch00_taking_over_malloc_on_phase1() {
    if let Err(report) = check_page(&phases::workspace_root().join(KIT_CHAPTER)) {
        panic!("{report}");
    }
}

/// Each phase's chapter under test, the chapters side by side (each command is a
/// process of its own); the report covers every chapter that failed.
#[test]
fn each_phase_chapter() {
    let failures: String = std::thread::scope(|scope| {
        let runs: Vec<_> = (phases::under_test().into_iter())
            .map(|phase| {
                let page = phases::workspace_root().join(phase.chapter);
                scope.spawn(move || check_page(&page).err().unwrap_or_default())
            })
            .collect();
        (runs.into_iter())
            .map(|run| run.join().expect("checking a chapter does not panic"))
            .collect()
    });
    assert!(failures.is_empty(), "{failures}");
}

/// Every other page of the book (the introduction, the grading and benchmark pages, a
/// chapter not yet in the registry), so that a page is checked from the day it is
/// written.
#[test]
fn pages_without_a_test_of_their_own() {
    let chapters = chapters();
    let mut failures = String::new();
    for page in pages() {
        if !chapters.contains(&page)
            && let Err(report) = check_page(&page)
        {
            failures.push_str(&report);
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn chapters_are_pages_of_the_book_with_transcripts() {
    let pages = pages();
    for chapter in chapters() {
        assert!(
            pages.contains(&chapter),
            "{} is not a page in docs/src",
            chapter.display()
        );
        let text = std::fs::read_to_string(&chapter)
            .unwrap_or_else(|e| panic!("{}: {e}", chapter.display()));
        assert!(
            !transcripts(&text).is_empty(),
            "{} has no ```console block",
            chapter.display()
        );
    }
}

fn book_src() -> PathBuf {
    phases::workspace_root().join("docs").join("src")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every `.md` file under `docs/src`, sorted.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(book_src())
        .expect("docs/src exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages
}

/// One command of a transcript and the output the page promises.
#[derive(Debug, PartialEq)]
struct Example {
    /// 1-based line of the `$ ` line in its page.
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The commands of every ```` ```console ```` block in `text`, in page order.
fn transcripts(text: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut in_console = false;
    let mut fence = "";
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !in_console {
            if let Some(info) = trimmed.strip_prefix("```")
                && info.trim() == "console"
            {
                in_console = true;
                fence = &trimmed[..trimmed.len() - info.len()];
            }
            continue;
        }
        if trimmed.starts_with(fence) && trimmed.trim_start_matches('`').trim().is_empty() {
            in_console = false;
        } else if let Some(command) = line.strip_prefix("$ ") {
            examples.push(Example {
                line: index + 1,
                command: command.to_string(),
                expected: Vec::new(),
            });
        } else if let Some(example) = examples.last_mut().filter(|_| in_console) {
            example.expected.push(line.to_string());
        }
    }
    examples
}

/// A fenced block quoted from a file of the repository.
#[derive(Debug, PartialEq)]
struct Excerpt {
    /// 1-based line of the line naming the file.
    line: usize,
    path: String,
    /// Runs of lines that must appear unbroken in the file, in this order.
    pieces: Vec<Vec<String>>,
}

/// Every fenced block (other than a transcript) whose first line is `// PATH` or
/// `# PATH`, PATH being a `.rs` or `.toml` file.
fn excerpts(text: &str) -> Vec<Excerpt> {
    let mut excerpts = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut block: Vec<(usize, &str)> = Vec::new();
        for (index, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            block.push((index + 1, line));
        }
        if info.trim() == "console" {
            continue;
        }
        let Some(&(first_line, first)) = block.first() else {
            continue;
        };
        let Some((marker, path)) = ["// ", "# "]
            .iter()
            .find_map(|marker| Some((*marker, first.strip_prefix(marker)?)))
        else {
            continue;
        };
        // `.md`: a chapter quoting the benchmark report (`# docs/benchmarks.md`), so a
        // number quoted from it fails this test once the report is regenerated.
        let quotable = [".rs", ".toml", ".md"]
            .iter()
            .any(|ext| path.ends_with(ext));
        if path.contains(' ') || !quotable {
            continue;
        }
        let elision = format!("{}...", marker);
        let mut pieces = vec![Vec::new()];
        for &(_, line) in &block[1..] {
            if line.trim() == elision {
                pieces.push(Vec::new());
            } else if let Some(piece) = pieces.last_mut() {
                piece.push(line.to_string());
            }
        }
        pieces.retain(|piece| !piece.is_empty());
        excerpts.push(Excerpt {
            line: first_line,
            path: path.to_string(),
            pieces,
        });
    }
    excerpts
}

/// `Err` says which piece of the excerpt is not in its file (in order).
fn check_excerpt(excerpt: &Excerpt) -> Result<(), String> {
    let path = phases::workspace_root().join(&excerpt.path);
    let source = std::fs::read_to_string(&path)
        .map_err(|e| format!("the quoted file {}: {e}", excerpt.path))?;
    let source: Vec<&str> = source.lines().collect();
    let mut from = 0;
    for piece in &excerpt.pieces {
        let found = (from..source.len()).find(|&start| {
            source.len() - start >= piece.len()
                && piece.iter().zip(&source[start..]).all(|(a, b)| a == b)
        });
        match found {
            Some(start) => from = start + piece.len(),
            None => {
                return Err(format!(
                    "these lines are not in {} (in this order, after the lines quoted before them):\n{}",
                    excerpt.path,
                    piece.join("\n")
                ));
            }
        }
    }
    Ok(())
}

/// Runs every transcript of one page and checks its quotes; `Err` holds a report of
/// each mismatch.
fn check_page(page: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(page).map_err(|e| format!("{}: {e}", page.display()))?;
    let shown = format!("docs/src/{}", file_name(page));
    let mut report = String::new();
    for excerpt in excerpts(&text) {
        if let Err(problem) = check_excerpt(&excerpt) {
            let _ = writeln!(report, "\n{shown}:{}: {problem}", excerpt.line);
            if excerpt.path == bench_quotes::REPORT {
                let _ = writeln!(
                    report,
                    "(the report was regenerated: `cargo run --release -p harness --bin \
                     harness -- bench-quotes` rewrites the quoted rows from it)"
                );
            }
        }
    }
    for problem in unmarked_commands(&text)
        .into_iter()
        .chain(machine_paths(&text))
    {
        let _ = writeln!(report, "\n{shown}:{problem}");
    }
    let examples = transcripts(&text);
    if !examples.is_empty() {
        phases::build_all().map_err(|e| format!("cannot build the phases: {e}"))?;
    }
    for example in &examples {
        if let Err(problem) = run_example(example) {
            let _ = writeln!(
                report,
                "\n{shown}:{}: $ {}\n{problem}",
                example.line, example.command
            );
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// The fences that open shell commands which are not run, and do not say why: each
/// as `LINE: what is wrong`.
fn unmarked_commands(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut problems = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some(info) = lines[index].trim_start().strip_prefix("```") else {
            index += 1;
            continue;
        };
        let info = info.trim();
        let end = (index + 1..lines.len())
            .find(|&i| lines[i].trim_start().starts_with("```"))
            .unwrap_or(lines.len());
        let body = &lines[(index + 1).min(end)..end];
        let shows_commands = matches!(info, "sh" | "bash" | "shell")
            || (info == "text" && body.iter().any(|line| line.starts_with("$ ")));
        let marked = lines[..index]
            .iter()
            .rev()
            .find(|line| !line.trim().is_empty())
            .and_then(|line| line.trim().strip_prefix("<!-- not run:"))
            .and_then(|rest| rest.strip_suffix("-->"))
            .is_some_and(|reason| !reason.trim().is_empty());
        if shows_commands && !marked {
            problems.push(format!(
                "{}: a ```{info} block of commands that the test does not run: make it a \
                 ```console transcript, or say why not on the line before it \
                 (<!-- not run: REASON -->)",
                index + 1
            ));
        }
        index = end + 1;
    }
    problems
}

/// Lines that name a folder of the machines this book is written on (`/work/…`,
/// `/root/…`), as `LINE: the folder`. An example may still name a made-up folder
/// (`/home/me/mymalloc`).
fn machine_paths(text: &str) -> Vec<String> {
    const FOLDERS: &[&str] = &["/work/", "/root/"];
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let folder = FOLDERS.iter().find(|folder| line.contains(*folder))?;
            Some(format!(
                "{}: names a folder of the machine the page was written on ({folder}); \
                 a reader's clone is elsewhere",
                index + 1
            ))
        })
        .collect()
}

#[test]
fn commands_not_run_must_say_why() {
    let page = "```sh\nmake\n```\n\n<!-- not run: needs a GPU -->\n```sh\nrun\n```\n\
                ```text\n$ ls\n```\n```text\nP = w U\n```\n";
    let problems = unmarked_commands(page);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("1: "), "{problems:?}");
    assert!(problems[1].starts_with("9: "), "{problems:?}");
    assert_eq!(machine_paths("see /work/main/target\nfine\n").len(), 1);
}

/// Variables that change what an allocator prints: never inherited by a transcript.
const CLEARED: &str = "MALLOC_DEBUG MALLOC_DEBUG_SEED MALLOC_MMAP_THRESHOLD_ MALLOC_TRIM_THRESHOLD_ MALLOC_CHECK_EVERY MALLOC_DEBUG_LOG MALLOC_PERTURB_";

fn run_example(example: &Example) -> Result<(), String> {
    let command = with_target_dir(&example.command);
    let script = format!("unset {CLEARED}\n{command}");
    let outcome = Run::new("sh")
        .args(["-c", script.as_str()])
        .cwd(phases::workspace_root())
        .env("LC_ALL", "C")
        .merge_stderr()
        .timeout(Duration::from_secs(300))
        .run()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let actual = outcome.stdout_text();
    let actual: Vec<&str> = actual.lines().collect();
    let expected: Vec<&str> = example.expected.iter().map(String::as_str).collect();
    let mut problems = String::new();
    if outcome.ending != Ending::Exited(0) {
        let _ = writeln!(
            problems,
            "the command ended with {outcome} (a transcript's command must exit 0; \
             append `; echo \"exit $?\"` to show a failure)"
        );
    }
    if !lines_match(&expected, &actual) {
        let _ = writeln!(
            problems,
            "output differs from the page.\n--- the page says:\n{}\n--- the command printed:\n{}\n---",
            expected.join("\n"),
            actual.join("\n")
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Reads `target/` at the start of a word as Cargo's target folder, when
/// `CARGO_TARGET_DIR` has moved it.
fn with_target_dir(command: &str) -> String {
    let target = phases::target_dir();
    if target == phases::workspace_root().join("target") {
        return command.to_string();
    }
    rewrite_target(command, &format!("{}/", target.display()))
}

/// `command` with each word-initial `target/` replaced by `replacement`.
fn rewrite_target(command: &str, replacement: &str) -> String {
    let mut result = String::new();
    let mut rest = command;
    while let Some(at) = rest.find("target/") {
        result.push_str(&rest[..at]);
        let starts_word = result
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "=;|&(\"'".contains(c));
        result.push_str(if starts_word { replacement } else { "target/" });
        rest = &rest[at + "target/".len()..];
    }
    result.push_str(rest);
    result
}

/// Do `actual` lines match the `expected` ones, wildcards included?
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((pattern, rest)) => actual
            .split_first()
            .is_some_and(|(line, others)| line_matches(pattern, line) && lines_match(rest, others)),
    }
}

/// Does `line` match `pattern`, in which each `[..]` stands for any text?
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == line;
    };
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[test]
fn a_line_without_wildcards_must_be_equal() {
    assert!(line_matches("[stats] in_use=0", "[stats] in_use=0"));
    assert!(!line_matches("[stats] in_use=0", "[stats] in_use=00"));
    assert!(!line_matches("[stats] in_use=0", ""));
}

#[test]
fn a_bracketed_wildcard_matches_any_text_within_the_line() {
    assert!(line_matches(
        "small: [..] s, [..] ops/s",
        "small: 0.846 s, 2364736 ops/s"
    ));
    assert!(line_matches("error: [..]", "error: "));
    assert!(line_matches("[..]", "anything at all"));
    assert!(!line_matches("a[..]b[..]c", "a b"));
    assert!(!line_matches("ab[..]ba", "aba"), "the ends may not overlap");
}

#[test]
fn a_line_of_three_dots_matches_any_number_of_lines() {
    assert!(lines_match(&["a", "...", "z"], &["a", "z"]));
    assert!(lines_match(&["a", "...", "z"], &["a", "b", "c", "z"]));
    assert!(lines_match(&["..."], &[]));
    assert!(!lines_match(&["a", "...", "z"], &["a", "b"]));
    assert!(!lines_match(&["a"], &["a", "extra"]), "no trailing lines");
    assert!(!lines_match(&["a", ""], &["a"]), "blank lines count");
}

#[test]
fn console_blocks_are_split_into_commands_and_their_output() {
    let page = "text\n```console\n$ echo a\na\n$ true\n```\n```sh\n$ not this\n```\n";
    let examples = transcripts(page);
    assert_eq!(
        examples,
        [
            Example {
                line: 3,
                command: "echo a".into(),
                expected: vec!["a".into()]
            },
            Example {
                line: 5,
                command: "true".into(),
                expected: vec![]
            },
        ]
    );
}

/// The check can fail: a wrong transcript, and a command that exits non-zero, are
/// both reported.
#[test]
fn a_wrong_transcript_is_reported() {
    let wrong = Example {
        line: 1,
        command: "echo actual".into(),
        expected: vec!["promised".into()],
    };
    let problem = run_example(&wrong).unwrap_err();
    assert!(problem.contains("output differs"), "{problem}");
    let failing = Example {
        line: 1,
        command: "echo out; exit 3".into(),
        expected: vec!["out".into()],
    };
    let problem = run_example(&failing).unwrap_err();
    assert!(problem.contains("exit 3"), "{problem}");
    let right = Example {
        line: 1,
        command: "echo err >&2; echo $MALLOC_DEBUG; echo \"exit $?\"".into(),
        expected: vec!["err".into(), "".into(), "exit 0".into()],
    };
    assert_eq!(run_example(&right), Ok(()));
}

#[test]
fn a_moved_target_folder_is_found_at_the_start_of_words_only() {
    assert_eq!(
        rewrite_target(
            "LD_PRELOAD=target/release/a.so target/release/b | grep my-target/x",
            "/t/"
        ),
        "LD_PRELOAD=/t/release/a.so /t/release/b | grep my-target/x"
    );
}

#[test]
fn quoted_code_is_found_in_its_file_in_order() {
    let page = "```rust\n// harness/tests/docs.rs\n//! Every console transcript in the book is run, and its output compared with what the\n// ...\nuse harness::phases;\n```\n";
    let found = excerpts(page);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "harness/tests/docs.rs");
    assert_eq!(found[0].pieces.len(), 2);
    assert_eq!(check_excerpt(&found[0]), Ok(()));
    let backwards = Excerpt {
        line: 1,
        path: "harness/tests/docs.rs".into(),
        pieces: found[0].pieces.iter().rev().cloned().collect(),
    };
    assert!(check_excerpt(&backwards).is_err(), "order matters");
    let changed = Excerpt {
        line: 1,
        path: "harness/tests/docs.rs".into(),
        pieces: vec![vec!["use harness::phases; // changed".into()]],
    };
    assert!(check_excerpt(&changed).is_err());
}
