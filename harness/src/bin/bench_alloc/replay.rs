//! `--trace FILE` for a threaded trace (`harness::threaded_trace`): a real program's
//! allocation calls, replayed with its threads.
//!
//! Each recorded thread runs on a thread of its own. A call on a block first waits until
//! the block's previous call is done (whichever thread made it), so every block lives the
//! life it had in the program, and a free recorded on another thread is made on another
//! thread. Apart from that the threads run freely.
//!
//! As in the malloc-lab replay (`trace`): every block is written in full with its id's
//! byte and checked (first and last byte) before it is resized or freed; calloc's bytes
//! must come back zero and aligned blocks aligned; ops/s counts the calls replayed, and
//! utilization is the peak live payload over the peak footprint (anonymous memory
//! growth less the harness's own tables, sampled as there: the thread that performs a
//! sampled step takes the sample, the step after which the live payload peaks being
//! taken from the recorded order). With several threads the replay's interleaving
//! changes from run to run, and with it the live payload's peak and the footprint; the
//! time of the samples is left out of ops/s exactly only with one thread.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use harness::threaded_trace::{Call, Step, ThreadedTrace};

use crate::memory::{Footprint, peak_resident_bytes};

/// One block id's state, shared by the threads.
struct Slot {
    ptr: AtomicPtr<u8>,
    size: AtomicUsize,
    /// Calls on this id done so far; the call with sequence number n waits for n.
    done: AtomicU32,
}

pub fn run(path: &str, text: String, mut footprint: Footprint, variant: u32) -> i32 {
    // As in the malloc-lab replay: room for a variant's stray block (one more step and
    // one more slot), and the variant made in place with the peak found in the slots,
    // so that no table is made and freed before the replay.
    let spare = usize::from(variant != 0);
    let mut trace = match ThreadedTrace::parse_with_room(&text, spare) {
        Ok(trace) => trace,
        Err(e) => {
            eprintln!("bench_alloc: {path}: {e}");
            return 2;
        }
    };
    let slots: Vec<Slot> = (0..trace.ids + spare)
        .map(|_| Slot {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            size: AtomicUsize::new(0),
            done: AtomicU32::new(0),
        })
        .collect();
    let mut peak_at = step_to_peak(&trace.steps, &slots);
    if let Some(at) = harness::trace::stray_block_at(peak_at, variant) {
        trace.add_stray_block(at);
        peak_at = step_to_peak(&trace.steps, &slots);
    }
    // Counted in the slots' `done`, which the replay starts from 0.
    let sequence =
        trace.sequence_numbers_counted_by(|id| slots[id].done.fetch_add(1, Ordering::Relaxed));
    slots
        .iter()
        .for_each(|slot| slot.done.store(0, Ordering::Relaxed));
    // Each thread's list of steps, sized first so that no list grows (and leaves freed
    // buffers behind) and the sum below is what they hold.
    let mut counts = vec![0usize; trace.threads];
    for step in &trace.steps {
        counts[step.thread as usize] += 1;
    }
    let mut mine: Vec<Vec<u32>> = counts.iter().map(|&n| Vec::with_capacity(n)).collect();
    for (index, step) in trace.steps.iter().enumerate() {
        mine[step.thread as usize].push(index as u32);
    }
    let harness_bytes = text.capacity()
        + trace.steps.capacity() * std::mem::size_of::<harness::threaded_trace::Step>()
        + sequence.capacity() * 4
        + slots.capacity() * std::mem::size_of::<Slot>()
        + mine.capacity() * std::mem::size_of::<Vec<u32>>()
        + mine.iter().map(|steps| steps.capacity() * 4).sum::<usize>();
    footprint.plan(trace.steps.len(), Some(peak_at));
    let live = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let footprint = &footprint;
    let started = Instant::now();
    let problems: Vec<Option<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = mine
            .iter()
            .map(|steps| {
                let (trace, sequence, slots, live, peak) =
                    (&trace, &sequence, &slots, &live, &peak);
                scope.spawn(move || {
                    for &index in steps {
                        let index = index as usize;
                        let step = trace.steps[index];
                        let slot = &slots[step.id as usize];
                        wait_for(&slot.done, sequence[index]);
                        if let Err(problem) = perform(step.call, step.id, slot, live, peak) {
                            return Some(format!("op {} ({step:?}): {problem}", index + 1));
                        }
                        // Release: the next call on this block (maybe on another thread)
                        // sees the block as this call left it.
                        slot.done.store(sequence[index] + 1, Ordering::Release);
                        if footprint.is_sample_point(index + 1) {
                            footprint.sample();
                        }
                    }
                    None
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Some("a replay thread panicked".into())))
            .collect()
    });
    footprint.sample();
    let seconds = (started.elapsed())
        .saturating_sub(footprint.sampling_time())
        .as_secs_f64()
        .max(1e-9);
    if let Some(problem) = problems.into_iter().flatten().next() {
        eprintln!("bench_alloc: {path}: {problem}");
        return 1;
    }
    let footprint = footprint.peak(harness_bytes);
    let peak_payload = peak.load(Ordering::Relaxed);
    let name = crate::trace::file_name(path);
    let variant = crate::trace::of_variant(variant);
    let threads = trace.threads;
    println!(
        "trace {name}{variant}: {threads} thread{}, {} ops in {seconds:.4} s, {:.0} ops/s; peak payload {peak_payload} B; \
         peak footprint {footprint} B; utilization {:.1}%; peak RSS {} KiB; ok",
        if threads == 1 { "" } else { "s" },
        trace.steps.len(),
        trace.steps.len() as f64 / seconds,
        100.0 * peak_payload as f64 / footprint as f64,
        peak_resident_bytes() / 1024
    );
    0
}

