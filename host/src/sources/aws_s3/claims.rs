//! Claims on S3 objects in a lease table, so that a fleet reading one queue publishes
//! every object's flows once into Druid rows (contract 4), redeliveries and crashes
//! included.
//!
//! Each object is a lease row keyed `s3://<bucket>/<key>#<ETag>` in the
//! same kind of table (and with the same conditional writes) as a Kinesis source's
//! shard leases ([`crate::sources::aws_kinesis::leases`]). The object's line count is
//! its position: `checkpoint` is how many lines every sink took, `published_<sink>` how
//! many a `druid` sink's rows hold, and `publication_<sink>` the publication begun and
//! not ended, exactly as for a shard. So:
//!
//! - a host reads an object only under its claim (a conditional take, renewed three
//!   times per lease period while the object is in flight);
//! - a second notification of an object another live host holds is handed back to the
//!   queue for one lease period; a claim whose counter stood still that long (its
//!   owner died) is taken, and its taker settles the publication the dead host left and
//!   skips the batches it published (batches end at every published position);
//! - an object read to its end is `SHARD_END` with no owner: a later notification of it
//!   (an SQS redelivery, a duplicate) is deleted without reading it again.

use crate::config::BoxError;
use crate::metrics::ComponentMetrics;
use crate::sources::aws_kinesis::checkpoint::Checkpoints;
use crate::sources::aws_kinesis::leases::{
    self, Change, Claim, Coordinator, LeaseCounts, LeaseSpec, LeaseTable, publications::LeaseLog,
};

/// This host's claims on objects.
pub struct Claims {
    coordinator: Coordinator,
    spec: LeaseSpec,
    runtime: &'static tokio::runtime::Runtime,
    counts: LeaseCounts,
    /// Counts already added to the metrics.
    reported: LeaseCounts,
}

/// What the source does with one object.
#[derive(Debug)]
pub enum Claimed {
    /// Read it from its start under the claim; a reading again ends batches at these
    /// line counts (what `druid` sinks published or began to).
    Read {
        /// Line counts a batch must end at.
        boundaries: Vec<u64>,
    },
    /// Read to its end before, by this host or another: nothing to read.
    Finished,
    /// Another host holds it (or the table cannot be reached): not now.
    Elsewhere,
}

/// What one [`Claims::step`] found.
#[derive(Debug, Default)]
pub struct Step {
    /// Claims gone (taken by another host, or not renewed in time).
    pub lost: Vec<String>,
    /// Objects whose end is now recorded in the table.
    pub finished: Vec<String>,
}

/// The name of an object in the claims table and the acknowledgement store: its bucket,
/// key and ETag (the same whether a notification or a listing names it).
pub fn claim_key(bucket: &str, key: &str, etag: Option<&str>) -> String {
    format!(
        "s3://{bucket}/{key}#{}",
        super::notifications::bare_etag(etag.unwrap_or_default())
    )
}

impl Claims {
    /// Connects to the table (created if missing) and makes `store`'s `druid`
    /// publications go to the claims' rows.
    pub fn connect(
        config: &leases::Config,
        store: &Checkpoints,
        id: &str,
    ) -> Result<Claims, BoxError> {
        let spec = config.spec();
        let runtime = crate::aws::runtime();
        let table = runtime.block_on(LeaseTable::connect(&spec));
        runtime
            .block_on(table.ensure_table())
            .map_err(|e| format!("the claims table: {e}"))?;
        tracing::info!(message = "Claiming objects in a lease table.", component_id = %id, table = %spec.table, worker = %spec.worker);
        let coordinator = Coordinator::new(table, spec.clone());
        store.use_lease_log(LeaseLog::new(&spec, coordinator.view()));
        Ok(Claims {
            coordinator,
            spec,
            runtime,
            counts: LeaseCounts::default(),
            reported: LeaseCounts::default(),
        })
    }

    /// How long a notification of an object held elsewhere stays away (one lease period,
    /// so that a claim left by a dead host can be taken when it comes back).
    pub fn retry_secs(&self) -> u64 {
        self.spec.lease_duration.as_secs() + 1
    }

