//! Hub downloads against testkit's local hub server: cache layout, cache hits without network,
//! missing files, truncated and corrupt bodies, offline mode, tokens and LFS-style redirects.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::fs;
use std::path::{Path, PathBuf};

use testkit::hub_server::{sha256_file, Fault, HubServer, COMMIT};
use wick::io::hub::{HubConfig, HubRepo};

const BIG: usize = 3 * 1024 * 1024;

struct Fixture {
    served: tempfile::TempDir,
    cache: tempfile::TempDir,
    server: HubServer,
}

impl Fixture {
    fn new() -> Fixture {
        let served = tempfile::tempdir().unwrap();
        let put = |name: &str, bytes: &[u8]| {
            let path = served.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        };
        put("config.json", br#"{"model_type":"llama"}"#);
        put("big.bin", &pseudo_random(BIG));
        put("sub/nested file.txt", b"nested");
        let server = HubServer::start(served.path()).unwrap();
        let cache = tempfile::tempdir().unwrap();
        Fixture {
            served,
            cache,
            server,
        }
    }

    fn online(&self) -> HubConfig {
        HubConfig::new(self.server.endpoint(), self.cache.path())
    }

    fn offline(&self) -> HubConfig {
        let online = self.online();
        HubConfig {
            offline: true,
            ..online
        }
    }

    fn with_token(&self, token: &str) -> HubConfig {
        let online = self.online();
        HubConfig {
            token: Some(token.to_string()),
            ..online
        }
    }

    fn repo_dir(&self) -> PathBuf {
        self.cache.path().join("models--org--name")
    }

    fn sha256_of_served(&self, name: &str) -> String {
        sha256_file(&self.served.path().join(name)).unwrap()
    }
}

/// `spec`'s `file` under `cfg`, which must succeed.
fn get(cfg: &HubConfig, spec: &str, file: &str) -> Option<PathBuf> {
    HubRepo::parse(spec).unwrap().get_with(cfg, file).unwrap()
}

/// The error message of fetching `spec`'s `file` under `cfg`, which must fail.
fn get_err(cfg: &HubConfig, spec: &str, file: &str) -> String {
    let result = HubRepo::parse(spec).unwrap().get_with(cfg, file);
    result.unwrap_err().to_string()
}

/// xorshift bytes: incompressible enough that streaming and hashing see real data.
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    (0..n).map(|_| next()).collect()
}

/// Every file (or link) under `dir`, relative and sorted; empty when `dir` does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten() {
            let p = entry.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn download_writes_hf_cache_layout() {
    let fx = Fixture::new();
    let path = get(&fx.online(), "org/name", "big.bin").unwrap();

    let (dir, etag) = (fx.repo_dir(), fx.sha256_of_served("big.bin"));
    assert_eq!(path, dir.join("snapshots").join(COMMIT).join("big.bin"));
    assert_eq!(fs::read(&path).unwrap(), pseudo_random(BIG));
    assert_eq!(fs::read(dir.join("blobs").join(&etag)).unwrap().len(), BIG);
    assert_eq!(fs::read_to_string(dir.join("refs/main")).unwrap(), COMMIT);
    #[cfg(unix)]
    assert_eq!(
        fs::read_link(&path).unwrap(),
        Path::new("../../blobs").join(&etag)
    );
    assert!(!files_under(&dir).iter().any(|f| f.ends_with(".incomplete")));

    // A nested name with a space: URL-encoded on the wire, deeper relative link on disk.
    let nested = get(&fx.online(), "org/name", "sub/nested file.txt").unwrap();
    assert_eq!(fs::read(&nested).unwrap(), b"nested");
    #[cfg(unix)]
    assert!(fs::read_link(&nested)
        .unwrap()
        .starts_with("../../../blobs"));
}

