//! The rules on top of the points: what a phase is about, what no submission may do,
//! which checks can flip between runs, and why each check asks what it asks.
//!
//! - [`OWN_MEMORY`] is a gate: an allocator that hands out glibc's blocks (through
//!   `__libc_malloc`, or the next `malloc` found with `dlsym(RTLD_NEXT, …)`) passes
//!   most checks on glibc's behalf, so failing it scores 0 on the whole rubric.
//! - [`CORE`] names each phase's subject. A rubric whose core check fails scores at
//!   most one point under the pass mark ([`PASS_PERCENT`]), whatever else passed:
//!   an allocator lacking the behaviour the phase teaches cannot pass that phase.
//! - [`RACY`] checks look for data races, which show with high probability, not
//!   certainty: they run [`RACE_RUNS`] times and fail if any run fails.
//! - [`WHY`] gives the reason for every check, shown in the grading chapter beside
//!   what glibc on the grading machine does with it ([`rules_markdown`]).

use std::fmt::Write as _;

use crate::checks::{self, Area, Check, Verdict};

/// The grader's gate: the blocks do not come from glibc's heap.
pub static OWN_MEMORY: Check = Check {
    id: "api/own-memory",
    title: "the blocks come from the allocator, not from glibc's malloc (a gate: failing it scores 0)",
    area: Area::Api,
    since: 1,
    points: 0,
    timing: false,
    run: |subject| checks::probe(subject, "own-memory"),
};

/// Each phase's subject, the check that shows it, and what it is in words.
pub const CORE: &[(&str, &str)] = &[
    (
        "behaviour/reuse",
        "phase 1's subject: freed blocks are reused",
    ),
    (
        "behaviour/split",
        "phase 2's subject: a large free block is split",
    ),
    (
        "behaviour/coalesce",
        "phase 2's subject: free neighbours are merged",
    ),
    (
        "behaviour/mmap-large",
        "phase 3's subject: large blocks in mappings of their own",
    ),
    ("misuse/overflow", "phase 3's subject: the debug mode"),
    ("misuse/use-after-free", "phase 3's subject: the debug mode"),
    (
        "behaviour/good-fit",
        "phase 4's subject: a request takes the smallest free block that holds it",
    ),
];

/// The share of a rubric's maximum a submission needs to pass, in percent.
pub const PASS_PERCENT: u32 = 60;

/// Checks whose failure is a race between threads.
pub const RACY: &[&str] = &["threads/stress", "threads/bench", "threads/fork"];

/// How many times a racy check runs (it stops at the first failure).
pub const RACE_RUNS: u32 = 3;

pub fn is_core(id: &str) -> Option<&'static str> {
    CORE.iter().find(|(c, _)| *c == id).map(|(_, what)| *what)
}

pub fn is_racy(id: &str) -> bool {
    RACY.contains(&id)
}

