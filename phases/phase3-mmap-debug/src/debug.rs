//! Debug mode (`MALLOC_DEBUG=1`): a layer around the heap that fences every block with
//! checked bytes and holds freed blocks back, poisoned, before really freeing them.
//!
//! The layer knows nothing of how the heap lays blocks out: it asks it for a block a
//! little larger than the program's request and arranges the bytes inside.
//!
//! ```text
//!   the heap's block (any Heap: brk block or mapping)
//!   |
//!   v                 user - 16      user - 8       user = the program's pointer
//!   +-----------------+--------------+--------------+------------------------------+----------+-----
//!   | (align - 16,    | check word   | leading      | the program's `size` bytes   | trailing | (heap's
//!   |  aligned only)  |              | canary       |                              | canary   |  rounding)
//!   +-----------------+--------------+--------------+------------------------------+----------+-----
//!   <--------------- prefix -------------------------> <------------ size --------> <-- 8 --->
//! ```
//!
//! - **check word**: a hash of the block's address, its size and its prefix, keyed by
//!   the seed. The sizes themselves live in a registry of live blocks
//!   ([`crate::table`], in memory of its own), consulted before any byte near the
//!   pointer is read. A check word that disagrees means the header was overwritten (an
//!   underflow from below, or a stray write) and is reported, never followed.
//! - **canaries**: 8 bytes each side, `canary_key ^ hash(address)` with no zero byte
//!   (an off-by-one string copy writes a zero). The trailing one starts right after
//!   the last requested byte, not at the next multiple of 16, so even a one-byte
//!   overflow into what would be alignment padding is caught.
//! - **poison**: a freed block's bytes are filled with one seeded byte and the block
//!   goes into the **quarantine**, a ring of the most recently freed blocks (up to
//!   [`QUARANTINE_BLOCKS`] and [`QUARANTINE_BYTES`]). Only when it leaves the ring is
//!   it checked (still all poison? canaries intact?) and really freed. A write through
//!   a dangling pointer in between is reported as a use after free; a second `free`
//!   of a quarantined block is a double free. Blocks over [`QUARANTINE_MAX_BLOCK`]
//!   skip the quarantine (they are mappings, whose pages are gone once freed).
//!
//! Every value comes from the seed (`MALLOC_DEBUG_SEED`); without one, a random seed is
//! drawn with `getrandom` and printed, so a failing run can be repeated exactly.
//!
//! `realloc` always moves in debug mode (new block, copy, old block quarantined), so a
//! pointer kept across a `realloc` is caught like any other dangling pointer.
//!
//! The check ([`DebugLayer::check`]) reads every live block's header and canaries and
//! every quarantined byte: the kit runs it after every call in debug mode, or every Nth
//! (`MALLOC_CHECK_EVERY`). Its cost grows with the heap; see the crate docs.

use core::fmt::Write as _;
use core::ptr::NonNull;

use preload_kit::{Config, Fault, Heap, MIN_ALIGN, Out, libc, os};

use crate::table::AddrTable;
use split_coalesce::heap::{FREED_BLOCK, OUTSIDE_THE_HEAP};

/// Bytes before the program's pointer: the check word and the leading canary. A
/// multiple of 16, so the pointer stays 16-byte aligned.
pub const HEADER_SIZE: usize = 16;

/// Bytes after the program's last byte: the trailing canary.
pub const CANARY_SIZE: usize = 8;

/// At most this many freed blocks wait in the quarantine...
pub const QUARANTINE_BLOCKS: usize = 256;
/// ...holding at most this many of the program's bytes.
pub const QUARANTINE_BYTES: usize = 1 << 20;
/// Blocks larger than this are freed at once, after their canaries are checked.
pub const QUARANTINE_MAX_BLOCK: usize = 64 * 1024;

const HEADER_SMASHED: &str = "block header overwritten (buffer underflow)";
const LEADING_CANARY: &str = "leading canary overwritten (buffer underflow)";
const TRAILING_CANARY: &str = "trailing canary overwritten (buffer overflow)";
const POISON_DISTURBED: &str = "freed block written to (use after free)";

/// What the registry of live blocks knows about one: enough to find every guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Guarded {
    /// The program's request.
    size: usize,
    /// From the start of the heap's block to the program's pointer: [`HEADER_SIZE`],
    /// or the alignment for an aligned request (so that the pointer is aligned too).
    prefix: usize,
}

/// A block in the quarantine.
#[derive(Clone, Copy, Debug)]
struct Freed {
    user: usize,
    block: Guarded,
}

/// The seeded values debug mode writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Values {
    header_key: u64,
    canary_key: u64,
    /// The byte freed blocks are filled with; never 0 (what programs write most).
    poison: u8,
}

