//! Baking an adapter into its base model and writing the result as a Hugging Face model
//! directory (`model.safetensors`, `config.json`, tokenizer files) that transformers loads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::io::gguf::GgufFile;
use crate::io::gguf_tokenizer::{special_tokens, tokenizer_from_gguf};
use crate::io::json::read_json;
use crate::io::safetensors::SafetensorsWeights;
use crate::io::weights::WeightView;
use crate::io::ModelFiles;
use crate::lora::adapter_io::{load_adapter, write_atomic};
use crate::lora::inject::merge;
use crate::models::{DecoderConfig, DecoderModel};

/// Files copied from a safetensors model directory when present.
const COPIED: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// What [`merge_to_dir`] wrote.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub out: PathBuf,
    pub tensors: usize,
    pub adapted_modules: usize,
    /// Files written besides the weights and config.json.
    pub extra_files: Vec<String>,
}

/// Loads the base model (`files`: a safetensors directory, a GGUF file, dequantized, or a hub
/// id) in f32, attaches the PEFT adapter in `adapter`, merges it, and writes the merged model to
/// `out` in `dtype`: `model.safetensors`, `config.json`, and the tokenizer (copied, or built from
/// GGUF metadata with a tokenizer_config.json carrying the chat template and bos/eos tokens).
/// Everything is written to `OUT.tmp` first and renamed at the end; a non-empty `out` is only
/// replaced when `force`.
pub fn merge_to_dir(
    files: &ModelFiles,
    adapter: &Path,
    out: &Path,
    dtype: DType,
    force: bool,
) -> Result<MergeReport> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::InvalidArgument {
            name: "dtype",
            message: format!("{dtype:?} is not a float dtype (f32, f16, bf16)"),
        });
    }
    if out.is_file() {
        return Err(Error::InvalidArgument {
            name: "out",
            message: format!("{} is a file; give a directory", out.display()),
        });
    }
    let non_empty = out
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty && !force {
        return Err(Error::InvalidArgument {
            name: "out",
            message: format!(
                "{} exists and is not empty (pass --force to replace it)",
                out.display()
            ),
        });
    }
    let device = Device::Cpu;
    let (source, mut config) = match files {
        ModelFiles::File(path) => {
            let file = GgufFile::open(path)?;
            let config = file.hf_config()?;
            (Source::Gguf(Arc::new(file)), config)
        }
        _ => {
            let config_path = files.require("config.json")?;
            let config: Value = read_json(&config_path)?;
            let weights = SafetensorsWeights::open_model(files)?;
            (Source::Dir(Arc::new(weights)), config)
        }
    };
    let origin = PathBuf::from(files.describe());
    let cfg = DecoderConfig::from_value(config.clone(), &origin)?;
    let view = match &source {
        Source::Gguf(f) => WeightView::new(f.clone(), DType::F32, &device).dequantized(),
        Source::Dir(w) => WeightView::new(w.clone(), DType::F32, &device),
    };
    let mut model = DecoderModel::new(&cfg, &view)?;
    let (_, params) = load_adapter(adapter, &mut model)?;
    merge(&mut model)?;

    let tmp = sibling(out, ".tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let tensors = write_weights(&model, dtype, &tmp.join("model.safetensors"))?;
    if let Value::Object(obj) = &mut config {
        let name = dtype_name(dtype);
        obj.insert("dtype".into(), json!(name));
        if obj.contains_key("torch_dtype") {
            obj.insert("torch_dtype".into(), json!(name));
        }
    }
    write_json(&tmp.join("config.json"), &config)?;
    let extra_files = match &source {
        Source::Gguf(f) => write_gguf_tokenizer(f, &tmp)?,
        Source::Dir(_) => copy_files(files, &tmp)?,
    };

    if out.exists() {
        let old = sibling(out, ".old");
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    }
    Ok(MergeReport {
        out: out.to_path_buf(),
        tensors,
        adapted_modules: params.len(),
        extra_files,
    })
}

enum Source {
    Gguf(Arc<GgufFile>),
    Dir(Arc<SafetensorsWeights>),
}

/// Writes the model's weights (HF names, LM head left out when tied) as one safetensors file.
pub fn write_weights(model: &DecoderModel, dtype: DType, path: &Path) -> Result<usize> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in model.named_weights()? {
        let t = t.to_dtype(dtype)?.to_device(&Device::Cpu)?.contiguous()?;
        tensors.push((name, t));
    }
    let n = tensors.len();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors, Some(metadata), path).map_err(|e| {
        Error::BadSafetensors {
            path: path.to_path_buf(),
            message: format!("cannot write: {e}"),
        }
    })?;
    Ok(n)
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::bad_config(path, e.to_string()))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

fn copy_files(files: &ModelFiles, dir: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for name in COPIED {
        if let Some(src) = files.get(name)? {
            let dst = dir.join(name);
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
            copied.push(name.to_string());
        }
    }
    Ok(copied)
}

/// tokenizer.json from the GGUF vocabulary, tokenizer_config.json with the chat template and
/// special tokens, and generation_config.json with the bos/eos ids.
fn write_gguf_tokenizer(file: &GgufFile, dir: &Path) -> Result<Vec<String>> {
    let tokenizer = tokenizer_from_gguf(file)?;
    let path = dir.join("tokenizer.json");
    tokenizer
        .save(&path, false)
        .map_err(|e| Error::TokenizerLoad {
            path: path.clone(),
            message: format!("cannot write: {e}"),
        })?;
    let special = special_tokens(file)?;
    let text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let mut tok_cfg = json!({"tokenizer_class": "PreTrainedTokenizerFast"});
    let mut gen_cfg = json!({});
    for (key, id) in [("bos", special.bos), ("eos", special.eos)] {
        if let Some(t) = text(id) {
            tok_cfg[format!("{key}_token")] = json!(t);
        }
        if let Some(id) = id {
            gen_cfg[format!("{key}_token_id")] = json!(id);
        }
    }
    if let Some(t) = file.chat_template()? {
        tok_cfg["chat_template"] = json!(t);
    }
    write_json(&dir.join("tokenizer_config.json"), &tok_cfg)?;
    write_json(&dir.join("generation_config.json"), &gen_cfg)?;
    Ok(vec![
        "tokenizer.json".into(),
        "tokenizer_config.json".into(),
        "generation_config.json".into(),
    ])
}
