//! The book's pictures, drawn from what the allocators report about themselves.
//!
//! ```text
//! harness pictures --out docs/src/pictures
//! ```
//!
//! builds every phase, runs `bench_alloc` under each, and writes (into the book's
//! source folder, so that mdBook copies them and a chapter links `pictures/NAME.svg`):
//!
//! - `demo-heap-map.svg`: every phase's heap after the demo's final-but-one step (all
//!   its blocks allocated), from `heap_dump()`;
//! - `coalescing-heap-map.svg`: every phase's heap right after the operation of the
//!   `coalescing` trace at which the most payload is live (`--dump-at-peak`);
//! - `coalescing-footprint.svg`: over that trace, the live payload and each phase's
//!   footprint (`in_use + free` from `malloc_stats()`, every [`STATS_EVERY`] operations).
//!
//! Only numbers the allocators print (block offsets and sizes, `[stats]` byte counts)
//! and numbers read from the trace go into a picture; never times or resident sizes. So
//! the same code draws the same bytes, and `harness/tests/pictures.rs` checks that the
//! committed pictures are what this command draws now. A phase appears as soon as it is
//! in [`phases::PHASES`].
//!
//! The trace is `coalescing` because it is where phases differ most: each round frees
//! a run of small neighbours and then asks for blocks larger than any of them, so a
//! heap that cannot merge neighbours grows by a dead run every round.

pub mod dump;
pub mod footprint;
pub mod heap_map;
pub mod svg;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::phases::{self, Phase};
use crate::runner::Run;
use crate::trace::{Op, Trace};
use dump::{Dump, Sample};

/// The trace of the trace pictures (a file in `harness/traces/`).
pub const TRACE: &str = "coalescing";
/// How often the footprint is sampled, in operations.
pub const STATS_EVERY: usize = 100;
/// The demo's seed (`MALLOC_DEBUG_SEED`), as in the golden files.
pub const DEMO_SEED: &str = "42";

/// One picture: its file name and its SVG text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    pub file: String,
    pub svg: String,
}

/// What one phase showed.
#[derive(Clone, Debug)]
pub struct PhaseRun {
    pub phase: Phase,
    /// The demo's final-but-one step: its heading and its dump.
    pub demo: (String, Dump),
    /// `bench_alloc --trace` with `--dump-at-peak` and `--stats-every`.
    pub trace: TraceRun,
}

/// A replay of [`TRACE`] under one phase.
#[derive(Clone, Debug)]
pub struct TraceRun {
    /// The heap before the first operation: the harness's own data and nothing else.
    pub before: Dump,
    /// Operations done at the peak, and the heap then.
    pub peak_ops: usize,
    pub peak: Dump,
    /// `(operations done, footprint)`, the footprint being `in_use + free` less the
    /// bytes in use before the first operation (the harness's own data).
    pub footprint: Vec<(usize, usize)>,
}

impl TraceRun {
    /// The blocks of the harness's own data: in use before the first operation and
    /// still there, the same, at the peak (the trace text and the replay's two tables).
    pub fn harness_blocks(&self) -> BTreeSet<(usize, usize)> {
        let before: BTreeSet<_> = (self.before.blocks.iter())
            .filter(|b| b.used)
            .map(|b| (b.offset, b.size))
            .collect();
        (self.peak.blocks.iter())
            .filter(|b| b.used && before.contains(&(b.offset, b.size)))
            .map(|b| (b.offset, b.size))
            .collect()
    }

    /// Likewise for mappings (phase 3 maps large blocks), as `(index, size)`.
    pub fn harness_mappings(&self) -> BTreeSet<(usize, usize)> {
        let before: BTreeSet<_> = (self.before.mappings.iter())
            .filter(|m| m.used)
            .map(|m| (m.index, m.size))
            .collect();
        (self.peak.mappings.iter())
            .filter(|m| m.used && before.contains(&(m.index, m.size)))
            .map(|m| (m.index, m.size))
            .collect()
    }

    pub fn peak_footprint(&self) -> usize {
        self.footprint.iter().map(|p| p.1).max().unwrap_or(0)
    }
}

/// The live payload before any operation (index 0) and after each one.
pub fn live_payload(trace: &Trace) -> Vec<usize> {
    let mut sizes = vec![0usize; trace.ids];
    let mut live = 0usize;
    let mut payload = Vec::with_capacity(trace.ops.len() + 1);
    payload.push(0);
    for op in &trace.ops {
        match *op {
            Op::Alloc { id, size } | Op::Realloc { id, size } => {
                live = live - sizes[id] + size;
                sizes[id] = size;
            }
            Op::Free { id } => live -= std::mem::take(&mut sizes[id]),
        }
        payload.push(live);
    }
    payload
}

