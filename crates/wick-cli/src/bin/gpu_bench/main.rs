//! The GPU check-and-time program behind `bench/gpu/run.sh` (`wick-gpu-bench`, built with
//! `--features cuda`).
//!
//! `gpu_bench [checks] [time]`: first every CUDA op against its reference (fresh random inputs,
//! odd sizes, non-contiguous inputs, f32/bf16/f16, outputs landing on poisoned memory), then the
//! timed work. Each result is one line `RESULT {json}` on stdout, which `bench/gpu/table.py`
//! pairs with PyTorch's lines. Timing: the device is synchronised around every timed repeat,
//! warm-up first, median of the repeats, the same method as `bench/gpu/torch_ref.py`.

mod checks;
mod random;
mod timed;

use std::time::Instant;

use wick::candle_core::{Device, Result};

/// Prints one machine-readable result line.
pub fn result(section: &str, name: &str, value: f64, unit: &str, extra: &str) {
    println!(
        "RESULT {{\"side\":\"wick\",\"section\":\"{section}\",\"name\":\"{name}\",\"value\":{value},\"unit\":\"{unit}\",\"extra\":\"{extra}\"}}"
    );
}

/// Median seconds per call of `f` over `repeats` timed groups of `inner` calls, after `warmup`
/// calls; the device is synchronised before and after every group.
pub fn time_median(
    dev: &Device,
    warmup: usize,
    repeats: usize,
    inner: usize,
    mut f: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    for i in 0..warmup {
        f(i)?;
    }
    dev.synchronize()?;
    let mut times = Vec::with_capacity(repeats);
    for r in 0..repeats {
        let t = Instant::now();
        for i in 0..inner {
            f(r * inner + i)?;
        }
        dev.synchronize()?;
        times.push(t.elapsed().as_secs_f64() / inner as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s || a == "all");
    let dev = wick::device::parse_device(&std::env::var("WICK_DEVICE").unwrap_or("cuda:0".into()))?;
    if want("checks") {
        let failures = checks::run_all(&dev)?;
        println!("CHECKS {failures} failure(s)");
    }
    for section in ["gemm", "decode", "prefill", "train", "embed", "attn"] {
        if want(section) || want("time") {
            if let Err(e) = timed::run(section, &dev) {
                println!("ERROR {section}: {e}");
            }
        }
    }
    Ok(())
}
