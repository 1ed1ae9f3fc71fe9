//! Size classes: which block size serves a request.
//!
//! Eight classes 16 bytes apart up to 128, then four classes per doubling (160, 192,
//! 224, 256, 320, ...), so a block wastes at most a quarter of its size (an eighth on
//! average) and every class is a multiple of 16 (so every block of a page that starts
//! at a 16-byte boundary is aligned as `malloc` promises).
//!
//! ```text
//!   class   0   1   2  ...   7    8    9   10   11   12  ...  19
//!   size   16  32  48  ... 128  160  192  224  256  320  ... 1024
//! ```

/// The largest request served from pages; anything larger goes to the fallback heap.
///
/// Most allocations are far smaller (on `bench_alloc --small`, all; in the workloads of
/// `harness bench`, the large majority), and a 64 KiB page holds 64 blocks of 1 KiB.
/// Above it, blocks keep what the earlier phases gave them and their checks test:
/// `realloc` that grows into a free neighbour, a break that comes down when the top
/// of the heap is freed.
pub const SMALL_LIMIT: usize = 1024;

/// Classes 16 bytes apart, below and at 128 bytes.
const LINEAR_CLASSES: usize = 8;
const LINEAR_STEP: usize = 16;
/// The last linear class's size: where the classes start to double.
const LINEAR_LIMIT: usize = LINEAR_CLASSES * LINEAR_STEP;
/// Classes per doubling above [`LINEAR_LIMIT`].
const CLASSES_PER_DOUBLING: usize = 4;

/// How many classes there are: `class_of(SMALL_LIMIT) + 1`.
pub const CLASSES: usize = class_of(SMALL_LIMIT) + 1;

/// The class serving `size` bytes (`1 <= size <= SMALL_LIMIT`; 0 is served as 1).
#[inline(always)]
pub const fn class_of(size: usize) -> usize {
    if size <= LINEAR_LIMIT {
        // (size - 1) / 16 without a branch, with 0 served as 1: `saturating_sub`
        // compiles to a conditional move, where `div_ceil` tests the remainder.
        size.saturating_sub(1) / LINEAR_STEP
    } else {
        class_of_nonzero(size)
    }
}

/// [`class_of`] for `1 <= size <= SMALL_LIMIT`, for a caller that has tested
/// `size - 1 < SMALL_LIMIT` (which sends 0 elsewhere): then `size - 1` is at hand and
/// the linear classes need no more than a shift.
#[inline(always)]
pub const fn class_of_nonzero(size: usize) -> usize {
    let last = size - 1;
    if last < LINEAR_LIMIT {
        last / LINEAR_STEP
    } else {
        // The doubling `last` is in: [2^power, 2^(power+1)), power >= 7.
        let power = (usize::BITS - 1 - last.leading_zeros()) as usize;
        let quarter = (last >> (power - 2)) & (CLASSES_PER_DOUBLING - 1);
        LINEAR_CLASSES + (power - 7) * CLASSES_PER_DOUBLING + quarter
    }
}

/// The block size of `class`.
#[inline(always)]
pub const fn class_size(class: usize) -> usize {
    if class < LINEAR_CLASSES {
        (class + 1) * LINEAR_STEP
    } else {
        let power = 7 + (class - LINEAR_CLASSES) / CLASSES_PER_DOUBLING;
        let quarter = (class - LINEAR_CLASSES) % CLASSES_PER_DOUBLING;
        (1 << power) + (quarter + 1) * (1 << (power - 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_class_that_holds_it() {
        for size in 1..=SMALL_LIMIT {
            let class = class_of(size);
            assert!(class < CLASSES);
            assert!(class_size(class) >= size, "size {size}");
            if class > 0 {
                assert!(class_size(class - 1) < size, "size {size}");
            }
            assert_eq!(class_size(class) % 16, 0);
            assert_eq!(class_of_nonzero(size), class, "size {size}");
        }
        assert_eq!(class_of(0), 0);
        assert_eq!(class_size(CLASSES - 1), SMALL_LIMIT);
        assert_eq!(
            [129, 160, 161, 256, 257].map(|s| class_size(class_of(s))),
            [160, 160, 192, 256, 320]
        );
    }

    #[test]
    fn a_block_wastes_at_most_a_quarter_of_its_size_above_the_linear_classes() {
        for size in LINEAR_LIMIT + 1..=SMALL_LIMIT {
            let block = class_size(class_of(size));
            assert!((block - size) * 4 <= block, "size {size} in {block}");
        }
    }
}
