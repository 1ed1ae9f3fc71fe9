//! A hash table keyed by address, in memory of its own: never in the heap it describes.
//!
//! Two registries are built on it. Phase 3's `mappings.rs` records every mapping made
//! for a large block (keyed by its start) and debug mode ([`crate::debug`]) records
//! every live block (keyed by the program's pointer). Both answer "is this pointer one
//! of ours?" *before* the allocator reads a byte near it, so a wild pointer is reported,
//! not followed; and a buffer overflow in the heap cannot damage them.
//!
//! ```text
//!   `capacity` slots (a power of two), each a key and a value: the first few inside the
//!   table itself, later ones in an anonymous mapping
//!
//!   slot:   0         1         2         3         4         5         6         7
//!         +---------+---------+---------+---------+---------+---------+---------+---------+
//!         | 0       | a -> va | b -> vb | c -> vc | 0       | 0       | d -> vd | 0       |
//!         +---------+---------+---------+---------+---------+---------+---------+---------+
//!                     home(a)   home(b)=1, moved on: probe to the right, wrapping round
//! ```
//!
//! Open addressing with linear probing: a key sits in its *home* slot (a Fibonacci hash
//! of the key) or in the first free slot after it. Key 0 marks a free slot (no block
//! lives at address 0), so a fresh mapping, all zeros, is an empty table.
//!
//! Invariants ([`AddrTable::check`]):
//! 1. every key is reachable from its home: no free slot lies between its home and it;
//! 2. no key appears twice, and `len` slots are in use;
//! 3. `len <= capacity / 2`, so probes stay short and a free slot always exists.
//!
//! Removing shifts the entries after the hole back where that keeps them reachable
//! (Knuth's Algorithm R), so there are no "deleted" markers to clean up. Growing maps a
//! table twice the size, re-inserts every entry and unmaps the old one: a linear-probing
//! table cannot be re-hashed in place, and its memory is never the heap's.
//!
//! The first [`INLINE_CAPACITY`] slots are a field of the table, so a table that never
//! holds more than half that many entries never maps anything: a program with a few
//! large blocks live at a time (most programs) pays no page for phase 3's registry of
//! them, where a mapping costs whole pages (two, for the first mapped table of phase 3's
//! entries: its addresses hash all over it). The table lives wherever its owner does (a
//! heap in the allocator's static data), still never in the heap it describes.

use core::cell::UnsafeCell;
use core::mem::{MaybeUninit, size_of};
use core::ptr::NonNull;

use crate::os;

/// The slots inside the table itself: room for half as many entries before the table
/// maps memory of its own (see the module comment).
pub const INLINE_CAPACITY: usize = 8;

/// The first mapped table's slots, when the inline ones are outgrown.
const FIRST_MAPPED_CAPACITY: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
struct Slot<V: Copy> {
    /// The address this entry is about; 0 when the slot is free.
    key: usize,
    /// Initialised when `key != 0`: a free slot's value is stale or was never written.
    value: MaybeUninit<V>,
}

impl<V: Copy> Slot<V> {
    const FREE: Slot<V> = Slot {
        key: 0,
        value: MaybeUninit::uninit(),
    };
}

pub struct AddrTable<V: Copy> {
    /// The slots while `mapping` is `None` (`capacity == INLINE_CAPACITY`). Written
    /// through `&self` pointers (see `slot`), hence the cell.
    inline: UnsafeCell<[Slot<V>; INLINE_CAPACITY]>,
    /// `capacity` slots in a mapping of our own, once the inline ones were outgrown.
    mapping: Option<NonNull<Slot<V>>>,
    capacity: usize,
    len: usize,
}

// SAFETY: the table owns its mapping outright (no aliasing pointers leave it), so
// moving it to another thread moves that ownership; values are plain `Copy` data.
unsafe impl<V: Copy + Send> Send for AddrTable<V> {}

