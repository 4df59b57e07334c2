//! AWS's published address ranges (`ip-ranges.json`), read from a local file.
//!
//! Each prefix becomes a network owned by `{"app": "aws", "service": …, "region": …}`. AWS
//! lists many prefixes twice, once under the catch-all service `AMAZON` and once under the
//! service that uses it (`S3`, `EC2`, …): the specific service wins, and among several
//! specific ones the first in the file.

use super::events::Attrs;
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The catch-all service name AWS gives to every prefix it owns.
const CATCH_ALL_SERVICE: &str = "AMAZON";

/// Why an `ip-ranges.json` file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AwsRangesError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not in the `ip-ranges.json` format.
    #[error("{path} is not an AWS ip-ranges.json file: {error}")]
    Format {
        /// The file.
        path: String,
        /// What serde_json found wrong.
        error: serde_json::Error,
    },
    /// A prefix is not a CIDR network.
    #[error("{path}: prefix `{prefix}` is not a CIDR network")]
    Prefix {
        /// The file.
        path: String,
        /// The offending text.
        prefix: String,
    },
}

#[derive(Deserialize)]
struct File {
    prefixes: Vec<V4Prefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<V6Prefix>,
}

#[derive(Deserialize)]
struct V4Prefix {
    ip_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct V6Prefix {
    ipv6_prefix: String,
    region: String,
    service: String,
}

/// Attributes of the AWS prefixes, one entry per distinct network, in file order.
pub type AwsRanges = Vec<(IpNet, Attrs)>;

/// Reads and parses an `ip-ranges.json` file.
pub fn read(path: &Path) -> Result<AwsRanges, AwsRangesError> {
    let text = std::fs::read_to_string(path).map_err(|error| AwsRangesError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse(&text).map_err(|error| match error {
        ParseError::Format(error) => AwsRangesError::Format {
            path: path.display().to_string(),
            error,
        },
        ParseError::Prefix(prefix) => AwsRangesError::Prefix {
            path: path.display().to_string(),
            prefix,
        },
    })
}

/// What [`parse`] found wrong.
#[derive(Debug)]
pub enum ParseError {
    /// Not the expected JSON shape.
    Format(serde_json::Error),
    /// A prefix that is not a network.
    Prefix(String),
}

/// Parses the text of an `ip-ranges.json` file.
pub fn parse(text: &str) -> Result<AwsRanges, ParseError> {
    let file: File = serde_json::from_str(text).map_err(ParseError::Format)?;
    let entries = file
        .prefixes
        .into_iter()
        .map(|p| (p.ip_prefix, p.region, p.service))
        .chain(
            file.ipv6_prefixes
                .into_iter()
                .map(|p| (p.ipv6_prefix, p.region, p.service)),
        );
    let mut ranges: AwsRanges = Vec::new();
    let mut index: HashMap<IpNet, usize> = HashMap::new();
    for (prefix, region, service) in entries {
        let net: IpNet = prefix
            .parse()
            .map_err(|_| ParseError::Prefix(prefix.clone()))?;
        let net = net.trunc();
        let attrs = Attrs::from([
            ("app".to_string(), "aws".to_string()),
            ("service".to_string(), service.clone()),
            ("region".to_string(), region),
        ]);
        match index.get(&net) {
            None => {
                index.insert(net, ranges.len());
                ranges.push((net, attrs));
            }
            Some(&at) => {
                // A specific service replaces the catch-all; the first specific one stays.
                if ranges[at].1["service"] == CATCH_ALL_SERVICE && service != CATCH_ALL_SERVICE {
                    ranges[at].1 = attrs;
                }
            }
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "syncToken": "1700000000",
      "createDate": "2023-11-14-00-00-00",
      "prefixes": [
        {"ip_prefix": "52.95.0.0/16", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
        {"ip_prefix": "52.95.0.0/16", "region": "us-east-1", "service": "S3", "network_border_group": "us-east-1"},
        {"ip_prefix": "52.95.0.0/16", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
        {"ip_prefix": "3.5.0.0/19", "region": "eu-west-1", "service": "S3", "network_border_group": "eu-west-1"},
        {"ip_prefix": "3.5.0.0/19", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"}
      ],
      "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f00::/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"}
      ]
    }"#;

    #[test]
    fn specific_services_win_over_the_catch_all() {
        let ranges = parse(SAMPLE).unwrap();
        let service = |net: &str| {
            let net: IpNet = net.parse().unwrap();
            ranges.iter().find(|(n, _)| *n == net).unwrap().1["service"].clone()
        };
        assert_eq!(ranges.len(), 3);
        assert_eq!(service("52.95.0.0/16"), "S3", "first specific service");
        assert_eq!(
            service("3.5.0.0/19"),
            "S3",
            "a later AMAZON does not replace it"
        );
        assert_eq!(service("2600:1f00::/24"), "EC2");
        assert_eq!(ranges[1].1["region"], "eu-west-1");
    }

    #[test]
    fn rejects_other_files_and_bad_prefixes() {
        assert!(matches!(parse("{}"), Err(ParseError::Format(_))));
        assert!(matches!(parse("[1, 2]"), Err(ParseError::Format(_))));
        let bad =
            r#"{"prefixes": [{"ip_prefix": "52.95.0.0/40", "region": "r", "service": "S3"}]}"#;
        assert!(matches!(parse(bad), Err(ParseError::Prefix(p)) if p == "52.95.0.0/40"));
    }
}
