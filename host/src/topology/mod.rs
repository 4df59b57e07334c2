//! Builds a pipeline's components from their configs, wires outputs to inputs with
//! bounded channels (backpressure), runs everything to completion and drains on stop.
//!
//! The topology knows no component kind: each config builds its running part
//! ([`crate::sources::SourceKind::build`], [`crate::transforms::TransformKind::build`],
//! [`crate::sinks::SinkKind::build`], [`crate::metadata::MetadataKind::follow`]).

pub mod output;
pub mod reload;

pub use crate::config::BuildError;
use crate::config::{DEAD_LETTER, Pipeline};
use crate::control::Control;
use crate::lifecycle::{Failure, Lifecycle};
use crate::metadata::{self, MetadataConfig, SharedTable};
use crate::metrics::{ComponentMetrics, Metrics, Totals};
use crate::runtime::Runtime;
use crate::sinks::{BuiltSink, SinkContext};
use crate::sources::{BuiltSource, SourceContext};
use crate::transforms::{TransformBuildContext, TransformContext, TransformPlan, spawn};
use output::{Input, Output};
use reload::{ConfigReloader, LiveTable};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A table built at start-up, with what keeps it current.
struct TablePlan {
    config: MetadataConfig,
    shared: Arc<SharedTable>,
    metrics: Arc<ComponentMetrics>,
    /// Its files' fingerprint, taken before the first build.
    seen: metadata::file::Fingerprint,
}

