//! Reading what the allocators print: `heap_dump()`'s block lines, the `[stats]` line,
//! and the `[trace …]` lines with which `bench_alloc --trace` introduces each one.
//!
//! ```text
//! [trace ops=71400 payload=2661754 heap_dump]
//! [BLOCK 0x0 764560 USED]
//! [MMAP #1 262144 USED]          <- phase 3's own mappings, drawn apart from the heap
//! [stats] in_use=6118752 free=176 fragmentation=0%
//! ```
//!
//! Lines that are none of these are skipped, so a phase may add lines of its own.

/// One block of a heap dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// The offset into the heap, as the dump prints it.
    pub offset: usize,
    pub size: usize,
    pub used: bool,
}

impl Block {
    pub fn end(&self) -> usize {
        self.offset + self.size
    }
}

/// A block with a mapping of its own (`[MMAP #index size USED]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub index: usize,
    pub size: usize,
    pub used: bool,
}

/// The `[stats]` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub in_use: usize,
    pub free: usize,
    pub fragmentation_percent: usize,
}

/// One heap dump: the blocks in address order, the mappings, the stats line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub blocks: Vec<Block>,
    pub mappings: Vec<Mapping>,
    pub stats: Stats,
}

impl Dump {
    /// Where the last block ends: the heap's extent as the map draws it.
    pub fn end(&self) -> usize {
        self.blocks.last().map_or(0, Block::end)
    }
}

/// What `bench_alloc --trace` printed at one point of a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Operations done so far.
    pub ops: usize,
    /// Bytes the trace had live at that point.
    pub payload: usize,
    /// Which call printed it: `heap_dump` or `malloc_stats`.
    pub call: String,
    /// Its output (no blocks for `malloc_stats`).
    pub dump: Dump,
}

/// Parses one heap dump (or a lone stats line). Errors name the line.
pub fn parse_dump(text: &str) -> Result<Dump, String> {
    let mut dump = Dump::default();
    let mut saw_stats = false;
    for line in text.lines().map(str::trim) {
        if let Some(body) = bracketed(line, "[BLOCK ") {
            let block = parse_block(body).ok_or_else(|| format!("unreadable line {line:?}"))?;
            dump.blocks.push(block);
        } else if let Some(body) = bracketed(line, "[MMAP ") {
            // Read leniently: `#N`, then the size, then the state; a line that does not
            // have that shape is left out of the picture rather than stopping it.
            if let Some(mapping) = parse_mapping(body) {
                dump.mappings.push(mapping);
            }
        } else if let Some(body) = line.strip_prefix("[stats] ") {
            dump.stats = parse_stats(body).ok_or_else(|| format!("unreadable line {line:?}"))?;
            saw_stats = true;
        }
    }
    if !saw_stats {
        return Err("no [stats] line".into());
    }
    if let Some(pair) = dump.blocks.windows(2).find(|w| w[1].offset < w[0].end()) {
        return Err(format!(
            "blocks out of address order or overlapping: {:?} then {:?}",
            pair[0], pair[1]
        ));
    }
    Ok(dump)
}

fn bracketed<'a>(line: &'a str, start: &str) -> Option<&'a str> {
    line.strip_prefix(start)?.strip_suffix(']')
}

/// `0x60 224 FREE`
fn parse_block(body: &str) -> Option<Block> {
    let mut fields = body.split_whitespace();
    let offset = usize::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
    let size = fields.next()?.parse().ok()?;
    let used = state(fields.next()?)?;
    fields
        .next()
        .is_none()
        .then_some(Block { offset, size, used })
}

/// `#1 262144 USED`
fn parse_mapping(body: &str) -> Option<Mapping> {
    let mut fields = body.split_whitespace();
    let index = fields.next()?.strip_prefix('#')?.parse().ok()?;
    let size = fields.next()?.parse().ok()?;
    let used = state(fields.last()?)?;
    Some(Mapping { index, size, used })
}

fn state(word: &str) -> Option<bool> {
    match word {
        "USED" => Some(true),
        "FREE" => Some(false),
        // Phase 4's quick blocks: freed by the program, kept unmerged; free memory.
        "QUICK" => Some(false),
        _ => None,
    }
}

/// `in_use=1216 free=0 fragmentation=0%`
fn parse_stats(body: &str) -> Option<Stats> {
    let mut stats = Stats::default();
    for field in body.split_whitespace() {
        let (key, value) = field.split_once('=')?;
        let number = value.trim_end_matches('%').parse().ok()?;
        match key {
            "in_use" => stats.in_use = number,
            "free" => stats.free = number,
            "fragmentation" => stats.fragmentation_percent = number,
            _ => {}
        }
    }
    Some(stats)
}

/// Splits `bench_alloc --trace`'s stderr at its `[trace …]` lines and parses each part.
pub fn parse_samples(stderr: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut current: Option<(usize, usize, String, String)> = None;
    let mut finish = |part: Option<(usize, usize, String, String)>| -> Result<(), String> {
        if let Some((ops, payload, call, text)) = part {
            let dump = parse_dump(&text).map_err(|e| format!("after {ops} operations: {e}"))?;
            samples.push(Sample {
                ops,
                payload,
                call,
                dump,
            });
        }
        Ok(())
    };
    for line in stderr.lines() {
        if let Some(body) = bracketed(line.trim(), "[trace ") {
            finish(current.take())?;
            let marker = parse_marker(body).ok_or_else(|| format!("unreadable line {line:?}"))?;
            current = Some((marker.0, marker.1, marker.2, String::new()));
        } else if let Some((_, _, _, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    finish(current.take())?;
    Ok(samples)
}

/// `ops=71400 payload=2661754 heap_dump`
fn parse_marker(body: &str) -> Option<(usize, usize, String)> {
    let mut fields = body.split_whitespace();
    let ops = fields.next()?.strip_prefix("ops=")?.parse().ok()?;
    let payload = fields.next()?.strip_prefix("payload=")?.parse().ok()?;
    let call = fields.next()?.to_string();
    Some((ops, payload, call))
}

/// The demo's dumps, from its transcript with stderr merged into stdout: each step's
/// heading (`8. one large block of 256 KiB`) and the dump printed under it.
pub fn demo_steps(transcript: &str) -> Result<Vec<(String, Dump)>, String> {
    transcript
        .split("\n== ")
        .skip(1)
        .map(|step| {
            let heading = step.lines().next().unwrap_or("").to_string();
            let dump = parse_dump(step).map_err(|e| format!("demo step {heading:?}: {e}"))?;
            Ok((heading, dump))
        })
        .collect()
}