/// Why the course asks what each check asks, by check id. Where the course departs
/// from glibc (the table in the grading chapter shows where), the reason says why.
pub const WHY: &[(&str, &str)] = &[
    (
        "api/own-memory",
        "the course is about writing an allocator; handing out glibc's blocks passes most checks on glibc's behalf",
    ),
    (
        "api/alignment",
        "C requires alignment for any object type: 16 bytes on x86-64 and AArch64 (`max_align_t`); SSE code faults on less",
    ),
    (
        "api/contents",
        "the one promise every program relies on: a live block keeps its bytes and overlaps no other",
    ),
    (
        "api/calloc",
        "C and POSIX: calloc zeroes, and a count × size that overflows fails with ENOMEM, also when the product wraps to a small number",
    ),
    (
        "api/realloc",
        "C and POSIX, and glibc where C leaves it open: `realloc(p, 0)` frees and returns NULL as glibc does, because programs written on Linux rely on it",
    ),
    (
        "api/memalign",
        "POSIX for posix_memalign (EINVAL for a bad alignment); for aligned_alloc C17 (DR 460) and glibc 2.38 and later: an alignment that is not a power of two fails with EINVAL; glibc 2.36 and 2.37 accept it, which the course does not",
    ),
    (
        "api/usable-size",
        "programs (and glibc's own code) use malloc_usable_size's answer as writable bytes",
    ),
    (
        "api/huge",
        "a size near SIZE_MAX must fail cleanly (NULL, ENOMEM) rather than wrap around in the allocator's arithmetic",
    ),
    (
        "api/errno",
        "POSIX 2024 requires that free preserves errno; programs read errno after a failing call followed by cleanup",
    ),
    (
        "threads/stress",
        "every program may be threaded; blocks freed by another thread than their owner are common",
    ),
    (
        "threads/fork",
        "a child of a threaded parent must be able to allocate: POSIX allows only async-signal-safe calls there, but glibc and real programs allocate",
    ),
    (
        "threads/bench",
        "the harness's own threaded workload must keep every block",
    ),
    (
        "programs/ls",
        "real programs, judged by their output under glibc's malloc",
    ),
    (
        "programs/cat",
        "real programs, judged by their output under glibc's malloc",
    ),
    (
        "programs/sort",
        "a threaded real program with large buffers, judged by its output under glibc's malloc",
    ),
    (
        "programs/grep",
        "real programs, judged by their output under glibc's malloc",
    ),
    (
        "programs/python3",
        "an interpreter with its own allocator on top of malloc, and calloc and realloc heavy",
    ),
    (
        "programs/git",
        "real programs, judged by their output under glibc's malloc",
    ),
    (
        "programs/gcc",
        "several processes and large realloc-grown buffers, judged by the assembly they write",
    ),
    (
        "misuse/double-free",
        "the course's contract (exit 3, one line naming the pointer): glibc aborts with SIGABRT instead, which a test cannot tell from a crash",
    ),
    (
        "misuse/invalid-free",
        "the course's contract (exit 2, one line naming the pointer): glibc aborts with SIGABRT instead",
    ),
    (
        "behaviour/reuse",
        "phase 1's subject: memory that is freed serves later requests",
    ),
    (
        "perf/small-1m",
        "a free list that grows without bound, or quadratic work, shows as time",
    ),
    (
        "behaviour/split",
        "phase 2's subject: a large free block serves small requests",
    ),
    (
        "behaviour/coalesce",
        "phase 2's subject: free neighbours merge to serve a larger request",
    ),
    (
        "behaviour/realloc-in-place",
        "phase 2: with boundary tags realloc can grow into a free neighbour instead of copying",
    ),
    (
        "behaviour/trim",
        "phase 2: memory freed at the top of the heap goes back to the OS",
    ),
    (
        "perf/traces",
        "the CS:APP malloc lab's index, utilization and throughput, in proportion",
    ),
    (
        "behaviour/mmap-large",
        "phase 3's subject: large blocks in mappings of their own, returned on free",
    ),
    (
        "behaviour/mmap-threshold",
        "glibc's interface (`MALLOC_MMAP_THRESHOLD_`, `mallopt`); the course also asks that a malformed value be reported once, which glibc does silently",
    ),
    (
        "behaviour/sbrk-failure",
        "the heap must keep growing (with mmap) when the program break cannot move, as glibc's does",
    ),
    (
        "misuse/overflow",
        "phase 3's debug mode (the course's `MALLOC_DEBUG=1`): canaries catch a one-byte overflow at free",
    ),
    (
        "misuse/use-after-free",
        "phase 3's debug mode: poisoned freed blocks catch a write after free",
    ),
    (
        "behaviour/good-fit",
        "phase 4's subject: size classes serve a request from the smallest free block that holds it, where first fit splinters whichever large block comes first",
    ),
    (
        "perf/bounded-search",
        "phase 4: with bins a request takes a bounded number of steps however many blocks are free; first fit walks them all",
    ),
    (
        "threads/scaling",
        "phase 5's per-thread heaps: threads that share no memory should not queue on one lock, so more threads do more work",
    ),
    (
        "threads/remote-free",
        "with per-thread heaps, a block freed by another thread must still come back into use, or producer-consumer programs grow without bound",
    ),
    (
        "misuse/double-free-threads",
        "the course's contract (exit 3) kept with per-thread heaps, where a block freed by another thread waits on a list its owner has not read yet; no production allocator measured here keeps it",
    ),
    (
        "misuse/never-given-out",
        "the course's contract (exit 2): an address where a block could start but none was handed out is misuse, not heap corruption; a per-block bitmap alone cannot tell the two apart",
    ),
    (
        "threads/exit",
        "with per-thread heaps, blocks outlive their thread and an exited thread's memory must be reused, or programs that start many threads grow",
    ),
    (
        "threads/dlopen-tls",
        "glibc calls malloc from its TLS code when dlopen has added __thread data; an allocator that finds its thread's data through that TLS recurses into itself",
    ),
    (
        "programs/python3-threads",
        "a real threaded program, compared with its output under glibc",
    ),
];

/// The reason for check `id`, if one is recorded.
pub fn why(id: &str) -> Option<&'static str> {
    WHY.iter().find(|(c, _)| *c == id).map(|(_, why)| *why)
}

/// What glibc on this machine does with a check, in a word: the verdict when the
/// check is run with glibc's own allocator preloaded, without the details (sizes,
/// addresses, times, how it failed) that differ between runs; the reason in [`WHY`]
/// says what glibc does where the course departs from it.
pub fn glibc_column(check: &Check, verdict: Option<&Verdict>) -> String {
    match verdict {
        None => "not run (timing)".into(),
        Some(Verdict::Pass(_)) => "passes".into(),
        Some(Verdict::Skip(_)) => "cannot run here".into(),
        // Only the word: how glibc fails can differ between runs (freeing a stack
        // address aborts, or crashes, depending on what lies before it).
        Some(Verdict::Fail(_)) if check.id == OWN_MEMORY.id => "fails: glibc is glibc".into(),
        Some(Verdict::Fail(_)) => "fails".into(),
    }
}

/// The grading chapter's table of rules: every check of the last phase's rubric, the
/// phase that brings it, what glibc here does with it (`glibc`: the verdicts of the
/// checks run with glibc preloaded, by id), and why the course asks it.
pub fn rules_markdown(glibc: &[(&'static str, Option<Verdict>)]) -> String {
    let mut out = String::from(
        "| check | since | core | glibc here | why the course asks it |\n|---|---|---|---|---|\n",
    );
    for check in super::rubric(crate::phases::last().number) {
        let verdict = glibc
            .iter()
            .find(|(id, _)| *id == check.id)
            .and_then(|(_, v)| v.as_ref());
        let core = if is_core(check.id).is_some() {
            "core"
        } else if check.id == OWN_MEMORY.id {
            "gate"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {core} | {} | {} |",
            check.id,
            check.since,
            glibc_column(check, verdict),
            why(check.id).unwrap_or("(no reason recorded)")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_has_a_reason_and_the_rule_lists_name_real_checks() {
        let rubric = super::super::rubric(crate::phases::last().number);
        for check in &rubric {
            assert!(why(check.id).is_some(), "{} has no reason in WHY", check.id);
        }
        let known = |id: &str| rubric.iter().any(|c| c.id == id);
        for id in CORE.iter().map(|(id, _)| *id).chain(RACY.iter().copied()) {
            assert!(known(id), "{id} is not a check");
        }
        for (id, _) in WHY {
            assert!(known(id), "WHY names {id}, which is not a check");
        }
    }
}
