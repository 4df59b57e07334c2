//! End-to-end acknowledgements and durable checkpoints for the Kinesis source.
//!
//! Every batch a shard produces carries an [`Ack`]. The batch is shared down the pipeline
//! (transforms pass their inputs' acks on to what they emit, including dead letters and
//! held lines), and the ack is released when the last component holding it drops it:
//! after every sink has written and flushed the batch. A shard's checkpoint advances only
//! over an unbroken run of released batches, so a batch still in flight (a slow sink, a
//! held line) keeps every later one from being checkpointed. The store is one JSON file
//! per source, replaced atomically and durably on every advance (written aside and
//! synced, renamed, the directory synced); a restarted source resumes after each shard's
//! checkpoint, so a crash re-delivers at most the unacknowledged tail. With a lease
//! table ([`crate::sources::aws_kinesis::leases`]) the store keeps positions in memory instead and the source
//! writes the advanced ones to the table ([`Checkpoints::take_advanced`]).
//!
//! Once the pipeline fails ([`crate::lifecycle`]), the store is halted: no checkpoint
//! moves again in that run, whatever is released after.
//!
//! A shard that changes hands within a run (a lease lost and taken again) starts a new
//! *generation*: acknowledgements of batches read before are ignored, so they cannot
//! move the new reading's checkpoint.
//!
//! The store also keeps the publication log of `druid` sinks ([`crate::sinks::druid`]):
//! in the checkpoint file, one publication per sink covering every shard of the store;
//! with a lease table, one per sink and shard holding, in the shard's lease row
//! ([`crate::sources::aws_kinesis::leases::publications`]). A [`Scope`] names which.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sources::aws_kinesis::leases::LeaseError;
use crate::sources::aws_kinesis::leases::publications::LeaseLog;

/// A shard's durable position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// Sequence number of the last record delivered everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// The shard is closed and every record of it was delivered.
    #[serde(default)]
    pub finished: bool,
    /// Per `druid` sink: every flow of every record up to this sequence number is in
    /// rows that sink has published (see [`crate::sinks::druid`]), so a reading again
    /// from `sequence` must not publish them again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub published: BTreeMap<String, String>,
}

/// A publication of a `druid` sink that began and is not known to have ended: its rows
/// are in a file beside the store (`<store>.<sink>.<id>.publication`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// Unique id; every row carries it (`"publication": "<id>/<row>"`).
    pub id: String,
    /// When it began, in epoch milliseconds (a read-back of the output stream starts a
    /// little before).
    pub started_ms: u64,
    /// Per shard, the last sequence number whose flows its rows hold.
    pub covers: BTreeMap<String, String>,
    /// How many rows it has.
    pub rows: usize,
    /// In a lease table: how many items hold its rows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Which publication log a `druid` sink's publication goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The store's own, in its checkpoint file: one publication covers every shard.
    Store,
    /// A shard's lease row, for one holding of the lease (a generation of the shard's
    /// reading): one publication covers that shard alone.
    Shard {
        /// Shard id.
        shard: String,
        /// The reading the batches came from.
        generation: u64,
    },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct File {
    shards: BTreeMap<String, ShardCheckpoint>,
    /// Publications begun and not ended, by sink id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    publications: BTreeMap<String, Publication>,
}

/// Whether Kinesis sequence number `a` comes at or before `b` (both are decimal
/// numbers of up to 128 bits, without leading zeros).
pub fn sequence_le(a: &str, b: &str) -> bool {
    (a.len(), a) <= (b.len(), b)
}

/// Why checkpoints could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the store.
    #[error("checkpoint store {path}: {error}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The store is not a checkpoint file.
    #[error("checkpoint store {path} is not valid: {error}")]
    Invalid {
        /// The store file.
        path: PathBuf,
        /// What serde_json found.
        error: serde_json::Error,
    },
    /// The publication log in the lease table could not be used.
    #[error("publication log: {0}")]
    Lease(#[from] LeaseError),
    /// The shard's lease is no longer held in the holding the batches were read under:
    /// its next holder reads them again.
    #[error("the lease of shard {shard} is no longer held")]
    LeaseLost {
        /// Shard id.
        shard: String,
    },
}

