//! The book's pictures (`harness pictures --out docs/src/pictures`) and the colour of heap
//! dumps on a terminal.
//!
//! The drawing is checked from fixed text, so a test can say exactly what must be in a
//! picture; the committed pictures are checked against what the command draws now,
//! from the phases built fresh.

use std::collections::BTreeSet;
use std::path::Path;

use harness::book::pictures::dump::{self, Block, Dump, Mapping, Stats};
use harness::book::pictures::{self, footprint, heap_map, svg};
use harness::phases;
use harness::runner::Run;
use harness::trace::Trace;

const DUMP: &str = "\
block 7: 109 bytes
[BLOCK 0x0 96 USED]
[BLOCK 0x60 224 FREE]
[BLOCK 0x140 48 USED]
[BLOCK 0x170 160 USED]
[MMAP #1 262144 USED]
[MMAP something phase 3 may print one day]
[stats] in_use=304 free=224 fragmentation=0%
";

/// Phase 4's quick blocks (freed, kept unmerged) are free memory in a picture; its
/// `[QUICK …]` and `[BIN …]` lines are skipped.
#[test]
fn a_quick_block_is_drawn_free() {
    let text = "[BLOCK 0x0 64 QUICK]\n[BLOCK 0x40 48 USED]\n\
                [QUICK 64 blocks=1 bytes=64]\n[stats] in_use=48 free=64\n";
    let dump = dump::parse_dump(text).unwrap();
    let used: Vec<bool> = dump.blocks.iter().map(|b| b.used).collect();
    assert_eq!(used, [false, true]);
}

#[test]
fn a_dump_parses_to_blocks_mappings_and_stats() {
    let dump = dump::parse_dump(DUMP).unwrap();
    let block = |offset, size, used| Block { offset, size, used };
    assert_eq!(
        dump,
        Dump {
            blocks: vec![
                block(0, 96, true),
                block(0x60, 224, false),
                block(0x140, 48, true),
                block(0x170, 160, true)
            ],
            mappings: vec![Mapping {
                index: 1,
                size: 262144,
                used: true
            }],
            stats: Stats {
                in_use: 304,
                free: 224,
                fragmentation_percent: 0
            },
        }
    );
    assert_eq!(dump.end(), 0x210);
}

#[test]
fn a_dump_out_of_order_or_without_stats_is_refused() {
    let no_stats = dump::parse_dump("[BLOCK 0x0 96 USED]\n").unwrap_err();
    assert_eq!(no_stats, "no [stats] line");
    let overlapping = "[BLOCK 0x0 96 USED]\n[BLOCK 0x50 16 FREE]\n[stats] in_use=96 free=16\n";
    assert!(
        dump::parse_dump(overlapping)
            .unwrap_err()
            .starts_with("blocks out of address order or overlapping")
    );
    let garbled = "[BLOCK 0x0 ninety USED]\n[stats] in_use=96 free=0\n";
    assert_eq!(
        dump::parse_dump(garbled).unwrap_err(),
        "unreadable line \"[BLOCK 0x0 ninety USED]\""
    );
}

#[test]
fn the_demo_transcript_splits_into_steps() {
    let transcript = format!(
        "bench_alloc demo, seed 42\n\n== 1. empty\n[stats] in_use=0 free=0 fragmentation=0%\n\
         \n== 2. three blocks\n{DUMP}\nSummary: allocs=3 frees=0\n"
    );
    let steps = dump::demo_steps(&transcript).unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].0, "1. empty");
    assert!(steps[0].1.blocks.is_empty());
    assert_eq!(steps[1].0, "2. three blocks");
    assert_eq!(steps[1].1.blocks.len(), 4);
}

/// a 0 10, a 1 20, r 0 5, f 1, f 0: live 0, 10, 30, 25, 5, 0.
const TRACE: &str = "30\n2\n5\n1\na 0 10\na 1 20\nr 0 5\nf 1\nf 0\n";

#[test]
fn the_live_payload_and_its_peak_come_from_the_trace() {
    let trace = Trace::parse(TRACE).unwrap();
    let payload = pictures::live_payload(&trace);
    assert_eq!(payload, [0, 10, 30, 25, 5, 0]);
    assert_eq!(pictures::ops_to_peak(&payload), 2);
}

/// What `bench_alloc --trace` prints with `--dump-at-peak --stats-every 2` on the trace
/// above: the harness's data is the block at 0x0.
const REPLAY: &str = "\
[trace ops=0 payload=0 heap_dump]
[BLOCK 0x0 4096 USED]
[stats] in_use=4096 free=0 fragmentation=0%
[trace ops=0 payload=0 malloc_stats]
[stats] in_use=4096 free=0 fragmentation=0%
[trace ops=2 payload=30 heap_dump]
[BLOCK 0x0 4096 USED]
[BLOCK 0x1000 32 USED]
[BLOCK 0x1020 48 USED]
[stats] in_use=4176 free=0 fragmentation=0%
[trace ops=2 payload=30 malloc_stats]
[stats] in_use=4176 free=0 fragmentation=0%
[trace ops=4 payload=5 malloc_stats]
[stats] in_use=4128 free=48 fragmentation=0%
[trace ops=5 payload=0 malloc_stats]
[stats] in_use=4096 free=80 fragmentation=0%
";

