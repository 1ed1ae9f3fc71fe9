//! Memory from the operating system, kept as a short list of regions.
//!
//! ```text
//!   region.start            region.top                       region.end
//!   |  blocks carved by the phase |  obtained from the OS, not yet |
//!   |  (the phase walks these)    |  handed to the phase           |
//! ```
//!
//! Normally there is one region, grown by moving the program break (`sbrk`). A new
//! region starts only when the break cannot be extended where the last one ends:
//! another part of the program moved it, or (with [`Growth::BrkThenMmap`]) `sbrk`
//! failed and the heap goes on in mmap-backed regions. The unused tail of a region
//! that has been left behind is never handed out.
//!
//! Heap offsets: the allocator prints addresses as offsets into the heap, as if the
//! regions stood end to end, so dumps and logs do not depend on where ASLR put the
//! break. [`Arena::offset_of`] computes them.
//!
//! Invariants: `start <= top <= end`; `start` and `end` multiples of [`HEAP_ALIGN`],
//! `top` a multiple of 8 (a phase may carve one word first, so that its blocks' headers
//! end where its payloads are aligned);
//! `[start, end)` is mapped, readable and writable, and belongs to this arena.

use core::ptr::NonNull;

use crate::os;

/// Every region boundary is aligned to this.
pub const HEAP_ALIGN: usize = 16;

/// How many regions the arena can track. Reaching it is reported as out of memory.
pub const MAX_REGIONS: usize = 256;

/// Growing the break by less than this at a time would mean one system call per few
/// allocations; glibc pads its heap growth by the same amount (`M_TOP_PAD`).
pub const MIN_GROWTH: usize = 128 * 1024;

/// mmap-backed regions (after `sbrk` fails) are made at least this large, so that a
/// program that keeps allocating does not run out of region slots.
pub const MIN_MAPPED_REGION: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Part of the brk heap: grows and shrinks with the program break.
    Brk,
    /// An anonymous mapping standing in for the brk heap after `sbrk` failed.
    Mapped,
}

/// How the arena may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// Only with `sbrk`; when it fails, allocation fails (phases 1 and 2).
    BrkOnly,
    /// With `sbrk`, and with `mmap` when `sbrk` fails (phase 3).
    BrkThenMmap,
    /// Only with `mmap`: for unit tests, which run inside a process whose own
    /// allocator (glibc's) moves the break too.
    MmapOnly,
}

#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub start: usize,
    pub top: usize,
    pub end: usize,
    pub kind: RegionKind,
    /// The heap offset of `start`: the sizes of all earlier regions, added up.
    pub offset: usize,
}

impl Region {
    const EMPTY: Region = Region {
        start: 0,
        top: 0,
        end: 0,
        kind: RegionKind::Brk,
        offset: 0,
    };

    /// Bytes obtained from the OS but not yet carved.
    pub fn room(&self) -> usize {
        self.end - self.top
    }

    /// Is `addr` inside the carved part, `[start, top)`?
    pub fn holds(&self, addr: usize) -> bool {
        self.start <= addr && addr < self.top
    }
}

pub struct Arena {
    regions: [Region; MAX_REGIONS],
    len: usize,
    growth: Growth,
}

impl Arena {
    pub const fn new(growth: Growth) -> Arena {
        Arena {
            regions: [Region::EMPTY; MAX_REGIONS],
            len: 0,
            growth,
        }
    }

    /// The regions in the order they were made (and so in heap-offset order).
    pub fn regions(&self) -> &[Region] {
        self.regions.get(..self.len).unwrap_or(&[])
    }

    fn newest_mut(&mut self) -> Option<&mut Region> {
        let last = self.len.checked_sub(1)?;
        self.regions.get_mut(last)
    }

    pub fn newest(&self) -> Option<&Region> {
        self.regions().last()
    }

    /// The region whose carved part holds `addr`. Regions are few (one, normally), so a
    /// scan from the newest is fast.
    pub fn region_of(&self, addr: usize) -> Option<&Region> {
        // The newest region first, on its own: it holds nearly every block, and this
        // runs on every free.
        match self.newest() {
            Some(newest) if newest.holds(addr) => Some(newest),
            _ => self.regions().iter().rev().find(|r| r.holds(addr)),
        }
    }

    /// The heap offset of `addr`, if it lies anywhere in the arena's regions.
    pub fn offset_of(&self, addr: usize) -> Option<usize> {
        self.regions()
            .iter()
            .find(|r| r.start <= addr && addr < r.end.max(r.start + 1))
            .map(|r| r.offset + (addr - r.start))
    }

    /// Takes `bytes` (a multiple of 8) from the top of the newest region,
    /// growing the heap first if needed. `None` when the OS gives no more memory.
    pub fn carve(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        debug_assert!(bytes.is_multiple_of(8));
        if !self.make_room(bytes) {
            return None;
        }
        let region = self.newest_mut()?;
        let block = region.top;
        region.top += bytes;
        NonNull::new(block as *mut u8)
    }

