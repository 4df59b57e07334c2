//! Building and starting a `wasm` transform: its component compiled (once per file),
//! its format checked, its file watched for hot swaps.

use super::swap::{self, SharedComponent, Watch};
use super::{Config, LiveOptions, WasmTransform};
use crate::config::BuildError;
use crate::metadata::{SharedTable, file::Fingerprint};
use crate::runtime::{CallError, LoadedComponent};
use crate::transforms::{
    StartedTransform, TransformBuildContext, TransformContext, TransformPlan, spawn,
};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Components compiled so far, by file (`None`: the built-in one).
pub type ComponentCache = HashMap<Option<PathBuf>, LoadedComponent>;

/// A `wasm` transform, loaded and checked.
pub struct WasmPlan {
    options: LiveOptions,
    component: LoadedComponent,
    /// The component file to watch for hot swaps, with its fingerprint when read.
    swap: Option<(PathBuf, Fingerprint)>,
    reload_interval: Option<Duration>,
    fixtures: Option<PathBuf>,
    table: Option<Arc<SharedTable>>,
    whole_batches: bool,
    needs: crate::config::OutputNeeds,
    workers: usize,
}

/// Compiles the transform's component into `cache` ahead of [`plan`] (which reuses it),
/// so that it can be done while something else is: a component that fails to read or
/// compile is left out, and [`plan`] reports it in its turn.
pub fn precompile(config: &Config, runtime: &crate::runtime::Runtime, cache: &mut ComponentCache) {
    if !cache.contains_key(&config.component)
        && let Ok(loaded) = compile(config, runtime)
    {
        cache.insert(config.component.clone(), loaded);
    }
}

/// Reads and compiles the transform's component (the built-in one without a file).
fn compile(
    config: &Config,
    runtime: &crate::runtime::Runtime,
) -> Result<LoadedComponent, crate::config::BoxError> {
    let bytes = crate::embedded::component_bytes(config.component.as_deref())?;
    Ok(runtime.load(&bytes)?)
}

/// Compiles (or reuses) the component and checks the configured format with it.
pub fn plan(
    id: &str,
    config: &Config,
    cx: &mut TransformBuildContext<'_>,
) -> Result<WasmPlan, BuildError> {
    let options = LiveOptions::from(config);
    let key = format!("transforms.{id}.component");
    // Taken before the file is read, so a change during start-up is not missed.
    let swap = config.component.as_ref().map(|path| {
        (
            path.clone(),
            crate::metadata::file::fingerprint(std::slice::from_ref(path)),
        )
    });
    let component = match cx.components.get(&config.component) {
        Some(loaded) => loaded.clone(),
        None => {
            let loaded = compile(config, cx.runtime).map_err(|e| BuildError::new(&key, e))?;
            cx.components
                .insert(config.component.clone(), loaded.clone());
            loaded
        }
    };
    if let Some(format) = &config.format {
        let mut worker = cx
            .runtime
            .worker(&component, &options.limits)
            .map_err(|e| BuildError::new(&key, e))?;
        worker.check_format(format).map_err(|e| match e {
            CallError::InvalidFormat(message) => {
                BuildError::new(format!("transforms.{id}.format"), message)
            }
            CallError::Runtime(error) => BuildError::new(&key, error),
        })?;
    }
    Ok(WasmPlan {
        options,
        component,
        swap,
        reload_interval: config.reload_interval(),
        fixtures: config.fixtures.clone(),
        table: config.metadata.as_ref().map(|name| cx.tables[name].clone()),
        whole_batches: cx.whole_batches,
        needs: cx.needs.clone(),
        workers: config.workers(),
    })
}

impl TransformPlan for WasmPlan {
    fn start(self: Box<Self>, cx: TransformContext) -> Result<StartedTransform, BuildError> {
        let plan = *self;
        let id = cx.id;
        let mut worker = cx
            .runtime
            .worker(&plan.component, &plan.options.limits)
            .map_err(|e| BuildError::new(format!("transforms.{id}.component"), e))?;
        if plan.workers > 1 {
            // The pool runs the batches; this thread's instance is made again only if
            // held lines need it.
            worker.set_component(&plan.component);
        }
        let shared = Arc::new(SharedComponent::new(plan.component.clone()));
        let pool = (plan.workers > 1)
            .then(|| {
                super::pool::Pool::start(
                    &id,
                    plan.workers,
                    &cx.runtime,
                    &shared.current(),
                    &plan.options.limits,
                )
            })
            .transpose()
            .map_err(|e| BuildError::new(format!("transforms.{id}.workers"), e))?;
        cx.metrics.gauge("workers", plan.workers as i64);
        let options = Arc::new(ArcSwap::from_pointee(plan.options));
        cx.metrics.gauge("component_generation", 1);
        swap::record_info(&cx.metrics, &shared.current());
        let mut helpers = Vec::new();
        if let Some((path, seen)) = plan.swap {
            let watch = Watch {
                id: id.clone(),
                path,
                fixtures: plan.fixtures,
                interval: plan.reload_interval,
                options: options.clone(),
                shared: shared.clone(),
                metrics: cx.metrics.clone(),
            };
            let (runtime, control) = (cx.runtime.clone(), cx.control);
            helpers.push(spawn(&format!("{id}.swap"), move || {
                swap::watch(watch, runtime, control, seen)
            }));
        }
        let live = Box::new(super::live::LiveWasm {
            options: options.clone(),
            component: shared.clone(),
        });
        let columns = super::columns_for(&plan.needs, &plan.component);
        let transform = WasmTransform {
            id: id.clone(),
            needs: plan.needs,
            columns,
            worker,
            pool,
            component: shared,
            generation: 1,
            table: plan.table,
            options,
            unlogged_dead_letters: super::LOGGED_DEAD_LETTERS,
            output: cx.output,
            dead_letters: cx.dead_letters,
            metrics: cx.metrics,
            whole_batches: plan.whole_batches,
            waiting: Default::default(),
        };
        Ok(StartedTransform {
            run: Box::new(move |input| {
                transform.run(input);
                Ok(())
            }),
            helpers,
            live,
        })
    }
}
