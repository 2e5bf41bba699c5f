//! Where the server may read LoRA adapters from. Only from under the `--adapters` folder: an
//! adapter name maps to its subfolder, and a request's `path` must resolve (symlinks and all)
//! inside the folder, unless `--allow-adapter-paths` lets it name any folder. The folder's own
//! entries are the operator's: a symlinked subfolder (`ln -s $PWD/runs/chat/adapter
//! runs/adapters/chat`) is trusted and so is what lies under its target, but a request path
//! that leaves through `..`, an absolute path elsewhere or a symlink further down is refused.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use wick::lora::CONFIG_FILE;

use crate::error::ApiError;
use crate::requests::ApiResult;

#[derive(Debug, Clone)]
pub struct AdapterPaths {
    /// The `--adapters` folder, resolved at start.
    root: Option<PathBuf>,
    /// `--allow-adapter-paths`: a request `path` may name any readable folder.
    allow_any: bool,
}

impl AdapterPaths {
    pub fn new(root: Option<&Path>, allow_any: bool) -> anyhow::Result<AdapterPaths> {
        let root = match root {
            Some(r) => Some(
                r.canonicalize()
                    .with_context(|| format!("the adapters folder {}", r.display()))?,
            ),
            None => None,
        };
        Ok(AdapterPaths { root, allow_any })
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// `<root>/<name>` resolved, when it holds an adapter (`name` has passed
    /// `check_adapter_name`, so it is one plain path component).
    pub fn by_name(&self, name: &str) -> Option<PathBuf> {
        let dir = self.root.as_ref()?.join(name).canonicalize().ok()?;
        dir.join(CONFIG_FILE).is_file().then_some(dir)
    }

    /// A request's `path`, resolved, if the server may read an adapter there: 403
    /// `adapter_path_not_allowed` when it lies outside, 400 when nothing is there.
    pub fn resolve(&self, path: &str) -> ApiResult<PathBuf> {
        let given = Path::new(path);
        let joined = match (&self.root, given.is_absolute()) {
            (_, true) => given.to_path_buf(),
            (Some(root), false) => root.join(given),
            (None, false) if self.allow_any => {
                return Err(ApiError::invalid(
                    "path",
                    "`path` must be absolute: the server has no --adapters folder to resolve \
                     it against",
                ))
            }
            (None, false) => return Err(not_allowed(path, false)),
        };
        let resolved = if self.allow_any {
            resolve_existing(path, &joined)?
        } else {
            let root = self.root.as_ref().ok_or_else(|| not_allowed(path, false))?;
            // Checked before touching the file system, so it cannot probe what exists outside.
            let inside = joined.strip_prefix(root).ok();
            let Some(rel) = inside.filter(|r| r.components().all(is_plain)) else {
                return Err(not_allowed(path, true));
            };
            let resolved = resolve_existing(path, &joined)?;
            if !within_root_or_its_entry(root, rel, &resolved) {
                return Err(not_allowed(path, true));
            }
            resolved
        };
        if !resolved.join(CONFIG_FILE).is_file() {
            return Err(ApiError::invalid(
                "path",
                format!("`{path}` holds no {CONFIG_FILE} (expected a PEFT LoRA adapter folder)"),
            ));
        }
        Ok(resolved)
    }
}

fn is_plain(c: Component<'_>) -> bool {
    matches!(c, Component::Normal(_))
}

fn resolve_existing(shown: &str, path: &Path) -> ApiResult<PathBuf> {
    path.canonicalize().map_err(|e| {
        ApiError::invalid("path", format!("`{shown}` cannot be read as a folder: {e}"))
    })
}

/// Inside the folder itself, or inside the target of the folder's entry that `rel` starts
/// with (the operator's symlink).
fn within_root_or_its_entry(root: &Path, rel: &Path, resolved: &Path) -> bool {
    if resolved.starts_with(root) {
        return true;
    }
    let Some(Component::Normal(first)) = rel.components().next() else {
        return false;
    };
    let entry = root.join(first);
    let is_link = entry
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink());
    is_link && entry.canonicalize().is_ok_and(|t| resolved.starts_with(t))
}

fn not_allowed(path: &str, has_root: bool) -> ApiError {
    let why = if has_root {
        format!(
            "`{path}` is outside the server's --adapters folder (paths are relative to it and \
             may not leave it)"
        )
    } else {
        "this server loads no adapters by path (it has no --adapters folder)".to_string()
    };
    ApiError::forbidden(
        Some("path"),
        "adapter_path_not_allowed",
        format!("{why}; loading adapters from elsewhere needs --allow-adapter-paths"),
    )
}
