//! GGUF tensors under Hugging Face names and in HF layout.
//!
//! llama.cpp renames tensors (`blk.0.attn_q.weight`) and, for `llama` files, permutes the rows of
//! q_proj/k_proj so its interleaved RoPE matches HF's rotate-half one. Its converter applies, per
//! tensor of shape (n_head * head_dim, ...):
//! `w.reshape(n_head, 2, head_dim / 2, ...).swapaxes(1, 2).reshape(w.shape)`
//! (n_head is the kv head count for k). We undo it on the way out, so everything a model sees is
//! in HF layout: with candle ops for dequantized tensors, and by moving whole rows of stored bytes
//! for quantized ones (ggml quantization blocks never cross a row).

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::error::{printable, Error, Result};
use crate::io::gguf::GgufFile;
use crate::io::gguf_arch::GgufArch;
use crate::io::weights::WeightSource;

fn split_param(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('.')
        .filter(|(_, p)| *p == "weight" || *p == "bias")
}

/// The llama.cpp name of an HF tensor name under `arch`'s table, if it has one.
pub fn gguf_tensor_name(arch: &GgufArch, hf: &str) -> Option<String> {
    let (module, param) = split_param(hf)?;
    if let Some((_, g)) = arch.global_rows().find(|(h, _)| *h == module) {
        return Some(format!("{g}.{param}"));
    }
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, sub) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (_, g) = arch.layer_rows().find(|(h, _)| *h == sub)?;
    Some(format!("blk.{layer}.{g}.{param}"))
}

/// The HF name of a llama.cpp tensor name under `arch`'s table, if it has one.
pub fn hf_tensor_name(arch: &GgufArch, gguf: &str) -> Option<String> {
    let (module, param) = split_param(gguf)?;
    if let Some((h, _)) = arch.global_rows().find(|(_, g)| *g == module) {
        return Some(format!("{h}.{param}"));
    }
    let rest = module.strip_prefix("blk.")?;
    let (layer, sub) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (h, _) = arch.layer_rows().find(|(_, g)| *g == sub)?;
    Some(format!("model.layers.{layer}.{h}.{param}"))
}

impl GgufFile {
    /// HF names of the tensors this file has under a known mapping, sorted.
    pub fn hf_tensor_names(&self) -> Vec<String> {
        let Ok(arch) = self.arch_row() else {
            return Vec::new();
        };
        let mut names: Vec<String> = self
            .tensor_names()
            .into_iter()
            .filter_map(|g| hf_tensor_name(arch, g))
            .collect();
        names.sort_unstable();
        names
    }

    /// The head count to un-permute `gguf_name` with, when llama.cpp permuted it.
    fn permuted_heads(&self, gguf_name: &str) -> Result<Option<usize>> {
        // Only llama.cpp's `DecoderModel` converter permutes; qwen2 and others keep HF's order.
        let arch = self.arch_row()?;
        if !arch.permuted_qk {
            return Ok(None);
        }
        let Some((module, _)) = split_param(gguf_name) else {
            return Ok(None);
        };
        let key = |k: &str| format!("{}.{k}", arch.arch);
        let heads = self.get_usize(&key("attention.head_count"))?;
        if module.ends_with(".attn_q") {
            Ok(Some(heads))
        } else if module.ends_with(".attn_k") {
            let kv = self.opt(&key("attention.head_count_kv"), Self::get_usize)?;
            Ok(Some(kv.unwrap_or(heads)))
        } else {
            Ok(None)
        }
    }

    /// Maps an HF name and checks the shape, returning the llama.cpp name.
    fn resolve(&self, hf: &str, shape: &[usize]) -> Result<String> {
        let missing = |location: String| Error::MissingTensor {
            name: hf.to_string(),
            location,
        };
        let Some(gguf_name) = gguf_tensor_name(self.arch_row()?, hf) else {
            return Err(missing(format!(
                "{} (no llama.cpp name for it)",
                self.path().display()
            )));
        };
        let Some(info) = self.tensor_info(&gguf_name) else {
            return Err(missing(format!(
                "{} (looked up as `{gguf_name}`)",
                self.path().display()
            )));
        };
        if info.shape.dims() != shape {
            return Err(Error::ShapeMismatch {
                name: hf.to_string(),
                location: self.path().display().to_string(),
                expected: shape.to_vec(),
                actual: info.shape.dims().to_vec(),
            });
        }
        Ok(gguf_name)
    }

    fn check_heads(&self, gguf_name: &str, rows: usize, heads: usize) -> Result<()> {
        // 0 rows is a multiple of anything, but no q/k projection has none.
        if heads == 0 || rows == 0 || !rows.is_multiple_of(2 * heads) {
            return Err(Error::BadGguf {
                path: self.path().to_path_buf(),
                message: format!(
                    "tensor `{}` has {rows} rows, not a positive multiple of 2 x {heads} heads",
                    printable(gguf_name)
                ),
            });
        }
        Ok(())
    }
}