impl<V: Copy> Default for AddrTable<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy> AddrTable<V> {
    pub const fn new() -> Self {
        AddrTable {
            inline: UnsafeCell::new([Slot::FREE; INLINE_CAPACITY]),
            mapping: None,
            capacity: INLINE_CAPACITY,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the table's own mapping (0 while its inline slots hold it).
    pub fn mapped_bytes(&self) -> usize {
        match self.mapping {
            Some(_) => bytes_for::<V>(self.capacity).unwrap_or(0),
            None => 0,
        }
    }

    /// Where the search for `key` starts: the top bits of `key * 2^64 / φ`, which
    /// spreads aligned addresses (whose low bits are all zero) evenly.
    fn home(&self, key: usize) -> usize {
        let bits = self.capacity.trailing_zeros();
        let hash = (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (hash >> (64 - bits)) as usize
    }

    fn next(&self, index: usize) -> usize {
        (index + 1) & (self.capacity - 1)
    }

    /// The slot at `index`.
    ///
    /// Only called with `index < capacity` (every index comes from `home` or `next`,
    /// both masked to the capacity).
    fn slot(&self, index: usize) -> *mut Slot<V> {
        debug_assert!(index < self.capacity);
        match self.mapping {
            // SAFETY: `index < capacity` and the mapping holds `capacity` slots.
            Some(slots) => unsafe { slots.as_ptr().add(index) },
            // SAFETY: without a mapping `capacity == INLINE_CAPACITY`, the inline
            // array's length, so `index` is inside it.
            None => unsafe { self.inline.get().cast::<Slot<V>>().add(index) },
        }
    }

    fn key_at(&self, index: usize) -> usize {
        // SAFETY: `slot` points at one of our slots (see `slot`); keys are always
        // initialised (zero from `new` or mmap, or written by `place`).
        unsafe { (*self.slot(index)).key }
    }

    /// The value of the slot at `index`, which is in use.
    fn value_at(&self, index: usize) -> V {
        // SAFETY: the slot is in use, so `place` wrote its value.
        unsafe { (*self.slot(index)).value.assume_init() }
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: usize) -> Option<usize> {
        if self.len == 0 || key == 0 {
            return None;
        }
        let mut index = self.home(key);
        // At most `capacity` steps; in practice a few (the table is at most half full,
        // so a free slot always ends the search).
        for _ in 0..self.capacity {
            match self.key_at(index) {
                0 => return None,
                k if k == key => return Some(index),
                _ => index = self.next(index),
            }
        }
        None
    }

    pub fn get(&self, key: usize) -> Option<V> {
        let index = self.find(key)?;
        Some(self.value_at(index))
    }

    pub fn contains(&self, key: usize) -> bool {
        self.find(key).is_some()
    }

    /// Records `key -> value` (replacing the value if `key` is there already). False
    /// only when the table had to grow and the kernel refused the memory; the table is
    /// then unchanged. `key` must not be 0.
    pub fn insert(&mut self, key: usize, value: V) -> bool {
        debug_assert!(key != 0);
        if let Some(index) = self.find(key) {
            // SAFETY: the slot is ours and in use.
            unsafe { (*self.slot(index)).value = MaybeUninit::new(value) };
            return true;
        }
        let wanted = self.len.saturating_add(1).saturating_mul(2);
        if wanted > self.capacity && !self.grow() {
            return false;
        }
        self.place(key, value);
        true
    }

    /// Puts a key that is not in the table into the first free slot from its home.
    /// Needs a free slot, which invariant 3 guarantees; never grows.
    fn place(&mut self, key: usize, value: V) {
        let mut index = self.home(key);
        while self.key_at(index) != 0 {
            index = self.next(index);
        }
        // SAFETY: the slot is ours and free.
        unsafe {
            self.slot(index).write(Slot {
                key,
                value: MaybeUninit::new(value),
            })
        };
        self.len += 1;
    }

    /// Moves the entry for `old` to `new` (a block that moved, e.g. by `mremap`).
    /// Cannot fail: the slot `old` gives up is the room `new` needs. False (and nothing
    /// changes) if `old` is not in the table.
    pub fn rekey(&mut self, old: usize, new: usize, value: V) -> bool {
        if self.remove(old).is_none() {
            return false;
        }
        if new != 0 && !self.contains(new) {
            self.place(new, value);
        }
        true
    }

    /// Takes `key` out of the table, returning its value.
    pub fn remove(&mut self, key: usize) -> Option<V> {
        let index = self.find(key)?;
        let value = self.value_at(index);
        // Algorithm R: walk the cluster after the hole; an entry may move back into the
        // hole unless its home lies (cyclically) after the hole, where moving it would
        // put it before its home and out of reach.
        let mask = self.capacity - 1;
        let mut hole = index;
        let mut probe = index;
        loop {
            probe = self.next(probe);
            let key = self.key_at(probe);
            if key == 0 {
                break;
            }
            let home_to_probe = probe.wrapping_sub(self.home(key)) & mask;
            let hole_to_probe = probe.wrapping_sub(hole) & mask;
            if home_to_probe >= hole_to_probe {
                // SAFETY: both slots are ours; `probe` is in use.
                unsafe { self.slot(hole).write(self.slot(probe).read()) };
                hole = probe;
            }
        }
        // SAFETY: the slot is ours; a zero key frees it.
        unsafe { (*self.slot(hole)).key = 0 };
        self.len -= 1;
        Some(value)
    }

    /// Every entry, in slot order (which is no particular order).
    pub fn entries(&self) -> impl Iterator<Item = (usize, V)> + '_ {
        let used = if self.len == 0 { 0 } else { self.capacity };
        (0..used).filter_map(move |index| {
            let key = self.key_at(index);
            (key != 0).then(|| (key, self.value_at(index)))
        })
    }

    /// Moves the table to a new mapping: the first one when the inline slots are
    /// outgrown, then one twice the size each time; every entry is placed again and the
    /// old mapping unmapped. False if the kernel gives no memory.
    fn grow(&mut self) -> bool {
        let capacity = if self.mapping.is_none() {
            FIRST_MAPPED_CAPACITY
        } else {
            match self.capacity.checked_mul(2) {
                Some(capacity) => capacity,
                None => return false,
            }
        };
        let Some(bytes) = bytes_for::<V>(capacity) else {
            return false;
        };
        let Some(mapping) = os::map_anonymous(bytes) else {
            return false;
        };
        let fresh = AddrTable {
            inline: UnsafeCell::new([Slot::FREE; INLINE_CAPACITY]),
            mapping: Some(mapping.cast::<Slot<V>>()),
            capacity,
            len: 0,
        };
        let old = core::mem::replace(self, fresh);
        for (key, value) in old.entries() {
            self.place(key, value);
        }
        drop(old); // unmaps the old slots
        true
    }

    /// Invariants 1-3 (see the module comment). On failure, the key at fault (0 for a
    /// count that disagrees) and what is wrong.
    pub fn check(&self) -> Result<(), (usize, &'static str)> {
        if !self.capacity.is_power_of_two() {
            return Err((0, "registry capacity is not a power of two"));
        }
        if self.len.saturating_mul(2) > self.capacity {
            return Err((0, "registry more than half full"));
        }
        let mut used = 0;
        for (key, _) in self.entries() {
            used += 1;
            if self.find(key).is_none() {
                return Err((key, "registry entry unreachable from its home slot"));
            }
        }
        // `find` returns the first slot holding a key: if the key were in two slots, the
        // second would be counted here but never found; the count catches it.
        if used != self.len {
            return Err((
                0,
                "registry holds a different number of entries than it counts",
            ));
        }
        Ok(())
    }
}

impl<V: Copy> Drop for AddrTable<V> {
    fn drop(&mut self) {
        if let (Some(slots), Some(bytes)) = (self.mapping, bytes_for::<V>(self.capacity)) {
            // SAFETY: the slots are one mapping made by `grow` with this length, and the
            // table is going away, so nothing refers to them.
            unsafe { os::unmap(slots.cast(), bytes) };
        }
    }
}

fn bytes_for<V: Copy>(capacity: usize) -> Option<usize> {
    capacity.checked_mul(size_of::<Slot<V>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn inserts_finds_and_removes() {
        let mut table = AddrTable::<usize>::new();
        assert_eq!(table.get(0x1000), None);
        assert_eq!(table.remove(0x1000), None);
        assert!(table.insert(0x1000, 1));
        assert!(table.insert(0x2000, 2));
        assert!(
            table.insert(0x1000, 3),
            "a second insert replaces the value"
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(0x1000), Some(3));
        assert_eq!(table.remove(0x1000), Some(3));
        assert_eq!(table.get(0x1000), None);
        assert_eq!(table.get(0x2000), Some(2));
        assert!(table.rekey(0x2000, 0x3000, 4));
        assert_eq!((table.get(0x2000), table.get(0x3000)), (None, Some(4)));
        assert!(!table.rekey(0x2000, 0x5000, 5), "nothing to move");
        table.check().unwrap();
    }

    /// Up to half the inline slots' worth of entries, the table maps nothing; one more
    /// and it moves to a mapping, keeping every entry.
    #[test]
    fn a_few_entries_live_inline() {
        let mut table = AddrTable::<usize>::new();
        let keys = (1..=INLINE_CAPACITY / 2 + 1).map(|i| i * 0x1000);
        for key in keys.clone().take(INLINE_CAPACITY / 2) {
            assert!(table.insert(key, key + 1));
        }
        assert_eq!(table.mapped_bytes(), 0, "inline");
        assert_eq!(table.remove(0x1000), Some(0x1001));
        assert!(table.insert(0x1000, 0x1001));
        table.check().unwrap();
        assert_eq!(table.mapped_bytes(), 0, "still inline");
        assert!(table.insert(0x100_0000, 7));
        assert_eq!(
            table.mapped_bytes(),
            FIRST_MAPPED_CAPACITY * size_of::<Slot<usize>>()
        );
        for key in keys.take(INLINE_CAPACITY / 2) {
            assert_eq!(table.get(key), Some(key + 1));
        }
        assert_eq!(table.get(0x100_0000), Some(7));
        table.check().unwrap();
    }

    /// Thousands of random inserts and removes, compared with std's HashMap, with keys
    /// on a coarse grid so that clusters form and removal has entries to shift; the
    /// table grows several times on the way.
    #[test]
    fn agrees_with_a_hash_map_through_growth_and_removal() {
        let mut table = AddrTable::<(usize, usize)>::new();
        let mut reference = HashMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..40_000usize {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = ((rng % 3000) as usize + 1) * 16;
            if rng.is_multiple_of(3) {
                assert_eq!(table.remove(key), reference.remove(&key), "step {step}");
            } else {
                assert!(table.insert(key, (step, key)));
                reference.insert(key, (step, key));
            }
            if step % 997 == 0 {
                table.check().unwrap();
            }
        }
        assert_eq!(table.len(), reference.len());
        for (key, value) in &reference {
            assert_eq!(table.get(*key), Some(*value));
        }
        assert_eq!(table.entries().count(), reference.len());
        table.check().unwrap();
        assert!(table.mapped_bytes() >= 2 * table.len() * size_of::<Slot<(usize, usize)>>());
    }

    #[test]
    fn the_check_finds_an_unreachable_entry() {
        let mut table = AddrTable::<usize>::new();
        assert!(table.insert(0x40, 1));
        let index = table.find(0x40).unwrap();
        let elsewhere = table.next(table.next(index));
        // SAFETY: both slots are in the table's mapping.
        unsafe {
            table.slot(elsewhere).write(table.slot(index).read());
            (*table.slot(index)).key = 0;
        }
        assert_eq!(
            table.check(),
            Err((0x40, "registry entry unreachable from its home slot"))
        );
    }
}
