//! Allocation traces in the CS:APP malloc-lab format, and the seeded generator of the
//! suite in `harness/traces/`.
//!
//! ```text
//! 20000        <- suggested heap size (a hint; unused here)
//! 1000         <- number of distinct block ids
//! 24000        <- number of operations below
//! 1            <- weight (used when a grade averages several traces)
//! a 0 512      <- allocate 512 bytes as block 0
//! r 0 1024     <- resize block 0 to 1024 bytes
//! f 0          <- free block 0
//! ```
//!
//! `bench_alloc --trace FILE` replays one (see its `trace` module). The committed
//! traces are this module's output: `harness traces --out harness/traces` writes them
//! again, and a test checks that the committed files still match.

use std::fmt::Write as _;

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Alloc { id: usize, size: usize },
    Realloc { id: usize, size: usize },
    Free { id: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub heap_hint: usize,
    pub ids: usize,
    pub weight: u32,
    pub ops: Vec<Op>,
}

/// A malformed trace: which line, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl Trace {
    /// Parses a trace and checks that it is consistent: ids in range, no block
    /// allocated twice, freed or resized before it exists.
    pub fn parse(text: &str) -> Result<Trace, ParseError> {
        Trace::parse_with_room(text, 0)
    }

    /// [`Trace::parse`], with room in the table of operations for `spare` more, so
    /// that [`Trace::add_stray_block`] does not move it. Only a replay of a variant
    /// asks for room: the trace as written keeps the table of the size it always had,
    /// and with it the heap the pictures show.
    pub fn parse_with_room(text: &str, spare: usize) -> Result<Trace, ParseError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, line)| (i + 1, line.trim()))
            .filter(|(_, l)| !l.is_empty());
        let mut header = |what: &str| -> Result<usize, ParseError> {
            // `ok_or`, which formats the message whether or not it is needed, and not
            // `ok_or_else`: the four strings made and freed here are part of the heap
            // every report's replays started from, and glibc's `random.rep` moves
            // between 93.1% and 92.3% without them (chapter 4, "One replay is one
            // draw"). Change it and the reports' utilization changes with it.
            let (line, text) = lines.next().ok_or(ParseError {
                line: 0,
                problem: format!("missing header line: {what}"),
            })?;
            text.parse().map_err(|_| ParseError {
                line,
                problem: format!(
                    "expected the {what} (a whole number), found {text:?}; a malloc-lab \
                     trace opens with four lines: heap size hint, number of ids, number of \
                     operations, weight"
                ),
            })
        };
        let heap_hint = header("heap size hint")?;
        let ids = header("number of ids")?;
        let count = header("number of operations")?;
        let weight = header("weight")? as u32;
        let mut live_flags = IdFlags::new(ids);
        let live = live_flags.as_mut_slice();
        let mut ops = Vec::with_capacity(count.saturating_add(spare));
        let mut last_line = 4;
        for (line, text) in lines {
            last_line = line;
            let fail = |problem: String| ParseError { line, problem };
            let fields: Vec<&str> = text.split_whitespace().collect();
            let number = |index: usize, what: &str| -> Result<usize, ParseError> {
                let field = fields
                    .get(index)
                    .ok_or_else(|| fail(format!("missing {what} in {text:?}")))?;
                field
                    .parse()
                    .map_err(|_| fail(format!("{what} {field:?} is not a whole number")))
            };
            let expected_fields = match fields[0] {
                "a" | "r" => 3,
                "f" => 2,
                other => {
                    return Err(fail(format!(
                        "unknown operation {other:?} (expected a, r or f)"
                    )));
                }
            };
            let id = number(1, "block id")?;
            if fields.len() != expected_fields {
                return Err(fail(format!(
                    "expected {expected_fields} fields in {text:?}"
                )));
            }
            let slot = live.get_mut(id).ok_or_else(|| {
                fail(format!("block id {id} is not below the declared {ids} ids"))
            })?;
            let op = match fields[0] {
                "a" if *slot => return Err(fail(format!("block {id} is allocated twice"))),
                "a" => Op::Alloc {
                    id,
                    size: number(2, "size")?,
                },
                "r" if !*slot => {
                    return Err(fail(format!(
                        "block {id} is resized before it is allocated"
                    )));
                }
                "r" => Op::Realloc {
                    id,
                    size: number(2, "size")?,
                },
                "f" if !*slot => {
                    return Err(fail(format!("block {id} is freed but not allocated")));
                }
                _ => Op::Free { id },
            };
            *slot = !matches!(op, Op::Free { .. });
            ops.push(op);
        }
        if ops.len() != count {
            return Err(ParseError {
                line: last_line,
                problem: format!(
                    "the header announces {count} operations but the trace has {}",
                    ops.len()
                ),
            });
        }
        Ok(Trace {
            heap_hint,
            ids,
            weight,
            ops,
        })
    }

    /// How many operations bring the live payload to its peak (the first time it is
    /// reached); 0 for a trace that never holds a byte.
    pub fn ops_to_peak(&self) -> usize {
        calls_to_peak(
            self.ids,
            self.ops.iter().map(|op| match *op {
                Op::Alloc { id, size } | Op::Realloc { id, size } => (id, size),
                Op::Free { id } => (id, 0),
            }),
        )
    }

    /// Variant `variant` of this trace (see [`stray_block_at`]): variant 0 is the trace
    /// itself; any other has one more block, of [`STRAY_BLOCK_SIZE`] bytes, allocated
    /// before the live payload's peak and never freed.
    pub fn variant(mut self, variant: u32) -> Trace {
        // Variant 0 allocates nothing: the pictures show the heap of a replay, and a
        // table made and freed here would be a hole in it.
        if variant != 0
            && let Some(at) = stray_block_at(self.ops_to_peak(), variant)
        {
            self.add_stray_block(at);
        }
        self
    }

    /// Makes this trace a variant, in place: allocates one more block, of
    /// [`STRAY_BLOCK_SIZE`] bytes and a new id, before operation `at` (see
    /// [`stray_block_at`]). A replay makes its variant this way, on a trace parsed with
    /// room for it ([`Trace::parse_with_room`]) and after finding the peak with its own
    /// tables, so that nothing is allocated and freed before the replay: a freed table
    /// changes the allocator under test. glibc raises its mmap threshold to the size
    /// of a mapped block freed (as making a new table would free the old one, 946 KB
    /// for `random.rep`), and under that threshold its utilization there went from
    /// 93.1% to 93.9% in every variant whose stray block came late.
    pub fn add_stray_block(&mut self, at: usize) {
        let stray = Op::Alloc {
            id: self.ids,
            size: STRAY_BLOCK_SIZE,
        };
        self.ops.insert(at.min(self.ops.len()), stray);
        self.ids += 1;
    }

    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n{}\n",
            self.heap_hint,
            self.ids,
            self.ops.len(),
            self.weight
        );
        for op in &self.ops {
            let _ = match op {
                Op::Alloc { id, size } => writeln!(text, "a {id} {size}"),
                Op::Realloc { id, size } => writeln!(text, "r {id} {size}"),
                Op::Free { id } => writeln!(text, "f {id}"),
            };
        }
        text
    }
}

