//! The figures behind glibc's `mallinfo`, `mallinfo2` and `malloc_info`.

/// What the allocator holds, in glibc's terms (the `mallinfo2` field each one fills is
/// named). Sizes are whole blocks, headers included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MallInfo {
    /// Bytes the heap got from the OS, apart from large blocks' own mappings: used and
    /// free blocks and the uncarved top (`arena`).
    pub heap_bytes: usize,
    /// Free blocks (`ordblks`).
    pub free_blocks: usize,
    /// Bytes free: free blocks and the uncarved top (`fordblks`).
    pub free_bytes: usize,
    /// Bytes in used blocks of the heap (`uordblks`).
    pub used_bytes: usize,
    /// Large blocks in mappings of their own (`hblks`) and their bytes (`hblkhd`).
    pub mapped_blocks: usize,
    pub mapped_bytes: usize,
    /// What a trim could give back: the uncarved top (`keepcost`).
    pub top_bytes: usize,
}

impl MallInfo {
    /// From the `[stats]` figures alone, for an allocator that keeps nothing else: all
    /// its blocks count as the heap's, and nothing as the top.
    pub fn from_stats(stats: &crate::Stats) -> MallInfo {
        MallInfo {
            heap_bytes: stats.used_bytes + stats.free_bytes,
            free_blocks: stats.free_blocks,
            free_bytes: stats.free_bytes,
            used_bytes: stats.used_bytes,
            ..MallInfo::default()
        }
    }

    /// The figures of a heap over `arena` whose blocks are as `stats` says: the regions'
    /// uncarved room is free too, and the newest region's is what a trim gives back.
    pub fn of_arena(arena: &crate::arena::Arena, stats: &crate::Stats) -> MallInfo {
        let regions = arena.regions();
        let room: usize = regions.iter().map(|r| r.room()).sum();
        MallInfo {
            heap_bytes: regions.iter().map(|r| r.end - r.start).sum(),
            free_blocks: stats.free_blocks,
            free_bytes: stats.free_bytes + room,
            used_bytes: stats.used_bytes,
            mapped_blocks: 0,
            mapped_bytes: 0,
            top_bytes: arena.newest().map_or(0, |r| r.room()),
        }
    }
}

/// Text built on the stack, NUL-terminated for C (`malloc_info` hands it to `fputs`).
/// What does not fit is cut off, and `write!` reports the error.
pub struct CText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> CText<N> {
    pub const fn new() -> Self {
        CText {
            bytes: [0; N],
            len: 0,
        }
    }

    /// The text so far. Never fails: the last byte is always left for the NUL, and
    /// `write_str` refuses text with a NUL in it.
    pub fn as_c_str(&self) -> &core::ffi::CStr {
        core::ffi::CStr::from_bytes_until_nul(&self.bytes).unwrap_or(c"")
    }
}

impl<const N: usize> Default for CText<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for CText<N> {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let room = N.saturating_sub(1) - self.len.min(N.saturating_sub(1));
        if text.len() > room || text.as_bytes().contains(&0) {
            return Err(core::fmt::Error);
        }
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text.as_bytes());
        self.len += text.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::CText;
    use core::fmt::Write as _;

    #[test]
    fn text_is_nul_terminated_and_cut_where_it_does_not_fit() {
        let mut text = CText::<8>::new();
        write!(text, "{}", 1234).unwrap();
        assert_eq!(text.as_c_str(), c"1234");
        assert!(write!(text, "5678").is_err(), "7 bytes of text at most");
        assert_eq!(text.as_c_str(), c"1234");
    }
}
