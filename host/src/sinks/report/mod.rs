//! The `report` sink: a short human-readable traffic summary written when the pipeline
//! ends — top application pairs by bytes, cross-region and cross-AZ bytes by pair, and
//! rejected flows — as text, or as one self-contained HTML page that draws them
//! ([`html`]). The same report is made from a `druid` sink's rollup files by
//! `flowenrich report`.

pub mod html;

use crate::config::{BuildError, Invalid, Upstream};
use crate::metrics::ComponentMetrics;
use crate::sinks::{BuiltSink, SinkKind};
use crate::topology::output::Input;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The `report` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream component ids (enriched JSON; dead letters are counted).
    pub inputs: Vec<String>,
    /// Attribute naming the application (`src_<key>` / `dst_<key>`).
    #[serde(default = "default_app_key")]
    pub app_key: String,
    /// Attribute naming the region.
    #[serde(default = "default_region_key")]
    pub region_key: String,
    /// Attribute naming the availability zone.
    #[serde(default = "default_zone_key")]
    pub zone_key: String,
    /// Rows per table.
    #[serde(default = "default_top")]
    pub top: usize,
    /// Write the report to this file (relative to the pipeline file) instead of
    /// standard output (required for `html`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `text` (tables) or `html` (a self-contained page with a map of applications, a
    /// Sankey, a region matrix, bytes per minute and the tables, with filters).
    #[serde(default)]
    pub format: ReportFormat,
    /// `html`: applications drawn as nodes of their own (by bytes sent and received);
    /// the rest are one `(other)` node.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

/// How a report is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// Plain-text tables.
    #[default]
    Text,
    /// One self-contained HTML page.
    Html,
}

fn default_limit() -> usize {
    40
}

fn default_app_key() -> String {
    "app".into()
}

fn default_region_key() -> String {
    "region".into()
}

fn default_zone_key() -> String {
    "zone".into()
}

fn default_top() -> usize {
    10
}

impl SinkKind for Config {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn validate(&self, key: &str, _upstream: &Upstream) -> Result<(), Invalid> {
        if self.format == ReportFormat::Html && self.path.is_none() {
            return Err(Invalid::new(
                format!("{key}.path"),
                "is required with `format = \"html\"` (the page is a file)",
            ));
        }
        if !(2..=100_000).contains(&self.limit) {
            return Err(Invalid::new(format!("{key}.limit"), "must be 2-100000"));
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(path) = self.path.as_mut().filter(|p| p.is_relative()) {
            *path = base.join(&*path);
        }
    }