/// How many of `calls` bring the live payload to its peak (the first time it is
/// reached): each call is a block id below `ids` and the size it leaves that block with
/// (0 for a free). 0 if the payload never holds a byte.
pub fn calls_to_peak(ids: usize, calls: impl Iterator<Item = (usize, usize)>) -> usize {
    let mut sizes = vec![0usize; ids];
    let (mut live, mut peak, mut peak_at) = (0usize, 0usize, 0usize);
    for (index, (id, size)) in calls.enumerate() {
        live = live - std::mem::replace(&mut sizes[id], size) + size;
        if live > peak {
            (peak, peak_at) = (live, index + 1);
        }
    }
    peak_at
}

/// One flag per block id: the parsers' table of which blocks are live, by which they
/// check that every call finds its block allocated or not, as it needs.
///
/// The table is made and freed before the replay, so it must not change the allocator
/// under test. A small one is allocated, as it always was: it leaves a hole of its size
/// where the replay starts, and every report's replays started from that hole. A large
/// one would change the allocator: glibc serves a request of 128 KiB or more with a
/// mapping, and freeing a mapped block raises its mmap threshold to that block's size
/// (phases 3 and 4 do the same), so every block of the replay between the two sizes
/// would go into the heap instead (chapter 4, "One replay is one draw"). A table of
/// [`MAPPED_ID_FLAGS`] bytes or more is mapped by the harness itself, out of every
/// allocator's sight.
pub(crate) enum IdFlags {
    Allocated(Vec<bool>),
    Mapped(MappedFlags),
}

