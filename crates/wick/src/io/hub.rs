//! Hugging Face hub downloads into the cache layout of huggingface_hub, so files fetched by either
//! tool are reused by the other. Under the cache root, `models--{org}--{name}/` holds
//! `blobs/{etag}` (the bytes), `snapshots/{commit}/{filename}` (a relative symlink to the blob),
//! `refs/{revision}` (the commit a branch or tag pointed at) and `.no_exist/{commit}/{filename}`
//! (markers for files the repo does not have, so offline mode can answer "absent").

use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::{http::Response, Body};

use crate::error::{Error, Result};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const MAX_REDIRECTS: usize = 10;
const CHUNK: usize = 1 << 20;

/// Where the hub is and how to use it. `from_env` reads the variables huggingface_hub reads.
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL without a trailing slash, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Cache root (the folder holding `models--*`).
    pub cache_dir: PathBuf,
    /// Sent as `Authorization: Bearer` to the endpoint only, never to redirect targets.
    pub token: Option<String>,
    /// Never touch the network; answer from the cache or fail.
    pub offline: bool,
}

impl std::fmt::Debug for HubConfig {
    // Hand-written so the token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubConfig {
    /// Online, anonymous access to `endpoint` with `cache_dir` as the cache root.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
        }
    }

    /// Reads HF_ENDPOINT, HF_HUB_CACHE, HF_HOME, HF_TOKEN (else the token file written by
    /// `hf auth login`) and HF_HUB_OFFLINE from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like `from_env` with variables read through `var`, so callers can test it without
    /// mutating the process environment.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home = var("HOME")
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .unwrap_or_else(std::env::temp_dir);
        let expand = |v: String| match v.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None if v == "~" => home.clone(),
            None => PathBuf::from(v),
        };
        let hf_home = var("HF_HOME")
            .map(&expand)
            .unwrap_or_else(|| home.join(".cache").join("huggingface"));
        let cache_dir = var("HF_HUB_CACHE")
            .map(&expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(&expand)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let truthy = ["1", "true", "yes", "on"];
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|v| truthy.contains(&v.trim().to_ascii_lowercase().as_str()));
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        HubConfig {
            token,
            offline,
            ..HubConfig::new(endpoint, cache_dir)
        }
    }
}

/// A model repository on a hub, `org/name` at a revision (branch, tag or commit).
#[derive(Debug, Clone)]
pub struct HubRepo {
    pub repo_id: String,
    pub revision: String,
}

impl HubRepo {
    /// Parses `org/name[@revision]`; returns None when `spec` does not look like a hub id.
    pub fn parse(spec: &str) -> Option<HubRepo> {
        let (id, rev) = match spec.split_once('@') {
            Some((id, rev)) => (id, rev.to_string()),
            None => (spec, "main".to_string()),
        };
        let mut parts = id.split('/');
        let (org, name) = (parts.next()?, parts.next()?);
        if parts.next().is_some() || org.is_empty() || name.is_empty() || rev.is_empty() {
            return None;
        }
        Some(HubRepo {
            repo_id: id.to_string(),
            revision: rev,
        })
    }

    /// Local path of `filename` (downloading it if needed); Ok(None) when the repo has no such file.
    /// Configured from the environment (see [`HubConfig::from_env`]).
    pub fn get(&self, filename: &str) -> Result<Option<PathBuf>> {
        self.get_with(&HubConfig::from_env(), filename)
    }

    /// `get` with an explicit configuration.
    pub fn get_with(&self, cfg: &HubConfig, filename: &str) -> Result<Option<PathBuf>> {
        if !is_relative_path(filename) {
            return Err(self.error(format!("invalid file name `{filename}`")));
        }
        if !is_relative_path(&self.revision) {
            return Err(self.error(format!("invalid revision `{}`", self.revision)));
        }
        let dir = self.cache_folder(cfg);
        // A revision that is already a commit needs no ref; a branch or tag uses the cached ref.
        let commit = if is_hex(&self.revision, 40) {
            Some(self.revision.clone())
        } else {
            fs::read_to_string(dir.join("refs").join(&self.revision))
                .ok()
                .map(|c| c.trim().to_string())
                .filter(|c| is_safe_name(c))
        };
        if let Some(commit) = &commit {
            let snap = dir.join("snapshots").join(commit).join(filename);
            if snap.is_file() {
                return Ok(Some(snap));
            }
            if cfg.offline && dir.join(".no_exist").join(commit).join(filename).is_file() {
                return Ok(None);
            }
        }
        if cfg.offline {
            return Err(self.error(format!(
                "{filename} is not in the cache ({}) and HF_HUB_OFFLINE=1 forbids downloading",
                cfg.cache_dir.display()
            )));
        }
        self.download(cfg, &dir, filename)
    }

