//! Reloading the pipeline file while it runs, where that is safe.
//!
//! On SIGHUP or `POST /reload` (the same requests that make component watchers look at
//! their files) the pipeline file is read and checked again, then compared with the one
//! running, key by key:
//!
//! - **applied live:** a `file` metadata table's options (`path`, `paths`,
//!   `aws_ip_ranges`, `internet`, `retention_secs`, `reload_interval_ms`): the table is
//!   rebuilt off the hot path and swapped in, and its watcher follows the new files; a
//!   `wasm` transform's `format` (checked with its component first), `holdback_secs`,
//!   `batch_timeout_ms` and `memory_limit_mib` (up to the largest limit at start-up,
//!   which sized the engine's memory pool), picked up before its next batch;
//! - **refused, with the keys named:** anything else (sources, sinks, `inputs`, a
//!   transform's `component`, `metadata`, `fixtures` or `reload_interval_ms`, a changelog stream's
//!   settings, the `[api]` table, components added or removed). Those need a restart.
//!
//! A reload is all or nothing: a file that does not parse or check, a format the
//! component refuses, a table that cannot be built, or a change that needs a restart
//! leaves everything as it was, logged and counted on the `config` component
//! (`config_reloads_total`, `component_errors_total{error_type}`).

use crate::config::Pipeline;
use crate::metadata::{self, SharedTable, reload::Watcher};
use crate::metrics::ComponentMetrics;
use crate::runtime::Runtime;
use crate::transforms::swap::{ReloadRequests, SharedComponent};
use crate::transforms::wasm::LiveOptions;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A running transform as a reload sees it.
pub struct LiveTransform {
    /// Its options, read before every batch.
    pub options: Arc<ArcSwap<LiveOptions>>,
    /// Its component (to check a new format with).
    pub component: Arc<SharedComponent>,
}

/// A running metadata table as a reload sees it.
pub struct LiveTable {
    /// The table workers read.
    pub shared: Arc<SharedTable>,
    /// The table's counters.
    pub metrics: Arc<ComponentMetrics>,
    /// Its file watcher, replaced when its files change.
    pub watcher: Option<Watcher>,
}

/// Everything a reload may touch.
pub struct ConfigReloader {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its TOML as now running.
    pub running: toml::Table,
    /// Transforms by id.
    pub transforms: BTreeMap<String, LiveTransform>,
    /// Metadata tables by name.
    pub tables: BTreeMap<String, LiveTable>,
    /// The `config` component's counters.
    pub metrics: Arc<ComponentMetrics>,
    /// For checking formats with the transforms' components.
    pub runtime: Runtime,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file does not read, parse or check.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Keys changed that only a restart can apply.
    #[error("restart needed to apply changes to: {}", .0.join(", "))]
    RestartNeeded(Vec<String>),
    /// A transform's component refuses its new format.
    #[error("transforms.{id}.format: {message}")]
    Format {
        /// The transform.
        id: String,
        /// What the component said.
        message: String,
    },
    /// A table could not be built from its new settings.
    #[error("metadata.{name}: {error}")]
    Table {
        /// The table.
        name: String,
        /// The error.
        error: metadata::MetadataError,
    },
}

impl ReloadError {
    /// Stable label for metrics (`error_type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            ReloadError::Config(_) => "config_invalid",
            ReloadError::RestartNeeded(_) => "config_restart_needed",
            ReloadError::Format { .. } => "config_invalid_format",
            ReloadError::Table { .. } => "config_table_failed",
        }
    }
}

/// Transform keys a reload applies live.
const LIVE_TRANSFORM_KEYS: [&str; 6] = [
    "format",
    "holdback_secs",
    "holdback_max_lines",
    "holdback_max_mib",
    "batch_timeout_ms",
    "memory_limit_mib",
];

/// How often the reloader looks for requests.
const TICK: Duration = Duration::from_millis(50);