    fn build(&self, _id: &str) -> Result<BuiltSink, BuildError> {
        let config = self.clone();
        let keys = ReportKeys::new(&config.app_key, &config.region_key, &config.zone_key);
        Ok(Box::new(move |input, cx| {
            let report = run(input, &keys, &cx.metrics);
            let text = match config.format {
                ReportFormat::Text => report.render(config.top),
                ReportFormat::Html => html::render(
                    &report,
                    config.limit,
                    config.top,
                    "flows of the pipeline's run",
                ),
            };
            match &config.path {
                Some(path) => {
                    std::fs::write(path, &text).map_err(|error| ReportError::Write {
                        path: path.clone(),
                        error,
                    })?;
                    Ok((config.format == ReportFormat::Html)
                        .then(|| format!("HTML report: {}", path.display())))
                }
                None => Ok(Some(text)),
            }
        }))
    }
}

/// Why a report could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Its file could not be written.
    #[error("{}: {error}", path.display())]
    Write {
        /// The report file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
}

/// Label for a side without the attribute.
const UNATTRIBUTED: &str = "(unattributed)";

/// Output keys the report groups by (`src_<attr>` / `dst_<attr>`), built once.
#[derive(Debug, Clone)]
pub struct ReportKeys {
    app: [String; 2],
    region: [String; 2],
    zone: [String; 2],
}

impl ReportKeys {
    /// Keys for the application, region and availability-zone attributes.
    pub fn new(app: &str, region: &str, zone: &str) -> Self {
        let sides = |attr: &str| [format!("src_{attr}"), format!("dst_{attr}")];
        ReportKeys {
            app: sides(app),
            region: sides(region),
            zone: sides(zone),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    flows: u64,
    bytes: u64,
    packets: u64,
}

/// One application pair between one pair of regions and zones (what the HTML page
/// filters and draws).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Link {
    src: String,
    dst: String,
    src_region: Option<String>,
    dst_region: Option<String>,
    src_zone: Option<String>,
    dst_zone: Option<String>,
}

/// A link's sums, and those of its rejected flows (`None`: no rejected row).
#[derive(Debug, Default, Clone, Copy)]
struct LinkSums {
    all: Sums,
    rejected: Option<Sums>,
}

/// Source and destination application, then region: what the per-minute series are
/// kept by (the page's region filter picks the series of the regions it shows).
type MinuteKey = (String, String, Option<String>, Option<String>);

/// Running totals.
#[derive(Default)]
pub struct Report {
    flows: u64,
    bytes: u64,
    packets: u64,
    dead_letters: u64,
    unparseable: u64,
    /// Every table of the report (and the page) is grouped from these.
    links: HashMap<Link, LinkSums>,
    /// Per pair and region pair, bytes per epoch minute.
    minutes: HashMap<MinuteKey, BTreeMap<i64, u64>>,
}

impl Report {
    /// Adds one JSON line: an enriched flow, a dead letter (an `error` key), or a row of
    /// a `druid` sink's rollup files (a `timestamp` in epoch milliseconds and the sums
    /// `flows`, `bytes` and `packets`).
    pub fn add(&mut self, line: &str, keys: &ReportKeys) {
        let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
            self.unparseable += 1;
            return;
        };
        if row.contains_key("error") && !row.contains_key("srcaddr") {
            self.dead_letters += 1;
            return;
        }
        let text = |key: &String| row.get(key).and_then(Value::as_str).map(str::to_string);
        let number = |key: &str| row.get(key).and_then(Value::as_u64).unwrap_or(0);
        let rollup = row.get("timestamp").and_then(Value::as_i64);
        let sums = Sums {
            flows: match rollup {
                Some(_) => number("flows"),
                None => 1,
            },
            bytes: number("bytes"),
            packets: number("packets"),
        };
        let minute = match rollup {
            Some(ms) => Some(ms.div_euclid(60_000)),
            None => row
                .get("start")
                .and_then(Value::as_i64)
                .map(|s| s.div_euclid(60)),
        };
        self.flows = self.flows.saturating_add(sums.flows);
        self.bytes = self.bytes.saturating_add(sums.bytes);
        self.packets = self.packets.saturating_add(sums.packets);
        let src_app = text(&keys.app[0]).unwrap_or_else(|| UNATTRIBUTED.into());
        let dst_app = text(&keys.app[1]).unwrap_or_else(|| UNATTRIBUTED.into());
        let (src_region, dst_region) = (text(&keys.region[0]), text(&keys.region[1]));
        if let Some(minute) = minute {
            let key = (
                src_app.clone(),
                dst_app.clone(),
                src_region.clone(),
                dst_region.clone(),
            );
            let slot = self
                .minutes
                .entry(key)
                .or_default()
                .entry(minute)
                .or_default();
            *slot = slot.saturating_add(sums.bytes);
        }
        let link = self
            .links
            .entry(Link {
                src: src_app,
                dst: dst_app,
                src_region,
                dst_region,
                src_zone: text(&keys.zone[0]),
                dst_zone: text(&keys.zone[1]),
            })
            .or_default();
        add(&mut link.all, sums);
        if row.get("action").and_then(Value::as_str) == Some("REJECT") {
            add(link.rejected.get_or_insert_default(), sums);
        }
    }

    /// The links' sums grouped by `key` (links it gives `None` are left out), taking a
    /// link's sums with `sums`.
    fn grouped<K: std::hash::Hash + Eq>(
        &self,
        key: impl Fn(&Link) -> Option<K>,
        sums: impl Fn(&LinkSums) -> Option<Sums>,
    ) -> HashMap<K, Sums> {
        let mut groups = HashMap::new();
        for (link, link_sums) in &self.links {
            if let (Some(k), Some(s)) = (key(link), sums(link_sums)) {
                add(groups.entry(k).or_default(), s);
            }
        }
        groups
    }

