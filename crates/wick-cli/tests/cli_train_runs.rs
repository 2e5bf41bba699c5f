//! A run folder is the unit of state: `wick train --resume DIR` reads and writes only DIR (its
//! train.toml stores paths relative to it), `--out` never silently replaces an existing run,
//! and a truncated or corrupt newest checkpoint makes `--resume` fall back to the newest one
//! that verifies against its manifest. Driven through the real binary on a tiny model (the
//! tiny_llama fixture with a byte-level tokenizer, see tiny_run), a few seconds per run.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod tiny_run;

use std::path::{Path, PathBuf};

use tiny_run::{chat_jsonl, error_in, ok_in, snapshot, tiny_chat_model, train_args, train_losses};

/// A temporary working directory with `model/` and `data/chat.jsonl`, and a finished 4-step
/// run in `runs/orig` (checkpoints 2 and 4), trained with paths relative to the directory.
fn finished_run() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    tiny_chat_model(&root.path().join("model"));
    std::fs::create_dir(root.path().join("data")).unwrap();
    chat_jsonl(&root.path().join("data/chat.jsonl"));
    ok_in(
        root.path(),
        &train_args("model", "data/chat.jsonl", "runs/orig"),
    );
    root
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

fn assert_same_losses(got: &[(u64, f64)], want: &[(u64, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for ((gs, gl), (ws, wl)) in got.iter().zip(want) {
        assert_eq!(gs, ws);
        assert!((gl - wl).abs() <= 1e-5, "step {gs}: {gl} vs {wl}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn resuming_a_copied_run_writes_only_into_the_copy() {
    let root = finished_run();
    let (orig, copy) = (root.path().join("runs/orig"), root.path().join("runs/copy"));
    copy_dir(&orig, &copy);
    std::fs::remove_file(copy.join("checkpoint-4/trainer_state.json")).unwrap();
    let before = snapshot(&orig);

    let err = ok_in(root.path(), &["train", "--resume", "runs/copy"]);
    assert!(
        err.contains(&format!(
            "saved {}",
            Path::new("runs/copy/checkpoint-4").display()
        )),
        "{err}"
    );
    assert!(
        snapshot(&orig) == before,
        "the original run was modified: {err}"
    );
    assert!(copy.join("checkpoint-4/trainer_state.json").is_file());
    assert_same_losses(&train_losses(&copy), &train_losses(&orig));
}

#[test]
fn a_moved_run_resumes_with_paths_relative_to_it() {
    let root = finished_run();
    let toml = std::fs::read_to_string(root.path().join("runs/orig/train.toml")).unwrap();
    assert!(
        toml.contains("data = \"../../data/chat.jsonl\"")
            && toml.contains("model = \"../../model\""),
        "paths are stored relative to the run folder: {toml}"
    );
    assert!(
        !toml.contains("out ="),
        "the run folder is not stored: {toml}"
    );
    let want = train_losses(&root.path().join("runs/orig"));
    std::fs::remove_dir_all(root.path().join("runs/orig/checkpoint-4")).unwrap();

    // Everything moves to another place; the run is resumed from yet another directory.
    let moved = tempfile::tempdir().unwrap();
    let tree = moved.path().join("project");
    std::fs::rename(root.path(), &tree).unwrap();
    let elsewhere = moved.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let err = ok_in(
        &elsewhere,
        &["train", "--resume", "../project/runs/orig/checkpoint-2"],
    );
    assert!(err.contains("resuming from"), "{err}");
    let run = tree.join("runs/orig");
    assert!(
        run.join("checkpoint-4/trainer_state.json").is_file(),
        "{err}"
    );
    assert_same_losses(&train_losses(&run), &want);
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing is written into the current directory"
    );
}

#[test]
fn an_old_train_toml_with_out_resumes_into_the_folder_given() {
    let root = finished_run();
    let (orig, copy) = (root.path().join("runs/orig"), root.path().join("runs/copy"));
    copy_dir(&orig, &copy);
    std::fs::remove_dir_all(copy.join("checkpoint-4")).unwrap();
    // What wick wrote before paths became relative to the run: `out` and paths as given
    // (relative to the directory the run was started in).
    std::fs::write(
        copy.join("train.toml"),
        "model = \"model\"\ndata = \"data/chat.jsonl\"\nout = \"runs/orig\"\nmax_length = 48\n\
         batch_size = 2\nmax_steps = 4\nlr = 0.01\nseed = 5\nsave_every = 2\n",
    )
    .unwrap();
    let before = snapshot(&orig);
    let err = ok_in(root.path(), &["train", "--resume", "runs/copy"]);
    assert!(
        snapshot(&orig) == before,
        "the original run was modified: {err}"
    );
    assert!(
        copy.join("checkpoint-4/trainer_state.json").is_file(),
        "{err}"
    );
    assert_same_losses(&train_losses(&copy), &train_losses(&orig));
}

#[test]
fn resume_with_another_out_is_refused() {
    let root = finished_run();
    let err = error_in(
        root.path(),
        &["train", "--resume", "runs/orig", "--out", "runs/other"],
    );
    assert!(err.contains("--resume") && err.contains("--out"), "{err}");
    assert!(!root.path().join("runs/other").exists());
}

#[test]
fn resume_of_a_missing_folder_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = error_in(dir.path(), &["train", "--resume", "/nonexistent/run"]);
    assert!(
        err.contains("/nonexistent/run") && err.contains("does not exist"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let err = error_in(dir.path(), &["train", "--resume", "empty"]);
    assert!(
        err.contains("empty") && err.contains("not a training run"),
        "{err}"
    );
}

// ---- --out onto an existing run ----

#[test]
fn out_onto_an_existing_run_is_refused_and_changes_nothing() {
    let root = finished_run();
    let run = root.path().join("runs/orig");
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let before = snapshot(&run);
    let args = train_args("model", "data/chat.jsonl", "runs/orig");
    let err = error_in(root.path(), &args);
    for needle in [
        "runs/orig",
        "train.toml",
        "checkpoint-2",
        "--overwrite",
        "--resume",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(snapshot(&run) == before, "the run was modified: {err}");

    // A user's own file of a name wick writes counts too.
    let mine = root.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("metrics.jsonl"), "my metrics\n").unwrap();
    let err = error_in(root.path(), &train_args("model", "data/chat.jsonl", "mine"));
    assert!(
        err.contains("mine") && err.contains("metrics.jsonl"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("metrics.jsonl")).unwrap(),
        "my metrics\n"
    );
}

#[test]
fn out_onto_a_folder_of_unrelated_files_trains_and_leaves_them() {
    let root = finished_run();
    let dir = root.path().join("notes");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("README.md"), "my notes").unwrap();
    std::fs::write(dir.join("sub/data.csv"), "1,2").unwrap();
    ok_in(
        root.path(),
        &train_args("model", "data/chat.jsonl", "notes"),
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("README.md")).unwrap(),
        "my notes"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sub/data.csv")).unwrap(),
        "1,2"
    );
    assert!(dir.join("checkpoint-4/trainer_state.json").is_file());
}

#[test]
fn overwrite_replaces_only_wicks_run_files() {
    let root = finished_run();
    let run = root.path().join("runs/orig");
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let mut args = train_args("model", "data/chat.jsonl", "runs/orig");
    // A shorter run: the old run's checkpoint-4 must not survive to be resumed later.
    let steps = args.iter().position(|a| *a == "--max-steps").unwrap();
    args[steps + 1] = "2";
    args.push("--overwrite");
    ok_in(root.path(), &args);
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(run.join("checkpoint-2/trainer_state.json").is_file());
    assert!(
        !run.join("checkpoint-4").exists(),
        "the old run's checkpoint is gone"
    );
    assert_eq!(train_losses(&run).len(), 2);
    let toml = std::fs::read_to_string(run.join("train.toml")).unwrap();
    assert!(
        toml.contains("max_steps = 2") && !toml.contains("overwrite"),
        "{toml}"
    );
}

// ---- Checkpoint manifests and falling back ----

/// `run` copied to `name` with its checkpoint-4's `file` cut to half its length.
fn with_truncated(root: &Path, file: &str, name: &str) -> PathBuf {
    let run = root.join("runs").join(name);
    copy_dir(&root.join("runs/orig"), &run);
    let path = run.join("checkpoint-4").join(file);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    run
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_newest_that_verifies() {
    let root = finished_run();
    let orig = root.path().join("runs/orig");
    assert!(orig.join("checkpoint-4/checkpoint.json").is_file());
    let want = train_losses(&orig);
    for (i, file) in [
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("cut{i}");
        let run = with_truncated(root.path(), file, &name);
        let full = std::fs::metadata(orig.join("checkpoint-4").join(file))
            .unwrap()
            .len();
        let err = ok_in(root.path(), &["train", "--resume", &format!("runs/{name}")]);
        let skip = format!(
            "skipping checkpoint-4: {file} has {} bytes, checkpoint.json says {full}",
            full / 2
        );
        assert!(err.contains(&skip), "{file}: {err}");
        assert!(err.contains("checkpoint-2"), "{err}");
        assert_same_losses(&train_losses(&run), &want);
        // The rewritten checkpoint-4 verifies again.
        ok_in(
            root.path(),
            &["train", "--resume", s(&run.join("checkpoint-4"))],
        );
    }
}

#[test]
fn a_corrupt_checkpoint_of_the_same_size_is_caught_by_its_sha256() {
    let root = finished_run();
    let run = root.path().join("runs/flip");
    copy_dir(&root.path().join("runs/orig"), &run);
    let path = run.join("checkpoint-4/optimizer.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    // Asked for by name, a bad checkpoint is an error, not a fallback.
    let err = error_in(
        root.path(),
        &["train", "--resume", "runs/flip/checkpoint-4"],
    );
    assert!(
        err.contains("checkpoint-4")
            && err.contains("optimizer.safetensors does not match its sha256"),
        "{err}"
    );
    let err = ok_in(root.path(), &["train", "--resume", "runs/flip"]);
    assert!(
        err.contains("skipping checkpoint-4: optimizer.safetensors does not match its sha256"),
        "{err}"
    );
}

#[test]
fn checkpoints_without_a_manifest_still_load_if_they_parse() {
    let root = finished_run();
    let want = train_losses(&root.path().join("runs/orig"));
    // A legacy run: no manifests; its newest checkpoint truncated.
    let run = with_truncated(root.path(), "optimizer.safetensors", "legacy");
    for step in [2, 4] {
        std::fs::remove_file(run.join(format!("checkpoint-{step}/checkpoint.json"))).unwrap();
    }
    let err = ok_in(root.path(), &["train", "--resume", "runs/legacy"]);
    assert!(
        err.contains("skipping checkpoint-4: optimizer.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("checkpoint-2 has no checkpoint.json") && err.contains("unverified"),
        "{err}"
    );
    assert_same_losses(&train_losses(&run), &want);
}

#[test]
fn no_checkpoint_that_verifies_is_an_error_listing_why() {
    let root = finished_run();
    let run = root.path().join("runs/bad");
    copy_dir(&root.path().join("runs/orig"), &run);
    for step in [2, 4] {
        std::fs::write(
            run.join(format!("checkpoint-{step}/trainer_state.json")),
            "{",
        )
        .unwrap();
    }
    let before = snapshot(&run);
    let err = error_in(root.path(), &["train", "--resume", "runs/bad"]);
    assert!(
        err.contains("runs/bad")
            && err.contains("no usable checkpoint")
            && err.contains("trainer_state.json"),
        "{err}"
    );
    assert!(snapshot(&run) == before, "nothing is written: {err}");
}

// ---- The README's commands on a training output folder ----

#[test]
fn readme_adapter_commands_work_on_a_training_output_folder() {
    let root = finished_run();
    let cwd = root.path();
    // `wick generate --model $M --adapter runs/chat --chat "Hello"`
    ok_in(
        cwd,
        &[
            "generate",
            "--model",
            "model",
            "--adapter",
            "runs/orig",
            "--chat",
            "--max-tokens",
            "3",
            "--seed",
            "1",
            "Hello",
        ],
    );
    // `wick chat --model $M --adapter runs/chat`, a line from stdin.
    let out = testkit::cli::run(
        env!("CARGO_BIN_EXE_wick"),
        &[
            "chat",
            "--model",
            &format!("{}/model", s(cwd)),
            "--adapter",
            &format!("{}/runs/orig", s(cwd)),
            "--max-tokens",
            "3",
        ],
        b"Hello\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `wick merge --model $M --adapter runs/chat --out merged/`
    ok_in(
        cwd,
        &[
            "merge",
            "--model",
            "model",
            "--adapter",
            "runs/orig",
            "--out",
            "merged",
        ],
    );
    assert!(cwd.join("merged/model.safetensors").is_file());

    // `ln -s $PWD/runs/chat runs/adapters/chat`, then the server serves it by name.
    std::fs::create_dir(cwd.join("runs/adapters")).unwrap();
    std::os::unix::fs::symlink(cwd.join("runs/orig"), cwd.join("runs/adapters/chat")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wick"))
        .current_dir(cwd)
        .args(["serve", "--model", "model", "--model-name", "tiny"])
        .args(["--adapters", "runs/adapters", "--port", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let addr = loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        said.push_str(&line);
        if n == 0 {
            let _ = child.kill();
            panic!("wick serve exited before listening: {said}");
        }
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 3,
    });
    let res = testkit::http::request(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[],
        body.to_string().as_bytes(),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let res = res.unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["model"], "chat", "{}", res.text());
}
