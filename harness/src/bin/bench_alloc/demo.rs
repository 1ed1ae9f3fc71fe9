//! The demo workload: a short, seeded story of a heap, with a heap dump after each
//! step. The same story runs on every phase, so their dumps can be compared line by
//! line (`golden/phase1/`, `golden/phase2/`, ...).
//!
//! Nothing here allocates except the calls being shown: output goes through a stack
//! buffer, and the block pointers live in fixed arrays.

use core::ffi::c_void;
use core::fmt::Write as _;
use core::ptr;

use harness::rng::Rng;
use preload_kit::Out;

const BLOCKS: usize = 8;

/// Prints and counts; flushes before every dump so that the allocator's output (on
/// stderr) and ours (on stdout) keep their order when both go to one place.
struct Demo {
    out: Out,
    heap_dump: Option<extern "C" fn()>,
    allocs: usize,
    frees: usize,
    failures: usize,
}

impl Demo {
    fn step(&mut self, text: &str) {
        let _ = writeln!(self.out, "\n== {text}");
        self.out.flush();
    }

    fn dump(&mut self) {
        self.out.flush();
        if let Some(heap_dump) = self.heap_dump {
            heap_dump();
        }
    }

    fn malloc(&mut self, size: usize) -> *mut u8 {
        // SAFETY: plain malloc; the result is checked before use.
        let p = unsafe { libc::malloc(size) }.cast::<u8>();
        self.allocated(p, "malloc")
    }

    fn allocated(&mut self, p: *mut u8, what: &str) -> *mut u8 {
        if p.is_null() {
            self.fail(what, "returned NULL");
        } else {
            self.allocs += 1;
        }
        p
    }

    fn free(&mut self, p: *mut u8) {
        // SAFETY: every pointer the demo frees came from this allocator and is freed once.
        unsafe { libc::free(p.cast::<c_void>()) };
        self.frees += 1;
    }

    fn fail(&mut self, what: &str, problem: &str) {
        let _ = writeln!(self.out, "FAILED: {what} {problem}");
        self.failures += 1;
    }

    /// Fills a block with a byte that identifies it, to check later that it was kept.
    fn fill(p: *mut u8, size: usize, byte: u8) {
        // SAFETY: callers pass a live block of at least `size` bytes.
        unsafe { p.write_bytes(byte, size) }
    }

    fn holds(&mut self, what: &str, p: *const u8, size: usize, byte: u8) {
        // SAFETY: callers pass a live block of at least `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(p, size) };
        if bytes.iter().any(|&b| b != byte) {
            self.fail(what, "lost its contents");
        }
    }
}

pub fn run(seed: u64) -> i32 {
    let mut demo = Demo {
        out: Out::new(1),
        heap_dump: find_heap_dump(),
        allocs: 0,
        frees: 0,
        failures: 0,
    };
    let mut rng = Rng::new(seed);
    let _ = writeln!(demo.out, "bench_alloc demo, seed {seed}");
    if demo.heap_dump.is_none() {
        let _ = writeln!(
            demo.out,
            "(no heap_dump() in this process: running on the C library's allocator, so the \
             steps run but there is no heap to show; preload a mymalloc phase to see it)"
        );
    }

    demo.step(
        "1. the heap before the first call: empty (nothing else in this process has allocated)",
    );
    demo.dump();

    demo.step("2. eight blocks of random sizes (16-200 bytes)");
    let mut blocks = [ptr::null_mut::<u8>(); BLOCKS];
    let mut sizes = [0usize; BLOCKS];
    for i in 0..BLOCKS {
        sizes[i] = rng.between(16, 200);
        blocks[i] = demo.malloc(sizes[i]);
        Demo::fill(blocks[i], sizes[i], b'a' + i as u8);
        let _ = writeln!(demo.out, "block {i}: {} bytes", sizes[i]);
    }
    demo.dump();

    demo.step("3. free blocks 1, 3 and 5: three holes");
    for i in [1, 3, 5] {
        demo.free(blocks[i]);
    }
    demo.dump();

    demo.step("4. three 24-byte requests: first fit puts them in the holes");
    let mut small = [ptr::null_mut::<u8>(); 3];
    for (i, slot) in small.iter_mut().enumerate() {
        *slot = demo.malloc(24);
        Demo::fill(*slot, 24, b'x' + i as u8);
    }
    demo.dump();

    demo.step("5. free blocks 6 and 7 (neighbours), then ask for one block as large as both");
    demo.free(blocks[6]);
    demo.free(blocks[7]);
    let both = demo.malloc(sizes[6] + sizes[7]);
    demo.dump();

    demo.step("6. realloc: grow block 0 to three times its size, shrink block 2 to 16 bytes");
    // SAFETY: blocks 0 and 2 are live; realloc's result replaces them when not null.
    let grown = unsafe { libc::realloc(blocks[0].cast(), sizes[0] * 3) }.cast::<u8>();
    if grown.is_null() {
        demo.fail("realloc (grow)", "returned NULL");
    } else {
        demo.holds("block 0 after growing", grown, sizes[0], b'a');
        blocks[0] = grown;
    }
    // SAFETY: as above.
    let shrunk = unsafe { libc::realloc(blocks[2].cast(), 16) }.cast::<u8>();
    if shrunk.is_null() {
        demo.fail("realloc (shrink)", "returned NULL");
    } else {
        demo.holds("block 2 after shrinking", shrunk, 16, b'c');
        blocks[2] = shrunk;
    }
    demo.dump();

    demo.step("7. calloc(10, 12) and a 64-byte-aligned block of 100 bytes");
    // SAFETY: plain calloc and aligned_alloc; results are checked before use.
    let zeroed = unsafe { libc::calloc(10, 12) }.cast::<u8>();
    let zeroed = demo.allocated(zeroed, "calloc");
    if !zeroed.is_null() {
        demo.holds("calloc's block", zeroed, 120, 0);
    }
    // SAFETY: as above.
    let aligned = unsafe { libc::aligned_alloc(64, 100) }.cast::<u8>();
    let aligned = demo.allocated(aligned, "aligned_alloc");
    if !(aligned as usize).is_multiple_of(64) {
        demo.fail("aligned_alloc(64, 100)", "is not 64-byte aligned");
    }
    demo.dump();

    demo.step("8. one large block of 256 KiB");
    let large = demo.malloc(256 * 1024);
    if !large.is_null() {
        Demo::fill(large, 256 * 1024, b'L');
    }
    demo.dump();

    demo.step("9. free everything");
    for i in [0, 2, 4] {
        demo.free(blocks[i]);
    }
    for p in small.into_iter().chain([both, zeroed, aligned, large]) {
        if !p.is_null() {
            demo.free(p);
        }
    }
    demo.dump();

    let _ = writeln!(
        demo.out,
        "\nSummary: allocs={} frees={}",
        demo.allocs, demo.frees
    );
    i32::from(demo.failures > 0)
}

/// `heap_dump` from whatever allocator is loaded, if it has one. Looked up at run time
/// (not linked) so that this binary also runs on the C library's allocator.
fn find_heap_dump() -> Option<extern "C" fn()> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"heap_dump".as_ptr()) };
    // SAFETY: every mymalloc phase exports `heap_dump` as `extern "C" fn()`.
    (!symbol.is_null())
        .then(|| unsafe { core::mem::transmute::<*mut c_void, extern "C" fn()>(symbol) })
}
