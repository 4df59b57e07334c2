//! The WebAssembly runtime: one [`Engine`], components compiled once and pre-linked into
//! an [`InstancePre`](wasmtime::component::InstancePre), one [`Store`] per worker.
//!
//! Sandbox: the component's imports other than the `lookup` interface (a std Rust guest
//! imports a few `wasi:*` interfaces it never calls) are defined as traps, so it gets no
//! filesystem, network, clock or environment. Every call runs under an epoch deadline and
//! a memory limit; a trap or timeout poisons the store, so the worker drops it, builds a
//! fresh instance and retries the batch once.

pub mod bindings;
pub mod component_cache;
pub mod local_side;
pub mod records;

use crate::metadata::Table;
use bindings::exports::flowenrich::enrich::transform::ComponentInfo;
pub use bindings::flowenrich::enrich::types::{ColumnKind, LineError, ProcessOptions};
use bindings::{Enricher, EnricherPre};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

/// The WIT package version this host speaks; components must report the same.
pub const API_VERSION: &str = "0.4.0";

/// Bytes of a pooled linear memory kept resident between instances (about what the
/// component touches for a batch of a few thousand lines).
const KEEP_RESIDENT_BYTES: usize = 8 << 20;

/// How often the epoch ticker advances the engine's epoch.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors at the runtime boundary.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("cannot configure the wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The bytes are not a valid component for this engine.
    #[error("cannot compile component: {0:#}")]
    Compile(wasmtime::Error),
    /// The component does not fit the `enricher` world (wrong WIT version or shape).
    #[error("component does not implement flowenrich:enrich/enricher@{API_VERSION}: {0:#}")]
    TypeCheck(wasmtime::Error),
    /// The component reports a different contract version.
    #[error("component speaks API version {found}, host speaks {API_VERSION}")]
    Version {
        /// What the component reported.
        found: String,
    },
    /// Instantiation or a call trapped or timed out.
    #[error("component trapped: {0:#}")]
    Trap(wasmtime::Error),
    /// The component's result does not hold together (spans outside its output, an
    /// owner id no lookup gave, output that is not UTF-8).
    #[error("component returned an invalid result: {0}")]
    InvalidResult(#[from] records::InvalidResult),
}

/// Why a call on a batch or a format gave no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The component refused the format (of the call, or of an S3 header line), naming
    /// the bad field: a problem of the input, not of the component.
    #[error("invalid format: {0}")]
    InvalidFormat(String),
    /// The call failed: a trap, a timeout, an unusable result.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl CallError {
    /// Stable label for metrics (`error_type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            CallError::InvalidFormat(_) => "invalid_format",
            CallError::Runtime(error) => error.error_type(),
        }
    }
}

impl RuntimeError {
    /// Stable label for metrics (`error_type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            RuntimeError::Engine(_) => "engine",
            RuntimeError::Compile(_) => "compile",
            RuntimeError::TypeCheck(_) => "type_check",
            RuntimeError::Version { .. } => "api_version",
            RuntimeError::Trap(_) => "trap",
            RuntimeError::InvalidResult(_) => "invalid_result",
        }
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Interrupt calls that overrun their worker's `batch_timeout`. Only benchmarks turn
    /// this off, to measure its cost; the CLI and pipelines always run with it.
    pub epoch_interruption: bool,
    /// Largest linear memory any instance may grow to (sizes the pooling allocator).
    pub max_memory_bytes: usize,
    /// Where compiled components are kept for the next start
    /// ([`component_cache::default_dir`]); `None`: compiled at every start.
    pub component_cache: Option<std::path::PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            epoch_interruption: true,
            max_memory_bytes: WorkerLimits::default().memory_limit_bytes,
            component_cache: component_cache::default_dir(),
        }
    }
}

/// Limits of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Longest time one batch may take inside the component.
    pub batch_timeout: Duration,
    /// Largest linear memory the instance may grow to (capped by the engine's maximum).
    pub memory_limit_bytes: usize,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits {
            batch_timeout: Duration::from_secs(5),
            memory_limit_bytes: 512 << 20,
        }
    }
}