/// The number of operations after which the payload first reaches its peak.
pub fn ops_to_peak(payload: &[usize]) -> usize {
    let peak = payload.iter().copied().max().unwrap_or(0);
    payload.iter().position(|&p| p == peak).unwrap_or(0)
}

fn traces_dir() -> std::path::PathBuf {
    phases::workspace_root().join("harness/traces")
}

/// Runs `bench_alloc ARGS` under `phase` in a clean environment (`env -i`: no
/// `MALLOC_*` setting of the caller's can change a picture) from `harness/traces/`,
/// so that the trace's path is the same short name wherever the repository is.
fn bench_alloc(phase: &Phase, args: &[&str], merge_stderr: bool) -> Result<String, String> {
    let mut run = Run::new("env")
        .arg("-i")
        .arg(format!("LD_PRELOAD={}", phase.lib_path().display()))
        .arg(format!("MALLOC_DEBUG_SEED={DEMO_SEED}"))
        .arg(phases::bench_alloc_release())
        .args(args)
        .cwd(traces_dir())
        .timeout(Duration::from_secs(300));
    if merge_stderr {
        run = run.merge_stderr();
    }
    let outcome = run
        .run()
        .map_err(|e| format!("cannot run bench_alloc: {e}"))?;
    if !outcome.succeeded() {
        return Err(format!(
            "bench_alloc {} under {}: {outcome}\n{}",
            args.join(" "),
            phase.package,
            outcome.stderr_text()
        ));
    }
    Ok(if merge_stderr {
        outcome.stdout_text()
    } else {
        outcome.stderr_text()
    })
}

/// Runs the demo and the trace under `phase`; `payload` is the trace's live payload.
pub fn run_phase(phase: &Phase, payload: &[usize]) -> Result<PhaseRun, String> {
    let transcript = bench_alloc(phase, &[], true)?;
    let mut steps = dump::demo_steps(&transcript)?;
    if steps.len() < 2 {
        return Err(format!(
            "the demo under {} dumped fewer than twice",
            phase.package
        ));
    }
    steps.pop();
    let demo = steps.pop().unwrap_or_default();

    let every = STATS_EVERY.to_string();
    let file = format!("{TRACE}.rep");
    let stderr = bench_alloc(
        phase,
        &["--trace", &file, "--dump-at-peak", "--stats-every", &every],
        false,
    )?;
    let samples = dump::parse_samples(&stderr)?;
    let trace = trace_run(&samples, payload).map_err(|e| format!("{}: {e}", phase.package))?;
    Ok(PhaseRun {
        phase: *phase,
        demo,
        trace,
    })
}

/// Sorts a replay's samples into the two dumps and the footprint, checking each
/// against the payload computed here from the trace.
pub fn trace_run(samples: &[Sample], payload: &[usize]) -> Result<TraceRun, String> {
    for sample in samples {
        if payload.get(sample.ops) != Some(&sample.payload) {
            return Err(format!(
                "bench_alloc says {} B live after {} operations; the trace says {:?}",
                sample.payload,
                sample.ops,
                payload.get(sample.ops)
            ));
        }
    }
    let dumps: Vec<&Sample> = samples.iter().filter(|s| s.call == "heap_dump").collect();
    let stats: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.call == "malloc_stats")
        .collect();
    let [before, peak] = dumps[..] else {
        return Err(format!("expected 2 heap dumps, found {}", dumps.len()));
    };
    let peak_ops = ops_to_peak(payload);
    if before.ops != 0 || peak.ops != peak_ops {
        return Err(format!(
            "the dumps are after {} and {} operations; expected 0 and {peak_ops} (the peak)",
            before.ops, peak.ops
        ));
    }
    let Some(first) = stats.first() else {
        return Err("no malloc_stats samples".into());
    };
    let harness = first.dump.stats.in_use;
    let footprint = (stats.iter())
        .map(|s| {
            let total = s.dump.stats.in_use + s.dump.stats.free;
            (s.ops, total.saturating_sub(harness))
        })
        .collect();
    Ok(TraceRun {
        before: before.dump.clone(),
        peak_ops,
        peak: peak.dump.clone(),
        footprint,
    })
}

fn phase_label(phase: &Phase) -> String {
    format!("phase {} ({})", phase.number, phase.package)
}

