//! The local side of a flow, attributed by the network interface that captured it
//! (DESIGN.md contract 5).
//!
//! A flow-log record names the interface it was captured on (`interface-id`) and, from
//! version 5, which way the traffic went (`flow-direction`). AWS documents that the
//! address of the interface is `srcaddr` for `egress` traffic and `dstaddr` for
//! `ingress`: that side is the local one, and the interface's own timeline in the table
//! says who owned it at the flow's start. That answer replaces what the address lookup
//! found, unless the address's own timeline names a different owner: then the side is
//! left unattributed and the disagreement counted. Networks and the internet owner yield
//! to the interface (they are less specific); an `unknown` stretch of the address yields
//! too (the interface proves what the address could not). Records without both fields,
//! or whose interface the table cannot attribute at the time, keep the address lookup.

use super::ColumnKind;
use crate::metadata::{Table, UNATTRIBUTED};
use std::net::IpAddr;

/// The columns the host asks for, after the caller's, when the table has interface
/// timelines: in this order.
pub const COLUMNS: [&str; 5] = [
    "interface_id",
    "flow_direction",
    "start",
    "srcaddr",
    "dstaddr",
];

/// What the columns' kinds must be for the pass to read them.
const KINDS: [ColumnKind; 5] = [
    ColumnKind::Text,
    ColumnKind::Text,
    ColumnKind::Integer,
    ColumnKind::Text,
    ColumnKind::Text,
];

/// What the pass did to a batch's owners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocalSides {
    /// Local sides whose owner is now the interface's.
    pub by_interface: u32,
    /// Of those, sides the address lookup had left unattributed.
    pub newly_attributed: u32,
    /// Local sides left unattributed because the interface's owner and the address's own
    /// timeline disagree.
    pub disagreements: u32,
}

/// A null column value.
const NULL: u64 = u64::MAX;

/// The text a text column's value points at in `lines` (`None` for null or a range that
/// is not there, which the caller has already ruled out).
fn text(lines: &str, value: u64) -> Option<&str> {
    if value == NULL {
        return None;
    }
    lines.get((value >> 32) as usize..(value as u32) as usize)
}

/// Attributes each record's local side by its interface. `values` holds `width` values
/// per record, of which the [`COLUMNS`] start at `first` (with `kinds` their kinds);
/// `owners` two per record, changed in place.
pub fn attribute(
    table: &Table,
    lines: &str,
    kinds: &[ColumnKind],
    values: &[u64],
    width: usize,
    first: usize,
    owners: &mut [u32],
) -> LocalSides {
    let mut done = LocalSides::default();
    if kinds != KINDS || width < first + COLUMNS.len() {
        return done;
    }
    for (row, pair) in values.chunks_exact(width).zip(owners.chunks_exact_mut(2)) {
        let row = &row[first..first + COLUMNS.len()];
        let (Some(interface), Some(direction)) = (text(lines, row[0]), text(lines, row[1])) else {
            continue;
        };
        let side = match direction {
            "egress" => 0,
            "ingress" => 1,
            _ => continue,
        };
        let start = row[2];
        let Some(addr) = text(lines, row[3 + side]).and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        if start == NULL {
            continue;
        }
        let owner = table.interface_owner(interface, start);
        if owner == UNATTRIBUTED {
            continue;
        }
        match table.exact_owner(addr, start) {
            Some(exact) if exact != UNATTRIBUTED && exact != owner => {
                done.disagreements += 1;
                pair[side] = UNATTRIBUTED;
            }
            _ => {
                if pair[side] == UNATTRIBUTED {
                    done.newly_attributed += 1;
                }
                done.by_interface += 1;
                pair[side] = owner;
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{TableBuilder, events::read_changelog};

    #[test]
    fn the_named_side_takes_the_interfaces_owner_unless_the_address_disagrees() {
        let log = read_changelog(
            br#"{"ts": 0, "op": "assign", "cidr": "10.0.0.0/8", "attrs": {"app": "vpc"}}
{"ts": 0, "op": "assign", "interface": "eni-a", "attrs": {"app": "a"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}}
{"ts": 0, "op": "unknown", "ip": "10.0.0.2"}
{"ts": 0, "op": "assign", "ip": "10.0.0.3", "attrs": {"app": "b"}}
"# as &[u8],
        )
        .unwrap();
        let mut builder = TableBuilder::new();
        builder.extend(&log.events);
        let table = builder.build();
        let a = table.interface_owner("eni-a", 5);
        let vpc = table.lookup("10.0.0.9".parse().unwrap(), 5);
        let b = table.lookup("10.0.0.3".parse().unwrap(), 5);
        // Records: interface, direction, start, srcaddr, dstaddr (one extra column first).
        let mut lines = String::new();
        let mut values = Vec::new();
        let field = |lines: &mut String, s: &str| {
            let start = lines.len() as u64;
            lines.push_str(s);
            lines.push(' ');
            (start << 32) | (start + s.len() as u64)
        };
        let rows: &[(&str, &str, &str, &str)] = &[
            ("eni-a", "egress", "10.0.0.1", "8.8.8.8"),  // agrees
            ("eni-a", "ingress", "8.8.8.8", "10.0.0.2"), // address unknown: interface
            ("eni-a", "egress", "10.0.0.9", "8.8.8.8"),  // network: interface
            ("eni-a", "egress", "10.0.0.3", "8.8.8.8"),  // disagrees
            ("eni-z", "egress", "10.0.0.9", "8.8.8.8"),  // unknown interface
            ("eni-a", "-", "10.0.0.9", "8.8.8.8"),       // no direction
        ];
        for (interface, direction, src, dst) in rows {
            values.push(7);
            for s in [interface, direction] {
                let v = field(&mut lines, s);
                values.push(if *s == "-" { NULL } else { v });
            }
            values.push(5);
            values.push(field(&mut lines, src));
            values.push(field(&mut lines, dst));
        }
        let mut owners = vec![a, 0, 0, 0, vpc, 0, b, 0, vpc, 0, vpc, 0];
        let mut kinds = vec![ColumnKind::Integer];
        kinds.extend(KINDS);
        let done = attribute(&table, &lines, &kinds[1..], &values, 6, 1, &mut owners);
        assert_eq!(owners, [a, 0, 0, a, a, 0, 0, 0, vpc, 0, vpc, 0]);
        assert_eq!(
            done,
            LocalSides {
                by_interface: 3,
                newly_attributed: 1,
                disagreements: 1
            }
        );
        // Columns of another shape are left alone.
        let mut unchanged = owners.clone();
        let kinds = [ColumnKind::Text; 5];
        assert_eq!(
            attribute(&table, &lines, &kinds, &values, 6, 1, &mut unchanged),
            LocalSides::default()
        );
        assert_eq!(unchanged, owners);
    }
}
