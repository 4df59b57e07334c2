//! Writing rows: plain, or as publications logged beside the checkpoints (exactly once).

use super::DruidSpec;
use super::rollup::{Drained, Rollup, bucket_name};
use crate::lifecycle::Lifecycle;
use crate::metrics::ComponentMetrics;
use crate::sinks::aws_kinesis::KinesisWriter;
use crate::sinks::{AttemptError, SinkError, io_attempt, retrying};
use crate::sources::aws_kinesis::checkpoint::{
    CheckpointError, Checkpoints, Publication, Scope, sequence_le,
};
use crate::topology::output::Taken;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Removes the bucket files of an earlier run from `dir`.
pub(super) fn start_afresh(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("flows-") && name.ends_with(".ndjson") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Writes publication `id`'s rows (each a row without its newline) as one file per
/// bucket in `dir`, `flows-<bucket>.<id>.ndjson`, each written aside, synced and renamed
/// into place: writing the same publication again replaces its files with the same
/// rows, so it is idempotent, and no other publication's rows are touched.
pub fn write_publication_files(dir: &Path, id: &str, lines: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut by_bucket: BTreeMap<u64, String> = BTreeMap::new();
    for line in lines {
        let text = by_bucket.entry(bucket_of(line)).or_default();
        text.push_str(line);
        text.push('\n');
    }
    for (bucket, text) in by_bucket {
        let path = dir.join(format!("flows-{}.{id}.ndjson", bucket_name(bucket)));
        crate::sources::aws_kinesis::checkpoint::write_atomically(&path, text.as_bytes()).map_err(
            |e| match e {
                CheckpointError::Io { error, .. } => error,
                other => std::io::Error::other(other.to_string()),
            },
        )?;
    }
    Ok(())
}

/// The file of `bucket`'s rows in `dir`.
pub(super) fn bucket_path(dir: &Path, bucket: u64) -> PathBuf {
    dir.join(format!("flows-{}.ndjson", bucket_name(bucket)))
}

/// Appends rows (as [`Rollup::drain`] gives them) to their buckets' files in `dir`,
/// durably.
pub fn write_files(dir: &Path, rows: &Drained) -> std::io::Result<()> {
    let mut files = BucketFiles::new(dir);
    for (bucket, text) in rows.buckets() {
        files.append(bucket, text)?;
    }
    files.sync()
}

/// The bucket files one drain appends to, each opened once: every piece of rows is
/// appended whole (a failed write is cut off again, so no torn row stays behind for the
/// next attempt to append after) and its writeback started at once, so that the disk
/// works while the next pieces are rendered; [`BucketFiles::sync`] makes them durable,
/// with the directory entries of new files.
pub(super) struct BucketFiles<'a> {
    dir: &'a Path,
    files: BTreeMap<u64, BucketFile>,
}

/// A bucket's file, open for appending.
struct BucketFile {
    file: std::fs::File,
    /// Its length after the last piece appended whole.
    len: u64,
    /// Whether this drain created it (its directory entry is synced too).
    created: bool,
}

