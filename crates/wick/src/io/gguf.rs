//! GGUF files (llama.cpp's format): metadata, an HF-style `config.json` built from it, and raw
//! access to the tensors. Weights in HF names and layout come from `gguf_weights`, the tokenizer
//! from `gguf_tokenizer`.
//!
//! The header is parsed by candle's `gguf_file::Content`; the file is memory-mapped and every
//! tensor's extent is checked at open, so a truncated download fails here with one clear line.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{printable, Error, Result};
use crate::io::file_bytes::FileBytes;

pub mod quant;
mod scan;

use quant::StoredType;

/// Whether `path` names a GGUF file (by its extension, as llama.cpp's tools do).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    bytes: FileBytes,
    content: Content,
    /// Tensors of a type candle's header reader does not know (IQ4_NL, IQ4_XS): their
    /// `TensorInfo` carries a placeholder type, the real one is here.
    extra_types: HashMap<String, StoredType>,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = FileBytes::map(&path)?;
        Self::parse(path, bytes)
    }

    /// A GGUF file held in memory, validated as `open` validates a file; `name` is what error
    /// messages call it.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(name.into(), FileBytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: FileBytes) -> Result<Self> {
        let bad = |message: String| Error::BadGguf {
            path: path.clone(),
            message,
        };
        if bytes.len() < 4 || &bytes[..4] != b"GGUF" {
            let start = &bytes[..bytes.len().min(4)];
            return Err(bad(format!(
                "not a GGUF file (starts with {:?}, expected \"GGUF\")",
                String::from_utf8_lossy(start)
            )));
        }
        // candle rejects a whole file over one tensor of a type it does not know, without
        // naming the tensor: walk the header ourselves first.
        let scanned = scan::tensor_types(&bytes);
        let mut extra_types = HashMap::new();
        let mut patched = None;
        if let Some((tensors, header_len)) = &scanned {
            for t in tensors {
                if scan::candle_knows(t.type_id) {
                    continue;
                }
                let Some(ty) = StoredType::extra(t.type_id) else {
                    return Err(Error::Unsupported(format!(
                        "{}: tensor `{}` has ggml type {} (id {}), which wick cannot read \
                         (supported: {SUPPORTED_TYPES})",
                        path.display(),
                        printable(&t.name),
                        scan::ggml_type_name(t.type_id),
                        t.type_id
                    )));
                };
                // candle reads the header with a placeholder in the type's place: Q8_1, which
                // wick refuses to load, so nothing can read these bytes as that type.
                let header = patched.get_or_insert_with(|| bytes[..*header_len].to_vec());
                header[t.type_pos..t.type_pos + 4].copy_from_slice(&PLACEHOLDER_ID.to_le_bytes());
                extra_types.insert(t.name.clone(), ty);
            }
        }
        let header = patched.as_deref().unwrap_or(&bytes[..]);
        let content = Content::read(&mut Cursor::new(header))
            .map_err(|e| bad(describe_candle_error(&e, bytes.len())))?;
        let gguf = GgufFile {
            path,
            bytes,
            content,
            extra_types,
        };
        gguf.check_extents()?;
        Ok(gguf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// candle's parsed header, for what the helpers here do not cover.
    pub fn content(&self) -> &Content {
        &self.content
    }

    fn check_extents(&self) -> Result<()> {
        let file_len = self.bytes.len() as u64;
        for (name, info) in &self.content.tensor_infos {
            let size = byte_size(info, self.stored_type_of(name, info)).map_err(|message| {
                Error::BadGguf {
                    path: self.path.clone(),
                    message: format!("tensor `{}`: {message}", printable(name)),
                }
            })?;
            let end = self
                .content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(size as u64);
            if end > file_len {
                return Err(Error::BadGguf {
                    path: self.path.clone(),
                    message: format!(
                        "file is truncated: tensor `{}` ends at byte {end}, the file has \
                         {file_len}",
                        printable(name)
                    ),
                });
            }
        }
        Ok(())
    }

    // ---- metadata ----

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    fn bad_key(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::bad_config(&self.path, format!("metadata `{key}`: {message}"))
    }

    pub fn value(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.bad_key(key, "missing"))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.bad_key(key, format!("expected a string, found {other:?}"))),
        }
    }

    /// Any integer type that fits (files differ in which one they use for counts and ids).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let value = self.value(key)?;
        as_u64(value).ok_or_else(|| {
            self.bad_key(
                key,
                format!("expected a non-negative integer, found {}", short(value)),
            )
        })
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.get_u64(key)?;
        u32::try_from(v).map_err(|_| self.bad_key(key, format!("{v} does not fit in u32")))
    }

    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.get_u64(key)?;
        usize::try_from(v).map_err(|_| self.bad_key(key, format!("{v} does not fit in usize")))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.value(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => Err(self.bad_key(key, format!("expected a float, found {}", short(other)))),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            Value::Bool(v) => Ok(*v),
            other => Err(self.bad_key(key, format!("expected a bool, found {}", short(other)))),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.value(key)? {
            Value::Array(v) => Ok(v),
            other => Err(self.bad_key(key, format!("expected an array, found {}", short(other)))),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.bad_key(key, format!("element {i} is {}", short(other)))),
            })
            .collect()
    }

    /// An array of integers of any width (token types are i32, ids may be u32).
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        self.get_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                as_i64(v).ok_or_else(|| self.bad_key(key, format!("element {i} is {}", short(v))))
            })
            .collect()
    }

    /// `Ok(None)` when `key` is absent; an error when present with the wrong type.
    pub fn opt<'a, T>(
        &'a self,
        key: &str,
        get: impl Fn(&'a Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.has(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// `tokenizer.chat_template`, when the file has one.
    pub fn chat_template(&self) -> Result<Option<&str>> {
        self.opt("tokenizer.chat_template", Self::get_str)
    }

    // ---- tensors (llama.cpp names, stored layout) ----

    /// Tensor names as stored (llama.cpp names), sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// Type, torch-order shape and offset of a tensor by its llama.cpp name.
    pub fn tensor_info(&self, gguf_name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(gguf_name)
    }

    fn stored_type_of(&self, gguf_name: &str, info: &TensorInfo) -> StoredType {
        match self.extra_types.get(gguf_name) {
            Some(ty) => *ty,
            None => StoredType::Ggml(info.ggml_dtype),
        }
    }

    /// The type a tensor is stored in (llama.cpp name).
    pub fn stored_type(&self, gguf_name: &str) -> Option<StoredType> {
        let info = self.tensor_info(gguf_name)?;
        Some(self.stored_type_of(gguf_name, info))
    }

    /// The stored bytes of a tensor whose type wick can read (checked first).
    pub(crate) fn raw_bytes(&self, gguf_name: &str) -> Result<(&TensorInfo, StoredType, &[u8])> {
        let info = self
            .tensor_info(gguf_name)
            .ok_or_else(|| Error::MissingTensor {
                name: gguf_name.to_string(),
                location: self.path.display().to_string(),
            })?;
        let ty = self.stored_type_of(gguf_name, info);
        if !is_supported(ty) {
            return Err(Error::Unsupported(format!(
                "{}: tensor `{}` has ggml type {}, which wick cannot read \
                 (supported: {SUPPORTED_TYPES})",
                self.path.display(),
                printable(gguf_name),
                ty.name()
            )));
        }
        // Sizes and bounds were checked at open.
        let size = byte_size(info, ty).map_err(|message| Error::BadGguf {
            path: self.path.clone(),
            message: format!("tensor `{}`: {message}", printable(gguf_name)),
        })?;
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        Ok((info, ty, &self.bytes[start..start + size]))
    }

    /// A tensor ready for candle's quantized ops (llama.cpp name, stored layout) on `device`:
    /// in its stored type, or for IQ4_NL / IQ4_XS transcoded to Q8_0 (see `quant`).
    pub fn qtensor(&self, gguf_name: &str, device: &Device) -> Result<QTensor> {
        let (info, ty, bytes) = self.raw_bytes(gguf_name)?;
        self.qtensor_from_bytes(gguf_name, info, ty, bytes, device)
    }

    /// A tensor's values in f32 (llama.cpp name, stored layout), dequantized exactly as ggml
    /// does.
    pub fn dequantized(&self, gguf_name: &str, device: &Device) -> Result<candle_core::Tensor> {
        let (info, ty, bytes) = self.raw_bytes(gguf_name)?;
        match quant::dequantize(ty, bytes) {
            Some(values) => Ok(candle_core::Tensor::from_vec(
                values,
                info.shape.dims(),
                device,
            )?),
            None => Ok(self
                .qtensor_from_bytes(gguf_name, info, ty, bytes, device)?
                .dequantize(device)?),
        }
    }

    pub(crate) fn qtensor_from_bytes(
        &self,
        gguf_name: &str,
        info: &TensorInfo,
        ty: StoredType,
        bytes: &[u8],
        device: &Device,
    ) -> Result<QTensor> {
        let (dtype, transcoded) = match quant::to_q8_0(ty, bytes) {
            Some(q8) => (GgmlDType::Q8_0, Some(q8)),
            None => (info.ggml_dtype, None),
        };
        let bytes = transcoded.as_deref().unwrap_or(bytes);
        // candle reinterprets the bytes as blocks of f16/f32 fields: hand it an 8-aligned slice.
        // A plain copy is not enough: an empty Vec's dangling pointer is only 1-aligned.
        let owned;
        let bytes = if (bytes.as_ptr() as usize).is_multiple_of(8) {
            bytes
        } else {
            owned = aligned_copy(bytes);
            owned.slice_or(|| Error::BadGguf {
                path: self.path.clone(),
                message: format!("tensor `{}`: cannot align its bytes", printable(gguf_name)),
            })?
        };
        qtensor_from_ggml(dtype, bytes, info.shape.dims().to_vec(), device).map_err(|e| {
            Error::BadGguf {
                path: self.path.clone(),
                message: format!("tensor `{}`: {e}", printable(gguf_name)),
            }
        })
    }
}

