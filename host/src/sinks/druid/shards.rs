//! Rollup on several cores, sharded by key: the sink's thread routes each record of a
//! column batch to one of the shards by a hash of what its key is made of
//! ([`Router`]), rolls up its own shard's records and hands each helper thread the row
//! numbers of its shard, with the batch. A key lives in one shard, so nothing is merged:
//! at a flush the helpers hand their rollups over and the shards drain side by side
//! ([`Rollup::drain_each_of`]). Routing costs a few nanoseconds per record (a side's
//! text is hashed once per owner and table snapshot), so the sink's thread keeps up
//! with many helpers on any data, whether rows gather many flows or one each.
//!
//! Batches of JSON lines are rolled up on the sink's thread: a row of theirs may share
//! its key with a helper's row of the same flush, which Druid's rollup sums again like
//! rows of one bucket written by two flushes.

use super::DruidSpec;
use super::rollup::{Rollup, Router};
use crate::batch::Columns;
use crate::metrics::ComponentMetrics;
use crate::sinks::SinkError;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::Scope;

/// The helper threads of one sink, each rolling up a shard of the keys.
pub(super) struct Shards {
    helpers: Vec<Helper>,
    /// Routes records among the sink's own shard (0) and the helpers' (`None` without
    /// helpers).
    router: Option<Router>,
    /// Per shard, the row numbers of the batch being routed (reused).
    selections: Vec<Vec<u32>>,
}

/// One helper: where its jobs go, and the selections it is done with.
struct Helper {
    jobs: SyncSender<Job>,
    spare: Receiver<Vec<u32>>,
}

/// What a helper is asked to do.
enum Job {
    /// Roll up the records `rows` of a batch's columns into the group's rollup.
    Add {
        group: u64,
        columns: Arc<Columns>,
        rows: Vec<u32>,
    },
    /// Hand over the group's rollup (`None` when it has none).
    Take {
        group: u64,
        reply: mpsc::Sender<Option<Rollup>>,
    },
}

/// A helper thread stopped (it panicked): its rows are gone, so no batch it rolled up
/// may be acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("a rollup thread of the sink stopped; its rows are lost and its batches not acknowledged")]
pub struct ShardStopped;

impl crate::sinks::Labeled for ShardStopped {
    fn error_type(&self) -> &'static str {
        "rollup_thread_failed"
    }
}

/// Batches a helper holds besides the one it works on: the sink's thread waits for a
/// helper that is this far behind.
const QUEUED_PER_HELPER: usize = 2;

/// Rolls up a batch's columns (the records of `selection` alone, when given) into
/// `rollup`, counting its flows and those without a start.
pub(super) fn roll_up_columns(
    rollup: &mut Rollup,
    columns: &Columns,
    selection: Option<&[u32]>,
    metrics: &ComponentMetrics,
) {
    let (added, no_start) = rollup.add_columns_in(columns, selection);
    metrics.count("druid_flows_total", added);
    if no_start > 0 {
        metrics.error("missing_start", no_start);
        metrics.discarded(no_start);
    }
}

impl Shards {
    /// Starts `helpers` threads in `scope` (none for 0), each ending when the returned
    /// value is dropped.
    pub(super) fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        helpers: usize,
        spec: &'env DruidSpec,
        metrics: &'env ComponentMetrics,
    ) -> Shards {
        let helpers: Vec<Helper> = (0..helpers)
            .map(|_| {
                let (jobs, queue) = mpsc::sync_channel(QUEUED_PER_HELPER);
                let (give_back, spare) = mpsc::channel();
                scope.spawn(move || help(queue, give_back, spec, metrics));
                Helper { jobs, spare }
            })
            .collect();
        let shards = helpers.len() + 1;
        Shards {
            router: (shards > 1)
                .then(|| Router::new(&spec.dimensions, spec.granularity_secs, shards)),
            selections: vec![Vec::new(); shards],
            helpers,
        }
    }

    /// Rolls up `columns` of `group`: the records of the sink's own shard into `own`,
    /// and each helper's into that helper's rollup of the group. Fails when a helper
    /// has stopped.
    pub(super) fn add(
        &mut self,
        group: u64,
        own: &mut Rollup,
        columns: &Arc<Columns>,
        metrics: &ComponentMetrics,
    ) -> Result<(), SinkError> {
        let Some(router) = &mut self.router else {
            roll_up_columns(own, columns, None, metrics);
            return Ok(());
        };
        for selection in &mut self.selections {
            selection.clear();
        }
        router.route(columns, &mut self.selections);
        for (helper, selection) in self.helpers.iter().zip(&mut self.selections[1..]) {
            if selection.is_empty() {
                continue;
            }
            let spare = helper.spare.try_recv().unwrap_or_default();
            let rows = std::mem::replace(selection, spare);
            helper
                .jobs
                .send(Job::Add {
                    group,
                    columns: columns.clone(),
                    rows,
                })
                .map_err(|_| SinkError::fatal(ShardStopped))?;
        }
        roll_up_columns(own, columns, Some(&self.selections[0]), metrics);
        Ok(())
    }

    /// The helpers' rollups of `group`, taken: each holds every batch handed to it
    /// before this call. Fails when a helper has stopped (its rows are lost, so the
    /// flush must not acknowledge anything).
    pub(super) fn take(&self, group: u64) -> Result<Vec<Rollup>, SinkError> {
        // Every helper is asked first, so they finish their queues at the same time.
        let answers = self
            .helpers
            .iter()
            .map(|helper| {
                let (reply, answer) = mpsc::channel();
                helper.jobs.send(Job::Take { group, reply }).ok()?;
                Some(answer)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SinkError::fatal(ShardStopped))?;
        let mut rollups = Vec::new();
        for answer in answers {
            match answer.recv() {
                Ok(rollup) => rollups.extend(rollup),
                Err(_) => return Err(SinkError::fatal(ShardStopped)),
            }
        }
        Ok(rollups)
    }
}

/// A helper's loop: until the sink drops its end.
fn help(
    queue: Receiver<Job>,
    give_back: mpsc::Sender<Vec<u32>>,
    spec: &DruidSpec,
    metrics: &ComponentMetrics,
) {
    let mut rollups: HashMap<u64, Rollup> = HashMap::new();
    for job in queue {
        match job {
            Job::Add {
                group,
                columns,
                mut rows,
            } => {
                crate::failpoint::hit("druid.shard_add");
                let rollup = rollups
                    .entry(group)
                    .or_insert_with(|| Rollup::new(&spec.dimensions, spec.granularity_secs));
                roll_up_columns(rollup, &columns, Some(&rows), metrics);
                rows.clear();
                let _ = give_back.send(rows);
            }
            Job::Take { group, reply } => {
                let _ = reply.send(rollups.remove(&group));
            }
        }
    }
}
