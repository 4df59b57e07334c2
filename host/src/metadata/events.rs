//! Metadata change events (DESIGN.md contracts 3 and 5): JSON Lines of `assign` /
//! `unassign` for exact IPs, CIDRs or network interfaces, `unknown` for exact IPs or
//! interfaces, and `observed` for everything a source (a poller) owns, each with an
//! epoch-seconds timestamp.

use ipnet::IpNet;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::IpAddr;
use std::path::Path;

/// Attributes of an owner: an open string → string map (`app`, `region`, ...).
pub type Attrs = BTreeMap<String, String>;

/// What an event changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The target belongs to an owner with these attributes from `ts` on.
    Assign(Attrs),
    /// The target belongs to nobody from `ts` on (networks and the internet owner may
    /// still cover an address).
    Unassign,
    /// The address's owner is unknown from `ts` on: unattributed, with no network or
    /// internet fallback, until its next event.
    Unknown,
    /// Everything the source owns was observed at `ts`: its horizon. A flow of an address
    /// the source covers that starts after it is not known yet.
    Observed,
}

/// What an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// One exact address.
    Ip(IpAddr),
    /// A network (host bits cleared).
    Cidr(IpNet),
    /// A network interface (`eni-...`), by its id: the owner of what flow-log records
    /// captured on it say about their local side.
    Interface(Box<str>),
    /// Everything a source owns (`observed`), by the source's name.
    Source(Box<str>),
}

/// One metadata change event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Epoch seconds from which the change holds.
    pub ts: u64,
    /// The address or network.
    pub target: Target,
    /// The change.
    pub op: Op,
    /// For an address's events: the source that observed it (`aws_ec2/us-east-1`), whose
    /// `observed` horizon bounds what the address's timeline proves. An address whose
    /// events name no source is bounded by every source's horizon (the earliest).
    pub source: Option<Box<str>>,
}

/// Why a metadata line was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not a JSON object of the expected shape.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `op` is none of `assign`, `unassign`, `unknown` and `observed`.
    #[error("unknown op `{0}` (expected `assign`, `unassign`, `unknown` or `observed`)")]
    UnknownOp(String),
    /// `observed` without a `source`.
    #[error("`observed` needs a `source` (the name of what observed, e.g. `aws_ec2/us-east-1`)")]
    MissingSource,
    /// `observed` naming an address or network, or `unknown` naming a network.
    #[error("{0}")]
    WrongTarget(&'static str),
    /// Not exactly one of `ip`, `cidr` and `interface`.
    #[error("exactly one of `ip`, `cidr` and `interface` is required")]
    Target,
    /// `interface` is empty or not text of an interface id.
    #[error("`interface`: `{0}` is not a network interface id (`eni-...`)")]
    BadInterface(String),
    /// `ip` is not an IP address.
    #[error("`ip`: `{0}` is not an IP address")]
    BadIp(String),
    /// `cidr` is not a network.
    #[error("`cidr`: `{0}` is not a CIDR network")]
    BadCidr(String),
    /// `assign` without `attrs`.
    #[error("`assign` needs an `attrs` object")]
    MissingAttrs,
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// `ts` is after 2106 (more than 32 bits of seconds): milliseconds, most likely.
    #[error("`ts` {0} is after the year 2106; epoch seconds expected (milliseconds?)")]
    TsOutOfRange(u64),
}

/// The largest accepted `ts`: the table stores times as 32-bit seconds.
pub const MAX_TS: u64 = u32::MAX as u64 - 1;

impl EventError {
    /// Stable label for metrics (`error_type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            EventError::Json(_) => "invalid_json",
            EventError::UnknownOp(_) => "unknown_op",
            EventError::MissingSource => "missing_source",
            EventError::WrongTarget(_) => "invalid_target",
            EventError::Target => "missing_target",
            EventError::BadIp(_) => "invalid_ip",
            EventError::BadCidr(_) => "invalid_cidr",
            EventError::BadInterface(_) => "invalid_interface",
            EventError::MissingAttrs => "missing_attrs",
            EventError::NotUtf8 => "invalid_utf8",
            EventError::TsOutOfRange(_) => "invalid_ts",
        }
    }
}