/// The size from which [`IdFlags`] maps its table: half of glibc's default mmap
/// threshold (128 KiB), leaving room for a threshold set lower
/// (`MALLOC_MMAP_THRESHOLD_`).
pub(crate) const MAPPED_ID_FLAGS: usize = 64 * 1024;

/// `len` flags in an anonymous mapping of their own.
///
/// Invariant: `start` is the start of a private anonymous mapping of `len` bytes,
/// readable and writable, owned by this value and unmapped when it is dropped; its
/// bytes are 0 or 1, valid `bool`s (the kernel hands out zeroed pages).
pub(crate) struct MappedFlags {
    start: std::ptr::NonNull<bool>,
    len: usize,
}

impl IdFlags {
    /// `ids` flags, all false.
    pub(crate) fn new(ids: usize) -> IdFlags {
        if ids >= MAPPED_ID_FLAGS
            && let Some(flags) = MappedFlags::new(ids)
        {
            return IdFlags::Mapped(flags);
        }
        IdFlags::Allocated(vec![false; ids])
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [bool] {
        match self {
            IdFlags::Allocated(flags) => flags,
            // SAFETY: by `MappedFlags`' invariant, `len` valid bools that this value
            // alone owns; the borrow of `self` keeps them mapped and unaliased.
            IdFlags::Mapped(m) => unsafe {
                std::slice::from_raw_parts_mut(m.start.as_ptr(), m.len)
            },
        }
    }
}

impl MappedFlags {
    /// `None` if the kernel refuses the mapping (the caller then allocates).
    fn new(len: usize) -> Option<MappedFlags> {
        preload_kit::os::map_anonymous(len).map(|start| MappedFlags {
            start: start.cast(),
            len,
        })
    }
}

impl Drop for MappedFlags {
    fn drop(&mut self) {
        // SAFETY: by the invariant, the mapping is this value's (made by
        // `map_anonymous`), and no slice of it outlives the value.
        unsafe { preload_kit::os::unmap(self.start.cast(), self.len) };
    }
}

/// The size of the block a trace's variant adds: a small request, such as any program
/// makes now and then between the calls a trace records.
pub const STRAY_BLOCK_SIZE: usize = 48;

/// Where variant `variant` of a trace whose live payload peaks after `ops_to_peak`
/// operations allocates its stray block: before operation `at` (counted from 0), or
/// `None` for variant 0, the trace as written.
///
/// Why variants: on traces whose blocks are large and few (the generated
/// `realloc_buffers` and `large_mix` shapes), where a block lands decides which holes
/// the next ones can use, and each placement decides the next. On the generated
/// `realloc_buffers` seed 605, glibc's utilization is 75.1% as written and phase 4's
/// 55.1%; variant 3 moves phase 4's to 70.3% (glibc's stays), variant 8 to 74.5% and
/// glibc's to 54.5%; over variants 0 to 8 both spread over 54.5-75.1%, with medians of
/// 55.1%. A single replay's utilization of such a trace is one draw
/// from a wide spread, for any allocator; the median over a few variants is the
/// allocator's. The point is the
/// fractional part of `variant` times the golden ratio, of the way to the peak: the
/// variants' points are spread over it, however many there are, and land before the
/// peak, where a change of layout can still move it.
pub fn stray_block_at(ops_to_peak: usize, variant: u32) -> Option<usize> {
    if variant == 0 {
        return None;
    }
    const GOLDEN_RATIO_FRACTION: f64 = 0.618_033_988_749_894_9;
    let fraction = (f64::from(variant) * GOLDEN_RATIO_FRACTION).fract();
    Some((fraction * ops_to_peak as f64) as usize)
}

/// Builds a trace while tracking ids: allocate, resize, free, and free what is left.
struct Builder {
    ops: Vec<Op>,
    live: Vec<usize>,
    next_id: usize,
    peak_hint: usize,
    sizes: Vec<usize>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            ops: Vec::new(),
            live: Vec::new(),
            next_id: 0,
            peak_hint: 0,
            sizes: Vec::new(),
        }
    }

    fn alloc(&mut self, size: usize) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        self.ops.push(Op::Alloc { id, size });
        self.live.push(id);
        self.sizes.push(size);
        self.note_peak();
        id
    }

    fn realloc(&mut self, id: usize, size: usize) {
        self.ops.push(Op::Realloc { id, size });
        self.sizes[id] = size;
        self.note_peak();
    }

    fn free(&mut self, id: usize) {
        self.ops.push(Op::Free { id });
        self.live.retain(|&live| live != id);
    }

    fn free_at(&mut self, index: usize) {
        let id = self.live.swap_remove(index);
        self.ops.push(Op::Free { id });
    }

    fn note_peak(&mut self) {
        let live: usize = self.live.iter().map(|&id| self.sizes[id]).sum();
        self.peak_hint = self.peak_hint.max(live);
    }

    fn finish(mut self) -> Trace {
        while let Some(id) = self.live.pop() {
            self.ops.push(Op::Free { id });
        }
        Trace {
            heap_hint: self.peak_hint,
            ids: self.next_id,
            weight: 1,
            ops: self.ops,
        }
    }
}

