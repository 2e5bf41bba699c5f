//! A whole safetensors file as bytes: the 8-byte header length, the JSON header, the tensor
//! offsets; then every tensor loaded at its stored shape (and once at a wrong one).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wick::candle_core::{DType, Device};
use wick::io::safetensors::SafetensorsWeights;
use wick_fuzz::check_error;

const NAME: &str = "fuzz.safetensors";

fuzz_target!(|data: &[u8]| {
    let weights = match SafetensorsWeights::from_bytes(NAME, data.to_vec()) {
        Ok(w) => w,
        Err(e) => {
            check_error("open", &e);
            assert!(
                e.to_string().contains(NAME),
                "open error does not name the file: {e}"
            );
            return;
        }
    };
    let mut names: Vec<String> = weights.names().map(String::from).collect();
    names.sort();
    for name in names {
        let Some(shape) = weights.shape(&name).map(<[usize]>::to_vec) else {
            panic!("`{name}` is listed but has no shape");
        };
        match weights.load(&name, &shape, DType::F32, &Device::Cpu) {
            Ok(t) => assert_eq!(t.dims(), shape.as_slice()),
            Err(e) => check_error("load", &e),
        }
        let mut wrong = shape.clone();
        wrong.push(1);
        match weights.load(&name, &wrong, DType::F32, &Device::Cpu) {
            Ok(_) => panic!("`{name}` loaded at shape {wrong:?}, stored as {shape:?}"),
            Err(e) => check_error("load at a wrong shape", &e),
        }
    }
    if !weights.contains("no.such.tensor") {
        let missing = weights.load("no.such.tensor", &[1], DType::F32, &Device::Cpu);
        assert!(missing.is_err(), "a tensor the file does not have loaded");
    }
});