/// An event as its line spells it; texts without escapes are borrowed from the line.
#[derive(Deserialize)]
struct RawEvent<'a> {
    ts: u64,
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(default, borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    cidr: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    interface: Option<Cow<'a, str>>,
    #[serde(default)]
    attrs: Option<Attrs>,
    #[serde(default)]
    source: Option<String>,
}

impl Event {
    /// Parses one JSON line.
    pub fn parse(line: &str) -> Result<Event, EventError> {
        let raw: RawEvent = serde_json::from_str(line)?;
        if raw.ts > MAX_TS {
            return Err(EventError::TsOutOfRange(raw.ts));
        }
        let source = raw.source.map(String::into_boxed_str);
        if raw.op == "observed" {
            if raw.ip.is_some() || raw.cidr.is_some() || raw.interface.is_some() {
                return Err(EventError::WrongTarget(
                    "`observed` is about a `source`, not an `ip`, `cidr` or `interface`",
                ));
            }
            let source = source.ok_or(EventError::MissingSource)?;
            return Ok(Event {
                ts: raw.ts,
                target: Target::Source(source),
                op: Op::Observed,
                source: None,
            });
        }
        let target = match (&raw.ip, &raw.cidr, &raw.interface) {
            (None, None, Some(id)) => {
                let trimmed = id.trim();
                let valid = !trimmed.is_empty()
                    && trimmed.len() <= 64
                    && trimmed
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !valid {
                    return Err(EventError::BadInterface(id.to_string()));
                }
                Target::Interface(trimmed.into())
            }
            (Some(ip), None, None) => Target::Ip(
                ip.trim()
                    .parse()
                    .map_err(|_| EventError::BadIp(ip.to_string()))?,
            ),
            (None, Some(cidr), None) => {
                let net: IpNet = cidr
                    .trim()
                    .parse()
                    .map_err(|_| EventError::BadCidr(cidr.to_string()))?;
                Target::Cidr(net.trunc())
            }
            _ => return Err(EventError::Target),
        };
        let op = match &*raw.op {
            "assign" => Op::Assign(raw.attrs.ok_or(EventError::MissingAttrs)?),
            "unassign" => Op::Unassign,
            "unknown" if matches!(target, Target::Cidr(_)) => {
                return Err(EventError::WrongTarget(
                    "`unknown` is about one address (`ip`) or interface, not a network",
                ));
            }
            "unknown" => Op::Unknown,
            other => return Err(EventError::UnknownOp(other.to_string())),
        };
        Ok(Event {
            ts: raw.ts,
            target,
            op,
            source,
        })
    }

    /// The event as one changelog line (JSON, without a newline).
    pub fn to_line(&self) -> String {
        let mut line = serde_json::Map::new();
        line.insert("ts".into(), self.ts.into());
        let op = match &self.op {
            Op::Assign(_) => "assign",
            Op::Unassign => "unassign",
            Op::Unknown => "unknown",
            Op::Observed => "observed",
        };
        line.insert("op".into(), op.into());
        match &self.target {
            Target::Ip(ip) => line.insert("ip".into(), ip.to_string().into()),
            Target::Cidr(net) => line.insert("cidr".into(), net.to_string().into()),
            Target::Interface(id) => line.insert("interface".into(), id.to_string().into()),
            Target::Source(name) => line.insert("source".into(), name.to_string().into()),
        };
        if let Op::Assign(attrs) = &self.op {
            let attrs = attrs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                .collect();
            line.insert("attrs".into(), serde_json::Value::Object(attrs));
        }
        if let Some(source) = &self.source {
            line.insert("source".into(), source.to_string().into());
        }
        serde_json::Value::Object(line).to_string()
    }
}

