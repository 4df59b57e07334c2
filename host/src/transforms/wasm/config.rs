//! The `wasm` transform's settings.

use super::LiveOptions;
use crate::config::{BuildError, Invalid};
use crate::runtime::WorkerLimits;
use crate::transforms::{TransformBuildContext, TransformKind, TransformPlan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `wasm` transform's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream component ids.
    pub inputs: Vec<String>,
    /// Component file (`.wasm`), relative to the pipeline file; default: the component
    /// built into flowenrich.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<PathBuf>,
    /// Name of the `[metadata.<name>]` table to attribute with; none = unattributed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    /// Flow-log format (`${version} ${srcaddr} ...` or plain names); default AWS v2. S3
    /// header lines override it for the rest of their file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Longest time one batch may run inside the component, in milliseconds.
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
    /// Largest linear memory of one component instance, in MiB.
    #[serde(default = "default_memory_limit_mib")]
    pub memory_limit_mib: usize,
    /// Seconds a flow with an unattributed side may be held back, waiting for the
    /// metadata table to change; it is retried after every change and emitted
    /// unattributed when the time is up (or at shutdown). 0 (the default) holds nothing.
    #[serde(default)]
    pub holdback_secs: u64,
    /// Most lines held back at once; over it the oldest are released unattributed
    /// (counted in `holdback_overflow_total`).
    #[serde(default = "default_holdback_max_lines")]
    pub holdback_max_lines: usize,
    /// Most bytes of held lines at once, in MiB; over it the oldest are released
    /// unattributed (counted in `holdback_overflow_total`).
    #[serde(default = "default_holdback_max_mib")]
    pub holdback_max_mib: usize,
    /// How often `component`'s file is checked for a new version to hot-swap in, in
    /// milliseconds; 0 checks only on SIGHUP or `POST /reload`. Ignored without
    /// `component` (the built-in component never changes).
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// A fixtures directory (`<dir>/<case>/input.log`, `expected.jsonl`, ...; see
    /// `flowenrich test`) that a new component must pass before it is swapped in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixtures: Option<PathBuf>,
    /// Component instances processing batches at once, each on its own thread with its
    /// own store; any batch may go to any of them, and results go on in arrival order.
    /// Default: the cores available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

fn default_batch_timeout_ms() -> u64 {
    5000
}

fn default_memory_limit_mib() -> usize {
    512
}

fn default_holdback_max_lines() -> usize {
    100_000
}

fn default_holdback_max_mib() -> usize {
    64
}

fn default_reload_interval_ms() -> u64 {
    1000
}

/// The keys a reload applies while the transform runs.
const LIVE_KEYS: [&str; 6] = [
    "format",
    "holdback_secs",
    "holdback_max_lines",
    "holdback_max_mib",
    "batch_timeout_ms",
    "memory_limit_mib",
];

impl Config {
    /// How many workers: as configured, else the cores available.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(crate::util::cores)
    }

    /// How often the component file is checked (`None`: only on reload requests).
    pub fn reload_interval(&self) -> Option<Duration> {
        (self.reload_interval_ms > 0).then(|| Duration::from_millis(self.reload_interval_ms))
    }

    /// The worker's batch deadline and memory limit.
    pub fn limits(&self) -> WorkerLimits {
        WorkerLimits {
            batch_timeout: Duration::from_millis(self.batch_timeout_ms),
            memory_limit_bytes: self.memory_limit_mib.saturating_mul(1 << 20),
        }
    }
}

impl From<&Config> for LiveOptions {
    fn from(config: &Config) -> LiveOptions {
        LiveOptions {
            format: config.format.clone(),
            holdback: (config.holdback_secs > 0).then(|| Duration::from_secs(config.holdback_secs)),
            holdback_max_lines: config.holdback_max_lines,
            holdback_max_bytes: config.holdback_max_mib.saturating_mul(1 << 20),
            limits: config.limits(),
        }
    }
}

impl TransformKind for Config {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }

    fn validate(&self, key: &str) -> Result<(), Invalid> {
        if self.holdback_secs > 0 && self.metadata.is_none() {
            return Err(Invalid::new(
                format!("{key}.holdback_secs"),
                "holding flows back needs a `metadata` table to wait for",
            ));
        }
        Invalid::at_least_1(key, "batch_timeout_ms", self.batch_timeout_ms)?;
        Invalid::workers(key, self.workers)?;
        Invalid::at_least_1(key, "memory_limit_mib", self.memory_limit_mib as u64)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for path in self.component.iter_mut().chain(self.fixtures.iter_mut()) {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    fn live_keys(&self) -> &'static [&'static str] {
        &LIVE_KEYS
    }

    fn memory_limit_mib(&self) -> usize {
        self.memory_limit_mib
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn build(
        &self,
        id: &str,
        cx: &mut TransformBuildContext<'_>,
    ) -> Result<Box<dyn TransformPlan>, BuildError> {
        Ok(Box::new(super::build::plan(id, self, cx)?))
    }
}
