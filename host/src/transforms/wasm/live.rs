//! What a config reload may change in a running `wasm` transform: its live options
//! (`format`, `holdback_secs`, `batch_timeout_ms`, `memory_limit_mib`), picked up before
//! its next batch.

use super::swap::SharedComponent;
use super::{Config, LiveOptions};
use crate::runtime::{CallError, Runtime};
use crate::topology::reload::ReloadError;
use crate::transforms::{LiveTransform, TransformKind};
use arc_swap::ArcSwap;
use std::sync::Arc;

/// A running `wasm` transform's reloadable parts.
pub struct LiveWasm {
    /// Its options, read before every batch.
    pub options: Arc<ArcSwap<LiveOptions>>,
    /// Its component (to check a new format with).
    pub component: Arc<SharedComponent>,
}

impl LiveTransform for LiveWasm {
    fn prepare(
        &self,
        id: &str,
        new: &dyn TransformKind,
        runtime: &Runtime,
    ) -> Result<Box<dyn FnOnce() + Send>, ReloadError> {
        let Some(config) = new.as_any().downcast_ref::<Config>() else {
            return Err(ReloadError::RestartNeeded(vec![format!(
                "transforms.{id}.type"
            )]));
        };
        let new = LiveOptions::from(config);
        self.check(id, &new, runtime)?;
        let options = self.options.clone();
        Ok(Box::new(move || {
            if **options.load() != new {
                options.store(Arc::new(new));
            }
        }))
    }
}

impl LiveWasm {
    /// Checks new options: within the engine's memory pool, and a new format accepted
    /// by the component.
    fn check(&self, id: &str, new: &LiveOptions, runtime: &Runtime) -> Result<(), ReloadError> {
        // The engine's memory pool was sized at start-up for the largest limit then.
        let max = runtime.options().max_memory_bytes;
        if new.limits.memory_limit_bytes > max {
            return Err(ReloadError::RestartNeeded(vec![format!(
                "transforms.{id}.memory_limit_mib (above the {} MiB the engine was sized for at start-up)",
                max >> 20
            )]));
        }
        let Some(format) = &new.format else {
            return Ok(());
        };
        if self.options.load().format.as_ref() == Some(format) {
            return Ok(());
        }
        let refused = |message: String| ReloadError::Format {
            id: id.to_string(),
            message,
        };
        let component = self.component.current();
        let mut worker = runtime
            .worker(&component.component, &new.limits)
            .map_err(|e| refused(e.to_string()))?;
        match worker.check_format(format) {
            Ok(_) => Ok(()),
            Err(CallError::InvalidFormat(message)) => Err(refused(message)),
            Err(CallError::Runtime(error)) => Err(refused(error.to_string())),
        }
    }
}
