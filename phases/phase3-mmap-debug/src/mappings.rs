//! Large blocks: each one an anonymous mapping of its own, known by a registry.
//!
//! ```text
//!   a large block: whole pages from mmap         the registry (kit table.rs): inline
//!                                                slots, then a mapping; never the heap
//!   start = the pointer malloc returns           +---------------------------------+
//!   +-----------------------------+--------+     | start -> { len, number }        |
//!   | the program's bytes         | rest of|     | ...                             |
//!   |                             | a page |     +---------------------------------+
//!   +-----------------------------+--------+     recently unmapped: a ring of the
//!   <------------- len (whole pages) ------>     last RECENT freed { start, len, number }
//! ```
//!
//! A mapped block has **no header**: its registry entry is its header, kept where no
//! write through the program's pointers can reach it. `free` looks the pointer up
//! before touching anything, so:
//!
//! - the start of a live mapping: unmapped (`munmap`), the entry moves to the ring;
//! - a pointer *inside* a live mapping: an invalid pointer, exit 2;
//! - the start of a mapping in the ring (already unmapped): a **double free**, exit 3,
//!   where trusting a header would have read unmapped memory and crashed;
//! - anything else: not ours.
//!
//! `realloc` between two large sizes is `mremap`: the kernel moves page table entries,
//! not bytes. Mappings are numbered in the order they are made (`#1`, `#2`, ...), so
//! dumps and messages say `mmap#2+0x10` instead of an address ASLR picked.
//!
//! Whole pages cost memory for small blocks (a 1-byte request would take 4 KiB) and a
//! system call each way, which is why only requests at or above a threshold come here
//! (see [`crate::mmap_heap`]).

use core::fmt::Write as _;
use core::ptr::NonNull;

use preload_kit::{Fault, Out, WhyInvalid, os};

use preload_kit::table::AddrTable;

/// How many unmapped blocks are remembered for reporting double frees. Older ones are
/// forgotten: a double free that late is reported as a pointer that is not ours.
pub const RECENT: usize = 64;

/// A registry entry: what the block's header would hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The mapping's length: whole pages, at least the request.
    pub len: usize,
    /// 1 for the first mapping this heap made, 2 for the next, ...
    pub number: usize,
}

/// A mapping, live or recently unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: usize,
    pub len: usize,
    pub number: usize,
    /// Freed, but its range still held without access (see
    /// [`Mappings::reserve_freed`]): unmapped for good when forgotten.
    pub reserved: bool,
}

impl Mapping {
    fn holds(&self, addr: usize) -> bool {
        self.start <= addr && addr - self.start < self.len
    }

    fn overlaps(&self, start: usize, len: usize) -> bool {
        self.start < start.saturating_add(len) && start < self.start.saturating_add(self.len)
    }
}

pub struct Mappings {
    registry: AddrTable<Mapped>,
    recently_unmapped: Recent,
    /// The number the next mapping gets.
    next_number: usize,
    /// The sum of every live mapping's length, for the stats; `check` verifies it.
    mapped_bytes: usize,
    /// Freed mappings stay reserved without access while they are remembered (see
    /// [`Mappings::reserve_freed`]).
    reserve_freed: bool,
}

impl Default for Mappings {
    fn default() -> Self {
        Self::new()
    }
}

impl Mappings {
    pub const fn new() -> Self {
        Mappings {
            registry: AddrTable::new(),
            recently_unmapped: Recent::new(),
            next_number: 1,
            mapped_bytes: 0,
            reserve_freed: false,
        }
    }

    /// From now on, a freed mapping is not unmapped at once: its pages are replaced by
    /// a reservation without access (their memory goes back to the OS) for as long as
    /// the ring of recently unmapped blocks remembers it ([`RECENT`] frees). The kernel
    /// cannot hand its addresses to a new mapping meanwhile, so a write through a
    /// dangling pointer into a freed large block faults at once (SIGSEGV) instead of
    /// landing in whatever block was mapped there next. Debug mode turns this on.
    pub fn reserve_freed(&mut self) {
        self.reserve_freed = true;
    }