/// What the store knows of a shard read under a lease.
struct Leased {
    /// The reading under this holding.
    generation: u64,
    /// The holding's token.
    epoch: String,
    /// When the lease was taken.
    acquired: Instant,
    /// Per sink, the publication begun and not ended.
    publications: BTreeMap<String, Publication>,
}

/// How long a new holder waits, after taking a lease, before it settles a publication
/// its last owner left: a write the last owner began before its holding ran out has
/// been applied or given up by then (the AWS clients' attempt timeout).
pub const SETTLE_AFTER_TAKING: std::time::Duration = crate::aws::ATTEMPT_TIMEOUT;

/// Per-shard bookkeeping of released batches.
#[derive(Default)]
struct ShardProgress {
    /// Acks of other generations are ignored.
    generation: u64,
    /// Next batch number the checkpoint waits for.
    next: u64,
    /// Released batches beyond `next`, with their last sequence and end flag.
    released: BTreeMap<u64, (Option<String>, bool)>,
}

struct Inner {
    /// The file, or `None` when positions go to a lease table.
    path: Option<PathBuf>,
    saved: File,
    progress: BTreeMap<String, ShardProgress>,
    /// Shards whose position advanced since [`Checkpoints::take_advanced`].
    advanced: std::collections::BTreeSet<String>,
    /// Acks handed out and not released yet.
    in_flight: usize,
    /// Set when the pipeline failed: no position moves again (see [`crate::lifecycle`]).
    halted: Arc<AtomicBool>,
    /// Rows of pending publications, for a store kept in memory.
    pending_rows: BTreeMap<String, Vec<String>>,
    /// With a lease table: where publications are logged.
    lease_log: Option<Arc<LeaseLog>>,
    /// With a lease table: the shards held, by id.
    leased: BTreeMap<String, Leased>,
}

/// The checkpoint store of one source.
#[derive(Clone)]
pub struct Checkpoints {
    inner: Arc<Mutex<Inner>>,
    /// Notified when the last ack in flight is released.
    acknowledged: Arc<Condvar>,
}

impl Checkpoints {
    /// Opens (or starts) the store at `path`.
    pub fn open(path: &Path) -> Result<Checkpoints, CheckpointError> {
        let saved = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| CheckpointError::Invalid {
                path: path.to_path_buf(),
                error,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(error) => {
                return Err(CheckpointError::Io {
                    path: path.to_path_buf(),
                    error,
                });
            }
        };
        Ok(Checkpoints::with(Some(path.to_path_buf()), saved))
    }

    /// A store kept in memory, for positions written to a lease table.
    pub fn in_memory() -> Checkpoints {
        Checkpoints::with(None, File::default())
    }

    fn with(path: Option<PathBuf>, saved: File) -> Checkpoints {
        Checkpoints {
            inner: Arc::new(Mutex::new(Inner {
                path,
                saved,
                progress: BTreeMap::new(),
                advanced: Default::default(),
                in_flight: 0,
                halted: Arc::default(),
                pending_rows: BTreeMap::new(),
                lease_log: None,
                leased: BTreeMap::new(),
            })),
            acknowledged: Arc::new(Condvar::new()),
        }
    }

    /// Publications go to shards' lease rows through `log` (a store kept in memory for
    /// a source with a lease table).
    pub fn use_lease_log(&self, log: LeaseLog) {
        self.inner.lock().expect("checkpoint lock").lease_log = Some(Arc::new(log));
    }

    /// Where the publication of a batch acknowledged by `ack` is logged.
    pub fn scope(&self, ack: &Ack) -> Scope {
        let inner = self.inner.lock().expect("checkpoint lock");
        match inner.lease_log {
            None => Scope::Store,
            Some(_) => Scope::Shard {
                shard: ack.shard.clone(),
                generation: ack.generation,
            },
        }
    }

