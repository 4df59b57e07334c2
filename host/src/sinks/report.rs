//! The `report` sink: a short human-readable traffic summary printed when the pipeline
//! ends — top application pairs by bytes, cross-region and cross-AZ bytes by pair, and
//! rejected flows.

use crate::config::{BuildError, Invalid, Upstream};
use crate::metrics::ComponentMetrics;
use crate::sinks::{BuiltSink, SinkKind};
use crate::topology::output::Input;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
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
    /// standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
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

    fn validate(&self, _key: &str, _upstream: &Upstream) -> Result<(), Invalid> {
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
            let report = run(input, &keys, config.top, &cx.metrics);
            match &config.path {
                Some(path) => {
                    std::fs::write(path, &report).map_err(|error| ReportError::Write {
                        path: path.clone(),
                        error,
                    })?;
                    Ok(None)
                }
                None => Ok(Some(report)),
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

#[derive(Default, Clone, Copy)]
struct Sums {
    flows: u64,
    bytes: u64,
    packets: u64,
}

/// Running totals.
#[derive(Default)]
pub struct Report {
    flows: u64,
    bytes: u64,
    dead_letters: u64,
    unparseable: u64,
    pairs: HashMap<(String, String), Sums>,
    cross_region: HashMap<(String, String, String, String), Sums>,
    cross_zone: HashMap<(String, String, String, String), Sums>,
    rejected: HashMap<(String, String), Sums>,
}

impl Report {
    /// Adds one JSON line (an enriched flow, or a dead letter with an `error` key).
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
        let sums = Sums {
            flows: 1,
            bytes: number("bytes"),
            packets: number("packets"),
        };
        self.flows += 1;
        self.bytes = self.bytes.saturating_add(sums.bytes);
        let src_app = text(&keys.app[0]).unwrap_or_else(|| UNATTRIBUTED.into());
        let dst_app = text(&keys.app[1]).unwrap_or_else(|| UNATTRIBUTED.into());
        let pair = (src_app.clone(), dst_app.clone());
        add(self.pairs.entry(pair.clone()).or_default(), sums);
        if row.get("action").and_then(Value::as_str) == Some("REJECT") {
            add(self.rejected.entry(pair).or_default(), sums);
        }
        let (src_region, dst_region) = (text(&keys.region[0]), text(&keys.region[1]));
        if let (Some(a), Some(b)) = (&src_region, &dst_region)
            && a != b
        {
            let key = (src_app.clone(), a.clone(), dst_app.clone(), b.clone());
            add(self.cross_region.entry(key).or_default(), sums);
        }
        if let (Some(a), Some(b)) = (text(&keys.zone[0]), text(&keys.zone[1]))
            && a != b
            && src_region == dst_region
        {
            add(
                self.cross_zone.entry((src_app, a, dst_app, b)).or_default(),
                sums,
            );
        }
    }

    /// The report text.
    pub fn render(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "flowenrich report: {} flows, {} bytes, {} lines rejected by the parser",
            self.flows, self.bytes, self.dead_letters
        );
        section(
            &mut out,
            "Top application pairs by bytes",
            top,
            &self.pairs,
            |(s, d)| format!("{s} -> {d}"),
        );
        section(
            &mut out,
            "Cross-region bytes by application pair",
            top,
            &self.cross_region,
            |(s, sr, d, dr)| format!("{s} ({sr}) -> {d} ({dr})"),
        );
        section(
            &mut out,
            "Cross-AZ bytes by application pair (same region)",
            top,
            &self.cross_zone,
            |(s, sz, d, dz)| format!("{s} ({sz}) -> {d} ({dz})"),
        );
        section(
            &mut out,
            "Rejected flows (action REJECT) by application pair",
            top,
            &self.rejected,
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

/// Aggregates every batch, then returns the rendered report. A report is a summary,
/// not a delivery of records: a batch is done once it is counted.
pub fn run(input: &mut Input, keys: &ReportKeys, top: usize, metrics: &ComponentMetrics) -> String {
    let mut report = Report::default();
    while let Some(batch) = input.recv() {
        metrics.received(batch.lines as u64);
        for line in batch.text.lines() {
            report.add(line, keys);
        }
        metrics.sent(batch.lines as u64);
        batch.done();
    }
    report.render(top)
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