impl Values {
    pub fn from_seed(seed: u64) -> Values {
        let poison = match mix(seed ^ 0x706f_6973_6f6e) as u8 {
            0 => 0xa5,
            byte => byte,
        };
        Values {
            header_key: mix(seed ^ 0x6865_6164_6572),
            canary_key: mix(seed ^ 0x6361_6e61_7279),
            poison,
        }
    }

    fn check_word(&self, user: usize, block: Guarded) -> u64 {
        mix(self.header_key
            ^ user as u64
            ^ (block.size as u64).rotate_left(24)
            ^ (block.prefix as u64).rotate_left(48))
    }

    /// The canary of the block at `user`. Setting the low bit of every byte keeps
    /// zero bytes out of it.
    fn canary(&self, user: usize) -> u64 {
        (self.canary_key ^ mix(user as u64)) | 0x0101_0101_0101_0101
    }
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub struct DebugLayer {
    seed: u64,
    values: Values,
    /// Every live block, by the program's pointer.
    live: AddrTable<Guarded>,
    quarantine: Quarantine,
}

impl DebugLayer {
    /// The layer for `config`: its seed, or a random one, announced on stderr.
    pub fn new(config: &Config) -> Self {
        let seed = match config.seed {
            Some(seed) => seed,
            None => {
                let seed = random_seed();
                let mut out = Out::stderr();
                let _ = writeln!(
                    out,
                    "mymalloc: debug mode with seed {seed} (MALLOC_DEBUG_SEED={seed} repeats this run)"
                );
                seed
            }
        };
        DebugLayer::with_seed(seed)
    }

