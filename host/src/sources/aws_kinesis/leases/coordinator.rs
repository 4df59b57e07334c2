//! This worker's side of the lease protocol: taking, balancing, handing over and renewing.

use super::LeaseTable;
use super::{Lease, LeaseError, LeaseSpec, checkpoint_value};
use crate::aws::kinesis::StartAt;
use crate::sources::aws_kinesis::checkpoint::{Publication, ShardCheckpoint};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A lease this worker holds.
#[derive(Debug)]
struct Held {
    counter: u64,
    /// Until when reading under it is safe (see the module docs).
    valid_until: Instant,
    /// Another worker asked for it.
    handoff_to: Option<String>,
    /// The holding's `leaseEpoch`.
    epoch: String,
}

/// What changed for the source after a [`Coordinator::tick`].
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// A lease was taken or handed over to this worker: read the shard from `position`.
    Acquired {
        /// Shard id.
        shard: String,
        /// Where to resume.
        position: ShardCheckpoint,
        /// Where the shard starts when `position` has no sequence number.
        start: StartAt,
        /// Its parents.
        parents: Vec<String>,
        /// The holding's token (`leaseEpoch`).
        epoch: String,
        /// Per `druid` sink, a publication its last owner began and did not end.
        publications: BTreeMap<String, Publication>,
    },
    /// The lease is gone (taken, or not renewed in time): stop reading the shard now.
    Lost(String),
    /// Another worker asked for the lease: stop reading, let what was read be
    /// acknowledged, then [`Coordinator::hand_over`].
    HandOff(String),
}

/// What [`Coordinator::claim`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Held now: a [`Change::Acquired`] to read it from.
    Acquired(Change),
    /// Read to its end already (by any host): nothing to do.
    Finished,
    /// Another live worker holds it (or this one does): try again later.
    Busy,
}

/// Leases this worker holds, shared by the coordinator and its renewer thread.
type HeldLeases = Arc<Mutex<HashMap<String, Held>>>;

/// Which leases this worker holds now, seen from another thread.
#[derive(Clone)]
pub struct HeldView {
    held: HeldLeases,
}

impl HeldView {
    /// Whether this worker holds `shard` in the holding `epoch` and may still write
    /// under it (the same validity as reading: see the module docs).
    pub fn holds(&self, shard: &str, epoch: &str) -> bool {
        self.held
            .lock()
            .expect("lease lock")
            .get(shard)
            .is_some_and(|h| h.epoch == epoch && h.valid_until > Instant::now())
    }
}

/// This worker's side of the lease protocol: taking, balancing, handing over, and (on a
/// thread of its own, so that a source blocked by backpressure keeps its leases)
/// renewing.
pub struct Coordinator {
    table: LeaseTable,
    spec: LeaseSpec,
    held: HeldLeases,
    /// What the renewer found (leases lost, handoffs asked for) since the last tick.
    found: Arc<Mutex<Vec<Change>>>,
    /// Renewal writes so far.
    renewals: Arc<AtomicU64>,
    /// Renewals counted in [`LeaseCounts`] so far.
    renewals_counted: u64,
    renewer: Option<tokio::task::JoinHandle<()>>,
    /// Per lease, the owner and counter last scanned, and since when they are unchanged.
    seen: HashMap<String, (Option<String>, u64, Instant)>,
    /// The last scan's leases.
    leases: Vec<Lease>,
    last_scan: Option<Instant>,
}

