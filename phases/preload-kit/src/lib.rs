//! # preload-kit: everything a malloc replacement needs that is not allocation policy
//!
//! A phase of mymalloc is a *policy*: a type that implements [`Heap`] (how blocks are
//! laid out, found, split, merged). This crate turns such a type into a drop-in
//! replacement for the C library's allocator:
//!
//! - [`Locked`] puts a [`Heap`], which knows nothing of threads, behind one lock and
//!   builds it lazily on the first call: a [`SharedAllocator`], an allocator every
//!   thread may call at once (`&self` methods, `Sync`, fork handling in its contract).
//! - [`export_malloc!`] exports any shared allocator: the whole malloc family with C
//!   linkage, plus glibc's `__libc_*` aliases and `heap_dump`, `heap_check`,
//!   `malloc_stats`, `mallopt`. Its argument handling ([`abi`]) is written once:
//!   overflow checks, `errno`, alignment validation, `realloc`'s special cases, the
//!   debug log; its `fork` handlers are in [`fork`].
//! - [`debug`]: debug mode as a layer around any heap ([`debug::Debugged`]): canaries,
//!   checksummed headers, a quarantine of poisoned freed blocks, a registry of live
//!   blocks in an address table of its own ([`table`]).
//! - [`os`] wraps `sbrk`, `mmap` and friends; [`arena`] keeps the memory they return.
//! - [`out`] prints without allocating; [`Fault`]s end the process with a one-line
//!   message and the documented exit code.
//!
//! The crate is `no_std`: there is no heap to use inside a heap, and the compiler
//! enforces it (no `Vec`, `String`, `Box`, `format!` or `println!` can even be named).

#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod arena;
pub mod config;
pub mod debug;
pub mod fork;
pub mod info;
pub mod lock;
pub mod locked;
pub mod options;
pub mod os;
pub mod out;
pub mod report;
pub mod shared;
pub mod table;
pub mod thread;
pub mod totals;

pub use config::Config;
pub use info::MallInfo;
pub use libc;
pub use locked::Locked;
pub use out::Out;
pub use report::{EXIT_CORRUPTION, EXIT_MISUSE};
pub use shared::SharedAllocator;
pub use totals::{Tally, Totals};

use core::fmt;
use core::ptr::NonNull;

/// The alignment of every pointer `malloc` returns: enough for any C type on x86-64
/// and aarch64 (`max_align_t` is 16 bytes there).
pub const MIN_ALIGN: usize = 16;

/// What a phase must provide: an allocation policy over memory it owns.
///
/// A `Heap` is single-threaded (`&mut self`): [`Locked`] calls its methods with a lock
/// held, so it is never used by two threads at once. Pointers from the program arrive unchecked: `free`, `realloc` and
/// `usable_size` must validate them and answer with a [`Fault`] rather than trust them.
pub trait Heap: Sized {
    /// The phase's name, as its crate is called.
    const NAME: &'static str;

    /// Whether [`Heap::free`] leaves `errno` as it found it by itself: true for a heap
    /// whose every system call goes through [`os`]'s memory calls, which keep `errno`.
    /// Then [`Locked`]'s `free` does not save and restore it around each call (a call
    /// into the C library for `errno`'s address, a few percent of a small `free`).
    /// False by default: the kit keeps it.
    const FREE_KEEPS_ERRNO: bool = false;

    /// Builds the heap. Called once, on the first call into the allocator.
    fn new(config: &Config) -> Self;

    /// A block of at least `size` bytes whose address is a multiple of `align` (a power
    /// of two, at least [`MIN_ALIGN`]); `None` when memory is exhausted or the request
    /// cannot be represented. Must never wrap arithmetic into a small block.
    fn alloc(&mut self, size: usize, align: usize) -> Option<NonNull<u8>>;

    /// Like [`Heap::alloc`], with the block's bytes set to zero. A phase that knows a
    /// block is already zero (fresh from `mmap`) can skip the clearing.
    fn alloc_zeroed(&mut self, size: usize) -> Option<NonNull<u8>> {
        let block = self.alloc(size, MIN_ALIGN)?;
        // SAFETY: `alloc` returned a block of at least `size` writable bytes.
        unsafe { block.as_ptr().write_bytes(0, size) };
        Some(block)
    }

    /// Releases a block. `ptr` is not null but otherwise unchecked.
    fn free(&mut self, ptr: NonNull<u8>) -> Result<(), Fault>;

    /// How many bytes the program may use at `ptr` (at least what it asked for).
    fn usable_size(&mut self, ptr: NonNull<u8>) -> Result<usize, Fault>;

