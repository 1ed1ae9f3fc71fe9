//! The kit's debug layer (`preload_kit::debug`) around phase 3's heap: what it catches
//! (overflows, underflows, writes after free, double frees, misuse of mapped blocks)
//! and that it keeps contents and invariants. The layer works around any heap; phase 3's
//! is the one with both brk blocks and mappings under it.

use core::ptr::NonNull;

use heap_replay::{Profile, Replay, script};
use mmap_debug::MmapHeap;
use preload_kit::arena::Growth;
use preload_kit::debug::{
    DebugLayer, Debugged, HEADER_SIZE, HEADER_SMASHED, LEADING_CANARY, POISON_DISTURBED,
    QUARANTINE_BLOCKS, TRAILING_CANARY,
};
use preload_kit::{Config, Fault, Heap, Location, MIN_ALIGN, WhyInvalid};

fn setup() -> (DebugLayer, MmapHeap) {
    (
        DebugLayer::with_seed(42),
        MmapHeap::with_growth(&Config::DEFAULT, Growth::MmapOnly),
    )
}

fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

/// Writes `byte` at `offset` from `p` (negative: before it), as a buggy program would.
fn poke(p: NonNull<u8>, offset: isize, byte: u8) {
    // SAFETY: the tests only poke bytes of the heap's block around `p`.
    unsafe { p.as_ptr().offset(offset).write_volatile(byte) }
}

/// Changes the byte at `offset` from `p`, whatever it was. (Writing a fixed value can
/// leave a seeded or address-dependent byte as it was, one time in 256.)
fn flip(p: NonNull<u8>, offset: isize) {
    // SAFETY: the tests only touch bytes of the heap's block around `p`.
    unsafe {
        let byte = p.as_ptr().offset(offset);
        byte.write_volatile(!byte.read_volatile());
    }
}

fn holds(p: NonNull<u8>, size: usize, byte: u8) -> bool {
    // SAFETY: callers pass a live block of at least `size` bytes.
    unsafe { core::slice::from_raw_parts(p.as_ptr(), size) }
        .iter()
        .all(|&b| b == byte)
}

fn corruption(addr: usize, what: &'static str) -> Result<(), Fault> {
    Err(Fault::Corruption { addr, what })
}

#[test]
fn a_one_byte_overflow_into_the_padding_is_caught_on_free() {
    let (mut debug, mut heap) = setup();
    // 20 bytes: without the layer the block would have 12 bytes of padding after
    // them, which an overflow could scribble on unseen.
    let p = debug.alloc(&mut heap, 20, MIN_ALIGN).unwrap();
    poke(p, 19, 1);
    debug.check().unwrap();
    poke(p, 20, 0);
    assert_eq!(debug.check(), corruption(addr(p), TRAILING_CANARY));
    assert_eq!(
        debug.free(&mut heap, p),
        corruption(addr(p), TRAILING_CANARY)
    );
}

#[test]
fn the_canary_check_runs_on_realloc_too() {
    let (mut debug, mut heap) = setup();
    let p = debug.alloc(&mut heap, 64, MIN_ALIGN).unwrap();
    // Flipped, not written: a canary byte is `b'!'` one time in 128 (its low bit is
    // always set, the rest depend on the block's address, which moves run to run).
    flip(p, 64);
    assert!(matches!(
        debug.realloc(&mut heap, p, 200),
        Err(Fault::Corruption {
            what: TRAILING_CANARY,
            ..
        })
    ));
}

#[test]
fn underflows_are_named_however_deep_they_go() {
    for (depth, what) in [
        (1, LEADING_CANARY),
        (9, HEADER_SMASHED),
        (17, HEADER_SMASHED),
    ] {
        let (mut debug, mut heap) = setup();
        let p = debug.alloc(&mut heap, 100, MIN_ALIGN).unwrap();
        // A write `depth` bytes before the block, and no further: past our header,
        // byte 17 is the heap's own header, which only the heap can judge.
        flip(p, -depth);
        assert_eq!(
            debug.free(&mut heap, p),
            corruption(addr(p), what),
            "depth {depth}"
        );
    }
}

#[test]
fn a_write_after_free_is_caught_by_the_check_and_on_leaving_the_quarantine() {
    let (mut debug, mut heap) = setup();
    let p = debug.alloc(&mut heap, 64, MIN_ALIGN).unwrap();
    debug.free(&mut heap, p).unwrap();
    debug.check().unwrap();
    poke(p, 40, 0);
    assert_eq!(debug.check(), corruption(addr(p), POISON_DISTURBED));
    // Without a check, the block is examined when it leaves the quarantine.
    let mut result = Ok(());
    for _ in 0..QUARANTINE_BLOCKS {
        let q = debug.alloc(&mut heap, 64, MIN_ALIGN).unwrap();
        result = debug.free(&mut heap, q);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, corruption(addr(p), POISON_DISTURBED));
}

