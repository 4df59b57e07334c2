//! The project's own component, built by `build.rs` and embedded in the binary, so
//! `flowenrich enrich` and pipelines work without a `--component` / `component` setting.

use std::borrow::Cow;
use std::path::Path;

/// Bytes of the `flowenrich-plugin` component (wasm32-wasip2, release build).
pub static COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flowenrich_plugin.wasm"));

/// A component file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read component {}: {error}", path.display())]
pub struct ReadError {
    /// The file.
    pub path: std::path::PathBuf,
    /// The I/O error.
    #[source]
    pub error: std::io::Error,
}

/// The component at `path`, or the built-in one when there is no path.
pub fn component_bytes(path: Option<&Path>) -> Result<Cow<'static, [u8]>, ReadError> {
    match path {
        Some(path) => std::fs::read(path)
            .map(Cow::Owned)
            .map_err(|error| ReadError {
                path: path.to_path_buf(),
                error,
            }),
        None => Ok(Cow::Borrowed(COMPONENT)),
    }
}
