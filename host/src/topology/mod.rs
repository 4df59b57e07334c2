//! Builds a pipeline's components from its configuration, wires outputs to inputs with
//! bounded channels (backpressure), runs everything to completion and drains on stop.

pub mod output;
pub mod reload;

use crate::config::{DEAD_LETTER, Pipeline, SinkConfig, SourceConfig, TransformConfig};
use crate::lifecycle::{Failure, Lifecycle};
use crate::metadata::{self, SharedTable};
use crate::metrics::{Metrics, Totals};
use crate::runtime::{LoadedComponent, Runtime};
use crate::sinks;
use crate::sources;
use crate::transforms::swap::{self, ReloadRequests, SharedComponent, Watch};
use crate::transforms::wasm::{LiveOptions, WasmTransform};
use arc_swap::ArcSwap;
use output::{Input, Output};
use reload::{ConfigReloader, LiveTable, LiveTransform};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

/// A problem found while building the pipeline, naming the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BuildError {
    /// Dotted key (`transforms.enrich.component`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn build_error(key: impl Into<String>, message: impl std::fmt::Display) -> BuildError {
    BuildError {
        key: key.into(),
        message: message.to_string(),
    }
}

enum SourcePlan {
    Files {
        files: Vec<PathBuf>,
        batch_lines: usize,
        max_line_bytes: usize,
    },
    Stdin {
        batch_lines: usize,
        max_line_bytes: usize,
    },
    Kinesis(Box<sources::kinesis::KinesisSourceSpec>),
}

/// A table that changes while the topology runs.
struct WatchPlan {
    name: String,
    spec: metadata::TableSpec,
    shared: Arc<SharedTable>,
    metrics: Arc<crate::metrics::ComponentMetrics>,
    feed: Feed,
}

/// Where a table's changes come from.
enum Feed {
    /// Its files, checked at this interval, as they were before the first load.
    Files(Duration, metadata::reload::Fingerprint),
    /// A changelog stream.
    Stream(metadata::stream::StreamSpec),
}

struct TransformPlan {
    options: LiveOptions,
    component: LoadedComponent,
    /// The component file to watch for hot swaps, with its fingerprint when read.
    swap: Option<(PathBuf, metadata::reload::Fingerprint)>,
    reload_interval: Option<Duration>,
    fixtures: Option<PathBuf>,
    table: Option<Arc<SharedTable>>,
    /// A `druid` sink is downstream: batches with held lines go out whole.
    whole_batches: bool,
}

/// Everything checked and loaded, ready to run.
pub struct Topology {
    sources: BTreeMap<String, SourcePlan>,
    transforms: BTreeMap<String, TransformPlan>,
    sinks: BTreeMap<String, SinkConfig>,
    inputs: BTreeMap<String, Vec<String>>,
    /// Metadata tables by name.
    pub tables: BTreeMap<String, Arc<SharedTable>>,
    watched: Vec<WatchPlan>,
    /// Counters of every component.
    pub metrics: Metrics,
    /// Reload requests (SIGHUP, `POST /reload`) for the transforms' component watchers
    /// and the pipeline file.
    pub reload: Arc<ReloadRequests>,
    /// The pipeline file and its TOML, for reloading it.
    pipeline: (PathBuf, toml::Table),
    /// How long stopping may wait for sinks that retry.
    drain_timeout: Duration,
}

/// What a finished run leaves behind.
#[derive(Debug)]
pub struct RunSummary {
    /// Final counters by component id.
    pub metrics: BTreeMap<String, Totals>,
    /// Rendered `report` sinks that print to stdout, by id.
    pub reports: Vec<(String, String)>,
    /// The component that failed, and why: nothing it did not deliver was acknowledged.
    pub failure: Option<Failure>,
}

