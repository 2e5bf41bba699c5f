//! Pooling token states into one vector, configured like sentence-transformers
//! (`modules.json`, `1_Pooling/config.json`).

use candle_core::{DType, Tensor, D};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::io::json::read_json;
use crate::io::ModelFiles;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    LastToken,
}

/// What sentence-transformers would do after the encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolingSpec {
    /// In sentence-transformers' concatenation order.
    pub modes: Vec<PoolingMode>,
    /// True when the pipeline ends with a `Normalize` module.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl PoolingSpec {
    /// Reads the sentence-transformers pipeline; a plain HF model (no modules.json) gets mean
    /// pooling without normalisation, as sentence-transformers does.
    pub fn from_model(files: &ModelFiles) -> Result<Self> {
        let Some(modules_path) = files.get("modules.json")? else {
            return Ok(PoolingSpec {
                modes: vec![PoolingMode::Mean],
                normalize: false,
            });
        };
        let modules: Vec<Module> = read_json(&modules_path)?;
        let mut spec = PoolingSpec {
            modes: vec![],
            normalize: false,
        };
        for (i, m) in modules.iter().enumerate() {
            match m.kind.rsplit('.').next().unwrap_or_default() {
                "Transformer" => {}
                "Pooling" => {
                    let cfg_name = format!("{}/config.json", m.path.trim_end_matches('/'));
                    let cfg_path = files.require(&cfg_name)?;
                    let cfg: PoolingConfig = read_json(&cfg_path)?;
                    spec.modes = modes_of(&cfg).map_err(|msg| Error::bad_config(&cfg_path, msg))?;
                }
                "Normalize" => spec.normalize = true,
                other => {
                    return Err(Error::Unsupported(format!(
                        "{}: module {i} of type `{other}` ({}) is not supported",
                        modules_path.display(),
                        m.kind
                    )))
                }
            }
        }
        if spec.modes.is_empty() {
            spec.modes.push(PoolingMode::Mean);
        }
        Ok(spec)
    }

    /// Output width for a model with `hidden` features.
    pub fn output_dim(&self, hidden: usize) -> usize {
        hidden * self.modes.len()
    }
}

fn modes_of(cfg: &PoolingConfig) -> Result<Vec<PoolingMode>, String> {
    if cfg.pooling_mode_weightedmean_tokens {
        return Err("pooling_mode_weightedmean_tokens is not supported".into());
    }
    let flags = [
        (cfg.pooling_mode_cls_token, PoolingMode::Cls),
        (cfg.pooling_mode_max_tokens, PoolingMode::Max),
        (cfg.pooling_mode_mean_tokens, PoolingMode::Mean),
        (
            cfg.pooling_mode_mean_sqrt_len_tokens,
            PoolingMode::MeanSqrtLen,
        ),
        (cfg.pooling_mode_lasttoken, PoolingMode::LastToken),
    ];
    let modes: Vec<_> = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, m)| *m)
        .collect();
    if modes.is_empty() {
        return Err("no pooling mode is enabled".into());
    }
    Ok(modes)
}

