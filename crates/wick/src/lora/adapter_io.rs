//! Adapters on disk in PEFT's format: `adapter_config.json` + `adapter_model.safetensors` with
//! keys such as `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` (f32).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsWeights;
use crate::lora::config::{LoraConfig, TargetModules};
use crate::lora::inject::{attach, peft_key, plan, LoraParams};
use crate::models::DecoderModel;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// Writes `params` and `cfg` to `dir` (created if needed) as PEFT does. Each file is written
/// under a temporary name and renamed into place, so a crash never leaves a half-written file
/// where an adapter was. `target_modules` records the module names actually adapted.
pub fn save_adapter(dir: &Path, cfg: &LoraConfig, params: &LoraParams) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(params.len() * 2);
    for (key, var) in params.named_vars() {
        let t = var
            .as_detached_tensor()
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .contiguous()?;
        tensors.push((key, t));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let tmp = temp_path(&weights_path);
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors, Some(metadata), &tmp).map_err(|e| {
        Error::BadSafetensors {
            path: tmp.clone(),
            message: format!("cannot write: {e}"),
        }
    })?;
    rename(&tmp, &weights_path)?;

    let mut saved = cfg.clone();
    saved.target_modules = Some(TargetModules::List(params.target_names()));
    saved.inference_mode = true;
    let json = serde_json::to_string_pretty(&saved)
        .map_err(|e| Error::bad_config(dir.join(CONFIG_FILE), e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), json.as_bytes())
}

/// Reads a PEFT LoRA adapter from `dir` and attaches it to `model`. Every targeted module must
/// have both weights with the right shapes, and every tensor in the file must belong to a
/// targeted module; errors name the file and key, and leave the model untouched. The adapters
/// start with gradients on and dropout off (see [`LoraParams`]).
pub fn load_adapter(dir: &Path, model: &mut DecoderModel) -> Result<(LoraConfig, LoraParams)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.is_file() {
        return Err(Error::MissingFile {
            path: config_path,
            hint: Some("a LoRA adapter directory holds adapter_config.json".into()),
        });
    }
    let cfg = LoraConfig::from_file(&config_path)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.is_file() {
        let hint = if dir.join("adapter_model.bin").is_file() {
            "only adapter_model.bin (pickle) is there; re-save with safe_serialization=True"
        } else {
            "a LoRA adapter directory holds adapter_model.safetensors"
        };
        return Err(Error::MissingFile {
            path: weights_path,
            hint: Some(hint.into()),
        });
    }
    let planned = plan(model, &cfg).map_err(|e| match e {
        Error::InvalidArgument { name, message } => {
            Error::bad_config(&config_path, format!("`{name}`: {message}"))
        }
        other => other,
    })?;
    let file = SafetensorsWeights::open(std::slice::from_ref(&weights_path))?;
    let device = model.device().clone();
    let mut expected = BTreeSet::new();
    let mut weights = Vec::with_capacity(planned.len());
    for p in &planned {
        let (ka, kb) = (peft_key(&p.path, 'A'), peft_key(&p.path, 'B'));
        let a = file.load(&ka, &[cfg.r, p.in_dim], DType::F32, &device)?;
        let b = file.load(&kb, &[p.out_dim, cfg.r], DType::F32, &device)?;
        weights.push((a, b));
        expected.insert(ka);
        expected.insert(kb);
    }
    let mut extra: Vec<&str> = file.names().filter(|n| !expected.contains(*n)).collect();
    extra.sort_unstable();
    if let Some(first) = extra.first() {
        return Err(Error::BadSafetensors {
            path: weights_path,
            message: format!(
                "unexpected tensor `{first}` ({} tensor(s) match no module targeted by \
                 {CONFIG_FILE})",
                extra.len()
            ),
        });
    }
    let params = attach(model, &cfg, 0, planned, weights)?;
    Ok((cfg, params))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it, then renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = temp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    rename(&tmp, path)
}
