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
    let message = crate::util::error_chain(&error);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Attrs;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::IpAddr;

    /// Answers every EC2 request on 127.0.0.1 with the recorded answer for its `Action`
    /// (AWS's query protocol), until the test ends; returns the endpoint.
    fn recorded_ec2() -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/aws_ec2");
        let interfaces =
            std::fs::read_to_string(format!("{dir}/describe_network_interfaces.xml")).unwrap();
        let instances = std::fs::read_to_string(format!("{dir}/describe_instances.xml")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body);
                let answer = if body.contains("Action=DescribeInstances") {
                    &instances
                } else {
                    &interfaces
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        endpoint
    }

    #[test]
    fn recorded_answers_map_requester_managed_interfaces_and_public_addresses() {
        let endpoint = recorded_ec2();
        let runtime = crate::aws::runtime();
        let seen = runtime.block_on(async {
            let base = crate::aws::ClientConfig {
                endpoint: Some(endpoint),
                region: Some("us-east-1".into()),
            }
            .sdk_config()
            .await;
            let config = aws_sdk_ec2::config::Builder::from(&base)
                .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                    "test", "test", None, None, "test",
                ))
                .build();
            let client = aws_sdk_ec2::Client::from_conf(config);
            let mapping = crate::metadata::aws_ec2::Config {
                table: Default::default(),
                regions: vec!["us-east-1".into()],
                endpoint: None,
                poll_interval_secs: 30,
                tags: Default::default(),
                names: [("app".to_string(), "aws:autoscaling:groupName".to_string())].into(),
                role_arns: Vec::new(),
                changelog_path: None,
                changelog_stream: None,
            }
            .mapping();
            poll(&client, "us-east-1", &mapping, &ComponentMetrics::default()).await
        });
        let seen = seen.unwrap();
        let owner = |target: Target| -> Attrs {
            let found: Vec<&Attrs> = seen
                .seen
                .iter()
                .filter(|(t, ..)| *t == target)
                .map(|(_, attrs, _)| attrs)
                .collect();
            assert_eq!(found.len(), 1, "{target:?} in {:?}", seen.seen);
            found[0].clone()
        };
        let ip = |s: &str| Target::Ip(s.parse::<IpAddr>().unwrap());
        let attrs = |pairs: &[(&str, &str)]| -> Attrs {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // A load balancer's interface: managed by ELB, its public address beside the
        // private one.
        let elb = attrs(&[
            ("account", "123456789012"),
            ("interface", "eni-0f7db26b5dce1ab4c"),
            ("interface_type", "interface"),
            ("region", "us-east-1"),
            ("requester", "amazon-elb"),
            ("subnet", "subnet-0a1b2c3d4e5f60718"),
            ("vpc", "vpc-0a1b2c3d4e5f60718"),
            ("zone", "us-east-1a"),
        ]);
        assert_eq!(owner(ip("10.0.1.5")), elb);
        assert_eq!(owner(ip("203.0.113.10")), elb);
        assert_eq!(
            owner(Target::Interface("eni-0f7db26b5dce1ab4c".into())),
            elb
        );
        // A NAT gateway's interface, with its Elastic IP.
        let nat = owner(ip("198.51.100.7"));
        assert_eq!(nat["interface_type"], "nat_gateway");
        assert_eq!(nat["requester"], "441311450612");
        assert_eq!(owner(ip("10.0.1.6")), nat);
        // An instance's interface: its own `cluster` tag before the instance's, the
        // application from the instance's Auto Scaling group name; every private, public
        // and IPv6 address.
        let app = owner(ip("10.0.2.10"));
        assert_eq!(app["app"], "checkout");
        assert_eq!(app["cluster"], "checkout-blue");
        assert_eq!(app["instance"], "i-0123456789abcdef0");
        assert!(!app.contains_key("requester"));
        for address in [
            "10.0.2.11",
            "192.0.2.44",
            "192.0.2.45",
            "2600:1f18:aaaa:bbbb::10",
        ] {
            assert_eq!(owner(ip(address)), app, "{address}");
        }
        assert_eq!(seen.seen.len(), 3 + 3 + 6);
    }
}
