//! Threaded traces: real programs' allocation calls, thread by thread, as recorded by
//! `harness record` (through the `malloc-recorder` preload) and replayed by
//! `bench_alloc --trace FILE.trc`.
//!
//! The malloc-lab format ([`crate::trace`]) has one thread and three calls. Real programs
//! have threads, `calloc` and aligned blocks, so this format sits beside it, one call
//! per line, in the order the calls took effect:
//!
//! ```text
//! # mymalloc threaded trace 1          <- first line: the format and its version
//! # recorded: gcc -O2 -c file.c (cc1)  <- any number of comment lines
//! threads 2                            <- threads, numbered from 0 in order of first call
//! ids 812                              <- block ids are below this (reused after a free)
//! ops 120000                           <- lines that follow
//! 0 a 5 64                             <- thread 0: malloc(64) is block 5
//! 1 c 7 4096                           <- thread 1: calloc, 4096 bytes in all, is block 7
//! 0 m 8 100 64                         <- aligned_alloc/memalign/posix_memalign(64, 100)
//! 1 r 5 128                            <- realloc(block 5, 128): still block 5
//! 1 f 5                                <- free(block 5), here on another thread
//! ```
//!
//! Blocks still live when the program ended are never freed (as in the program). The
//! replay runs each recorded thread on a thread of its own and makes a call on a block
//! wait until the block's previous call (on any thread) is done, so it keeps each
//! block's history and each thread's order, and nothing more: threads otherwise run
//! freely, as the program's did.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

/// One call as `malloc-recorder` writes it (the `record-format` package: one
/// definition for both sides).
pub use record_format::{Kind, Record};

/// The first line of every threaded trace.
pub const MAGIC: &str = "# mymalloc threaded trace 1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Malloc { size: usize },
    Calloc { size: usize },
    Aligned { size: usize, align: usize },
    Realloc { size: usize },
    Free,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub thread: u32,
    pub id: u32,
    pub call: Call,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadedTrace {
    pub comments: Vec<String>,
    pub threads: usize,
    pub ids: usize,
    pub steps: Vec<Step>,
}

impl ThreadedTrace {
    /// Whether `text` is a threaded trace (rather than a malloc-lab one).
    pub fn is_threaded(text: &str) -> bool {
        text.starts_with(MAGIC)
    }

    /// Parses and checks a trace: numbers in range, no block allocated while live or
    /// used while not live.
    pub fn parse(text: &str) -> Result<ThreadedTrace, String> {
        ThreadedTrace::parse_with_room(text, 0)
    }