    /// Live mappings and their total length.
    pub fn totals(&self) -> (usize, usize) {
        (self.registry.len(), self.mapped_bytes)
    }

    /// A new mapping of at least `size` bytes starting at a multiple of `align` (a
    /// power of two); its bytes are zero. `None` when the size cannot be a mapping or
    /// the kernel refuses.
    pub fn map(&mut self, size: usize, align: usize) -> Option<NonNull<u8>> {
        let len = pages_for(size)?;
        let start = if align <= os::page_size() {
            os::map_anonymous(len)?
        } else {
            map_aligned(len, align)?
        };
        let number = self.next_number;
        if !self
            .registry
            .insert(start.as_ptr() as usize, Mapped { len, number })
        {
            // SAFETY: we made this mapping just now and nobody has seen it.
            unsafe { os::unmap(start, len) };
            return None;
        }
        self.next_number += 1;
        self.mapped_bytes += len;
        // The kernel may reuse the address of a mapping we unmapped earlier: that old
        // block is gone for good, and its address now means the new one.
        self.recently_unmapped
            .forget_overlapping(start.as_ptr() as usize, len);
        Some(start)
    }

    /// The length of the live mapping that starts at `addr`, or why `addr` is not one.
    pub fn len_of(&self, addr: usize) -> Result<usize, Fault> {
        match self.registry.get(addr) {
            Some(mapped) => Ok(mapped.len),
            None => Err(self.misuse(addr)),
        }
    }

    /// Frees the block at `addr`: checked against the registry first, then unmapped.
    pub fn unmap(&mut self, addr: usize) -> Result<(), Fault> {
        let Some(mapped) = self.registry.remove(addr) else {
            return Err(self.misuse(addr));
        };
        self.mapped_bytes -= mapped.len;
        let mut reserved = false;
        if let Some(start) = NonNull::new(addr as *mut u8) {
            // SAFETY: the registry says `[addr, addr + len)` is one whole mapping of ours,
            // and the program has just given it back.
            reserved = self.reserve_freed && unsafe { os::reserve(start, mapped.len) };
            if !reserved {
                // SAFETY: as above.
                unsafe { os::unmap(start, mapped.len) };
            }
        }
        let forgotten = self.recently_unmapped.remember(Mapping {
            start: addr,
            len: mapped.len,
            number: mapped.number,
            reserved,
        });
        if let Some(old) = forgotten.filter(|m| m.reserved)
            && let Some(start) = NonNull::new(old.start as *mut u8)
        {
            // SAFETY: a reservation this registry made when the block was freed; nothing
            // has used the range since (it has no access).
            unsafe { os::unmap(start, old.len) };
        }
        Ok(())
    }

    /// `realloc` of the block at `addr` to `size` bytes (still large): `mremap`, which
    /// may move the block. `Ok(None)` when the kernel refuses (the block is untouched).
    pub fn resize(&mut self, addr: usize, size: usize) -> Result<Option<NonNull<u8>>, Fault> {
        let Some(mapped) = self.registry.get(addr) else {
            return Err(self.misuse(addr));
        };
        let Some(start) = NonNull::new(addr as *mut u8) else {
            return Err(self.misuse(addr));
        };
        let Some(len) = pages_for(size) else {
            return Ok(None);
        };
        if len == mapped.len {
            return Ok(Some(start));
        }
        // SAFETY: the registry says `[addr, addr + mapped.len)` is one whole mapping of
        // ours; the program still owns it and gets the new address back.
        let Some(moved) = (unsafe { os::remap(start, mapped.len, len) }) else {
            return Ok(None);
        };
        let moved_addr = moved.as_ptr() as usize;
        self.registry
            .rekey(addr, moved_addr, Mapped { len, ..mapped });
        self.mapped_bytes = self.mapped_bytes - mapped.len + len;
        self.recently_unmapped.forget_overlapping(moved_addr, len);
        Ok(Some(moved))
    }