#[test]
fn a_replay_gives_two_dumps_the_harness_blocks_and_the_footprint() {
    let payload = pictures::live_payload(&Trace::parse(TRACE).unwrap());
    let samples = dump::parse_samples(REPLAY).unwrap();
    assert_eq!(samples.len(), 6);
    let run = pictures::trace_run(&samples, &payload).unwrap();
    assert_eq!(run.peak_ops, 2);
    assert_eq!(run.peak.blocks.len(), 3);
    assert_eq!(run.harness_blocks(), BTreeSet::from([(0, 4096)]));
    assert_eq!(run.footprint, [(0, 0), (2, 80), (4, 80), (5, 80)]);
    assert_eq!(run.peak_footprint(), 80);

    let lying = REPLAY.replace("ops=4 payload=5", "ops=4 payload=6");
    let error = pictures::trace_run(&dump::parse_samples(&lying).unwrap(), &payload);
    assert_eq!(
        error.unwrap_err(),
        "bench_alloc says 6 B live after 4 operations; the trace says Some(5)"
    );
    let late = REPLAY.replace("ops=2 payload=30 heap_dump", "ops=3 payload=25 heap_dump");
    let error = pictures::trace_run(&dump::parse_samples(&late).unwrap(), &payload);
    assert!(
        error
            .unwrap_err()
            .starts_with("the dumps are after 0 and 3")
    );
}

/// Each `<rect …>` of a fill colour, as `(x, width)`.
fn rects(svg: &str, fill: &str) -> Vec<(f64, f64)> {
    let attr = |line: &str, name: &str| -> f64 {
        let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        let rest = &line[start..];
        rest[..rest.find('"').unwrap()].parse().unwrap()
    };
    svg.lines()
        .filter(|l| l.starts_with("<rect x=") && l.contains(&format!("fill=\"{fill}\"")))
        .map(|l| (attr(l, "x"), attr(l, "width")))
        .collect()
}

fn row(label: &str, text: &str) -> heap_map::Row {
    heap_map::Row {
        label: label.into(),
        dump: dump::parse_dump(text).unwrap(),
        harness: BTreeSet::new(),
        harness_mappings: BTreeSet::new(),
    }
}

