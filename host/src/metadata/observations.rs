//! Successive observations of who owns which address (a poller's answers) turned into
//! contract-3 events that never guess (DESIGN.md contract 5).
//!
//! Ownership is proven only at observation times. An address seen with the same owner at
//! two consecutive observations is owned by it between them: nothing is written, the
//! source's `observed` horizon moves on. Where the owner differs, or the address appears
//! or disappears, the interval between the two observations is `unknown`; then the new
//! owner is assigned (or the address unassigned) at the time it was seen. Each poll ends
//! with one `observed` event: its horizon, after which nothing is known yet. Network
//! interfaces seen by a poll follow the same rules as addresses (their own timelines).

use super::events::{Attrs, Event, Op, Target};
use std::collections::HashMap;

/// One poll's answer: every address (and interface) seen, each with its owner and the
/// epoch second its page of the answer arrived.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    /// (address or interface, owner, when it was seen): [`Target::Ip`] or
    /// [`Target::Interface`].
    pub seen: Vec<(Target, Attrs, u64)>,
    /// When the last page of the answer arrived: absences are proven by then.
    pub finished: u64,
}

/// What was last seen of one address.
#[derive(Debug, Clone)]
struct Seen {
    /// Its owner, or `None` when what was seen is not proven (two owners claimed it).
    owner: Option<Attrs>,
    /// When.
    at: u64,
}

/// Turns one source's polls into events; keeps what the last poll saw.
#[derive(Debug)]
pub struct Observer {
    source: Box<str>,
    known: HashMap<Target, Seen>,
    /// When the previous poll finished (`None` before the first).
    previous: Option<u64>,
}

impl Observer {
    /// An observer whose events name `source` (`aws_ec2/us-east-1`).
    pub fn new(source: &str) -> Observer {
        Observer {
            source: source.into(),
            known: HashMap::new(),
            previous: None,
        }
    }

    /// Addresses seen by the last poll.
    pub fn addresses(&self) -> usize {
        self.known
            .keys()
            .filter(|t| matches!(t, Target::Ip(_)))
            .count()
    }

    /// Everything the last poll saw, re-asserted: an `assign` of each address and
    /// interface at the time it was seen (`unknown` for one claimed twice). Nothing new
    /// is proven; a reader that missed the earlier events (a changelog stream read from
    /// its trim horizon) learns every current owner.
    pub fn snapshot(&self) -> Vec<Event> {
        let mut known: Vec<(&Target, &Seen)> = self.known.iter().collect();
        known.sort_unstable_by(|a, b| a.0.cmp(b.0));
        known
            .into_iter()
            .map(|(target, seen)| Event {
                ts: seen.at,
                target: target.clone(),
                op: match &seen.owner {
                    Some(owner) => Op::Assign(owner.clone()),
                    None => Op::Unknown,
                },
                source: Some(self.source.clone()),
            })
            .collect()
    }