    /// The live mapping that holds `addr`, if any. The registry is keyed by starts,
    /// and a start is page-aligned, so the page holding `addr` is tried first; a
    /// pointer further into a block costs a scan of the registry (only on error paths
    /// and in debug mode's log).
    fn live_around(&self, addr: usize) -> Option<Mapping> {
        let page_start = addr & !(os::page_size() - 1);
        let as_mapping = |(start, mapped): (usize, Mapped)| Mapping {
            start,
            len: mapped.len,
            number: mapped.number,
            reserved: false,
        };
        if let Some(mapped) = self.registry.get(page_start) {
            return Some(as_mapping((page_start, mapped)));
        }
        self.registry
            .entries()
            .map(as_mapping)
            .find(|m| m.holds(addr))
    }

    /// Why `addr` is not the start of a live mapped block.
    fn misuse(&self, addr: usize) -> Fault {
        if self.live_around(addr).is_some() {
            return Fault::InvalidPointer {
                addr,
                why: WhyInvalid::InsideAMapping,
            };
        }
        match self.recently_unmapped.around(addr) {
            Some(freed) if freed.start == addr => Fault::DoubleFree { addr },
            Some(_) => Fault::InvalidPointer {
                addr,
                why: WhyInvalid::InsideAFreedMapping,
            },
            None => Fault::InvalidPointer {
                addr,
                why: WhyInvalid::OutsideTheHeap,
            },
        }
    }

    /// `(number, offset)` of `addr` in a live or recently unmapped mapping: how dumps
    /// and messages name it.
    pub fn locate(&self, addr: usize) -> Option<(usize, usize)> {
        self.live_around(addr)
            .or_else(|| self.recently_unmapped.around(addr))
            .map(|m| (m.number, addr - m.start))
    }

    /// One `[MMAP #n len USED]` line per live mapping, in the order they were made.
    /// Finding each next one scans the registry, which is quadratic but bounded by the
    /// few large blocks a dump is read for, and needs no memory to sort in.
    pub fn dump(&self, out: &mut Out) {
        let mut last = 0;
        while let Some((_, mapped)) = self
            .registry
            .entries()
            .filter(|(_, m)| m.number > last)
            .min_by_key(|(_, m)| m.number)
        {
            let _ = writeln!(out, "[MMAP #{} {} USED]", mapped.number, mapped.len);
            last = mapped.number;
        }
    }

    /// The invariants of the large blocks:
    /// 1. the registry is a sound table (see [`preload_kit::table`]);
    /// 2. every entry is a page-aligned start, a whole number of pages, and a number
    ///    that has been given out;
    /// 3. the lengths add up to `mapped_bytes`;
    /// 4. no recently unmapped block overlaps a live one (its address has been reused
    ///    and must be forgotten).
    ///
    /// That live mappings do not overlap each other is the kernel's guarantee (each
    /// came from its own `mmap` or `mremap`), not checked here.
    pub fn check(&self) -> Result<(), Fault> {
        self.registry
            .check()
            .map_err(|(addr, what)| Fault::Corruption { addr, what })?;
        let page = os::page_size();
        let mut total = 0usize;
        for (start, mapped) in self.registry.entries() {
            let sound = start.is_multiple_of(page)
                && mapped.len != 0
                && mapped.len.is_multiple_of(page)
                && (1..self.next_number).contains(&mapped.number);
            if !sound {
                return Err(Fault::Corruption {
                    addr: start,
                    what: "mapping registry entry is malformed",
                });
            }
            total = total.saturating_add(mapped.len);
            if let Some(freed) = self
                .recently_unmapped
                .iter()
                .find(|freed| freed.overlaps(start, mapped.len))
            {
                return Err(Fault::Corruption {
                    addr: freed.start,
                    what: "an unmapped block overlaps a live mapping",
                });
            }
        }
        if total != self.mapped_bytes {
            return Err(Fault::Corruption {
                addr: 0,
                what: "mapped byte count disagrees with the registry",
            });
        }
        Ok(())
    }
}

