//! What `munmap` leaves behind: a freed mapping's range is really gone from the
//! process (or, in debug mode, held as a reservation until the ring forgets it).
//!
//! "Not mapped any more" is only a fact while no other thread of the process maps
//! memory. libtest runs the unit tests of a crate on parallel threads of one process,
//! and there another test's mapping can land on the range just freed (CI saw exactly
//! that). So these checks live alone in their own test binary, run one after another
//! from a single test.

use mmap_debug::mappings::{Mappings, RECENT};
use preload_kit::Fault;
use preload_kit::os::page_size;

#[test]
fn freed_ranges_leave_the_address_space() {
    a_block_is_a_mapping_until_freed();
    alignment_above_a_page_is_honoured();
    freed_mappings_stay_reserved_while_remembered();
}

/// Is `addr` mapped in this process? (`msync` fails with ENOMEM on a hole.)
fn is_mapped(addr: usize) -> bool {
    let page = addr & !(page_size() - 1);
    // SAFETY: msync only inspects the page tables for this range.
    unsafe { preload_kit::libc::msync(page as *mut _, page_size(), 0) == 0 }
}

/// With `reserve_freed`, a freed mapping's range stays taken (so no new mapping
/// can be put there) until the ring forgets it; then it is unmapped for good.
fn freed_mappings_stay_reserved_while_remembered() {
    let mut mappings = Mappings::new();
    mappings.reserve_freed();
    let first = mappings.map(200_000, 16).unwrap().as_ptr() as usize;
    mappings.unmap(first).unwrap();
    assert!(is_mapped(first), "reserved, not unmapped");
    assert_eq!(
        mappings.unmap(first),
        Err(Fault::DoubleFree { addr: first })
    );
    for _ in 0..RECENT {
        let p = mappings.map(4096, 16).unwrap().as_ptr() as usize;
        assert_ne!(p, first, "a reserved range is never handed out again");
        mappings.unmap(p).unwrap();
    }
    assert!(!is_mapped(first), "forgotten by the ring, so unmapped");
    mappings.check().unwrap();
}

fn a_block_is_a_mapping_until_freed() {
    let mut mappings = Mappings::new();
    let p = mappings.map(200_000, 16).unwrap();
    let addr = p.as_ptr() as usize;
    assert_eq!(addr % page_size(), 0);
    assert_eq!(
        mappings.len_of(addr),
        Ok(200_000usize.next_multiple_of(page_size()))
    );
    // SAFETY: the mapping holds 200000 writable bytes.
    unsafe { p.as_ptr().write_bytes(7, 200_000) };
    assert!(is_mapped(addr) && is_mapped(addr + 199_999));
    assert_eq!(mappings.totals().0, 1);
    mappings.check().unwrap();
    mappings.unmap(addr).unwrap();
    assert!(!is_mapped(addr), "free unmaps the block");
    assert_eq!(mappings.totals(), (0, 0));
    mappings.check().unwrap();
}

fn alignment_above_a_page_is_honoured() {
    let mut mappings = Mappings::new();
    for align in [8192, 1 << 16, 1 << 21] {
        let p = mappings.map(200_000, align).unwrap().as_ptr() as usize;
        assert_eq!(p % align, 0);
        assert!(is_mapped(p) && is_mapped(p + 199_999));
        mappings.unmap(p).unwrap();
        assert!(
            !is_mapped(p),
            "the trimmed head and tail left nothing behind"
        );
    }
    assert_eq!(mappings.map(usize::MAX - 4096, 16), None);
    assert_eq!(mappings.map(100, 1 << 62), None);
    mappings.check().unwrap();
}