/// A trace of the suite: its name, what it stresses, and the function that makes it.
pub type Generator = (&'static str, &'static str, fn() -> Trace);

/// The suite: each trace's name, what it stresses, and how it is made.
///
/// Each peaks at a few megabytes of live payload, large against the allocators' fixed
/// costs (a first heap extension, tables of bins).
pub const SUITE: &[Generator] = &[
    (
        "random",
        "random sizes (mostly small, some up to 16 KiB) and random lifetimes",
        random,
    ),
    (
        "binary",
        "alternating small and large blocks; the large ones die, then larger ones come",
        binary,
    ),
    (
        "coalescing",
        "runs of neighbours are freed, then requests as large as several of them",
        coalescing,
    ),
    (
        "realloc",
        "a few buffers grow by realloc while small blocks come and go around them",
        realloc,
    ),
];

fn random() -> Trace {
    let mut rng = Rng::new(1);
    let mut b = Builder::new();
    for _ in 0..36_000 {
        if b.live.is_empty() || rng.chance(55) {
            let size = if rng.chance(8) {
                rng.between(1024, 16_384)
            } else {
                rng.between(1, 512)
            };
            b.alloc(size);
        } else {
            let index = rng.between(0, b.live.len() - 1);
            b.free_at(index);
        }
    }
    b.finish()
}

fn binary() -> Trace {
    let mut b = Builder::new();
    let mut large = Vec::new();
    for _ in 0..6000 {
        b.alloc(64);
        large.push(b.alloc(448));
    }
    for id in large {
        b.free(id);
    }
    for _ in 0..6000 {
        b.alloc(512);
    }
    b.finish()
}

/// Each round allocates a run of small neighbours, a little larger each round than any
/// block of the rounds before, frees the whole run, then asks for blocks larger than
/// any one of them. So an old run can only be reused by merging its neighbours: a heap
/// that cannot merge grows by a dead run every round, while the live payload (the last
/// two rounds' large blocks) stays bounded.
fn coalescing() -> Trace {
    let mut rng = Rng::new(3);
    let mut b = Builder::new();
    let mut previous: Vec<usize> = Vec::new();
    for round in 0..6 {
        let low = 32 + 48 * round;
        let run: Vec<usize> = (0..6000)
            .map(|_| b.alloc(rng.between(low, low + 40)))
            .collect();
        for id in run {
            b.free(id);
        }
        let large: Vec<usize> = (0..600).map(|_| b.alloc(rng.between(1000, 2000))).collect();
        for id in previous {
            b.free(id);
        }
        previous = large;
    }
    b.finish()
}

