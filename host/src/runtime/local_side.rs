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
//!
//! Where the table is configured with `local_owner_fields` (v7's `ecs_*` fields), a
//! record that has any of them names its local side's owner itself: that owner (the
//! configured attributes with the record's values) wins over the interface and the
//! address.

use super::ColumnKind;
use crate::metadata::{Attrs, Table, UNATTRIBUTED};
use std::net::IpAddr;

/// The columns the host asks for, after the caller's, when the table has interface
/// timelines or local owner fields: in this order, then the local owner fields.
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
    /// Local sides whose owner the record's own fields named.
    pub by_record: u32,
    /// Records whose fields named an owner the table had no room left to register.
    pub record_owners_full: u32,
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

/// The columns to ask for beside the caller's: [`COLUMNS`], then the table's local owner
/// fields; none when the table has neither interfaces nor such fields.
pub fn columns(table: &Table) -> Vec<String> {
    let fields = table.local_owner_fields();
    if table.interfaces() == 0 && fields.is_empty() {
        return Vec::new();
    }
    COLUMNS
        .iter()
        .map(|c| c.to_string())
        .chain(fields.iter().map(|(_, field)| field.clone()))
        .collect()
}

/// Attributes each record's local side by the owner its own fields name, else by its
/// interface. `values` holds `width` values per record, of which the [`columns`] start
/// at `first` (with `kinds` their kinds); `owners` two per record, changed in place.
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
    let fields = table.local_owner_fields();
    let ours = COLUMNS.len() + fields.len();
    let fits = kinds.len() == ours
        && kinds[..COLUMNS.len()] == KINDS
        && kinds[COLUMNS.len()..]
            .iter()
            .all(|k| *k == ColumnKind::Text);
    if !fits || width < first + ours {
        return done;
    }
    for (row, pair) in values.chunks_exact(width).zip(owners.chunks_exact_mut(2)) {
        let row = &row[first..first + ours];
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
        let mut named = Attrs::new();
        for ((attribute, _), &value) in fields.iter().zip(&row[COLUMNS.len()..]) {
            if let Some(value) = text(lines, value) {
                named.insert(attribute.clone(), value.to_string());
            }
        }
        if !named.is_empty() {
            match table.record_owner(named) {
                Some(owner) => {
                    if pair[side] == UNATTRIBUTED {
                        done.newly_attributed += 1;
                    }
                    done.by_record += 1;
                    pair[side] = owner;
                    continue;
                }
                None => done.record_owners_full += 1,
            }
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
                disagreements: 1,
                ..Default::default()
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

    #[test]
    fn records_name_their_local_owner_where_configured() {
        let log = read_changelog(
            br#"{"ts": 0, "op": "assign", "interface": "eni-a", "attrs": {"app": "a"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.2", "attrs": {"app": "b", "zone": "z"}}
"# as &[u8],
        )
        .unwrap();
        let mut builder = TableBuilder::new().local_owner_fields(vec![
            ("app".into(), "ecs_service_name".into()),
            ("cluster".into(), "ecs_cluster_name".into()),
        ]);
        builder.extend(&log.events);
        let table = builder.build();
        assert_eq!(
            columns(&table)[5..],
            ["ecs_service_name", "ecs_cluster_name"]
        );
        let a = table.interface_owner("eni-a", 5);
        let mut lines = String::new();
        let mut values = Vec::new();
        let put = |lines: &mut String, values: &mut Vec<u64>, s: Option<&str>| match s {
            None => values.push(NULL),
            Some(s) => {
                let start = lines.len() as u64;
                lines.push_str(s);
                lines.push(' ');
                values.push((start << 32) | (start + s.len() as u64));
            }
        };
        // interface, direction, start, srcaddr, dstaddr, service, cluster
        let rows: [[Option<&str>; 7]; 3] = [
            [
                Some("eni-a"),
                Some("egress"),
                None,
                Some("10.0.0.1"),
                Some("8.8.8.8"),
                Some("web"),
                Some("prod"),
            ],
            [
                Some("eni-a"),
                Some("ingress"),
                None,
                Some("8.8.8.8"),
                Some("10.0.0.1"),
                Some("web"),
                None,
            ],
            [
                Some("eni-a"),
                Some("egress"),
                None,
                Some("10.0.0.1"),
                Some("8.8.8.8"),
                None,
                None,
            ],
        ];
        for row in rows {
            for (at, field) in row.into_iter().enumerate() {
                if at == 2 {
                    values.push(5);
                } else {
                    put(&mut lines, &mut values, field);
                }
            }
        }
        let mut kinds = KINDS.to_vec();
        kinds.extend([ColumnKind::Text; 2]);
        let mut owners = vec![a, 0, 0, a, a, 0];
        let done = attribute(&table, &lines, &kinds, &values, 7, 0, &mut owners);
        assert_eq!((done.by_record, done.by_interface), (2, 1));
        let attrs = |id: u32| table.owner(id).unwrap().attrs.to_attrs();
        let web_prod = attrs(owners[0]);
        assert_eq!(web_prod["app"], "web");
        assert_eq!(web_prod["cluster"], "prod");
        assert_eq!(attrs(owners[3]).get("cluster"), None);
        assert_eq!(attrs(owners[3])["app"], "web");
        assert_ne!(owners[0], owners[3]);
        assert_eq!(owners[4], a, "no fields: the interface");
        // Registered once: the same attributes get the same id again, and render.
        assert_eq!(table.record_owner(web_prod.clone()), Some(owners[0]));
        let fragment = &table.owner(owners[0]).unwrap().src_fragment;
        assert!(fragment.contains(r#""src_app":"web""#), "{fragment}");
        assert!(fragment.contains(r#""src_cluster":"prod""#), "{fragment}");
        assert!(fragment.contains(r#""src_zone":null"#), "{fragment}");
        // Bounded: past the registry's room, records name nobody new.
        for n in 0..crate::metadata::table::MAX_RECORD_OWNERS {
            table.record_owner(Attrs::from([("app".to_string(), format!("x{n}"))]));
        }
        assert_eq!(
            table.record_owner(Attrs::from([("app".to_string(), "late".to_string())])),
            None
        );
    }
}
