//! Checkpoints and resume on the tiny self-contained model of train_common: a run killed with
//! SIGKILL (at random points, and in the middle of checkpoint writes) and resumed ends with the
//! same losses and weights as an uninterrupted run, and no half-written checkpoint is ever
//! picked up. The model has dropout, so resume must also reproduce the dropout masks.
//!
//! The killed runs are this test binary re-run as a child process (`child_entry` with
//! CHILD_ENV set), so the kill is a real SIGKILL of a separate process.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

mod train_common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use rand::{Rng, SeedableRng};
use train_common::{random_batches, TinyModel};
use wick::train::checkpoint::{self, OPTIMIZER_FILE, PAUSE_ENV, STATE_FILE};
use wick::train::metrics::{train_losses, valid_losses, Metric};
use wick::train::{ScheduleKind, TrainConfig, Trainer, ADAPTER_WEIGHTS};

const CHILD_ENV: &str = "WICK_TRAIN_TEST_CHILD_OUT";
const VOCAB: usize = 13;
const HIDDEN: usize = 8;

fn config() -> TrainConfig {
    TrainConfig {
        lr: 0.05,
        schedule: ScheduleKind::Cosine,
        warmup_steps: 3,
        epochs: 3,
        grad_accum: 2,
        max_grad_norm: Some(1.0),
        seed: 7,
        shuffle: true,
        eval_every: Some(4),
        save_every: Some(2),
        ..TrainConfig::default()
    }
}

/// One training process: resumes from the latest complete checkpoint under `out` if any.
fn model() -> TinyModel {
    TinyModel::seeded(VOCAB, HIDDEN, 1).with_dropout(0.2)
}

fn train_into(out: &Path) -> Vec<Metric> {
    let model = model();
    let (train, valid) = (random_batches(11, VOCAB, 2), random_batches(3, VOCAB, 3));
    let mut trainer = match checkpoint::latest(out).unwrap() {
        Some(dir) => Trainer::resume(&model, config(), train, valid, &dir).unwrap(),
        None => Trainer::new(&model, config(), train, valid).unwrap(),
    };
    trainer.run(Some(out), &mut |_| {}).unwrap();
    trainer.state().history.clone()
}

#[test]
fn child_entry() {
    // Does nothing in a normal test run; it is the training process of the kill tests.
    if let Some(out) = std::env::var_os(CHILD_ENV) {
        train_into(Path::new(&out));
    }
}

fn spawn_child(out: &Path, pause_ms: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, out)
        .env(PAUSE_ENV, pause_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every `checkpoint-N` directory is complete and loadable; returns how many there are.
fn assert_only_complete_checkpoints(out: &Path) -> usize {
    let mut complete = 0;
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(step) = name.strip_prefix("checkpoint-") else {
            continue;
        };
        if step.ends_with(".tmp") {
            continue;
        }
        for file in [ADAPTER_WEIGHTS, OPTIMIZER_FILE, STATE_FILE] {
            assert!(
                path.join(file).is_file(),
                "{name} lacks {file}: a half-written checkpoint"
            );
        }
        let state = checkpoint::load_state(&path).unwrap();
        assert_eq!(state.step.to_string(), step);
        candle_core::safetensors::load(path.join(OPTIMIZER_FILE), &candle_core::Device::Cpu)
            .unwrap();
        complete += 1;
    }
    assert_eq!(checkpoint::list(out).unwrap().len(), complete);
    complete
}

fn assert_same_run(got: &[Metric], want: &[Metric]) {
    let (g, w) = (train_losses(got), train_losses(want));
    assert_eq!(g.len(), w.len(), "train steps: {g:?} vs {w:?}");
    for ((gs, gl), (ws, wl)) in g.iter().zip(&w) {
        assert_eq!(gs, ws);
        assert!((gl - wl).abs() <= 1e-5, "step {gs}: loss {gl} vs {wl}");
    }
    let (g, w) = (valid_losses(got), valid_losses(want));
    assert_eq!(g.len(), w.len(), "validations: {g:?} vs {w:?}");
    for ((gs, gl), (ws, wl)) in g.iter().zip(&w) {
        assert_eq!(gs, ws);
        assert!((gl - wl).abs() <= 1e-5, "validation at {gs}: {gl} vs {wl}");
    }
}