    /// A reading of `shard` under a lease just taken: as [`Checkpoints::restart`], and
    /// the holding's token and the publications its last owner left pending.
    pub fn restart_leased(
        &self,
        shard: &str,
        position: ShardCheckpoint,
        epoch: String,
        publications: BTreeMap<String, Publication>,
    ) {
        self.restart(shard, position);
        let mut inner = self.inner.lock().expect("checkpoint lock");
        let generation = inner.progress.get(shard).map_or(0, |p| p.generation);
        inner.leased.insert(
            shard.to_string(),
            Leased {
                generation,
                epoch,
                acquired: Instant::now(),
                publications,
            },
        );
    }

    /// For a shard scope still held in its holding: the shard, the token and the log.
    fn holding(&self, scope: &Scope) -> Option<(String, String, Arc<LeaseLog>)> {
        let Scope::Shard { shard, generation } = scope else {
            return None;
        };
        let inner = self.inner.lock().expect("checkpoint lock");
        let leased = inner
            .leased
            .get(shard)
            .filter(|l| l.generation == *generation)?;
        Some((
            shard.clone(),
            leased.epoch.clone(),
            inner.lease_log.clone()?,
        ))
    }

    /// Whether what is published in `scope` may be written now: always for the store;
    /// for a shard, while its holding lasts by this host's clock.
    pub fn may_write(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Store => true,
            Scope::Shard { .. } => self
                .holding(scope)
                .is_some_and(|(shard, epoch, log)| log.holds(&shard, &epoch)),
        }
    }

    /// Whether `scope` is still current (a shard: still held in the same holding).
    pub fn current(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Store => true,
            Scope::Shard { .. } => self.holding(scope).is_some(),
        }
    }

    /// Until when a publication left pending in `scope` must not be settled (see
    /// [`SETTLE_AFTER_TAKING`]).
    pub fn settle_not_before(&self, scope: &Scope) -> Option<Instant> {
        let Scope::Shard { shard, .. } = scope else {
            return None;
        };
        let inner = self.inner.lock().expect("checkpoint lock");
        Some(inner.leased.get(shard)?.acquired + SETTLE_AFTER_TAKING)
    }

    /// The store stops advancing for good once `halted` is set (the pipeline failed):
    /// acknowledgements released after that are ignored.
    pub fn halted_by(self, halted: Arc<AtomicBool>) -> Checkpoints {
        self.inner.lock().expect("checkpoint lock").halted = halted;
        self
    }

    /// Starts a new reading of `shard` from `position` (a lease taken): batch numbers
    /// start at 0 again and acks of earlier readings are ignored.
    pub fn restart(&self, shard: &str, position: ShardCheckpoint) {
        let mut inner = self.inner.lock().expect("checkpoint lock");
        let progress = inner.progress.entry(shard.to_string()).or_default();
        progress.generation += 1;
        progress.next = 0;
        progress.released.clear();
        inner.saved.shards.insert(shard.to_string(), position);
        inner.advanced.remove(shard);
        inner.leased.remove(shard);
    }

    /// Positions that advanced since the last call, to be written elsewhere.
    pub fn take_advanced(&self) -> Vec<(String, ShardCheckpoint)> {
        let mut inner = self.inner.lock().expect("checkpoint lock");
        let advanced = std::mem::take(&mut inner.advanced);
        advanced
            .into_iter()
            .map(|shard| {
                let position = inner.saved.shards.get(&shard).cloned().unwrap_or_default();
                (shard, position)
            })
            .collect()
    }

    /// Marks positions as advanced again (their write elsewhere failed).
    pub fn advanced_again(&self, shards: Vec<String>) {
        let mut inner = self.inner.lock().expect("checkpoint lock");
        inner.advanced.extend(shards);
    }

    /// Acks handed out and not released yet.
    pub fn in_flight(&self) -> usize {
        self.inner.lock().expect("checkpoint lock").in_flight
    }

    /// Waits until no ack is in flight or `timeout` passes; returns the acks still in
    /// flight (0: everything handed out was released).
    pub fn wait_acknowledged(&self, timeout: Duration) -> usize {
        let inner = self.inner.lock().expect("checkpoint lock");
        let (inner, _) = self
            .acknowledged
            .wait_timeout_while(inner, timeout, |inner| inner.in_flight > 0)
            .expect("checkpoint lock");
        inner.in_flight
    }

    /// The publication `sink` began in `scope` and did not end, with its rows (read from
    /// the file beside the store, or the lease table; `None` when there is none).
    pub fn pending_publication(
        &self,
        sink: &str,
        scope: &Scope,
    ) -> Result<Option<(Publication, Vec<String>)>, CheckpointError> {
        if let Scope::Shard { shard, .. } = scope {
            let Some((_, _, log)) = self.holding(scope) else {
                return Err(CheckpointError::LeaseLost {
                    shard: shard.clone(),
                });
            };
            let publication = {
                let inner = self.inner.lock().expect("checkpoint lock");
                inner
                    .leased
                    .get(shard)
                    .and_then(|l| l.publications.get(sink).cloned())
            };
            let Some(publication) = publication else {
                return Ok(None);
            };
            let rows = log.rows(&publication)?;
            return Ok(Some((publication, rows)));
        }
        let inner = self.inner.lock().expect("checkpoint lock");
        let Some(publication) = inner.saved.publications.get(sink).cloned() else {
            return Ok(None);
        };
        let rows = match &inner.path {
            Some(path) => {
                let aside = rows_path(path, sink, &publication.id);
                let text =
                    std::fs::read_to_string(&aside).map_err(|error| CheckpointError::Io {
                        path: aside.clone(),
                        error,
                    })?;
                text.lines().map(str::to_string).collect()
            }
            None => inner.pending_rows.get(sink).cloned().unwrap_or_default(),
        };
        Ok(Some((publication, rows)))
    }

    /// Records, durably, that `sink` begins `publication` of `rows`: its rows first
    /// (beside the store, in a file named after the publication), then the store naming
    /// it. A crash from here on leaves the publication to be settled (see
    /// [`crate::sinks::druid`]). Nothing changes unless both writes succeed, so a failed
    /// call can be made again.
    ///
    /// In a shard's scope the publication must cover that shard alone; it goes to the
    /// shard's lease row, and [`CheckpointError::LeaseLost`] says the holding is gone.
    pub fn begin_publication(
        &self,
        sink: &str,
        scope: &Scope,
        mut publication: Publication,
        rows: &[String],
    ) -> Result<(), CheckpointError> {
        if let Scope::Shard { shard, generation } = scope {
            let lost = || CheckpointError::LeaseLost {
                shard: shard.clone(),
            };
            let (_, epoch, log) = self.holding(scope).ok_or_else(lost)?;
            assert!(
                publication.covers.keys().all(|s| s == shard),
                "a publication under a lease covers its shard alone"
            );
            if !log.begin(shard, &epoch, sink, &mut publication, rows)? {
                return Err(lost());
            }
            let mut inner = self.inner.lock().expect("checkpoint lock");
            match inner.leased.get_mut(shard) {
                Some(leased) if leased.generation == *generation => {
                    leased.publications.insert(sink.to_string(), publication);
                    return Ok(());
                }
                _ => return Err(lost()),
            }
        }
        let mut inner = self.inner.lock().expect("checkpoint lock");
        let mut next = inner.saved.clone();
        let id = publication.id.clone();
        next.publications.insert(sink.to_string(), publication);
        match inner.path.clone() {
            Some(path) => {
                let mut text = String::with_capacity(rows.iter().map(|r| r.len() + 1).sum());
                for row in rows {
                    text.push_str(row);
                    text.push('\n');
                }
                write_atomically(&rows_path(&path, sink, &id), text.as_bytes())?;
                write_store(&path, &next)?;
            }
            None => {
                inner.pending_rows.insert(sink.to_string(), rows.to_vec());
            }
        }
        inner.saved = next;
        Ok(())
    }

    /// Records, durably, that `sink`'s pending publication is complete: every shard it
    /// covers is published up to what it covers. Nothing changes unless the write
    /// succeeds, so a failed call can be made again.
    ///
    /// In a shard's scope the lease row is updated; [`CheckpointError::LeaseLost`] says
    /// the holding is gone.
    pub fn end_publication(&self, sink: &str, scope: &Scope) -> Result<(), CheckpointError> {
        if let Scope::Shard { shard, .. } = scope {
            let lost = || CheckpointError::LeaseLost {
                shard: shard.clone(),
            };
            let (_, epoch, log) = self.holding(scope).ok_or_else(lost)?;
            let publication = {
                let inner = self.inner.lock().expect("checkpoint lock");
                inner
                    .leased
                    .get(shard)
                    .and_then(|l| l.publications.get(sink).cloned())
            };
            let Some(publication) = publication else {
                return Ok(());
            };
            let Some(sequence) = publication.covers.get(shard) else {
                return Ok(());
            };
            if !log.end(shard, &epoch, sink, &publication, sequence)? {
                return Err(lost());
            }
            let mut inner = self.inner.lock().expect("checkpoint lock");
            if let Some(leased) = inner.leased.get_mut(shard) {
                leased.publications.remove(sink);
            }
            let entry = inner.saved.shards.entry(shard.clone()).or_default();
            entry.published.insert(sink.to_string(), sequence.clone());
            return Ok(());
        }
        let mut inner = self.inner.lock().expect("checkpoint lock");
        let mut next = inner.saved.clone();
        let Some(publication) = next.publications.remove(sink) else {
            return Ok(());
        };
        for (shard, sequence) in &publication.covers {
            let entry = next.shards.entry(shard.clone()).or_default();
            let newer = entry
                .published
                .get(sink)
                .is_none_or(|before| sequence_le(before, sequence));
            if newer {
                entry.published.insert(sink.to_string(), sequence.clone());
            }
        }
        if let Some(path) = inner.path.clone() {
            write_store(&path, &next)?;
            let _ = std::fs::remove_file(rows_path(&path, sink, &publication.id));
        }
        inner.pending_rows.remove(sink);
        inner.saved = next;
        Ok(())
    }

    /// Up to where `sink` has published `shard` (see [`ShardCheckpoint::published`]).
    pub fn published(&self, shard: &str, sink: &str) -> Option<String> {
        let inner = self.inner.lock().expect("checkpoint lock");
        inner.saved.shards.get(shard)?.published.get(sink).cloned()
    }

    /// Every sequence number of `shard` that a publication ends at (an ended one's
    /// [`ShardCheckpoint::published`], or a pending one's cover): a reading again must
    /// end a batch at each, so that every batch is wholly published or wholly not.
    pub fn boundaries(&self, shard: &str) -> Vec<String> {
        let inner = self.inner.lock().expect("checkpoint lock");
        let published = inner
            .saved
            .shards
            .get(shard)
            .into_iter()
            .flat_map(|s| s.published.values());
        let pending = inner
            .saved
            .publications
            .values()
            .filter_map(|p| p.covers.get(shard));
        let leased = inner
            .leased
            .get(shard)
            .into_iter()
            .flat_map(|l| l.publications.values())
            .filter_map(|p| p.covers.get(shard));
        published.chain(pending).chain(leased).cloned().collect()
    }

    /// Whether two handles are the same store.
    pub fn same(&self, other: &Checkpoints) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Where `shard` was left.
    pub fn get(&self, shard: &str) -> ShardCheckpoint {
        let inner = self.inner.lock().expect("checkpoint lock");
        inner.saved.shards.get(shard).cloned().unwrap_or_default()
    }

    /// Forgets `shard` (a stream that is done and will not be read again in this run:
    /// an S3 object whose message was deleted), so the store does not grow with them.
    /// A holding of it ends too: its scope is no longer current, so a `druid` sink drops
    /// its (empty) group.
    pub fn forget(&self, shard: &str) {
        let mut inner = self.inner.lock().expect("checkpoint lock");
        inner.saved.shards.remove(shard);
        inner.progress.remove(shard);
        inner.advanced.remove(shard);
        inner.leased.remove(shard);
    }

    /// How many of `shard`'s batches of this run are checkpointed (batches are numbered
    /// from 0, so this is also the number of the first one still awaited).
    pub fn checkpointed_batches(&self, shard: &str) -> u64 {
        let inner = self.inner.lock().expect("checkpoint lock");
        inner.progress.get(shard).map_or(0, |p| p.next)
    }

    /// The ack for batch number `batch` of `shard` (numbers start at 0 for each shard in
    /// each run), whose last record is `sequence` (`None`: no record, e.g. the end
    /// marker), and which ends the shard when `end` is set.
    pub fn ack(&self, shard: &str, batch: u64, sequence: Option<String>, end: bool) -> Arc<Ack> {
        let generation = {
            let mut inner = self.inner.lock().expect("checkpoint lock");
            inner.in_flight += 1;
            inner.progress.get(shard).map_or(0, |p| p.generation)
        };
        Arc::new(Ack {
            store: self.clone(),
            shard: shard.to_string(),
            generation,
            batch,
            sequence,
            end,
            forsaken: AtomicBool::new(false),
        })
    }

    fn release(&self, ack: &Ack) {
        let mut inner = self.inner.lock().expect("checkpoint lock");
        inner.in_flight -= 1;
        if inner.in_flight == 0 {
            self.acknowledged.notify_all();
        }
        if inner.halted.load(Ordering::SeqCst) || ack.forsaken.load(Ordering::SeqCst) {
            return;
        }
        let Inner {
            path,
            saved,
            progress,
            advanced: advanced_shards,
            ..
        } = &mut *inner;
        let progress = progress.entry(ack.shard.clone()).or_default();
        if progress.generation != ack.generation {
            return;
        }
        progress
            .released
            .insert(ack.batch, (ack.sequence.clone(), ack.end));
        let mut advanced = false;
        while let Some((sequence, end)) = progress.released.remove(&progress.next) {
            progress.next += 1;
            let entry = saved.shards.entry(ack.shard.clone()).or_default();
            if sequence.is_some() {
                entry.sequence = sequence;
            }
            entry.finished |= end;
            advanced = true;
        }
        if !advanced {
            return;
        }
        match path {
            Some(path) => {
                if let Err(error) = write_store(path, saved) {
                    tracing::error!(message = "Cannot write checkpoints; they will be written with the next advance.", %error);
                }
            }
            None => {
                advanced_shards.insert(ack.shard.clone());
            }
        }
    }
}