fn realloc() -> Trace {
    let mut rng = Rng::new(4);
    let mut b = Builder::new();
    let buffers: Vec<usize> = (0..8).map(|_| b.alloc(64)).collect();
    let mut sizes = [64usize; 8];
    for step in 0..8000 {
        let which = rng.between(0, 7);
        sizes[which] += rng.between(16, 256);
        b.realloc(buffers[which], sizes[which]);
        if step % 3 == 0 {
            b.alloc(rng.between(16, 128));
        }
        if step % 5 == 0 && b.live.len() > 8 {
            let index = rng.between(8, b.live.len() - 1);
            b.free_at(index);
        }
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_traces_parse_back_to_themselves() {
        for (name, _, make) in SUITE {
            let trace = make();
            assert_eq!(
                Trace::parse(&trace.to_text()).as_ref(),
                Ok(&trace),
                "{name}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        let bad = |text: &str| Trace::parse(text).unwrap_err().to_string();
        assert_eq!(
            bad("1\n2\n1\n1\nx 0 5\n"),
            "line 5: unknown operation \"x\" (expected a, r or f)"
        );
        assert_eq!(
            bad("1\n2\n2\n1\na 0 5\na 0 6\n"),
            "line 6: block 0 is allocated twice"
        );
        assert_eq!(
            bad("1\n2\n1\n1\nf 1\n"),
            "line 5: block 1 is freed but not allocated"
        );
        assert_eq!(
            bad("1\n2\n1\n1\na 7 5\n"),
            "line 5: block id 7 is not below the declared 2 ids"
        );
        assert_eq!(
            bad("1\n2\n1\n1\na 0 lots\n"),
            "line 5: size \"lots\" is not a whole number"
        );
        assert_eq!(
            bad("1\nfew\n"),
            "line 2: expected the number of ids (a whole number), found \"few\"; a \
             malloc-lab trace opens with four lines: heap size hint, number of ids, number \
             of operations, weight"
        );
        assert_eq!(
            bad("1\n2\n3\n1\na 0 5\n"),
            "line 5: the header announces 3 operations but the trace has 1"
        );
    }

    #[test]
    fn a_trace_of_many_ids_is_checked_in_a_table_of_its_own() {
        let ids = MAPPED_ID_FLAGS + 1;
        let mut flags = IdFlags::new(ids);
        assert!(matches!(flags, IdFlags::Mapped(_)));
        assert!(flags.as_mut_slice().iter().all(|&live| !live));
        assert!(matches!(IdFlags::new(100), IdFlags::Allocated(_)));
        // The same checks as with a small table, at both ends of the mapped one.
        let last = ids - 1;
        let text = format!("0\n{ids}\n3\n1\na {last} 8\nf {last}\nf 0\n");
        assert_eq!(
            Trace::parse(&text).unwrap_err().to_string(),
            "line 7: block 0 is freed but not allocated"
        );
        let text = format!("0\n{ids}\n3\n1\na 0 8\nf 0\na {last} 8\n");
        assert_eq!(Trace::parse(&text).map(|trace| trace.ops.len()), Ok(3));
    }

    #[test]
    fn a_variant_adds_one_stray_block_before_the_peak() {
        // Peaks (192 bytes live) after the fourth operation.
        let text = "0\n3\n6\n1\na 0 64\na 1 64\nf 0\na 2 128\nf 1\nf 2\n";
        let trace = Trace::parse(text).unwrap();
        assert_eq!(trace.ops_to_peak(), 4);
        assert_eq!(trace.clone().variant(0), trace);
        let mut points = Vec::new();
        for variant in 1..=6 {
            let changed = trace.clone().variant(variant);
            assert_eq!(changed.ids, 4);
            assert_eq!(changed.ops.len(), 7);
            let at = (changed.ops.iter())
                .position(|op| {
                    *op == Op::Alloc {
                        id: 3,
                        size: STRAY_BLOCK_SIZE,
                    }
                })
                .unwrap();
            assert!(at < 4, "variant {variant} at {at}");
            let mut without = changed.ops.clone();
            without.remove(at);
            assert_eq!(without, trace.ops, "the trace's own calls, in order");
            // Still a valid trace: the block is never freed, which a trace may leave.
            assert_eq!(Trace::parse(&changed.to_text()), Ok(changed));
            points.push(at);
        }
        points.sort_unstable();
        points.dedup();
        assert!(points.len() >= 3, "the variants spread out: {points:?}");
    }
}