    /// How long a stopping source waits for what it read to be acknowledged.
    pub fn drain_timeout(&self) -> std::time::Duration {
        self.spec.handoff_timeout()
    }

    /// Claims `name`; on success `store` starts its reading where the claim's row says.
    pub fn claim(
        &mut self,
        name: &str,
        store: &Checkpoints,
        metrics: &ComponentMetrics,
    ) -> Claimed {
        match self
            .runtime
            .block_on(self.coordinator.claim(name, &mut self.counts))
        {
            Ok(Claim::Acquired(Change::Acquired {
                position,
                epoch,
                publications,
                ..
            })) => {
                tracing::debug!(message = "Reading an object under a claim.", object = %name, published = ?position.published, pending_publications = publications.len());
                store.restart_leased(name, position, epoch, publications);
                let mut boundaries: Vec<u64> = store
                    .boundaries(name)
                    .iter()
                    .filter_map(|b| b.parse().ok())
                    .collect();
                boundaries.sort_unstable();
                boundaries.dedup();
                Claimed::Read { boundaries }
            }
            Ok(Claim::Acquired(_)) => Claimed::Elsewhere,
            Ok(Claim::Finished) => {
                metrics.count("s3_objects_already_read_total", 1);
                Claimed::Finished
            }
            Ok(Claim::Busy) => {
                metrics.count("s3_objects_held_elsewhere_total", 1);
                Claimed::Elsewhere
            }
            Err(error) => {
                metrics.error("claim_failed", 1);
                tracing::warn!(message = "Cannot claim an object; its notification comes back later.", object = %name, %error);
                Claimed::Elsewhere
            }
        }
    }

    /// Whether this host still holds `name`'s claim (reading stops when it does not).
    pub fn holds(&self, name: &str) -> bool {
        self.coordinator.holds(name)
    }

    /// Gives `name`'s claim up for good (its reading stopped): no renewal revives it,
    /// and what was read under it no longer moves a position. The row keeps this host
    /// as owner until the lease period runs out (or this host claims it again).
    pub fn give_up(&mut self, name: &str, store: &Checkpoints) {
        self.coordinator.drop_holding(name);
        store.restart(name, Default::default());
        self.counts.lost += 1;
    }

    /// Applies what the renewer found and writes acknowledged positions (an object read
    /// to its end gives its claim up).
    pub fn step(&mut self, store: &Checkpoints, metrics: &ComponentMetrics) -> Step {
        let mut changes = self
            .runtime
            .block_on(self.coordinator.tick(true, &mut self.counts));
        let advanced = store.take_advanced();
        // Only ends of claims still held are written (and so recorded).
        let ends: Vec<String> = advanced
            .iter()
            .filter(|(name, position)| position.finished && self.coordinator.is_held(name))
            .map(|(name, _)| name.clone())
            .collect();
        let failed = if advanced.is_empty() {
            Vec::new()
        } else {
            self.runtime.block_on(self.coordinator.checkpoint(
                advanced,
                &mut changes,
                &mut self.counts,
            ))
        };
        store.advanced_again(failed.clone());
        let mut step = Step::default();
        for change in changes {
            if let Change::Lost(name) = change {
                // What was read under it no longer moves a position here.
                store.restart(&name, Default::default());
                step.lost.push(name);
            }
        }
        step.finished = ends
            .into_iter()
            .filter(|name| !failed.contains(name) && !step.lost.contains(name))
            .collect();
        self.report(metrics);
        step
    }

    /// Gives every claim up (on shutdown, after the last positions are written).
    pub fn release_all(&mut self, metrics: &ComponentMetrics) {
        self.runtime.block_on(self.coordinator.release_all());
        self.report(metrics);
    }

    fn report(&mut self, metrics: &ComponentMetrics) {
        let (now, was) = (self.counts, self.reported);
        metrics.count("s3_claims_taken_total", now.taken - was.taken);
        metrics.count("s3_claims_lost_total", now.lost - was.lost);
        metrics.count("s3_claim_renewals_total", now.renewals - was.renewals);
        metrics.count(
            "s3_claim_checkpoints_total",
            now.checkpoints - was.checkpoints,
        );
        metrics.gauge("s3_claims_held", self.coordinator.held_count() as i64);
        self.reported = now;
    }
}
