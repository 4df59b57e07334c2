//! Application metadata: change events, the time-aware table, and the shared handle
//! through which workers read one snapshot per batch.

pub mod addr_map;
pub mod events;
pub mod table;

pub use events::{Attrs, Changelog, Event, EventError};
pub use table::{Owner, Table, TableBuilder, UNATTRIBUTED};

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A table that can be replaced atomically while workers read it.
///
/// Readers call [`SharedTable::snapshot`] once per batch, so every line of a batch is
/// attributed against exactly one table version.
#[derive(Debug)]
pub struct SharedTable {
    current: ArcSwap<Table>,
    version: std::sync::atomic::AtomicU64,
}

impl SharedTable {
    /// Wraps an initial table (version 1).
    pub fn new(table: Table) -> Self {
        SharedTable {
            current: ArcSwap::from_pointee(table),
            version: 1.into(),
        }
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Replaces the table; readers see either the old or the new one, never a mix.
    pub fn replace(&self, table: Table) {
        self.current.store(Arc::new(table));
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
}

/// Loads changelog files in order into one table. Rejected lines are returned (with their
/// file) so the caller can report and count them; every other line is used.
pub fn load_files(
    paths: &[impl AsRef<Path>],
) -> Result<(Table, Vec<(PathBuf, events::BadLine)>), MetadataError> {
    let mut builder = TableBuilder::new();
    let mut rejected = Vec::new();
    for path in paths {
        let path = path.as_ref();
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
    Ok((builder.build(), rejected))
}