impl Topology {
    /// Loads metadata, compiles and type-checks components, checks formats and finds
    /// source files. Nothing runs yet.
    pub fn build(pipeline: Pipeline, runtime: &Runtime) -> Result<Topology, BuildError> {
        let metrics = Metrics::default();
        let pipeline_file = (pipeline.path.clone(), pipeline.toml.clone());
        let feeding_druid: Vec<String> = pipeline
            .config
            .transforms
            .keys()
            .filter(|id| pipeline.feeds_druid(id))
            .cloned()
            .collect();
        let config = pipeline.config;
        let mut tables = BTreeMap::new();
        let mut watched = Vec::new();
        for (name, table) in &config.metadata {
            let spec = table.spec();
            let seen = metadata::reload::fingerprint(&spec.watched_files());
            let (built, rejected) = metadata::load(&spec).map_err(|e| {
                let key = match e {
                    metadata::MetadataError::AwsRanges(_) => "aws_ip_ranges",
                    metadata::MetadataError::Read { .. } => "path",
                };
                build_error(format!("metadata.{name}.{key}"), e)
            })?;
            let counters = metrics.component(&format!("metadata.{name}"));
            metadata::reload::record_load(name, &built, &rejected, &counters);
            metadata::reload::record_size(&built, &counters);
            let shared = Arc::new(SharedTable::new(built));
            counters.gauge("metadata_table_version", shared.version() as i64);
            if let Some(interval) = table.reload_interval() {
                watched.push(WatchPlan {
                    name: name.clone(),
                    spec,
                    shared: shared.clone(),
                    metrics: counters,
                    feed: Feed::Files(interval, seen),
                });
            } else if let Some(stream) = table.stream() {
                watched.push(WatchPlan {
                    name: name.clone(),
                    spec,
                    shared: shared.clone(),
                    metrics: counters,
                    feed: Feed::Stream(stream),
                });
            }
            tables.insert(name.clone(), shared);
        }

        let mut sources = BTreeMap::new();
        for (id, source) in &config.sources {
            let plan = match source {
                SourceConfig::File {
                    path,
                    batch_lines,
                    max_line_bytes,
                } => SourcePlan::Files {
                    files: sources::file::expand(path)
                        .map_err(|e| build_error(format!("sources.{id}.path"), e))?,
                    batch_lines: *batch_lines,
                    max_line_bytes: *max_line_bytes,
                },
                SourceConfig::Stdin {
                    batch_lines,
                    max_line_bytes,
                } => SourcePlan::Stdin {
                    batch_lines: *batch_lines,
                    max_line_bytes: *max_line_bytes,
                },
                SourceConfig::AwsKinesisStreams { .. } => {
                    SourcePlan::Kinesis(Box::new(source.kinesis().expect("a kinesis source")))
                }
            };
            sources.insert(id.clone(), plan);
        }

        let mut transforms = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        let mut compiled: HashMap<Option<PathBuf>, LoadedComponent> = HashMap::new();
        for (id, transform) in &config.transforms {
            let TransformConfig::Wasm {
                inputs: transform_inputs,
                component,
                metadata,
                format,
                reload_interval_ms,
                fixtures,
                ..
            } = transform;
            let options = LiveOptions::from_config(transform);
            let limits = options.limits.clone();
            let key = format!("transforms.{id}.component");
            // Taken before the file is read, so a change during start-up is not missed.
            let swap = component.as_ref().map(|path| {
                (
                    path.clone(),
                    metadata::reload::fingerprint(std::slice::from_ref(path)),
                )
            });
            let loaded = match compiled.get(component) {
                Some(loaded) => loaded.clone(),
                None => {
                    let bytes = crate::embedded::component_bytes(component.as_deref())
                        .map_err(|e| build_error(&key, e))?;
                    let loaded = runtime.load(&bytes).map_err(|e| build_error(&key, e))?;
                    compiled.insert(component.clone(), loaded.clone());
                    loaded
                }
            };
            if let Some(format) = format {
                let mut worker = runtime
                    .worker(&loaded, &limits)
                    .map_err(|e| build_error(&key, e))?;
                if let Err(message) = worker
                    .check_format(format)
                    .map_err(|e| build_error(&key, e))?
                {
                    return Err(build_error(format!("transforms.{id}.format"), message));
                }
            }
            transforms.insert(
                id.clone(),
                TransformPlan {
                    options,
                    component: loaded,
                    swap,
                    reload_interval: (*reload_interval_ms > 0)
                        .then(|| Duration::from_millis(*reload_interval_ms)),
                    fixtures: fixtures.clone(),
                    table: metadata.as_ref().map(|name| tables[name].clone()),
                    whole_batches: feeding_druid.contains(id),
                },
            );
            inputs.insert(id.clone(), transform_inputs.clone());
        }
        for (id, sink) in &config.sinks {
            inputs.insert(id.clone(), sink.inputs().to_vec());
        }
        Ok(Topology {
            sources,
            transforms,
            sinks: config.sinks,
            inputs,
            tables,
            watched,
            metrics,
            reload: Arc::new(ReloadRequests::default()),
            pipeline: pipeline_file,
            drain_timeout: Duration::from_secs(config.drain_timeout_secs),
        })
    }