impl ConfigReloader {
    /// Serves reload requests until `stop` is set.
    pub fn run(mut self, requests: Arc<ReloadRequests>, stop: Arc<AtomicBool>) {
        let mut seen = requests.count();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            if requests.count() == seen {
                continue;
            }
            seen = requests.count();
            match self.reload() {
                Ok(changed) => {
                    self.metrics.count("config_reloads_total", 1);
                    tracing::info!(message = "Pipeline file reloaded.", path = %self.path.display(), changed = %changed.join(", "));
                }
                Err(error) => {
                    self.metrics.error(error.error_type(), 1);
                    tracing::error!(message = "Pipeline file not reloaded; the running pipeline is unchanged.", path = %self.path.display(), %error);
                }
            }
        }
    }

    /// Reads the file again and applies what changed; returns the changed keys.
    pub fn reload(&mut self) -> Result<Vec<String>, ReloadError> {
        let pipeline = Pipeline::load(&self.path)?;
        let (changed, restart) = compare(&self.running, &pipeline.toml);
        if !restart.is_empty() {
            return Err(ReloadError::RestartNeeded(restart));
        }
        // Everything is prepared first; nothing is applied unless all of it works.
        let mut options = Vec::new();
        for (id, transform) in &pipeline.config.transforms {
            let live = &self.transforms[id];
            let new_options = LiveOptions::from_config(transform);
            let (format, limits) = (&new_options.format, new_options.limits.clone());
            // The engine's memory pool was sized at start-up for the largest limit then.
            let max = self.runtime.options().max_memory_bytes;
            if limits.memory_limit_bytes > max {
                return Err(ReloadError::RestartNeeded(vec![format!(
                    "transforms.{id}.memory_limit_mib (above the {} MiB the engine was sized for at start-up)",
                    max >> 20
                )]));
            }
            if let Some(format) = format
                && live.options.load().format.as_ref() != Some(format)
            {
                let component = live.component.current();
                let mut worker =
                    self.runtime
                        .worker(&component.component, &limits)
                        .map_err(|e| ReloadError::Format {
                            id: id.clone(),
                            message: e.to_string(),
                        })?;
                match worker.check_format(format) {
                    Ok(Ok(_)) => {}
                    Ok(Err(message)) => {
                        return Err(ReloadError::Format {
                            id: id.clone(),
                            message,
                        });
                    }
                    Err(error) => {
                        return Err(ReloadError::Format {
                            id: id.clone(),
                            message: error.to_string(),
                        });
                    }
                }
            }
            options.push((id.clone(), new_options));
        }
        let mut tables = Vec::new();
        for (name, table) in &pipeline.config.metadata {
            if !changed.iter().any(|key| key == &format!("metadata.{name}")) {
                continue;
            }
            let spec = table.spec();
            let seen = metadata::reload::fingerprint(&spec.watched_files());
            let (built, rejected) = metadata::load(&spec).map_err(|error| ReloadError::Table {
                name: name.clone(),
                error,
            })?;
            tables.push((
                name.clone(),
                spec,
                seen,
                built,
                rejected,
                table.reload_interval(),
            ));
        }

        // Apply.
        for (id, new) in options {
            let live = &self.transforms[&id];
            if **live.options.load() != new {
                live.options.store(Arc::new(new));
            }
        }
        for (name, spec, seen, built, rejected, interval) in tables {
            let live = self.tables.get_mut(&name).expect("a running table");
            // The old watcher stops before the new table goes in, so it cannot swap an
            // older build over it.
            live.watcher = None;
            metadata::reload::record_load(&name, &built, &rejected, &live.metrics);
            metadata::reload::install(built, &live.shared, &live.metrics);
            live.watcher = interval.map(|interval| {
                Watcher::start(
                    name.clone(),
                    spec,
                    live.shared.clone(),
                    live.metrics.clone(),
                    interval,
                    seen,
                )
            });
        }
        self.running = pipeline.toml;
        Ok(changed)
    }
}