/// Builds everything, runs every phase, and draws the pictures.
pub fn draw_all() -> Result<Vec<Picture>, String> {
    phases::build_all()?;
    let path = traces_dir().join(format!("{TRACE}.rep"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let trace = Trace::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let payload = live_payload(&trace);
    let runs = (phases::PHASES.iter())
        .map(|phase| run_phase(phase, &payload))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(draw(&runs, &payload))
}

/// Draws the pictures from the phases' runs.
pub fn draw(runs: &[PhaseRun], payload: &[usize]) -> Vec<Picture> {
    let heading = runs.first().map_or("", |run| run.demo.0.as_str());
    let title = match heading.split_once(". ") {
        Some((step, what)) => format!("The heap after step {step} of the demo: {what}"),
        None => format!("The heap after the demo's step {heading}"),
    };
    let demo_rows: Vec<heap_map::Row> = (runs.iter())
        .map(|run| heap_map::Row {
            label: phase_label(&run.phase),
            dump: run.demo.1.clone(),
            harness: BTreeSet::new(),
            harness_mappings: BTreeSet::new(),
        })
        .collect();
    let demo = heap_map::render(
        &title,
        &[
            format!(
                "bench_alloc's demo (MALLOC_DEBUG_SEED={DEMO_SEED}), final-but-one heap_dump(): \
                 every block the demo makes is allocated."
            ),
            "Blocks in address order, each as wide as its size in bytes (header included)."
                .to_string(),
        ],
        &demo_rows,
    );

    let peak_ops = ops_to_peak(payload);
    let peak_payload = payload.get(peak_ops).copied().unwrap_or(0);
    let ops = payload.len().saturating_sub(1);
    let peak_rows: Vec<heap_map::Row> = (runs.iter())
        .map(|run| heap_map::Row {
            label: phase_label(&run.phase),
            dump: run.trace.peak.clone(),
            harness: run.trace.harness_blocks(),
            harness_mappings: run.trace.harness_mappings(),
        })
        .collect();
    let peak_map = heap_map::render(
        &format!("The heap at the peak of the {TRACE} trace"),
        &[
            format!(
                "heap_dump() right after operation {} of {}, when {} B of payload are live \
                 (bench_alloc --trace {TRACE}.rep --dump-at-peak).",
                svg::grouped(peak_ops),
                svg::grouped(ops),
                svg::grouped(peak_payload)
            ),
            "Blocks in address order; a heap that cannot merge free neighbours keeps the \
             dead runs of earlier rounds."
                .to_string(),
        ],
        &peak_rows,
    );

    let sampled = |ops: usize| payload.get(ops).copied().unwrap_or(0);
    let mut series = vec![footprint::Series {
        label: format!("live payload (peak {})", svg::bytes(peak_payload)),
        colour: svg::INK,
        dash: "",
        width: 1.5,
        points: (runs.first().map(|r| r.trace.footprint.clone()))
            .unwrap_or_default()
            .iter()
            .map(|&(ops, _)| (ops, sampled(ops)))
            .collect(),
    }];
    for (i, run) in runs.iter().enumerate() {
        let peak = run.trace.peak_footprint();
        series.push(footprint::Series {
            label: format!(
                "{}: footprint, peak {}, utilization {}%",
                phase_label(&run.phase),
                svg::bytes(peak),
                (100 * peak_payload).checked_div(peak).unwrap_or(0)
            ),
            colour: svg::PHASE_COLOURS[i % svg::PHASE_COLOURS.len()],
            dash: svg::PHASE_DASHES[i % svg::PHASE_DASHES.len()],
            width: 2.5,
            points: run.trace.footprint.clone(),
        });
    }
    let chart = footprint::render(
        &format!("Heap footprint over the {TRACE} trace"),
        &[
            format!(
                "footprint = in_use + free from malloc_stats() every {STATS_EVERY} operations, \
                 less what the harness's own data held before the first one;"
            ),
            format!(
                "utilization = peak payload / peak footprint \
                 (bench_alloc --trace {TRACE}.rep --stats-every {STATS_EVERY})."
            ),
        ],
        &format!("operations of {TRACE}.rep replayed"),
        &series,
        Some(&footprint::Marker {
            ops: peak_ops,
            label: "peak payload (the heap map)".to_string(),
        }),
    );
    vec![
        Picture {
            file: "demo-heap-map.svg".into(),
            svg: demo,
        },
        Picture {
            file: format!("{TRACE}-heap-map.svg"),
            svg: peak_map,
        },
        Picture {
            file: format!("{TRACE}-footprint.svg"),
            svg: chart,
        },
    ]
}

/// Writes `pictures` into `dir`.
pub fn write(pictures: &[Picture], dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for picture in pictures {
        let path = dir.join(&picture.file);
        std::fs::write(&path, &picture.svg)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