/// The engine plus its epoch ticker. Create one per process; clones share both (the
/// ticker stops when the last clone is dropped).
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    options: RuntimeOptions,
    _ticker: Arc<Ticker>,
}

/// Stops the epoch ticker when dropped.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Configures the engine (pooling allocator, epoch interruption, no async).
    pub fn new(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(options.epoch_interruption);
        // For profiling: `FLOWENRICH_PERFMAP=1` names the compiled wasm functions for `perf`.
        if std::env::var_os("FLOWENRICH_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Room for every transform's workers on a large host, and then some.
        let cores = crate::util::cores();
        let instances = (4 * cores as u32 + 32).max(64);
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_component_instances(instances)
            .total_core_instances(instances)
            .total_memories(instances)
            .total_tables(instances)
            .max_memory_size(options.max_memory_bytes)
            // A fresh instance (after a trap or a hot swap) reuses a pooled memory slot;
            // keeping its first pages resident (zeroed, not decommitted) spares the first
            // batch the page faults of growing into them again.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        if options.epoch_interruption {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("epoch-ticker".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .expect("spawn epoch ticker");
        }
        Ok(Runtime {
            engine,
            options,
            _ticker: Arc::new(Ticker(stop_ticker)),
        })
    }

    /// The options this runtime was built with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Compiles a component ahead of time for this engine (the `.cwasm` bytes, an ELF
    /// object that `objdump -d` can show).
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, RuntimeError> {
        self.engine
            .precompile_component(bytes)
            .map_err(RuntimeError::Compile)
    }

    /// Compiles and type-checks a component, then asks it for its identity.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedComponent, RuntimeError> {
        let (component, _) =
            component_cache::load(&self.engine, bytes, self.options.component_cache.as_deref())
                .map_err(RuntimeError::Compile)?;
        let mut linker: Linker<HostState> = Linker::new(&self.engine);
        bindings::flowenrich::enrich::lookup::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |state| state,
        )
        .map_err(RuntimeError::TypeCheck)?;
        records::add_to_linker(&mut linker).map_err(RuntimeError::TypeCheck)?;
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(RuntimeError::TypeCheck)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(RuntimeError::TypeCheck)?;
        let pre = EnricherPre::new(instance_pre).map_err(RuntimeError::TypeCheck)?;
        let mut loaded = LoadedComponent {
            pre,
            info: ComponentInfo {
                name: String::new(),
                version: String::new(),
                api_version: String::new(),
                fields: Vec::new(),
            },
        };
        let mut worker = self.worker(&loaded, &WorkerLimits::default())?;
        let info = worker.info()?;
        if info.api_version != API_VERSION {
            return Err(RuntimeError::Version {
                found: info.api_version,
            });
        }
        loaded.info = info;
        Ok(loaded)
    }

    /// A worker with its own store and instance.
    pub fn worker(
        &self,
        component: &LoadedComponent,
        limits: &WorkerLimits,
    ) -> Result<Worker, RuntimeError> {
        let mut limits = limits.clone();
        limits.memory_limit_bytes = limits.memory_limit_bytes.min(self.options.max_memory_bytes);
        let mut worker = Worker {
            engine: self.engine.clone(),
            pre: component.pre.clone(),
            epoch_interruption: self.options.epoch_interruption,
            limits,
            max_memory_bytes: self.options.max_memory_bytes,
            instance: None,
        };
        worker.instance()?;
        Ok(worker)
    }
}

/// A compiled, type-checked component ready to instantiate.
#[derive(Clone)]
pub struct LoadedComponent {
    pre: EnricherPre<HostState>,
    /// What the component says it is.
    pub info: ComponentInfo,
}

