//! The benchmark rows the chapters quote, kept equal to the report they quote.
//!
//! A chapter quotes rows of `docs/benchmarks.md` in a fenced block that opens with the
//! report's path, names each table by its `## ` heading, and marks skipped lines with
//! `# ...`:
//!
//! ````text
//! ```text
//! # docs/benchmarks.md
//! ## small, 1 thread (`bench_alloc --small 1000000 --threads 1`)
//! # ...
//! | glibc | 17.0 ms | 114.7 M | 1.00x | 1.02 | 2.4 MiB |
//! | phase2-split-coalesce | 31.0 ms | 65.1 M | 1.76x | 1.49 | 2.8 MiB |
//! ```
//! ````
//!
//! `tests/docs.rs` fails when those lines are no longer in the report, in that order.
//! [`refresh`] rewrites each quoted row (a line starting with `|`) with the row of the
//! same table (the last `## ` heading above it in the block) whose first cell is the
//! same (the allocator, or the workload in the summary). `harness bench` does it for
//! every page of `docs/src` after writing the report, and `harness bench-quotes` does
//! it alone, from the committed report. A quote that names a table or a row the report
//! no longer has is left as it is and reported, so the book's test still fails on it.
//! The prose around a quote is the author's, and is written so as to stay true as the
//! numbers move ("many times faster", not "24.95x").

use std::path::{Path, PathBuf};

use crate::phases;

/// The report the chapters quote, relative to the workspace root.
pub const REPORT: &str = "docs/benchmarks.md";

/// `page` with every row it quotes from `report` (whose path, as a quote names it, is
/// `report_path`) rewritten from `report`, and a line for each quoted row or table
/// that `report` does not have (1-based line numbers in `page`).
pub fn refresh(page: &str, report_path: &str, report: &str) -> (String, Vec<String>) {
    let opening = format!("# {report_path}");
    let mut problems = Vec::new();
    let mut result = String::with_capacity(page.len());
    let mut in_quote = false;
    let mut in_block = false;
    let mut heading: Option<&str> = None;
    let mut first_of_block = false;
    for (index, line) in page.split_inclusive('\n').enumerate() {
        let text = line.trim_end_matches('\n');
        if text.trim_start().starts_with("```") {
            in_block = !in_block;
            in_quote = false;
            first_of_block = in_block;
            result.push_str(line);
            continue;
        }
        if first_of_block {
            first_of_block = false;
            in_quote = text == opening;
            heading = None;
        }
        if !in_quote {
            result.push_str(line);
            continue;
        }
        if text.starts_with("## ") {
            if section(report, text).is_none() {
                problems.push(format!(
                    "{}: {report_path} has no table {text:?}",
                    index + 1
                ));
            }
            heading = Some(text);
        }
        let replacement = (text.starts_with('|'))
            .then(|| row(section(report, heading?)?, first_cell(text)?))
            .flatten();
        match replacement {
            Some(row) => {
                result.push_str(row);
                result.push_str(&line[text.len()..]);
            }
            None => {
                if text.starts_with('|') {
                    problems.push(format!(
                        "{}: no row like this in {report_path}{}: {text}",
                        index + 1,
                        heading.map_or(String::new(), |h| format!(" under {h:?}"))
                    ));
                }
                result.push_str(line);
            }
        }
    }
    (result, problems)
}

/// The lines of `report`'s table under `heading` (up to the next `## ` heading).
fn section<'r>(report: &'r str, heading: &str) -> Option<&'r str> {
    let start = report
        .match_indices(heading)
        .map(|(at, _)| at)
        .find(|&at| {
            (at == 0 || report[..at].ends_with('\n'))
                && report[at + heading.len()..].starts_with('\n')
        })?;
    let body = &report[start + heading.len()..];
    let end = body.find("\n## ").map_or(body.len(), |at| at + 1);
    Some(&body[..end])
}

/// The row of `section` whose first cell is `cell`.
fn row<'r>(section: &'r str, cell: &str) -> Option<&'r str> {
    section
        .lines()
        .find(|line| line.starts_with('|') && first_cell(line) == Some(cell))
}

/// `glibc` for `| glibc | 17.0 ms | ... |`.
fn first_cell(row: &str) -> Option<&str> {
    row.strip_prefix('|')?.split('|').next().map(str::trim)
}

/// What [`refresh_book`] did.
#[derive(Debug, Default)]
pub struct Refreshed {
    /// The pages it rewrote (their quotes had changed).
    pub pages: Vec<PathBuf>,
    /// Quotes it could not refresh, as `PAGE:LINE: what`.
    pub problems: Vec<String>,
}

