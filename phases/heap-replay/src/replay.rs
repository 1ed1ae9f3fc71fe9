//! The replay runner and its model of the live blocks.

use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;

use preload_kit::{Heap, MIN_ALIGN};

use crate::Action;

/// A block the model expects to be live.
#[derive(Clone, Copy, Debug)]
struct Live {
    ptr: NonNull<u8>,
    /// What the program asked for.
    size: usize,
    /// What `usable_size` said when the block was made; every byte of it holds
    /// [`pattern`]`(id, offset)`.
    usable: usize,
    /// Unique for each block made (a `realloc` makes a new one).
    id: u64,
}

impl Live {
    fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

/// The byte a block with this `id` holds at `offset`: differs between blocks (the id)
/// and along one block (the offset), so bytes that were moved, shifted or swapped do not
/// look right by chance.
fn pattern(id: u64, offset: usize) -> u8 {
    let key = (id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8;
    key ^ (offset as u8).wrapping_mul(31) ^ (offset >> 8) as u8
}

/// Why a replay stopped: the action (its index in the script, or `None` for the last
/// check and freeing after the script) and what was wrong.
#[derive(Clone, PartialEq, Eq)]
pub struct Failure {
    pub index: Option<usize>,
    pub action: Option<Action>,
    pub what: String,
}

/// The same as `Display`, so that a test's `.unwrap()` prints the sentence.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.index, self.action) {
            (Some(index), Some(action)) => write!(f, "action #{index} ({action:?}): {}", self.what),
            _ => write!(f, "after the script: {}", self.what),
        }
    }
}

/// A heap under test and the model of what it should hold.
pub struct Replay<H: Heap> {
    heap: H,
    /// Live blocks in the order they were made: what an action's `slot` indexes.
    live: Vec<Live>,
    /// Start address -> end of usable bytes, of every live block: finds overlaps.
    extents: BTreeMap<usize, usize>,
    next_id: u64,
    /// Run `heap.check()` after every this many actions (0: only at the end).
    check_every: usize,
    actions_done: usize,
}

impl<H: Heap> Replay<H> {
    /// A replay on `heap`, which should hold no block yet. The heap check runs after
    /// every action until [`Replay::check_every`] says otherwise.
    pub fn new(heap: H) -> Self {
        Replay {
            heap,
            live: Vec::new(),
            extents: BTreeMap::new(),
            next_id: 1,
            check_every: 1,
            actions_done: 0,
        }
    }

    /// Runs `heap.check()` after every `n`th action only (0: only after the script).
    /// The checks of the touched block run on every action regardless.
    pub fn check_every(mut self, n: usize) -> Self {
        self.check_every = n;
        self
    }

    pub fn heap(&self) -> &H {
        &self.heap
    }

    pub fn heap_mut(&mut self) -> &mut H {
        &mut self.heap
    }

    pub fn into_heap(self) -> H {
        self.heap
    }

    /// How many blocks the model holds live.
    pub fn live_blocks(&self) -> usize {
        self.live.len()
    }

    /// Plays `script`, then runs the heap check once more. The blocks stay live (see
    /// [`Replay::free_all`]).
    pub fn run(&mut self, script: &[Action]) -> Result<(), Failure> {
        for (index, &action) in script.iter().enumerate() {
            self.step(action).map_err(|what| Failure {
                index: Some(index),
                action: Some(action),
                what,
            })?;
        }
        self.check_heap().map_err(after_the_script)
    }

    /// Frees every live block, checking each one's contents first, then runs the heap
    /// check.
    pub fn free_all(&mut self) -> Result<(), Failure> {
        while !self.live.is_empty() {
            self.free(0).map_err(after_the_script)?;
        }
        self.check_heap().map_err(after_the_script)
    }

