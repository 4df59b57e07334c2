//! Application metadata: change events, the time-aware table, and the shared handle
//! through which workers read one snapshot per batch.

pub mod addr_map;
pub mod aws_ranges;
pub mod events;
pub mod networks;
pub mod reload;
pub mod stream;
pub mod table;

pub use aws_ranges::AwsRangesError;
pub use events::{Attrs, Changelog, Event, EventError};
pub use table::{Owner, Table, TableBuilder, UNATTRIBUTED};

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        .internet(spec.internet);
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
        let log = events::read_changelog_file(path).map_err(|error| MetadataError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        builder.extend(&log.events);
        rejected.extend(
            log.rejected
                .into_iter()
                .map(|bad| (path.to_path_buf(), bad)),
        );
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
