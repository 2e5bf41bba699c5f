//! `wick embed --model org/name` through the hub path, against testkit's local hub server
//! (no real hub is reachable here) serving the real all-MiniLM-L6-v2 files.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::path::Path;
use std::process::{Command, Output};

use testkit::hub_server::HubServer;
use testkit::paths::minilm;

fn wick_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wick"));
    cmd.args(args);
    for var in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("wick runs")
}

fn embed(model: &str, env: &[(&str, &str)]) -> Output {
    wick_with_env(&["embed", "--model", model, "A man is eating food."], env)
}

fn home(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn hub_id_downloads_into_the_cache_then_works_offline() {
    let server = HubServer::start(minilm()).unwrap();
    let endpoint = server.endpoint();
    let hf_home = tempfile::tempdir().unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", home(hf_home.path())),
    ];

    let from_hub = embed("sentence-transformers/all-MiniLM-L6-v2", &env);
    assert!(
        from_hub.status.success(),
        "{}",
        String::from_utf8_lossy(&from_hub.stderr)
    );
    let local = embed(minilm().to_str().unwrap(), &[]);
    assert_eq!(from_hub.stdout, local.stdout, "same files, same vectors");

    let snapshot = hf_home
        .path()
        .join("hub/models--sentence-transformers--all-MiniLM-L6-v2/snapshots")
        .join(testkit::hub_server::COMMIT);
    assert!(snapshot.join("model.safetensors").exists());
    assert!(snapshot.join("1_Pooling/config.json").exists());

    // Offline, with the server gone: served from the cache.
    drop(server);
    let offline_env = [("HF_HUB_OFFLINE", "1"), ("HF_HOME", home(hf_home.path()))];
    let offline = embed("sentence-transformers/all-MiniLM-L6-v2", &offline_env);
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert_eq!(offline.stdout, local.stdout);
}

#[test]
fn offline_with_nothing_cached_says_so() {
    let hf_home = tempfile::tempdir().unwrap();
    let out = embed(
        "sentence-transformers/all-MiniLM-L6-v2",
        &[("HF_HUB_OFFLINE", "1"), ("HF_HOME", home(hf_home.path()))],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(
        stderr.contains("not in the cache") && stderr.contains("HF_HUB_OFFLINE=1"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
}

#[test]
fn revision_that_the_hub_lacks_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let server = HubServer::start(empty.path()).unwrap();
    let endpoint = server.endpoint();
    let hf_home = tempfile::tempdir().unwrap();
    let out = embed(
        "org/absent-model",
        &[
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HOME", home(hf_home.path())),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.json") && stderr.contains("not found"),
        "{stderr}"
    );
}
