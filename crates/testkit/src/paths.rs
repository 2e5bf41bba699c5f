//! Locations of fetched models and committed fixtures, relative to the workspace root.

use std::path::PathBuf;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .expect("testkit lives at <root>/crates/testkit")
        .to_path_buf()
}

/// A model fetched by `scripts/fetch-models.sh`. Panics with the fix when it is missing: tests on
/// real models must not silently pass without them.
pub fn real_model(name: &str) -> PathBuf {
    let dir = std::env::var_os("WICK_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("models"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh first",
        path.display()
    );
    path
}

pub fn minilm() -> PathBuf {
    real_model("all-MiniLM-L6-v2")
}

pub fn fixture(case: &str) -> PathBuf {
    workspace_root().join("fixtures").join(case)
}