#[test]
fn a_heap_map_draws_blocks_to_one_scale_in_address_order() {
    let small = "[BLOCK 0x0 96 USED]\n[BLOCK 0x60 32 FREE]\n[stats] in_use=96 free=32\n";
    let rows = [row("first", DUMP), row("second", small)];
    let picture = heap_map::render("Title <&>", &["a note".into()], &rows);
    assert!(picture.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(picture.contains("<title>Title &lt;&amp;&gt;</title>"));
    assert!(picture.contains(">a note</text>"));
    // Legend swatches first, then each row's blocks in address order.
    let used = rects(&picture, svg::USED);
    let free = rects(&picture, svg::FREE);
    let scale = heap_map::scale(&rows);
    let close = |a: f64, b: f64| (a - b).abs() <= 0.05;
    // used[0] is the legend's swatch, used[4] the first row's mapping.
    let (first_96, first_48, second_96) = (used[1], used[2], used[5]);
    assert!(close(first_96.1, 96.0 * scale), "{first_96:?}");
    assert!(close(first_48.1, 48.0 * scale), "{first_48:?}");
    assert!(close(second_96.1, first_96.1), "one scale for every row");
    assert!(
        close(free[1].0, first_96.0 + first_96.1),
        "the free block follows"
    );
    assert!(close(free[1].1, 224.0 * scale));
    // Block sizes are written in the blocks; the mapping is a dashed box apart.
    for label in [
        ">96</text>",
        ">224</text>",
        ">mmap #1</text>",
        ">256 KiB</text>",
    ] {
        assert!(picture.contains(label), "{label} missing");
    }
    assert!(picture.contains("a block in a mapping of its own (mmap)"));
    assert!(picture.contains("in_use=304 free=224 fragmentation=0%"));
    assert!(
        !picture.contains("shortened"),
        "no block is most of its heap"
    );
}

#[test]
fn a_block_that_is_most_of_its_heap_and_the_harness_data_are_shortened() {
    let text = "[BLOCK 0x0 48 USED]\n[BLOCK 0x30 1000000 USED]\n[BLOCK 0xf4270 32 FREE]\n\
                [stats] in_use=1000048 free=32\n";
    let mut harness = row(
        "harness",
        "[BLOCK 0x0 4096 USED]\n[BLOCK 0x1000 64 USED]\n[stats] in_use=4160 free=0\n",
    );
    harness.harness.insert((0, 4096));
    let rows = [row("big", text), harness];
    let picture = heap_map::render("t", &[], &rows);
    assert!(picture.contains("shortened: a block of more than four fifths of its heap"));
    assert!(picture.contains(">976.6 KiB</text>"));
    assert!(picture.contains(">4 KiB</text>"));
    assert_eq!(rects(&picture, svg::HARNESS).len(), 2, "swatch and block");
    // The scale is set by the blocks drawn to scale: 48 + 32 bytes and 64 bytes.
    let used = rects(&picture, svg::USED);
    assert!(
        used.iter()
            .any(|r| (r.1 - 48.0 * heap_map::scale(&rows)).abs() < 0.05)
    );
}

#[test]
fn a_heap_of_many_blocks_is_drawn_by_pixel_columns() {
    // 7296 blocks of 16 bytes on 912 pixels: 128 bytes, 8 blocks, in each column.
    let mut text = String::new();
    for i in 0..7296 {
        let state = if i % 4 == 0 { "FREE" } else { "USED" };
        text.push_str(&format!("[BLOCK {:#x} 16 {state}]\n", i * 16));
    }
    text.push_str("[stats] in_use=87552 free=29184 fragmentation=99%\n");
    let picture = heap_map::render("t", &[], &[row("many", &text)]);
    assert!(picture.contains("each pixel column shows the share"));
    let used = rects(&picture, svg::USED);
    let free = rects(&picture, svg::FREE);
    assert!(
        used.len() + free.len() < 100,
        "columns merge: {}",
        used.len()
    );
    // Every column is three quarters used: the used parts are 33 of the bar's 44 px.
    let heights: BTreeSet<&str> = picture
        .lines()
        .filter(|l| l.contains(svg::USED) && l.starts_with("<rect x=\"24\" y="))
        .skip(1) // the legend's swatch
        .map(|l| {
            l.split("height=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(heights, BTreeSet::from(["33"]));
}

#[test]
fn the_footprint_chart_draws_each_series_and_its_legend() {
    let series = |label: &str, colour, points: Vec<(usize, usize)>| footprint::Series {
        label: label.into(),
        colour,
        dash: "",
        width: 2.0,
        points,
    };
    let lines = [
        series("payload", svg::INK, vec![(0, 0), (50, 3 << 20), (100, 0)]),
        series(
            "phase 1",
            svg::PHASE_COLOURS[0],
            vec![(0, 0), (100, 6 << 20)],
        ),
    ];
    let marker = footprint::Marker {
        ops: 50,
        label: "peak".into(),
    };
    let picture = footprint::render("t", &[], "operations", &lines, Some(&marker));
    let polylines: Vec<&str> = picture
        .lines()
        .filter(|l| l.starts_with("<polyline"))
        .collect();
    assert_eq!(polylines.len(), 4, "two lines and their two legend samples");
    assert!(
        polylines[0].starts_with("<polyline points=\"92,"),
        "x starts at the axis"
    );
    for label in [
        ">payload</text>",
        ">phase 1</text>",
        ">peak</text>",
        ">6 MiB</text>",
        ">100</text>",
    ] {
        assert!(picture.contains(label), "{label} missing");
    }
}

/// The committed pictures are exactly what `harness pictures` draws from the phases
/// now. If this fails after a change to a phase or to the drawing, run
/// `cargo run -p harness --bin harness -- pictures --out docs/src/pictures` and look at
/// the difference.
#[test]
fn committed_pictures_are_what_the_command_draws() {
    let drawn = pictures::draw_all().unwrap();
    let dir = phases::workspace_root().join("docs/src/pictures");
    for picture in &drawn {
        let path = dir.join(&picture.file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == picture.svg,
            "{} is not what `harness pictures --out docs/src/pictures` draws now",
            path.display()
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = drawn.iter().map(|p| p.file.clone()).collect();
    expected.sort();
    assert_eq!(
        files, expected,
        "docs/src/pictures holds only the drawn pictures"
    );
    // Every phase is in every picture; the realloc trace's pictures start at phase 3.
    for phase in phases::PHASES {
        for picture in &drawn {
            if picture.file.starts_with(pictures::REALLOC_TRACE)
                && phase.number < pictures::REALLOC_FROM_PHASE
            {
                continue;
            }
            assert!(
                picture
                    .svg
                    .contains(&format!("phase {} ({})", phase.number, phase.package)),
                "{} lacks phase {}",
                picture.file,
                phase.number
            );
        }
    }
}

/// `bench_alloc --trace` with both flags: a stats line every N operations and after
/// the last, and dumps before the first and at the peak the trace itself gives.
#[test]
fn the_replay_reports_stats_every_n_operations_and_dumps_at_the_peak() {
    phases::build_all().unwrap();
    let path = phases::workspace_root().join("harness/traces/realloc.rep");
    let trace = Trace::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let payload = pictures::live_payload(&trace);
    let outcome = Run::new(phases::bench_alloc_release())
        .args(["--trace".as_ref(), path.as_os_str()])
        .args(["--dump-at-peak", "--stats-every", "1000"])
        .preload(Some(&phases::PHASES[0].lib_path()))
        .run()
        .unwrap();
    assert!(outcome.succeeded(), "{outcome}");
    let samples = dump::parse_samples(&outcome.stderr_text()).unwrap();
    let stats: Vec<usize> = samples
        .iter()
        .filter(|s| s.call == "malloc_stats")
        .map(|s| s.ops)
        .collect();
    let ops = trace.ops.len();
    let expected: Vec<usize> = (0..=ops).step_by(1000).chain([ops]).collect();
    assert_eq!(stats, expected);
    let run = pictures::trace_run(&samples, &payload).unwrap();
    assert_eq!(run.peak_ops, pictures::ops_to_peak(&payload));
    assert!(run.peak.blocks.len() > run.before.blocks.len());
}

#[test]
fn the_replay_flags_need_a_trace() {
    phases::build_all().unwrap();
    let outcome = Run::new(phases::bench_alloc_release())
        .arg("--dump-at-peak")
        .run()
        .unwrap();
    assert_eq!(outcome.exit_code(), Some(2));
    assert!(
        outcome
            .stderr_text()
            .starts_with("bench_alloc: --dump-at-peak, --stats-every and --variant need --trace\n")
    );
}

/// The demo's transcript under phase 1, with stderr going where `how` sends it.
fn demo(how: &str, no_color: Option<&str>) -> String {
    phases::build_all().unwrap();
    let lib = phases::PHASES[0].lib_path();
    let mut command = format!(
        "LD_PRELOAD={} {}",
        lib.display(),
        phases::bench_alloc_release().display()
    );
    if let Some(value) = no_color {
        command = format!("NO_COLOR='{value}' {command}");
    }
    let script = match how {
        "file" => format!("{command} 2>dump.txt >/dev/null; cat dump.txt"),
        "pipe" => format!("{command} 2>&1 | cat"),
        // `script` runs the command on a new pseudo-terminal and copies what it shows.
        "terminal" => format!("script -qec \"{command}\" /dev/null"),
        _ => unreachable!(),
    };
    let dir = tempfile::tempdir().unwrap();
    let outcome = Run::new("sh")
        .args(["-c", &script])
        .env("NO_COLOR", "")
        .cwd(dir.path())
        .run()
        .unwrap();
    assert!(outcome.succeeded(), "{script}: {outcome}");
    outcome.stdout_text()
}

const USED_IN_COLOUR: &str = "\x1b[33mUSED\x1b[0m]";
const FREE_IN_COLOUR: &str = "\x1b[32mFREE\x1b[0m]";

#[test]
fn heap_dumps_in_files_and_pipes_are_plain() {
    for how in ["file", "pipe"] {
        let text = demo(how, None);
        assert!(text.contains("[BLOCK 0x60 224 USED]"), "{how}: {text}");
        assert!(!text.contains('\x1b'), "{how}: an escape code in {text:?}");
    }
}

fn have_script() -> bool {
    let found = Path::new("/usr/bin/script").exists() || Path::new("/bin/script").exists();
    if !found {
        eprintln!("skipped: no `script` (util-linux) to run the demo on a pseudo-terminal");
    }
    found
}

#[test]
fn heap_dumps_on_a_terminal_are_coloured_unless_no_color_is_set() {
    if !have_script() {
        return;
    }
    let coloured = demo("terminal", None);
    assert!(
        coloured.contains(&format!("[BLOCK 0x60 224 {USED_IN_COLOUR}")),
        "{coloured:?}"
    );
    assert!(coloured.contains(FREE_IN_COLOUR), "{coloured:?}");
    assert!(
        !coloured.contains("[stats] in_use=0 free=0 fragmentation=0%\x1b"),
        "only the state words are coloured"
    );
    // no-color.org: set and not empty, whatever the value, means no colour.
    for value in ["1", "0", "false"] {
        let plain = demo("terminal", Some(value));
        assert!(plain.contains("[BLOCK 0x60 224 USED]"), "{plain:?}");
        assert!(!plain.contains('\x1b'), "NO_COLOR={value}: {plain:?}");
    }
    let empty = demo("terminal", Some(""));
    assert!(
        empty.contains(USED_IN_COLOUR),
        "an empty NO_COLOR is unset: {empty:?}"
    );
}