    /// This repo's folder in the cache: `{cache}/models--{org}--{name}`.
    pub fn cache_folder(&self, cfg: &HubConfig) -> PathBuf {
        cfg.cache_dir
            .join(format!("models--{}", self.repo_id.replace('/', "--")))
    }

    fn error(&self, message: String) -> Error {
        let repo = match self.revision.as_str() {
            "main" => self.repo_id.clone(),
            rev => format!("{}@{rev}", self.repo_id),
        };
        Error::Hub { repo, message }
    }

    fn download(&self, cfg: &HubConfig, dir: &Path, filename: &str) -> Result<Option<PathBuf>> {
        let (rev, file) = (
            percent_encode(&self.revision, false),
            percent_encode(filename, true),
        );
        let url = format!("{}/{}/resolve/{rev}/{file}", cfg.endpoint, self.repo_id);
        let (response, commit, etag) = match self.open(cfg, &url, filename)? {
            Fetched::File(response, commit, etag) => (response, commit, etag),
            Fetched::Missing(commit) => {
                // Remember the absence so offline mode can answer it later.
                if let Some(commit) = commit {
                    write_file(&dir.join(".no_exist").join(&commit).join(filename), "")?;
                    self.write_ref(dir, &commit)?;
                }
                return Ok(None);
            }
        };
        let blob = dir.join("blobs").join(&etag);
        // Another revision may already have fetched these bytes.
        if !blob.is_file() {
            fetch_body(response, &blob, &etag, &url)?;
        }
        let snap = dir.join("snapshots").join(&commit).join(filename);
        link_snapshot(&blob, &snap, &etag, filename)?;
        self.write_ref(dir, &commit)?;
        Ok(Some(snap))
    }

    /// Records which commit a branch or tag resolved to (a commit revision needs no ref).
    fn write_ref(&self, dir: &Path, commit: &str) -> Result<()> {
        let path = dir.join("refs").join(&self.revision);
        if self.revision == commit || fs::read_to_string(&path).is_ok_and(|c| c.trim() == commit) {
            return Ok(());
        }
        write_file(&path, commit)
    }

