//! The timed work, the same shapes and dtypes as `bench/gpu/torch_ref.py`.

use wick::candle_core::{DType, Device, Result, Tensor, D};
use wick::lora::{LoraConfig, LoraLlama, TargetModules};
use wick::ops::decode::GraphDecoder;
use wick::train::{Batch, TrainConfig, Trainer};

use crate::random::{minilm, qwen2, RandomWeights};
use crate::{result, time_median};

type AnyResult = std::result::Result<(), Box<dyn std::error::Error>>;

pub fn run(section: &str, dev: &Device) -> AnyResult {
    match section {
        "gemm" => gemm(dev)?,
        "decode" => decode(dev)?,
        "prefill" => prefill(dev)?,
        "train" => train(dev)?,
        "embed" => embed(dev)?,
        "attn" => attn(dev)?,
        _ => {}
    }
    Ok(())
}

/// (name, m, n, k): y (m×n) = x (m×k) · Wᵀ (W n×k), as a linear layer computes it.
const GEMMS: [(&str, usize, usize, usize); 5] = [
    ("gemm 4096^3", 4096, 4096, 4096),
    ("gemm 8192^3", 8192, 8192, 8192),
    ("gemm 16384x4864x896", 16384, 4864, 896),
    ("lora A 4096x16x896", 4096, 16, 896),
    ("lora B 4096x4864x16", 4096, 4864, 16),
];

fn gemm(dev: &Device) -> AnyResult {
    for (name, m, n, k) in GEMMS {
        // Three input sets, rotated, so repeats don't measure the L2 cache.
        let sets: Vec<(Tensor, Tensor)> = (0..3)
            .map(|_| {
                let x = Tensor::randn(0f32, 1.0, (m, k), dev)?.to_dtype(DType::BF16)?;
                let w = Tensor::randn(0f32, 1.0, (n, k), dev)?.to_dtype(DType::BF16)?;
                Ok((x, w))
            })
            .collect::<Result<_>>()?;
        let inner = if m * n * k > 1 << 36 { 5 } else { 20 };
        let t = time_median(dev, 5, 15, inner, |i| {
            let (x, w) = &sets[i % 3];
            wick::ops::linear::linear(x, w, None, wick::ops::linear::Activation::Identity)?;
            Ok(())
        })?;
        let tflops = 2.0 * (m * n * k) as f64 / t / 1e12;
        result(
            "gemm",
            name,
            tflops,
            "TFLOP/s",
            &format!("{:.4} ms", t * 1e3),
        );
    }
    Ok(())
}

const PROMPT: usize = 16;
const NEW_TOKENS: usize = 128;

/// Greedy decode: prefill a PROMPT-token prompt, then NEW_TOKENS single-token steps, each
/// reading its argmax back to the host (as generation does). Returns tokens and step seconds.
fn greedy(
    model: &wick::models::DecoderModel,
    batch: usize,
    steps: usize,
) -> wick::Result<(Vec<Vec<u32>>, f64)> {
    let dev = model.device();
    let prompt: Vec<u32> = (0..batch * PROMPT)
        .map(|i| ((i * 7919 + 13) % 151_000) as u32)
        .collect();
    let ids = Tensor::from_vec(prompt, (batch, PROMPT), dev)?;
    let mut cache = model.new_cache(batch, PROMPT + steps + 1)?;
    let logits = model.forward_last(&ids, None, &mut cache)?;
    let mut next = logits.argmax(D::Minus1)?;
    let mut out = vec![Vec::with_capacity(steps); batch];
    dev.synchronize()?;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        let host = next.to_vec1::<u32>()?;
        for (o, &tok) in out.iter_mut().zip(&host) {
            o.push(tok);
        }
        let ids = Tensor::from_vec(host, (batch, 1), dev)?;
        let logits = model.forward_last(&ids, None, &mut cache)?;
        next = logits.argmax(D::Minus1)?;
    }
    let _ = next.to_vec1::<u32>()?;
    Ok((out, t.elapsed().as_secs_f64()))
}

