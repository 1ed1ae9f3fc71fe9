//! The runner against a heap built on Rust's allocator, sound and with one defect at a
//! time: each defect must be caught, at the action that shows it, and the fuzz target
//! must shrink a failing script to the few actions that matter.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::collections::HashMap;
use std::ptr::NonNull;

use heap_replay::{Action::*, Profile, Replay, fuzz, script};
use preload_kit::{Config, Fault, Heap, Location, MIN_ALIGN, Out, Stats, WhyInvalid};

/// What a [`ToyHeap`] gets wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Defect {
    None,
    /// `realloc` copies one byte too few.
    ReallocDropsLastByte,
    /// Blocks of 200 bytes or more are aligned to 8, not 16.
    Align8ForLarge,
    /// The third block made is one that is still live.
    HandsOutALiveBlock,
    /// `calloc` of 1000 bytes or more is not cleared.
    DirtyCalloc,
}

struct ToyHeap {
    blocks: HashMap<usize, Layout>,
    made: usize,
    defect: Defect,
}

impl ToyHeap {
    fn with(defect: Defect) -> Self {
        ToyHeap {
            blocks: HashMap::new(),
            made: 0,
            defect,
        }
    }

    /// A real block (with `Align8ForLarge`'s defect, not `HandsOutALiveBlock`'s).
    fn fresh(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(size.max(1) + 8, align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc(layout) };
        let shift = if self.defect == Defect::Align8ForLarge && size >= 200 {
            8
        } else {
            0
        };
        let ptr = NonNull::new(base.wrapping_add(shift))?;
        self.blocks.insert(ptr.as_ptr() as usize, layout);
        Some(ptr)
    }
}

impl Heap for ToyHeap {
    const NAME: &'static str = "toy";

    fn new(_config: &Config) -> Self {
        ToyHeap::with(Defect::None)
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.made += 1;
        if self.defect == Defect::HandsOutALiveBlock && self.made == 3 {
            return self
                .blocks
                .keys()
                .next()
                .and_then(|&a| NonNull::new(a as *mut u8));
        }
        self.fresh(size, align)
    }

    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        if self.defect == Defect::DirtyCalloc && size >= 1000 {
            let p = self.alloc(size, MIN_ALIGN)?;
            // SAFETY: `alloc` gave at least `size` bytes.
            unsafe { p.as_ptr().write_bytes(0xAA, size) };
            return Some(p);
        }
        let layout = Layout::from_size_align(size.max(1) + 8, MIN_ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        self.blocks.insert(ptr.as_ptr() as usize, layout);
        Some(ptr)
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        let addr = ptr.as_ptr() as usize;
        let layout = self
            .blocks
            .remove(&addr)
            .ok_or(Fault::DoubleFree { addr })?;
        let base = if addr % MIN_ALIGN == 8 {
            addr - 8
        } else {
            addr
        };
        // SAFETY: `base` came from `alloc` with this layout.
        unsafe { dealloc(base as *mut u8, layout) };
        Ok(())
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let addr = ptr.as_ptr() as usize;
        let layout = self.blocks.get(&addr).ok_or(Fault::InvalidPointer {
            addr,
            why: WhyInvalid::NotABlockStart,
        })?;
        Ok(layout.size() - 8)
    }

    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let old = self.usable_size(ptr)?;
        // A fresh block even with `HandsOutALiveBlock`: copying into another live block
        // of any size would overrun it, a real overflow in this test process.
        let Some(new) = self.fresh(size, MIN_ALIGN) else {
            return Ok(None);
        };
        let mut copy = old.min(size);
        if self.defect == Defect::ReallocDropsLastByte {
            copy -= 1;
        }
        // SAFETY: two distinct live blocks, each at least `copy` bytes long.
        unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), copy) };
        self.free(ptr)?;
        Ok(Some(new))
    }

    fn locate(&self, addr: usize) -> Location {
        Location::Outside(addr)
    }

    fn dump_blocks(&self, _out: &mut Out) {}

    fn stats(&self) -> Stats {
        Stats {
            used_blocks: self.blocks.len(),
            ..Stats::default()
        }
    }

    fn check(&self) -> Result<(), Fault> {
        Ok(())
    }
}

