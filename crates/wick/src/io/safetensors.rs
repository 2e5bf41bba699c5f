//! Memory-mapped safetensors weights (single file or sharded with an index), with dtype
//! conversion on load and errors that name the file and tensor.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Shape, Tensor};
use safetensors::tensor::{Dtype as StDtype, Metadata, TensorInfo};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::error::{printable, Error, Result};
use crate::io::file_bytes::FileBytes;
use crate::io::json::read_json;
use crate::io::weights::WeightSource;
use crate::io::ModelFiles;

struct MappedFile {
    path: PathBuf,
    bytes: FileBytes,
    /// Byte offset where tensor data starts (8-byte length + JSON header).
    data_start: usize,
    metadata: Metadata,
}

/// All tensors of a model, possibly spread over several files.
pub struct SafetensorsWeights {
    files: Vec<MappedFile>,
    /// tensor name -> index into `files`
    owner: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl SafetensorsWeights {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open_model(files: &ModelFiles) -> Result<Self> {
        if let Some(index_path) = files.get("model.safetensors.index.json")? {
            let index: ShardIndex = read_json(&index_path)?;
            let mut shard_names: Vec<&String> = index.weight_map.values().collect();
            shard_names.sort();
            shard_names.dedup();
            let paths = shard_names
                .into_iter()
                .map(|name| files.require(name))
                .collect::<Result<Vec<_>>>()?;
            return Self::open(&paths);
        }
        Self::open(&[files.require("model.safetensors")?])
    }

    /// Maps the given files. Each is validated (header, offsets, total length) up front, so a
    /// truncated download fails here rather than when a tensor is read.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|path| MappedFile::parse(path.clone(), FileBytes::map(path)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_files(files))
    }

    /// One safetensors file held in memory, validated as `open` validates a file; `name` is
    /// what error messages call it.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        let file = MappedFile::parse(name.into(), FileBytes::Owned(bytes))?;
        Ok(Self::from_files(vec![file]))
    }

    fn from_files(files: Vec<MappedFile>) -> Self {
        let mut owner = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.metadata.tensors().keys() {
                owner.insert(name.clone(), i);
            }
        }
        SafetensorsWeights { files, owner }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.owner.keys().map(String::as_str)
    }

    /// The stored shape of `name`, if the files have it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        let file = &self.files[*self.owner.get(name)?];
        file.metadata.info(name).map(|info| info.shape.as_slice())
    }

    fn location(&self) -> String {
        match self.files.as_slice() {
            [one] => one.path.display().to_string(),
            many => format!("{} safetensors shards", many.len()),
        }
    }

    /// Loads `name`, checks its shape, converts to `dtype` and moves it to `device`.
    pub fn load(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(&i) = self.owner.get(name) else {
            return Err(Error::MissingTensor {
                name: name.to_string(),
                location: self.location(),
            });
        };
        let file = &self.files[i];
        let info = file
            .metadata
            .info(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                location: file.path.display().to_string(),
            })?;
        if info.shape != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                location: file.path.display().to_string(),
                expected: shape.to_vec(),
                actual: info.shape.clone(),
            });
        }
        let tensor = self.raw_tensor(file, name, info)?;
        Ok(tensor.to_dtype(dtype)?.to_device(device)?)
    }

    fn raw_tensor(&self, file: &MappedFile, name: &str, info: &TensorInfo) -> Result<Tensor> {
        let (start, end) = info.data_offsets;
        let bytes = &file.bytes[file.data_start + start..file.data_start + end];
        let dtype = match info.dtype {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::F64 => DType::F64,
            StDtype::I64 => DType::I64,
            StDtype::U32 => DType::U32,
            StDtype::U8 => DType::U8,
            other => {
                return Err(Error::BadSafetensors {
                    path: file.path.clone(),
                    message: format!(
                        "tensor `{}` has unsupported dtype {other:?}",
                        printable(name)
                    ),
                })
            }
        };
        Ok(Tensor::from_raw_buffer(
            bytes,
            dtype,
            &Shape::from(info.shape.clone()).into_dims(),
            &Device::Cpu,
        )?)
    }
}

impl MappedFile {
    fn parse(path: PathBuf, bytes: FileBytes) -> Result<Self> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| Error::BadSafetensors {
                message: describe_error(&e, bytes.len()),
                path: path.clone(),
            })?;
        Ok(MappedFile {
            path,
            bytes,
            data_start: 8 + header_len,
            metadata,
        })
    }
}

fn describe_error(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => {
            format!("file is truncated or padded ({file_len} bytes do not match its header)")
        }
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            format!("file is truncated or not safetensors ({file_len} bytes, header incomplete)")
        }
        other => printable(&other.to_string()).into_owned(),
    }
}

impl WeightSource for SafetensorsWeights {
    fn contains(&self, name: &str) -> bool {
        SafetensorsWeights::contains(self, name)
    }

    fn tensor(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.load(name, shape, dtype, device)
    }
}
