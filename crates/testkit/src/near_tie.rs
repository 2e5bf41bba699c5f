//! Greedy-token comparisons that survive near-ties.
//!
//! Two correct runs of one model round differently: transformers against wick, or wick on two
//! CPUs (candle's quantized kernels pick AVX-512 VNNI, AVX-VNNI or AVX2 at run time; gemm blocks
//! its sums by cache size). When the best and second-best logits of a greedy step are closer
//! than that rounding, either token is a correct answer and everything after it may differ. So
//! a comparison of greedy tokens only means something up to the first such step; these helpers
//! find it from each step's top-2 margin (best minus second-best logit, see
//! `wick::generate::score::top2_margins`), which the reference records.

/// Steps decided by at least `near_tie`: any run whose logits are within `near_tie / 2` of the
/// reference's must pick the same tokens for this many leading steps.
pub fn decided_prefix(margins: &[f32], near_tie: f32) -> usize {
    margins
        .iter()
        .position(|&m| m < near_tie)
        .unwrap_or(margins.len())
}

/// Asserts that `actual` starts with the decided prefix of `expected` (whose steps had
/// `margins`) and returns that prefix's length. Past it, tokens may legitimately differ.
pub fn assert_decided_prefix_equal(
    what: &str,
    actual: &[u32],
    expected: &[u32],
    margins: &[f32],
    near_tie: f32,
) -> usize {
    assert_eq!(expected.len(), margins.len(), "{what}: one margin per step");
    let n = decided_prefix(margins, near_tie);
    if let Some(i) = (0..n).find(|&i| actual.get(i) != Some(&expected[i])) {
        panic!(
            "{what}: step {i} chose {:?}, the reference {} with a margin of {:.4} \
             (near-tie threshold {near_tie}; steps before the first near-tie: {n})\n\
             actual:   {actual:?}\nexpected: {expected:?}",
            actual.get(i),
            expected[i],
            margins[i],
        );
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decided_prefix_stops_at_the_first_near_tie() {
        assert_eq!(decided_prefix(&[2.0, 0.5, 0.01, 3.0], 0.1), 2);
        assert_eq!(decided_prefix(&[2.0, 0.5], 0.1), 2);
        let n = assert_decided_prefix_equal(
            "t",
            &[1, 2, 9, 9],
            &[1, 2, 3, 4],
            &[1.0, 1.0, 0.0, 1.0],
            0.1,
        );
        assert_eq!(n, 2);
    }

    #[test]
    #[should_panic(expected = "step 1 chose Some(7)")]
    fn a_decided_step_that_differs_fails() {
        assert_decided_prefix_equal("t", &[1, 7], &[1, 2], &[1.0, 1.0], 0.1);
    }
}
