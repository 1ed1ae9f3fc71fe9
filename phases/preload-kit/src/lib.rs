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
pub mod fork;
pub mod lock;
pub mod locked;
pub mod os;
pub mod out;
pub mod report;
pub mod shared;
pub mod thread;

pub use config::Config;
pub use libc;
pub use locked::Locked;
pub use out::Out;
pub use report::{EXIT_CORRUPTION, EXIT_MISUSE};
pub use shared::SharedAllocator;

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

    /// Walks the whole heap and checks every invariant the phase relies on.
    fn check(&self) -> Result<(), Fault>;

    /// Whether debug mode runs [`Heap::check`] after calls (phase 3's debug mode).
    const CHECK_IN_DEBUG_MODE: bool = false;

    /// `mallopt(param, value)`: true if the phase honoured the parameter.
    fn set_option(&mut self, _param: i32, _value: i32) -> bool {
        false
    }
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
    InvalidPointer { addr: usize, why: &'static str },
    /// The heap's own data at `addr` is not what the allocator wrote. Exit 3.
    Corruption { addr: usize, what: &'static str },
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