    /// [`ThreadedTrace::parse`], with room for `spare` more steps, as
    /// [`crate::trace::Trace::parse_with_room`] makes it (and for the same reason).
    pub fn parse_with_room(text: &str, spare: usize) -> Result<ThreadedTrace, String> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        if lines.next().map(|(_, l)| l) != Some(MAGIC) {
            return Err(format!("line 1: expected {MAGIC:?}"));
        }
        let mut comments = Vec::new();
        let mut body = lines.filter(|(_, l)| !l.is_empty()).peekable();
        while let Some((_, l)) = body.next_if(|(_, l)| l.starts_with('#')) {
            comments.push(l.trim_start_matches('#').trim().to_string());
        }
        let mut header = |name: &str| -> Result<usize, String> {
            let (n, l) = body
                .next()
                .ok_or_else(|| format!("missing the {name} line"))?;
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("line {n}: expected `{name} N`, found {l:?}"))
        };
        let threads = header("threads")?;
        let ids = header("ids")?;
        let count = header("ops")?;
        let mut live_flags = crate::trace::IdFlags::new(ids);
        let live = live_flags.as_mut_slice();
        let mut steps = Vec::with_capacity(count.saturating_add(spare));
        for (n, l) in body {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let number = |i: usize, what: &str| -> Result<usize, String> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("line {n}: expected the {what} in {l:?}"))
            };
            let thread = number(0, "thread")?;
            let id = number(2, "block id")?;
            if thread >= threads || id >= ids {
                return Err(format!(
                    "line {n}: thread or id out of the declared range in {l:?}"
                ));
            }
            let (call, arity) = match fields.get(1).copied() {
                Some("a") => (
                    Call::Malloc {
                        size: number(3, "size")?,
                    },
                    4,
                ),
                Some("c") => (
                    Call::Calloc {
                        size: number(3, "size")?,
                    },
                    4,
                ),
                Some("m") => (
                    Call::Aligned {
                        size: number(3, "size")?,
                        align: number(4, "alignment")?,
                    },
                    5,
                ),
                Some("r") => (
                    Call::Realloc {
                        size: number(3, "size")?,
                    },
                    4,
                ),
                Some("f") => (Call::Free, 3),
                _ => return Err(format!("line {n}: unknown call in {l:?} (a, c, m, r or f)")),
            };
            if fields.len() != arity {
                return Err(format!("line {n}: expected {arity} fields in {l:?}"));
            }
            let allocates = matches!(
                call,
                Call::Malloc { .. } | Call::Calloc { .. } | Call::Aligned { .. }
            );
            if allocates == live[id] {
                return Err(format!(
                    "line {n}: block {id} is {} in {l:?}",
                    if allocates {
                        "allocated while live"
                    } else {
                        "not live"
                    }
                ));
            }
            live[id] = call != Call::Free;
            steps.push(Step {
                thread: thread as u32,
                id: id as u32,
                call,
            });
        }
        if steps.len() != count {
            return Err(format!(
                "the header announces {count} ops but the trace has {}",
                steps.len()
            ));
        }
        Ok(ThreadedTrace {
            comments,
            threads,
            ids,
            steps,
        })
    }

    pub fn to_text(&self) -> String {
        let mut text = format!("{MAGIC}\n");
        for comment in &self.comments {
            let _ = writeln!(text, "# {comment}");
        }
        let _ = writeln!(
            text,
            "threads {}\nids {}\nops {}",
            self.threads,
            self.ids,
            self.steps.len()
        );
        for step in &self.steps {
            let (t, id) = (step.thread, step.id);
            let _ = match step.call {
                Call::Malloc { size } => writeln!(text, "{t} a {id} {size}"),
                Call::Calloc { size } => writeln!(text, "{t} c {id} {size}"),
                Call::Aligned { size, align } => writeln!(text, "{t} m {id} {size} {align}"),
                Call::Realloc { size } => writeln!(text, "{t} r {id} {size}"),
                Call::Free => writeln!(text, "{t} f {id}"),
            };
        }
        text
    }

    /// How many steps bring the live payload to its peak (the first time it is
    /// reached), in the order of the file.
    pub fn steps_to_peak(&self) -> usize {
        let calls = self.steps.iter().map(|step| {
            let size = match step.call {
                Call::Malloc { size }
                | Call::Calloc { size }
                | Call::Aligned { size, .. }
                | Call::Realloc { size } => size,
                Call::Free => 0,
            };
            (step.id as usize, size)
        });
        crate::trace::calls_to_peak(self.ids, calls)
    }

    /// Variant `variant` of this trace, as [`crate::trace::Trace::variant`] makes one
    /// of a malloc-lab trace: the stray block is allocated by the first thread.
    pub fn variant(mut self, variant: u32) -> ThreadedTrace {
        if variant != 0
            && let Some(at) = crate::trace::stray_block_at(self.steps_to_peak(), variant)
        {
            self.add_stray_block(at);
        }
        self
    }

    /// Makes this trace a variant, in place, as [`crate::trace::Trace::add_stray_block`]
    /// does (and for the same reason): the first thread allocates one more block before
    /// step `at`. A trace without threads has nowhere to put it and stays as it is.
    pub fn add_stray_block(&mut self, at: usize) {
        if self.threads == 0 {
            return;
        }
        let stray = Step {
            thread: 0,
            id: self.ids as u32,
            call: Call::Malloc {
                size: crate::trace::STRAY_BLOCK_SIZE,
            },
        };
        self.steps.insert(at.min(self.steps.len()), stray);
        self.ids += 1;
    }

    /// For each step, how many steps on the same block come before it: the replay's
    /// step waits until its block has seen that many.
    pub fn sequence_numbers(&self) -> Vec<u32> {
        let mut seen = vec![0u32; self.ids];
        self.sequence_numbers_counted_by(|id| {
            seen[id] += 1;
            seen[id] - 1
        })
    }

    /// [`ThreadedTrace::sequence_numbers`], with the counting left to `next`: given a
    /// block id, it returns how many steps on that block it has seen, and counts one
    /// more. A replay counts in its own per-block slots, so that no table is made and
    /// freed before the replay.
    pub fn sequence_numbers_counted_by(&self, mut next: impl FnMut(usize) -> u32) -> Vec<u32> {
        self.steps.iter().map(|s| next(s.id as usize)).collect()
    }
}

