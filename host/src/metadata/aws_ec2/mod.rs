//! A metadata table that reads AWS itself: an EC2 network-interface poller.
//!
//! Every `poll_interval_secs`, for each configured region (and each role to assume, one
//! per account), `DescribeNetworkInterfaces` lists every interface and
//! `DescribeInstances` the tags of the instances they are attached to. Each private
//! IPv4, IPv6 and associated public address is owned by attributes built from the
//! interface's tags, then its instance's, through the mapping, plus what AWS says
//! (account, region, zone, vpc, subnet, interface, interface type, requester,
//! instance). Successive polls become contract-3 events that never guess (see
//! [`crate::metadata::observations`]): an owner is proven only at the polls that saw
//! it, the interval around a change is `unknown`, and each poll's `observed` horizon
//! bounds what is known. The events go into the table (rebuilt off the hot path after
//! each poll) and, with `changelog_path` or `changelog_stream`, are appended to a
//! changelog file or published to a Kinesis stream that other hosts of a fleet read
//! instead of polling EC2 themselves. `validate` never calls AWS.

pub mod interfaces;
pub mod poll;
pub mod stream;

use super::event_log::EventLog;
use super::events::Event;
use super::observations::Observer;
use super::{Follower, MetadataKind, SharedTable, TableOptions, file::Fingerprint};
use crate::config::Invalid;
use crate::metrics::ComponentMetrics;
use interfaces::{AWS_ATTRIBUTES, Mapping};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The `aws_ec2` table's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A bootstrap snapshot (`path`, `paths`, read once; networks, say) and the options
    /// of every build.
    #[serde(flatten)]
    pub table: TableOptions,
    /// The regions to poll, each on its own (its events name `aws_ec2/<region>`).
    pub regions: Vec<String>,
    /// Endpoint override for EC2 (and STS), e.g. a local moto server
    /// (`http://127.0.0.1:5000`). Default: AWS's endpoint for each region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Seconds between polls: the width of the uncertainty around every change.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// Attribute = tag keys to try, first present wins; the interface's own tags come
    /// before its instance's. Default: `app = ["app", "application"]`, `cluster =
    /// ["cluster"]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Attribute = a tag holding an `app-stack-detail-vNNN` name (an Auto Scaling
    /// group's, `aws:autoscaling:groupName`): the attribute gets the name's application
    /// part where `tags` gave it no value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, String>,
    /// Roles to assume, one per account to poll (`arn:aws:iam::<account>:role/<name>`);
    /// their events name `aws_ec2/<account>/<region>`. Default: the credentials of the
    /// standard AWS configuration chain, one account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_arns: Vec<String>,
    /// A changelog file (relative to the pipeline file) each poll's events are appended
    /// to, for a fleet's other hosts to read (a `file` table on it) instead of polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog_path: Option<PathBuf>,
    /// A Kinesis data stream each poll's events are published to, in order (a poll's
    /// horizon only after its events), for a fleet's other hosts to read (an
    /// `aws_kinesis_streams` table on it) instead of polling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog_stream: Option<stream::ChangelogStream>,
}

fn default_poll_interval_secs() -> u64 {
    30
}

/// The account in a role ARN (`arn:aws:iam::123456789012:role/name`).
pub fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    let (arn_word, _partition, service, _region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let well_formed = arn_word == "arn"
        && service == "iam"
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.starts_with("role/")
        && resource.len() > "role/".len();
    well_formed.then_some(account)
}

impl Config {
    /// The tag mapping, with the defaults where none is configured.
    pub fn mapping(&self) -> Mapping {
        let tags = if self.tags.is_empty() {
            BTreeMap::from([
                ("app".to_string(), vec!["app".into(), "application".into()]),
                ("cluster".to_string(), vec!["cluster".into()]),
            ])
        } else {
            self.tags.clone()
        };
        Mapping {
            tags,
            names: self.names.clone(),
        }
    }
}

impl MetadataKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        if self.regions.is_empty() {
            return Err(Invalid::new(
                format!("{key}.regions"),
                "names no region to poll",
            ));
        }
        Invalid::at_least_1(key, "poll_interval_secs", self.poll_interval_secs)?;
        let mapped = self.tags.keys().chain(self.names.keys());
        for attribute in mapped {
            if AWS_ATTRIBUTES.contains(&attribute.as_str()) {
                return Err(Invalid::new(
                    format!("{key}.tags"),
                    format!(
                        "`{attribute}` is an attribute AWS gives every owner; map tags to another name"
                    ),
                ));
            }
        }
        if let Some((attribute, _)) = self.tags.iter().find(|(_, keys)| keys.is_empty()) {
            return Err(Invalid::new(
                format!("{key}.tags.{attribute}"),
                "names no tag key",
            ));
        }
        if let Some(changelog) = &self.changelog_stream {
            let at = format!("{key}.changelog_stream");
            changelog.stream.validate(&at)?;
            Invalid::at_least_1(
                &at,
                "snapshot_interval_secs",
                changelog.snapshot_interval_secs,
            )?;
        }
        if let Some(arn) = self.role_arns.iter().find(|a| role_account(a).is_none()) {
            return Err(Invalid::new(
                format!("{key}.role_arns"),
                format!(
                    "`{arn}` is not a role ARN (`arn:aws:iam::<12-digit account>:role/<name>`)"
                ),
            ));
        }
        Ok(())
    }

    fn table(&self) -> &TableOptions {
        &self.table
    }

    fn table_mut(&mut self) -> &mut TableOptions {
        &mut self.table
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.table.resolve_paths(base);
        if let Some(path) = self.changelog_path.as_mut().filter(|p| p.is_relative()) {
            *path = base.join(&*path);
        }
    }

    fn follow(
        &self,
        name: &str,
        shared: Arc<SharedTable>,
        metrics: Arc<ComponentMetrics>,
        _seen: Fingerprint,
    ) -> Option<Box<dyn Send>> {
        let (table, config) = (name.to_string(), self.clone());
        Some(Box::new(Follower::start(name, move |stop| {
            run(table, config, shared, metrics, stop)
        })))
    }
}