/// Waits until `done` reaches `turn`: spins briefly (the other thread is usually just
/// finishing), then yields the processor.
fn wait_for(done: &AtomicU32, turn: u32) {
    let mut spins = 0u32;
    // Acquire: pairs with the Release store of the call this one follows.
    while done.load(Ordering::Acquire) != turn {
        spins += 1;
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

fn perform(
    call: Call,
    id: u32,
    slot: &Slot,
    live: &AtomicUsize,
    peak: &AtomicUsize,
) -> Result<(), String> {
    let tag = id as u8 ^ 0x5a;
    let old = slot.ptr.load(Ordering::Relaxed);
    let old_size = slot.size.load(Ordering::Relaxed);
    let (new, size) = match call {
        Call::Malloc { size } => {
            // SAFETY: plain malloc; checked below.
            (unsafe { libc::malloc(size) }.cast::<u8>(), size)
        }
        Call::Calloc { size } => {
            // SAFETY: plain calloc; checked below.
            let p = unsafe { libc::calloc(1, size) }.cast::<u8>();
            // SAFETY: when not NULL, the block holds `size` bytes.
            if !p.is_null() && size > 0 && unsafe { p.read() != 0 || p.add(size - 1).read() != 0 } {
                return Err("calloc's block is not zeroed".into());
            }
            (p, size)
        }
        Call::Aligned { size, align } => {
            let mut p = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer; the alignment was valid in the program.
            let code = unsafe { libc::posix_memalign(&mut p, align.max(8), size) };
            if code == 0 && !(p as usize).is_multiple_of(align.max(1)) {
                return Err(format!("block {p:?} is not aligned to {align}"));
            }
            (p.cast::<u8>(), size)
        }
        Call::Realloc { size } => {
            if !intact(old, old_size, tag) {
                return Err("the block lost its contents before realloc".into());
            }
            // SAFETY: `old` is this id's live block; realloc replaces it.
            let p = unsafe { libc::realloc(old.cast(), size) }.cast::<u8>();
            if !p.is_null() && !intact(p, old_size.min(size), tag) {
                return Err("realloc did not keep the contents".into());
            }
            live.fetch_sub(old_size, Ordering::Relaxed);
            (p, size)
        }
        Call::Free => {
            if !intact(old, old_size, tag) {
                return Err("the block lost its contents (overlap?)".into());
            }
            // SAFETY: `old` is this id's live block, freed once.
            unsafe { libc::free(old.cast()) };
            live.fetch_sub(old_size, Ordering::Relaxed);
            slot.ptr.store(std::ptr::null_mut(), Ordering::Relaxed);
            slot.size.store(0, Ordering::Relaxed);
            return Ok(());
        }
    };
    if new.is_null() && size > 0 {
        return Err(format!("the allocator returned NULL for {size} bytes"));
    }
    if size > 0 {
        // SAFETY: the block holds `size` bytes.
        unsafe { new.write_bytes(tag, size) };
    }
    slot.ptr.store(new, Ordering::Relaxed);
    slot.size.store(size, Ordering::Relaxed);
    let now = live.fetch_add(size, Ordering::Relaxed) + size;
    peak.fetch_max(now, Ordering::Relaxed);
    Ok(())
}

/// First and last byte hold the tag (a block of 0 bytes has none to check).
fn intact(p: *const u8, size: usize, tag: u8) -> bool {
    if size == 0 {
        return true;
    }
    if p.is_null() {
        return false;
    }
    // SAFETY: callers pass a live block of at least `size` bytes.
    unsafe { p.read() == tag && p.add(size - 1).read() == tag }
}

/// The step (counted from 1) after which the live payload first peaks, in the recorded
/// order (the replay's threads may interleave a little differently). Uses the slots'
/// sizes as scratch and leaves them 0, so that this pass allocates nothing.
fn step_to_peak(steps: &[Step], slots: &[Slot]) -> usize {
    let (mut live, mut peak, mut peak_at) = (0usize, 0usize, 0usize);
    for (index, step) in steps.iter().enumerate() {
        let size = &slots[step.id as usize].size;
        let new = match step.call {
            Call::Malloc { size } | Call::Calloc { size } | Call::Aligned { size, .. } => size,
            Call::Realloc { size } => size,
            Call::Free => 0,
        };
        live = live - size.swap(new, Ordering::Relaxed) + new;
        if live > peak {
            (peak, peak_at) = (live, index + 1);
        }
    }
    slots
        .iter()
        .for_each(|slot| slot.size.store(0, Ordering::Relaxed));
    peak_at
}
