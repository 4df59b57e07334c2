//! Transforms: what happens to lines between sources and sinks.

pub mod swap;
pub mod wasm;
