//! Re-reading a table's files when they change, off the hot path.
//!
//! A watcher thread polls the files' size and modification time. When they change it
//! builds a complete new table and swaps it in with one atomic store; workers keep using
//! the table they loaded for their batch. A file that cannot be read, or an AWS ranges
//! file that does not parse, leaves the previous table in place; the failure is logged
//! and counted, and the next change is tried again.

use super::{MetadataKind, Rejected, SharedTable, Table, TableOptions, TableSpec};
use crate::config::Invalid;
use crate::metrics::ComponentMetrics;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// The `file` table's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub table: TableOptions,
    /// How often the files are checked for changes, in milliseconds; a change rebuilds
    /// the table and swaps it in. 0 never re-reads.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    1000
}

impl MetadataKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        if self.table.spec().watched_files().is_empty() {
            return Err(Invalid::new(
                format!("{key}.path"),
                "a file table needs `path`, `paths` or `aws_ip_ranges`",
            ));
        }
        Ok(())
    }

    fn table(&self) -> &TableOptions {
        &self.table
    }

    fn table_mut(&mut self) -> &mut TableOptions {
        &mut self.table
    }

    fn reloads_live(&self) -> bool {
        true
    }

    fn follow(
        &self,
        name: &str,
        shared: Arc<SharedTable>,
        metrics: Arc<ComponentMetrics>,
        seen: Fingerprint,
    ) -> Option<Box<dyn Send>> {
        (self.reload_interval_ms > 0).then(|| {
            let interval = Duration::from_millis(self.reload_interval_ms);
            let watcher = Watcher::start(
                name.to_string(),
                self.table.spec(),
                shared,
                metrics,
                interval,
                seen,
            );
            Box::new(watcher) as Box<dyn Send>
        })
    }
}

/// Size and modification time of every watched file (`None`: missing or unreadable).
pub type Fingerprint = Vec<(PathBuf, Option<(u64, SystemTime)>)>;

/// The fingerprint of `files` now. Take it before loading them, so that a change made
/// during the load is seen by the watcher.
pub fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|path| {
            let seen = std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            (path.clone(), seen)
        })
        .collect()
}

/// A running watcher; [`Watcher::stop`] (or drop) ends it.
pub struct Watcher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `spec`'s files every `interval`, installing new tables in `shared`;
    /// `seen` is the fingerprint taken before the current table was loaded.
    /// Counters on `metrics`: `metadata_reloads_total`, `metadata_reload_failures_total`,
    /// received events and `invalid_event` errors of every load.
    pub fn start(
        name: String,
        spec: TableSpec,
        shared: Arc<SharedTable>,
        metrics: Arc<ComponentMetrics>,
        interval: Duration,
        seen: Fingerprint,
    ) -> Watcher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("metadata-{name}"))
            .spawn(move || {
                let files = spec.watched_files();
                let mut last = seen;
                let (lock, wake) = &*stopped;
                let mut done = lock.lock().expect("watcher lock");
                loop {
                    done = wake.wait_timeout(done, interval).expect("watcher lock").0;
                    if *done {
                        return;
                    }
                    shared.reap();
                    let now = fingerprint(&files);
                    if now == last {
                        continue;
                    }
                    last = now;
                    reload(&name, &spec, &shared, &metrics);
                }
            })
            .expect("spawn metadata watcher");
        Watcher {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the watcher and waits for it.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().expect("watcher lock") = true;
        wake.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Builds a new table from `spec` and installs it, or keeps the current one on failure.
/// Returns whether a new table was installed.
pub fn reload(
    name: &str,
    spec: &TableSpec,
    shared: &SharedTable,
    metrics: &ComponentMetrics,
) -> bool {
    match super::load(spec) {
        Ok((table, rejected)) => {
            record_load(name, &table, &rejected, metrics);
            install(table, shared, metrics);
            true
        }
        Err(error) => {
            tracing::error!(message = "Metadata reload failed; keeping the previous table.", table = %name, %error);
            metrics.count("metadata_reload_failures_total", 1);
            false
        }
    }
}

/// Logs and counts one successful load: its events, and each rejected line.
pub fn record_load(name: &str, table: &Table, rejected: &Rejected, metrics: &ComponentMetrics) {
    metrics.received(table.events() as u64 + rejected.len() as u64);
    metrics.error("invalid_event", rejected.len() as u64);
    for (path, bad) in rejected {
        tracing::warn!(message = "Rejected metadata line.", table = %name, file = %path.display(), line_number = bad.line_number, error = %bad.error, error_type = bad.error.error_type());
    }
    tracing::info!(message = "Loaded metadata.", table = %name, events = table.events(), addresses = table.addresses(), networks = table.networks(), owners = table.owners(), cutoff = table.cutoff());
}

/// Swaps `table` in and counts it: its size, `metadata_reloads_total` and the new
/// `metadata_table_version` (every path that replaces a running table goes through here).
pub fn install(table: Table, shared: &SharedTable, metrics: &ComponentMetrics) {
    record_size(&table, metrics);
    shared.replace(table);
    metrics.count("metadata_reloads_total", 1);
    metrics.gauge("metadata_table_version", shared.version() as i64);
}

/// The table's size as gauges: `metadata_table_addresses`, `_networks`, `_owners`,
/// `_events`.
pub fn record_size(table: &Table, metrics: &ComponentMetrics) {
    metrics.gauge("metadata_table_addresses", table.addresses() as i64);
    metrics.gauge("metadata_table_networks", table.networks() as i64);
    metrics.gauge("metadata_table_owners", table.owners() as i64);
    metrics.gauge("metadata_table_events", table.events() as i64);
}