/// [`greedy`] through the captured CUDA-graph decode step after the same prefill.
fn greedy_graph(
    model: &wick::models::DecoderModel,
    batch: usize,
    steps: usize,
) -> wick::Result<(Vec<Vec<u32>>, f64)> {
    let dev = model.device();
    let prompt: Vec<u32> = (0..batch * PROMPT)
        .map(|i| ((i * 7919 + 13) % 151_000) as u32)
        .collect();
    let ids = Tensor::from_vec(prompt, (batch, PROMPT), dev)?;
    let mut cache = model.new_cache(batch, PROMPT + steps + 1)?;
    let logits = model.forward_last(&ids, None, &mut cache)?;
    let next = logits.argmax(D::Minus1)?;
    let weights = model
        .decoder_weights()
        .ok_or_else(|| wick::Error::Unsupported("model has no decode fast path".into()))?;
    let caches: Vec<(Tensor, Tensor)> = (0..cache.num_layers())
        .filter_map(|l| cache.buffers(l).map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    let mut dec = GraphDecoder::new(&weights, &caches, cache.len(), &next)?;
    let mut out = vec![Vec::with_capacity(steps); batch];
    dev.synchronize()?;
    let t = std::time::Instant::now();
    let mut host = next.to_vec1::<u32>()?;
    for _ in 0..steps {
        for (o, &tok) in out.iter_mut().zip(&host) {
            o.push(tok);
        }
        dec.step()?;
        host = dec.tokens()?;
    }
    Ok((out, t.elapsed().as_secs_f64()))
}

/// Device time of one graph step: `steps` replays back to back, one synchronisation at the end
/// (no per-token readback), after the prefill and the capture.
fn graph_replay_seconds(
    model: &wick::models::DecoderModel,
    batch: usize,
    steps: usize,
) -> wick::Result<f64> {
    let dev = model.device();
    let ids = Tensor::from_vec(
        (0..batch * PROMPT)
            .map(|i| (i * 31 + 7) as u32)
            .collect::<Vec<_>>(),
        (batch, PROMPT),
        dev,
    )?;
    let mut cache = model.new_cache(batch, PROMPT + steps + 2)?;
    let next = model
        .forward_last(&ids, None, &mut cache)?
        .argmax(D::Minus1)?;
    let weights = model
        .decoder_weights()
        .ok_or_else(|| wick::Error::Unsupported("model has no decode fast path".into()))?;
    let caches: Vec<(Tensor, Tensor)> = (0..cache.num_layers())
        .filter_map(|l| cache.buffers(l).map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    let mut dec = GraphDecoder::new(&weights, &caches, cache.len(), &next)?;
    dec.step()?;
    dev.synchronize()?;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        dec.step()?;
    }
    dev.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / steps as f64)
}

