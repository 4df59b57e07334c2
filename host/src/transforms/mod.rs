//! Transforms: what happens to lines between sources and sinks. Each runs on its own
//! thread, taking batches from its input until every input has closed.

pub mod wasm;

use crate::config::{BoxError, BuildError, Invalid};
use crate::control::Control;
use crate::lifecycle::Lifecycle;
use crate::metadata::SharedTable;
use crate::metrics::ComponentMetrics;
use crate::runtime::Runtime;
use crate::topology::output::{Input, Output};
use crate::topology::reload::ReloadError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

crate::config::component_enum! {
    /// A transform, by its `type`.
    pub enum TransformConfig: TransformKind {
        /// Parse and enrich flow-log lines with a WebAssembly component. Outputs enriched
        /// JSON on `<id>` and rejected lines on `<id>.dead_letter`.
        Wasm(wasm::Config),
    }
}

/// What every kind of transform's config does.
pub trait TransformKind: std::fmt::Debug {
    /// Upstream component ids.
    fn inputs(&self) -> &[String];
    /// The `[metadata.<name>]` table it attributes with, if any.
    fn metadata(&self) -> Option<&str>;
    /// Checks the settings; `key` is `transforms.<id>`.
    fn validate(&self, key: &str) -> Result<(), Invalid>;
    /// Makes relative paths absolute against `base`, the pipeline file's directory.
    fn resolve_paths(&mut self, _base: &Path) {}
    /// The keys a config reload applies while the transform runs.
    fn live_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// The memory one instance of its component may use, in MiB (the engine's pool is
    /// sized for the largest); 0 for a transform without a component.
    fn memory_limit_mib(&self) -> usize {
        0
    }
    /// The config as `Any`, for a running transform to read a reloaded config of its
    /// own kind.
    fn as_any(&self) -> &dyn std::any::Any;
    /// Loads and checks what the transform needs; nothing runs yet.
    fn build(
        &self,
        id: &str,
        cx: &mut TransformBuildContext<'_>,
    ) -> Result<Box<dyn TransformPlan>, BuildError>;
}

/// What building a transform may use.
pub struct TransformBuildContext<'a> {
    /// The component engine.
    pub runtime: &'a Runtime,
    /// The pipeline's metadata tables by name.
    pub tables: &'a BTreeMap<String, Arc<SharedTable>>,
    /// Components compiled so far, by file (`None`: the built-in one), shared by
    /// transforms that run the same file.
    pub components: &'a mut wasm::ComponentCache,
    /// A sink that publishes exactly once is downstream: batches with held lines go out
    /// whole.
    pub whole_batches: bool,
    /// What the transform's consumers read of its records.
    pub needs: crate::config::OutputNeeds,
}

/// A built transform, ready to start.
pub trait TransformPlan: Send {
    /// Starts the transform's helpers and returns its work.
    fn start(self: Box<Self>, cx: TransformContext) -> Result<StartedTransform, BuildError>;
}

/// What a starting transform is wired to.
pub struct TransformContext {
    /// The transform's id.
    pub id: String,
    /// Where its results go.
    pub output: Output,
    /// Where lines it rejects go (`<id>.dead_letter`).
    pub dead_letters: Output,
    /// Its counters.
    pub metrics: Arc<ComponentMetrics>,
    /// The pipeline's fate.
    pub lifecycle: Arc<Lifecycle>,
    /// The component engine.
    pub runtime: Runtime,
    /// Reload requests (SIGHUP, `POST /reload`) and the end of the run, which helpers
    /// wait on.
    pub control: Arc<Control>,
}

/// A transform's work: takes batches from its input until every input has closed. The
/// topology runs it on the transform's own thread; an error fails the pipeline.
pub type TransformRun = Box<dyn FnOnce(&mut Input) -> Result<(), BoxError> + Send>;

/// A started transform.
pub struct StartedTransform {
    /// Its work, for the topology to run on the transform's thread.
    pub run: TransformRun,
    /// Helper threads (a component file watcher), which end with the run.
    pub helpers: Vec<JoinHandle<()>>,
    /// What a config reload may change.
    pub live: Box<dyn LiveTransform>,
}

/// A running transform as a config reload sees it.
pub trait LiveTransform: Send {
    /// Checks the transform's config as reloaded (`new`, of the same kind: a change of
    /// kind needs a restart) against what runs, and returns how to apply it; nothing
    /// changes yet. `id` is the transform's id.
    fn prepare(
        &self,
        id: &str,
        new: &dyn TransformKind,
        runtime: &Runtime,
    ) -> Result<Box<dyn FnOnce() + Send>, ReloadError>;
}

/// Spawns a named component thread.
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(format!("component-{name}"))
        .spawn(f)
        .expect("spawn component thread")
}
