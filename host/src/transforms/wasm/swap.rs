//! Hot swap of a `wasm` transform's component, without a restart, a lost line or a
//! pause.
//!
//! A transform's component lives in a [`SharedComponent`]: the current generation behind
//! an `ArcSwap`. A watcher thread ([`watch`]) notices a new component file (its size or
//! modification time changed, checked every `reload_interval_ms`) or a reload request
//! (SIGHUP, or `POST /reload` on the admin endpoint). Off the hot path it compiles the
//! new bytes, type-checks them against the WIT world and its version, checks that it
//! accepts the transform's format, runs the transform's fixtures through a fresh
//! instance if `fixtures` is set, and only then
//! installs the new generation with one atomic store. The transform looks at the
//! generation before every batch and moves its worker to a new one between batches, so
//! a batch in flight finishes on the component it started on and nothing is lost or run
//! twice. A candidate that fails any step is logged, counted
//! (`component_errors_total{error_type}`) and dropped; the running one carries on.

use crate::control::{Control, Wake};
use crate::fixtures;
use crate::metadata::file::{Fingerprint, fingerprint};
use crate::metrics::ComponentMetrics;
use crate::runtime::{CallError, LoadedComponent, Runtime, RuntimeError};
use crate::transforms::wasm::LiveOptions;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One installed component.
pub struct Generation {
    /// 1 for the component the pipeline started with, then one more per swap.
    pub number: u64,
    /// The compiled, type-checked component.
    pub component: LoadedComponent,
}

/// A transform's current component, replaceable while it runs.
pub struct SharedComponent {
    current: ArcSwap<Generation>,
}

impl SharedComponent {
    /// Starts at generation 1 with `component`.
    pub fn new(component: LoadedComponent) -> SharedComponent {
        SharedComponent {
            current: ArcSwap::from_pointee(Generation {
                number: 1,
                component,
            }),
        }
    }

    /// The generation to run the next batch on.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Installs `component` as the next generation and returns its number. Only the
    /// watcher of this transform installs, so numbers never repeat.
    pub fn install(&self, component: LoadedComponent) -> u64 {
        let number = self.current.load().number + 1;
        self.current
            .store(Arc::new(Generation { number, component }));
        number
    }
}

/// Why a candidate component was refused.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The component file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// It does not compile, fit the world, or speak the host's version.
    #[error(transparent)]
    Load(#[from] RuntimeError),
    /// The component refuses the transform's format.
    #[error("the component refuses the transform's format: {0}")]
    Format(String),
    /// A fixture case gave other output than expected.
    #[error("fixture {} failed: {error}", case.display())]
    Fixture {
        /// The case folder.
        case: PathBuf,
        /// The first mismatch.
        #[source]
        error: crate::fixtures::FixtureError,
    },
}

impl SwapError {
    /// Stable label for metrics (`error_type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            SwapError::Read { .. } => "component_read_failed",
            SwapError::Load(RuntimeError::Compile(_)) => "component_compile_failed",
            SwapError::Load(RuntimeError::TypeCheck(_) | RuntimeError::Version { .. }) => {
                "component_type_check_failed"
            }
            SwapError::Load(_) => "component_load_failed",
            SwapError::Format(_) => "component_format_refused",
            SwapError::Fixture { .. } => "component_fixtures_failed",
        }
    }
}

/// What a watcher needs.
pub struct Watch {
    /// The transform's id.
    pub id: String,
    /// The component file.
    pub path: PathBuf,
    /// Fixture cases (`<dir>/<case>/`) a candidate must pass, if any.
    pub fixtures: Option<PathBuf>,
    /// How often the file is checked; `None`: only on reload requests.
    pub interval: Option<Duration>,
    /// The transform's live options: its format (a candidate must accept it) and its
    /// worker limits (the fixtures run under them).
    pub options: Arc<ArcSwap<LiveOptions>>,
    /// Where generations are installed.
    pub shared: Arc<SharedComponent>,
    /// The transform's counters.
    pub metrics: Arc<ComponentMetrics>,
}

/// Watches until the run ends: swaps in every new version of the file that passes.
/// `seen` is the file's fingerprint when the running component was read from it.
pub fn watch(plan: Watch, runtime: Runtime, control: Arc<Control>, seen: Fingerprint) {
    let files = [plan.path.clone()];
    let mut seen = seen;
    let mut requested = control.reloads();
    let mut checked = Instant::now();
    loop {
        let timer = plan
            .interval
            .map(|every| every.saturating_sub(checked.elapsed()));
        let asked = match control.wait(requested, timer) {
            Wake::Ended => return,
            Wake::Reload(count) => {
                requested = count;
                true
            }
            Wake::Timeout => false,
        };
        checked = Instant::now();
        let now = fingerprint(&files);
        if !asked && now == seen {
            continue;
        }
        seen = now;
        match candidate(&plan, &runtime) {
            Ok(component) => {
                let info = component.info.clone();
                let number = plan.shared.install(component);
                plan.metrics.count("component_swaps_total", 1);
                plan.metrics.gauge("component_generation", number as i64);
                record_info(&plan.metrics, &plan.shared.current());
                tracing::info!(message = "Component swapped in.", component_id = %plan.id, path = %plan.path.display(), generation = number, name = %info.name, version = %info.version, api_version = %info.api_version);
            }
            Err(error) => {
                plan.metrics.error(error.error_type(), 1);
                tracing::error!(message = "New component refused; the running one stays.", component_id = %plan.id, path = %plan.path.display(), %error);
            }
        }
    }
}

/// `component_info{name, version, api_version, generation} 1` for `generation`.
pub fn record_info(metrics: &ComponentMetrics, generation: &Generation) {
    let info = &generation.component.info;
    metrics.info(
        "component_info",
        vec![
            ("name", info.name.clone()),
            ("version", info.version.clone()),
            ("api_version", info.api_version.clone()),
            ("generation", generation.number.to_string()),
        ],
    );
}

/// Reads, compiles, type-checks and (with fixtures) tries the file's component.
fn candidate(plan: &Watch, runtime: &Runtime) -> Result<LoadedComponent, SwapError> {
    let bytes = std::fs::read(&plan.path).map_err(|error| SwapError::Read {
        path: plan.path.clone(),
        error,
    })?;
    let component = runtime.load(&bytes)?;
    let options = plan.options.load_full();
    if let Some(format) = &options.format {
        let mut worker = runtime.worker(&component, &options.limits)?;
        worker.check_format(format).map_err(|e| match e {
            CallError::InvalidFormat(message) => SwapError::Format(message),
            CallError::Runtime(error) => SwapError::from(error),
        })?;
    }
    if let Some(dir) = &plan.fixtures {
        for case in fixtures::cases(dir).map_err(|error| SwapError::Read {
            path: dir.clone(),
            error,
        })? {
            let mut worker = runtime.worker(&component, &options.limits)?;
            fixtures::run_case(&case, &mut worker)
                .map_err(|error| SwapError::Fixture { case, error })?;
        }
    }
    Ok(component)
}
