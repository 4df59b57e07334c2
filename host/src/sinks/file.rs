//! The `file` sink: lines appended to one file, durable before they are acknowledged.
//!
//! Group commit: the sink writes the batch it is given and every batch already waiting
//! behind it (up to [`GROUP_BATCHES`]), then syncs the file once (`fdatasync`) and only
//! then marks them done, so a power cut never loses an acknowledged line and a busy sink
//! pays one sync per group, not per batch. A failed write or sync is transient when the
//! error may pass (a full disk, an I/O error, a quota): the file is cut back to its last
//! synced length and the whole group written again after a pause (an `fsync` that
//! failed may have dropped dirty pages, so nothing after the last good sync is trusted).
//! Other errors (permissions, a read-only file system) fail the pipeline. Files that
//! cannot be synced or cut (a pipe, `/dev/stdout`) are written without.

use crate::config::{BuildError, Invalid, Upstream};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sinks::{AttemptError, BuiltSink, PathError, SinkError, SinkKind, io_attempt, retrying};
use crate::topology::output::{Input, Taken};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The `file` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream component ids (`enrich`, `enrich.dead_letter`, ...).
    pub inputs: Vec<String>,
    /// Output file, relative to the pipeline file; parent directories are created.
    pub path: PathBuf,
    /// Append instead of truncating an existing file.
    #[serde(default)]
    pub append: bool,
}

impl SinkKind for Config {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn validate(&self, _key: &str, _upstream: &Upstream) -> Result<(), Invalid> {
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        if self.path.is_relative() {
            self.path = base.join(&self.path);
        }
    }

    fn build(&self, _id: &str) -> Result<BuiltSink, BuildError> {
        let config = self.clone();
        Ok(Box::new(move |input, cx| {
            run(
                &cx.id,
                &config.path,
                config.append,
                input,
                &cx.metrics,
                &cx.lifecycle,
            )?;
            Ok(None)
        }))
    }
}

/// Most batches one sync covers.
pub const GROUP_BATCHES: usize = 64;

/// The open file and how much of it is known to be on disk.
struct Durable<'a> {
    path: &'a Path,
    file: File,
    /// A regular file: synced, and cut back after a failure.
    regular: bool,
    /// Length at the last successful sync.
    synced_len: u64,
}

impl Durable<'_> {
    /// Writes the group at the end of what is synced, then syncs.
    fn commit(&mut self, group: &[Taken]) -> Result<(), AttemptError> {
        let io = |e| io_attempt(self.path, e);
        if self.regular {
            self.file.set_len(self.synced_len).map_err(io)?;
            self.file
                .seek(SeekFrom::Start(self.synced_len))
                .map_err(io)?;
        }
        for batch in group {
            self.file.write_all(batch.text.as_bytes()).map_err(io)?;
        }
        if self.regular {
            self.file.sync_data().map_err(io)?;
            self.synced_len = self.file.stream_position().map_err(io)?;
        }
        Ok(())
    }
}

/// Opens `path` (creating parents) and writes every batch to it until the input ends.
pub fn run(
    id: &str,
    path: &Path,
    append: bool,
    input: &mut Input,
    metrics: &ComponentMetrics,
    lifecycle: &Lifecycle,
) -> Result<(), SinkError> {
    let fail = |e: std::io::Error| SinkError::fatal(PathError::new(path, e));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!append)
        .open(path)
        .map_err(fail)?;
    let regular = file.metadata().map_err(fail)?.is_file();
    let synced_len = if regular {
        file.metadata().map_err(fail)?.len()
    } else {
        0
    };
    let mut durable = Durable {
        path,
        file,
        regular,
        synced_len,
    };
    while let Some(first) = input.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_BATCHES
            && let Some(next) = input.try_recv()
        {
            group.push(next);
        }
        let lines: u64 = group.iter().map(|b| b.lines as u64).sum();
        metrics.received(lines);
        crate::failpoint::hit("file_sink.before_write");
        retrying(id, metrics, lifecycle, || durable.commit(&group))?;
        metrics.count("file_syncs_total", 1);
        metrics.sent(lines);
        for batch in group {
            batch.done();
        }
    }
    Ok(())
}