/// Refreshes the rows that every page of `docs/src` quotes from the report at
/// `report` (a path relative to the workspace root, as the quotes name it), and writes
/// the pages that changed.
pub fn refresh_book(report: &str) -> Result<Refreshed, String> {
    let root = phases::workspace_root();
    let text = std::fs::read_to_string(root.join(report))
        .map_err(|e| format!("cannot read {report}: {e}"))?;
    let mut done = Refreshed::default();
    for page in pages(&root.join("docs/src"))? {
        let before = std::fs::read_to_string(&page)
            .map_err(|e| format!("cannot read {}: {e}", page.display()))?;
        let (after, problems) = refresh(&before, report, &text);
        let shown = page
            .strip_prefix(&root)
            .unwrap_or(&page)
            .display()
            .to_string();
        done.problems
            .extend(problems.iter().map(|problem| format!("{shown}:{problem}")));
        if after != before {
            std::fs::write(&page, after)
                .map_err(|e| format!("cannot write {}: {e}", page.display()))?;
            done.pages.push(page);
        }
    }
    Ok(done)
}

/// The `.md` files of `folder`, sorted.
fn pages(folder: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(folder).map_err(|e| format!("cannot list {}: {e}", folder.display()))?;
    let mut pages: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT_TEXT: &str = "# Benchmarks\n\n## Summary\n\n| workload | glibc | p1 |\n\
        |---|---:|---:|\n| small, 1 thread | 1.00x | 9.00x |\n\n\
        ## small, 1 thread (`x`)\n\n| allocator | time |\n|---|---:|\n\
        | glibc | 2 ms |\n| p1 | 18 ms |\n| p2 | 3 ms |\n\n\
        ## small, 2 threads (`x`)\n\n| allocator | time |\n|---|---:|\n\
        | glibc | 1 ms |\n| p1 | 40 ms |\n";

    #[test]
    fn each_row_comes_from_its_own_table() {
        let page = "Text | glibc | 7 ms |\n\n```text\n# docs/benchmarks.md\n\
            ## small, 1 thread (`x`)\n# ...\n| glibc | 1 ms |\n| p1 | 9 ms |\n# ...\n\
            ## small, 2 threads (`x`)\n# ...\n| p1 | 9 ms |\n```\n\n\
            ```text\n# other.md\n| glibc | 7 ms |\n```\n";
        let (refreshed, problems) = refresh(page, REPORT, REPORT_TEXT);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            refreshed,
            "Text | glibc | 7 ms |\n\n```text\n# docs/benchmarks.md\n\
            ## small, 1 thread (`x`)\n# ...\n| glibc | 2 ms |\n| p1 | 18 ms |\n# ...\n\
            ## small, 2 threads (`x`)\n# ...\n| p1 | 40 ms |\n```\n\n\
            ```text\n# other.md\n| glibc | 7 ms |\n```\n",
            "only the report's quotes change, each row from the table above it"
        );
        assert_eq!(refresh(&refreshed, REPORT, REPORT_TEXT).0, refreshed);
    }

    #[test]
    fn a_table_is_named_by_its_whole_heading() {
        let page = "```text\n# docs/benchmarks.md\n## small, 1 thread (`x`)\n| p1 | 0 |\n```\n";
        assert!(
            refresh(page, REPORT, REPORT_TEXT)
                .0
                .contains("| p1 | 18 ms |")
        );
        let prefix = "```text\n# docs/benchmarks.md\n## small, 1 thread\n| p1 | 0 |\n```\n";
        let (refreshed, problems) = refresh(prefix, REPORT, REPORT_TEXT);
        assert_eq!(refreshed, prefix, "a heading's beginning names no table");
        assert_eq!(problems.len(), 2, "{problems:?}");
        let summary = "```text\n# docs/benchmarks.md\n## Summary\n# ...\n\
            | small, 1 thread | 1.00x | 1.00x |\n```\n";
        assert!(
            refresh(summary, REPORT, REPORT_TEXT)
                .0
                .contains("| small, 1 thread | 1.00x | 9.00x |")
        );
    }

    #[test]
    fn what_the_report_lacks_is_left_and_reported() {
        let page = "\n```text\n# docs/benchmarks.md\n## small, 1 thread (`x`)\n| p3 | 1 ms |\n\
            ## small, 4 threads (`x`)\n| glibc | 1 ms |\n```\n";
        let (refreshed, problems) = refresh(page, REPORT, REPORT_TEXT);
        assert_eq!(refreshed, page);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("5: no row like this"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("6: docs/benchmarks.md has no table"));
        assert!(
            problems[2].starts_with("7: no row like this"),
            "{problems:?}"
        );
    }
}
