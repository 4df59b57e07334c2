//! The project's own component, built by `build.rs` and embedded in the binary, so
//! `flowenrich enrich` and pipelines work without a `--component` / `component` setting.

/// Bytes of the `flowenrich-plugin` component (wasm32-wasip2, release build).
pub static COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flowenrich_plugin.wasm"));