fn decode(dev: &Device) -> AnyResult {
    let src = RandomWeights::new(dev);
    let model = qwen2(&src, DType::BF16, dev)?;
    for batch in [1usize, 8] {
        greedy(&model, batch, 8)?; // warm-up
        let mut times = Vec::new();
        for _ in 0..3 {
            times.push(greedy(&model, batch, NEW_TOKENS)?.1);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let tps = (batch * NEW_TOKENS) as f64 / times[1];
        result(
            "decode",
            &format!("decode bf16 batch {batch}"),
            tps,
            "tok/s",
            &format!("{:.3} ms/step", times[1] / NEW_TOKENS as f64 * 1e3),
        );
    }
    for batch in [1usize, 8] {
        greedy_graph(&model, batch, 8)?; // warm-up
        let mut times = Vec::new();
        for _ in 0..3 {
            times.push(greedy_graph(&model, batch, NEW_TOKENS)?.1);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let tps = (batch * NEW_TOKENS) as f64 / times[1];
        let name = format!("decode bf16 batch {batch} (CUDA graph)");
        result(
            "decode",
            &name,
            tps,
            "tok/s",
            &format!("{:.3} ms/step", times[1] / NEW_TOKENS as f64 * 1e3),
        );
    }
    for batch in [1usize, 8] {
        let t = graph_replay_seconds(&model, batch, 200)?;
        let name = format!("graph step device time, batch {batch}");
        result("decode", &name, t * 1e3, "ms", "200 replays, one sync");
    }
    let (eager, _) = greedy(&model, 8, 64)?;
    let (graph, _) = greedy_graph(&model, 8, 64)?;
    let same: usize = eager
        .iter()
        .zip(&graph)
        .map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count())
        .sum();
    result(
        "decode",
        "graph bf16 tokens equal to eager bf16 (of 8x64)",
        same as f64,
        "tokens",
        "",
    );
    // Greedy parity with the CPU path on the same weights (f32 on both sides).
    let gpu32 = qwen2(&src, DType::F32, dev)?;
    let (g, _) = greedy(&gpu32, 1, 64)?;
    let (gg, _) = greedy_graph(&gpu32, 1, 64)?;
    drop(gpu32);
    let cpu = qwen2(&src, DType::F32, &Device::Cpu)?;
    let (c, _) = greedy(&cpu, 1, 64)?;
    let same = g[0].iter().zip(&c[0]).take_while(|(a, b)| a == b).count();
    result(
        "decode",
        "greedy f32 tokens equal to CPU (of 64)",
        same as f64,
        "tokens",
        "",
    );
    let same = gg[0].iter().zip(&c[0]).take_while(|(a, b)| a == b).count();
    result(
        "decode",
        "graph f32 tokens equal to CPU (of 64)",
        same as f64,
        "tokens",
        "",
    );
    let (gb, _) = greedy(&model, 1, 64)?;
    let same = gb[0].iter().zip(&c[0]).take_while(|(a, b)| a == b).count();
    result(
        "decode",
        "greedy bf16 GPU tokens equal to CPU f32 (of 64)",
        same as f64,
        "tokens",
        "",
    );
    Ok(())
}

fn prefill(dev: &Device) -> AnyResult {
    let src = RandomWeights::new(dev);
    let model = qwen2(&src, DType::BF16, dev)?;
    let ids: Vec<u32> = (0..512u32).map(|i| (i * 7919 + 13) % 151_000).collect();
    let ids = Tensor::from_vec(ids, (1, 512), dev)?;
    let t = time_median(dev, 3, 10, 1, |_| {
        let mut cache = model.new_cache(1, 513).map_err(to_candle)?;
        model
            .forward_last(&ids, None, &mut cache)
            .map_err(to_candle)?;
        Ok(())
    })?;
    result(
        "prefill",
        "prefill bf16 512 tokens",
        512.0 / t,
        "tok/s",
        &format!("{:.3} ms", t * 1e3),
    );
    Ok(())
}

fn to_candle(e: wick::Error) -> wick::candle_core::Error {
    wick::candle_core::Error::Msg(e.to_string())
}

fn train(dev: &Device) -> AnyResult {
    let (rows, cols) = (8usize, 512usize);
    let src = RandomWeights::new(dev);
    let model = qwen2(&src, DType::BF16, dev)?;
    let lora = LoraLlama::new(
        model,
        LoraConfig::new(16, 32.0, TargetModules::all_linear()),
        0,
    )?;
    let batches: Vec<Batch> = (0..4)
        .map(|b| {
            let ids: Vec<u32> = (0..rows * cols)
                .map(|i| ((i * 7919 + b * 104_729 + 13) % 151_000) as u32)
                .collect();
            Batch {
                rows,
                cols,
                labels: ids.iter().map(|&t| t as i64).collect(),
                attention_mask: vec![1; rows * cols],
                input_ids: ids,
            }
        })
        .collect();
    // WICK_TRAIN_STEPS: fewer steps for a profiler run.
    let steps = std::env::var("WICK_TRAIN_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12usize)
        .max(3);
    let cfg = TrainConfig {
        max_steps: Some(steps),
        shuffle: false,
        max_grad_norm: None,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&lora, cfg, batches, Vec::new())?;
    wick::ops::cuda::reset_peak_memory(dev)?;
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for s in 0..steps {
        dev.synchronize()?;
        let t = std::time::Instant::now();
        let rep = trainer.step()?;
        dev.synchronize()?;
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
        losses.push(rep.loss);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let t = times[times.len() / 2];
    let peak = wick::ops::cuda::peak_memory(dev)?;
    result(
        "train",
        "lora step tok/s",
        (rows * cols) as f64 / t,
        "tok/s",
        &format!(
            "{:.1} ms/step, loss {:.3} -> {:.3}",
            t * 1e3,
            losses[0],
            losses[steps - 1]
        ),
    );
    result(
        "train",
        "lora step peak memory",
        peak as f64 / (1u64 << 30) as f64,
        "GiB",
        "pool high-water mark",
    );
    Ok(())
}

/// Mean pooling over real tokens and L2 normalisation, as sentence-transformers' MiniLM does
/// (wick's own pooling functions, as `wick embed` runs them).
fn embed_once(
    model: &wick::models::bert::BertModel,
    ids: &Tensor,
    mask: &Tensor,
) -> wick::Result<Tensor> {
    use wick::embed::pooling::{l2_normalize, pool};
    let h = model.forward(ids, mask)?;
    l2_normalize(&pool(&h, mask, &[wick::embed::PoolingMode::Mean])?)
}

fn embed(dev: &Device) -> AnyResult {
    let src = RandomWeights::new(dev);
    let model = minilm(&src, DType::BF16, dev)?;
    for (docs, len) in [(1usize, 16usize), (128, 128), (1024, 128)] {
        let ids: Vec<u32> = (0..docs * len)
            .map(|i| ((i * 7919 + 101) % 30_000) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (docs, len), dev)?;
        let mask = Tensor::ones((docs, len), DType::U32, dev)?;
        let t = time_median(dev, 5, 20, 1, |_| {
            // One copy to the host, as the PyTorch side's `e.cpu()`.
            let e = embed_once(&model, &ids, &mask).map_err(to_candle)?;
            let _ = e.to_device(&Device::Cpu)?;
            Ok(())
        })?;
        let name = format!("embed bf16 {docs}x{len}");
        result(
            "embed",
            &name,
            docs as f64 / t,
            "docs/s",
            &format!("{:.3} ms", t * 1e3),
        );
    }
    Ok(())
}

/// (name, batch, heads, kv_heads, len, head_dim, causal, key padding, time the backward too).
type AttnShape = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
    bool,
    bool,
);

/// The same shapes as torch_ref.py's `attn`: Qwen2-0.5B training and prefill, MiniLM batches.
const ATTN_SHAPES: [AttnShape; 3] = [
    (
        "train 8x14/2x512x64 causal",
        8,
        14,
        2,
        512,
        64,
        true,
        false,
        true,
    ),
    (
        "prefill 1x14/2x512x64 causal",
        1,
        14,
        2,
        512,
        64,
        true,
        false,
        false,
    ),
    (
        "minilm 1024x12x128x32 pad",
        1024,
        12,
        12,
        128,
        32,
        false,
        true,
        false,
    ),
];

/// Flash attention forward (and forward+backward through autograd) in bf16, TFLOP/s counted as
/// 4·b·h·l²·d for the forward (half with causal) and 3.5× that for forward+backward; the
/// current materialising `sdpa` forward alongside for reference.
fn attn(dev: &Device) -> AnyResult {
    use wick::candle_core::Var;
    use wick::ops::cuda::flash::flash_attention;
    for (name, b, h, kvh, l, d, causal, pad, bwd) in ATTN_SHAPES {
        let bf = |shape: (usize, usize, usize, usize)| -> Result<Tensor> {
            Tensor::randn(0f32, 1.0, shape, dev)?.to_dtype(DType::BF16)
        };
        let (q, k, v) = (bf((b, h, l, d))?, bf((b, kvh, l, d))?, bf((b, kvh, l, d))?);
        // Even sequences have their last quarter padded, as torch_ref.py.
        let bias = if pad {
            let m: Vec<f32> = (0..b * l)
                .map(|i| {
                    let (s, j) = (i / l, i % l);
                    if s % 2 == 0 && j >= 3 * l / 4 {
                        -1e9
                    } else {
                        0.0
                    }
                })
                .collect();
            Some(Tensor::from_vec(m, (b, 1, 1, l), dev)?.to_dtype(DType::BF16)?)
        } else {
            None
        };
        let scale = 1.0 / (d as f64).sqrt();
        let flops = 4.0 * (b * h * l * l * d) as f64 * if causal { 0.5 } else { 1.0 };
        let t = time_median(dev, 3, 10, 10, |_| {
            flash_attention(&q, &k, &v, bias.as_ref(), causal, scale)?;
            Ok(())
        })?;
        result(
            "attn",
            &format!("attn fwd {name} bf16"),
            flops / t / 1e12,
            "TFLOP/s",
            &format!("{:.4} ms", t * 1e3),
        );
        // The materialising path (`sdpa`, causal as a bias) for comparison.
        let full_bias = if causal {
            let m: Vec<f32> = (0..l * l)
                .map(|i| if i % l > i / l { -1e9 } else { 0.0 })
                .collect();
            Some(Tensor::from_vec(m, (1, 1, l, l), dev)?.to_dtype(DType::BF16)?)
        } else {
            bias.clone()
        };
        let t = time_median(dev, 3, 10, 10, |_| {
            wick::ops::attention::sdpa(&q, &k, &v, full_bias.as_ref(), scale)?;
            Ok(())
        })?;
        result(
            "attn",
            &format!("attn fwd {name} bf16 (ops::attention::sdpa, mask as a dense bias)"),
            flops / t / 1e12,
            "TFLOP/s",
            &format!("{:.4} ms", t * 1e3),
        );
        if bwd {
            let (qv, kv, vv) = (
                Var::from_tensor(&q)?,
                Var::from_tensor(&k)?,
                Var::from_tensor(&v)?,
            );
            let g = bf((b, h, l, d))?;
            // Tensor cores (the default for bf16), then the CUDA-core kernels for comparison.
            for (tag, fp32) in [("", false), (" (cuda cores)", true)] {
                if fp32 {
                    std::env::set_var("WICK_FLASH_FP32", "1");
                }
                let tf = time_median(dev, 3, 10, 10, |_| {
                    flash_attention(&q, &k, &v, bias.as_ref(), causal, scale)?;
                    Ok(())
                })?;
                let t = time_median(dev, 3, 10, 5, |_| {
                    let o = flash_attention(
                        qv.as_tensor(),
                        kv.as_tensor(),
                        vv.as_tensor(),
                        bias.as_ref(),
                        causal,
                        scale,
                    )?;
                    let _grads = (o * &g)?.sum_all()?.backward()?;
                    Ok(())
                })?;
                std::env::remove_var("WICK_FLASH_FP32");
                if fp32 {
                    result(
                        "attn",
                        &format!("attn fwd {name} bf16{tag}"),
                        flops / tf / 1e12,
                        "TFLOP/s",
                        &format!("{:.4} ms", tf * 1e3),
                    );
                }
                result(
                    "attn",
                    &format!("attn fwd+bwd {name} bf16{tag}"),
                    3.5 * flops / t / 1e12,
                    "TFLOP/s",
                    &format!("{:.4} ms", t * 1e3),
                );
            }
        }
    }
    Ok(())
}