impl<'a> BucketFiles<'a> {
    pub(super) fn new(dir: &'a Path) -> BucketFiles<'a> {
        BucketFiles {
            dir,
            files: BTreeMap::new(),
        }
    }

    /// Appends a piece of `bucket`'s rows to its file.
    pub(super) fn append(&mut self, bucket: u64, text: &str) -> std::io::Result<()> {
        let bucket_file = match self.files.entry(bucket) {
            std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
            std::collections::btree_map::Entry::Vacant(vacant) => {
                std::fs::create_dir_all(self.dir)?;
                let path = bucket_path(self.dir, bucket);
                let created = !path.exists();
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let len = file.metadata()?.len();
                vacant.insert(BucketFile { file, len, created })
            }
        };
        if let Err(error) = bucket_file.file.write_all(text.as_bytes()) {
            let _ = bucket_file.file.set_len(bucket_file.len);
            return Err(error);
        }
        start_writeback(&bucket_file.file, bucket_file.len, text.len());
        bucket_file.len += text.len() as u64;
        Ok(())
    }

    /// Makes every piece appended durable, and the directory entries of files this
    /// drain created.
    pub(super) fn sync(self) -> std::io::Result<()> {
        for bucket_file in self.files.values() {
            bucket_file.file.sync_data()?;
        }
        if self.files.values().any(|f| f.created) {
            std::fs::File::open(self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk,
/// without waiting for them (Linux; elsewhere the final sync writes them).
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `file` is borrowed, and
        // sync_file_range reads no memory of ours; a failure only means the final
        // sync has more to write.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// How far before a publication began a read-back of the output stream starts (clock
/// skew between this host and Kinesis's arrival timestamps).
pub(super) const READ_BACK_MARGIN_MS: u64 = 5 * 60 * 1000;

/// Where rows go, connected.
pub(super) enum Writer<'a> {
    Files(&'a Path),
    Kinesis(Box<KinesisWriter>),
}

/// What the sink holds for the batches of one publication scope (a checkpoint store, or
/// a shard holding of one; or sources without checkpoints) until the next flush.
pub(super) struct Pending {
    /// Tells this group's partial aggregates apart from others' (unique in a run).
    pub(super) id: u64,
    pub(super) store: Option<Checkpoints>,
    pub(super) scope: Scope,
    pub(super) rollup: Rollup,
    /// The batches the rows came from: done (acknowledged) after the flush.
    pub(super) covered: Vec<Taken>,
    /// Per shard, the last sequence number covered.
    pub(super) covers: BTreeMap<String, String>,
    /// Per shard, how far the sink had published it when this run first saw it (in this
    /// scope): batches wholly before are a reading again of what is in Druid already.
    pub(super) published_before: HashMap<String, Option<String>>,
}

/// Writes rows, as publications for checkpointed batches.
pub(super) struct Publisher<'a> {
    pub(super) id: &'a str,
    pub(super) writer: Writer<'a>,
    pub(super) metrics: &'a ComponentMetrics,
    pub(super) lifecycle: &'a Lifecycle,
    /// Makes publication ids unique across runs.
    pub(super) run: String,
    pub(super) publications: u64,
}

/// How a publication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Published {
    /// Its rows are written and it is logged as ended.
    Ended,
    /// Its shard's lease is gone: the next holder settles or reads it again.
    LeaseLost,
}

use crate::util::epoch_millis as epoch_ms;

/// The bucket of a row (its `timestamp`, in epoch milliseconds, over 1000).
pub(super) fn bucket_of(row: &str) -> u64 {
    row.strip_prefix("{\"timestamp\":")
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|ms| ms.parse::<u64>().ok())
        .map_or(0, |ms| ms / 1000)
}

/// The publication log failed.
#[derive(Debug, thiserror::Error)]
#[error("publication log: {0}")]
pub struct PublicationLogError(#[source] pub CheckpointError);

impl crate::sinks::Labeled for PublicationLogError {
    fn error_type(&self) -> &'static str {
        "publication_log_failed"
    }
}

impl Publisher<'_> {
    /// Writes the rows rolled up from `pending`'s batches (in its rollup and in
    /// `shards`, the helpers' rollups of it), then marks them done; or, when their lease
    /// holding is gone, forsakes them.
    pub(super) fn flush(
        &mut self,
        pending: &mut Pending,
        mut shards: Vec<Rollup>,
    ) -> Result<(), SinkError> {
        let covers = std::mem::take(&mut pending.covers);
        let mut outcome = Published::Ended;
        // The group's own rollup, first among the shards for the drain, and back after.
        let own = std::mem::replace(&mut pending.rollup, Rollup::new(&[], 1));
        shards.insert(0, own);
        let written = if let Some(store) = &pending.store
            && !store.current(&pending.scope)
        {
            outcome = Published::LeaseLost;
            for rollup in &mut shards {
                rollup.clear();
            }
            Ok(())
        } else if shards.iter().any(|r| !r.is_empty()) {
            match &pending.store {
                Some(store) => {
                    let rows = Rollup::drain_all(&mut shards);
                    self.publish(store, &pending.scope, &rows, covers)
                        .map(|published| outcome = published)
                }
                None => self.write_plain(&mut shards),
            }
        } else {
            Ok(())
        };
        pending.rollup = shards.swap_remove(0);
        written?;
        let forsaken = outcome == Published::LeaseLost && !pending.covered.is_empty();
        if forsaken {
            let lines: usize = pending.covered.iter().map(|b| b.lines).sum();
            self.metrics
                .count("druid_lease_lost_lines_total", lines as u64);
            tracing::info!(message = "A shard's lease went before its rows were published; its next holder reads them again.", component_id = %self.id, scope = ?pending.scope, lines);
        }
        for batch in pending.covered.drain(..) {
            match outcome {
                Published::Ended => batch.done(),
                Published::LeaseLost => batch.forsake(),
            }
        }
        Ok(())
    }

    /// Rows of batches without checkpoints (files, stdin): at least once is all a
    /// source without positions allows. To files, a few MiB of rows at a time, each
    /// piece appended to its bucket's file (retried while it fails transiently), then
    /// one sync per file. A failed sync stops the sink: what the disk holds of the
    /// drain is unknown then, and its batches are not acknowledged.
    pub(super) fn write_plain(&self, shards: &mut [Rollup]) -> Result<(), SinkError> {
        let rows = match &self.writer {
            Writer::Kinesis(writer) => {
                let rows = Rollup::drain_all(shards);
                writer.write(rows.text(), self.metrics, self.lifecycle)?;
                rows.len()
            }
            Writer::Files(dir) => {
                let mut files = BucketFiles::new(dir);
                let rows = Rollup::drain_each_of(shards, |bucket, text, _| {
                    self.write_to(dir, || files.append(bucket, text))
                })?;
                files.sync().map_err(|error| {
                    let error = crate::sinks::PathError::new(dir, error);
                    self.metrics
                        .error(crate::sinks::Labeled::error_type(&error), 1);
                    SinkError::fatal(error)
                })?;
                rows
            }
        };
        self.sent(rows);
        Ok(())
    }

    /// One write of files in `dir`, retried while it fails transiently.
    pub(super) fn write_to(
        &self,
        dir: &Path,
        mut write: impl FnMut() -> std::io::Result<()>,
    ) -> Result<(), SinkError> {
        retrying(self.id, self.metrics, self.lifecycle, || {
            write().map_err(|e| io_attempt(dir, e))
        })
    }

    pub(super) fn sent(&self, rows: usize) {
        self.metrics.sent(rows as u64);
        self.metrics.count("druid_rows_total", rows as u64);
    }

    /// The publication protocol (see the module docs): begin (durably, beside the
    /// checkpoint or in the lease row), write, end (durably), and only then acknowledge.
    pub(super) fn publish(
        &mut self,
        store: &Checkpoints,
        scope: &Scope,
        rows: &Drained,
        covers: BTreeMap<String, String>,
    ) -> Result<Published, SinkError> {
        self.publications += 1;
        let id = format!("{}-{}-{}", self.id, self.run, self.publications);
        let lines: Vec<String> = match &self.writer {
            Writer::Kinesis(_) => rows
                .rows()
                .enumerate()
                .map(|(n, (_, row))| {
                    crate::sinks::aws_kinesis::with_publication(row.trim_end(), &id, n)
                })
                .collect(),
            Writer::Files(_) => rows
                .rows()
                .map(|(_, row)| row.trim_end().to_string())
                .collect(),
        };
        let publication = Publication {
            id,
            started_ms: epoch_ms(),
            covers,
            rows: lines.len(),
            chunks: 0,
        };
        if self
            .log(|| store.begin_publication(self.id, scope, publication.clone(), &lines))?
            .is_none()
        {
            return Ok(Published::LeaseLost);
        }
        crate::failpoint::hit("druid.after_begin");
        if self.write(store, scope, &publication, &lines, false)? == Published::LeaseLost {
            return Ok(Published::LeaseLost);
        }
        crate::failpoint::hit("druid.after_write");
        if self
            .log(|| store.end_publication(self.id, scope))?
            .is_none()
        {
            return Ok(Published::LeaseLost);
        }
        crate::failpoint::hit("druid.after_end");
        self.metrics.count("druid_publications_total", 1);
        Ok(Published::Ended)
    }

    /// Writes a publication's rows so that each is written once: to a stream, settling
    /// unknown outcomes by reading it back (and sending only while `scope` may be
    /// written); to files, as the publication's own files.
    pub(super) fn write(
        &self,
        store: &Checkpoints,
        scope: &Scope,
        publication: &Publication,
        lines: &[String],
        settle: bool,
    ) -> Result<Published, SinkError> {
        match &self.writer {
            Writer::Kinesis(writer) => {
                let written = writer.put_exactly_once(
                    lines,
                    publication.started_ms.saturating_sub(READ_BACK_MARGIN_MS),
                    settle,
                    self.metrics,
                    self.lifecycle,
                    &|| store.may_write(scope),
                )?;
                if !written {
                    return Ok(Published::LeaseLost);
                }
            }
            Writer::Files(dir) => {
                self.write_to(dir, || write_publication_files(dir, &publication.id, lines))?
            }
        }
        self.sent(lines.len());
        Ok(Published::Ended)
    }

    /// One operation on the publication log, retried while it fails transiently (a
    /// full disk, DynamoDB away or throttling); `None` when the lease it needs is gone.
    pub(super) fn log<T>(
        &self,
        mut operation: impl FnMut() -> Result<T, CheckpointError>,
    ) -> Result<Option<T>, SinkError> {
        retrying(self.id, self.metrics, self.lifecycle, || {
            match operation() {
                Ok(value) => Ok(Some(value)),
                Err(CheckpointError::LeaseLost { .. }) => Ok(None),
                Err(error) => {
                    let transient = match &error {
                        CheckpointError::Io { error: io, .. } => crate::sinks::io_transient(io),
                        CheckpointError::Lease(
                            crate::sources::aws_kinesis::leases::LeaseError::Dynamo { .. },
                        ) => true,
                        _ => false,
                    };
                    let error = Box::new(PublicationLogError(error));
                    Err(if transient {
                        AttemptError::Transient(error)
                    } else {
                        AttemptError::Fatal(error)
                    })
                }
            }
        })
    }

    /// Completes the publication a crash (or a host that lost its lease) left begun in
    /// `scope`, if any; `LeaseLost` when the scope's lease went meanwhile.
    pub(super) fn settle(
        &self,
        store: &Checkpoints,
        scope: &Scope,
    ) -> Result<Published, SinkError> {
        let Some(pending) = self.log(|| store.pending_publication(self.id, scope))? else {
            return Ok(Published::LeaseLost);
        };
        let Some((publication, lines)) = pending else {
            return Ok(Published::Ended);
        };
        if let Some(at) = store.settle_not_before(scope) {
            // The last holder may have sent a request just before its holding ran out.
            let wait = at.saturating_duration_since(Instant::now());
            if !self.lifecycle.pause(wait) {
                return Err(SinkError::fatal(
                    "stopped before a publication left by the last holder of a lease could be completed",
                ));
            }
        }
        tracing::info!(message = "Completing a publication begun before a restart.", component_id = %self.id, publication = %publication.id, rows = lines.len());
        if self.write(store, scope, &publication, &lines, true)? == Published::LeaseLost {
            return Ok(Published::LeaseLost);
        }
        if self
            .log(|| store.end_publication(self.id, scope))?
            .is_none()
        {
            return Ok(Published::LeaseLost);
        }
        self.metrics.count("druid_publications_settled_total", 1);
        Ok(Published::Ended)
    }
}

impl Pending {
    pub(super) fn new(
        id: u64,
        store: Option<Checkpoints>,
        scope: Scope,
        spec: &DruidSpec,
    ) -> Pending {
        Pending {
            id,
            store,
            scope,
            rollup: Rollup::new(&spec.dimensions, spec.granularity_secs).with_threads(spec.workers),
            covered: Vec::new(),
            covers: BTreeMap::new(),
            published_before: HashMap::new(),
        }
    }

