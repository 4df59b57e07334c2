//! One region's poll: every network interface (`DescribeNetworkInterfaces`, paginated)
//! and the tags of the instances they are attached to (`DescribeInstances`), as the
//! addresses and interfaces seen, each with its owner and the second its page arrived.

use super::interfaces::{Interface, Mapping, attributes, tag_pairs};
use crate::metadata::events::Target;
use crate::metadata::observations::Poll;
use crate::metrics::ComponentMetrics;
use std::collections::HashMap;
use std::time::Instant;

/// The epoch second now.
pub fn epoch_second() -> u64 {
    crate::util::epoch_seconds().max(0) as u64
}

/// Interfaces asked for per page (AWS's largest).
const INTERFACES_PER_PAGE: i32 = 1000;
/// Instances asked for per page (AWS's largest).
const INSTANCES_PER_PAGE: i32 = 1000;

/// A poll failed: the table keeps what earlier polls proved, and its horizon stays.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {message}")]
pub struct PollError {
    /// The API call.
    pub call: &'static str,
    /// What the SDK said (with its source chain).
    pub message: String,
}

fn failed(call: &'static str, error: impl std::error::Error) -> PollError {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    PollError { call, message }
}

/// Polls one region with `client`; counts calls, seconds and interfaces.
pub async fn poll(
    client: &aws_sdk_ec2::Client,
    region: &str,
    mapping: &Mapping,
    metrics: &ComponentMetrics,
) -> Result<Poll, PollError> {
    let started = Instant::now();
    let mut calls = 0u64;
    let mut interfaces: Vec<(Interface, u64)> = Vec::new();
    let mut pages = client
        .describe_network_interfaces()
        .max_results(INTERFACES_PER_PAGE)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        calls += 1;
        let page = page.map_err(|e| failed("DescribeNetworkInterfaces", e))?;
        let arrived = epoch_second();
        interfaces.extend(
            page.network_interfaces()
                .iter()
                .map(|found| (Interface::from_sdk(found), arrived)),
        );
    }
    // The tags of every instance, 1,000 a page, when any interface is attached.
    let mut instance_tags: HashMap<String, Vec<(String, String)>> = HashMap::new();
    if interfaces.iter().any(|(i, _)| i.instance.is_some()) {
        let mut pages = client
            .describe_instances()
            .max_results(INSTANCES_PER_PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            calls += 1;
            let page = page.map_err(|e| failed("DescribeInstances", e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else {
                    continue;
                };
                instance_tags.insert(id.to_string(), tag_pairs(instance.tags()));
            }
        }
    }
    let mut poll = Poll {
        seen: Vec::new(),
        finished: epoch_second(),
    };
    for (interface, arrived) in &interfaces {
        let tags = interface
            .instance
            .as_ref()
            .and_then(|id| instance_tags.get(id))
            .map_or(&[][..], Vec::as_slice);
        let owner = attributes(interface, tags, region, mapping);
        for addr in interface.private.iter().chain(&interface.public) {
            poll.seen.push((Target::Ip(*addr), owner.clone(), *arrived));
        }
        if !interface.id.is_empty() {
            let id = Target::Interface(interface.id.as_str().into());
            poll.seen.push((id, owner, *arrived));
        }
    }
    metrics.count("aws_ec2_polls_total", 1);
    metrics.count("aws_ec2_calls_total", calls);
    metrics.gauge("aws_ec2_interfaces", interfaces.len() as i64);
    let addresses = poll
        .seen
        .iter()
        .filter(|(target, ..)| matches!(target, Target::Ip(_)))
        .count();
    metrics.gauge("aws_ec2_addresses", addresses as i64);
    metrics.gauge(
        "aws_ec2_poll_milliseconds",
        started.elapsed().as_millis() as i64,
    );
    Ok(poll)
}