/// Everything checked and loaded, ready to run.
pub struct Topology {
    sources: BTreeMap<String, BuiltSource>,
    transforms: BTreeMap<String, Box<dyn TransformPlan>>,
    sinks: BTreeMap<String, BuiltSink>,
    inputs: BTreeMap<String, Vec<String>>,
    /// Metadata tables by name.
    pub tables: BTreeMap<String, Arc<SharedTable>>,
    table_plans: BTreeMap<String, TablePlan>,
    /// Counters of every component.
    pub metrics: Metrics,
    /// Reload requests (SIGHUP, `POST /reload`) for the transforms' component watchers
    /// and the pipeline file, and the end of the run for every helper.
    pub control: Arc<Control>,
    /// The pipeline as it runs, for reloading it.
    pipeline: Pipeline,
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
        let config = &pipeline.config;
        // The tables load on a thread of their own while the components compile: the
        // two are most of a start, and neither needs the other.
        let mut components = Default::default();
        let table_plans = std::thread::scope(|scope| {
            let tables = scope.spawn(|| {
                let mut table_plans = BTreeMap::new();
                for (name, table) in &config.metadata {
                    table_plans.insert(name.clone(), build_table(name, table, &metrics)?);
                }
                Ok::<_, BuildError>(table_plans)
            });
            for transform in config.transforms.values() {
                match transform {
                    crate::transforms::TransformConfig::Wasm(wasm) => {
                        crate::transforms::wasm::precompile(wasm, runtime, &mut components)
                    }
                }
            }
            tables
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let tables: BTreeMap<String, Arc<SharedTable>> = table_plans
            .iter()
            .map(|(name, plan)| (name.clone(), plan.shared.clone()))
            .collect();
        let mut sources = BTreeMap::new();
        for (id, source) in &config.sources {
            sources.insert(id.clone(), source.kind().build(id)?);
        }
        let mut transforms = BTreeMap::new();
        let mut inputs = BTreeMap::new();
        for (id, transform) in &config.transforms {
            let mut cx = TransformBuildContext {
                runtime,
                tables: &tables,
                components: &mut components,
                whole_batches: pipeline.feeds_druid(id),
                needs: pipeline.output_needs(id),
            };
            transforms.insert(id.clone(), transform.kind().build(id, &mut cx)?);
            inputs.insert(id.clone(), transform.kind().inputs().to_vec());
        }
        let mut sinks = BTreeMap::new();
        for (id, sink) in &config.sinks {
            sinks.insert(id.clone(), sink.kind().build(id)?);
            inputs.insert(id.clone(), sink.kind().inputs().to_vec());
        }
        Ok(Topology {
            sources,
            transforms,
            sinks,
            inputs,
            tables,
            table_plans,
            metrics,
            control: Arc::new(Control::default()),
            pipeline,
        })
    }

    /// Runs until every source is exhausted or a stop is requested, then drains:
    /// transforms finish what they hold, sinks flush. Returns the final counters and
    /// reports. A component that fails (see [`crate::lifecycle`]) stops the run; the
    /// summary names it.
    pub fn run(
        self,
        runtime: &Runtime,
        lifecycle: Arc<Lifecycle>,
    ) -> Result<RunSummary, BuildError> {
        let Topology {
            sources,
            transforms,
            sinks,
            inputs,
            table_plans,
            metrics,
            control,
            pipeline,
            ..
        } = self;
        let drain_timeout = Duration::from_secs(pipeline.config.global.drain_timeout_secs);
        let mut wiring = Wiring::new(&inputs, &sinks, &lifecycle);
        let sink_threads = start_sinks(sinks, &mut wiring, &metrics, &lifecycle);

        // Component watchers and the config reloader run until the run ends.
        let mut helpers = Helpers {
            control: control.clone(),
            threads: Vec::new(),
        };
        let mut live_transforms = BTreeMap::new();
        let mut transform_threads = Vec::new();
        for (id, plan) in transforms {
            let mut input = wiring.input(&id);
            let started = plan.start(TransformContext {
                output: wiring.output(&id),
                dead_letters: wiring.output(&format!("{id}.{DEAD_LETTER}")),
                metrics: metrics.component(&id),
                lifecycle: lifecycle.clone(),
                runtime: runtime.clone(),
                control: control.clone(),
                id: id.clone(),
            })?;
            let (key, lifecycle, run) =
                (format!("transforms.{id}"), lifecycle.clone(), started.run);
            transform_threads.push(spawn(&id, move || {
                lifecycle.enter(&key);
                if let Err(cause) = run(&mut input) {
                    lifecycle.fail(&key, cause);
                }
            }));
            helpers.threads.extend(started.helpers);
            live_transforms.insert(id, started.live);
        }
        let reloader = ConfigReloader {
            pipeline,
            transforms: live_transforms,
            tables: follow_tables(table_plans),
            metrics: metrics.component("config"),
            runtime: runtime.clone(),
        };
        let reload_control = control.clone();
        helpers
            .threads
            .push(spawn("config-reload", move || reloader.run(reload_control)));
        let source_threads = start_sources(sources, &mut wiring, &metrics, &lifecycle);
        drop(wiring);
        // Once stopping starts, the drain deadline runs: retries give up when it passes.
        let watchdog = {
            let lifecycle = lifecycle.clone();
            spawn("drain-deadline", move || {
                lifecycle.watch_drain(drain_timeout)
            })
        };
        for handle in source_threads.into_iter().chain(transform_threads) {
            // A panic has already failed the pipeline (before the thread unwound).
            let _ = handle.join();
        }
        let mut reports = Vec::new();
        for (id, handle) in sink_threads {
            if let Ok(Some(report)) = handle.join() {
                reports.push((id, report));
            }
        }
        lifecycle.drained();
        let _ = watchdog.join();
        drop(helpers);
        Ok(RunSummary {
            metrics: metrics.snapshot(),
            reports,
            failure: lifecycle.failure(),
        })
    }
}

/// Builds table `name` from its settings, with its counters.
fn build_table(
    name: &str,
    table: &MetadataConfig,
    metrics: &Metrics,
) -> Result<TablePlan, BuildError> {
    let spec = table.kind().table().spec();
    let seen = metadata::file::fingerprint(&spec.watched_files());
    let (built, rejected) = metadata::load(&spec).map_err(|e| {
        let key = match e {
            metadata::MetadataError::AwsRanges(_) => "aws_ip_ranges",
            metadata::MetadataError::Read { .. } => "path",
        };
        BuildError::new(format!("metadata.{name}.{key}"), e)
    })?;
    let counters = metrics.component(&format!("metadata.{name}"));
    metadata::file::record_load(name, &built, &rejected, &counters);
    metadata::file::record_size(&built, &counters);
    let shared = Arc::new(SharedTable::new(built));
    counters.gauge("metadata_table_version", shared.version() as i64);
    Ok(TablePlan {
        config: table.clone(),
        shared,
        metrics: counters,
        seen,
    })
}

/// Starts what keeps each table current; the reloader owns them from then on.
fn follow_tables(plans: BTreeMap<String, TablePlan>) -> BTreeMap<String, LiveTable> {
    plans
        .into_iter()
        .map(|(name, plan)| {
            let follower = plan.config.kind().follow(
                &name,
                plan.shared.clone(),
                plan.metrics.clone(),
                plan.seen,
            );
            let live = LiveTable {
                shared: plan.shared,
                metrics: plan.metrics,
                follower,
            };
            (name, live)
        })
        .collect()
}

/// The channels between components: one bounded channel per consumer, whose sender
/// every output it lists gets.
struct Wiring {
    outputs: HashMap<String, Output>,
    inputs: HashMap<String, Input>,
}

impl Wiring {
    fn new(
        inputs: &BTreeMap<String, Vec<String>>,
        sinks: &BTreeMap<String, BuiltSink>,
        lifecycle: &Arc<Lifecycle>,
    ) -> Wiring {
        let mut wiring = Wiring {
            outputs: HashMap::new(),
            inputs: HashMap::new(),
        };
        for (consumer, listed) in inputs {
            let section = if sinks.contains_key(consumer) {
                "sinks"
            } else {
                "transforms"
            };
            let (tx, rx) = output::channel(&format!("{section}.{consumer}"), lifecycle);
            for input in listed {
                wiring
                    .outputs
                    .entry(input.clone())
                    .or_default()
                    .connect(tx.clone());
            }
            wiring.inputs.insert(consumer.clone(), rx);
        }
        wiring
    }