    pub fn with_seed(seed: u64) -> Self {
        DebugLayer {
            seed,
            values: Values::from_seed(seed),
            live: AddrTable::new(),
            quarantine: Quarantine::new(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// [`Heap::alloc`] through the layer: a block from `heap` with room for the guards,
    /// registered, guarded.
    pub fn alloc<H: Heap>(
        &mut self,
        heap: &mut H,
        size: usize,
        align: usize,
    ) -> Option<NonNull<u8>> {
        let prefix = if align > MIN_ALIGN {
            align
        } else {
            HEADER_SIZE
        };
        let total = prefix.checked_add(size)?.checked_add(CANARY_SIZE)?;
        let block = heap.alloc(total, align)?;
        // SAFETY: the heap's block holds `total > prefix` bytes.
        let user = unsafe { block.add(prefix) };
        let guarded = Guarded { size, prefix };
        if !self.live.insert(user.as_ptr() as usize, guarded) {
            // No memory for the registry: give the block back, report exhaustion.
            let _ = heap.free(block);
            return None;
        }
        self.guard(user.as_ptr() as usize, guarded);
        Some(user)
    }

    pub fn alloc_zeroed<H: Heap>(&mut self, heap: &mut H, size: usize) -> Option<NonNull<u8>> {
        let block = self.alloc(heap, size, MIN_ALIGN)?;
        // SAFETY: the program's part of the block holds `size` bytes.
        unsafe { block.as_ptr().write_bytes(0, size) };
        Some(block)
    }

    /// [`Heap::free`] through the layer: checked, then poisoned into the quarantine.
    pub fn free<H: Heap>(&mut self, heap: &mut H, ptr: NonNull<u8>) -> Result<(), Fault> {
        let user = ptr.as_ptr() as usize;
        let guarded = self.live_block(heap, user)?;
        self.live.remove(user);
        if guarded.size > QUARANTINE_MAX_BLOCK {
            return heap.free(heap_block(user, guarded)?);
        }
        // SAFETY: the block was live with `size` bytes at `user`; the program has just
        // given them up.
        unsafe { ptr.as_ptr().write_bytes(self.values.poison, guarded.size) };
        while self.quarantine.is_full_for(guarded.size) {
            let Some(oldest) = self.quarantine.pop_oldest() else {
                break;
            };
            self.check_freed(oldest)?;
            heap.free(heap_block(oldest.user, oldest.block)?)?;
        }
        self.quarantine.push(Freed {
            user,
            block: guarded,
        });
        Ok(())
    }

    /// What the program asked for: the bytes after it are the canary's.
    pub fn usable_size<H: Heap>(&mut self, heap: &mut H, ptr: NonNull<u8>) -> Result<usize, Fault> {
        let user = ptr.as_ptr() as usize;
        match self.live_block(heap, user) {
            Ok(guarded) => Ok(guarded.size),
            Err(Fault::DoubleFree { addr }) => Err(Fault::InvalidPointer {
                addr,
                why: FREED_BLOCK,
            }),
            Err(fault) => Err(fault),
        }
    }

    /// Always moves: a new guarded block, the contents copied, the old block freed
    /// into the quarantine (where a write through the old pointer is caught).
    pub fn realloc<H: Heap>(
        &mut self,
        heap: &mut H,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<Option<NonNull<u8>>, Fault> {
        let old = self.live_block(heap, ptr.as_ptr() as usize)?;
        let Some(moved) = self.alloc(heap, size, MIN_ALIGN) else {
            return Ok(None);
        };
        // SAFETY: both blocks are live and distinct, with at least `old.size` and
        // `size` bytes.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), moved.as_ptr(), old.size.min(size)) };
        self.free(heap, ptr)?;
        Ok(Some(moved))
    }

    /// Writes the check word, the leading and the trailing canary of a block the
    /// registry has just recorded.
    fn guard(&self, user: usize, block: Guarded) {
        let check = self.values.check_word(user, block);
        let canary = self.values.canary(user);
        // SAFETY: the heap's block holds `prefix >= 16` bytes before `user` and 8 after
        // `user + size` (see `alloc`); `user - 16` is 8-aligned.
        unsafe {
            header_words(user).write(check);
            header_words(user).add(1).write(canary);
            ((user + block.size) as *mut u64).write_unaligned(canary);
        }
    }

    /// The live block at `user`, its guards checked and the heap's own header under
    /// ours confirmed. A pointer the registry does not know is never read near.
    fn live_block<H: Heap>(&self, heap: &mut H, user: usize) -> Result<Guarded, Fault> {
        let Some(guarded) = self.live.get(user) else {
            return Err(self.not_live(heap, user));
        };
        self.check_guards(user, guarded)?;
        let needed = guarded.prefix + guarded.size + CANARY_SIZE;
        match heap.usable_size(heap_block(user, guarded)?) {
            Ok(usable) if usable >= needed => Ok(guarded),
            // The heap no longer recognises the block under ours: its header was hit
            // by a write that went further back than ours.
            _ => Err(Fault::Corruption {
                addr: user,
                what: HEADER_SMASHED,
            }),
        }
    }

    /// Why `user`, which is not a live block, was passed to `free` or `realloc`. The
    /// quarantine answers for recently freed blocks; for older ones, the heap is asked
    /// (without changing anything) what it makes of the block that would be under
    /// ours.
    fn not_live<H: Heap>(&self, heap: &mut H, user: usize) -> Fault {
        if self.quarantine.contains(user) {
            return Fault::DoubleFree { addr: user };
        }
        let Some(below) = user
            .checked_sub(HEADER_SIZE)
            .and_then(|a| NonNull::new(a as *mut u8))
        else {
            return Fault::InvalidPointer {
                addr: user,
                why: OUTSIDE_THE_HEAP,
            };
        };
        match heap.usable_size(below) {
            Err(Fault::InvalidPointer { why, .. }) if why == FREED_BLOCK => {
                Fault::DoubleFree { addr: user }
            }
            Err(Fault::InvalidPointer { why, .. }) => Fault::InvalidPointer { addr: user, why },
            Err(fault) => fault,
            Ok(_) => Fault::InvalidPointer {
                addr: user,
                why: "not the start of a block",
            },
        }
    }

    fn check_guards(&self, user: usize, block: Guarded) -> Result<(), Fault> {
        let corrupt = |what| Err(Fault::Corruption { addr: user, what });
        // SAFETY: `user` is in the registry (or the quarantine), so the heap's block
        // around it is still ours, with the header before it and the canary after.
        let (check, leading, trailing) = unsafe {
            (
                header_words(user).read(),
                header_words(user).add(1).read(),
                ((user + block.size) as *const u64).read_unaligned(),
            )
        };
        if check != self.values.check_word(user, block) {
            return corrupt(HEADER_SMASHED);
        }
        if leading != self.values.canary(user) {
            return corrupt(LEADING_CANARY);
        }
        if trailing != self.values.canary(user) {
            return corrupt(TRAILING_CANARY);
        }
        Ok(())
    }

    /// A quarantined block: guards intact, and every byte still poison.
    fn check_freed(&self, freed: Freed) -> Result<(), Fault> {
        self.check_guards(freed.user, freed.block)?;
        // SAFETY: the quarantine keeps the block allocated in the heap; its `size`
        // bytes at `user` are ours.
        let bytes =
            unsafe { core::slice::from_raw_parts(freed.user as *const u8, freed.block.size) };
        if bytes.iter().any(|&b| b != self.values.poison) {
            return Err(Fault::Corruption {
                addr: freed.user,
                what: POISON_DISTURBED,
            });
        }
        Ok(())
    }

    /// The debug layer's invariants:
    /// 1. the registry of live blocks is a sound table (see [`crate::table`]);
    /// 2. every live block's check word and both canaries are intact;
    /// 3. every quarantined block is not live, its guards are intact and its bytes
    ///    all poison; the quarantine's byte count is the sum of its blocks.
    ///
    /// What lies under the guards (the heap's own blocks) is the heap's check.
    pub fn check(&self) -> Result<(), Fault> {
        self.live
            .check()
            .map_err(|(addr, what)| Fault::Corruption { addr, what })?;
        for (user, guarded) in self.live.entries() {
            self.check_guards(user, guarded)?;
        }
        let mut bytes = 0;
        for freed in self.quarantine.iter() {
            if self.live.contains(freed.user) {
                return Err(Fault::Corruption {
                    addr: freed.user,
                    what: "a quarantined block is also live",
                });
            }
            self.check_freed(*freed)?;
            bytes += freed.block.size;
        }
        if bytes != self.quarantine.bytes {
            return Err(Fault::Corruption {
                addr: 0,
                what: "quarantine byte count disagrees with its blocks",
            });
        }
        Ok(())
    }

    /// One `[QUARANTINE addr size]` line per quarantined block, oldest first: these
    /// are freed, but still used blocks in the heap's dump above.
    pub fn dump<H: Heap>(&self, heap: &H, out: &mut Out) {
        for freed in self.quarantine.iter() {
            let _ = writeln!(
                out,
                "[QUARANTINE {} {}]",
                heap.locate(freed.user),
                freed.block.size
            );
        }
    }
}

/// The check word and the leading canary: the two words before the program's pointer.
fn header_words(user: usize) -> *mut u64 {
    (user - HEADER_SIZE) as *mut u64
}

/// The start of the heap's block under the program's pointer.
fn heap_block(user: usize, block: Guarded) -> Result<NonNull<u8>, Fault> {
    NonNull::new(user.wrapping_sub(block.prefix) as *mut u8).ok_or(Fault::Corruption {
        addr: user,
        what: HEADER_SMASHED,
    })
}

/// A seed nobody chose: from the kernel's random pool (`getrandom`, which does not
/// allocate), or, if that fails this early, from the clock and the stack's address.
fn random_seed() -> u64 {
    let saved_errno = os::errno();
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let got =
        unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    let seed = if got == bytes.len() as isize {
        u64::from_ne_bytes(bytes)
    } else {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `now`.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        mix(now.tv_sec as u64 ^ (now.tv_nsec as u64).rotate_left(32) ^ (&raw const now as u64))
    };
    os::set_errno(saved_errno);
    seed
}

/// The most recently freed blocks, oldest first, in a fixed ring.
struct Quarantine {
    ring: [Freed; QUARANTINE_BLOCKS],
    oldest: usize,
    len: usize,
    /// The program's bytes in the quarantined blocks.
    bytes: usize,
}

impl Quarantine {
    const EMPTY: Freed = Freed {
        user: 0,
        block: Guarded { size: 0, prefix: 0 },
    };

    const fn new() -> Self {
        Quarantine {
            ring: [Self::EMPTY; QUARANTINE_BLOCKS],
            oldest: 0,
            len: 0,
            bytes: 0,
        }
    }

    /// Must the oldest block leave before one of `size` bytes can come in?
    fn is_full_for(&self, size: usize) -> bool {
        self.len == QUARANTINE_BLOCKS || self.bytes + size > QUARANTINE_BYTES
    }

    fn push(&mut self, freed: Freed) {
        debug_assert!(self.len < QUARANTINE_BLOCKS);
        if let Some(slot) = self
            .ring
            .get_mut((self.oldest + self.len) % QUARANTINE_BLOCKS)
        {
            *slot = freed;
            self.len += 1;
            self.bytes += freed.block.size;
        }
    }

    fn pop_oldest(&mut self) -> Option<Freed> {
        if self.len == 0 {
            return None;
        }
        let freed = *self.ring.get(self.oldest)?;
        self.oldest = (self.oldest + 1) % QUARANTINE_BLOCKS;
        self.len -= 1;
        self.bytes -= freed.block.size;
        Some(freed)
    }

    fn iter(&self) -> impl Iterator<Item = &Freed> {
        (0..self.len).filter_map(|i| self.ring.get((self.oldest + i) % QUARANTINE_BLOCKS))
    }

    fn contains(&self, user: usize) -> bool {
        self.iter().any(|freed| freed.user == user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmap_heap::MmapHeap;
    use preload_kit::arena::Growth;
    use std::vec::Vec;

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
    fn values_come_from_the_seed() {
        assert_eq!(Values::from_seed(42), Values::from_seed(42));
        assert_ne!(Values::from_seed(42), Values::from_seed(43));
        for seed in 0..2000 {
            let values = Values::from_seed(seed);
            assert_ne!(values.poison, 0);
            let canary = values.canary(0x1000 + seed as usize * 16);
            assert!(canary.to_ne_bytes().iter().all(|&b| b != 0));
        }
        assert_ne!(random_seed(), random_seed());
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
        poke(p, 64, b'!');
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
            poke(p, -depth, 0x41);
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
                why: FREED_BLOCK
            })
        );
        // Push it out of the quarantine with blocks of another size (so that none
        // lands where it was): the heap's own header then says "freed".
        for _ in 0..QUARANTINE_BLOCKS {
            let q = debug.alloc(&mut heap, 3000, MIN_ALIGN).unwrap();
            debug.free(&mut heap, q).unwrap();
        }
        assert!(!debug.quarantine.contains(addr(p)));
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
            preload_kit::Location::Mapping {
                index: 1,
                offset: HEADER_SIZE
            }
        ));
        let inside = NonNull::new(p.as_ptr().wrapping_add(5000)).unwrap();
        assert!(matches!(
            debug.free(&mut heap, inside),
            Err(Fault::InvalidPointer {
                why: "inside a mapped block, not its start",
                ..
            })
        ));
        debug.free(&mut heap, p).unwrap();
        assert_eq!(debug.quarantine.len, 0, "a mapping is unmapped at once");
        assert_eq!(
            debug.free(&mut heap, p),
            Err(Fault::DoubleFree { addr: addr(p) })
        );
        let mut local = 0u64;
        let stack = NonNull::from(&mut local).cast::<u8>();
        assert!(matches!(
            debug.free(&mut heap, stack),
            Err(Fault::InvalidPointer {
                why: OUTSIDE_THE_HEAP,
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
        assert!(debug.quarantine.contains(addr(p)));
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
            poke(p, 100, (debug.values.canary(addr(p)) & 0xff) as u8);
            debug.free(&mut heap, p).unwrap();
        }
        assert_eq!(debug.alloc(&mut heap, usize::MAX - 8, MIN_ALIGN), None);
        assert_eq!(debug.alloc(&mut heap, 10, 1 << 62), None);
        debug.check().unwrap();
    }

    /// Random work through the layer: contents kept, the layer's and the heap's checks
    /// pass throughout, and freeing everything leaves only the quarantine in the heap.
    #[test]
    fn random_workload_keeps_contents_and_invariants() {
        let (mut debug, mut heap) = setup();
        let mut live: Vec<(NonNull<u8>, usize, u8)> = Vec::new();
        let mut next = crate::test_support::xorshift(0x2545_f491_4f6c_dd1d);
        for step in 0..5000 {
            let byte = step as u8;
            let size = match next() % 20 {
                0 => (next() % 300_000) as usize,
                _ => (next() % 600) as usize,
            };
            match next() % 4 {
                0 if !live.is_empty() => {
                    let (p, size, byte) = live.swap_remove(next() as usize % live.len());
                    assert!(holds(p, size, byte));
                    debug.free(&mut heap, p).unwrap();
                }
                1 if !live.is_empty() => {
                    let i = next() as usize % live.len();
                    let (p, old, old_byte) = live[i];
                    let q = debug.realloc(&mut heap, p, size.max(1)).unwrap().unwrap();
                    assert!(holds(q, old.min(size.max(1)), old_byte));
                    // SAFETY: the block holds `size.max(1)` bytes.
                    unsafe { q.as_ptr().write_bytes(byte, size.max(1)) };
                    live[i] = (q, size.max(1), byte);
                }
                _ => {
                    let align = if next().is_multiple_of(8) {
                        64
                    } else {
                        MIN_ALIGN
                    };
                    let p = debug.alloc(&mut heap, size, align).unwrap();
                    // SAFETY: the block holds `size` bytes.
                    unsafe { p.as_ptr().write_bytes(byte, size) };
                    live.push((p, size, byte));
                }
            }
            if step % 25 == 0 {
                debug.check().unwrap();
                heap.check().unwrap();
            }
        }
        for (p, _, _) in live.drain(..) {
            debug.free(&mut heap, p).unwrap();
        }
        debug.check().unwrap();
        heap.check().unwrap();
        assert!(debug.live.is_empty());
        assert_eq!(heap.stats().used_blocks, debug.quarantine.len);
    }
}
