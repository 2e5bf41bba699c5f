//! `checkpoint.json`: the size and SHA-256 of every file of a checkpoint, written last at save
//! time and checked at load, so a truncated or corrupted checkpoint is recognised before
//! anything is read from it (and `--resume` can fall back to an older one).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::io::npy::write_atomic;

pub const MANIFEST_FILE: &str = "checkpoint.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: u32,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    bytes: u64,
    sha256: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Every file the manifest lists has its size and hash.
    Yes,
    /// No manifest: a checkpoint written before manifests existed.
    NoManifest,
}

/// Writes the manifest of every plain file in `dir` (atomically).
pub fn write(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !path.is_file() || name == MANIFEST_FILE || name.ends_with(".tmp") {
            continue;
        }
        let (bytes, sha256) = digest(&path).map_err(|e| Error::io(&path, e))?;
        files.insert(name, FileEntry { bytes, sha256 });
    }
    let manifest = Manifest {
        format: FORMAT,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Training(e.to_string()))?;
    write_atomic(&dir.join(MANIFEST_FILE), &json)
}

/// Checks `dir` against its manifest. The error is a [`Error::BadCheckpoint`] saying which file
/// is wrong and how.
pub fn verify(dir: &Path) -> Result<Verified> {
    let bad = |message: String| Error::BadCheckpoint {
        path: dir.to_path_buf(),
        message,
    };
    let path = dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verified::NoManifest),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("{MANIFEST_FILE} does not parse: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "{MANIFEST_FILE} has format {}, this wick reads format {FORMAT}",
            manifest.format
        )));
    }
    for (name, want) in &manifest.files {
        // A manifest only ever names files of its own folder.
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(bad(format!(
                "{MANIFEST_FILE} lists {name:?}, not a file name"
            )));
        }
        let file = dir.join(name);
        let size = match std::fs::metadata(&file) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(format!("{name} is missing ({MANIFEST_FILE} lists it)")))
            }
            Err(e) => return Err(Error::io(&file, e)),
        };
        if size != want.bytes {
            return Err(bad(format!(
                "{name} has {size} bytes, {MANIFEST_FILE} says {}",
                want.bytes
            )));
        }
        let (_, sha256) = digest(&file).map_err(|e| Error::io(&file, e))?;
        if sha256 != want.sha256 {
            return Err(bad(format!(
                "{name} does not match its sha256 in {MANIFEST_FILE}"
            )));
        }
    }
    Ok(Verified::Yes)
}

/// Size and hex SHA-256 of a file, read in blocks.
fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((total, hex))
}