    /// Resizes a block: `Ok(Some(new))` with the contents kept up to the smaller size,
    /// `Ok(None)` when memory is exhausted (the old block is untouched). `size` is not 0.
    ///
    /// The default moves every time: allocate, copy, free. Phases that can resize in
    /// place override it.
    fn realloc(&mut self, ptr: NonNull<u8>, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let old_size = self.usable_size(ptr)?;
        let Some(new) = self.alloc(size, MIN_ALIGN) else {
            return Ok(None);
        };
        // SAFETY: both blocks are live, distinct (the old one is still allocated), and
        // at least `min(old_size, size)` bytes long.
        unsafe { core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size.min(size)) };
        self.free(ptr)?;
        Ok(Some(new))
    }

    /// Where `addr` is, in terms that do not depend on ASLR (for dumps, logs, errors).
    fn locate(&self, addr: usize) -> Location;

    /// Writes one `[BLOCK …]` line per block, in address order (the kit adds the stats).
    fn dump_blocks(&self, out: &mut Out);

    /// The byte counts behind the `[stats]` line.
    fn stats(&self) -> Stats;

    /// Lines `malloc_stats()` prints after the `[stats]` line: what a phase keeps
    /// beyond the four totals (phase 4: its bins). Nothing by default.
    fn stats_detail(&self, _out: &mut Out) {}

    /// Walks the whole heap and checks every invariant the phase relies on.
    fn check(&self) -> Result<(), Fault>;

    /// Whether debug mode runs [`Heap::check`] after calls (phase 3's debug mode).
    const CHECK_IN_DEBUG_MODE: bool = false;

    /// `mallopt(param, value)`: true if the phase honoured the parameter. (The kit
    /// answers the program as glibc would for the rest: see [`options`].)
    fn set_option(&mut self, _param: i32, _value: i32) -> bool {
        false
    }

    /// The figures of `mallinfo2` and `malloc_info`. The default knows only the
    /// [`Heap::stats`]; a phase with an arena or mappings says more.
    fn mallinfo(&self) -> MallInfo {
        MallInfo::from_stats(&self.stats())
    }

    /// `malloc_trim(pad)`: gives free memory back to the OS, keeping `pad` bytes at the
    /// top of the heap; true if anything went back. The default gives nothing back.
    fn trim(&mut self, _pad: usize) -> bool {
        false
    }

    /// Called once, before the first allocation, when [`debug::Debugged`] puts the
    /// debug layer around this heap: a heap that can help catch bugs at some cost
    /// (phase 3 keeps freed mappings reserved without access) does it from here.
    fn enter_debug_mode(&mut self) {}
}

/// An address as the allocator prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// An offset into the heap (see [`arena`]): printed `0x…`.
    Heap(usize),
    /// An offset into the `index`th mapping made for a large block (1-based, in the
    /// order of creation): printed `mmap#index+0x…`.
    Mapping { index: usize, offset: usize },
    /// Not in anything this allocator owns: printed as the raw address.
    Outside(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Heap(offset) => write!(f, "{offset:#x}"),
            Location::Mapping { index, offset } => write!(f, "mmap#{index}+{offset:#x}"),
            Location::Outside(addr) => write!(f, "{addr:#x}"),
        }
    }
}

/// Something the program did wrong, found while checking its pointer or the heap.
/// The kit reports it on stderr in one line and exits (see [`report`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The block at `addr` was already free. Exit 3: the heap's own bookkeeping says
    /// the program's view of it is wrong.
    DoubleFree { addr: usize },
    /// `addr` was never returned by this allocator; `why` says how we know. Exit 2.
    InvalidPointer { addr: usize, why: WhyInvalid },
    /// The heap's own data at `addr` is not what the allocator wrote. Exit 3.
    Corruption { addr: usize, what: &'static str },
}

/// Why a pointer given to `free`, `realloc` or `malloc_usable_size` is not a live
/// block. Allocators route on it (phase 3 sends a pointer its brk heap finds
/// [`WhyInvalid::OutsideTheHeap`] on to its mappings); the report prints it in words
/// ([`WhyInvalid::words`]): `invalid pointer 0x… passed to free (not inside the heap)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhyInvalid {
    /// In no memory that this allocator (or this part of it) owns.
    OutsideTheHeap,
    /// Inside the heap, but no block starts there.
    NotABlockStart,
    /// Not 16-byte aligned, so no payload can start there.
    Misaligned,
    /// The block was freed (what `malloc_usable_size` finds where `free` would find a
    /// double free).
    FreedBlock,
    /// Inside a mapped block, past its start.
    InsideAMapping,
    /// Inside a mapped block that was unmapped.
    InsideAFreedMapping,
}

impl WhyInvalid {
    /// The words the report prints.
    pub const fn words(self) -> &'static str {
        match self {
            WhyInvalid::OutsideTheHeap => "not inside the heap",
            WhyInvalid::NotABlockStart => "not the start of a block",
            WhyInvalid::Misaligned => "not 16-byte aligned, so not the start of a block",
            WhyInvalid::FreedBlock => "the block was freed",
            WhyInvalid::InsideAMapping => "inside a mapped block, not its start",
            WhyInvalid::InsideAFreedMapping => "inside a mapped block that was freed",
        }
    }
}

impl fmt::Display for WhyInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words())
    }
}

/// Byte counts for the `[stats]` line. Sizes are whole blocks, headers included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub used_blocks: usize,
    pub used_bytes: usize,
    pub free_blocks: usize,
    pub free_bytes: usize,
    pub largest_free: usize,
}

impl Stats {
    /// External fragmentation, in whole percent: the share of free memory that is not in
    /// the largest free block, `100 * (1 - largest_free / free_bytes)`. 0 when nothing
    /// is free: a request that fits in the free total then fits in one block.
    pub fn fragmentation_percent(&self) -> usize {
        if self.free_bytes == 0 {
            0
        } else {
            100 - (self.largest_free.min(self.free_bytes) * 100).div_ceil(self.free_bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_is_the_share_of_free_memory_outside_the_largest_block() {
        let stats = |free_bytes, largest_free| Stats {
            free_bytes,
            largest_free,
            ..Stats::default()
        };
        assert_eq!(stats(0, 0).fragmentation_percent(), 0);
        assert_eq!(stats(1000, 1000).fragmentation_percent(), 0);
        assert_eq!(stats(1000, 250).fragmentation_percent(), 75);
        assert_eq!(stats(3, 1).fragmentation_percent(), 66);
    }

    #[test]
    fn locations_print_without_aslr_addresses_when_inside_the_heap() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Location::Heap(0x40).to_string(), "0x40");
        assert_eq!(
            Location::Mapping {
                index: 2,
                offset: 16
            }
            .to_string(),
            "mmap#2+0x10"
        );
    }
}