/// The records in a recorder file (a trailing partial record is dropped).
pub fn read_records(bytes: &[u8]) -> Vec<Record> {
    (bytes.chunks_exact(Record::BYTES))
        .filter_map(|bytes| Some(Record::from_bytes(bytes.try_into().ok()?)))
        .collect()
}

/// What [`from_records`] had to leave out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Frees and reallocs of blocks allocated before recording began (or whose
    /// allocation was lost at an `exec`).
    pub unknown_blocks: usize,
    /// Calls that returned NULL (a failed allocation changes nothing).
    pub failed: usize,
}

/// Turns a recorder's records into a trace: threads numbered in order of first call,
/// each block an id (the smallest free one, so ids stay few).
pub fn from_records(records: &[Record], comments: Vec<String>) -> (ThreadedTrace, Skipped) {
    let mut threads: HashMap<u64, u32> = HashMap::new();
    let mut live: HashMap<u64, u32> = HashMap::new();
    let mut free_ids: BTreeSet<u32> = BTreeSet::new();
    let mut next_id = 0u32;
    let mut steps = Vec::with_capacity(records.len());
    let mut skipped = Skipped::default();
    let mut fresh_id = |free_ids: &mut BTreeSet<u32>| {
        free_ids.pop_first().unwrap_or_else(|| {
            next_id += 1;
            next_id - 1
        })
    };
    for r in records {
        let count = threads.len() as u32;
        let thread = *threads.entry(r.thread).or_insert(count);
        let size = r.size as usize;
        let kind = Kind::from_code(r.kind);
        let new_call = match kind {
            Some(Kind::Malloc) => Some(Call::Malloc { size }),
            Some(Kind::Calloc) => Some(Call::Calloc { size }),
            Some(Kind::Memalign) => Some(Call::Aligned {
                size,
                align: r.align as usize,
            }),
            Some(Kind::Realloc) if !live.contains_key(&r.old) => Some(Call::Malloc { size }),
            _ => None,
        };
        if kind == Some(Kind::Realloc) && r.old != 0 && !live.contains_key(&r.old) {
            skipped.unknown_blocks += 1;
        }
        if let Some(call) = new_call {
            if r.result == 0 {
                skipped.failed += 1;
                continue;
            }
            // A block handed out again that we still think live: its free was lost
            // (made before a fork, say). Free it first so the replay stays consistent.
            if let Some(stale) = live.remove(&r.result) {
                push_free(&mut steps, &mut free_ids, thread, stale);
            }
            let id = fresh_id(&mut free_ids);
            live.insert(r.result, id);
            steps.push(Step { thread, id, call });
            continue;
        }
        let Some(&id) = live.get(&r.old) else {
            if kind == Some(Kind::Free) {
                skipped.unknown_blocks += 1;
            }
            continue;
        };
        match kind {
            Some(Kind::Free) => {
                live.remove(&r.old);
                push_free(&mut steps, &mut free_ids, thread, id);
            }
            Some(Kind::Realloc) if r.result == 0 && size == 0 => {
                // glibc's realloc(p, 0) frees p and returns NULL.
                live.remove(&r.old);
                push_free(&mut steps, &mut free_ids, thread, id);
            }
            Some(Kind::Realloc) if r.result == 0 => skipped.failed += 1,
            Some(Kind::Realloc) => {
                live.remove(&r.old);
                if let Some(stale) = live.remove(&r.result) {
                    push_free(&mut steps, &mut free_ids, thread, stale);
                }
                live.insert(r.result, id);
                steps.push(Step {
                    thread,
                    id,
                    call: Call::Realloc { size },
                });
            }
            _ => {}
        }
    }
    let trace = ThreadedTrace {
        comments,
        threads: threads.len().max(1),
        ids: next_id as usize,
        steps,
    };
    (trace, skipped)
}