/// The failure a replay of `script` on a heap with `defect` ends with.
fn failure(defect: Defect, script: &[heap_replay::Action]) -> heap_replay::Failure {
    let mut replay = Replay::new(ToyHeap::with(defect));
    replay
        .run(script)
        .and_then(|()| replay.free_all())
        .expect_err("the defect is caught")
}

#[test]
fn a_sound_heap_passes_a_long_seeded_workload_and_ends_empty() {
    let mut replay = Replay::new(ToyHeap::with(Defect::None)).check_every(10);
    replay.run(&script(7, 5000, &Profile::MIXED)).unwrap();
    assert!(replay.live_blocks() > 0);
    replay.free_all().unwrap();
    assert_eq!(replay.heap().stats(), Stats::default());
}

#[test]
fn seeded_scripts_repeat_and_differ_by_seed() {
    let a = script(1, 300, &Profile::LARGE);
    assert_eq!(a, script(1, 300, &Profile::LARGE));
    assert_ne!(a, script(2, 300, &Profile::LARGE));
    assert!(a.iter().any(|a| matches!(a, Memalign { .. })));
    assert!(a.iter().any(|a| matches!(a, Realloc { .. })));
}

#[test]
fn each_defect_is_caught_at_the_action_that_shows_it() {
    let f = failure(
        Defect::ReallocDropsLastByte,
        &[
            Alloc { size: 10 },
            Alloc { size: 20 },
            Realloc { slot: 1, size: 40 },
        ],
    );
    assert_eq!(f.index, Some(2));
    assert!(f.what.contains("lost the byte at +19"), "{f}");

    let f = failure(
        Defect::Align8ForLarge,
        &[Alloc { size: 10 }, Alloc { size: 300 }],
    );
    assert_eq!(f.index, Some(1));
    assert!(f.what.contains("not aligned to 16"), "{f}");

    let f = failure(
        Defect::HandsOutALiveBlock,
        &[
            Alloc { size: 8 },
            Alloc { size: 8 },
            Free { slot: 0 },
            Alloc { size: 8 },
        ],
    );
    assert_eq!(f.index, Some(3));
    assert!(f.what.contains("overlaps the live block"), "{f}");

    let f = failure(
        Defect::DirtyCalloc,
        &[AllocZeroed { size: 999 }, AllocZeroed { size: 1000 }],
    );
    assert_eq!(f.index, Some(1));
    assert!(f.what.contains("non-zero byte at +0"), "{f}");
}

#[test]
fn a_write_past_a_block_is_found_in_its_neighbour() {
    let mut replay = Replay::new(ToyHeap::with(Defect::None));
    replay
        .run(&[Alloc { size: 16 }, Alloc { size: 16 }])
        .unwrap();
    // The program's bug, not the heap's: the kit must still notice the block changed.
    let victim = replay.heap().blocks.keys().copied().min().unwrap();
    // SAFETY: `victim` is a live block of at least 16 bytes.
    unsafe { (victim as *mut u8).add(3).write(0) };
    let err = replay.free_all().unwrap_err();
    assert!(err.what.contains("lost its contents at +3"), "{err}");
}

#[test]
fn fuzzing_a_sound_heap_passes() {
    fuzz(|| ToyHeap::with(Defect::None), &Profile::MIXED, 32);
}

/// The fuzz target finds each defect and shrinks the script to the actions that show
/// it: a handful, not hundreds.
#[test]
fn fuzzing_shrinks_a_failing_script_to_a_minimal_one() {
    for (defect, longest) in [
        (Defect::ReallocDropsLastByte, 2),
        (Defect::Align8ForLarge, 2),
        (Defect::HandsOutALiveBlock, 4),
        (Defect::DirtyCalloc, 1),
    ] {
        let panic =
            std::panic::catch_unwind(|| fuzz(|| ToyHeap::with(defect), &Profile::MIXED, 256))
                .expect_err("the defect is found");
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        let actions: usize = message
            .split("minimal script (")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no script length in: {message}"));
        assert!(
            actions <= longest,
            "{defect:?}: the script was shrunk to {actions} actions, not {longest}:\n{message}"
        );
    }
}
