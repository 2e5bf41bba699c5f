//! PTX of wick's CUDA kernels, compiled from `kernels/*.cu` by nvcc at build time; loaded once
//! per device by `wick::ops::cuda`. One constant per source file, named after it.

include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
