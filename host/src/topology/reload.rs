//! Reloading the pipeline file while it runs, where that is safe.
//!
//! On SIGHUP or `POST /reload` (the same requests that make component watchers look at
//! their files) the pipeline file is read and checked again, then compared with the one
//! running, as typed configs (see [`crate::config::diff`]: a default written out changes
//! nothing):
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

use crate::config::{Pipeline, diff::diff};
use crate::control::{Control, Wake};
use crate::metadata::{self, SharedTable};
use crate::metrics::ComponentMetrics;
use crate::runtime::Runtime;
use crate::transforms::LiveTransform;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A running metadata table as a reload sees it.
pub struct LiveTable {
    /// The table workers read.
    pub shared: Arc<SharedTable>,
    /// The table's counters.
    pub metrics: Arc<ComponentMetrics>,
    /// What keeps it current (a file watcher, a stream reader), replaced when a reload
    /// changes its settings; dropping it stops it.
    pub follower: Option<Box<dyn Send>>,
}

/// Everything a reload may touch.
pub struct ConfigReloader {
    /// The pipeline as now running.
    pub pipeline: Pipeline,
    /// Transforms by id.
    pub transforms: BTreeMap<String, Box<dyn LiveTransform>>,
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
        #[source]
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

impl ConfigReloader {
    /// Serves reload requests until the run ends.
    pub fn run(mut self, control: Arc<Control>) {
        let mut seen = control.reloads();
        loop {
            match control.wait(seen, None) {
                Wake::Ended => return,
                Wake::Reload(count) => seen = count,
                Wake::Timeout => continue,
            }
            let path = self.pipeline.path.clone();
            match self.reload() {
                Ok(changed) => {
                    self.metrics.count("config_reloads_total", 1);
                    tracing::info!(message = "Pipeline file reloaded.", path = %path.display(), changed = %changed.join(", "));
                }
                Err(error) => {
                    self.metrics.error(error.error_type(), 1);
                    tracing::error!(message = "Pipeline file not reloaded; the running pipeline is unchanged.", path = %path.display(), %error);
                }
            }
        }
    }

    /// Reads the file again and applies what changed; returns the changed keys.
    pub fn reload(&mut self) -> Result<Vec<String>, ReloadError> {
        let pipeline = Pipeline::load(&self.pipeline.path)?;
        let changes = diff(&self.pipeline.config, &pipeline.config);
        if !changes.restart.is_empty() {
            return Err(ReloadError::RestartNeeded(changes.restart));
        }
        // Everything is prepared first; nothing is applied unless all of it works.
        let mut transforms = Vec::new();
        for (id, transform) in &pipeline.config.transforms {
            transforms.push(self.transforms[id].prepare(id, transform.kind(), &self.runtime)?);
        }
        let mut tables = Vec::new();
        for (name, table) in &pipeline.config.metadata {
            if !changes.live.contains(&format!("metadata.{name}")) {
                continue;
            }
            let spec = table.kind().table().spec();
            let seen = metadata::file::fingerprint(&spec.watched_files());
            let (built, rejected) = metadata::load(&spec).map_err(|error| ReloadError::Table {
                name: name.clone(),
                error,
            })?;
            tables.push((name.clone(), table, seen, built, rejected));
        }

        // Apply.
        for apply in transforms {
            apply();
        }
        for (name, table, seen, built, rejected) in tables {
            let live = self.tables.get_mut(&name).expect("a running table");
            // The old follower stops before the new table goes in, so it cannot swap an
            // older build over it.
            live.follower = None;
            metadata::file::record_load(&name, &built, &rejected, &live.metrics);
            metadata::file::install(built, &live.shared, &live.metrics);
            live.follower =
                table
                    .kind()
                    .follow(&name, live.shared.clone(), live.metrics.clone(), seen);
        }
        self.pipeline = pipeline;
        Ok(changes.live)
    }
}
