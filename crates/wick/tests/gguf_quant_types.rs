//! Every GGUF tensor type wick reads, on rows that llama.cpp's `llama-quantize` wrote and gguf-py
//! dequantized (fixtures/gguf_quant_types/gen.py): the values, the quantized matmul, LoRA
//! training on a base of each type, and the refusal of a type wick does not read.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod lora_common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use testkit::compare::diff;
use testkit::paths::fixture;
use wick::io::gguf::quant::StoredType;
use wick::io::gguf::GgufFile;
use wick::io::weights::{WeightSource, WeightView};
use wick::lora::{self, LoraConfig, TargetModules};
use wick::models::{DecoderConfig, DecoderModel};
use wick::ops::qmatmul;

const TYPES: [&str; 15] = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K", "IQ4_NL", "IQ4_XS",
];
const ROWS: usize = 8;
const COLS: usize = 256;

fn dir() -> PathBuf {
    fixture("gguf_quant_types")
}

fn types_file() -> GgufFile {
    GgufFile::open(dir().join("types.gguf")).unwrap()
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn every_type_dequantizes_as_gguf_py_does() {
    let file = types_file();
    let expected = expected();
    for name in TYPES {
        assert_eq!(
            file.stored_type(name).map(StoredType::name).as_deref(),
            Some(name)
        );
        let got = file.dequantized(name, &Device::Cpu).unwrap();
        assert_eq!(got.dims(), &[ROWS, COLS], "{name}");
        let want = values(&expected[name]);
        let d = diff(&values(&got), &want);
        println!("{name}: {d:?}");
        // ggml's formulas in f32 either way; only the order of a product or two may differ.
        assert!(
            d.max_abs <= 1e-6 * max_abs(&want),
            "{name}: dequantized values differ from gguf-py's: {d:?}"
        );
    }
}

/// Activations that are the same on every run (a seeded xorshift), so a bound is checked on
/// fixed inputs rather than on whatever a random draw gives.
fn activations(rows: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..rows * COLS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn quantized_matmul_of_every_type_matches_its_values() {
    const X_ROWS: usize = 3;
    let file = types_file();
    let expected = expected();
    let xs = activations(X_ROWS);
    let x = Tensor::from_slice(&xs, (X_ROWS, COLS), &Device::Cpu).unwrap();
    for name in TYPES {
        let w = Arc::new(file.qtensor(name, &Device::Cpu).unwrap());
        let got = values(&qmatmul::forward(&qmatmul::qmatmul(w).unwrap(), &x).unwrap());
        let weights = values(&expected[name]);
        let want = values(&x.matmul(&expected[name].t().unwrap()).unwrap());
        let d = diff(&got, &want);
        println!(
            "{name} (run as {:?}): {d:?}",
            file.qtensor(name, &Device::Cpu).unwrap().dtype()
        );
        // Quantized kernels round the activations to 8 bits per block (Q8_0 / Q8_K), each value
        // off by at most one step, max|x| / 127 of its row at worst: output (i, j) is then
        // within Σ_k |w_jk| · step_i of the exact product. A misread block is far outside it.
        for (i, x_row) in xs.chunks(COLS).enumerate() {
            let step = max_abs(x_row) / 127.0;
            for (j, w_row) in weights.chunks(COLS).enumerate() {
                let bound = w_row.iter().map(|w| w.abs()).sum::<f32>() * step * 1.01 + 1e-4;
                let k = i * ROWS + j;
                assert!(
                    (got[k] - want[k]).abs() <= bound,
                    "{name}: output ({i}, {j}) is {} where x·Wᵀ over gguf-py's values is {} \
                     (bound {bound}; over all outputs {d:?})",
                    got[k],
                    want[k]
                );
            }
        }
    }
}

#[test]
fn a_type_wick_does_not_read_is_named_with_the_file_and_tensor() {
    let path = dir().join("unsupported.gguf");
    let err = GgufFile::open(&path).err().unwrap();
    let text = err.to_string();
    assert!(matches!(err, wick::Error::Unsupported(_)), "{text}");
    for part in [
        path.display().to_string().as_str(),
        "blk.0.ffn_up.weight",
        "TQ1_0",
        "IQ4_XS",
    ] {
        assert!(text.contains(part), "no `{part}` in: {text}");
    }
}

/// A 1-layer Llama (hidden = intermediate = 256) whose every linear weight is the fixture's 8
/// rows of one type, repeated: as stored (quantized) or, for the float types, dense, as a GGUF
/// file of that type would give them.
struct OneTypeSource {
    file: GgufFile,
    ty: &'static str,
    embed: Tensor,
    head: Tensor,
}

impl OneTypeSource {
    fn new(ty: &'static str) -> Self {
        let dev = Device::Cpu;
        OneTypeSource {
            file: types_file(),
            ty,
            embed: pattern(1.0, &dev),
            head: pattern(0.05, &dev),
        }
    }
}

/// A fixed (32, 256) table of values in [-scale, scale].
fn pattern(scale: f32, dev: &Device) -> Tensor {
    let v: Vec<f32> = (0..32 * COLS)
        .map(|i| (i as f32 * 0.37).sin() * scale)
        .collect();
    Tensor::from_vec(v, (32, COLS), dev).unwrap()
}

fn rows_repeated(t: &Tensor, rows: usize) -> wick::Result<Tensor> {
    let reps: Vec<Tensor> = (0..rows.div_ceil(ROWS)).map(|_| t.clone()).collect();
    Ok(Tensor::cat(&reps, 0)?.narrow(0, 0, rows)?)
}

impl WeightSource for OneTypeSource {
    fn contains(&self, name: &str) -> bool {
        name.ends_with(".weight")
    }

    fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        dev: &Device,
    ) -> wick::Result<Tensor> {
        let t = match name {
            "model.embed_tokens.weight" => self.embed.clone(),
            "lm_head.weight" => self.head.clone(),
            _ if shape.len() == 1 => Tensor::ones(shape, DType::F32, dev)?,
            _ => rows_repeated(&self.file.dequantized(self.ty, dev)?, shape[0])?,
        };
        assert_eq!(t.dims(), shape, "{name}");
        Ok(t.to_dtype(dtype)?)
    }

    fn quantized(
        &self,
        name: &str,
        shape: &[usize],
        dev: &Device,
    ) -> wick::Result<Option<QTensor>> {
        let stored = self.file.stored_type(self.ty).unwrap();
        if !name.contains(".layers.") || shape.len() != 2 || stored.is_float() {
            return Ok(None);
        }
        assert_eq!(shape[1], COLS, "{name}");
        let q = self.file.qtensor(self.ty, dev)?;
        let bytes = q.data()?;
        let row = bytes.len() / ROWS;
        let out: Vec<u8> = (0..shape[0])
            .flat_map(|r| {
                bytes[(r % ROWS) * row..(r % ROWS + 1) * row]
                    .iter()
                    .copied()
            })
            .collect();
        Ok(Some(qtensor_from_ggml(
            q.dtype(),
            &out,
            shape.to_vec(),
            dev,
        )?))
    }
}

fn tiny_config() -> DecoderConfig {
    let json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": COLS,
        "intermediate_size": COLS,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 64,
        "vocab_size": 32,
        "tie_word_embeddings": false,
    });
    DecoderConfig::from_value(json, &PathBuf::from("tiny config")).unwrap()
}

