//! `wick serve` driven by the official `openai` Python client (pinned, installed with pip into
//! a venv under .cache/): embeddings, chat, streamed chat, completions and an adapter by name on
//! the real models give what `wick embed` and `wick generate` give (greedy text up to the first
//! near-tie); bad requests raise the
//! client's error classes; a wrong key gets 401; SIGTERM drains an in-flight stream and exits 0.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use testkit::compare::assert_close;
use testkit::greedy::{greedy, Greedy};
use testkit::http::{open, read_head};
use testkit::paths::{minilm, real_model, workspace_root};
use wick::candle_core::{DType, Device, Tensor};
use wick::generate::load::load_causal_lm;
use wick::io::chat_template::ChatMessage;
use wick::io::ModelFiles;
use wick::lora::{LoraConfig, TargetModules};

const OPENAI_VERSION: &str = "3.57.0";
const KEY: &str = "sk-test";
const QUESTION: &str = "What is the capital of France?";
const ADAPTER_QUESTION: &str = "Tell me about the sea.";
const SEEDED_QUESTION: &str = "Write a short poem about rain.";

fn wick() -> &'static str {
    env!("CARGO_BIN_EXE_wick")
}

fn gguf() -> PathBuf {
    real_model("SmolLM2-135M-Instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The venv's python, created once (atomically, by renaming a finished venv into place).
fn openai_python() -> PathBuf {
    let cache = workspace_root().join(".cache");
    let venv = cache.join(format!("openai-{OPENAI_VERSION}-venv"));
    let python = venv.join("bin").join("python");
    if python.is_file() {
        return python;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = cache.join(format!("openai-venv-tmp-{}", std::process::id()));
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&tmp)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "python3 -m venv failed (install python3-venv)"
    );
    let pip = Command::new(tmp.join("bin").join("pip"))
        .args(["install", "-q", &format!("openai=={OPENAI_VERSION}")])
        .status()
        .unwrap();
    assert!(pip.success(), "pip install openai=={OPENAI_VERSION} failed");
    if std::fs::rename(&tmp, &venv).is_err() {
        std::fs::remove_dir_all(&tmp).unwrap(); // another run finished first
    }
    python
}

/// A q/v adapter with non-zero B, so it changes the output.
fn write_adapter(dir: &Path) {
    let files = ModelFiles::resolve(gguf().to_str().unwrap()).unwrap();
    let mut model = load_causal_lm(&files, &Device::Cpu, None, None)
        .unwrap()
        .model
        .into_model();
    let cfg = LoraConfig::new(8, 16.0, TargetModules::from_names(&["q_proj", "v_proj"]));
    let params = wick::lora::apply(&mut model, &cfg, 7).unwrap();
    for (name, var) in params.named_vars() {
        if name.contains("lora_B") {
            let n = var.elem_count() as u32;
            let t = Tensor::arange(0u32, n, &Device::Cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let t = t
                .affine(0.37, 0.0)
                .unwrap()
                .sin()
                .unwrap()
                .affine(0.2, 0.0)
                .unwrap();
            var.set(&t.reshape(var.dims()).unwrap()).unwrap();
        }
    }
    wick::lora::save_adapter(dir, &cfg, &params).unwrap();
}

/// Starts `wick serve` on a free port; returns the child and its address.
fn serve(adapters: &Path) -> (Child, String) {
    let mut child = Command::new(wick())
        .args([
            "serve",
            "--model",
            gguf().to_str().unwrap(),
            "--model-name",
            "smollm2",
        ])
        .args([
            "--embedding-model",
            minilm().to_str().unwrap(),
            "--embedding-model-name",
            "minilm",
        ])
        .arg("--adapters")
        .arg(adapters)
        .args(["--port", "0"])
        .env("WICK_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "wick serve exited before listening"
        );
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe; return what it said.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        std::fs::write(
            std::env::temp_dir().join(format!("wick-serve-{}.log", std::process::id())),
            rest,
        )
        .ok();
    });
    (child, addr)
}

