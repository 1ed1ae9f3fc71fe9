//! Seeded scripts: the long workloads of the phases' tests, the same on every run.

use crate::Action;

/// What a workload looks like: how often each action comes, and the sizes it asks for.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Relative weights of `malloc`, `calloc`, `memalign`, `free` and `realloc`.
    pub alloc: u32,
    pub alloc_zeroed: u32,
    pub memalign: u32,
    pub free: u32,
    pub realloc: u32,
    /// Size bands as `(weight, largest)`: a size is drawn from `0..=largest` of a band
    /// picked by weight.
    pub sizes: &'static [(u32, usize)],
    /// `memalign` asks for `MIN_ALIGN << k`, up to this alignment.
    pub max_align: usize,
}

impl Profile {
    /// Small blocks (up to 300 bytes) and a few aligned ones: a heap with no large-block
    /// path, or a quick run.
    pub const SMALL: Profile = Profile {
        alloc: 8,
        alloc_zeroed: 1,
        memalign: 1,
        free: 5,
        realloc: 2,
        sizes: &[(1, 300)],
        max_align: 4096,
    };

    /// Mostly small blocks, some of a few KiB and a few of tens of KiB, with aligned
    /// requests up to 4 KiB: what splitting, merging and trimming meet in a program.
    pub const MIXED: Profile = Profile {
        alloc: 7,
        alloc_zeroed: 1,
        memalign: 1,
        free: 6,
        realloc: 2,
        sizes: &[(69, 100), (30, 2000), (1, 70_000)],
        max_align: 4096,
    };

    /// A fifth of the sizes up to 60 KB: with a low mmap threshold, many blocks cross it
    /// (by `malloc` and by `realloc`).
    pub const LARGE: Profile = Profile {
        alloc: 4,
        alloc_zeroed: 1,
        memalign: 1,
        free: 3,
        realloc: 3,
        sizes: &[(80, 500), (20, 60_000)],
        max_align: 65536,
    };

    fn total_weight(&self) -> u32 {
        self.alloc + self.alloc_zeroed + self.memalign + self.free + self.realloc
    }
}

/// A script of `len` actions drawn from `profile`, the same for the same `seed`.
pub fn script(seed: u64, len: usize, profile: &Profile) -> Vec<Action> {
    let mut random = SplitMix(seed);
    (0..len).map(|_| random.action(profile)).collect()
}

/// SplitMix64: small, seeded, and every seed (0 too) gives a good sequence.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn size(&mut self, profile: &Profile) -> usize {
        let total: u32 = profile.sizes.iter().map(|&(weight, _)| weight).sum();
        let mut pick = self.below(u64::from(total)) as u32;
        for &(weight, largest) in profile.sizes {
            if pick < weight {
                return self.below(largest as u64 + 1) as usize;
            }
            pick -= weight;
        }
        unreachable!("the pick is below the total weight")
    }

    fn action(&mut self, profile: &Profile) -> Action {
        let mut pick = self.below(u64::from(profile.total_weight())) as u32;
        let mut take = |weight: u32| {
            let hit = pick < weight;
            pick = pick.wrapping_sub(weight);
            hit
        };
        // Slots are reduced modulo the live count at replay time.
        let slot = self.below(1 << 20) as usize;
        if take(profile.alloc) {
            Action::Alloc {
                size: self.size(profile),
            }
        } else if take(profile.alloc_zeroed) {
            Action::AllocZeroed {
                size: self.size(profile),
            }
        } else if take(profile.memalign) {
            let steps = (profile.max_align / preload_kit::MIN_ALIGN).trailing_zeros();
            let shift = self.below(u64::from(steps) + 1);
            Action::Memalign {
                size: self.size(profile),
                align: preload_kit::MIN_ALIGN << shift,
            }
        } else if take(profile.free) {
            Action::Free { slot }
        } else {
            Action::Realloc {
                slot,
                size: self.size(profile),
            }
        }
    }
}