/// Undoes llama.cpp's q/k permutation on a float tensor whose first dim is n_head * head_dim.
pub fn unpermute_tensor(t: &Tensor, heads: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims.first().copied().unwrap_or(0);
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::InvalidArgument {
            name: "heads",
            message: format!("{rows} rows are not a multiple of 2 x {heads} heads"),
        });
    }
    let rest = t.elem_count() / rows.max(1);
    let half = rows / heads / 2;
    Ok(t.reshape((heads, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?)
}

/// The same on the stored bytes of `rows` equal rows (callers check `rows % (2 * heads) == 0`).
pub(crate) fn unpermute_rows(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    let row_bytes = bytes.len() / rows;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                let src = h * head_dim + 2 * j + i;
                out.extend_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

impl WeightSource for GgufFile {
    fn contains(&self, name: &str) -> bool {
        let Ok(arch) = self.arch_row() else {
            return false;
        };
        gguf_tensor_name(arch, name).is_some_and(|g| self.tensor_info(&g).is_some())
    }

    /// Dequantized (exactly, in f32), un-permuted, then converted to `dtype`.
    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let gguf_name = self.resolve(name, shape)?;
        let t = self.dequantized(&gguf_name, device)?;
        let t = match self.permuted_heads(&gguf_name)? {
            Some(heads) => {
                self.check_heads(&gguf_name, shape[0], heads)?;
                unpermute_tensor(&t, heads)?
            }
            None => t,
        };
        let shift = self.arch_row()?.norm_shift;
        let t = if shift != 0.0 && name.ends_with("norm.weight") {
            (t - f64::from(shift))?
        } else {
            t
        };
        Ok(t.to_dtype(dtype)?)
    }

    /// The stored quantized tensor, un-permuted, for `QMatMul`; Ok(None) for float tensors.
    fn quantized(&self, name: &str, shape: &[usize], device: &Device) -> Result<Option<QTensor>> {
        let gguf_name = self.resolve(name, shape)?;
        let (info, ty, bytes) = self.raw_bytes(&gguf_name)?;
        if ty.is_float() || shape.len() < 2 {
            return Ok(None);
        }
        let q = match self.permuted_heads(&gguf_name)? {
            Some(heads) => {
                self.check_heads(&gguf_name, shape[0], heads)?;
                let rows = unpermute_rows(bytes, shape[0], heads);
                self.qtensor_from_bytes(&gguf_name, info, ty, &rows, device)?
            }
            None => self.qtensor_from_bytes(&gguf_name, info, ty, bytes, device)?,
        };
        Ok(Some(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf_arch::gguf_arch;

    #[test]
    fn names_map_both_ways() {
        let pairs = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.self_attn.q_proj.weight",
                "blk.0.attn_q.weight",
            ),
            (
                "model.layers.12.self_attn.k_proj.bias",
                "blk.12.attn_k.bias",
            ),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.29.mlp.down_proj.weight",
                "blk.29.ffn_down.weight",
            ),
            (
                "model.layers.1.input_layernorm.weight",
                "blk.1.attn_norm.weight",
            ),
            (
                "model.layers.1.post_attention_layernorm.weight",
                "blk.1.ffn_norm.weight",
            ),
        ];
        let llama = gguf_arch("llama").expect("llama row");
        for (hf, gguf) in pairs {
            assert_eq!(gguf_tensor_name(llama, hf).as_deref(), Some(gguf), "{hf}");
            assert_eq!(hf_tensor_name(llama, gguf).as_deref(), Some(hf), "{gguf}");
        }
        // Qwen3 adds the per-head norms and keeps the shared rows.
        let qwen3 = gguf_arch("qwen3").expect("qwen3 row");
        for (hf, gguf) in [
            (
                "model.layers.2.self_attn.q_norm.weight",
                "blk.2.attn_q_norm.weight",
            ),
            (
                "model.layers.2.self_attn.k_norm.weight",
                "blk.2.attn_k_norm.weight",
            ),
            ("model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
        ] {
            assert_eq!(gguf_tensor_name(qwen3, hf).as_deref(), Some(gguf), "{hf}");
            assert_eq!(hf_tensor_name(qwen3, gguf).as_deref(), Some(hf), "{gguf}");
        }
        assert_eq!(
            gguf_tensor_name(llama, "model.layers.2.self_attn.q_norm.weight"),
            None
        );
        for bad in [
            "model.layers.x.mlp.up_proj.weight",
            "model.layers.0.mlp.weight",
            "foo",
        ] {
            assert_eq!(gguf_tensor_name(llama, bad), None, "{bad}");
        }
        assert_eq!(hf_tensor_name(llama, "rope_freqs.weight"), None);
    }

    /// llama.cpp's forward permutation, written as its converter does.
    fn permute(t: &Tensor, heads: usize) -> Tensor {
        let dims = t.dims().to_vec();
        let rest = t.elem_count() / dims[0];
        t.reshape((heads, 2, dims[0] / heads / 2, rest))
            .and_then(|t| t.transpose(1, 2))
            .and_then(|t| t.contiguous())
            .and_then(|t| t.reshape(dims))
            .expect("permute")
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute_on_tensors_and_rows() {
        let heads = 3;
        let (rows, cols) = (heads * 8, 5);
        let hf = Tensor::arange(0f32, (rows * cols) as f32, &Device::Cpu)
            .and_then(|t| t.reshape((rows, cols)))
            .expect("arange");
        let stored = permute(&hf, heads);
        let back = unpermute_tensor(&stored, heads).expect("unpermute");
        assert_eq!(
            back.to_vec2::<f32>().expect("vec"),
            hf.to_vec2::<f32>().expect("vec")
        );

        let stored_bytes: Vec<u8> = stored
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec")
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let back_bytes = unpermute_rows(&stored_bytes, rows, heads);
        let back_vals: Vec<f32> = back_bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(
            back_vals,
            hf.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("vec")
        );

        // A bias (1-D) goes through the same path.
        let bias = Tensor::arange(0f32, rows as f32, &Device::Cpu).expect("arange");
        let back = unpermute_tensor(&permute(&bias, heads), heads).expect("unpermute");
        assert_eq!(
            back.to_vec1::<f32>().expect("vec"),
            bias.to_vec1::<f32>().expect("vec")
        );
    }
}