fn assert_same_adapter(a: &Path, b: &Path) {
    let load = |p: &Path| {
        candle_core::safetensors::load(p.join(ADAPTER_WEIGHTS), &candle_core::Device::Cpu).unwrap()
    };
    let (x, y) = (load(a), load(b));
    assert_eq!(x.len(), y.len());
    for (name, t) in &x {
        let d = (t - &y[name]).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            d.to_scalar::<f32>().unwrap() <= 1e-5,
            "adapter {name} differs"
        );
    }
}

fn uninterrupted() -> (tempfile::TempDir, Vec<Metric>) {
    let dir = tempfile::tempdir().unwrap();
    let history = train_into(dir.path());
    (dir, history)
}

#[test]
fn uninterrupted_run_writes_checkpoints_metrics_and_adapter() {
    let (dir, history) = uninterrupted();
    let out = dir.path();
    // 3 epochs × 11 batches / 2 per step = 17 steps; checkpoints every 2 and at the end.
    assert_eq!(train_losses(&history).len(), 17);
    assert_eq!(
        valid_losses(&history).len(),
        6,
        "before the first step, every 4 steps and at the end"
    );
    let steps: Vec<usize> = checkpoint::list(out).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps, [2, 4, 6, 8, 10, 12, 14, 16, 17]);
    assert!(out.join(ADAPTER_WEIGHTS).is_file());
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), history.len());
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "valid");
    assert_eq!(first["step"], 0);
    let second: serde_json::Value = serde_json::from_str(lines.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["kind"], "train");
    assert_eq!(second["step"], 1);
    assert_eq!(second["lr"], 0.0, "the first warmup step runs at lr 0");
}

#[test]
fn in_process_resume_from_every_checkpoint_matches() {
    let (dir, want) = uninterrupted();
    for (step, ckpt) in checkpoint::list(dir.path()).unwrap() {
        let out = tempfile::tempdir().unwrap();
        let copy = out.path().join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(&ckpt).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
        let got = train_into(out.path());
        assert_same_run(&got, &want);
        assert_same_adapter(out.path(), dir.path());
    }
}

#[test]
fn sigkill_at_random_points_then_resume_matches_uninterrupted_run() {
    let (reference, want) = uninterrupted();
    let out = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut kills = 0;
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the child never finished"
        );
        let mut child = spawn_child(out.path(), 40);
        let delay = Duration::from_millis(rng.random_range(20..350));
        let deadline = Instant::now() + delay;
        let mut finished = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match finished {
            Some(status) => {
                assert!(status.success(), "the child failed: {status}");
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                assert_only_complete_checkpoints(out.path());
            }
        }
    }
    println!("{kills} kills before the run completed");
    assert!(
        kills >= 3,
        "only {kills} kills: the test did not interrupt the run"
    );
    let last = checkpoint::latest(out.path()).unwrap().unwrap();
    let got = checkpoint::load_state(&last).unwrap().history;
    assert_same_run(&got, &want);
    assert_same_adapter(out.path(), reference.path());
    // metrics.jsonl was rewritten from the checkpoint on every resume: no duplicate steps.
    let text = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<Metric> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_same_run(&lines, &want);
}

#[test]
fn sigkill_during_a_checkpoint_write_leaves_no_half_checkpoint() {
    let (_reference, want) = uninterrupted();
    let out = tempfile::tempdir().unwrap();
    let mut caught = 0;
    // Each file of a checkpoint takes 150 ms to "write": kill as soon as a .tmp dir shows up,
    // at different offsets into the write.
    for offset_ms in [0u64, 40, 170, 320, 470] {
        let mut child = spawn_child(out.path(), 150);
        let started = Instant::now();
        let tmp = loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no checkpoint write seen"
            );
            let tmp = std::fs::read_dir(out.path()).unwrap().find_map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                (name.starts_with("checkpoint-") && name.ends_with(".tmp")).then_some(p)
            });
            if let Some(tmp) = tmp {
                break Some(tmp);
            }
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let Some(tmp) = tmp else { break };
        std::thread::sleep(Duration::from_millis(offset_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let complete = assert_only_complete_checkpoints(out.path());
        if tmp.exists() {
            caught += 1;
            // The half-written directory is never what resume picks.
            let latest = checkpoint::latest(out.path()).unwrap();
            assert!(latest.as_deref() != Some(tmp.as_path()));
            if complete > 0 {
                let picked = checkpoint::newest_readable(out.path(), &Device::Cpu, &mut |_| {});
                assert!(picked.unwrap().dir != tmp);
            }
        }
        // Stale .tmp directories are cleaned up by the next save of that step; remove this one
        // so the next poll waits for a fresh write.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).unwrap();
        }
    }
    assert!(
        caught >= 2,
        "only {caught} kills landed inside a checkpoint write"
    );
    // Finish the run in-process; it ends where the uninterrupted run ends.
    let got = train_into(out.path());
    assert_same_run(&got, &want);
}

