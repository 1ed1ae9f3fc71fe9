//! Debug mode (`MALLOC_DEBUG=1`): a layer around any heap that fences every block with
//! checked bytes and holds freed blocks back, poisoned, before really freeing them.
//!
//! The layer knows nothing of how the heap lays blocks out: it asks it for a block a
//! little larger than the program's request and arranges the bytes inside. So it
//! works around any [`Heap`], and a phase gets debug mode by composition:
//! [`Debugged<H>`] is `H` with the layer around it when `MALLOC_DEBUG=1` (phase 3
//! exports `Debugged<MmapHeap>`).
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
//! (`MALLOC_CHECK_EVERY`). Its cost grows with the heap; see phase 3's crate docs.

use core::fmt::Write as _;
use core::ptr::NonNull;

use crate::table::AddrTable;
use crate::{Config, Fault, Heap, Location, MIN_ALIGN, MallInfo, Out, Stats, WhyInvalid, os};

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

/// What [`Fault::Corruption`] says when the check word before a block is wrong.
pub const HEADER_SMASHED: &str = "block header overwritten (buffer underflow)";
/// ...when the canary before the block is wrong.
pub const LEADING_CANARY: &str = "leading canary overwritten (buffer underflow)";
/// ...when the canary after the block is wrong.
pub const TRAILING_CANARY: &str = "trailing canary overwritten (buffer overflow)";
/// ...when a quarantined block's poison changed.
pub const POISON_DISTURBED: &str = "freed block written to (use after free)";

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
    pub fn canary(&self, user: usize) -> u64 {
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
            // `MALLOC_DEBUG=checks` prints nothing but faults.
            None if !config.debug_log => random_seed(),
            None => {
                let seed = random_seed();
                let mut out = crate::out::debug_log();
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

    /// The values this layer writes (for tests that play a buggy program).
    pub fn values(&self) -> Values {
        self.values
    }

    /// Is the block at `user` waiting in the quarantine?
    pub fn is_quarantined(&self, user: usize) -> bool {
        self.quarantine.contains(user)
    }

    /// How many freed blocks wait in the quarantine.
    pub fn quarantined_blocks(&self) -> usize {
        self.quarantine.len
    }

    /// How many blocks the program holds.
    pub fn live_blocks(&self) -> usize {
        self.live.len()
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
                why: WhyInvalid::FreedBlock,
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
                why: WhyInvalid::OutsideTheHeap,
            };
        };
        match heap.usable_size(below) {
            Err(Fault::InvalidPointer {
                why: WhyInvalid::FreedBlock,
                ..
            }) => Fault::DoubleFree { addr: user },
            Err(Fault::InvalidPointer { why, .. }) => Fault::InvalidPointer { addr: user, why },
            Err(fault) => fault,
            Ok(_) => Fault::InvalidPointer {
                addr: user,
                why: WhyInvalid::NotABlockStart,
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
pub fn random_seed() -> u64 {
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

/// The debug layer in an anonymous mapping of its own. Its quarantine ring is kilobytes;
/// held inline, it made every [`Debugged`] heap that much larger in normal mode too,
/// and the first `malloc` of every process built that heap on the stack and copied it
/// into a static, touching those pages for a layer that was never used.
struct LayerBox(NonNull<DebugLayer>);

impl LayerBox {
    const BYTES: usize = size_of::<DebugLayer>();

    /// Moves `layer` into a mapping made for it. Without memory for it debug mode
    /// cannot start: the process ends with a message rather than run unchecked.
    fn new(layer: DebugLayer) -> Self {
        let Some(place) = os::map_anonymous(Self::BYTES) else {
            let mut out = Out::stderr();
            let _ = writeln!(out, "mymalloc: no memory for debug mode's bookkeeping");
            out.flush();
            os::exit_now(1);
        };
        let place = place.cast::<DebugLayer>();
        // SAFETY: the mapping is `BYTES` long, page-aligned (so aligned for the layer)
        // and ours alone.
        unsafe { place.as_ptr().write(layer) };
        LayerBox(place)
    }
}

impl core::ops::Deref for LayerBox {
    type Target = DebugLayer;

    fn deref(&self) -> &DebugLayer {
        // SAFETY: `new` wrote a layer there; the box owns it until `drop`.
        unsafe { self.0.as_ref() }
    }
}

impl core::ops::DerefMut for LayerBox {
    fn deref_mut(&mut self) -> &mut DebugLayer {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { self.0.as_mut() }
    }
}

impl Drop for LayerBox {
    fn drop(&mut self) {
        // SAFETY: the layer was written by `new` and is dropped once, here; then its
        // mapping, which nothing else refers to, goes back to the kernel.
        unsafe {
            self.0.as_ptr().drop_in_place();
            os::unmap(self.0.cast(), Self::BYTES);
        }
    }
}

// SAFETY: the box owns its layer and mapping outright (like `AddrTable`, which the
// layer holds), so moving it to another thread moves that ownership.
unsafe impl Send for LayerBox {}

/// Any heap with the debug layer around it when `MALLOC_DEBUG=1`: debug mode by
/// composition. Every method is one branch: straight to the heap, or through the layer
/// (which calls the heap itself).
pub struct Debugged<H> {
    heap: H,
    debug: Option<LayerBox>,
}

impl<H: Heap> Debugged<H> {
    /// `heap`, with the layer around it if `config` turns debug mode on.
    pub fn around(config: &Config, mut heap: H) -> Self {
        if config.debug {
            heap.enter_debug_mode();
        }
        Debugged {
            heap,
            debug: config.debug.then(|| LayerBox::new(DebugLayer::new(config))),
        }
    }

    /// The heap inside.
    pub fn heap(&self) -> &H {
        &self.heap
    }

    /// The debug layer, in debug mode.
    pub fn layer(&self) -> Option<&DebugLayer> {
        self.debug.as_deref()
    }
}

impl<H: Heap> Heap for Debugged<H> {
    const NAME: &'static str = H::NAME;

    /// The kit runs [`Heap::check`] after calls in debug mode.
    const CHECK_IN_DEBUG_MODE: bool = true;

    fn new(config: &Config) -> Self {
        Debugged::around(config, H::new(config))
    }

    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        match &mut self.debug {
            None => self.heap.alloc(size, align),
            Some(debug) => debug.alloc(&mut self.heap, size, align),
        }
    }

    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        match &mut self.debug {
            None => self.heap.alloc_zeroed(size),
            Some(debug) => debug.alloc_zeroed(&mut self.heap, size),
        }
    }

    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault> {
        match &mut self.debug {
            None => self.heap.free(ptr),
            Some(debug) => debug.free(&mut self.heap, ptr),
        }
    }

    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault> {
        match &mut self.debug {
            None => self.heap.usable_size(ptr),
            Some(debug) => debug.usable_size(&mut self.heap, ptr),
        }
    }

    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        match &mut self.debug {
            None => self.heap.realloc(ptr, size),
            Some(debug) => debug.realloc(&mut self.heap, ptr, size),
        }
    }

    fn locate(&self, addr: usize) -> Location {
        self.heap.locate(addr)
    }

    /// The heap's blocks, then (in debug mode) the quarantined ones.
    fn dump_blocks(&self, out: &mut Out) {
        self.heap.dump_blocks(out);
        if let Some(debug) = &self.debug {
            debug.dump(&self.heap, out);
        }
    }

    /// The heap's totals. In debug mode, quarantined blocks are still used blocks of
    /// the heap, and every block counts its guards.
    fn stats(&self) -> Stats {
        self.heap.stats()
    }

    /// The heap's invariants, then the debug layer's (registry, guards, quarantine).
    fn check(&self) -> Result<(), Fault> {
        self.heap.check()?;
        match &self.debug {
            Some(debug) => debug.check(),
            None => Ok(()),
        }
    }

    fn set_option(&mut self, param: i32, value: i32) -> bool {
        self.heap.set_option(param, value)
    }

    /// The heap's figures: the layer's guards and quarantined blocks are in its blocks,
    /// as used bytes.
    fn mallinfo(&self) -> MallInfo {
        self.heap.mallinfo()
    }

    fn trim(&mut self, pad: usize) -> bool {
        self.heap.trim(pad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
