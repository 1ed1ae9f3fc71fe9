//! How much memory this process holds, from the kernel's per-process counters.
//!
//! Not `getrusage`'s `ru_maxrss`: Linux carries it across `execve` (it is the largest of
//! this program's peak and its parent's resident set at the fork), so a bench_alloc
//! started from a large process would report the parent's memory as its own. `VmHWM`
//! in `/proc/self/status` is the peak of this program's own address space.

/// The resident set now, in bytes.
pub fn resident_bytes() -> usize {
    status_kib("VmRSS:") * 1024
}

/// The peak resident set since this program started, in bytes.
pub fn peak_resident_bytes() -> usize {
    status_kib("VmHWM:") * 1024
}

/// A field of `/proc/self/status`, read into a stack buffer: a trace replay measures
/// the heap, so measuring must not allocate in it.
fn status_kib(field: &str) -> usize {
    use std::io::Read;
    let mut buffer = [0u8; 4096];
    let mut filled = 0;
    if let Ok(mut file) = std::fs::File::open("/proc/self/status") {
        while let Ok(n @ 1..) = file.read(&mut buffer[filled..]) {
            filled += n;
            if filled == buffer.len() {
                break;
            }
        }
    }
    let status = std::str::from_utf8(&buffer[..filled]).unwrap_or("");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}
