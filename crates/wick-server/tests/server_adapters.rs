//! Where adapters may come from and what they may be called: only from under the adapters
//! folder (a symlinked subfolder the operator put there counts; a request path that escapes it
//! through `..`, an absolute path or a symlink does not), never re-pointing a loaded name
//! without `"replace": true`, names of `[A-Za-z0-9._-]{1,64}` that no model has, the same rules
//! for adapters looked up by the `model` of a chat. Real TCP, real models, real files.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};
use wick_server::{ServerConfig, ServerHandle};

const USER: &str = "Tell me about the sea.";

/// `<tmp>/adapters` is the server's folder; `<tmp>/outside` an adapter beside it.
struct Fixture {
    _server: ServerHandle,
    addr: String,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn root(&self) -> PathBuf {
        self.tmp.path().join("adapters")
    }
    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
}

fn config(adapters: &Path) -> ServerConfig {
    ServerConfig {
        model: Some(gguf().to_str().unwrap().into()),
        model_name: Some(MODEL_NAME.into()),
        embedding_model: Some(embedding_model().to_str().unwrap().into()),
        embedding_model_name: Some(EMBED_NAME.into()),
        adapters_dir: Some(adapters.to_path_buf()),
        max_tokens: 64,
        ..Default::default()
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("adapters");
        write_adapter(&root.join("at-start"), 0.0);
        write_adapter(&root.join("nested").join("second"), 1.0);
        write_adapter(&tmp.path().join("outside"), 2.0);
        let server =
            ServerHandle::start(config(&root), SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        Fixture {
            addr: server.addr.to_string(),
            _server: server,
            tmp,
        }
    })
}

fn load(f: &Fixture, body: Value) -> testkit::http::Response {
    post(&f.addr, "/v1/adapters", None, &body)
}

