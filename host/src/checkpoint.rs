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
//! table ([`crate::leases`]) the store keeps positions in memory instead and the source
//! writes the advanced ones to the table ([`Checkpoints::take_advanced`]).
//!
//! Once the pipeline fails ([`crate::lifecycle`]), the store is halted: no checkpoint
//! moves again in that run, whatever is released after.
//!
//! A shard that changes hands within a run (a lease lost and taken again) starts a new
//! *generation*: acknowledgements of batches read before are ignored, so they cannot
//! move the new reading's checkpoint.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A shard's durable position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// Sequence number of the last record delivered everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<String>,
    /// The shard is closed and every record of it was delivered.
    #[serde(default)]
    pub finished: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    shards: BTreeMap<String, ShardCheckpoint>,
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
}

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
}

/// The checkpoint store of one source.
#[derive(Clone)]
pub struct Checkpoints {
    inner: Arc<Mutex<Inner>>,
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
            })),
        }
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

    /// Where `shard` was left.
    pub fn get(&self, shard: &str) -> ShardCheckpoint {
        let inner = self.inner.lock().expect("checkpoint lock");
        inner.saved.shards.get(shard).cloned().unwrap_or_default()
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
        })
    }

    fn release(&self, ack: &Ack) {
        let mut inner = self.inner.lock().expect("checkpoint lock");
        inner.in_flight -= 1;
        if inner.halted.load(Ordering::SeqCst) {
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
                if let Err(error) = write_atomically(path, saved) {
                    tracing::error!(message = "Cannot write checkpoints; they will be written with the next advance.", %error);
                }
            }
            None => {
                advanced_shards.insert(ack.shard.clone());
            }
        }
    }
}

fn write_atomically(path: &Path, file: &File) -> Result<(), CheckpointError> {
    let io = |error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let aside = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(file).expect("checkpoints serialise");
    // Durable before it is visible: the new file's bytes reach the disk before the
    // rename, and the rename itself (the directory entry) is synced after it, so a crash
    // or power loss leaves either the old checkpoints or the new ones, never a torn file.
    let mut written = std::fs::File::create(&aside).map_err(io)?;
    std::io::Write::write_all(&mut written, text.as_bytes()).map_err(io)?;
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
mod tests {
    use super::*;

    #[test]
    fn in_memory_positions_advance_per_generation() {
        let store = Checkpoints::in_memory();
        let stale = store.ack("s", 0, Some("5".into()), false);
        assert_eq!(store.in_flight(), 1);
        // The shard changes hands and is read again from "3": the earlier reading's
        // ack must not move the new reading's checkpoint.
        store.restart(
            "s",
            ShardCheckpoint {
                sequence: Some("3".into()),
                finished: false,
            },
        );
        drop(stale);
        assert_eq!(store.in_flight(), 0);
        assert!(store.take_advanced().is_empty());
        assert_eq!(store.get("s").sequence.as_deref(), Some("3"));
        let a0 = store.ack("s", 0, Some("4".into()), false);
        let a1 = store.ack("s", 1, None, true);
        drop(a1);
        assert!(store.take_advanced().is_empty(), "batch 0 still in flight");
        drop(a0);
        assert_eq!(
            store.take_advanced(),
            vec![(
                "s".to_string(),
                ShardCheckpoint {
                    sequence: Some("4".into()),
                    finished: true
                }
            )]
        );
        assert!(store.take_advanced().is_empty());
        assert_eq!(store.in_flight(), 0);
    }

    #[test]
    fn advances_only_over_an_unbroken_run_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let store = Checkpoints::open(&path).unwrap();
        let a0 = store.ack("s", 0, Some("10".into()), false);
        let a1 = store.ack("s", 1, Some("20".into()), false);
        let a2 = store.ack("s", 2, None, true);
        drop(a1);
        assert_eq!(
            store.get("s"),
            ShardCheckpoint::default(),
            "batch 0 still in flight"
        );
        drop(a2);
        assert_eq!(store.get("s").sequence, None);
        drop(a0);
        assert_eq!(
            store.get("s"),
            ShardCheckpoint {
                sequence: Some("20".into()),
                finished: true
            }
        );
        let reopened = Checkpoints::open(&path).unwrap();
        assert_eq!(reopened.get("s").sequence.as_deref(), Some("20"));
        assert!(reopened.get("s").finished);
        std::fs::write(&path, "nonsense").unwrap();
        assert!(matches!(
            Checkpoints::open(&path),
            Err(CheckpointError::Invalid { .. })
        ));
    }
}