    /// GETs `url`, following redirects by hand: an LFS file redirects to a CDN whose headers
    /// describe the CDN object, so the commit and etag must come from the hub's own response.
    fn open(&self, cfg: &HubConfig, url: &str, filename: &str) -> Result<Fetched> {
        let fail = |message: String| download_error(url, message);
        let mut current = url.to_string();
        let (mut commit, mut etag) = (None::<String>, None::<String>);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = agent().get(&current);
            if let Some(token) = cfg
                .token
                .as_ref()
                .filter(|_| same_origin(&current, &cfg.endpoint))
            {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let offline_hint = "(HF_HUB_OFFLINE=1 uses cached files only)";
            let response = request
                .call()
                .map_err(|e| fail(format!("{e} {offline_hint}")))?;
            let head = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
            if let (None, Some(c)) = (&commit, head("x-repo-commit")) {
                if !is_safe_name(c) {
                    return Err(fail(format!("invalid X-Repo-Commit header `{c}`")));
                }
                commit = Some(c.to_string());
                etag = head("x-linked-etag")
                    .or_else(|| head("etag"))
                    .map(normalize_etag);
            }
            let status = response.status().as_u16();
            let code = head("x-error-code").unwrap_or("");
            let why = head("x-error-message").or(Some(code).filter(|c| !c.is_empty()));
            let why = why.map(|m| format!(" ({m})")).unwrap_or_default();
            match status {
                200..=299 => {
                    let not_hub = "is the endpoint a Hugging Face hub?";
                    let commit =
                        commit.ok_or_else(|| fail(format!("no X-Repo-Commit; {not_hub}")))?;
                    let etag = etag.filter(|e| is_safe_name(e));
                    let etag = etag.ok_or_else(|| fail(format!("no usable ETag; {not_hub}")))?;
                    return Ok(Fetched::File(response, commit, etag));
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = head("location").unwrap_or("");
                    current = resolve_location(&current, location).ok_or_else(|| {
                        fail(format!("HTTP {status} to bad Location `{location}`"))
                    })?;
                }
                404 if code == "RepoNotFound" => {
                    return Err(self.error(format!("repository not found on {}", cfg.endpoint)));
                }
                404 if code == "RevisionNotFound" => {
                    return Err(self.error(format!("revision `{}` not found", self.revision)));
                }
                404 => return Ok(Fetched::Missing(commit)),
                401 | 403 => {
                    let hint = match cfg.token {
                        Some(_) => "the token in HF_TOKEN does not grant access",
                        None => "if it is private or gated, set HF_TOKEN to a token with access",
                    };
                    return Err(self.error(format!(
                        "cannot download {filename}: HTTP {status}{why}; the repository may not \
                         exist, or {hint}"
                    )));
                }
                _ => return Err(fail(format!("HTTP {status}{why}"))),
            }
        }
        Err(fail(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// What the hub answered: the file (response, commit, etag) or no such file (with the commit
/// when the hub named one).
enum Fetched {
    File(Response<Body>, String, String),
    Missing(Option<String>),
}

/// Streams the body into `{blob}.incomplete`, checks its length (and sha256 when the etag is
/// one), then renames it into place, so a blob that exists is always complete.
fn fetch_body(response: Response<Body>, blob: &Path, etag: &str, url: &str) -> Result<()> {
    let fail = |message: String| download_error(url, message);
    let head = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    // A decoded body's length differs from Content-Length; we ask for identity, so this is rare.
    let encoded = head("content-encoding").is_some_and(|v| v != "identity");
    let expected = head("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let expected = expected.filter(|_| !encoded);
    create_parent(blob)?;
    let tmp = blob.with_file_name(format!("{etag}.incomplete"));
    let guard = RemoveOnDrop(tmp.clone());
    let mut out = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut reader = response.into_body().into_reader();
    let mut hasher = is_hex(etag, 64).then(Sha256::new);
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let truncated = |got: u64, exp: u64| format!("truncated: got {got} of {exp} bytes");
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(fail(match expected {
                    Some(exp) if got < exp => format!("{} ({e})", truncated(got, exp)),
                    _ => format!("reading the body failed after {got} bytes: {e}"),
                }))
            }
        };
        out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        got += n as u64;
    }
    // ureq stops at Content-Length, so a mismatch can only be a short body.
    if let Some(exp) = expected.filter(|&exp| exp != got) {
        return Err(fail(truncated(got, exp)));
    }
    if let Some(h) = hasher {
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if digest != etag {
            return Err(fail(format!(
                "sha256 mismatch: got {digest}, expected {etag}"
            )));
        }
    }
    out.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(out);
    fs::rename(&tmp, blob).map_err(|e| Error::io(blob, e))?;
    std::mem::forget(guard);
    Ok(())
}

/// Points `snapshots/{commit}/{filename}` at the blob with a relative symlink (as huggingface_hub
/// does, so the cache can be moved), or copies the blob where symlinks are not allowed.
fn link_snapshot(blob: &Path, snap: &Path, etag: &str, filename: &str) -> Result<()> {
    create_parent(snap)?;
    if snap.symlink_metadata().is_ok() {
        fs::remove_file(snap).map_err(|e| Error::io(snap, e))?;
    }
    let ups = std::iter::repeat_n("..", filename.split('/').count() + 1);
    let target: PathBuf = ups.chain(["blobs", etag]).collect();
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(&target, snap).is_ok();
    #[cfg(windows)]
    let linked = std::os::windows::fs::symlink_file(&target, snap).is_ok();
    #[cfg(not(any(unix, windows)))]
    let linked = false;
    if !linked {
        if let Err(e) = fs::copy(blob, snap) {
            let _ = fs::remove_file(snap);
            return Err(Error::io(snap, e));
        }
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    create_parent(path)?;
    fs::write(path, contents).map_err(|e| Error::io(path, e))
}

fn download_error(url: &str, message: String) -> Error {
    let url = url.to_string();
    Error::Download { url, message }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) => fs::create_dir_all(p).map_err(|e| Error::io(p, e)),
        None => Ok(()),
    }
}

/// Deletes a partial download on every early return.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            // 404 means "no such file" and redirects carry metadata, so both are read by hand.
            .http_status_as_error(false)
            .max_redirects(0)
            // Byte counts and hashes must match the stored file, so no transfer encoding.
            .accept_encoding("identity")
            .user_agent(concat!("wick/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .new_agent()
    })
}

/// A relative path with no empty, `.` or `..` components, so it cannot leave the cache folder.
fn is_relative_path(s: &str) -> bool {
    !s.is_empty()
        && !s.contains('\\')
        && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A value from the server that is safe to use as one file name.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn normalize_etag(raw: &str) -> String {
    let weak = raw.trim().trim_start_matches("W/");
    weak.trim_matches('"').to_string()
}

fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a) == origin(b)
}

/// `scheme://host[:port]` of a URL, lowercased.
fn origin(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    let end = url[rest_at..].find('/').map_or(url.len(), |i| rest_at + i);
    url[..end].to_ascii_lowercase()
}

fn resolve_location(current: &str, location: &str) -> Option<String> {
    if location.contains("://") {
        Some(location.to_string())
    } else if location.starts_with("//") {
        Some(format!("{}:{location}", current.split("://").next()?))
    } else if location.starts_with('/') {
        Some(format!("{}{location}", origin(current)))
    } else {
        None
    }
}