/// Per-store host data: the table snapshot of the batch in flight and the limits.
pub struct HostState {
    table: Arc<Table>,
    limits: StoreLimits,
    /// What `records.emit` put together during the call in flight.
    records: Option<Result<records::Emitted, records::InvalidResult>>,
    /// The most records the batch in flight can have (each needs a line of its own).
    max_lines: usize,
    /// Whether the batch in flight asked for JSON.
    json: bool,
    /// How many columns the batch in flight asked for.
    columns: usize,
    /// Whether `records.emit` keeps the JSON drafts for the host to put together after
    /// the call (the owners may still change: local sides by interface).
    defer_json: bool,
}

impl bindings::flowenrich::enrich::lookup::Host for HostState {
    fn lookup_v4(&mut self, addrs: Vec<u32>, times: Vec<u64>) -> Vec<u32> {
        let mut owners = Vec::new();
        self.table.lookup_v4_batch(&addrs, &times, &mut owners);
        owners
    }

    fn lookup_v6(&mut self, addrs: Vec<u64>, times: Vec<u64>) -> Vec<u32> {
        let mut owners = Vec::new();
        self.table.lookup_v6_batch(&addrs, &times, &mut owners);
        owners
    }
}

impl bindings::flowenrich::enrich::types::Host for HostState {}

/// One instance of the component in its own store; not shared between threads.
pub struct Worker {
    engine: Engine,
    pre: EnricherPre<HostState>,
    epoch_interruption: bool,
    limits: WorkerLimits,
    max_memory_bytes: usize,
    instance: Option<(Store<HostState>, Enricher)>,
}

