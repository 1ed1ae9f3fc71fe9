//! `harness record --out FILE.trc -- CMD ARGS...`: runs a command with the
//! `malloc-recorder` preload and writes the allocation calls of its busiest process as a
//! threaded trace ([`crate::threaded_trace`]), which `bench_alloc --trace FILE.trc`
//! replays under any allocator.
//!
//! A command may start several processes (gcc runs cc1, as and ld); each writes its own
//! record file, and the trace is the one that made the most calls (a process's calls
//! are one heap's history; several processes' would not be).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::phases;
use crate::threaded_trace::{from_records, read_records};

/// The recorder's `.so` (built by [`record`]).
pub fn recorder_lib() -> PathBuf {
    phases::target_dir()
        .join("release")
        .join("libmalloc_recorder.so")
}

/// Records `command` into `out`; returns a summary for the person who ran it.
pub fn record(command: &[String], out: &Path) -> Result<String, String> {
    let (program, args) = command
        .split_first()
        .ok_or("harness record needs a command after --")?;
    phases::cargo_build_release(&["-p", "malloc-recorder"])?;
    let dir = std::env::temp_dir().join(format!("mymalloc-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let status = Command::new(program)
        .args(args)
        .env("LD_PRELOAD", recorder_lib())
        .env("MALLOC_RECORD", dir.join("calls"))
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"));
    let mut files: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for entry in std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        let pid = entry
            .file_name()
            .to_string_lossy()
            .trim_start_matches("calls.")
            .to_string();
        files.push((bytes.len(), pid, bytes));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = status?;
    if !status.success() {
        return Err(format!("{program} failed ({status}); nothing written"));
    }
    files.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let Some((_, _, busiest)) = files.first() else {
        return Err("no process wrote a record (is the program dynamically linked?)".into());
    };
    let records = read_records(busiest);
    let comments = vec![
        format!("recorded by: harness record -- {}", command.join(" ")),
        format!(
            "the busiest of {} process(es): {} calls",
            files.len(),
            records.len()
        ),
    ];
    let (trace, skipped) = from_records(&records, comments);
    std::fs::write(out, trace.to_text())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(format!(
        "{}: {} calls on {} thread(s), {} ids ({} processes recorded; left out: {} calls on \
         blocks allocated before recording, {} failed calls)",
        out.display(),
        trace.steps.len(),
        trace.threads,
        trace.ids,
        files.len(),
        skipped.unknown_blocks,
        skipped.failed
    ))
}