/// A rejected metadata line.
#[derive(Debug)]
pub struct BadLine {
    /// 1-based line number.
    pub line_number: usize,
    /// The line as read.
    pub line: String,
    /// Why it was rejected.
    pub error: EventError,
}

/// Events read from a changelog, plus the lines that were rejected.
#[derive(Debug, Default)]
pub struct Changelog {
    /// Accepted events in file order.
    pub events: Vec<Event>,
    /// Rejected lines (the other lines are still used).
    pub rejected: Vec<BadLine>,
}

/// Reads a JSON Lines changelog; blank lines and lines starting with `#` are skipped.
/// A line that is not valid UTF-8 is rejected like any other bad line.
pub fn read_changelog(reader: impl BufRead) -> std::io::Result<Changelog> {
    let mut events = Vec::new();
    let rejected = read_changelog_each(reader, |event| events.push(event))?;
    Ok(Changelog { events, rejected })
}

/// [`read_changelog`], handing each accepted event to `accept` as it is read instead of
/// collecting them (a large changelog goes into a table without a copy of all its
/// events); returns the rejected lines.
pub fn read_changelog_each(
    mut reader: impl BufRead,
    mut accept: impl FnMut(Event),
) -> std::io::Result<Vec<BadLine>> {
    let mut log = Changelog::default();
    let mut raw = Vec::new();
    for index in 0.. {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        let line = match std::str::from_utf8(&raw) {
            Ok(line) => line.trim_end_matches(['\n', '\r']),
            Err(_) => {
                log.rejected.push(BadLine {
                    line_number: index + 1,
                    line: String::from_utf8_lossy(&raw).trim_end().to_string(),
                    error: EventError::NotUtf8,
                });
                continue;
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match Event::parse(trimmed) {
            Ok(event) => accept(event),
            Err(error) => log.rejected.push(BadLine {
                line_number: index + 1,
                line: line.to_string(),
                error,
            }),
        }
    }
    Ok(log.rejected)
}

/// Reads a changelog file (plain or `.gz`).
pub fn read_changelog_file(path: &Path) -> std::io::Result<Changelog> {
    read_changelog(crate::sources::file::open_text(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_examples_parse() {
        let e = Event::parse(
            r#"{"ts": 1700000000, "op": "assign", "ip": "10.1.2.3", "attrs": {"app": "api"}}"#,
        )
        .unwrap();
        assert_eq!(e.ts, 1700000000);
        assert_eq!(e.target, Target::Ip("10.1.2.3".parse().unwrap()));
        let e = Event::parse(r#"{"ts": 1700000300, "op": "unassign", "ip": "10.1.2.3"}"#).unwrap();
        assert_eq!(e.op, Op::Unassign);
        let e = Event::parse(r#"{"ts": 1, "op": "assign", "cidr": "10.1.7.9/16", "attrs": {}}"#)
            .unwrap();
        assert_eq!(e.target, Target::Cidr("10.1.0.0/16".parse().unwrap()));
    }

    #[test]
    fn observations_parse_and_print_back() {
        for line in [
            r#"{"ts": 1700000030, "op": "unknown", "ip": "10.1.2.3"}"#,
            r#"{"ts": 1700000060, "op": "observed", "source": "aws_ec2/us-east-1"}"#,
            r#"{"ts": 5, "op": "assign", "ip": "::1", "attrs": {"app": "a\"b"}, "source": "s"}"#,
            r#"{"ts": 6, "op": "unassign", "cidr": "10.0.0.0/8"}"#,
            r#"{"ts": 7, "op": "assign", "interface": "eni-0a1b", "attrs": {"app": "api"}, "source": "s"}"#,
            r#"{"ts": 8, "op": "unknown", "interface": "eni-0a1b", "source": "s"}"#,
        ] {
            let event = Event::parse(line).unwrap();
            assert_eq!(Event::parse(&event.to_line()).unwrap(), event, "{line}");
        }
        let observed =
            Event::parse(r#"{"ts": 60, "op": "observed", "source": "aws_ec2/us-east-1"}"#).unwrap();
        assert_eq!(observed.op, Op::Observed);
        assert_eq!(observed.target, Target::Source("aws_ec2/us-east-1".into()));
        let unknown =
            Event::parse(r#"{"ts": 30, "op": "unknown", "ip": "10.1.2.3", "source": "p"}"#)
                .unwrap();
        assert_eq!(unknown.op, Op::Unknown);
        assert_eq!(unknown.source.as_deref(), Some("p"));
    }

    #[test]
    fn bad_events_are_explained() {
        let cases = [
            (r#"{"ts": 1, "op": "observed"}"#, "missing_source"),
            (
                r#"{"ts": 1, "op": "observed", "source": "s", "ip": "10.0.0.1"}"#,
                "invalid_target",
            ),
            (
                r#"{"ts": 1, "op": "unknown", "cidr": "10.0.0.0/8"}"#,
                "invalid_target",
            ),
            (r#"{"ts": 1, "op": "unknown"}"#, "missing_target"),
            (r#"{"ts": 1, "op": "move", "ip": "10.0.0.1"}"#, "unknown_op"),
            (
                r#"{"ts": 1, "op": "assign", "attrs": {}}"#,
                "missing_target",
            ),
            (
                r#"{"ts": 1, "op": "assign", "ip": "10.0.0.1", "cidr": "10.0.0.0/8", "attrs": {}}"#,
                "missing_target",
            ),
            (
                r#"{"ts": 1, "op": "assign", "ip": "10.0.0.300", "attrs": {}}"#,
                "invalid_ip",
            ),
            (
                r#"{"ts": 1, "op": "assign", "cidr": "10.0.0.0/33", "attrs": {}}"#,
                "invalid_cidr",
            ),
            (
                r#"{"ts": 1, "op": "assign", "ip": "10.0.0.1"}"#,
                "missing_attrs",
            ),
            (
                r#"{"ts": -1, "op": "assign", "ip": "10.0.0.1", "attrs": {}}"#,
                "invalid_json",
            ),
            (
                r#"{"ts": 1700000000000, "op": "assign", "ip": "10.0.0.1", "attrs": {}}"#,
                "invalid_ts",
            ),
            (
                r#"{"ts": 1, "op": "assign", "ip": "10.0.0.1", "attrs": {"n": 1}}"#,
                "invalid_json",
            ),
            ("not json", "invalid_json"),
            (
                r#"{"ts": 1, "op": "assign", "interface": "", "attrs": {}}"#,
                "invalid_interface",
            ),
            (
                r#"{"ts": 1, "op": "assign", "interface": "eni 1", "attrs": {}}"#,
                "invalid_interface",
            ),
            (
                r#"{"ts": 1, "op": "unknown", "interface": "eni-1", "ip": "10.0.0.1"}"#,
                "missing_target",
            ),
            (
                r#"{"ts": 1, "op": "observed", "source": "s", "interface": "eni-1"}"#,
                "invalid_target",
            ),
        ];
        for (line, kind) in cases {
            assert_eq!(Event::parse(line).unwrap_err().error_type(), kind, "{line}");
        }
    }

    #[test]
    fn changelog_keeps_good_lines_and_reports_bad_ones() {
        let text = b"# snapshot\n{\"ts\":1,\"op\":\"unassign\",\"ip\":\"::1\"}\r\n\nbroken\n\xff\xfe\n{\"ts\":2,\"op\":\"unassign\",\"ip\":\"::2\"}";
        let log = read_changelog(&text[..]).unwrap();
        assert_eq!(log.events.len(), 2);
        assert_eq!(log.rejected.len(), 2);
        assert_eq!(log.rejected[0].line_number, 4);
        assert_eq!(log.rejected[1].line_number, 5);
        assert_eq!(log.rejected[1].error.error_type(), "invalid_utf8");
    }
}