    /// Plays one action; the error says what the heap got wrong.
    pub fn step(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Alloc { size } => {
                let ptr = self.heap.alloc(size, MIN_ALIGN);
                self.made(ptr, size, MIN_ALIGN, false)?;
            }
            Action::AllocZeroed { size } => {
                let ptr = self.heap.alloc_zeroed(size);
                self.made(ptr, size, MIN_ALIGN, true)?;
            }
            Action::Memalign { size, align } => {
                assert!(
                    align.is_power_of_two() && align >= MIN_ALIGN,
                    "script error: memalign's alignment {align} is not a power of two >= {MIN_ALIGN}"
                );
                let ptr = self.heap.alloc(size, align);
                self.made(ptr, size, align, false)?;
            }
            Action::Free { slot } => {
                if !self.live.is_empty() {
                    self.free(slot % self.live.len())?;
                }
            }
            Action::Realloc { slot, size } => {
                if !self.live.is_empty() {
                    self.realloc(slot % self.live.len(), size.max(1))?;
                }
            }
        }
        self.actions_done += 1;
        if self.check_every != 0 && self.actions_done.is_multiple_of(self.check_every) {
            self.check_heap()?;
        }
        Ok(())
    }

    fn check_heap(&self) -> Result<(), String> {
        self.heap
            .check()
            .map_err(|fault| format!("heap check failed: {fault:?}"))
    }

    /// Checks a block the heap just returned and adds it to the model.
    fn made(
        &mut self,
        ptr: Option<NonNull<u8>>,
        size: usize,
        align: usize,
        zeroed: bool,
    ) -> Result<(), String> {
        let ptr = ptr.ok_or_else(|| format!("no block of {size} bytes (out of memory?)"))?;
        let addr = ptr.as_ptr() as usize;
        if !addr.is_multiple_of(align) {
            return Err(format!("{addr:#x} is not aligned to {align}"));
        }
        let usable = self.usable_size(ptr, size)?;
        if zeroed {
            // SAFETY: the heap returned `ptr` with at least `size` bytes to use.
            let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), size) };
            if let Some(offset) = bytes.iter().position(|&b| b != 0) {
                return Err(format!(
                    "zeroed block {addr:#x} has a non-zero byte at +{offset}"
                ));
            }
        }
        self.add(ptr, size, usable)
    }

    /// `usable_size` of a block made for `size` bytes, which must be at least `size`.
    fn usable_size(&mut self, ptr: NonNull<u8>, size: usize) -> Result<usize, String> {
        let usable = self
            .heap
            .usable_size(ptr)
            .map_err(|fault| format!("usable_size of a new block failed: {fault:?}"))?;
        if usable < size {
            return Err(format!(
                "usable_size is {usable} for a block of {size} bytes at {ptr:?}"
            ));
        }
        Ok(usable)
    }

    /// Puts a checked new block in the model (after the overlap check) and fills it.
    fn add(&mut self, ptr: NonNull<u8>, size: usize, usable: usize) -> Result<(), String> {
        let addr = ptr.as_ptr() as usize;
        let end = addr + usable;
        // Live extents never overlap one another, so only the last one that starts
        // before `end` can reach into the new block.
        if let Some((&start, &other_end)) = self.extents.range(..end).next_back()
            && other_end > addr
        {
            return Err(format!(
                "block {addr:#x}..{end:#x} overlaps the live block {start:#x}..{other_end:#x}"
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        for offset in 0..usable {
            // SAFETY: the block has `usable` bytes the program may write.
            unsafe { ptr.as_ptr().add(offset).write(pattern(id, offset)) };
        }
        self.extents.insert(addr, end);
        self.live.push(Live {
            ptr,
            size,
            usable,
            id,
        });
        Ok(())
    }

    /// Checks that a live block still holds its pattern in `[0, len)` and that the heap
    /// still gives its usable size.
    fn intact(&mut self, block: &Live, len: usize) -> Result<(), String> {
        // SAFETY: the model holds the block live, with `usable >= len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(block.ptr.as_ptr(), len) };
        if let Some(offset) = (0..len).find(|&i| bytes[i] != pattern(block.id, i)) {
            return Err(format!(
                "block {:#x} ({} bytes) lost its contents at +{offset}",
                block.addr(),
                block.size
            ));
        }
        match self.heap.usable_size(block.ptr) {
            Ok(usable) if usable == block.usable => Ok(()),
            Ok(usable) => Err(format!(
                "usable_size of {:#x} changed from {} to {usable}",
                block.addr(),
                block.usable
            )),
            Err(fault) => Err(format!(
                "usable_size of the live block {:#x} failed: {fault:?}",
                block.addr()
            )),
        }
    }

    fn free(&mut self, index: usize) -> Result<(), String> {
        let block = self.live.remove(index);
        self.extents.remove(&block.addr());
        self.intact(&block, block.usable)?;
        self.heap.free(block.ptr).map_err(|fault| {
            format!(
                "free of the live block {:#x} failed: {fault:?}",
                block.addr()
            )
        })
    }

    fn realloc(&mut self, index: usize, size: usize) -> Result<(), String> {
        let block = self.live.remove(index);
        self.extents.remove(&block.addr());
        self.intact(&block, block.usable)?;
        let ptr = self
            .heap
            .realloc(block.ptr, size)
            .map_err(|fault| {
                format!(
                    "realloc of the live block {:#x} failed: {fault:?}",
                    block.addr()
                )
            })?
            .ok_or_else(|| format!("realloc to {size} bytes found no memory"))?;
        let addr = ptr.as_ptr() as usize;
        if !addr.is_multiple_of(MIN_ALIGN) {
            return Err(format!(
                "realloc returned {addr:#x}, not aligned to {MIN_ALIGN}"
            ));
        }
        // What C promises to keep: the old contents up to the smaller of the two sizes.
        let kept = Live { ptr, ..block };
        let usable = self.usable_size(ptr, size)?;
        // SAFETY: the block has at least `size` usable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.as_ptr(), block.size.min(size)) };
        if let Some(offset) = (0..bytes.len()).find(|&i| bytes[i] != pattern(kept.id, i)) {
            return Err(format!(
                "realloc from {} to {size} bytes ({:#x} -> {addr:#x}) lost the byte at +{offset}",
                block.size,
                block.addr()
            ));
        }
        self.add(ptr, size, usable)?;
        // `add` appended the new block; it takes the old one's place, so slots keep
        // naming the same blocks.
        let moved = self.live.pop().expect("`add` just pushed it");
        self.live.insert(index, moved);
        Ok(())
    }
}

fn after_the_script(what: String) -> Failure {
    Failure {
        index: None,
        action: None,
        what,
    }
}