    /// Whether this group takes batches of `store` in `scope`.
    pub(super) fn takes(&self, store: &Option<Checkpoints>, scope: &Scope) -> bool {
        match (&self.store, store) {
            (Some(a), Some(b)) => a.same(b) && self.scope == *scope,
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether `batch` is wholly a reading again of records whose flows `sink` published
    /// before this run saw their shard.
    pub(super) fn published_already(&mut self, batch: &Taken, sink: &str) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        // Every shard's position is taken the first time it is seen, before this run
        // publishes anything of it.
        let (mut any, mut all) = (false, true);
        for ack in &batch.acks {
            let Some(sequence) = ack.sequence() else {
                continue;
            };
            let before = self
                .published_before
                .entry(ack.shard().to_string())
                .or_insert_with(|| store.published(ack.shard(), sink));
            match before {
                Some(published) if sequence_le(sequence, published) => any = true,
                _ => all = false,
            }
        }
        any && all
    }

    /// Adds `batch`'s positions to what the next publication covers.
    pub(super) fn cover(&mut self, batch: &Taken) {
        for ack in &batch.acks {
            let Some(sequence) = ack.sequence() else {
                continue;
            };
            let entry = self.covers.entry(ack.shard().to_string()).or_default();
            if entry.is_empty() || sequence_le(entry, sequence) {
                *entry = sequence.to_string();
            }
        }
    }
}

/// The checkpoint store and publication scope of `batch`: an error when its
/// acknowledgements span several scopes (under leases, a batch must come from one shard).
pub(super) fn scope_of(batch: &Taken) -> Result<(Option<Checkpoints>, Scope), SinkError> {
    let Some(first) = batch.acks.first() else {
        return Ok((None, Scope::Store));
    };
    let store = first.store().clone();
    let scope = store.scope(first);
    if batch
        .acks
        .iter()
        .any(|a| !a.store().same(&store) || store.scope(a) != scope)
    {
        return Err(SinkError::fatal(
            "a batch carries acknowledgements of several shards or sources, which one publication cannot cover",
        ));
    }
    Ok((Some(store), scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_files_append_piece_after_piece_to_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rows");
        // A file from an earlier drain keeps its rows; a new one is created.
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(bucket_path(&out, 60), "{\"old\":1}\n").unwrap();
        let mut files = BucketFiles::new(&out);
        files.append(60, "{\"a\":1}\n").unwrap();
        files.append(120, "{\"b\":1}\n").unwrap();
        files.append(60, "{\"a\":2}\n{\"a\":3}\n").unwrap();
        files.sync().unwrap();
        let read = |bucket| std::fs::read_to_string(bucket_path(&out, bucket)).unwrap();
        assert_eq!(read(60), "{\"old\":1}\n{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        assert_eq!(read(120), "{\"b\":1}\n");
        // A directory that cannot be made fails the append, not later.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let mut files = BucketFiles::new(&blocked);
        assert!(files.append(60, "{}\n").is_err());
    }
}