#[test]
fn resuming_on_other_data_is_an_error() {
    let (dir, _) = uninterrupted();
    let ckpt = checkpoint::latest(dir.path()).unwrap().unwrap();
    let model = model();
    let other = random_batches(11, VOCAB, 99);
    let err = Trainer::resume(&model, config(), other, Vec::new(), &ckpt)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the checkpoint was made with other training data"),
        "{err}"
    );
    let fewer = random_batches(5, VOCAB, 2);
    assert!(Trainer::resume(&model, config(), fewer, Vec::new(), &ckpt).is_err());
    // An output directory without a complete checkpoint has nothing to resume.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty.path().join("checkpoint-3.tmp")).unwrap();
    let err = checkpoint::newest_readable(empty.path(), &Device::Cpu, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("no checkpoint to resume from"), "{err}");
}

#[test]
fn dropout_follows_the_trainers_seed_and_is_off_for_validation() {
    let run = |m: &TinyModel| {
        let (train, valid) = (random_batches(11, VOCAB, 2), random_batches(3, VOCAB, 3));
        let mut t = Trainer::new(m, config(), train, valid).unwrap();
        let loss = t.step().unwrap().loss;
        (loss, t.evaluate().unwrap().unwrap().0)
    };
    let plain = TinyModel::seeded(VOCAB, HIDDEN, 1);
    let (a, b) = (run(&model()), run(&model()));
    assert_eq!(a, b, "the same seed gives the same masks");
    let (p_loss, p_valid) = run(&plain);
    assert_ne!(a.0, p_loss, "dropout is applied in training steps");
    // The first step runs at lr 0 (warmup), so the weights are still the initial ones.
    assert_eq!(a.1, p_valid, "no dropout during validation");
}

#[test]
fn every_checkpoint_has_a_manifest_and_a_damaged_one_is_skipped() {
    use wick::train::manifest::{verify, Verified, MANIFEST_FILE};
    let (dir, want) = uninterrupted();
    for (_, ckpt) in checkpoint::list(dir.path()).unwrap() {
        assert_eq!(verify(&ckpt).unwrap(), Verified::Yes, "{}", ckpt.display());
    }
    // The newest checkpoint's optimizer state cut short, the one before it without a manifest.
    let out = tempfile::tempdir().unwrap();
    for step in [16, 17] {
        let from = dir.path().join(format!("checkpoint-{step}"));
        let to = out.path().join(format!("checkpoint-{step}"));
        std::fs::create_dir(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let cut = out.path().join("checkpoint-17").join(OPTIMIZER_FILE);
    let len = std::fs::metadata(&cut).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    std::fs::remove_file(out.path().join("checkpoint-16").join(MANIFEST_FILE)).unwrap();
    let mut skipped = Vec::new();
    let ckpt = checkpoint::newest_readable(out.path(), &Device::Cpu, &mut |l| {
        skipped.push(l.to_string())
    })
    .unwrap();
    assert_eq!(
        skipped,
        [format!(
            "skipping checkpoint-17: {OPTIMIZER_FILE} has {} bytes, {MANIFEST_FILE} says {len}",
            len - 1
        )]
    );
    assert!(ckpt.dir.ends_with("checkpoint-16") && !ckpt.verified);
    let model = model();
    let (train, valid) = (random_batches(11, VOCAB, 2), random_batches(3, VOCAB, 3));
    let mut trainer = Trainer::from_checkpoint(&model, config(), train, valid, ckpt).unwrap();
    trainer.run(Some(out.path()), &mut |_| {}).unwrap();
    assert_same_run(&trainer.state().history, &want);
    assert_eq!(
        verify(&out.path().join("checkpoint-17")).unwrap(),
        Verified::Yes,
        "the damaged checkpoint was written again"
    );
}