fn chat(f: &Fixture, model: &str) -> testkit::http::Response {
    let body = json!({
        "model": model, "messages": [{"role": "user", "content": USER}],
        "temperature": 0, "max_tokens": 24,
    });
    post(&f.addr, "/v1/chat/completions", None, &body)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
#[cfg(unix)]
fn paths_outside_the_adapters_folder_are_refused() {
    let f = fixture();
    let outside = f.outside();
    // The operator's symlink: <root>/linked -> <tmp>/runs, whose `escape` points outside.
    let runs = f.tmp.path().join("runs");
    write_adapter(&runs, 3.0);
    symlink(&outside, &runs.join("escape"));
    symlink(&runs, &f.root().join("linked"));
    let refused = [
        outside.to_str().unwrap().to_string(),
        "../outside".to_string(),
        "nested/../../outside".to_string(),
        format!("{}/../outside", f.root().display()),
        "linked/escape".to_string(),
    ];
    for path in refused {
        let r = load(f, json!({"name": "sneaky", "path": path}));
        let err = error_of(&r, 403);
        assert_eq!(err["param"], "path", "{path}: {err}");
        assert_eq!(err["code"], "adapter_path_not_allowed", "{path}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("--allow-adapter-paths"),
            "{err}"
        );
    }
    assert_eq!(error_of(&chat(f, "sneaky"), 404)["code"], "model_not_found");

    // Inside the folder: by name, by a relative path, through the operator's symlink.
    let r = load(f, json!({"name": "second-copy", "path": "nested/second"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = load(f, json!({"name": "linked"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = load(f, json!({"name": "via-link", "path": "linked"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat(f, "linked").status, 200);
    let missing = load(f, json!({"name": "nothing", "path": "does-not-exist"}));
    assert_eq!(error_of(&missing, 400)["param"], "path");
}

#[test]
fn a_loaded_name_is_not_replaced_unless_asked() {
    let f = fixture();
    let second = f.root().join("nested").join("second");
    // The library's answers with each adapter; the server's must match where decided (tests
    // share the server, so a request may be decoded in a batch with another).
    let original = reference_chat(USER, 24, Some(&f.root().join("at-start")));
    let from_second = reference_chat(USER, 24, Some(&second));
    let first_change = original
        .token_ids
        .iter()
        .zip(&from_second.token_ids)
        .position(|(a, b)| a != b);
    assert!(
        first_change.is_some_and(|i| i < original.decided.min(from_second.decided)),
        "the two test adapters must answer differently"
    );
    original.assert_matches("at-start", &chat_text(&chat(f, "at-start")));
    let r = load(f, json!({"name": "second-ref", "path": second}));
    assert_eq!(r.status, 200, "{}", r.text());
    from_second.assert_matches("second-ref", &chat_text(&chat(f, "second-ref")));
    let r = load(f, json!({"name": "at-start", "path": second}));
    let err = error_of(&r, 409);
    assert_eq!(err["param"], "name");
    assert_eq!(err["code"], "adapter_exists");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("\"replace\": true"));
    original.assert_matches("at-start kept", &chat_text(&chat(f, "at-start")));

    let r = load(
        f,
        json!({"name": "at-start", "path": second, "replace": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    from_second.assert_matches("at-start replaced", &chat_text(&chat(f, "at-start")));
}

#[test]
fn adapter_names_are_validated() {
    let f = fixture();
    let second = f.root().join("nested").join("second");
    let long = "x".repeat(100_000);
    let names = [
        EMBED_NAME,
        MODEL_NAME,
        "bad\u{1}name",
        "tab\tname",
        "new\nline",
        "a/b",
        "..",
        ".",
        "",
        "has space",
        "ümlaut",
        &long,
        &"y".repeat(65),
    ];
    for name in names {
        let r = load(f, json!({"name": name, "path": second}));
        let err = error_of(&r, 400);
        assert_eq!(err["param"], "name", "{name:?}: {err}");
    }
    let r = load(f, json!({"name": "Ok.name_1-2", "path": second}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = load(f, json!({"name": "z".repeat(64), "path": second}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = load(
        f,
        json!({"name": "typed", "path": second, "replace": "yes"}),
    );
    assert_eq!(error_of(&r, 400)["param"], "replace");
}

#[test]
fn adapters_found_by_model_name_follow_the_same_rules() {
    let f = fixture();
    // Folders dropped in after start whose names no request may use.
    for name in [EMBED_NAME, "ctl\u{1}name", &"w".repeat(65)] {
        write_adapter(&f.root().join(name), 4.0);
        let err = error_of(&chat(f, name), 404);
        assert_eq!(err["code"], "model_not_found", "{name:?}: {err}");
    }
    write_adapter(&f.root().join("dropped"), 5.0);
    assert_eq!(chat(f, "dropped").status, 200);
}

#[test]
fn a_folder_named_like_a_model_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    write_adapter(&tmp.path().join(EMBED_NAME), 0.0);
    let err = ServerHandle::start(config(tmp.path()), SocketAddr::from(([127, 0, 0, 1], 0)))
        .err()
        .expect("started with an adapter named like the embedding model");
    let message = format!("{err:#}");
    assert!(message.contains(EMBED_NAME), "{message}");
}

#[test]
fn adapter_paths_outside_need_the_server_to_allow_them() {
    let elsewhere = tempfile::tempdir().unwrap();
    write_adapter(elsewhere.path(), 2.0);
    let path = elsewhere.path().to_str().unwrap();
    let bare = |allow: bool| ServerConfig {
        adapters_dir: None,
        allow_adapter_paths: allow,
        ..config(elsewhere.path())
    };
    // No --adapters folder and no --allow-adapter-paths: nothing is loaded by path.
    let server = ServerHandle::start(bare(false), SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = server.addr.to_string();
    let r = post(
        &addr,
        "/v1/adapters",
        None,
        &json!({"name": "a", "path": path}),
    );
    assert_eq!(error_of(&r, 403)["code"], "adapter_path_not_allowed");
    server.shutdown().unwrap();

    let server = ServerHandle::start(bare(true), SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = server.addr.to_string();
    let r = post(
        &addr,
        "/v1/adapters",
        None,
        &json!({"name": "a", "path": path}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post(
        &addr,
        "/v1/adapters",
        None,
        &json!({"name": "b", "path": "relative"}),
    );
    let err = error_of(&r, 400);
    assert!(
        err["message"].as_str().unwrap().contains("absolute"),
        "{err}"
    );
    server.shutdown().unwrap();
}