#[test]
fn double_frees_are_caught_in_and_after_the_quarantine() {
    let (mut debug, mut heap) = setup();
    let p = debug.alloc(&mut heap, 64, MIN_ALIGN).unwrap();
    let _guard = debug.alloc(&mut heap, 64, MIN_ALIGN).unwrap();
    debug.free(&mut heap, p).unwrap();
    assert_eq!(
        debug.free(&mut heap, p),
        Err(Fault::DoubleFree { addr: addr(p) })
    );
    assert_eq!(
        debug.realloc(&mut heap, p, 8),
        Err(Fault::DoubleFree { addr: addr(p) })
    );
    assert_eq!(
        debug.usable_size(&mut heap, p),
        Err(Fault::InvalidPointer {
            addr: addr(p),
            why: WhyInvalid::FreedBlock
        })
    );
    // Push it out of the quarantine with blocks of another size (so that none
    // lands where it was): the heap's own header then says "freed".
    for _ in 0..QUARANTINE_BLOCKS {
        let q = debug.alloc(&mut heap, 3000, MIN_ALIGN).unwrap();
        debug.free(&mut heap, q).unwrap();
    }
    assert!(!debug.is_quarantined(addr(p)));
    assert_eq!(
        debug.free(&mut heap, p),
        Err(Fault::DoubleFree { addr: addr(p) })
    );
    debug.check().unwrap();
    heap.check().unwrap();
}

#[test]
fn mapped_blocks_skip_the_quarantine_and_their_misuse_is_named() {
    let (mut debug, mut heap) = setup();
    let p = debug.alloc(&mut heap, 256 * 1024, MIN_ALIGN).unwrap();
    assert!(matches!(
        heap.locate(addr(p)),
        Location::Mapping {
            index: 1,
            offset: HEADER_SIZE
        }
    ));
    let inside = NonNull::new(p.as_ptr().wrapping_add(5000)).unwrap();
    assert!(matches!(
        debug.free(&mut heap, inside),
        Err(Fault::InvalidPointer {
            why: WhyInvalid::InsideAMapping,
            ..
        })
    ));
    debug.free(&mut heap, p).unwrap();
    assert_eq!(
        debug.quarantined_blocks(),
        0,
        "a mapping is unmapped at once"
    );
    assert_eq!(
        debug.free(&mut heap, p),
        Err(Fault::DoubleFree { addr: addr(p) })
    );
    let mut local = 0u64;
    let stack = NonNull::from(&mut local).cast::<u8>();
    assert!(matches!(
        debug.free(&mut heap, stack),
        Err(Fault::InvalidPointer {
            why: WhyInvalid::OutsideTheHeap,
            ..
        })
    ));
}

#[test]
fn realloc_moves_keeps_the_bytes_and_quarantines_the_old_block() {
    let (mut debug, mut heap) = setup();
    let p = debug.alloc(&mut heap, 100, MIN_ALIGN).unwrap();
    // SAFETY: the block holds 100 bytes.
    unsafe { p.as_ptr().write_bytes(7, 100) };
    assert_eq!(debug.usable_size(&mut heap, p), Ok(100));
    let q = debug.realloc(&mut heap, p, 50).unwrap().unwrap();
    assert_ne!(q, p);
    assert!(holds(q, 50, 7));
    assert_eq!(debug.usable_size(&mut heap, q), Ok(50));
    assert!(debug.is_quarantined(addr(p)));
    poke(p, 0, 1);
    assert_eq!(debug.check(), corruption(addr(p), POISON_DISTURBED));
}

#[test]
fn calloc_and_aligned_blocks_through_the_layer() {
    let (mut debug, mut heap) = setup();
    let z = debug.alloc_zeroed(&mut heap, 1000).unwrap();
    assert!(holds(z, 1000, 0));
    for align in [32, 64, 4096, 1 << 16] {
        let p = debug.alloc(&mut heap, 100, align).unwrap();
        assert_eq!(addr(p) % align, 0);
        poke(p, 100, 0);
        assert_eq!(
            debug.free(&mut heap, p),
            corruption(addr(p), TRAILING_CANARY)
        );
        poke(p, 100, (debug.values().canary(addr(p)) & 0xff) as u8);
        debug.free(&mut heap, p).unwrap();
    }
    assert_eq!(debug.alloc(&mut heap, usize::MAX - 8, MIN_ALIGN), None);
    assert_eq!(debug.alloc(&mut heap, 10, 1 << 62), None);
    debug.check().unwrap();
}

/// Mostly small blocks, one in twenty up to 300 KB (mapped), some aligned to 64.
const THROUGH_THE_LAYER: Profile = Profile {
    alloc: 6,
    alloc_zeroed: 1,
    memalign: 1,
    free: 4,
    realloc: 4,
    sizes: &[(19, 600), (1, 300_000)],
    max_align: 64,
};

/// A seeded workload through the layer, replayed by `heap_replay`: contents kept, the
/// layer's and the heap's checks pass every 25 actions, and freeing everything leaves
/// only the quarantine in the heap.
#[test]
fn seeded_workload_keeps_contents_and_invariants() {
    let config = Config {
        debug: true,
        seed: Some(42),
        ..Config::DEFAULT
    };
    let heap: MmapHeap = MmapHeap::with_growth(&config, Growth::MmapOnly);
    let heap = Debugged::around(&config, heap);
    let mut replay = Replay::new(heap).check_every(25);
    replay.run(&script(5, 5000, &THROUGH_THE_LAYER)).unwrap();
    replay.free_all().unwrap();
    let layered = replay.heap();
    let layer = layered.layer().expect("debug mode is on");
    assert_eq!(layer.live_blocks(), 0);
    assert_eq!(
        layered.heap().stats().used_blocks,
        layer.quarantined_blocks()
    );
}
