//! Numeric comparisons whose failure messages show max abs/rel difference and the worst index.

/// Summary of the difference between two equally long slices.
#[derive(Debug, Clone, Copy)]
pub struct Diff {
    pub max_abs: f32,
    pub max_rel: f32,
    pub worst_index: usize,
}

pub fn diff(actual: &[f32], expected: &[f32]) -> Diff {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        worst_index: 0,
    };
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let abs = (a - e).abs();
        if abs.is_nan() || abs > d.max_abs {
            d.max_abs = if abs.is_nan() { f32::INFINITY } else { abs };
            d.worst_index = i;
        }
        d.max_rel = d.max_rel.max(abs / e.abs().max(1e-12));
    }
    d
}

/// Panics unless every element is within `atol + rtol·|expected|`.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    let d = diff(actual, expected);
    let ok = actual
        .iter()
        .zip(expected)
        .all(|(a, e)| (a - e).abs() <= atol + rtol * e.abs());
    assert!(
        ok,
        "{what}: max abs diff {:.3e}, max rel diff {:.3e}, worst index {} (actual {}, expected {})",
        d.max_abs, d.max_rel, d.worst_index, actual[d.worst_index], expected[d.worst_index]
    );
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}
