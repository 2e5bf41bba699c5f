//! GGUF reading on the real SmolLM2-135M-Instruct Q4_1 file: metadata and the HF config built
//! from it, tensors under HF names and in HF layout (q/k un-permuted) against slices stored by
//! fixtures/smollm2_tokenizer/gen.py from transformers' GGUF loading, and bad files.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use testkit::compare::assert_close;
use testkit::paths::{fixture, real_model};
use wick::io::gguf::GgufFile;
use wick::io::safetensors::SafetensorsWeights;
use wick::io::weights::WeightSource;
use wick::Error;

const LAYERS: usize = 30;

fn model_path() -> PathBuf {
    real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn gguf() -> GgufFile {
    GgufFile::open(model_path()).unwrap()
}

fn f32_tensor(file: &GgufFile, name: &str, shape: &[usize]) -> Tensor {
    file.tensor(name, shape, DType::F32, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn metadata_and_hf_config() {
    let file = gguf();
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), LAYERS as u32);
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(
        file.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert!(file.get_bool("tokenizer.ggml.add_bos_token").is_ok());

    let cfg = file.hf_config().unwrap();
    let get = |k: &str| {
        cfg.get(k)
            .unwrap_or_else(|| panic!("config has no `{k}`: {cfg}"))
    };
    assert_eq!(get("model_type"), "llama");
    assert_eq!(get("hidden_size"), 576);
    assert_eq!(get("intermediate_size"), 1536);
    assert_eq!(get("num_hidden_layers"), LAYERS);
    assert_eq!(get("num_attention_heads"), 9);
    assert_eq!(get("num_key_value_heads"), 3);
    assert_eq!(get("max_position_embeddings"), 8192);
    assert_eq!(get("vocab_size"), 49152);
    assert_eq!(get("rope_theta").as_f64().unwrap(), 100_000.0);
    assert_eq!(get("rms_norm_eps").as_f64().unwrap(), 1e-5);
    assert_eq!(get("tie_word_embeddings"), true);
    assert_eq!(get("attention_bias"), false);
    assert_eq!(get("bos_token_id"), 1);
    assert_eq!(get("eos_token_id"), 2);
    // The file has no attention.key_length, so head_dim is hidden / heads.
    let head_dim = cfg
        .get("head_dim")
        .and_then(|v| v.as_u64())
        .unwrap_or(576 / 9);
    assert_eq!(head_dim, 64);
}

#[test]
fn metadata_errors_name_the_key() {
    let file = gguf();
    let err = file.get_u32("llama.no_such_key").unwrap_err();
    assert!(matches!(err, Error::BadConfig { .. }), "{err}");
    assert!(err.to_string().contains("llama.no_such_key"), "{err}");
    let err = file.get_str("llama.block_count").unwrap_err().to_string();
    assert!(
        err.contains("llama.block_count") && err.contains("string"),
        "{err}"
    );
    assert_eq!(
        file.opt("llama.no_such_key", GgufFile::get_u32).unwrap(),
        None
    );
}

/// HF name, shape, and whether it is stored quantized.
fn hf_tensors(layer: usize) -> Vec<(String, Vec<usize>, bool)> {
    let l = |s: &str| format!("model.layers.{layer}.{s}");
    vec![
        ("model.embed_tokens.weight".into(), vec![49152, 576], true),
        ("model.norm.weight".into(), vec![576], false),
        (l("self_attn.q_proj.weight"), vec![576, 576], true),
        (l("self_attn.k_proj.weight"), vec![192, 576], true),
        (l("self_attn.v_proj.weight"), vec![192, 576], true),
        (l("self_attn.o_proj.weight"), vec![576, 576], true),
        (l("mlp.gate_proj.weight"), vec![1536, 576], true),
        (l("mlp.up_proj.weight"), vec![1536, 576], true),
        (l("mlp.down_proj.weight"), vec![576, 1536], true),
        (l("input_layernorm.weight"), vec![576], false),
        (l("post_attention_layernorm.weight"), vec![576], false),
    ]
}

#[test]
fn hf_names_shapes_and_quantized_access() {
    let file = gguf();
    assert!(!file.contains("lm_head.weight"), "embeddings are tied");
    assert_eq!(file.hf_tensor_names().len(), 2 + 9 * LAYERS);
    for (name, shape, quantized) in hf_tensors(LAYERS - 1) {
        assert!(file.contains(&name), "{name}");
        let t = f32_tensor(&file, &name, &shape);
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        let q = file.quantized(&name, &shape, &Device::Cpu).unwrap();
        assert_eq!(q.is_some(), quantized, "{name}");
        if let Some(q) = q {
            assert_eq!(q.shape().dims(), shape.as_slice(), "{name}");
        }
    }
    let q = file
        .quantized(
            "model.layers.0.self_attn.q_proj.weight",
            &[576, 576],
            &Device::Cpu,
        )
        .unwrap()
        .unwrap();
    assert_eq!(q.dtype(), GgmlDType::Q4_1);

    // Dtype conversion happens after an exact f32 dequantization.
    let name = "model.layers.0.mlp.up_proj.weight";
    let half = file
        .tensor(name, &[1536, 576], DType::F16, &Device::Cpu)
        .unwrap();
    assert_eq!(half.dtype(), DType::F16);
    let want = f32_tensor(&file, name, &[1536, 576])
        .to_dtype(DType::F16)
        .unwrap();
    assert_eq!(
        values(&half.to_dtype(DType::F32).unwrap()),
        values(&want.to_dtype(DType::F32).unwrap())
    );
}

#[test]
fn quantized_and_dequantized_paths_agree_exactly() {
    let file = gguf();
    for layer in [0, 17, LAYERS - 1] {
        for (name, shape, quantized) in hf_tensors(layer) {
            if !quantized || name.contains("embed_tokens") && layer != 0 {
                continue;
            }
            let q = file
                .quantized(&name, &shape, &Device::Cpu)
                .unwrap()
                .unwrap();
            let from_q = values(&q.dequantize(&Device::Cpu).unwrap());
            let direct = values(&f32_tensor(&file, &name, &shape));
            assert!(
                from_q == direct,
                "{name}: quantized and dequantized paths differ"
            );
        }
    }
}

#[test]
fn qmatmul_on_unpermuted_weights_matches_float_matmul() {
    // QMatMul takes HF-layout (out, in) weights and computes x @ W^T. On the CPU it quantizes the
    // activations too (to Q8_1 for Q4_1 weights), so the match is close, not exact.
    let file = gguf();
    let name = "model.layers.0.self_attn.k_proj.weight";
    let q = file
        .quantized(name, &[192, 576], &Device::Cpu)
        .unwrap()
        .unwrap();
    let w = f32_tensor(&file, name, &[192, 576]);
    let x = Tensor::randn(0f32, 1.0, (3, 576), &Device::Cpu).unwrap();
    let ours = candle_core::quantized::QMatMul::from_qtensor(q)
        .unwrap()
        .forward(&x)
        .unwrap();
    let want = x.matmul(&w.t().unwrap()).unwrap();
    let (ours, want) = (values(&ours), values(&want));
    let err: f32 = ours.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
    let norm: f32 = want.iter().map(|b| b * b).sum();
    let rel = (err / norm).sqrt();
    // About 0.005 here; the stored (still permuted) rows give about 1.4.
    assert!(rel < 0.02, "relative error {rel}");
}

#[test]
fn weights_match_transformers_gguf_loading() {
    let file = gguf();
    let reference =
        SafetensorsWeights::open(&[fixture("smollm2_tokenizer").join("weights.safetensors")])
            .unwrap();
    let slice = |name: &str, shape: &[usize], rows: std::ops::Range<usize>, cols: usize| {
        let t = f32_tensor(&file, name, shape)
            .narrow(0, rows.start, rows.len())
            .unwrap();
        values(&t.narrow(t.rank() - 1, 0, cols).unwrap())
    };
    let q0 = "model.layers.0.self_attn.q_proj.weight";
    let k0 = "model.layers.0.self_attn.k_proj.weight";
    let k29 = "model.layers.29.self_attn.k_proj.weight";
    let cases: Vec<(&str, Vec<f32>)> = vec![
        (
            "embed_tokens.rows0_2.cols0_8",
            slice("model.embed_tokens.weight", &[49152, 576], 0..2, 8),
        ),
        (
            "embed_tokens.row49151",
            slice(
                "model.embed_tokens.weight",
                &[49152, 576],
                49151..49152,
                576,
            ),
        ),
        ("layers.0.q_proj.rows0_4", slice(q0, &[576, 576], 0..4, 576)),
        (
            "layers.0.q_proj.rows30_36",
            slice(q0, &[576, 576], 30..36, 576),
        ),
        ("layers.0.k_proj.rows0_4", slice(k0, &[192, 576], 0..4, 576)),
        (
            "layers.0.k_proj.rows126_130",
            slice(k0, &[192, 576], 126..130, 576),
        ),
        (
            "layers.29.k_proj.rows188_192",
            slice(k29, &[192, 576], 188..192, 576),
        ),
        (
            "layers.0.v_proj.rows0_2",
            slice(
                "model.layers.0.self_attn.v_proj.weight",
                &[192, 576],
                0..2,
                576,
            ),
        ),
        (
            "layers.0.down_proj.rows0_2",
            slice(
                "model.layers.0.mlp.down_proj.weight",
                &[576, 1536],
                0..2,
                1536,
            ),
        ),
        (
            "layers.0.input_layernorm",
            values(&f32_tensor(
                &file,
                "model.layers.0.input_layernorm.weight",
                &[576],
            )),
        ),
        (
            "norm",
            values(&f32_tensor(&file, "model.norm.weight", &[576])),
        ),
    ];
    for (key, ours) in cases {
        let shape = reference_shape(&reference, key);
        let theirs = values(
            &reference
                .load(key, &shape, DType::F32, &Device::Cpu)
                .unwrap(),
        );
        assert_close(key, &ours, &theirs, 1e-6, 0.0);
    }
}

fn reference_shape(st: &SafetensorsWeights, key: &str) -> Vec<usize> {
    // Probe the shape through the error message rather than re-parsing the header.
    match st.load(key, &[0], DType::F32, &Device::Cpu) {
        Err(Error::ShapeMismatch { actual, .. }) => actual,
        other => panic!("{key}: {:?}", other.map(|t| t.dims().to_vec())),
    }
}

#[test]
fn wrong_shape_and_missing_tensor_are_named() {
    let file = gguf();
    let err = file
        .tensor(
            "model.layers.0.self_attn.k_proj.weight",
            &[576, 576],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let err = file
        .tensor("lm_head.weight", &[49152, 576], DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lm_head.weight") && err.contains("output.weight"),
        "{err}"
    );
}

// ---- bad files ----

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

fn open_err(bytes: &[u8]) -> Error {
    let f = temp_file(bytes);
    match GgufFile::open(f.path()) {
        Ok(_) => panic!("opened a bad file"),
        Err(e) => e,
    }
}

#[test]
fn not_a_gguf_and_truncated_files_give_one_clear_line() {
    for bytes in [&b""[..], b"GG", b"{\"not\": \"gguf\"}"] {
        let err = open_err(bytes);
        let text = err.to_string();
        assert!(matches!(err, Error::BadGguf { .. }), "{text}");
        assert!(
            text.contains("not a GGUF file") && !text.contains('\n'),
            "{text}"
        );
    }
    let real = std::fs::read(model_path()).unwrap();
    // Cut inside the header, inside the token list, and inside the tensor data.
    for len in [24, 4096, 1 << 20, real.len() / 2] {
        let err = open_err(&real[..len]);
        let text = err.to_string();
        assert!(matches!(err, Error::BadGguf { .. }), "{len}: {text}");
        assert!(
            text.contains("truncated") && !text.contains('\n'),
            "{len}: {text}"
        );
    }
}

/// A GGUF v3 file with one 2x32 tensor of ggml type id `type_id` (zeroed data).
fn gguf_with_type_id(type_id: u32, data_len: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    string(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    string(&mut b, "llama");
    string(&mut b, "blk.0.attn_q.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    b.extend(type_id.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32, 0);
    b.extend(vec![0u8; data_len]);
    b
}

#[test]
fn unknown_tensor_type_id_is_named() {
    // 16 is IQ2_XXS, which candle does not know.
    let err = open_err(&gguf_with_type_id(16, 2 * 66));
    let text = err.to_string();
    assert!(matches!(err, Error::Unsupported(_)), "{text}");
    assert!(
        text.contains("blk.0.attn_q.weight") && text.contains("IQ2_XXS"),
        "{text}"
    );
}

#[test]
fn type_candle_knows_but_cannot_load_is_named() {
    // Q8_1 is a valid ggml type that candle's GGUF loader refuses.
    let block = GgmlDType::Q8_1.type_size();
    let storage = QStorage::from_data(
        Cow::Owned(vec![0u8; 2 * block]),
        &Device::Cpu,
        GgmlDType::Q8_1,
    )
    .unwrap();
    let q = QTensor::new(storage, (2, 32)).unwrap();
    let arch = Value::String("llama".into());
    let mut bytes = std::io::Cursor::new(Vec::new());
    gguf_file::write(
        &mut bytes,
        &[("general.architecture", &arch)],
        &[("blk.0.ffn_up.weight", &q)],
    )
    .unwrap();
    let f = temp_file(bytes.get_ref());
    let file = GgufFile::open(f.path()).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    for err in [
        file.tensor(name, &[2, 32], DType::F32, &Device::Cpu)
            .unwrap_err(),
        file.quantized(name, &[2, 32], &Device::Cpu).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, Error::Unsupported(_)), "{text}");
        assert!(
            text.contains("blk.0.ffn_up.weight") && text.contains("Q8_1"),
            "{text}"
        );
    }
}