#[test]
fn second_get_is_served_from_cache() {
    let fx = Fixture::new();
    let first = get(&fx.online(), "org/name", "config.json");
    assert_eq!(fx.server.requests(), 1);
    let second = get(&fx.online(), "org/name", "config.json");
    assert_eq!(first, second);
    assert_eq!(
        fx.server.requests(),
        1,
        "a cache hit must not touch the network"
    );

    // Pinning the commit finds the same snapshot without a ref or a request.
    let pinned = get(&fx.online(), &format!("org/name@{COMMIT}"), "config.json");
    assert_eq!(pinned, first);
    assert_eq!(fx.server.requests(), 1);
}

#[test]
fn missing_file_is_none() {
    let fx = Fixture::new();
    assert_eq!(get(&fx.online(), "org/name", "tokenizer.json"), None);
    // The absence is remembered, so offline mode can answer it too.
    let marker = fx
        .repo_dir()
        .join(".no_exist")
        .join(COMMIT)
        .join("tokenizer.json");
    assert!(marker.is_file());
    assert_eq!(get(&fx.offline(), "org/name", "tokenizer.json"), None);
    assert_eq!(fx.server.requests(), 1);
}

#[test]
fn truncated_body_is_an_error_and_leaves_no_file() {
    let fx = Fixture::new();
    fx.server.set_fault("big.bin", Fault::Truncate);
    let err = get_err(&fx.online(), "org/name", "big.bin");
    assert!(err.contains("truncated"), "{err}");
    assert!(
        err.contains(&format!("got {} of {BIG} bytes", BIG / 2)),
        "{err}"
    );
    assert_eq!(
        files_under(&fx.repo_dir().join("blobs")),
        Vec::<String>::new()
    );
    assert_eq!(
        files_under(&fx.repo_dir().join("snapshots")),
        Vec::<String>::new()
    );
}

#[test]
fn corrupt_body_fails_the_sha256_check() {
    let fx = Fixture::new();
    fx.server.set_fault("big.bin", Fault::Corrupt);
    let err = get_err(&fx.online(), "org/name", "big.bin");
    assert!(err.contains("sha256 mismatch"), "{err}");
    assert_eq!(
        files_under(&fx.repo_dir().join("blobs")),
        Vec::<String>::new()
    );
}

#[test]
fn lfs_redirect_uses_the_hub_metadata() {
    let fx = Fixture::new();
    fx.server.set_fault("big.bin", Fault::LfsRedirect);
    let path = get(&fx.online(), "org/name", "big.bin").unwrap();
    assert_eq!(fs::read(&path).unwrap(), pseudo_random(BIG));
    // The blob is named by X-Linked-Etag, not by the CDN's own ETag.
    let etag = fx.sha256_of_served("big.bin");
    assert!(fx.repo_dir().join("blobs").join(etag).is_file());
    assert_eq!(fx.server.requests(), 2);
}