/// `size` rounded up to whole pages (at least one), if that is a size a mapping can
/// have.
fn pages_for(size: usize) -> Option<usize> {
    let len = size.max(1).checked_next_multiple_of(os::page_size())?;
    (len <= isize::MAX as usize).then_some(len)
}

/// A mapping of `len` bytes whose start is a multiple of `align` (larger than a page):
/// map `align - page` bytes more than needed, then unmap the unaligned head and the
/// tail.
fn map_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    let page = os::page_size();
    let span = len.checked_add(align - page)?;
    if span > isize::MAX as usize {
        return None;
    }
    let raw = os::map_anonymous(span)?;
    let raw_addr = raw.as_ptr() as usize;
    let start = raw_addr.next_multiple_of(align);
    let head = start - raw_addr;
    let tail = span - head - len;
    if head > 0 {
        // SAFETY: `[raw, raw + head)` is the front of the mapping we just made.
        unsafe { os::unmap(raw, head) };
    }
    // SAFETY: `start` lies inside the mapping (`head < align <= span - len`).
    let start = unsafe { raw.add(head) };
    if tail > 0 {
        // SAFETY: `[start + len, raw + span)` is the end of the mapping we just made.
        unsafe { os::unmap(start.add(len), tail) };
    }
    Some(start)
}

/// The last [`RECENT`] unmapped blocks, oldest overwritten first.
struct Recent {
    entries: [Option<Mapping>; RECENT],
    next: usize,
}

impl Recent {
    const fn new() -> Self {
        Recent {
            entries: [None; RECENT],
            next: 0,
        }
    }

    /// Remembers `mapping`; returns the one it displaced, if any.
    fn remember(&mut self, mapping: Mapping) -> Option<Mapping> {
        let displaced = self
            .entries
            .get_mut(self.next)
            .and_then(|slot| slot.replace(mapping));
        self.next = (self.next + 1) % RECENT;
        displaced
    }

