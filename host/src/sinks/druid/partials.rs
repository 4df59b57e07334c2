//! Rollup on several cores: helper threads roll up some of the sink's column batches
//! into partial aggregates of their own (one per publication group), which the sink's
//! thread absorbs into its own rollup at each flush, before any row of it is written.
//!
//! While batches wait for the sink, its thread hands each to a helper that has room,
//! and rolls it up itself when none has, so the work spreads over the helpers and the
//! sink's thread as fast as each goes; a sink that keeps up uses no helper, and has
//! nothing to merge. Sums do not depend on the order flows are added in, and a partial keeps
//! its own codes (its rows are translated by their texts when absorbed), so a batch may
//! go to any helper. Batches of JSON lines are rolled up on the sink's thread.
//!
//! A partial pays only when its rows gather several flows each: merging it costs about
//! one insert per row, as much as rolling up its flows did when every flow makes a row
//! of its own. So once the helpers' partials hold more than one row per two flows, the
//! sink's thread rolls up alone until the next flush, when the helpers are tried again.

use super::DruidSpec;
use super::rollup::Rollup;
use crate::batch::Columns;
use crate::metrics::ComponentMetrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::Scope;

/// The helper threads of one sink.
pub(super) struct Partials {
    helpers: Vec<SyncSender<Job>>,
    /// The helper offered the next batch first.
    next: usize,
    /// What the helpers' partials hold since the last gathering.
    load: Arc<Load>,
}

/// Flows rolled up into partials, and the rows they made.
#[derive(Default)]
struct Load {
    flows: AtomicU64,
    rows: AtomicU64,
}

/// Flows the helpers roll up before their rows per flow are judged.
const LOAD_SAMPLE_FLOWS: u64 = 65_536;

impl Load {
    /// Whether partials still pay: too few flows yet to tell, or at least two flows per
    /// row.
    fn pays(&self) -> bool {
        let flows = self.flows.load(Ordering::Relaxed);
        flows < LOAD_SAMPLE_FLOWS || self.rows.load(Ordering::Relaxed) * 2 <= flows
    }

    fn clear(&self) {
        self.flows.store(0, Ordering::Relaxed);
        self.rows.store(0, Ordering::Relaxed);
    }
}

/// What a helper is asked to do.
enum Job {
    /// Roll up a batch's columns into the group's partial aggregate.
    Add { group: u64, columns: Arc<Columns> },
    /// Hand over the group's partial aggregate (`None` when it has none).
    Take {
        group: u64,
        reply: mpsc::Sender<Option<Rollup>>,
    },
}

/// Batches a helper holds besides the one it works on.
const QUEUED_PER_HELPER: usize = 1;

/// Rolls up a batch's columns into `rollup`, counting its flows and those without a
/// start.
pub(super) fn roll_up_columns(rollup: &mut Rollup, columns: &Columns, metrics: &ComponentMetrics) {
    let (added, no_start) = rollup.add_columns(columns);
    metrics.count("druid_flows_total", added);
    if no_start > 0 {
        metrics.error("missing_start", no_start);
        metrics.discarded(no_start);
    }
}

impl Partials {
    /// Starts `helpers` threads in `scope` (none for 0), each ending when the returned
    /// value is dropped.
    pub(super) fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        helpers: usize,
        spec: &'env DruidSpec,
        metrics: &'env ComponentMetrics,
    ) -> Partials {
        let load = Arc::new(Load::default());
        let helpers = (0..helpers)
            .map(|_| {
                let (jobs, queue) = mpsc::sync_channel(QUEUED_PER_HELPER);
                let load = load.clone();
                scope.spawn(move || help(queue, spec, metrics, &load));
                jobs
            })
            .collect();
        Partials {
            helpers,
            next: 0,
            load,
        }
    }

    /// Whether there is any helper.
    pub(super) fn any(&self) -> bool {
        !self.helpers.is_empty()
    }

    /// Hands `columns` of `group` to a helper with room, or gives it back when every
    /// helper is busy (or there is none, or partials do not pay on this data).
    pub(super) fn offer(&mut self, group: u64, columns: Arc<Columns>) -> Option<Arc<Columns>> {
        if !self.load.pays() {
            return Some(columns);
        }
        let mut job = Job::Add { group, columns };
        for turn in 0..self.helpers.len() {
            let at = (self.next + turn) % self.helpers.len();
            match self.helpers[at].try_send(job) {
                Ok(()) => {
                    self.next = at + 1;
                    return None;
                }
                Err(TrySendError::Full(back) | TrySendError::Disconnected(back)) => job = back,
            }
        }
        match job {
            Job::Add { columns, .. } => Some(columns),
            Job::Take { .. } => unreachable!("only additions are offered"),
        }
    }

    /// Absorbs into `rollup` what every helper rolled up for `group` so far: every batch
    /// offered before this call is in it when it returns.
    pub(super) fn gather(&self, group: u64, rollup: &mut Rollup) {
        // Every helper is asked first, so they finish their queues at the same time.
        let answers: Vec<_> = self
            .helpers
            .iter()
            .filter_map(|helper| {
                let (reply, answer) = mpsc::channel();
                // A helper that panicked is skipped: its panic reaches the sink when the
                // scope ends.
                helper.send(Job::Take { group, reply }).ok()?;
                Some(answer)
            })
            .collect();
        for answer in answers {
            if let Ok(Some(mut partial)) = answer.recv() {
                rollup.absorb(&mut partial);
            }
        }
        self.load.clear();
    }
}

/// A helper's loop: until the sink drops its end.
fn help(queue: mpsc::Receiver<Job>, spec: &DruidSpec, metrics: &ComponentMetrics, load: &Load) {
    let mut partials: HashMap<u64, Rollup> = HashMap::new();
    for job in queue {
        match job {
            Job::Add { group, columns } => {
                let rollup = partials
                    .entry(group)
                    .or_insert_with(|| Rollup::new(&spec.dimensions, spec.granularity_secs));
                let rows = rollup.len();
                roll_up_columns(rollup, &columns, metrics);
                let made = (rollup.len() - rows) as u64;
                load.rows.fetch_add(made, Ordering::Relaxed);
                load.flows
                    .fetch_add(columns.rows() as u64, Ordering::Relaxed);
            }
            Job::Take { group, reply } => {
                let _ = reply.send(partials.remove(&group));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_pay_until_their_rows_hold_fewer_than_two_flows_each() {
        let load = Load::default();
        load.rows.store(1_000, Ordering::Relaxed);
        load.flows.store(1_000, Ordering::Relaxed);
        assert!(load.pays(), "too few flows to tell");
        load.flows.store(LOAD_SAMPLE_FLOWS, Ordering::Relaxed);
        load.rows.store(LOAD_SAMPLE_FLOWS / 2, Ordering::Relaxed);
        assert!(load.pays(), "two flows per row");
        load.rows
            .store(LOAD_SAMPLE_FLOWS / 2 + 1, Ordering::Relaxed);
        assert!(!load.pays(), "fewer than two");
        load.clear();
        assert!(load.pays(), "tried again after a gathering");
    }
}