impl Worker {
    fn instance(&mut self) -> Result<&mut (Store<HostState>, Enricher), RuntimeError> {
        if self.instance.is_none() {
            let limits = StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_limit_bytes)
                .trap_on_grow_failure(true)
                .build();
            let mut store = Store::new(
                &self.engine,
                HostState {
                    table: Arc::new(Table::default()),
                    records: None,
                    max_lines: 0,
                    json: true,
                    columns: 0,
                    defer_json: false,
                    limits,
                },
            );
            store.limiter(|state| &mut state.limits);
            if let Some(ticks) = self.deadline_ticks() {
                store.set_epoch_deadline(ticks);
            }
            let enricher = self
                .pre
                .instantiate(&mut store)
                .map_err(RuntimeError::Trap)?;
            self.instance = Some((store, enricher));
        }
        Ok(self.instance.as_mut().expect("just created"))
    }

    /// Epoch ticks a call may run, or `None` when epoch interruption is off.
    fn deadline_ticks(&self) -> Option<u64> {
        self.epoch_interruption
            .then(|| (self.limits.batch_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64)
    }

    /// Runs `call` on the instance; a trap drops the store so the next call starts fresh.
    fn call<R>(
        &mut self,
        table: Option<Arc<Table>>,
        call: impl Fn(&Enricher, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, RuntimeError> {
        let deadline = self.deadline_ticks();
        let (store, enricher) = self.instance()?;
        if let Some(table) = table {
            store.data_mut().table = table;
        }
        if let Some(ticks) = deadline {
            store.set_epoch_deadline(ticks);
        }
        let result = call(enricher, store);
        if result.is_err() {
            self.instance = None;
        }
        result.map_err(RuntimeError::Trap)
    }

    /// The limits in effect.
    pub fn limits(&self) -> &WorkerLimits {
        &self.limits
    }

    /// New limits from the next call on (on a fresh instance, so a new memory limit
    /// applies too); capped by the engine's maximum as at creation.
    pub fn set_limits(&mut self, limits: &WorkerLimits) {
        let mut limits = limits.clone();
        limits.memory_limit_bytes = limits.memory_limit_bytes.min(self.max_memory_bytes);
        if limits != self.limits {
            self.limits = limits;
            self.instance = None;
        }
    }

    /// Runs `component` from the next call on (a fresh instance of it); what this worker
    /// processed so far is unaffected. This is how a transform picks up a hot-swapped
    /// component between batches.
    pub fn set_component(&mut self, component: &LoadedComponent) {
        self.pre = component.pre.clone();
        self.instance = None;
    }

    /// The component's identity.
    pub fn info(&mut self) -> Result<ComponentInfo, RuntimeError> {
        self.call(None, |e, s| e.flowenrich_enrich_transform().call_info(s))
    }

    /// Validates a format with the component; returns it canonical, or
    /// [`CallError::InvalidFormat`] naming the bad field.
    pub fn check_format(&mut self, format: &str) -> Result<String, CallError> {
        self.call(None, |e, s| {
            e.flowenrich_enrich_transform().call_check_format(s, format)
        })?
        .map_err(CallError::InvalidFormat)
    }

    /// Processes one batch against `table`; `stream_start` marks the first batch of a
    /// stream (whose first line may be an S3 header). A trap or timeout is retried once
    /// on a fresh instance before it is returned. The records come back put together:
    /// each line's JSON from the component with its owners' attributes from `table`.
    pub fn process(
        &mut self,
        format: Option<&str>,
        lines: &str,
        stream_start: bool,
        table: &Arc<Table>,
    ) -> Result<Processed, CallError> {
        self.process_holding(format, lines, stream_start, false, table)
    }

    /// [`Worker::process`]; with `hold_unattributed`, lines with an unattributed side are
    /// left out of the output and listed in `held` (see the WIT `transform.process`).
    pub fn process_holding(
        &mut self,
        format: Option<&str>,
        lines: &str,
        stream_start: bool,
        hold_unattributed: bool,
        table: &Arc<Table>,
    ) -> Result<Processed, CallError> {
        let options = ProcessOptions {
            format: format.map(str::to_string),
            stream_start,
            hold_unattributed,
            json: true,
            columns: Vec::new(),
        };
        self.process_with(lines, &options, table)
    }

    /// Processes one batch as `options` say (see the WIT `transform.process`): its JSON
    /// when `options.json`, and the columns `options.columns` names. Where the table has
    /// network interfaces' timelines (or local owner fields), each record's local side is
    /// attributed by its interface or its own fields ([`local_side`]) before the JSON is
    /// put together.
    pub fn process_with(
        &mut self,
        lines: &str,
        options: &ProcessOptions,
        table: &Arc<Table>,
    ) -> Result<Processed, CallError> {
        let asked = options.columns.len();
        let local_columns = local_side::columns(table);
        let by_interface = !local_columns.is_empty();
        let extended;
        let options = if by_interface {
            let mut with = options.clone();
            with.columns.extend(local_columns);
            extended = with;
            &extended
        } else {
            options
        };
        let attempt = |worker: &mut Worker| {
            worker.call(Some(table.clone()), |e, s| {
                let state = s.data_mut();
                state.records = None;
                // An emitted line is at least one byte and a newline (the last one
                // without its newline).
                state.max_lines = lines.len().div_ceil(2);
                state.json = options.json;
                state.columns = options.columns.len();
                state.defer_json = by_interface;
                let result = e
                    .flowenrich_enrich_transform()
                    .call_process(&mut *s, lines, options)?;
                Ok((result, s.data_mut().records.take()))
            })
        };
        let result = match attempt(self) {
            Ok(result) => result,
            Err(first) => {
                tracing::warn!(message = "Component trapped; retrying the batch on a fresh instance.", error = %first);
                attempt(self)?
            }
        };
        let (mut result, mut emitted) = match result {
            (Ok(result), Some(records)) => (result, records.map_err(RuntimeError::from)?),
            (Ok(result), None) if result.emitted == 0 => (result, records::Emitted::default()),
            (Ok(_), None) => {
                return Err(RuntimeError::from(records::InvalidResult::NotEmitted).into());
            }
            (Err(message), _) => return Err(CallError::InvalidFormat(message)),
        };
        if emitted.lines != result.emitted as usize {
            let invalid = records::InvalidResult::Count {
                emitted: result.emitted,
                records: emitted.lines,
            };
            return Err(RuntimeError::from(invalid).into());
        }
        let mut columns = if options.columns.is_empty() {
            None
        } else {
            let columns = RawColumns {
                kinds: std::mem::take(&mut result.column_kinds),
                values: std::mem::take(&mut emitted.values),
                owners: std::mem::take(&mut emitted.owners),
            };
            columns
                .check(lines, options.columns.len())
                .map_err(RuntimeError::from)?;
            Some(columns)
        };
        let mut local_sides = local_side::LocalSides::default();
        if by_interface && let Some(all) = columns.as_mut() {
            let width = options.columns.len();
            local_sides = local_side::attribute(
                table,
                lines,
                &all.kinds[asked..],
                &all.values,
                width,
                asked,
                &mut all.owners,
            );
            result.attributed = result.attributed + local_sides.newly_attributed
                - local_sides.disagreements.min(result.attributed);
            result.unattributed = (result.unattributed + local_sides.disagreements)
                .saturating_sub(local_sides.newly_attributed);
            if options.json {
                emitted.text =
                    records::assemble(table, &emitted.drafts, &emitted.spans, &all.owners)
                        .map_err(RuntimeError::from)?;
            }
            columns = all.without_columns_after(asked, width);
        }
        Ok(Processed {
            output: emitted.text,
            emitted: result.emitted,
            errors: result.errors,
            headers: result.headers,
            held: result.held,
            attributed: result.attributed,
            unattributed: result.unattributed,
            format: result.format,
            columns,
            local_sides,
        })
    }
}

/// The columns of a processed batch, as the component handed them over.
#[derive(Debug, Clone, Default)]
pub struct RawColumns {
    /// How to read each column.
    pub kinds: Vec<ColumnKind>,
    /// Each record's values, row after row (`u64::MAX`: null).
    pub values: Vec<u64>,
    /// Each record's source and destination owner.
    pub owners: Vec<u32>,
}

impl RawColumns {
    /// The first `keep` of `width` columns per record (`None` when that is none): what
    /// the caller asked for, without the columns the host added for itself.
    fn without_columns_after(&mut self, keep: usize, width: usize) -> Option<RawColumns> {
        if keep == 0 {
            return None;
        }
        self.kinds.truncate(keep);
        let rows = self.values.len() / width.max(1);
        for row in 0..rows {
            self.values
                .copy_within(row * width..row * width + keep, row * keep);
        }
        self.values.truncate(rows * keep);
        Some(std::mem::take(self))
    }

    /// Checks that there is a kind per column and that every text value is a range of
    /// `lines` on character boundaries, so that reading them later cannot fail.
    fn check(&self, lines: &str, columns: usize) -> Result<(), records::InvalidResult> {
        if self.kinds.len() != columns {
            return Err(records::InvalidResult::Kinds {
                kinds: self.kinds.len(),
                columns,
            });
        }
        for (at, &value) in self.values.iter().enumerate() {
            if self.kinds[at % columns] != ColumnKind::Text || value == u64::MAX {
                continue;
            }
            let (start, end) = ((value >> 32) as u32, value as u32);
            if lines.get(start as usize..end as usize).is_none() {
                return Err(records::InvalidResult::Span {
                    start,
                    end,
                    len: lines.len(),
                });
            }
        }
        Ok(())
    }
}

/// A processed batch: the WIT `batch-result` with its records put together.
#[derive(Debug, Clone)]
pub struct Processed {
    /// One JSON object per emitted line, each followed by `\n`, in input order.
    pub output: String,
    /// How many objects `output` holds.
    pub emitted: u32,
    /// Rejected lines with their reasons.
    pub errors: Vec<LineError>,
    /// Index of the header line consumed as the format, if any.
    pub headers: Vec<u32>,
    /// Lines held back for late metadata.
    pub held: Vec<u32>,
    /// Sides attributed among the emitted lines.
    pub attributed: u32,
    /// Sides with an address and a time left unattributed among the emitted lines.
    pub unattributed: u32,
    /// The format in effect after the batch, canonical.
    pub format: String,
    /// The records' columns, when the batch asked for any.
    pub columns: Option<RawColumns>,
    /// What attributing local sides by interface changed (all zero without interface
    /// timelines in the table).
    pub local_sides: local_side::LocalSides,
}