/// The file beside the store at `path` that holds the rows of `sink`'s publication `id`.
fn rows_path(path: &Path, sink: &str, id: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{sink}.{id}.publication"));
    path.with_file_name(name)
}

fn write_store(path: &Path, file: &File) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(file).expect("checkpoints serialise");
    write_atomically(path, text.as_bytes())
}

/// Replaces `path` with `bytes`, durably: written aside and synced, renamed, the
/// directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut aside = path.as_os_str().to_os_string();
    aside.push(".tmp");
    let aside = PathBuf::from(aside);
    // Durable before it is visible: the new file's bytes reach the disk before the
    // rename, and the rename itself (the directory entry) is synced after it, so a crash
    // or power loss leaves either the old file or the new one, never a torn one.
    let mut written = std::fs::File::create(&aside).map_err(io)?;
    std::io::Write::write_all(&mut written, bytes).map_err(io)?;
    written.sync_all().map_err(io)?;
    drop(written);
    std::fs::rename(&aside, path).map_err(io)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Released when the last holder drops it; see the module docs.
pub struct Ack {
    store: Checkpoints,
    shard: String,
    generation: u64,
    batch: u64,
    sequence: Option<String>,
    end: bool,
    /// Never counts as released (see [`Ack::forsake`]).
    forsaken: AtomicBool,
}

impl Ack {
    /// The reading of the shard the batch came from (see [`Checkpoints::restart`]).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The batch will never be delivered by this host (its shard's lease is gone): its
    /// release must not move the checkpoint, so nothing after it is checkpointed in this
    /// reading either, and the shard's next holder reads it again.
    pub fn forsake(&self) {
        self.forsaken.store(true, Ordering::SeqCst);
    }

    /// The shard the batch came from.
    pub fn shard(&self) -> &str {
        &self.shard
    }

    /// The batch's last record (`None`: no record, e.g. the end marker).
    pub fn sequence(&self) -> Option<&str> {
        self.sequence.as_deref()
    }

    /// The store the batch is checkpointed in.
    pub fn store(&self) -> &Checkpoints {
        &self.store
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("shard", &self.shard)
            .field("batch", &self.batch)
            .finish()
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.store.release(self);
    }
}

#[cfg(test)]
mod tests;