#[test]
fn offline_with_empty_cache_errors_clearly() {
    let fx = Fixture::new();
    let err = get_err(&fx.offline(), "org/name", "config.json");
    assert!(err.contains("model `org/name`"), "{err}");
    assert!(err.contains("config.json is not in the cache"), "{err}");
    assert!(
        err.contains(&fx.cache.path().display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("HF_HUB_OFFLINE=1 forbids downloading"),
        "{err}"
    );
    // Nothing cached means absence is unknown too: the same error, not None.
    let err = get_err(&fx.offline(), "org/name", "tokenizer.json");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert_eq!(fx.server.requests(), 0);
}

#[test]
fn offline_after_download_uses_cache() {
    let fx = Fixture::new();
    let online = get(&fx.online(), "org/name", "config.json");
    assert_eq!(get(&fx.offline(), "org/name", "config.json"), online);
    // A file never fetched is still an error offline.
    let err = get_err(&fx.offline(), "org/name", "big.bin");
    assert!(err.contains("big.bin is not in the cache"), "{err}");
    assert_eq!(fx.server.requests(), 1);
}

#[test]
fn token_is_sent_and_required() {
    let fx = Fixture::new();
    fx.server.require_token("hf_secret");

    let err = get_err(&fx.online(), "org/name", "config.json");
    assert!(err.contains("401") && err.contains("HF_TOKEN"), "{err}");

    let wrong = fx.with_token("hf_wrong");
    let err = get_err(&wrong, "org/name", "config.json");
    assert!(
        err.contains("HF_TOKEN") && !err.contains("hf_wrong"),
        "{err}"
    );
    assert!(
        !format!("{wrong:?}").contains("hf_wrong"),
        "Debug must redact the token"
    );

    let path = get(&fx.with_token("hf_secret"), "org/name", "config.json").unwrap();
    assert!(path.is_file());
    let auth = fx.server.authorizations();
    assert_eq!(auth[0], None);
    assert_eq!(auth[2].as_deref(), Some("Bearer hf_secret"));
}

#[test]
fn revision_spec_parses_and_gets_its_own_ref() {
    let r = HubRepo::parse("org/name@v1").unwrap();
    assert_eq!(
        (r.repo_id.as_str(), r.revision.as_str()),
        ("org/name", "v1")
    );
    assert_eq!(HubRepo::parse("org/name").unwrap().revision, "main");
    for bad in ["org", "org/", "/name", "org/name@", "a/b/c"] {
        assert!(HubRepo::parse(bad).is_none(), "{bad}");
    }

    let fx = Fixture::new();
    let path = get(&fx.online(), "org/name@v1", "config.json").unwrap();
    let dir = fx.repo_dir();
    assert_eq!(path, dir.join("snapshots").join(COMMIT).join("config.json"));
    assert_eq!(fs::read_to_string(dir.join("refs/v1")).unwrap(), COMMIT);
    assert!(!dir.join("refs/main").exists());
}

#[test]
fn paths_that_escape_the_cache_are_rejected() {
    let fx = Fixture::new();
    for name in ["../x", "/etc/passwd", "a//b", "a\\b", ""] {
        let err = get_err(&fx.online(), "org/name", name);
        assert!(err.contains("invalid file name"), "{err}");
    }
    let err = get_err(&fx.online(), "org/name@../../x", "config.json");
    assert!(err.contains("invalid revision"), "{err}");
    assert_eq!(fx.server.requests(), 0);
}

#[test]
fn config_from_lookup_matches_huggingface_hub() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
    };
    let cfg = HubConfig::from_lookup(env(&[("HOME", "/h"), ("HF_TOKEN_PATH", "/nonexistent")]));
    assert_eq!(cfg.endpoint, "https://huggingface.co");
    assert_eq!(cfg.cache_dir, Path::new("/h/.cache/huggingface/hub"));
    assert!(cfg.token.is_none() && !cfg.offline);

    let cfg = HubConfig::from_lookup(env(&[
        ("HOME", "/h"),
        ("HF_HOME", "/hf"),
        ("HF_ENDPOINT", "http://mirror/"),
        ("HF_TOKEN", "tok"),
        ("HF_HUB_OFFLINE", "True"),
    ]));
    assert_eq!(cfg.cache_dir, Path::new("/hf/hub"));
    assert_eq!(cfg.endpoint, "http://mirror");
    assert_eq!(cfg.token.as_deref(), Some("tok"));
    assert!(cfg.offline);

    let cfg = HubConfig::from_lookup(env(&[
        ("HOME", "/h"),
        ("HF_HUB_CACHE", "~/c"),
        ("HF_HUB_OFFLINE", "0"),
        ("HF_TOKEN_PATH", "/nonexistent"),
    ]));
    assert_eq!(cfg.cache_dir, Path::new("/h/c"));
    assert!(!cfg.offline);
}

#[test]
fn token_file_from_hf_login_is_used() {
    let hf_home = tempfile::tempdir().unwrap();
    fs::write(hf_home.path().join("token"), "hf_from_file\n").unwrap();
    let home = hf_home.path().display().to_string();
    let cfg = HubConfig::from_lookup(|k| (k == "HF_HOME").then(|| home.clone()));
    assert_eq!(cfg.token.as_deref(), Some("hf_from_file"));
    assert_eq!(cfg.cache_dir, hf_home.path().join("hub"));
}