    /// Runs until every source is exhausted or `stop` is set, then drains: transforms
    /// finish what they hold, sinks flush. Returns the final counters and reports.
    /// A component that fails (see [`crate::lifecycle`]) stops the run; the summary
    /// names it.
    pub fn run(
        self,
        runtime: &Runtime,
        lifecycle: Arc<Lifecycle>,
    ) -> Result<RunSummary, BuildError> {
        // Table feeds run until the run ends, when dropping them stops them. File watchers
        // belong to the config reloader, which replaces them when their files change.
        let mut live_tables: BTreeMap<String, LiveTable> = BTreeMap::new();
        let mut _feeds: Vec<Box<dyn Send>> = Vec::new();
        for w in self.watched {
            match w.feed {
                Feed::Files(interval, seen) => {
                    let watcher = metadata::reload::Watcher::start(
                        w.name.clone(),
                        w.spec,
                        w.shared.clone(),
                        w.metrics.clone(),
                        interval,
                        seen,
                    );
                    live_tables.insert(
                        w.name,
                        LiveTable {
                            shared: w.shared,
                            metrics: w.metrics,
                            watcher: Some(watcher),
                        },
                    );
                }
                Feed::Stream(stream) => {
                    _feeds.push(Box::new(metadata::stream::StreamReader::start(
                        w.name, w.spec, stream, w.shared, w.metrics,
                    )))
                }
            }
        }
        for (name, shared) in &self.tables {
            live_tables
                .entry(name.clone())
                .or_insert_with(|| LiveTable {
                    shared: shared.clone(),
                    metrics: self.metrics.component(&format!("metadata.{name}")),
                    watcher: None,
                });
        }
        let mut live_transforms: BTreeMap<String, LiveTransform> = BTreeMap::new();
        // One bounded channel per consumer; every output it lists gets a sender.
        let mut outputs: HashMap<String, Output> = HashMap::new();
        let mut receivers: HashMap<String, Input> = HashMap::new();
        for (consumer, inputs) in &self.inputs {
            let (tx, rx) = output::channel(&component_key(&self.sinks, consumer), &lifecycle);
            for input in inputs {
                outputs
                    .entry(input.clone())
                    .or_default()
                    .connect(tx.clone());
            }
            receivers.insert(consumer.clone(), rx);
        }
        let mut take_output = |name: &str| outputs.remove(name).unwrap_or_default();

        let mut sink_threads: Vec<(String, Option<PathBuf>, SinkThread)> = Vec::new();
        for (id, sink) in self.sinks {
            let mut rx = receivers.remove(&id).expect("every sink has a channel");
            let metrics = self.metrics.component(&id);
            let key = format!("sinks.{id}");
            let report_path = match &sink {
                SinkConfig::Report { path, .. } => path.clone(),
                _ => None,
            };
            let (sink_id, lifecycle) = (id.clone(), lifecycle.clone());
            let handle = spawn(&id, move || {
                lifecycle.enter(&key);
                let result = run_sink(&sink_id, sink, &mut rx, &metrics, &lifecycle);
                // Failed before the input (and what is queued in it) is dropped.
                if let Err(cause) = &result {
                    lifecycle.fail(&key, cause);
                }
                drop(rx);
                result
            });
            sink_threads.push((id, report_path, handle));
        }

        // Component watchers and the config reloader run until the run ends.
        let swap_stop = Arc::new(AtomicBool::new(false));
        let mut helpers = Helpers {
            stop: swap_stop.clone(),
            threads: Vec::new(),
        };
        let mut other_threads = Vec::new();
        for (id, plan) in self.transforms {
            let mut rx = receivers
                .remove(&id)
                .expect("every transform has a channel");
            let worker = runtime
                .worker(&plan.component, &plan.options.limits)
                .map_err(|e| build_error(format!("transforms.{id}.component"), e))?;
            let shared = Arc::new(SharedComponent::new(plan.component.clone()));
            let options = Arc::new(ArcSwap::from_pointee(plan.options));
            let counters = self.metrics.component(&id);
            counters.gauge("component_generation", 1);
            swap::record_info(&counters, &shared.current());
            if let Some((path, seen)) = plan.swap {
                let watch = Watch {
                    id: id.clone(),
                    path,
                    fixtures: plan.fixtures.clone(),
                    interval: plan.reload_interval,
                    options: options.clone(),
                    shared: shared.clone(),
                    metrics: self.metrics.component(&id),
                };
                let (runtime, requests, stop) =
                    (runtime.clone(), self.reload.clone(), swap_stop.clone());
                helpers.threads.push(spawn(&format!("{id}.swap"), move || {
                    swap::watch(watch, runtime, requests, stop, seen)
                }));
            }
            live_transforms.insert(
                id.clone(),
                LiveTransform {
                    options: options.clone(),
                    component: shared.clone(),
                },
            );
            let transform = WasmTransform {
                id: id.clone(),
                worker,
                component: shared,
                generation: 1,
                table: plan.table,
                options,
                unlogged_dead_letters: crate::transforms::wasm::LOGGED_DEAD_LETTERS,
                output: take_output(&id),
                dead_letters: take_output(&format!("{id}.{DEAD_LETTER}")),
                metrics: self.metrics.component(&id),
                whole_batches: plan.whole_batches,
                waiting: Default::default(),
            };
            let (lifecycle, key) = (lifecycle.clone(), format!("transforms.{id}"));
            other_threads.push(spawn(&id, move || {
                lifecycle.enter(&key);
                transform.run(&mut rx);
            }));
        }
        let reloader = ConfigReloader {
            path: self.pipeline.0,
            running: self.pipeline.1,
            transforms: live_transforms,
            tables: live_tables,
            metrics: self.metrics.component("config"),
            runtime: runtime.clone(),
        };
        let (requests, reload_stop) = (self.reload.clone(), swap_stop.clone());
        helpers.threads.push(spawn("config-reload", move || {
            reloader.run(requests, reload_stop)
        }));
        for (id, plan) in self.sources {
            let output = take_output(&id);
            let dead_letters = take_output(&format!("{id}.{DEAD_LETTER}"));
            let source_id = id.clone();
            let metrics = self.metrics.component(&id);
            let lifecycle = lifecycle.clone();
            other_threads.push(spawn(&id, move || {
                let key = format!("sources.{source_id}");
                lifecycle.enter(&key);
                let stop = lifecycle.stop_flag();
                let to = |batch_lines, max_line_bytes| sources::Sink {
                    component: &source_id,
                    batch_lines,
                    max_line_bytes,
                    output: &output,
                    dead_letters: &dead_letters,
                    metrics: &metrics,
                };
                match plan {
                    SourcePlan::Files {
                        files,
                        batch_lines,
                        max_line_bytes,
                    } => sources::file::run(files, to(batch_lines, max_line_bytes), stop),
                    SourcePlan::Stdin {
                        batch_lines,
                        max_line_bytes,
                    } => sources::stdin::run(to(batch_lines, max_line_bytes), stop),
                    SourcePlan::Kinesis(spec) => {
                        if let Err(cause) = sources::kinesis::run(
                            &source_id,
                            &spec,
                            output,
                            dead_letters,
                            &metrics,
                            &lifecycle,
                        ) {
                            lifecycle.fail(&key, cause);
                        }
                    }
                }
            }));
        }
        drop(outputs);
        // Once stopping starts, the drain deadline runs: retries give up when it passes.
        let drained = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (lifecycle, drained, deadline) =
                (lifecycle.clone(), drained.clone(), self.drain_timeout);
            spawn("drain-deadline", move || {
                lifecycle.watch_drain(deadline, &drained)
            })
        };