/// A copy of `bytes` that starts at an 8-aligned address, with the buffer holding it (see
/// `qtensor_from_bytes`): the copy lives at the first aligned address of a buffer 8 bytes longer.
struct AlignedCopy {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
}

fn aligned_copy(bytes: &[u8]) -> AlignedCopy {
    let mut buffer = vec![0u8; bytes.len() + 8];
    let start = buffer.as_ptr().align_offset(8);
    if let Some(dst) = buffer.get_mut(start..start + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
    AlignedCopy {
        buffer,
        start,
        len: bytes.len(),
    }
}

impl AlignedCopy {
    /// The copy; None only if no aligned start was found (never on real allocators).
    fn slice_or<E>(&self, err: impl FnOnce() -> E) -> std::result::Result<&[u8], E> {
        self.buffer
            .get(self.start..self.start + self.len)
            .filter(|s| (s.as_ptr() as usize).is_multiple_of(8))
            .ok_or_else(err)
    }
}

/// The ggml types wick reads: candle's, and IQ4_NL / IQ4_XS through `quant`.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS";

/// What candle reads an IQ4 tensor's header entry as (Q8_1, refused by `is_supported`).
const PLACEHOLDER_ID: u32 = 9;

fn is_supported(ty: StoredType) -> bool {
    !matches!(ty, StoredType::Ggml(GgmlDType::Q8_1 | GgmlDType::Q8K))
}

/// The stored size of a tensor, or why its shape cannot be stored (the dims come from the
/// file: their product may overflow, or not fill whole quantization blocks).
fn byte_size(info: &TensorInfo, ty: StoredType) -> std::result::Result<usize, String> {
    let dims = info.shape.dims();
    let too_big = || format!("shape {dims:?} is too large");
    let elems = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(too_big)?;
    let block = ty.block_size();
    if !elems.is_multiple_of(block) {
        return Err(format!(
            "{elems} elements are not whole {} blocks of {block}",
            ty.name()
        ));
    }
    (elems / block)
        .checked_mul(ty.type_size())
        .ok_or_else(too_big)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U64(x) => Some(*x),
        other => as_i64(other).and_then(|x| u64::try_from(x).ok()),
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::I64(x) => *x,
        Value::U64(x) => i64::try_from(*x).ok()?,
        _ => return None,
    })
}

/// A value for an error message, without dumping a 50k-element array.
fn short(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {} values", a.len()),
        Value::String(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        other => format!("{other:?}"),
    }
}

fn describe_candle_error(e: &candle_core::Error, file_len: usize) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    if first.contains("failed to fill whole buffer") || first.contains("remaining") {
        format!("file is truncated ({file_len} bytes; the header needs more): {first}")
    } else {
        first.to_string()
    }
}