/// Pools `hidden` (batch, seq, dim) under `mask` (batch, seq; 1 = real token, right padding)
/// into (batch, dim · modes), in f32.
pub fn pool(hidden: &Tensor, mask: &Tensor, modes: &[PoolingMode]) -> Result<Tensor> {
    // Mean pooling alone (sentence-transformers' default) is one kernel on CUDA.
    #[cfg(feature = "cuda")]
    if modes == [PoolingMode::Mean] && hidden.device().is_cuda() && mask.dtype() == DType::U32 {
        return Ok(crate::ops::cuda::elementwise::masked_mean(
            &hidden.contiguous()?,
            &mask.contiguous()?,
        )?);
    }
    let hidden = hidden.to_dtype(DType::F32)?;
    let mask = mask.to_dtype(DType::F32)?;
    let (_, seq, _) = hidden.dims3()?;
    let mask3 = mask.unsqueeze(2)?; // (batch, seq, 1)
    let lengths = mask.sum_keepdim(1)?; // (batch, 1)
    let mut parts = Vec::with_capacity(modes.len());
    for mode in modes {
        let pooled = match mode {
            PoolingMode::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            PoolingMode::Max => {
                // Padding gets a large negative value so it never wins.
                let masked = hidden.broadcast_add(&((mask3.clone() - 1.0)? * 1e9)?)?;
                masked.max(1)?
            }
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                let sum = hidden.broadcast_mul(&mask3)?.sum(1)?;
                let denom = lengths.clamp(1e-9, f64::INFINITY)?;
                let denom = if *mode == PoolingMode::Mean {
                    denom
                } else {
                    denom.sqrt()?
                };
                sum.broadcast_div(&denom)?
            }
            PoolingMode::LastToken => {
                // Index of the last real token of each row.
                let last = (lengths.squeeze(1)? - 1.0)?.clamp(0.0, (seq - 1) as f64)?;
                let idx = last.to_dtype(DType::U32)?;
                let (b, _, d) = hidden.dims3()?;
                let idx = idx
                    .reshape((b, 1, 1))?
                    .broadcast_as((b, 1, d))?
                    .contiguous()?;
                hidden.gather(&idx, 1)?.squeeze(1)?
            }
        };
        parts.push(pooled);
    }
    Ok(Tensor::cat(&parts, D::Minus1)?)
}

/// Divides each row by its L2 norm (rows of zeros stay zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() && x.dtype() == DType::F32 && x.rank() == 2 {
        return Ok(crate::ops::cuda::elementwise::l2_normalize(
            &x.contiguous()?,
        )?);
    }
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn hidden() -> Tensor {
        // batch 2, seq 3, dim 2; the second row has one padding token.
        let data = [1f32, 2., 3., 4., 5., 6., -1., 0., 7., -8., 100., 100.];
        Tensor::from_slice(&data, (2, 3, 2), &Device::Cpu).unwrap()
    }

    fn mask() -> Tensor {
        Tensor::from_slice(&[1u32, 1, 1, 1, 1, 0], (2, 3), &Device::Cpu).unwrap()
    }

    fn rows(t: Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    #[test]
    fn mean_ignores_padding() {
        let out = rows(pool(&hidden(), &mask(), &[PoolingMode::Mean]).unwrap());
        assert_eq!(out, vec![vec![3., 4.], vec![3., -4.]]);
    }

    #[test]
    fn max_ignores_padding() {
        let out = rows(pool(&hidden(), &mask(), &[PoolingMode::Max]).unwrap());
        assert_eq!(out, vec![vec![5., 6.], vec![7., 0.]]);
    }

    #[test]
    fn cls_and_last_token_follow_the_mask() {
        let out = rows(
            pool(
                &hidden(),
                &mask(),
                &[PoolingMode::Cls, PoolingMode::LastToken],
            )
            .unwrap(),
        );
        assert_eq!(out, vec![vec![1., 2., 5., 6.], vec![-1., 0., 7., -8.]]);
    }

    #[test]
    fn mean_sqrt_len_divides_by_root_of_length() {
        let out = rows(pool(&hidden(), &mask(), &[PoolingMode::MeanSqrtLen]).unwrap());
        let s2 = 2f32.sqrt();
        assert!((out[1][0] - 6. / s2).abs() < 1e-6 && (out[1][1] + 8. / s2).abs() < 1e-6);
    }

    #[test]
    fn normalize_gives_unit_rows() {
        let x = Tensor::from_slice(&[3f32, 4., 0., 0.], (2, 2), &Device::Cpu).unwrap();
        assert_eq!(
            rows(l2_normalize(&x).unwrap()),
            vec![vec![0.6, 0.8], vec![0., 0.]]
        );
    }
}