    /// The report of the rows in a `druid` sink's rollup files (`flows-*.ndjson` in
    /// `dir`), with how many files there were.
    pub fn from_rollup_dir(dir: &Path, keys: &ReportKeys) -> std::io::Result<(Report, usize)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("flows-") && n.ends_with(".ndjson"))
        });
        files.sort();
        let mut report = Report::default();
        for path in &files {
            let reader = std::io::BufReader::new(std::fs::File::open(path)?);
            for line in std::io::BufRead::lines(reader) {
                let line = line?;
                if !line.trim().is_empty() {
                    report.add(&line, keys);
                }
            }
        }
        Ok((report, files.len()))
    }

    /// The report text.
    pub fn render(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "flowenrich report: {} flows, {} bytes, {} lines rejected by the parser",
            self.flows, self.bytes, self.dead_letters
        );
        let pair = |l: &Link| Some((l.src.clone(), l.dst.clone()));
        let all = |s: &LinkSums| Some(s.all);
        section(
            &mut out,
            "Top application pairs by bytes",
            top,
            &self.grouped(pair, all),
            |(s, d)| format!("{s} -> {d}"),
        );
        let cross_region = self.grouped(
            |l| match (&l.src_region, &l.dst_region) {
                (Some(a), Some(b)) if a != b => {
                    Some((l.src.clone(), a.clone(), l.dst.clone(), b.clone()))
                }
                _ => None,
            },
            all,
        );
        section(
            &mut out,
            "Cross-region bytes by application pair",
            top,
            &cross_region,
            |(s, sr, d, dr)| format!("{s} ({sr}) -> {d} ({dr})"),
        );
        let cross_zone = self.grouped(
            |l| match (&l.src_zone, &l.dst_zone) {
                (Some(a), Some(b)) if a != b && l.src_region == l.dst_region => {
                    Some((l.src.clone(), a.clone(), l.dst.clone(), b.clone()))
                }
                _ => None,
            },
            all,
        );
        section(
            &mut out,
            "Cross-AZ bytes by application pair (same region)",
            top,
            &cross_zone,
            |(s, sz, d, dz)| format!("{s} ({sz}) -> {d} ({dz})"),
        );
        section(
            &mut out,
            "Rejected flows (action REJECT) by application pair",
            top,
            &self.grouped(pair, |s| s.rejected),
            |(s, d)| format!("{s} -> {d}"),
        );
        out
    }
}

/// Adds `sums` to `into`, saturating (counters from bad input can be near `u64::MAX`).
fn add(into: &mut Sums, sums: Sums) {
    into.flows = into.flows.saturating_add(sums.flows);
    into.bytes = into.bytes.saturating_add(sums.bytes);
    into.packets = into.packets.saturating_add(sums.packets);
}

fn section<K>(
    out: &mut String,
    title: &str,
    top: usize,
    rows: &HashMap<K, Sums>,
    label: impl Fn(&K) -> String,
) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let mut sorted: Vec<(String, Sums)> = rows.iter().map(|(k, v)| (label(k), *v)).collect();
    sorted.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then_with(|| a.0.cmp(&b.0)));
    let width = sorted
        .iter()
        .take(top)
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "  {:width$}  {:>14}  {:>10}  {:>7}",
        "", "bytes", "packets", "flows"
    );
    for (label, sums) in sorted.iter().take(top) {
        let _ = writeln!(
            out,
            "  {label:width$}  {:>14}  {:>10}  {:>7}",
            sums.bytes, sums.packets, sums.flows
        );
    }
    if sorted.len() > top {
        let _ = writeln!(out, "  ... and {} more", sorted.len() - top);
    }
}

/// Aggregates every batch into a report. A report is a summary, not a delivery of
/// records: a batch is done once it is counted.
pub fn run(input: &mut Input, keys: &ReportKeys, metrics: &ComponentMetrics) -> Report {
    let mut report = Report::default();
    while let Some(batch) = input.recv() {
        metrics.received(batch.lines as u64);
        for line in batch.text.lines() {
            report.add(line, keys);
        }
        metrics.sent(batch.lines as u64);
        batch.done();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_pairs_regions_zones_and_rejects() {
        let keys = ReportKeys::new("app", "region", "zone");
        let mut report = Report::default();
        let row = |src: &str,
                   dst: &str,
                   sr: &str,
                   dr: &str,
                   sz: &str,
                   dz: &str,
                   bytes: u64,
                   action: &str| {
            format!(
                r#"{{"srcaddr":"x","bytes":{bytes},"packets":1,"action":"{action}","src_app":"{src}","dst_app":"{dst}","src_region":"{sr}","dst_region":"{dr}","src_zone":"{sz}","dst_zone":"{dz}"}}"#
            )
        };
        report.add(
            &row("api", "db", "r1", "r2", "a", "b", 100, "ACCEPT"),
            &keys,
        );
        report.add(&row("api", "db", "r1", "r1", "a", "b", 50, "REJECT"), &keys);
        report.add(r#"{"error":"bad","line":"x"}"#, &keys);
        let mut huge = Report::default();
        for _ in 0..2 {
            huge.add(
                &row("a", "b", "r", "r", "z", "z", u64::MAX, "ACCEPT"),
                &keys,
            );
        }
        assert!(
            huge.render(1).contains(&u64::MAX.to_string()),
            "sums saturate instead of overflowing"
        );
        let text = report.render(5);
        assert!(
            text.starts_with("flowenrich report: 2 flows, 150 bytes, 1 lines rejected"),
            "{text}"
        );
        assert!(text.contains("api (r1) -> db (r2)"), "{text}");
        assert!(text.contains("api (a) -> db (b)"), "{text}");
        let rejected = text.split("Rejected flows").nth(1).unwrap();
        assert!(
            rejected.contains("api -> db") && rejected.contains("50"),
            "{text}"
        );
    }
}
