//! Loading a decoder for generation from a safetensors directory, a GGUF file or a hub id:
//! model, tokenizer, chat template and generation defaults.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::generate::causal_lm::CachedDecoder;
use crate::generate::config::GenerationDefaults;
use crate::io::chat_template::ChatTemplate;
use crate::io::gguf::GgufFile;
use crate::io::gguf_tokenizer::{special_tokens, tokenizer_from_gguf};
use crate::io::json::read_json;
use crate::io::safetensors::SafetensorsWeights;
use crate::io::tokenizer::read_tokenizer;
use crate::io::weights::{WeightSource, WeightView};
use crate::io::ModelFiles;
use crate::lora::load_adapter;
use crate::models::{DecoderConfig, DecoderModel};

pub struct LoadedLm {
    pub model: CachedDecoder,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub defaults: GenerationDefaults,
}

/// `dtype` None keeps GGUF weights quantized (and means f32 for safetensors); Some dequantizes.
/// `adapter` is a PEFT LoRA adapter directory to attach (unmerged, gradients off), so it works
/// on a quantized base too.
pub fn load_causal_lm(
    files: &ModelFiles,
    device: &Device,
    dtype: Option<DType>,
    adapter: Option<&Path>,
) -> Result<LoadedLm> {
    match files {
        ModelFiles::File(path) if is_gguf(path) => load_gguf(path, device, dtype, adapter),
        ModelFiles::File(path) => Err(Error::Unsupported(format!(
            "{}: a single-file model must be a .gguf; give a directory for safetensors models",
            path.display()
        ))),
        _ => load_safetensors_dir(files, device, dtype.unwrap_or(DType::F32), adapter),
    }
}

/// The model with `adapter` attached for inference.
fn with_adapter(mut model: DecoderModel, adapter: Option<&Path>) -> Result<DecoderModel> {
    if let Some(dir) = adapter {
        let (_, params) = load_adapter(dir, &mut model)?;
        params.set_requires_grad(false);
    }
    Ok(model)
}

/// Whether `path` names a GGUF file (by its extension).
pub use crate::io::gguf::is_gguf;

fn load_gguf(
    path: &Path,
    device: &Device,
    dtype: Option<DType>,
    adapter: Option<&Path>,
) -> Result<LoadedLm> {
    let file = GgufFile::open(path)?;
    let cfg = DecoderConfig::from_value(file.hf_config()?, path)?;
    let tokenizer = tokenizer_from_gguf(&file)?;
    let special = special_tokens(&file)?;
    let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let chat_template = match file.chat_template()? {
        Some(t) => Some(ChatTemplate::new(
            t,
            token_text(special.bos),
            token_text(special.eos),
        )?),
        None => None,
    };
    let defaults = GenerationDefaults {
        eos_token_id: special.eos.into_iter().collect(),
        bos_token_id: special.bos,
        ..Default::default()
    };
    let source: Arc<dyn WeightSource> = Arc::new(file);
    let view = WeightView::new(source, dtype.unwrap_or(DType::F32), device);
    let view = if dtype.is_some() {
        view.dequantized()
    } else {
        view
    };
    let model = with_adapter(DecoderModel::new(&cfg, &view)?, adapter)?;
    Ok(LoadedLm {
        model: CachedDecoder::new(model, None)?,
        tokenizer,
        chat_template,
        defaults,
    })
}

/// The parts of tokenizer_config.json that chat templates need.
#[derive(Deserialize, Default)]
struct TokenizerConfig {
    chat_template: Option<TemplateField>,
    bos_token: Option<TokenField>,
    eos_token: Option<TokenField>,
}

/// A template string, or a list of named templates (the "default" one is used).
#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// A token string, or an AddedToken object with `content`.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenField {
    Text(String),
    Added { content: String },
}

impl TokenField {
    fn text(self) -> String {
        match self {
            TokenField::Text(t) | TokenField::Added { content: t } => t,
        }
    }
}

fn load_safetensors_dir(
    files: &ModelFiles,
    device: &Device,
    dtype: DType,
    adapter: Option<&Path>,
) -> Result<LoadedLm> {
    let cfg = DecoderConfig::from_file(&files.require("config.json")?)?;
    let tokenizer_path = files.require("tokenizer.json")?;
    let tokenizer = read_tokenizer(&tokenizer_path)?;
    let tok_cfg: TokenizerConfig = match files.get("tokenizer_config.json")? {
        Some(p) => read_json(&p)?,
        None => TokenizerConfig::default(),
    };
    let template = match tok_cfg.chat_template {
        Some(TemplateField::One(t)) => Some(t),
        Some(TemplateField::Named(list)) => list
            .into_iter()
            .find(|t| t.name == "default")
            .map(|t| t.template),
        None => None,
    };
    let chat_template = match template {
        Some(t) => Some(ChatTemplate::new(
            &t,
            tok_cfg.bos_token.map(TokenField::text),
            tok_cfg.eos_token.map(TokenField::text),
        )?),
        None => None,
    };
    let mut defaults = match files.get("generation_config.json")? {
        Some(p) => GenerationDefaults::from_file(&p)?,
        None => GenerationDefaults::default(),
    };
    if defaults.eos_token_id.is_empty() {
        defaults.eos_token_id = cfg.eos_token_ids.clone();
    }
    let weights: Arc<dyn WeightSource> = Arc::new(SafetensorsWeights::open_model(files)?);
    let model = DecoderModel::new(&cfg, &WeightView::new(weights, dtype, device))?;
    let model = with_adapter(model, adapter)?;
    Ok(LoadedLm {
        model: CachedDecoder::new(model, None)?,
        tokenizer,
        chat_template,
        defaults,
    })
}