fn cli_stdout(args: &[&str]) -> String {
    let out = testkit::cli::run(wick(), args, b"");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The server decodes in batches, the CLI one sequence at a time: their roundings differ (more
/// where candle's AVX-512 kernels take the batch), so greedy texts are compared only where each
/// step was decided by more than this.
const NEAR_TIE: f32 = 0.1;

/// The library's greedy completion of the quantized model (as `wick generate --temperature 0`).
fn library_greedy(prompt: &str, chat: bool, adapter: Option<&Path>, max_tokens: usize) -> Greedy {
    let files = ModelFiles::resolve(gguf().to_str().unwrap()).unwrap();
    let mut lm = load_causal_lm(&files, &Device::Cpu, None, adapter).unwrap();
    let ids = if chat {
        let text = lm
            .chat_template
            .as_ref()
            .unwrap()
            .render(&[ChatMessage::user(prompt)], true)
            .unwrap();
        lm.tokenizer.encode(text, false).unwrap()
    } else {
        lm.tokenizer.encode(prompt, true).unwrap()
    };
    let path = greedy(&mut lm, ids.get_ids(), max_tokens, NEAR_TIE);
    println!(
        "{prompt:?}: {} of {} steps decided",
        path.decided,
        path.token_ids.len()
    );
    path
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn openai_client_gets_what_the_cli_gives_and_sigterm_drains() {
    let python = openai_python();
    let adapters = tempfile::tempdir().unwrap();
    let adapter = adapters.path().join("my-adapter");
    write_adapter(&adapter);
    let (mut child, addr) = serve(adapters.path());

    let script = workspace_root().join("crates/wick-cli/tests/serve_openai_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([
            &format!("http://{addr}/v1"),
            KEY,
            "smollm2",
            "my-adapter",
            "minilm",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "openai_version",
        "chat",
        "chat_streamed",
        "chat_seeded",
        "adapter_chat",
        "base_on_adapter_question",
        "completion",
        "chat_usage",
        "n2",
        "unknown_model",
        "wrong_key",
        "models",
    ] {
        println!("{key}: {}", got[key]);
    }
    assert_eq!(got["openai_version"], OPENAI_VERSION);

    let gguf = gguf();
    let m = gguf.to_str().unwrap();
    let chat_cli = cli_stdout(&[
        "generate",
        "--model",
        m,
        "--chat",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        QUESTION,
    ]);
    assert!(!chat_cli.is_empty());
    // Greedy texts of the server (batched decode) and the CLI (one sequence) agree where the
    // library's greedy path is decided.
    let chat = library_greedy(QUESTION, true, None, 24);
    chat.assert_matches("wick generate --chat", &chat_cli);
    chat.assert_matches("chat", got["chat"].as_str().unwrap());
    assert_eq!(got["chat_streamed"], got["chat"], "streamed and not");
    let seeded_cli = cli_stdout(&[
        "generate",
        "--model",
        m,
        "--chat",
        "--temperature",
        "1.0",
        "--top-p",
        "0.95",
        "--seed",
        "7",
        "--max-tokens",
        "24",
        SEEDED_QUESTION,
    ]);
    assert_eq!(got["chat_seeded"], seeded_cli.as_str());
    let adapter_args = [
        "--chat",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        ADAPTER_QUESTION,
    ];
    let adapter_path = adapter.to_str().unwrap();
    let base_cli = cli_stdout(&[&["generate", "--model", m][..], &adapter_args].concat());
    let adapter_cli = cli_stdout(
        &[
            &["generate", "--model", m, "--adapter", adapter_path][..],
            &adapter_args,
        ]
        .concat(),
    );
    let base = library_greedy(ADAPTER_QUESTION, true, None, 24);
    let adapted = library_greedy(ADAPTER_QUESTION, true, Some(&adapter), 24);
    let first_change = base
        .token_ids
        .iter()
        .zip(&adapted.token_ids)
        .position(|(a, b)| a != b);
    assert!(
        first_change.is_some_and(|i| i < base.decided.min(adapted.decided)),
        "the adapter changes a decided token: first change {first_change:?}, base {base:?}, \
         adapted {adapted:?}"
    );
    adapted.assert_matches("wick generate --adapter", &adapter_cli);
    adapted.assert_matches("adapter chat", got["adapter_chat"].as_str().unwrap());
    base.assert_matches("wick generate", &base_cli);
    base.assert_matches(
        "base chat",
        got["base_on_adapter_question"].as_str().unwrap(),
    );
    let completion_cli = cli_stdout(&[
        "generate",
        "--model",
        m,
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "1, 2, 3, 4,",
    ]);
    let completion = library_greedy("1, 2, 3, 4,", false, None, 12);
    completion.assert_matches("wick generate", &completion_cli);
    completion.assert_matches("completion", got["completion"].as_str().unwrap());

    let texts = ["A man is eating food.", "A man is eating a piece of bread."];
    let embed_cli = cli_stdout(&[
        "embed",
        "--model",
        minilm().to_str().unwrap(),
        texts[0],
        texts[1],
    ]);
    for (i, line) in embed_cli.lines().enumerate() {
        let expected = floats(&serde_json::from_str(line).unwrap());
        assert_close(
            "base64 embedding",
            &floats(&got["embeddings"][i]),
            &expected,
            1e-5,
            1e-4,
        );
        assert_close(
            "float embedding",
            &floats(&got["embeddings_float"][i]),
            &expected,
            1e-5,
            1e-4,
        );
    }

    assert_eq!(got["n2"]["status"], 400);
    assert_eq!(got["n2"]["param"], "n");
    assert_eq!(got["unknown_model"]["status"], 404);
    assert_eq!(got["wrong_key"]["status"], 401);
    let models: Vec<&str> = got["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(models, ["minilm", "my-adapter", "smollm2"]);

    // SIGTERM with a stream in flight: the stream still completes, then the process exits 0.
    let body = serde_json::json!({
        "model": "smollm2", "stream": true, "max_tokens": 48, "temperature": 0,
        "messages": [{"role": "user", "content": "Tell me a story."}],
    });
    let auth = format!("Bearer {KEY}");
    let stream = open(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_head(&mut reader).unwrap().0, 200);
    let mut line = String::new();
    while !line.contains("\"content\":\"") || line.contains("\"content\":\"\"") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut rest = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        rest.push_str(&line);
        line.clear();
    }
    assert!(
        rest.contains("data: [DONE]"),
        "the in-flight stream was cut: {rest}"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "wick serve exited with {status}");
}

/// How `wick serve` with `args` started: what it printed before listening (and where), or how
/// it exited instead. A server that listens is killed once its start-up lines are read.
enum Start {
    Listening { said: String, addr: String },
    Exited { code: Option<i32>, said: String },
}

fn start_embedding_server(extra: &[&str], env: &[(&str, &str)]) -> Start {
    let mut cmd = Command::new(wick());
    cmd.args(["serve", "--embedding-model", minilm().to_str().unwrap()])
        .args(["--port", "0"])
        .args(extra)
        .env_remove("WICK_API_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let mut line = String::new();
    let listening = loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break None;
        }
        said.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break Some(rest.split_whitespace().next().unwrap().to_string());
        }
    };
    let Some(addr) = listening else {
        let code = child.wait().unwrap().code();
        return Start::Exited { code, said };
    };
    // It serves (on a non-loopback bind without --allowed-hosts, under any Host).
    let port = addr.rsplit(':').next().unwrap().to_string();
    let host = match addr.starts_with("0.0.0.0:") {
        true => "wick.example:1234".to_string(),
        false => addr.clone(),
    };
    let probe = testkit::http::request(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/health",
        &[("Host", &host)],
        b"",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let probe = probe.unwrap();
    assert_eq!(probe.status, 200, "{}", probe.text());
    Start::Listening { said, addr }
}

fn assert_refused(args: &[&str], env: &[(&str, &str)], named: &str) {
    match start_embedding_server(args, env) {
        Start::Exited { code, said } => {
            assert_eq!(code, Some(1), "{said}");
            assert!(said.contains(named) && said.contains("empty"), "{said}");
        }
        Start::Listening { said, .. } => panic!("served with an empty key ({named}): {said}"),
    }
}

#[test]
fn an_empty_api_key_stops_the_start() {
    assert_refused(&["--api-key", ""], &[], "--api-key");
    assert_refused(&[], &[("WICK_API_KEY", "")], "WICK_API_KEY");
}

#[test]
fn binding_all_interfaces_without_a_key_warns() {
    match start_embedding_server(&["--host", "0.0.0.0"], &[]) {
        Start::Listening { said, addr } => {
            assert!(addr.starts_with("0.0.0.0:"), "{addr}");
            let warnings: Vec<&str> = said.lines().filter(|l| l.contains("warning")).collect();
            assert!(
                warnings.iter().any(|l| l.contains("--api-key")),
                "no warning about the missing key: {said}"
            );
            assert!(
                warnings.iter().any(|l| l.contains("--allowed-hosts")),
                "no warning about the Host check: {said}"
            );
        }
        Start::Exited { said, .. } => panic!("did not start: {said}"),
    }
    // On loopback with a key: nothing to warn about.
    match start_embedding_server(&["--api-key", "k"], &[]) {
        Start::Listening { said, .. } => assert!(!said.contains("warning"), "{said}"),
        Start::Exited { said, .. } => panic!("did not start: {said}"),
    }
}
