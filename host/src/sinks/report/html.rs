//! The report as one self-contained HTML page: the aggregates as JSON inside the page,
//! drawn by its own script (inline SVG, CSS and script; nothing is fetched).

use super::{Report, Sums, UNATTRIBUTED};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The page, with `/*DATA*/` where the aggregates go.
const PAGE: &str = include_str!("page.html");

/// Name of the node that stands for every application past the page's limit.
pub const OTHER: &str = "(other)";

/// Minutes of history the per-minute chart holds at most (the latest).
const MAX_MINUTES: usize = 1440;

/// Pairs with per-minute series in the page: the most bytes overall, and the top
/// [`CHART`] within each region and with each node, so that the chart has the top
/// pairs of what a filter leaves.
const SERIES: usize = 20;

/// Series the chart draws: the pairs with the most bytes among those a filter leaves.
const CHART: usize = 5;

#[derive(Serialize)]
struct Page<'a> {
    source: &'a str,
    top: usize,
    totals: Totals,
    regions: Vec<&'a str>,
    nodes: Vec<Node>,
    links: Vec<PageLink>,
    minutes: Minutes,
}

#[derive(Serialize)]
struct Totals {
    flows: u64,
    bytes: u64,
    packets: u64,
    dead_letters: u64,
}

#[derive(Serialize)]
struct Node {
    name: String,
    /// `app`, `internet`, `aws`, `unattributed` or `other`.
    kind: &'static str,
    regions: Vec<String>,
}

/// One link of the page: a pair of nodes between a region and zone pair.
#[derive(Serialize)]
struct PageLink {
    s: usize,
    d: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    sr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sz: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dz: Option<String>,
    bytes: u64,
    packets: u64,
    flows: u64,
    /// Rejected bytes, packets and flows.
    rb: u64,
    rp: u64,
    rf: u64,
}

#[derive(Serialize)]
struct Minutes {
    /// Epoch minute of the first value.
    start: i64,
    /// Values per series.
    count: usize,
    pairs: Vec<Series>,
}

/// One pair's bytes per minute between one region pair (the page adds up the series
/// of the regions a filter leaves).
#[derive(Serialize)]
struct Series {
    s: usize,
    d: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    sr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dr: Option<String>,
    bytes: Vec<u64>,
}

/// A link's source and destination region, then zone.
type Places<'a> = [Option<&'a str>; 4];

/// Source and destination node ids.
type NodePair = (usize, usize);

/// Bytes per epoch minute.
type PerMinute = BTreeMap<i64, u64>;

/// What kind of node an application name is.
fn kind(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if name == UNATTRIBUTED {
        "unattributed"
    } else if name == OTHER {
        "other"
    } else if lower == "internet" {
        "internet"
    } else if lower.starts_with("aws") || lower.starts_with("amazon") {
        "aws"
    } else {
        "app"
    }
}

