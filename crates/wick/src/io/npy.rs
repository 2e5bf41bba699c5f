//! Writing a 2-D float32 array as a NumPy `.npy` file (format version 1.0), atomically.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `rows` row-major vectors of equal length `cols` to `path` via a temporary file and a
/// rename, so an existing file is never left half-written.
pub fn write_f32_matrix(path: &Path, rows: &[Vec<f32>], cols: usize) -> Result<()> {
    if let Some(bad) = rows.iter().position(|r| r.len() != cols) {
        return Err(Error::InvalidArgument {
            name: "rows",
            message: format!("row {bad} has {} values, expected {cols}", rows[bad].len()),
        });
    }
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        cols
    );
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');

    let mut bytes = Vec::with_capacity(10 + header.len() + rows.len() * cols * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in rows.iter().flatten() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through `path.tmp` + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
