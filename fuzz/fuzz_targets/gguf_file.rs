//! A whole GGUF file as bytes: header, metadata, tensor index, tensor extents; then what loading
//! a model reads from it: the HF config (and the Llama config checked from it), special tokens,
//! the chat template, and every tensor, raw and under its HF name (dequantized, un-permuted).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wick::candle_core::{DType, Device};
use wick::io::gguf::GgufFile;
use wick::io::gguf_tokenizer::special_tokens;
use wick::io::weights::WeightSource;
use wick::models::DecoderConfig;
use wick_fuzz::check_error;

const NAME: &str = "fuzz.gguf";

fuzz_target!(|data: &[u8]| {
    let file = match GgufFile::from_bytes(NAME, data.to_vec()) {
        Ok(f) => f,
        Err(e) => {
            check_error("open", &e);
            assert!(
                e.to_string().contains(NAME),
                "open error does not name the file: {e}"
            );
            return;
        }
    };
    if let Err(e) = file.architecture() {
        check_error("architecture", &e);
    }
    if let Err(e) = file.chat_template() {
        check_error("chat_template", &e);
    }
    if let Err(e) = special_tokens(&file) {
        check_error("special_tokens", &e);
    }
    match file.hf_config() {
        Ok(cfg) => {
            if let Err(e) = DecoderConfig::from_value(cfg, file.path()) {
                check_error("DecoderConfig::from_value", &e);
            }
        }
        Err(e) => check_error("hf_config", &e),
    }
    let device = Device::Cpu;
    for name in file.tensor_names() {
        match file.qtensor(name, &device) {
            Ok(q) => {
                if let Err(e) = q.dequantize(&device) {
                    check_error("dequantize", &e.into());
                }
            }
            Err(e) => check_error("qtensor", &e),
        }
    }
    for hf in file.hf_tensor_names() {
        let Some(shape) = wick::io::gguf_weights::gguf_tensor_name(&hf)
            .and_then(|g| file.tensor_info(&g))
            .map(|info| info.shape.dims().to_vec())
        else {
            panic!("`{hf}` is listed but has no GGUF tensor");
        };
        match file.tensor(&hf, &shape, DType::F32, &device) {
            Ok(t) => assert_eq!(t.dims(), shape.as_slice()),
            Err(e) => check_error("tensor", &e),
        }
        if let Err(e) = file.quantized(&hf, &shape, &device) {
            check_error("quantized", &e);
        }
    }
});