/// Renders `report` as the page: at most `limit` applications as nodes of their own (by
/// bytes sent and received), the rest as one [`OTHER`] node; `top` rows per table;
/// `source` says where the flows came from.
pub fn render(report: &Report, limit: usize, top: usize, source: &str) -> String {
    // Applications by bytes sent and received.
    let mut volume: HashMap<&str, u64> = HashMap::new();
    for (key, sums) in &report.links {
        *volume.entry(&key.src).or_default() += sums.all.bytes;
        if key.dst != key.src {
            *volume.entry(&key.dst).or_default() += sums.all.bytes;
        }
    }
    let mut ranked: Vec<(&str, u64)> = volume.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let keep = limit.max(1);
    let cut = ranked.len() > keep;
    // Past the limit, one node stands for the rest (so limit - 1 named ones beside it).
    let named = if cut { keep - 1 } else { ranked.len() };
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    for (name, _) in ranked.iter().take(named) {
        ids.insert(name, nodes.len());
        nodes.push(Node {
            name: name.to_string(),
            kind: kind(name),
            regions: Vec::new(),
        });
    }
    let other = cut.then(|| {
        nodes.push(Node {
            name: OTHER.to_string(),
            kind: "other",
            regions: Vec::new(),
        });
        nodes.len() - 1
    });
    let id = |name: &str| ids.get(name).copied().or(other).unwrap_or(0);
    // Links, merged where the tail became one node.
    let mut merged: BTreeMap<(usize, usize, Places), (Sums, Sums)> = BTreeMap::new();
    let mut regions: Vec<BTreeSet<String>> = vec![BTreeSet::new(); nodes.len()];
    let mut all_regions: BTreeSet<&str> = BTreeSet::new();
    for (key, sums) in &report.links {
        let (s, d) = (id(&key.src), id(&key.dst));
        let places = [
            key.src_region.as_deref(),
            key.dst_region.as_deref(),
            key.src_zone.as_deref(),
            key.dst_zone.as_deref(),
        ];
        let entry = merged.entry((s, d, places)).or_default();
        super::add(&mut entry.0, sums.all);
        super::add(&mut entry.1, sums.rejected.unwrap_or_default());
        for (node, region) in [(s, &key.src_region), (d, &key.dst_region)] {
            if let Some(region) = region {
                regions[node].insert(region.clone());
                all_regions.insert(region);
            }
        }
    }
    for (node, set) in nodes.iter_mut().zip(regions) {
        node.regions = set.into_iter().collect();
    }
    let links: Vec<PageLink> = merged
        .into_iter()
        .map(|((s, d, [sr, dr, sz, dz]), (all, rejected))| PageLink {
            s,
            d,
            sr: sr.map(str::to_string),
            dr: dr.map(str::to_string),
            sz: sz.map(str::to_string),
            dz: dz.map(str::to_string),
            bytes: all.bytes,
            packets: all.packets,
            flows: all.flows,
            rb: rejected.bytes,
            rp: rejected.packets,
            rf: rejected.flows,
        })
        .collect();
    let page = Page {
        source,
        top,
        totals: Totals {
            flows: report.flows,
            bytes: report.bytes,
            packets: report.packets,
            dead_letters: report.dead_letters,
        },
        regions: all_regions.into_iter().collect(),
        minutes: minutes(report, &id),
        nodes,
        links,
    };
    let json = serde_json::to_string(&page).expect("the page's data serialises");
    // Inside a <script> element nothing may close it early or open a comment: no `<`
    // at all (`\u003c` is the same character to JSON).
    let json = json.replace('<', "\\u003c");
    PAGE.replacen("/*DATA*/", &json, 1)
}