/// Block `id` leaves the replay: a free step on `thread`, and its id can serve a new block.
fn push_free(steps: &mut Vec<Step>, free_ids: &mut BTreeSet<u32>, thread: u32, id: u32) {
    steps.push(Step {
        thread,
        id,
        call: Call::Free,
    });
    free_ids.insert(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, thread: u64, old: u64, size: u64, result: u64) -> Record {
        Record {
            kind: kind.code(),
            thread,
            old,
            size,
            align: if kind == Kind::Memalign { 64 } else { 0 },
            result,
        }
    }

    #[test]
    fn records_become_steps_with_reused_ids() {
        let records = [
            record(Kind::Malloc, 7, 0, 10, 0x100),      // malloc -> id 0
            record(Kind::Calloc, 9, 0, 20, 0x200),      // calloc on a second thread -> id 1
            record(Kind::Free, 9, 0x100, 0, 0),         // free of id 0, remote
            record(Kind::Memalign, 7, 0, 30, 0x300),    // aligned -> id 0 again
            record(Kind::Realloc, 7, 0x200, 40, 0x400), // realloc moves id 1
            record(Kind::Free, 7, 0x999, 0, 0),         // unknown block: skipped
            record(Kind::Malloc, 7, 0, 50, 0),          // failed: skipped
            record(Kind::Realloc, 9, 0x400, 0, 0),      // realloc(p, 0): a free
        ];
        let bytes: Vec<u8> = records.iter().flat_map(Record::to_bytes).collect();
        assert_eq!(
            read_records(&bytes[..bytes.len() - 1]),
            records[..records.len() - 1],
            "the file's records, a partial one dropped"
        );
        let (trace, skipped) = from_records(&records, vec!["test".into()]);
        let text = trace.to_text();
        assert_eq!(
            text,
            "# mymalloc threaded trace 1\n# test\nthreads 2\nids 2\nops 6\n\
             0 a 0 10\n1 c 1 20\n1 f 0\n0 m 0 30 64\n0 r 1 40\n1 f 1\n"
        );
        assert_eq!(
            skipped,
            Skipped {
                unknown_blocks: 1,
                failed: 1
            }
        );
        assert_eq!(ThreadedTrace::parse(&text), Ok(trace.clone()));
        assert_eq!(trace.sequence_numbers(), vec![0, 0, 1, 2, 1, 2]);
    }

    #[test]
    fn inconsistent_traces_are_refused() {
        let bad = |body: &str| {
            ThreadedTrace::parse(&format!("{MAGIC}\nthreads 1\nids 2\nops 1\n{body}\n"))
                .unwrap_err()
        };
        assert_eq!(bad("0 f 1"), "line 5: block 1 is not live in \"0 f 1\"");
        assert_eq!(
            bad("1 a 0 8"),
            "line 5: thread or id out of the declared range in \"1 a 0 8\""
        );
        assert_eq!(
            bad("0 x 0 8"),
            "line 5: unknown call in \"0 x 0 8\" (a, c, m, r or f)"
        );
        assert!(ThreadedTrace::parse("1\n2\n").is_err());
    }

    #[test]
    fn a_variant_adds_one_stray_block_on_the_first_thread_before_the_peak() {
        let text = format!(
            "{MAGIC}\nthreads 2\nids 2\nops 5\n0 a 0 100\n1 a 1 100\n1 f 0\n0 f 1\n0 a 0 10\n"
        );
        let trace = ThreadedTrace::parse(&text).unwrap();
        assert_eq!(trace.steps_to_peak(), 2);
        assert_eq!(trace.clone().variant(0), trace);
        let changed = trace.clone().variant(1);
        assert_eq!((changed.ids, changed.steps.len()), (3, 6));
        let stray = Step {
            thread: 0,
            id: 2,
            call: Call::Malloc {
                size: crate::trace::STRAY_BLOCK_SIZE,
            },
        };
        let at = changed.steps.iter().position(|s| *s == stray).unwrap();
        assert!(at < 2);
        assert_eq!(ThreadedTrace::parse(&changed.to_text()), Ok(changed));
    }
}
