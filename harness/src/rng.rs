//! SplitMix64: a tiny, well-studied generator (Steele, Lea and Flood, 2014).
//!
//! Hand-written rather than taken from a crate on purpose: golden heap dumps depend on
//! every number it produces, and a dependency's update must never change them.

#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub const fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high` (slightly biased for huge ranges, which we never use).
    pub fn between(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }

    /// True with probability `percent` in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_sequence_is_fixed_for_a_seed() {
        // Golden files depend on these numbers: a change here must be deliberate.
        let mut rng = Rng::new(42);
        assert_eq!(rng.next_u64(), 0xbdd7_3226_2feb_6e95);
        let mut again = Rng::new(42);
        again.next_u64();
        assert_eq!(rng.next_u64(), again.next_u64());
    }

    #[test]
    fn between_stays_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let n = rng.between(1, 64);
            assert!((1..=64).contains(&n));
        }
    }
}
