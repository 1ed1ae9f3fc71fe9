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

use core::mem::size_of;
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
    /// Bytes obtained from the OS but not yet carved.
    pub fn room(&self) -> usize {
        self.end - self.top
    }

    /// Is `addr` inside the carved part, `[start, top)`?
    pub fn holds(&self, addr: usize) -> bool {
        self.start <= addr && addr < self.top
    }
}

/// The bytes of the region table's mapping: room for [`MAX_REGIONS`] regions.
const TABLE_BYTES: usize = MAX_REGIONS * size_of::<Region>();

pub struct Arena {
    /// The region table: [`MAX_REGIONS`] slots in a mapping of its own, made with the
    /// first region; slots `[0, len)` hold the regions, the rest are unused. Out of
    /// line, because inline its 10 KiB made every heap value that size: the first
    /// `malloc` built it on the stack and copied it into a static, two copies touched
    /// in every process (the regions are few, normally one: the mapping's first page
    /// is all that is ever touched).
    table: Option<NonNull<Region>>,
    len: usize,
    growth: Growth,
}

// SAFETY: the arena owns its table's mapping outright (no pointer into it leaves the
// arena but borrows of `self`), so moving the arena to another thread moves that
// ownership; regions are plain numbers.
unsafe impl Send for Arena {}

impl Arena {
    pub const fn new(growth: Growth) -> Arena {
        Arena {
            table: None,
            len: 0,
            growth,
        }
    }

    /// The regions in the order they were made (and so in heap-offset order).
    pub fn regions(&self) -> &[Region] {
        match self.table {
            // SAFETY: slots `[0, len)` of the table are initialised regions (see
            // `start_region`), and `len <= MAX_REGIONS`, the table's length.
            Some(table) => unsafe { core::slice::from_raw_parts(table.as_ptr(), self.len) },
            None => &[],
        }
    }

    fn regions_mut(&mut self) -> &mut [Region] {
        match self.table {
            // SAFETY: as in `regions`; `&mut self` makes this the only reference.
            Some(table) => unsafe { core::slice::from_raw_parts_mut(table.as_ptr(), self.len) },
            None => &mut [],
        }
    }

    fn newest_mut(&mut self) -> Option<&mut Region> {
        self.regions_mut().last_mut()
    }

    /// The region table, mapped now if this is the arena's first region; `None` when
    /// the kernel refuses the mapping.
    fn table_or_map(&mut self) -> Option<NonNull<Region>> {
        match self.table {
            Some(table) => Some(table),
            None => Some(*self.table.insert(os::map_anonymous(TABLE_BYTES)?.cast())),
        }
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
        // The table first: a region made and then not recorded would be lost.
        let Some(table) = self.table_or_map() else {
            return false;
        };
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
        let region = Region {
            start,
            top: start,
            end,
            kind,
            offset,
        };
        // SAFETY: the table has `MAX_REGIONS` slots and `len < MAX_REGIONS` (checked
        // above); the mapping is page-aligned, so every slot is aligned for a `Region`.
        unsafe { table.as_ptr().add(self.len).write(region) };
        self.len += 1;
        true
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

impl Drop for Arena {
    /// Unmaps the region table (the regions themselves stay: their blocks may still be
    /// in use, and a brk region cannot be unmapped).
    fn drop(&mut self) {
        if let Some(table) = self.table {
            // SAFETY: the table is one mapping of `TABLE_BYTES` made by `start_region`,
            // and the arena is going away, so nothing refers to it.
            unsafe { os::unmap(table.cast(), TABLE_BYTES) };
        }
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
