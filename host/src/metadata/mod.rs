//! Application metadata: change events, the time-aware table, and the shared handle
//! through which workers read one snapshot per batch.

pub mod addr_map;
pub mod aws_ec2;
pub mod aws_kinesis;
pub mod aws_ranges;
pub mod event_log;
pub mod events;
pub mod file;
pub mod networks;
pub mod observations;
pub mod packed_attrs;
pub mod table;

pub use aws_ranges::AwsRangesError;
pub use events::{Attrs, Changelog, Event, EventError};
pub use packed_attrs::PackedAttrs;
pub use table::{Owner, Table, TableBuilder, UNATTRIBUTED};

use crate::config::Invalid;
use crate::metrics::ComponentMetrics;
use arc_swap::ArcSwap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

crate::config::component_enum! {
    /// A metadata table, by its `type`.
    pub enum MetadataConfig: MetadataKind {
        /// Changelog files, re-read when they change.
        File(file::Config),
        /// A changelog stream on Kinesis Data Streams (with optional files read once as
        /// a bootstrap snapshot).
        AwsKinesisStreams(aws_kinesis::Config),
        /// Ownership learnt by polling EC2's network interfaces (contract 5).
        AwsEc2(aws_ec2::Config),
    }
}

/// What every kind of metadata table's config does.
pub trait MetadataKind: std::fmt::Debug {
    /// Checks the settings; `key` is `metadata.<name>`.
    fn validate(&self, key: &str) -> Result<(), Invalid>;
    /// The options every table has.
    fn table(&self) -> &TableOptions;
    /// The options every table has, to resolve their paths.
    fn table_mut(&mut self) -> &mut TableOptions;
    /// Makes relative paths absolute against `base`, the pipeline file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        self.table_mut().resolve_paths(base);
    }
    /// Whether a config reload may rebuild the table from changed settings and swap it
    /// in while the pipeline runs.
    fn reloads_live(&self) -> bool {
        false
    }
    /// Starts what keeps the table current after its first build (`seen`: its files'
    /// fingerprint taken before that build); the handle stops it when dropped.
    fn follow(
        &self,
        name: &str,
        shared: Arc<SharedTable>,
        metrics: Arc<ComponentMetrics>,
        seen: file::Fingerprint,
    ) -> Option<Box<dyn Send>>;
}

/// The keys every table has: what its first build reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct TableOptions {
    /// One changelog file (plain or `.gz`), relative to the pipeline file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Several changelog files, applied in this order (after `path`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
    /// AWS's published `ip-ranges.json` (a local copy): AWS addresses get `app = "aws"`,
    /// `service` and `region`; a changelog event for the same network overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_ip_ranges: Option<PathBuf>,
    /// Public addresses that nothing else covers get `app = "internet"`. Default: on
    /// when `aws_ip_ranges` is set, off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<bool>,
    /// Seconds of history kept behind the newest event; flows older than that are left
    /// unattributed. 0 keeps all history.
    #[serde(default = "default_retention_secs")]
    pub retention_secs: u64,
    /// Attribute = record field that names the local side's owner directly, for records
    /// that have it and `flow_direction` (v7's ECS fields: `app = "ecs_service_name"`,
    /// `cluster = "ecs_cluster_name"`); it wins over the interface and the address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub local_owner_fields: BTreeMap<String, String>,
}

fn default_retention_secs() -> u64 {
    3600
}

/// The record fields that may name a local side's owner (`local_owner_fields`).
pub const LOCAL_OWNER_FIELDS: [&str; 10] = [
    "ecs_cluster_arn",
    "ecs_cluster_name",
    "ecs_container_instance_arn",
    "ecs_container_instance_id",
    "ecs_container_id",
    "ecs_second_container_id",
    "ecs_service_name",
    "ecs_task_definition_arn",
    "ecs_task_arn",
    "ecs_task_id",
];