#[test]
fn lora_on_a_quantized_base_of_every_type_learns() {
    let dev = Device::Cpu;
    let cfg = tiny_config();
    let ids = Tensor::new(&[[3u32, 17, 5, 9, 30, 2, 11, 4, 8, 21, 1, 6]], &dev).unwrap();
    let labels = ids.to_dtype(DType::I64).unwrap();
    for ty in TYPES {
        let source: Arc<dyn WeightSource> = Arc::new(OneTypeSource::new(ty));
        let mut model =
            DecoderModel::new(&cfg, &WeightView::new(source, DType::F32, &dev)).unwrap();
        let quantized = !matches!(ty, "F32" | "F16" | "BF16");
        assert_eq!(model.projections()[0].1.is_quantized(), quantized, "{ty}");
        let lcfg = LoraConfig::new(4, 8.0, TargetModules::all_linear());
        let params = lora::apply(&mut model, &lcfg, 7).unwrap();
        let vars = params.named_vars();
        let mut losses = Vec::new();
        for step in 0..6 {
            let logits = model.forward_uncached(&ids, None).unwrap();
            let loss = lora_common::causal_lm_loss(&logits, &labels);
            losses.push(loss.to_scalar::<f32>().unwrap());
            let grads = loss.backward().unwrap();
            for (key, var) in &vars {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{ty}: no gradient for {key}"));
                let g_values = values(g);
                assert!(g_values.iter().all(|v| v.is_finite()), "{ty} {key}");
                // B starts at zero, so at step 0 only the B matrices get a gradient.
                if step == 0 && key.contains("lora_B") {
                    assert!(
                        g_values.iter().any(|&v| v != 0.0),
                        "{ty}: zero gradient for {key}"
                    );
                }
                var.set(&(var.as_tensor() - (g * 0.1).unwrap()).unwrap())
                    .unwrap();
            }
        }
        println!("{ty}: losses {losses:?}");
        assert!(losses.iter().all(|l| l.is_finite()), "{ty}: {losses:?}");
        // Plain gradient descent on the adapters: the loss falls at every step.
        assert!(
            losses.windows(2).all(|w| w[1] < w[0]) && losses[5] < losses[0] * 0.98,
            "{ty}: the loss did not fall: {losses:?}"
        );
    }
}
