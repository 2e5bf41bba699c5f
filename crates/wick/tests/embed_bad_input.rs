//! Broken model folders: each must fail with one clear line naming the file or tensor.

#![allow(clippy::unwrap_used)] // tests may panic on unexpected errors

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use testkit::paths::minilm;
use wick::embed::Embedder;
use wick::io::ModelFiles;

/// A copy of the real model folder (weights symlinked) that a test may break.
fn model_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = minilm();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let to = tmp.path().join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir(&to).unwrap();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        } else if entry.file_name() == "model.safetensors" {
            std::os::unix::fs::symlink(entry.path(), &to).unwrap();
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
    tmp
}

fn load_error(dir: &Path) -> String {
    let files = ModelFiles::resolve(dir.to_str().unwrap()).unwrap();
    match Embedder::load(&files, &Device::Cpu, DType::F32, None) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(!msg.contains('\n'), "error must be one line: {msg:?}");
            msg
        }
    }
}

#[test]
fn missing_config_json() {
    let m = model_copy();
    std::fs::remove_file(m.path().join("config.json")).unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains("config.json") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors() {
    let m = model_copy();
    let target = m.path().join("model.safetensors");
    let bytes = std::fs::read(&target).unwrap();
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn tokenizer_json_that_does_not_parse() {
    let m = model_copy();
    std::fs::write(
        m.path().join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": ",
    )
    .unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains("tokenizer.json") && msg.contains("cannot load tokenizer"),
        "{msg}"
    );
}

#[test]
fn tensor_with_the_wrong_shape() {
    let m = model_copy();
    let target = m.path().join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&target, &Device::Cpu).unwrap();
    let name = "encoder.layer.3.attention.self.key.weight";
    let narrowed = tensors[name].narrow(0, 0, 300).unwrap();
    tensors.insert(name.to_string(), narrowed);
    std::fs::remove_file(&target).unwrap();
    candle_core::safetensors::save(&tensors, &target).unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains(name) && msg.contains("[300, 384]") && msg.contains("[384, 384]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let m = model_copy();
    let target = m.path().join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&target, &Device::Cpu).unwrap();
    tensors.remove("encoder.layer.5.output.dense.bias");
    std::fs::remove_file(&target).unwrap();
    candle_core::safetensors::save(&tensors, &target).unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains("encoder.layer.5.output.dense.bias") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn unknown_model_type() {
    let m = model_copy();
    let cfg_path = m.path().join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, cfg.replace("\"bert\"", "\"perceiver-xl\"")).unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains("config.json") && msg.contains("unsupported architecture `perceiver-xl`"),
        "{msg}"
    );
}

#[test]
fn unsupported_pooling_module_is_named() {
    let m = model_copy();
    let path = m.path().join("modules.json");
    let modules = std::fs::read_to_string(&path).unwrap();
    let modules = modules.replace("models.Normalize", "models.Dense");
    std::fs::write(&path, modules).unwrap();
    let msg = load_error(m.path());
    assert!(
        msg.contains("modules.json") && msg.contains("Dense") && msg.contains("not supported"),
        "{msg}"
    );
}

#[test]
fn max_length_beyond_the_position_table() {
    let files = ModelFiles::resolve(minilm().to_str().unwrap()).unwrap();
    let err = Embedder::load(&files, &Device::Cpu, DType::F32, Some(10_000))
        .err()
        .expect("10000 tokens exceed 512 positions")
        .to_string();
    assert!(err.contains("max_length") && err.contains("512"), "{err}");
}
