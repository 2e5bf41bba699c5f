//! Layers wick owns (so later a Linear can carry a LoRA adapter).

pub mod linear;

pub use linear::Linear;