    fn forget_overlapping(&mut self, start: usize, len: usize) {
        for slot in &mut self.entries {
            if slot.is_some_and(|m| m.overlaps(start, len)) {
                *slot = None;
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Mapping> {
        self.entries.iter().flatten()
    }

    fn around(&self, addr: usize) -> Option<Mapping> {
        self.iter().find(|m| m.holds(addr)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preload_kit::os::page_size;

    #[test]
    fn misuse_is_named_without_touching_the_memory() {
        let mut mappings = Mappings::new();
        let a = mappings.map(300_000, 16).unwrap().as_ptr() as usize;
        assert_eq!(
            mappings.unmap(a + 4096),
            Err(Fault::InvalidPointer {
                addr: a + 4096,
                why: WhyInvalid::InsideAMapping
            })
        );
        assert_eq!(
            mappings.unmap(a + 16),
            Err(Fault::InvalidPointer {
                addr: a + 16,
                why: WhyInvalid::InsideAMapping
            })
        );
        mappings.unmap(a).unwrap();
        assert_eq!(mappings.unmap(a), Err(Fault::DoubleFree { addr: a }));
        assert!(matches!(
            mappings.unmap(a + 16),
            Err(Fault::InvalidPointer {
                why: WhyInvalid::InsideAFreedMapping,
                ..
            })
        ));
        let mut local = 0u8;
        let stack = &mut local as *mut u8 as usize;
        assert!(matches!(
            mappings.unmap(stack),
            Err(Fault::InvalidPointer {
                why: WhyInvalid::OutsideTheHeap,
                ..
            })
        ));
        assert_eq!(
            mappings.locate(a + 16),
            Some((1, 16)),
            "named after unmapping"
        );
    }

    #[test]
    fn only_the_last_unmapped_blocks_are_remembered() {
        let mut mappings = Mappings::new();
        let mut freed = std::vec::Vec::new();
        for _ in 0..RECENT + 1 {
            let a = mappings.map(8192, 16).unwrap().as_ptr() as usize;
            freed.push(a);
        }
        for &a in &freed {
            mappings.unmap(a).unwrap();
        }
        // The newest is a double free. The oldest was forgotten (or its address reused
        // by a later mapping, which forgets it too): no longer called a double free.
        let newest = *freed.last().unwrap();
        assert_eq!(
            mappings.unmap(newest),
            Err(Fault::DoubleFree { addr: newest })
        );
        assert!(matches!(
            mappings.unmap(freed[0]),
            Err(Fault::InvalidPointer { .. })
        ));
        mappings.check().unwrap();
    }

    #[test]
    fn resize_keeps_contents_and_moves_the_entry() {
        let mut mappings = Mappings::new();
        let p = mappings.map(150_000, 16).unwrap();
        // SAFETY: the mapping holds 150000 bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, 150_000) };
        // A neighbour right after it makes growing in place unlikely.
        let _fence = mappings.map(8192, 16).unwrap();
        let grown = mappings
            .resize(p.as_ptr() as usize, 4 << 20)
            .unwrap()
            .unwrap();
        // SAFETY: the grown mapping holds 4 MiB, the first 150000 bytes kept.
        let kept = unsafe { core::slice::from_raw_parts(grown.as_ptr(), 150_000) };
        assert!(kept.iter().all(|&b| b == 0x5a));
        assert_eq!(mappings.len_of(grown.as_ptr() as usize), Ok(4 << 20));
        if grown != p {
            assert!(mappings.len_of(p.as_ptr() as usize).is_err());
        }
        let shrunk = mappings
            .resize(grown.as_ptr() as usize, 140_000)
            .unwrap()
            .unwrap();
        assert_eq!(shrunk, grown, "shrinking never moves");
        assert_eq!(
            mappings.totals().1,
            140_000usize.next_multiple_of(page_size()) + 8192
        );
        mappings.check().unwrap();
        assert_eq!(
            mappings.resize(shrunk.as_ptr() as usize, usize::MAX),
            Ok(None),
            "an impossible size fails cleanly"
        );
    }

    #[test]
    fn the_check_finds_broken_invariants() {
        let mut mappings = Mappings::new();
        let a = mappings.map(100_000, 16).unwrap().as_ptr() as usize;
        mappings.check().unwrap();
        mappings.mapped_bytes += 4096;
        assert_eq!(
            mappings.check(),
            Err(Fault::Corruption {
                addr: 0,
                what: "mapped byte count disagrees with the registry"
            })
        );
        mappings.mapped_bytes -= 4096;
        mappings.recently_unmapped.remember(Mapping {
            start: a + 4096,
            len: 4096,
            number: 7,
            reserved: false,
        });
        assert_eq!(
            mappings.check(),
            Err(Fault::Corruption {
                addr: a + 4096,
                what: "an unmapped block overlaps a live mapping"
            })
        );
    }

    #[test]
    fn the_dump_numbers_mappings_in_creation_order() {
        let mut mappings = Mappings::new();
        let a = mappings.map(300_000, 16).unwrap().as_ptr() as usize;
        let _b = mappings.map(262_144, 16).unwrap();
        let _c = mappings.map(1, 16).unwrap();
        mappings.unmap(a).unwrap();
        let text = crate::test_support::printed(|out| mappings.dump(out));
        assert_eq!(
            text,
            std::format!("[MMAP #2 262144 USED]\n[MMAP #3 {} USED]\n", page_size())
        );
    }
}