    /// The events that `poll` proves, in the order they must be applied, ending with the
    /// poll's `observed` horizon (the earliest time any of it was seen).
    pub fn observe(&mut self, poll: &Poll) -> Vec<Event> {
        let mut now: HashMap<Target, Seen> = HashMap::with_capacity(poll.seen.len());
        for (addr, owner, at) in &poll.seen {
            now.entry(addr.clone())
                .and_modify(|seen| {
                    // One address claimed twice: by different owners, nobody is proven.
                    if seen.owner.as_ref() != Some(owner) {
                        seen.owner = None;
                    }
                    seen.at = seen.at.min(*at);
                })
                .or_insert(Seen {
                    owner: Some(owner.clone()),
                    at: *at,
                });
        }
        let mut events = Vec::new();
        let event = |ts: u64, addr: &Target, op: Op| Event {
            ts,
            target: addr.clone(),
            op,
            source: Some(self.source.clone()),
        };
        let mut addrs: Vec<&Target> = now.keys().chain(self.known.keys()).collect();
        addrs.sort_unstable();
        addrs.dedup();
        for addr in addrs {
            let before = self.known.get(addr);
            let after = now.get(addr);
            // Since when nothing about the address is proven: one second after it was
            // last seen, or after the previous poll for an address it did not see.
            let unproven_from = match (before, self.previous) {
                (Some(before), _) => Some(before.at + 1),
                (None, Some(previous)) => Some(previous + 1),
                (None, None) => None,
            };
            match (before, after) {
                (Some(b), Some(a)) if b.owner.is_some() && b.owner == a.owner => {}
                (_, Some(a)) => {
                    // Unknown from when nothing was proven, unless that is when it was
                    // seen again (then two events of one second would depend on their
                    // order, which a stream of several shards need not keep).
                    if let Some(from) = unproven_from.filter(|&from| from < a.at) {
                        events.push(event(from, addr, Op::Unknown));
                    }
                    match &a.owner {
                        Some(owner) => events.push(event(a.at, addr, Op::Assign(owner.clone()))),
                        // Claimed twice: unknown from when it was seen.
                        None => events.push(event(a.at, addr, Op::Unknown)),
                    }
                }
                (Some(b), None) => {
                    let gone = poll.finished.max(b.at + 1);
                    if b.at + 1 < gone {
                        events.push(event(b.at + 1, addr, Op::Unknown));
                    }
                    events.push(event(gone, addr, Op::Unassign));
                }
                (None, None) => {}
            }
        }
        let horizon = now.values().map(|s| s.at).min().unwrap_or(poll.finished);
        events.push(Event {
            ts: horizon.min(poll.finished),
            target: Target::Source(self.source.clone()),
            op: Op::Observed,
            source: None,
        });
        self.known = now;
        self.previous = Some(poll.finished);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TableBuilder;

    fn owner(app: &str) -> Attrs {
        Attrs::from([("app".to_string(), app.to_string())])
    }

    fn poll(at: u64, seen: &[(&str, &str)]) -> Poll {
        Poll {
            seen: seen
                .iter()
                .map(|(ip, app)| match ip.parse() {
                    Ok(ip) => (Target::Ip(ip), owner(app), at),
                    Err(_) => (Target::Interface((*ip).into()), owner(app), at),
                })
                .collect(),
            finished: at,
        }
    }

    #[test]
    fn polls_become_events_that_never_guess() {
        let mut observer = Observer::new("aws_ec2/us-east-1");
        let mut builder = TableBuilder::new();
        let mut lines = Vec::new();
        for p in [
            // 10.0.0.1: a, then b (moved between 130 and 160); 10.0.0.2: c, then gone;
            // 10.0.0.3: new at 160; 10.0.0.4 claimed twice at 160, then d.
            poll(100, &[("10.0.0.1", "a"), ("10.0.0.2", "c"), ("eni-1", "a")]),
            poll(130, &[("10.0.0.1", "a"), ("10.0.0.2", "c"), ("eni-1", "a")]),
            poll(
                160,
                &[
                    ("10.0.0.1", "b"),
                    ("10.0.0.3", "new"),
                    ("10.0.0.4", "x"),
                    ("10.0.0.4", "y"),
                    ("eni-1", "b"),
                ],
            ),
            poll(
                190,
                &[
                    ("10.0.0.1", "b"),
                    ("10.0.0.3", "new"),
                    ("10.0.0.4", "d"),
                    ("eni-1", "b"),
                ],
            ),
        ] {
            for event in observer.observe(&p) {
                lines.push(event.to_line());
                builder.apply(&event);
            }
        }
        let table = builder.build();
        let app = |ip: &str, t: u64| table.attr_at(ip, t, "app");
        let cases: &[(&str, u64, Option<&str>)] = &[
            ("10.0.0.1", 99, None),
            ("10.0.0.1", 100, Some("a")),
            ("10.0.0.1", 130, Some("a")),
            ("10.0.0.1", 131, None),
            ("10.0.0.1", 159, None),
            ("10.0.0.1", 160, Some("b")),
            ("10.0.0.1", 190, Some("b")),
            ("10.0.0.1", 191, None),
            ("10.0.0.2", 130, Some("c")),
            ("10.0.0.2", 131, None),
            ("10.0.0.2", 175, None),
            ("10.0.0.3", 140, None),
            ("10.0.0.3", 160, Some("new")),
            ("10.0.0.3", 190, Some("new")),
            ("10.0.0.4", 160, None),
            ("10.0.0.4", 189, None),
            ("10.0.0.4", 190, Some("d")),
        ];
        for &(ip, t, want) in cases {
            assert_eq!(
                app(ip, t).as_deref(),
                want,
                "{ip} at {t}\n{}",
                lines.join("\n")
            );
        }
        // An interface's timeline follows the same rules.
        let interface_app = |t: u64| table.owner_attr(table.interface_owner("eni-1", t), "app");
        assert_eq!(interface_app(130).as_deref(), Some("a"));
        assert_eq!(interface_app(131), None);
        assert_eq!(interface_app(160).as_deref(), Some("b"));
        assert_eq!(interface_app(191), None);
        // Unchanged addresses write nothing: the last poll adds only 10.0.0.4 and the
        // horizon.
        let last: Vec<&String> = lines.iter().rev().take(3).collect();
        assert!(last[0].contains("observed") && last[0].contains("190"));
        assert!(last[1].contains("10.0.0.4") && last[1].contains("assign"));
        assert!(last[2].contains("10.0.0.4") && last[2].contains("unknown"));
        // The changelog a fleet reads gives the same table.
        let log = crate::metadata::events::read_changelog(lines.join("\n").as_bytes()).unwrap();
        assert!(log.rejected.is_empty());
        let mut again = TableBuilder::new();
        again.extend(&log.events);
        let again = again.build();
        for &(ip, t, _) in cases {
            let ip = ip.parse().unwrap();
            assert_eq!(again.lookup(ip, t), table.lookup(ip, t));
        }
    }
}
