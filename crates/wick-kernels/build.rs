//! Compiles every `kernels/*.cu` to PTX with nvcc (once, at build time) and writes `ptx.rs`
//! holding one `pub const NAME: &str` per file. Also resolves the `-lcudart` that
//! candle-kernels emits without a search path: a linker script named `libcudart.so` pointing
//! at the toolkit's static runtime, so linking needs no driver and no system CUDA install.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for var in ["CUDA_ROOT", "CUDA_COMPUTE_CAP", "NVCC_APPEND_FLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda_root = env::var("CUDA_ROOT")
        .or_else(|_| env::var("CUDA_PATH"))
        .unwrap_or_else(|_| "/usr/local/cuda".into());
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    write_cudart_link_script(&out, Path::new(&cuda_root));

    let nvcc = Path::new(&cuda_root).join("bin").join("nvcc");
    let nvcc = if nvcc.exists() {
        nvcc
    } else {
        PathBuf::from("nvcc")
    };
    let mut sources: Vec<PathBuf> = fs::read_dir("kernels")
        .expect("kernels/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    let mut consts = String::new();
    for src in sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name");
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["-ptx", "-O3", "-std=c++17", "-Ikernels"])
            .arg(format!("-arch=sm_{cap}"))
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
        assert!(status.success(), "nvcc failed on {}", src.display());
        let name = stem.to_uppercase();
        writeln!(
            consts,
            "pub const {name}: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/{stem}.ptx\"));"
        )
        .expect("write to String");
    }
    fs::write(out.join("ptx.rs"), consts).expect("write ptx.rs");
}

fn write_cudart_link_script(out: &Path, cuda_root: &Path) {
    let dir = out.join("link");
    fs::create_dir_all(&dir).expect("create link dir");
    let lib = cuda_root.join("lib");
    let lib = if lib.exists() {
        lib
    } else {
        cuda_root.join("lib64")
    };
    let script = format!(
        "INPUT({}/libcudart_static.a -ldl -lpthread -lrt)\n",
        lib.display()
    );
    fs::write(dir.join("libcudart.so"), script).expect("write libcudart.so");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