/// Per-minute bytes, by region pair, of the pairs [`SERIES`] and [`CHART`] choose.
fn minutes(report: &Report, id: &dyn Fn(&str) -> usize) -> Minutes {
    // Merged where the tail became one node.
    type Key<'a> = (NodePair, Option<&'a str>, Option<&'a str>);
    let mut merged: BTreeMap<Key, PerMinute> = BTreeMap::new();
    for ((src, dst, src_region, dst_region), series) in &report.minutes {
        let key = (
            (id(src), id(dst)),
            src_region.as_deref(),
            dst_region.as_deref(),
        );
        let into = merged.entry(key).or_default();
        for (minute, bytes) in series {
            let slot = into.entry(*minute).or_default();
            *slot = slot.saturating_add(*bytes);
        }
    }
    let total = |series: &PerMinute| series.values().fold(0u64, |t, b| t.saturating_add(*b));
    // Each pair's bytes: overall, within each region, with each node.
    let mut overall: HashMap<NodePair, u64> = HashMap::new();
    let mut by_region: HashMap<&str, HashMap<NodePair, u64>> = HashMap::new();
    let mut by_node: HashMap<usize, HashMap<NodePair, u64>> = HashMap::new();
    for ((pair, src_region, dst_region), series) in &merged {
        let bytes = total(series);
        let add = |sums: &mut HashMap<NodePair, u64>| {
            let sum = sums.entry(*pair).or_default();
            *sum = sum.saturating_add(bytes);
        };
        add(&mut overall);
        let dst_region = dst_region.filter(|r| Some(*r) != *src_region);
        for region in [*src_region, dst_region].into_iter().flatten() {
            add(by_region.entry(region).or_default());
        }
        add(by_node.entry(pair.0).or_default());
        if pair.1 != pair.0 {
            add(by_node.entry(pair.1).or_default());
        }
    }
    let top = |sums: &HashMap<NodePair, u64>, n: usize| {
        let mut ranked: Vec<(NodePair, u64)> = sums.iter().map(|(p, b)| (*p, *b)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.into_iter().take(n).map(|(pair, _)| pair)
    };
    let mut chosen: BTreeSet<NodePair> = top(&overall, SERIES).collect();
    for sums in by_region.values().chain(by_node.values()) {
        chosen.extend(top(sums, CHART));
    }
    let series: Vec<(&Key, &PerMinute)> = merged
        .iter()
        .filter(|((pair, _, _), _)| chosen.contains(pair))
        .collect();
    let last = series
        .iter()
        .filter_map(|(_, s)| s.keys().next_back().copied())
        .max();
    let first = series
        .iter()
        .filter_map(|(_, s)| s.keys().next().copied())
        .min();
    let (Some(first), Some(last)) = (first, last) else {
        return Minutes {
            start: 0,
            count: 0,
            pairs: Vec::new(),
        };
    };
    let start = first.max(last - MAX_MINUTES as i64 + 1);
    let count = (last - start + 1) as usize;
    let mut pairs: Vec<(u64, Series)> = series
        .into_iter()
        .map(|(((s, d), sr, dr), series)| {
            let mut bytes = vec![0; count];
            for (minute, b) in series.range(start..) {
                bytes[(minute - start) as usize] = *b;
            }
            let series = Series {
                s: *s,
                d: *d,
                sr: sr.map(str::to_string),
                dr: dr.map(str::to_string),
                bytes,
            };
            (overall[&(*s, *d)], series)
        })
        .collect();
    // The pairs with the most bytes first.
    pairs.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| (a.1.s, a.1.d).cmp(&(b.1.s, b.1.d)))
    });
    Minutes {
        start,
        count,
        pairs: pairs.into_iter().map(|(_, series)| series).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::report::ReportKeys;

    fn data(page: &str) -> serde_json::Value {
        let start = page.find(r#"type="application/json">"#).unwrap() + 24;
        let end = start + page[start..].find("</script>").unwrap();
        serde_json::from_str(&page[start..end]).unwrap()
    }

    #[test]
    fn the_tail_past_the_limit_is_one_node_and_nothing_closes_the_script() {
        let keys = ReportKeys::new("app", "region", "zone");
        let mut report = Report::default();
        let row = |src: &str, dst: &str, bytes: u64, minute: i64| {
            format!(
                r#"{{"timestamp":{},"src_app":"{src}","dst_app":"{dst}","src_region":"r1","dst_region":"r2","bytes":{bytes},"packets":1,"flows":2}}"#,
                minute * 60_000
            )
        };
        report.add(&row("a", "b", 1000, 10), &keys);
        report.add(&row("a", "b", 500, 12), &keys);
        report.add(&row("b", "c", 100, 10), &keys);
        report.add(&row("</script><script>x()</script>", "d", 1, 11), &keys);
        report.add(&row("e", "a", 2, 11), &keys);
        report.add(&row("<!--", "e", 0, 11), &keys);
        let page = render(&report, 3, 5, "test");
        assert_eq!(page.matches("</script>").count(), 2, "only the page's own");
        let data = data(&page);
        let names: Vec<&str> = data["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        // By bytes sent and received: b 1,600, a 1,502, then the tail.
        assert_eq!(names, ["b", "a", OTHER]);
        // b→c, "</script>…"→d and e→a: c, d, e and the script name are (other).
        let links = data["links"].as_array().unwrap();
        let pair = |s: usize, d: usize| {
            links
                .iter()
                .filter(|l| l["s"] == s && l["d"] == d)
                .map(|l| l["bytes"].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(
            (pair(1, 0), pair(0, 2), pair(2, 2), pair(2, 1)),
            (1500, 100, 1, 2)
        );
        assert_eq!(data["totals"]["flows"], 12);
        assert!(
            !page.contains("<!--"),
            "no comment opened inside the script"
        );
        assert_eq!(data["regions"], serde_json::json!(["r1", "r2"]));
        // Minutes 10 to 12; a→b first (most bytes).
        assert_eq!(data["minutes"]["start"], 10);
        assert_eq!(data["minutes"]["count"], 3);
        assert_eq!(
            data["minutes"]["pairs"][0]["bytes"],
            serde_json::json!([1000, 0, 500])
        );
    }
}
