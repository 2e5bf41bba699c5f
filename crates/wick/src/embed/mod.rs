//! Sentence embeddings: tokenize, batch by length, encode, pool, normalise — the
//! sentence-transformers pipeline read from the model's own files.

pub mod pooling;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::io::json::read_json;
use crate::io::safetensors::SafetensorsWeights;
use crate::io::tokenizer::{encode_all, load_tokenizer};
use crate::io::weights::WeightView;
use crate::io::ModelFiles;
use crate::models::bert::{BertConfig, BertModel};
pub use pooling::{PoolingMode, PoolingSpec};

/// Embedding models load from a Hugging Face folder; a single file (a GGUF, say) gets a clear
/// refusal instead of "file.gguf/config.json: file not found".
fn single_file_error(path: &std::path::Path) -> Error {
    let what = if crate::io::gguf::is_gguf(path) {
        "a GGUF file: embedding models from GGUF are not supported yet"
    } else {
        "a single file"
    };
    Error::Unsupported(format!(
        "{} is {what}; give the model's folder in Hugging Face layout (config.json, \
         model.safetensors, tokenizer.json)",
        path.display()
    ))
}

/// Per-call options; `None` means "what the model's files say".
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    pub batch_size: usize,
    pub normalize: Option<bool>,
    /// Text put before every input (e.g. E5's `"query: "`).
    pub prefix: Option<String>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: HashMap<String, String>,
}

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: PoolingSpec,
    prompts: HashMap<String, String>,
    max_length: usize,
    pad_id: u32,
}

impl Embedder {
    /// Loads an encoder and its sentence-transformers pipeline. `max_length` overrides the
    /// model's sequence limit (it may not exceed the model's position table).
    pub fn load(
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
        max_length: Option<usize>,
    ) -> Result<Self> {
        if let ModelFiles::File(path) = files {
            return Err(single_file_error(path));
        }
        let config_path = files.require("config.json")?;
        let cfg = BertConfig::from_file(&config_path)?;
        let max_length = resolve_max_length(files, &cfg, max_length)?;
        let tokenizer = load_tokenizer(&files.require("tokenizer.json")?, max_length)?;
        let pooling = PoolingSpec::from_model(files)?;
        let prompts = match files.get("config_sentence_transformers.json")? {
            Some(p) => read_json::<SentenceTransformersConfig>(&p)?.prompts,
            None => HashMap::new(),
        };
        let weights = Arc::new(SafetensorsWeights::open_model(files)?);
        let model = BertModel::new(&cfg, &WeightView::new(weights, dtype, device))?;
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        Ok(Embedder {
            model,
            tokenizer,
            pooling,
            prompts,
            max_length,
            pad_id,
        })
    }

    /// Width of the vectors `embed` returns.
    pub fn dim(&self) -> usize {
        self.pooling.output_dim(self.model.config().hidden_size)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pooling(&self) -> &PoolingSpec {
        &self.pooling
    }

    /// The prefix a named prompt (from config_sentence_transformers.json) stands for.
    pub fn prompt(&self, name: &str) -> Result<&str> {
        self.prompts.get(name).map(String::as_str).ok_or_else(|| {
            let mut known: Vec<_> = self.prompts.keys().cloned().collect();
            known.sort();
            Error::InvalidArgument {
                name: "prompt_name",
                message: format!("`{name}` is not one of the model's prompts {known:?}"),
            }
        })
    }

    /// Number of tokens each text is given to the model (after special tokens and truncation).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        Ok(encode_all(&self.tokenizer, texts)?
            .iter()
            .map(Vec::len)
            .collect())
    }

    pub fn embed(&self, texts: &[&str], opts: &EmbedOptions) -> Result<Vec<Vec<f32>>> {
        self.embed_with_progress(texts, opts, |_| {})
    }

    /// Embeds `texts`, returning vectors in input order. Batches are formed from length-sorted
    /// inputs so each pads only to its own longest text; `progress` gets the count done so far.
    pub fn embed_with_progress(
        &self,
        texts: &[&str],
        opts: &EmbedOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>> {
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument {
                name: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        let ids = match &opts.prefix {
            Some(prefix) => {
                let owned: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
                encode_all(
                    &self.tokenizer,
                    &owned.iter().map(String::as_str).collect::<Vec<_>>(),
                )?
            }
            None => encode_all(&self.tokenizer, texts)?,
        };
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));

        let normalize = opts.normalize.unwrap_or(self.pooling.normalize);
        let mut out = vec![Vec::new(); ids.len()];
        let mut done = 0;
        for chunk in order.chunks(opts.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.embed_batch(&batch, normalize)?;
            // JSON has no NaN: left alone these would be written as `null` vectors.
            if let Some(i) = chunk
                .iter()
                .zip(&vectors)
                .filter(|(_, v)| v.iter().any(|x| !x.is_finite()))
                .map(|(&i, _)| i)
                .min()
            {
                return Err(Error::NonFiniteOutput {
                    what: format!("text {i}"),
                });
            }
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            done += chunk.len();
            progress(done);
        }
        Ok(out)
    }

    fn embed_batch(&self, batch: &[&[u32]], normalize: bool) -> Result<Vec<Vec<f32>>> {
        let device = self.model.device();
        let seq = batch.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut flat_ids = Vec::with_capacity(batch.len() * seq);
        let mut flat_mask = Vec::with_capacity(batch.len() * seq);
        for ids in batch {
            flat_ids.extend_from_slice(ids);
            flat_ids.extend(std::iter::repeat_n(self.pad_id, seq - ids.len()));
            flat_mask.extend(std::iter::repeat_n(1u32, ids.len()));
            flat_mask.extend(std::iter::repeat_n(0u32, seq - ids.len()));
        }
        let input_ids = Tensor::from_vec(flat_ids, (batch.len(), seq), device)?;
        let mask = Tensor::from_vec(flat_mask, (batch.len(), seq), device)?;
        let hidden = self.model.forward(&input_ids, &mask)?;
        let mut pooled = pooling::pool(&hidden, &mask, &self.pooling.modes)?;
        if normalize {
            pooled = pooling::l2_normalize(&pooled)?;
        }
        Ok(pooled.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }
}

fn resolve_max_length(
    files: &ModelFiles,
    cfg: &BertConfig,
    requested: Option<usize>,
) -> Result<usize> {
    let limit = cfg.max_position_embeddings;
    if let Some(n) = requested {
        if n == 0 || n > limit {
            return Err(Error::InvalidArgument {
                name: "max_length",
                message: format!("{n} is outside 1..={limit} (the model's position limit)"),
            });
        }
        return Ok(n);
    }
    let from_st = match files.get("sentence_bert_config.json")? {
        Some(p) => read_json::<SentenceBertConfig>(&p)?.max_seq_length,
        None => None,
    };
    Ok(from_st.unwrap_or(limit).min(limit))
}
