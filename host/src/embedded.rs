//! The project's own component, built by `build.rs` and embedded in the binary, so
//! `flowenrich enrich` and pipelines work without a `--component` / `component` setting.

use std::borrow::Cow;
use std::path::Path;

/// Bytes of the `flowenrich-plugin` component (wasm32-wasip2, release build).
pub static COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flowenrich_plugin.wasm"));

/// The component at `path`, or the built-in one when there is no path.
pub fn component_bytes(path: Option<&Path>) -> Result<Cow<'static, [u8]>, String> {
    match path {
        Some(path) => std::fs::read(path)
            .map(Cow::Owned)
            .map_err(|e| format!("cannot read component {}: {e}", path.display())),
        None => Ok(Cow::Borrowed(COMPONENT)),
    }
}
