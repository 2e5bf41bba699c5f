//! Where a model's files come from: a local directory, a single local file, or a hub repo.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::hub::HubRepo;

#[derive(Debug, Clone)]
pub enum ModelFiles {
    /// A directory in Hugging Face layout (config.json, model.safetensors, ...).
    Dir(PathBuf),
    /// A single file, such as a GGUF.
    File(PathBuf),
    /// `org/name[@revision]`, fetched into the Hugging Face cache on demand.
    Hub(HubRepo),
}

impl ModelFiles {
    /// Resolves a user's `--model` argument. An existing local path always wins over a hub id.
    pub fn resolve(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelFiles::Dir(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(ModelFiles::File(path.to_path_buf()));
        }
        let looks_local = spec.starts_with('.') || spec.starts_with('/') || spec.starts_with('~');
        match HubRepo::parse(spec) {
            Some(repo) if !looks_local => Ok(ModelFiles::Hub(repo)),
            _ => Err(Error::MissingFile {
                path: path.to_path_buf(),
                hint: Some(
                    "not a local file or directory, nor a hub id `org/name[@revision]`".into(),
                ),
            }),
        }
    }

    /// Human-readable name for messages.
    pub fn describe(&self) -> String {
        match self {
            ModelFiles::Dir(p) | ModelFiles::File(p) => p.display().to_string(),
            ModelFiles::Hub(r) => format!("{}@{}", r.repo_id, r.revision),
        }
    }

    /// Path of an optional file inside the model; Ok(None) when the model has no such file.
    pub fn get(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            ModelFiles::Dir(dir) => {
                let p = dir.join(name);
                Ok(p.is_file().then_some(p))
            }
            ModelFiles::File(file) => {
                Ok((file.file_name() == Some(name.as_ref())).then(|| file.clone()))
            }
            ModelFiles::Hub(repo) => repo.get(name),
        }
    }

    /// Path of a file the model must have.
    pub fn require(&self, name: &str) -> Result<PathBuf> {
        self.get(name)?.ok_or_else(|| Error::MissingFile {
            path: match self {
                ModelFiles::Dir(dir) => dir.join(name),
                _ => PathBuf::from(format!("{}/{name}", self.describe())),
            },
            hint: None,
        })
    }
}