impl TableOptions {
    /// Checks the keys every table has; `key` is `metadata.<name>`.
    pub fn validate(&self, key: &str) -> Result<(), Invalid> {
        for (attribute, field) in &self.local_owner_fields {
            let field = field.replace('-', "_");
            if !LOCAL_OWNER_FIELDS.contains(&field.as_str()) {
                return Err(Invalid::new(
                    format!("{key}.local_owner_fields.{attribute}"),
                    format!(
                        "`{field}` is not a field that names an owner (one of {})",
                        LOCAL_OWNER_FIELDS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The changelog files, `path` first.
    pub fn files(&self) -> Vec<PathBuf> {
        self.path.iter().chain(&self.paths).cloned().collect()
    }

    /// What the table is built from (for a stream table: its bootstrap).
    pub fn spec(&self) -> TableSpec {
        TableSpec {
            files: self.files(),
            aws_ip_ranges: self.aws_ip_ranges.clone(),
            internet: self.internet.unwrap_or(self.aws_ip_ranges.is_some()),
            retention: (self.retention_secs > 0).then_some(self.retention_secs),
            local_owner_fields: self
                .local_owner_fields
                .iter()
                .map(|(attribute, field)| (attribute.clone(), field.replace('-', "_")))
                .collect(),
        }
    }

    /// Makes relative paths absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let paths = self.path.iter_mut().chain(self.paths.iter_mut());
        for path in paths.chain(self.aws_ip_ranges.iter_mut()) {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// A thread that keeps a table current (a changelog stream's reader, an EC2 poller),
/// running its async work on the AWS runtime; told to stop, and joined, when dropped.
pub struct Follower {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    /// Starts `work` on a thread named `metadata-<name>`; `work` gets the flag that
    /// tells it to stop.
    pub fn start<F, Fut>(name: &str, work: F) -> Follower
    where
        F: FnOnce(Arc<std::sync::atomic::AtomicBool>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("metadata-{name}"))
            .spawn(move || crate::aws::runtime().block_on(work(stopping)))
            .expect("spawn a metadata thread");
        Follower {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// A table that can be replaced atomically while workers read it.
///
/// Readers call [`SharedTable::snapshot`] once per batch, so every line of a batch is
/// attributed against exactly one table version. Replaced tables are freed by the thread
/// that replaces tables (in [`SharedTable::replace`] or [`SharedTable::reap`]) once no
/// reader holds them, so a worker never pays for freeing a large table.
#[derive(Debug)]
pub struct SharedTable {
    current: ArcSwap<Table>,
    version: std::sync::atomic::AtomicU64,
    retired: std::sync::Mutex<Vec<Arc<Table>>>,
}

impl SharedTable {
    /// Wraps an initial table (version 1).
    pub fn new(table: Table) -> Self {
        SharedTable {
            current: ArcSwap::from_pointee(table),
            version: 1.into(),
            retired: Default::default(),
        }
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Replaces the table; readers see either the old or the new one, never a mix. The
    /// old one is kept until no reader holds it, then freed here or by a later
    /// [`SharedTable::reap`].
    pub fn replace(&self, table: Table) {
        let old = self.current.swap(Arc::new(table));
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.retired.lock().expect("retired lock").push(old);
        self.reap();
    }

    /// Frees replaced tables that no reader holds any more; returns how many are left.
    pub fn reap(&self) -> usize {
        let mut retired = self.retired.lock().expect("retired lock");
        retired.retain(|table| Arc::strong_count(table) > 1);
        retired.len()
    }

    /// How many tables have been installed.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Why metadata could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file could not be read.
    #[error("cannot read metadata file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The AWS ranges file could not be used.
    #[error(transparent)]
    AwsRanges(#[from] AwsRangesError),
}

/// Everything a table is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSpec {
    /// Changelog files (contract 3), applied in order.
    pub files: Vec<PathBuf>,
    /// AWS's `ip-ranges.json`, if any.
    pub aws_ip_ranges: Option<PathBuf>,
    /// Whether public addresses nobody else covers belong to the `internet` owner.
    pub internet: bool,
    /// Seconds of history kept behind the newest event; `None` keeps everything.
    pub retention: Option<u64>,
    /// Attribute = record field naming the local side's owner.
    pub local_owner_fields: Vec<(String, String)>,
}

impl TableSpec {
    /// Every file the table is read from (the ones a reload watches).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.files
            .iter()
            .chain(&self.aws_ip_ranges)
            .cloned()
            .collect()
    }
}

/// Rejected changelog lines, each with its file.
pub type Rejected = Vec<(PathBuf, events::BadLine)>;

/// Builds a table from `spec`. Rejected changelog lines are returned (with their file) so
/// the caller can report and count them; every other line is used. An unreadable file or
/// an invalid AWS ranges file fails the whole load.
pub fn load(spec: &TableSpec) -> Result<(Table, Rejected), MetadataError> {
    load_with(spec, &[])
}

/// [`load`], then `extra` events (read from a changelog stream) after the files'.
pub fn load_with(spec: &TableSpec, extra: &[Event]) -> Result<(Table, Rejected), MetadataError> {
    let mut builder = TableBuilder::new()
        .retention(spec.retention)
        .internet(spec.internet)
        .local_owner_fields(spec.local_owner_fields.clone());
    if let Some(path) = &spec.aws_ip_ranges {
        builder.aws_ranges(aws_ranges::read(path)?);
    }
    let rejected = apply_files(&mut builder, &spec.files)?;
    builder.extend(extra);
    Ok((builder.build(), rejected))
}

/// Loads changelog files in order into one table, keeping all history (see [`load`]).
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<(Table, Rejected), MetadataError> {
    load(&TableSpec {
        files: paths.iter().map(|p| p.as_ref().to_path_buf()).collect(),
        ..TableSpec::default()
    })
}

fn apply_files(builder: &mut TableBuilder, paths: &[PathBuf]) -> Result<Rejected, MetadataError> {
    let mut rejected = Vec::new();
    for path in paths {
        let read = crate::sources::file::open_text(path)
            .and_then(|reader| events::read_changelog_each(reader, |event| builder.apply(&event)));
        let bad = read.map_err(|error| MetadataError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        rejected.extend(bad.into_iter().map(|bad| (path.to_path_buf(), bad)));
    }
    Ok(rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_table_is_freed_by_the_replacer_once_no_reader_holds_it() {
        let shared = SharedTable::new(Table::default());
        let held = shared.snapshot();
        let watch = Arc::downgrade(&held);
        shared.replace(Table::default());
        assert_eq!(shared.version(), 2);
        assert!(
            !Arc::ptr_eq(&held, &shared.snapshot()),
            "new readers see the new table"
        );
        // The reader's drop must not free the table: the retired list still holds it.
        drop(held);
        assert!(watch.upgrade().is_some(), "kept for the replacer to free");
        assert_eq!(shared.reap(), 0);
        assert!(watch.upgrade().is_none(), "freed by reap");
        // With no reader at all, replace frees the old table itself.
        let watch = Arc::downgrade(&shared.snapshot());
        shared.replace(Table::default());
        assert!(watch.upgrade().is_none());
    }
}