    /// The output `name` (`<id>` or `<id>.dead_letter`); unconnected if nothing reads it.
    fn output(&mut self, name: &str) -> Output {
        self.outputs.remove(name).unwrap_or_default()
    }

    /// Consumer `id`'s input.
    fn input(&mut self, id: &str) -> Input {
        self.inputs
            .remove(id)
            .expect("every consumer has a channel")
    }
}

/// A sink's thread: `Some(report)` for a report to print.
type SinkThread = JoinHandle<Option<String>>;

/// Starts every sink on its own thread; a sink that fails fails the pipeline before its
/// input (and what is queued in it) is dropped.
fn start_sinks(
    sinks: BTreeMap<String, BuiltSink>,
    wiring: &mut Wiring,
    metrics: &Metrics,
    lifecycle: &Arc<Lifecycle>,
) -> Vec<(String, SinkThread)> {
    let mut threads = Vec::new();
    for (id, sink) in sinks {
        let mut input = wiring.input(&id);
        let cx = SinkContext {
            id: id.clone(),
            metrics: metrics.component(&id),
            lifecycle: lifecycle.clone(),
        };
        let handle = spawn(&id, move || {
            let key = format!("sinks.{}", cx.id);
            cx.lifecycle.enter(&key);
            let result = sink(&mut input, &cx);
            let report = match result {
                Ok(report) => report,
                Err(cause) => {
                    cx.lifecycle.fail(&key, cause);
                    None
                }
            };
            drop(input);
            report
        });
        threads.push((id, handle));
    }
    threads
}

/// Starts every source on its own thread; a source that fails fails the pipeline.
fn start_sources(
    sources: BTreeMap<String, BuiltSource>,
    wiring: &mut Wiring,
    metrics: &Metrics,
    lifecycle: &Arc<Lifecycle>,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    for (id, source) in sources {
        let cx = SourceContext {
            output: wiring.output(&id),
            dead_letters: wiring.output(&format!("{id}.{DEAD_LETTER}")),
            metrics: metrics.component(&id),
            lifecycle: lifecycle.clone(),
            id: id.clone(),
        };
        threads.push(spawn(&id, move || {
            let (key, lifecycle) = (format!("sources.{}", cx.id), cx.lifecycle.clone());
            lifecycle.enter(&key);
            if let Err(cause) = source(cx) {
                lifecycle.fail(&key, cause);
            }
        }));
    }
    threads
}

/// Threads that serve a run (component watchers, the config reloader, which owns the
/// metadata followers): stopped and joined when the run ends, however it ends.
struct Helpers {
    control: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.control.end();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