        for handle in other_threads {
            // A panic has already failed the pipeline (before the thread unwound).
            let _ = handle.join();
        }
        let mut reports = Vec::new();
        for (id, report_path, handle) in sink_threads {
            if let Ok(Ok(Some(report))) = handle.join() {
                match report_path {
                    Some(path) => {
                        if let Err(e) = std::fs::write(&path, &report) {
                            lifecycle
                                .fail(&format!("sinks.{id}"), format!("{}: {e}", path.display()));
                        }
                    }
                    None => reports.push((id, report)),
                }
            }
        }
        drained.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = watchdog.join();
        Ok(RunSummary {
            metrics: self.metrics.snapshot(),
            reports,
            failure: lifecycle.failure(),
        })
    }
}

/// The config key of consumer `id`: `sinks.<id>` or `transforms.<id>`.
fn component_key(sinks: &BTreeMap<String, SinkConfig>, id: &str) -> String {
    if sinks.contains_key(id) {
        format!("sinks.{id}")
    } else {
        format!("transforms.{id}")
    }
}

/// Runs one sink until its input ends; a report sink returns its rendered report.
fn run_sink(
    id: &str,
    sink: SinkConfig,
    input: &mut Input,
    metrics: &crate::metrics::ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<Option<String>, String> {
    match &sink {
        SinkConfig::File { path, append, .. } => {
            sinks::file::run(id, path, *append, input, metrics, lifecycle)?
        }
        SinkConfig::AwsKinesisStreams { .. } => {
            let spec = sink.kinesis().expect("a kinesis sink");
            sinks::kinesis::run(id, &spec, input, metrics, lifecycle)?
        }
        SinkConfig::Druid { .. } => {
            let spec = sink.druid().expect("a druid sink");
            sinks::druid::run(id, &spec, input, metrics, lifecycle)?
        }
        SinkConfig::Stdout { .. } => sinks::stdout::run(input, metrics)?,
        SinkConfig::Report {
            app_key,
            region_key,
            zone_key,
            top,
            ..
        } => {
            let keys = sinks::report::ReportKeys::new(app_key, region_key, zone_key);
            return Ok(Some(sinks::report::run(input, &keys, *top, metrics)));
        }
    }
    Ok(None)
}

/// A sink's thread: `Ok(Some(report))` for report sinks, `Err(cause)` on failure.
type SinkThread = JoinHandle<Result<Option<String>, String>>;

/// Threads that serve a run (component watchers, the config reloader, which owns the
/// metadata file watchers): stopped and joined when the run ends, however it ends.
struct Helpers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn<T: Send + 'static>(id: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(format!("component-{id}"))
        .spawn(f)
        .expect("spawn component thread")
}