/// The renewer: a task on the shared runtime (so that a source blocked by
/// backpressure keeps its leases) that renews every held lease three times per lease
/// period, all at once, and reports leases lost and handoffs asked for.
async fn renew_leases(
    spec: LeaseSpec,
    held: HeldLeases,
    found: Arc<Mutex<Vec<Change>>>,
    renewals: Arc<AtomicU64>,
) {
    let table = LeaseTable::connect(&spec).await;
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(renewed_at + spec.renew_interval()).await;
        renewed_at = tokio::time::Instant::now();
        let shards: Vec<(String, u64)> = held
            .lock()
            .expect("lease lock")
            .iter()
            .map(|(shard, h)| (shard.clone(), h.counter))
            .collect();
        if shards.is_empty() {
            continue;
        }
        renewals.fetch_add(shards.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let renewed = futures_util::future::join_all(
            shards
                .iter()
                .map(|(shard, counter)| table.renew(shard, *counter)),
        )
        .await;
        let valid_until = spec.valid_until(started);
        // A renewal whose condition failed: an earlier one that timed out may have been
        // applied after all, leaving the lease this worker's, one count on. Only a take
        // changes the owner, so the owner decides (read without holding the lock).
        let mut recheck: HashMap<&String, Result<Option<Lease>, LeaseError>> = HashMap::new();
        for ((shard, _), renewed) in shards.iter().zip(&renewed) {
            if matches!(renewed, Ok(None)) {
                recheck.insert(shard, table.get(shard).await);
            }
        }
        let mut held = held.lock().expect("lease lock");
        let mut found = found.lock().expect("lease lock");
        for ((shard, counter), renewed) in shards.iter().zip(renewed) {
            // Handed over, released or taken again meanwhile: not this renewal's to judge.
            let Some(h) = held.get_mut(shard).filter(|h| h.counter == *counter) else {
                continue;
            };
            match renewed {
                Ok(Some(lease)) => {
                    h.counter = lease.counter;
                    h.valid_until = valid_until;
                    if h.handoff_to.is_none()
                        && let Some(to) = lease.pending_owner
                        && to != table.worker
                    {
                        h.handoff_to = Some(to);
                        found.push(Change::HandOff(shard.clone()));
                    }
                }
                Ok(None) => match recheck.get(shard) {
                    // Still this worker's: renewed with the right counter next round.
                    Some(Ok(Some(now))) if now.owner.as_deref() == Some(table.worker()) => {
                        h.counter = now.counter
                    }
                    Some(Err(error)) => {
                        tracing::warn!(message = "Cannot read a lease whose renewal failed; retrying.", shard = %shard, %error)
                    }
                    _ => {
                        tracing::info!(message = "Lease taken by another worker; no longer reading the shard.", shard = %shard);
                        held.remove(shard);
                        found.push(Change::Lost(shard.clone()));
                    }
                },
                Err(error) => {
                    tracing::warn!(message = "Cannot renew a lease; retrying.", shard = %shard, %error)
                }
            }
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// Counts of lease events, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaseCounts {
    /// Leases taken (unowned or expired).
    pub taken: u64,
    /// Leases received from a handoff.
    pub handed_in: u64,
    /// Leases handed over to another worker.
    pub handed_out: u64,
    /// Leases lost (taken by someone else, or not renewed in time).
    pub lost: u64,
    /// Handoffs asked for.
    pub requested: u64,
    /// Renewal writes.
    pub renewals: u64,
    /// Checkpoint writes.
    pub checkpoints: u64,
    /// Scans of the table.
    pub scans: u64,
}

impl Coordinator {
    /// A coordinator on `table`; holds nothing yet. Its renewer starts at once.
    pub fn new(table: LeaseTable, spec: LeaseSpec) -> Coordinator {
        let held = HeldLeases::default();
        let found = Arc::new(Mutex::new(Vec::new()));
        let renewals = Arc::new(AtomicU64::new(0));
        let renewer = crate::aws::runtime().spawn(renew_leases(
            spec.clone(),
            held.clone(),
            found.clone(),
            renewals.clone(),
        ));
        Coordinator {
            table,
            spec,
            held,
            found,
            renewals,
            renewals_counted: 0,
            renewer: Some(renewer),
            seen: HashMap::new(),
            leases: Vec::new(),
            last_scan: None,
        }
    }

    /// Stops the renewer; it renews nothing after this returns.
    async fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            let _ = renewer.await;
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().expect("lease lock")
    }

    /// Whether this worker holds `shard`'s lease and may read it now.
    pub fn holds(&self, shard: &str) -> bool {
        self.held()
            .get(shard)
            .is_some_and(|h| h.valid_until > Instant::now())
    }

    /// Whether this worker holds `shard`'s lease at all (valid now or not).
    pub fn is_held(&self, shard: &str) -> bool {
        self.held().contains_key(shard)
    }

    /// Stops holding `shard` (its reading was given up): no renewal of it from now on.
    pub fn drop_holding(&self, shard: &str) {
        self.held().remove(shard);
    }

    /// A view of the held leases for other threads (the `druid` sinks' publication log).
    pub fn view(&self) -> HeldView {
        HeldView {
            held: self.held.clone(),
        }
    }

    /// How many leases this worker holds.
    pub fn held_count(&self) -> usize {
        self.held().len()
    }

    /// Whether every parent of a shard has been read to its end (or is gone from the
    /// table and from the stream's listing, `listed`).
    pub fn parents_done(&self, parents: &[String], listed: &dyn Fn(&str) -> bool) -> bool {
        parents.iter().all(
            |parent| match self.leases.iter().find(|l| &l.shard == parent) {
                Some(lease) => lease.finished(),
                None => !listed(parent),
            },
        )
    }

    /// Adds leases for listed shards that have none. Shards with parents start at the
    /// oldest record (nothing written after a reshard may be skipped); others at
    /// `start`, where "latest" is pinned to now, so that a host that takes the lease
    /// over before the first checkpoint does not skip what was written meanwhile.
    pub async fn sync_shards(
        &mut self,
        shards: &[crate::aws::kinesis::ShardInfo],
        start: StartAt,
    ) -> Result<(), LeaseError> {
        for shard in shards {
            if self.leases.iter().any(|l| l.shard == shard.id) {
                continue;
            }
            let start = match start {
                _ if !shard.parents.is_empty() => StartAt::TrimHorizon,
                StartAt::Latest => StartAt::Timestamp(crate::util::epoch_seconds()),
                other => other,
            };
            self.table.create(&shard.id, &shard.parents, start).await?;
        }
        Ok(())
    }

    /// Reports what the renewer found, then scans, takes and balances when a scan is
    /// due; returns what the source must do. Errors leave held leases until they run
    /// out.
    pub async fn tick(&mut self, stopping: bool, counts: &mut LeaseCounts) -> Vec<Change> {
        let now = Instant::now();
        let mut changes = std::mem::take(&mut *self.found.lock().expect("lease lock"));
        counts.lost += changes
            .iter()
            .filter(|c| matches!(c, Change::Lost(_)))
            .count() as u64;
        let renewals = self.renewals.load(Ordering::Relaxed);
        counts.renewals += renewals - self.renewals_counted;
        self.renewals_counted = renewals;
        // A lease whose renewals kept failing is given up before anyone may take it.
        let expired: Vec<String> = {
            let mut held = self.held();
            let expired: Vec<String> = held
                .iter()
                .filter(|(_, h)| h.valid_until <= now)
                .map(|(shard, _)| shard.clone())
                .collect();
            for shard in &expired {
                held.remove(shard);
            }
            expired
        };
        for shard in expired {
            tracing::warn!(message = "Lease not renewed in time; no longer reading the shard.", shard = %shard);
            counts.lost += 1;
            changes.push(Change::Lost(shard));
        }
        if !stopping
            && self
                .last_scan
                .is_none_or(|at| now - at >= self.spec.scan_interval)
        {
            self.last_scan = Some(now);
            counts.scans += 1;
            match self.table.scan().await {
                Ok(leases) => {
                    self.leases = leases;
                    self.balance(&mut changes, counts).await;
                }
                Err(error) => tracing::warn!(message = "Cannot scan the lease table.", %error),
            }
        }
        changes
    }

    /// Holds `lease` as a conditional write that started at `started` returned it;
    /// what the source must do about it.
    fn hold(&self, lease: &Lease, started: Instant) -> Change {
        let mut held = self.held();
        held.insert(
            lease.shard.clone(),
            Held {
                counter: lease.counter,
                valid_until: self.spec.valid_until(started),
                handoff_to: None,
                epoch: lease.epoch.clone().unwrap_or_default(),
            },
        );
        // A report the renewer made about an earlier holding of this shard since the
        // tick began would undo this one. (Same lock order as the renewer: held, found.)
        self.found
            .lock()
            .expect("lease lock")
            .retain(|c| !matches!(c, Change::Lost(s) | Change::HandOff(s) if *s == lease.shard));
        drop(held);
        Change::Acquired {
            shard: lease.shard.clone(),
            position: lease.position(),
            start: lease.start(),
            parents: lease.parents.clone(),
            epoch: lease.epoch.clone().unwrap_or_default(),
            publications: lease.publications.clone(),
        }
    }

    async fn balance(&mut self, changes: &mut Vec<Change>, counts: &mut LeaseCounts) {
        let now = Instant::now();
        let me = self.table.worker.clone();
        // Track how long each counter has stood still.
        let mut seen = HashMap::new();
        for lease in &self.leases {
            let since = match self.seen.get(&lease.shard) {
                Some((owner, counter, since))
                    if *owner == lease.owner && *counter == lease.counter =>
                {
                    *since
                }
                _ => now,
            };
            seen.insert(
                lease.shard.clone(),
                (lease.owner.clone(), lease.counter, since),
            );
        }
        self.seen = seen;
        let live = |lease: &Lease, seen: &HashMap<String, (Option<String>, u64, Instant)>| {
            lease.owner.is_some()
                && seen
                    .get(&lease.shard)
                    .is_some_and(|(_, _, since)| now - *since < self.spec.lease_duration)
        };
        // Leases handed over to this worker: adopted through a conditional renewal on
        // the scanned counter, like a take, so that a lease someone took meanwhile is
        // not read twice.
        for lease in &self.leases {
            if lease.owner.as_deref() == Some(me.as_str())
                && !lease.finished()
                && !self.held().contains_key(&lease.shard)
            {
                let started = Instant::now();
                counts.renewals += 1;
                match self.table.adopt(lease).await {
                    Ok(Some(adopted)) => {
                        counts.handed_in += 1;
                        changes.push(self.hold(&adopted, started));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(message = "Cannot adopt a lease handed over.", shard = %lease.shard, %error)
                    }
                }
            }
        }
        let open: Vec<&Lease> = self.leases.iter().filter(|l| !l.finished()).collect();
        let mut per_worker: HashMap<String, Vec<&Lease>> = HashMap::new();
        for lease in &open {
            if live(lease, &self.seen)
                && let Some(owner) = &lease.owner
                && *owner != me
            {
                per_worker.entry(owner.clone()).or_default().push(lease);
            }
        }
        let workers = per_worker.len() + 1;
        let target = open.len().div_ceil(workers);
        let mut mine = self.held().len();
        // Unowned and expired leases first.
        for lease in &open {
            if mine >= target {
                break;
            }
            if self.held().contains_key(&lease.shard) || live(lease, &self.seen) {
                continue;
            }
            let started = Instant::now();
            match self.table.take(lease).await {
                Ok(Some(taken)) => {
                    tracing::info!(message = "Took a lease.", shard = %lease.shard, from = lease.owner.as_deref().unwrap_or("nobody"));
                    mine += 1;
                    counts.taken += 1;
                    changes.push(self.hold(&taken, started));
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(message = "Cannot take a lease.", shard = %lease.shard, %error)
                }
            }
        }
        // Still short: ask the most loaded worker for one lease (one at a time), if it
        // holds more than its share, or its share while this worker is two short (so
        // 4 leases over 3 workers end 2-1-1, not 2-2-0).
        let asked = open
            .iter()
            .any(|l| l.pending_owner.as_deref() == Some(me.as_str()));
        if mine < target
            && !asked
            && let Some((_, leases)) = per_worker
                .iter()
                .max_by_key(|(worker, leases)| (leases.len(), (*worker).clone()))
            && (leases.len() > target || (leases.len() == target && mine + 1 < target))
            && let Some(lease) = leases.iter().find(|l| l.pending_owner.is_none())
        {
            match self.table.request(lease).await {
                Ok(true) => {
                    tracing::info!(message = "Asked for a lease.", shard = %lease.shard, owner = lease.owner.as_deref().unwrap_or(""));
                    counts.requested += 1;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(message = "Cannot ask for a lease.", shard = %lease.shard, %error)
                }
            }
        }
    }

    /// Claims the lease of one item read whole by one host (an S3 object): created if
    /// missing, taken when nobody owns it, when this worker's id owns it without holding
    /// it (a restart under a fixed `worker_id`), or when its counter has not moved for a
    /// whole lease period since this worker first saw it (its owner died). The renewer
    /// keeps it from then on, like a shard's.
    pub async fn claim(
        &mut self,
        key: &str,
        counts: &mut LeaseCounts,
    ) -> Result<Claim, LeaseError> {
        if self.held().contains_key(key) {
            return Ok(Claim::Busy);
        }
        self.table.create(key, &[], StartAt::TrimHorizon).await?;
        let Some(lease) = self.table.get(key).await? else {
            return Ok(Claim::Busy);
        };
        if lease.finished() {
            self.seen.remove(key);
            return Ok(Claim::Finished);
        }
        let now = Instant::now();
        let since = match self.seen.get(key) {
            Some((owner, counter, since)) if *owner == lease.owner && *counter == lease.counter => {
                *since
            }
            _ => now,
        };
        let mine = lease.owner.as_deref() == Some(self.table.worker());
        if lease.owner.is_some() && !mine && now - since < self.spec.lease_duration {
            self.seen
                .insert(key.to_string(), (lease.owner.clone(), lease.counter, since));
            return Ok(Claim::Busy);
        }
        let started = Instant::now();
        match self.table.take(&lease).await? {
            Some(taken) => {
                self.seen.remove(key);
                counts.taken += 1;
                Ok(Claim::Acquired(self.hold(&taken, started)))
            }
            None => Ok(Claim::Busy),
        }
    }

    /// Writes acknowledged positions of held shards, all at once; a shard read to its
    /// end then gives up its lease. Returns the shards whose write failed, to be
    /// written again.
    pub async fn checkpoint(
        &mut self,
        positions: Vec<(String, ShardCheckpoint)>,
        changes: &mut Vec<Change>,
        counts: &mut LeaseCounts,
    ) -> Vec<String> {
        let positions: Vec<(String, ShardCheckpoint, String)> = positions
            .into_iter()
            .filter(|(shard, _)| self.held().contains_key(shard))
            .filter_map(|(shard, position)| {
                let value = checkpoint_value(&position)?;
                Some((shard, position, value))
            })
            .collect();
        counts.checkpoints += positions.len() as u64;
        let written = futures_util::future::join_all(
            positions
                .iter()
                .map(|(shard, _, value)| self.table.checkpoint(shard, value)),
        )
        .await;
        let mut failed = Vec::new();
        for ((shard, position, _), written) in positions.into_iter().zip(written) {
            match written {
                Ok(true) if position.finished => {
                    // Finished leases are never taken, so one whose release fails only
                    // keeps a stale owner (released again on shutdown).
                    self.held().remove(&shard);
                    if let Err(error) = self.table.release(&shard, None).await {
                        tracing::warn!(message = "Cannot release a finished shard's lease.", shard = %shard, %error)
                    }
                }
                Ok(true) => {}
                Ok(false) => {
                    self.held().remove(&shard);
                    counts.lost += 1;
                    changes.push(Change::Lost(shard));
                }
                Err(error) => {
                    tracing::warn!(message = "Cannot write a checkpoint; retrying with the next round.", shard = %shard, %error);
                    failed.push(shard);
                }
            }
        }
        failed
    }

    /// Hands a lease over to the worker that asked for it (after its last checkpoint).
    pub async fn hand_over(&mut self, shard: &str, counts: &mut LeaseCounts) {
        let Some(held) = self.held().remove(shard) else {
            return;
        };
        match self.table.release(shard, held.handoff_to.as_deref()).await {
            Ok(_) => {
                counts.handed_out += 1;
                tracing::info!(message = "Handed a lease over.", shard = %shard, to = held.handoff_to.as_deref().unwrap_or("nobody"));
            }
            Err(error) => {
                // Not renewed any more, so it runs out, and the asker takes it then.
                tracing::warn!(message = "Cannot hand a lease over; it runs out instead.", shard = %shard, %error)
            }
        }
    }

    /// Gives up every lease (on shutdown, after the last checkpoints): those held, any
    /// the table still names this worker as owner of (handed over meanwhile, or a
    /// finished one whose release failed), and withdraws its requests for others.
    pub async fn release_all(&mut self) {
        let me = self.table.worker.clone();
        self.stop_renewing().await;
        let mut mine: Vec<String> = std::mem::take(&mut *self.held()).into_keys().collect();
        let mut asked = Vec::new();
        match self.table.scan().await {
            Ok(leases) => {
                for lease in leases {
                    if lease.owner.as_deref() == Some(me.as_str()) && !mine.contains(&lease.shard) {
                        mine.push(lease.shard.clone());
                    }
                    if lease.pending_owner.as_deref() == Some(me.as_str()) {
                        asked.push(lease.shard);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(message = "Cannot scan the lease table before releasing.", %error)
            }
        }
        for shard in mine {
            if let Err(error) = self.table.release(&shard, None).await {
                tracing::warn!(message = "Cannot release a lease; it runs out instead.", shard = %shard, %error);
            }
        }
        for shard in asked {
            if let Err(error) = self.table.withdraw(&shard).await {
                tracing::warn!(message = "Cannot withdraw a request for a lease.", shard = %shard, %error);
            }
        }
    }
}