    /// Makes sure the newest region has at least `bytes` uncarved bytes, so that several
    /// [`Arena::carve`] calls adding up to `bytes` land next to each other.
    pub fn make_room(&mut self, bytes: usize) -> bool {
        if self.newest().is_some_and(|r| r.room() >= bytes) {
            return true;
        }
        self.extend_newest(bytes) || self.start_region(bytes)
    }

    /// Like [`Arena::make_room`], but never starts a new region: the room must come
    /// from the newest region's own uncarved bytes or from moving the break where it
    /// ends. For growing the last block of the heap without moving it (`realloc`),
    /// where room in a different region would be of no use.
    pub fn make_room_in_place(&mut self, bytes: usize) -> bool {
        if self.newest().is_some_and(|r| r.room() >= bytes) {
            return true;
        }
        self.extend_newest(bytes)
    }

    /// Grows the newest region in place by moving the break, if the break is still
    /// where that region ends.
    fn extend_newest(&mut self, bytes: usize) -> bool {
        let Some(region) = self.newest() else {
            return false;
        };
        if region.kind != RegionKind::Brk || os::current_break() != region.end {
            return false;
        }
        let Some(grow) = growth_for(bytes - region.room()) else {
            return false;
        };
        let end = region.end;
        match os::sbrk(grow as isize) {
            Some(old) if old == end => {
                if let Some(region) = self.newest_mut() {
                    region.end += grow;
                }
                true
            }
            // Another thread moved the break between our two calls (we hold the
            // allocator lock, so it was not an allocation). Give the memory back.
            Some(_) => {
                let _ = os::sbrk(-(grow as isize));
                false
            }
            None => false,
        }
    }

    /// Starts a new region: at the break if `sbrk` can give one, otherwise (when
    /// allowed) in a fresh mapping.
    fn start_region(&mut self, bytes: usize) -> bool {
        if self.len == MAX_REGIONS {
            return false;
        }
        let made = match self.growth {
            Growth::BrkOnly => self.new_brk_region(bytes),
            Growth::BrkThenMmap => self
                .new_brk_region(bytes)
                .or_else(|| new_mapped_region(bytes)),
            Growth::MmapOnly => new_mapped_region(bytes),
        };
        let Some((start, end, kind)) = made else {
            return false;
        };
        let offset = self.newest().map_or(0, |r| r.offset + (r.end - r.start));
        if let Some(slot) = self.regions.get_mut(self.len) {
            *slot = Region {
                start,
                top: start,
                end,
                kind,
                offset,
            };
            self.len += 1;
            true
        } else {
            false
        }
    }

    fn new_brk_region(&self, bytes: usize) -> Option<(usize, usize, RegionKind)> {
        let brk = os::current_break();
        let misalignment = brk.next_multiple_of(HEAP_ALIGN) - brk;
        let grow = growth_for(bytes.checked_add(misalignment)?)?;
        let old = os::sbrk(grow as isize)?;
        let start = old.next_multiple_of(HEAP_ALIGN);
        let end = (old + grow) & !(HEAP_ALIGN - 1);
        if end.checked_sub(start)? < bytes {
            let _ = os::sbrk(-(grow as isize));
            return None;
        }
        Some((start, end, RegionKind::Brk))
    }

    /// Gives back a carved span that ends at the newest region's top, so that it can be
    /// carved again or trimmed: `[addr, top)` becomes uncarved.
    ///
    /// Returns false (and changes nothing) if the span does not end at that top.
    pub fn uncarve(&mut self, addr: usize) -> bool {
        match self.newest_mut() {
            Some(region) if region.start <= addr && addr <= region.top => {
                region.top = addr;
                true
            }
            _ => false,
        }
    }

    /// Returns uncarved memory above `keep` bytes at the end of the brk heap to the OS
    /// (a negative `sbrk`), if the break is still where the heap ends. Returns how many
    /// bytes went back.
    pub fn trim(&mut self, keep: usize) -> usize {
        let page = os::page_size();
        let Some(region) = self.newest() else {
            return 0;
        };
        if region.kind != RegionKind::Brk || os::current_break() != region.end {
            return 0;
        }
        let Some(excess) = region.room().checked_sub(keep) else {
            return 0;
        };
        let release = excess - excess % page;
        if release == 0 || os::sbrk(-(release as isize)).is_none() {
            return 0;
        }
        if let Some(region) = self.newest_mut() {
            region.end -= release;
        }
        release
    }
}

/// How much to move the break to get `needed` more bytes: at least [`MIN_GROWTH`],
/// whole pages, and small enough to pass to `sbrk` as a signed number.
fn growth_for(needed: usize) -> Option<usize> {
    let page = os::page_size();
    let grow = needed.max(MIN_GROWTH).checked_next_multiple_of(page)?;
    (grow <= isize::MAX as usize).then_some(grow)
}

fn new_mapped_region(bytes: usize) -> Option<(usize, usize, RegionKind)> {
    let len = bytes
        .max(MIN_MAPPED_REGION)
        .checked_next_multiple_of(os::page_size())?;
    let start = os::map_anonymous(len)?.as_ptr() as usize;
    Some((start, start + len, RegionKind::Mapped))
}
