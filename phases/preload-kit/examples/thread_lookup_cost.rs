//! What finding "this thread's" data costs on a fast path, per lookup, for each way the
//! kit's `thread` module offers (and `thread_local!` for comparison: in this executable it
//! is initial-exec or local-exec TLS, a single load; in a `cdylib` it becomes a call to
//! `__tls_get_addr`, which is why the allocator cannot use it).
//!
//! `cargo run --release -p preload-kit --example thread_lookup_cost`

use std::cell::Cell;
use std::ffi::c_void;
use std::hint::black_box;
use std::time::Instant;

use preload_kit::thread::{ThreadKey, ThreadTable, thread_pointer};

const LOOKUPS: u64 = 100_000_000;

unsafe extern "C" fn ignore(_: *mut c_void) {}
static KEY: ThreadKey = ThreadKey::new(ignore);
static TABLE: ThreadTable<256> = ThreadTable::new();
thread_local! { static LOCAL: Cell<usize> = const { Cell::new(0) }; }

fn per_lookup(name: &str, mut lookup: impl FnMut() -> usize) {
    let start = Instant::now();
    let mut sum = 0usize;
    for _ in 0..LOOKUPS {
        sum = sum.wrapping_add(black_box(lookup()));
    }
    let ns = start.elapsed().as_secs_f64() * 1e9 / LOOKUPS as f64;
    println!("{name:<40} {ns:6.2} ns  (checksum {})", sum & 0xff);
}

fn main() {
    // Other threads' entries in the table, so the search is not trivially the first slot.
    let others: Vec<_> = (0..16)
        .map(|i| std::thread::spawn(move || assert!(TABLE.set(i))))
        .collect();
    for other in others {
        other.join().unwrap();
    }
    assert!(KEY.set(42));
    assert!(TABLE.set(42));
    LOCAL.with(|l| l.set(42));
    per_lookup("empty loop", || black_box(42));
    per_lookup("thread_pointer()", thread_pointer);
    per_lookup("ThreadTable::get (thread pointer + table)", || {
        TABLE.get().unwrap_or(0)
    });
    per_lookup("ThreadKey::get (pthread_getspecific)", || KEY.get());
    per_lookup("thread_local! in an executable", || LOCAL.with(|l| l.get()));
}