/// What one region (of one account) is polled with.
struct Target {
    source: String,
    region: String,
    client: aws_sdk_ec2::Client,
    observer: Observer,
}

async fn targets(config: &Config) -> Vec<Target> {
    let mut targets = Vec::new();
    let roles: Vec<Option<&String>> = if config.role_arns.is_empty() {
        vec![None]
    } else {
        config.role_arns.iter().map(Some).collect()
    };
    for role in roles {
        for region in &config.regions {
            let base = crate::aws::ClientConfig {
                endpoint: config.endpoint.clone(),
                region: Some(region.clone()),
            }
            .sdk_config()
            .await;
            // The SDK's adaptive retries slow down when EC2 throttles.
            let mut builder = aws_sdk_ec2::config::Builder::from(&base).retry_config(
                aws_sdk_ec2::config::retry::RetryConfig::adaptive().with_max_attempts(6),
            );
            let source = match role {
                Some(arn) => {
                    let provider = aws_config::sts::AssumeRoleProvider::builder(arn.clone())
                        .session_name("flowenrich-aws-ec2")
                        .region(aws_config::Region::new(region.clone()))
                        .configure(&base)
                        .build()
                        .await;
                    builder = builder.credentials_provider(provider);
                    let account = role_account(arn).unwrap_or("unknown");
                    format!("aws_ec2/{account}/{region}")
                }
                None => format!("aws_ec2/{region}"),
            };
            targets.push(Target {
                observer: Observer::new(&source),
                source,
                region: region.clone(),
                client: aws_sdk_ec2::Client::from_conf(builder.build()),
            });
        }
    }
    targets
}

async fn run(
    name: String,
    config: Config,
    shared: Arc<SharedTable>,
    metrics: Arc<ComponentMetrics>,
    stop: Arc<AtomicBool>,
) {
    let mapping = config.mapping();
    let mut log = EventLog::bootstrap(config.table.spec());
    let mut targets = targets(&config).await;
    let interval = Duration::from_secs(config.poll_interval_secs.max(1));
    let mut writer = match &config.changelog_stream {
        Some(changelog) => Some((
            stream::StreamWriter::new(changelog).await,
            Duration::from_secs(changelog.snapshot_interval_secs.max(1)),
        )),
        None => None,
    };
    // The first poll assigns everything it sees: it is a snapshot already.
    let mut snapshot_at = Instant::now();
    let mut last_second = 0;
    while !stop.load(Ordering::Relaxed) {
        // Each poll's times come after the previous poll's: a later second.
        while poll::epoch_second() <= last_second && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let started = Instant::now();
        let mut new = Vec::new();
        let snapshot_due = writer
            .as_ref()
            .is_some_and(|(_, every)| snapshot_at.elapsed() >= *every);
        for target in &mut targets {
            match poll::poll(&target.client, &target.region, &mapping, &metrics).await {
                Ok(seen) => {
                    last_second = last_second.max(seen.finished);
                    let events = target.observer.observe(&seen);
                    if let Some((writer, _)) = writer.as_mut() {
                        let mut published = events.clone();
                        if snapshot_due {
                            // Before the poll's horizon, which stays last.
                            let horizon = published.pop();
                            published.extend(target.observer.snapshot());
                            published.extend(horizon);
                        }
                        writer.push(published);
                    }
                    new.extend(events);
                }
                Err(error) => {
                    metrics.error("aws_ec2_poll_failed", 1);
                    tracing::warn!(message = "Polling EC2 failed; the table keeps what earlier polls proved, and its horizon stays.", table = %name, source = %target.source, %error);
                }
            }
        }
        metrics.count(
            "aws_ec2_poll_milliseconds_total",
            started.elapsed().as_millis() as u64,
        );
        if snapshot_due {
            snapshot_at = Instant::now();
        }
        if let Some((writer, _)) = writer.as_mut() {
            if let Err(error) = writer.flush(&metrics).await {
                metrics.error("changelog_stream_write_failed", 1);
                tracing::warn!(message = "Cannot publish to the changelog stream; the events stay queued, in order, for the next poll.", table = %name, pending = writer.pending(), %error);
            }
            metrics.gauge("changelog_stream_pending", writer.pending() as i64);
        }
        if !new.is_empty() {
            if let Some(path) = &config.changelog_path
                && let Err(error) = append(path, &new)
            {
                metrics.error("changelog_write_failed", 1);
                tracing::error!(message = "Cannot append to the changelog file.", table = %name, path = %path.display(), %error);
            }
            metrics.count("aws_ec2_events_total", new.len() as u64);
            log.extend(new);
            log.rebuild(&name, "EC2", &shared, &metrics);
        }
        let deadline = started + interval;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100).min(interval)).await;
        }
        shared.reap();
    }
}

/// Appends `events` to the changelog file at `path` (created if missing), synced.
fn append(path: &Path, events: &[Event]) -> std::io::Result<()> {
    let mut text = String::new();
    for event in events {
        text.push_str(&event.to_line());
        text.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_name_their_account() {
        assert_eq!(
            role_account("arn:aws:iam::123456789012:role/flowenrich"),
            Some("123456789012")
        );
        assert_eq!(
            role_account("arn:aws-cn:iam::123456789012:role/a/b"),
            Some("123456789012")
        );
        for bad in [
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:s3:::bucket",
            "role/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert_eq!(role_account(bad), None, "{bad}");
        }
    }
}