/// Compares two pipeline files: the sections that changed and may be applied live, and
/// the keys that changed and need a restart.
fn compare(old: &toml::Table, new: &toml::Table) -> (Vec<String>, Vec<String>) {
    let (mut live, mut restart) = (Vec::new(), Vec::new());
    let section = |table: &toml::Table, name: &str| -> toml::Table {
        table
            .get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let known = ["metadata", "sources", "transforms", "sinks"];
        if !known.contains(&key.as_str()) && old.get(key) != new.get(key) {
            restart.push(key.clone());
        }
    }
    for kind in ["metadata", "sources", "transforms", "sinks"] {
        let (old_section, new_section) = (section(old, kind), section(new, kind));
        let ids: BTreeSet<&String> = old_section.keys().chain(new_section.keys()).collect();
        for id in ids {
            let (Some(before), Some(after)) = (
                old_section.get(id).and_then(|v| v.as_table()),
                new_section.get(id).and_then(|v| v.as_table()),
            ) else {
                restart.push(format!("{kind}.{id} (added or removed)"));
                continue;
            };
            if before == after {
                continue;
            }
            let changed_keys: Vec<&String> = before
                .keys()
                .chain(after.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            match kind {
                "metadata" => {
                    let file =
                        |t: &toml::Table| t.get("type").and_then(|v| v.as_str()) == Some("file");
                    if file(before) && file(after) {
                        live.push(format!("metadata.{id}"));
                    } else {
                        restart.extend(changed_keys.iter().map(|k| format!("metadata.{id}.{k}")));
                    }
                }
                "transforms" => {
                    let (ok, not): (Vec<&&String>, Vec<&&String>) = changed_keys
                        .iter()
                        .partition(|k| LIVE_TRANSFORM_KEYS.contains(&k.as_str()));
                    restart.extend(not.iter().map(|k| format!("transforms.{id}.{k}")));
                    live.extend(ok.iter().map(|k| format!("transforms.{id}.{k}")));
                }
                _ => restart.extend(changed_keys.iter().map(|k| format!("{kind}.{id}.{k}"))),
            }
        }
    }
    (live, restart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    /// Sets `table.<path>` (the last key may be new).
    fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
        let (last, parents) = path.split_last().unwrap();
        let mut at = table;
        for key in parents {
            at = at.get_mut(*key).unwrap().as_table_mut().unwrap();
        }
        at.insert(last.to_string(), value);
    }

    #[test]
    fn sorts_changes_into_live_and_restart_needed() {
        let old = toml(
            r#"
[metadata.apps]
type = "file"
path = "a.jsonl"
[metadata.stream]
type = "aws_kinesis_streams"
stream_name = "s"
[sources.in]
type = "stdin"
[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"
[sinks.out]
type = "stdout"
inputs = ["t"]
"#,
        );
        assert_eq!(compare(&old, &old), (vec![], vec![]));
        let mut new = old.clone();
        set(&mut new, &["metadata", "apps", "path"], "b.jsonl".into());
        set(&mut new, &["transforms", "t", "holdback_secs"], 60.into());
        set(
            &mut new,
            &["transforms", "t", "format"],
            "srcaddr dstaddr".into(),
        );
        let (live, restart) = compare(&old, &new);
        assert_eq!(
            live,
            vec![
                "metadata.apps",
                "transforms.t.format",
                "transforms.t.holdback_secs"
            ]
        );
        assert!(restart.is_empty(), "{restart:?}");

        let mut new = old.clone();
        set(&mut new, &["sources", "in", "batch_lines"], 10.into());
        set(
            &mut new,
            &["transforms", "t", "inputs"],
            toml::Value::Array(vec![]),
        );
        set(
            &mut new,
            &["metadata", "stream", "stream_name"],
            "other".into(),
        );
        set(
            &mut new,
            &["sinks", "more"],
            toml::Value::Table(toml::Table::new()),
        );
        set(&mut new, &["api"], toml::Value::Table(toml::Table::new()));
        let (_, restart) = compare(&old, &new);
        assert_eq!(
            restart,
            vec![
                "api",
                "metadata.stream.stream_name",
                "sources.in.batch_lines",
                "transforms.t.inputs",
                "sinks.more (added or removed)",
            ]
        );
    }
}
