//! Per-component counters, named after Vector's component specification.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one component.
#[derive(Debug, Default)]
pub struct ComponentMetrics {
    received: AtomicU64,
    sent: AtomicU64,
    discarded: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    counters: Mutex<BTreeMap<&'static str, u64>>,
    gauges: Mutex<BTreeMap<&'static str, i64>>,
    info: Mutex<BTreeMap<&'static str, Vec<(&'static str, String)>>>,
    per_shard: Mutex<BTreeMap<(&'static str, String), ShardSeries>>,
}

/// One per-shard series: a counter (only grows) or a gauge (set to the latest value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSeries {
    /// A total, e.g. `kinesis_shard_records_total`.
    Counter(u64),
    /// A current value, e.g. `kinesis_millis_behind_latest`.
    Gauge(i64),
}

impl ComponentMetrics {
    /// `component_received_events_total += n`.
    pub fn received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }
    /// `component_sent_events_total += n`.
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
    /// `component_discarded_events_total += n`.
    pub fn discarded(&self, n: u64) {
        self.discarded.fetch_add(n, Ordering::Relaxed);
    }
    /// `component_errors_total{error_type} += n`.
    pub fn error(&self, error_type: &'static str, n: u64) {
        *self
            .errors
            .lock()
            .expect("metrics lock")
            .entry(error_type)
            .or_default() += n;
    }
    /// A component-specific counter (`<name> += n`), e.g. `metadata_reloads_total`.
    pub fn count(&self, name: &'static str, n: u64) {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry(name)
            .or_default() += n;
    }
    /// A component-specific gauge (`<name> = value`), e.g. `component_generation`.
    pub fn gauge(&self, name: &'static str, value: i64) {
        self.gauges
            .lock()
            .expect("metrics lock")
            .insert(name, value);
    }
    /// An info series (`<name>{labels...} 1`), replacing the previous labels, e.g.
    /// `component_info{name, version, api_version, generation}`.
    pub fn info(&self, name: &'static str, labels: Vec<(&'static str, String)>) {
        self.info.lock().expect("metrics lock").insert(name, labels);
    }
    /// A per-shard counter (`<name>{shard_id} += n`).
    pub fn shard_count(&self, name: &'static str, shard: &str, n: u64) {
        let mut series = self.per_shard.lock().expect("metrics lock");
        let entry = series
            .entry((name, shard.to_string()))
            .or_insert(ShardSeries::Counter(0));
        if let ShardSeries::Counter(total) = entry {
            *total += n;
        }
    }
    /// A per-shard gauge (`<name>{shard_id} = value`).
    pub fn shard_gauge(&self, name: &'static str, shard: &str, value: i64) {
        self.per_shard
            .lock()
            .expect("metrics lock")
            .insert((name, shard.to_string()), ShardSeries::Gauge(value));
    }
    /// Current totals.
    pub fn totals(&self) -> Totals {
        Totals {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            errors: self.errors.lock().expect("metrics lock").clone(),
            counters: self.counters.lock().expect("metrics lock").clone(),
            gauges: self.gauges.lock().expect("metrics lock").clone(),
            info: self.info.lock().expect("metrics lock").clone(),
            per_shard: self.per_shard.lock().expect("metrics lock").clone(),
        }
    }
}

/// A copy of one component's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events received.
    pub received: u64,
    /// Events sent downstream.
    pub sent: u64,
    /// Events dropped on purpose.
    pub discarded: u64,
    /// Errors by `error_type`.
    pub errors: BTreeMap<&'static str, u64>,
    /// Component-specific counters by name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Component-specific gauges by name.
    pub gauges: BTreeMap<&'static str, i64>,
    /// Info series by name, with their labels.
    pub info: BTreeMap<&'static str, Vec<(&'static str, String)>>,
    /// Per-shard series by (name, shard id).
    pub per_shard: BTreeMap<(&'static str, String), ShardSeries>,
}

/// All components' counters.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    components: Arc<Mutex<BTreeMap<String, Arc<ComponentMetrics>>>>,
}

impl Metrics {
    /// The counters of component `id` (created on first use).
    pub fn component(&self, id: &str) -> Arc<ComponentMetrics> {
        self.components
            .lock()
            .expect("metrics lock")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Totals of every component, by id.
    pub fn snapshot(&self) -> BTreeMap<String, Totals> {
        self.components
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(id, m)| (id.clone(), m.totals()))
            .collect()
    }

    /// Prometheus text exposition of every counter.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let snapshot = self.snapshot();
        for (name, pick) in [
            (
                "component_received_events_total",
                (|t: &Totals| t.received) as fn(&Totals) -> u64,
            ),
            ("component_sent_events_total", |t| t.sent),
            ("component_discarded_events_total", |t| t.discarded),
        ] {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (id, totals) in &snapshot {
                let _ = writeln!(out, "{name}{{component_id=\"{id}\"}} {}", pick(totals));
            }
        }
        let names: std::collections::BTreeSet<&str> = snapshot
            .values()
            .flat_map(|t| t.counters.keys().copied())
            .collect();
        for name in names {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (id, totals) in &snapshot {
                if let Some(n) = totals.counters.get(name) {
                    let _ = writeln!(out, "{name}{{component_id=\"{id}\"}} {n}");
                }
            }
        }
        let names: std::collections::BTreeSet<&str> = snapshot
            .values()
            .flat_map(|t| t.gauges.keys().copied())
            .collect();
        for name in names {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (id, totals) in &snapshot {
                if let Some(v) = totals.gauges.get(name) {
                    let _ = writeln!(out, "{name}{{component_id=\"{id}\"}} {v}");
                }
            }
        }
        let names: std::collections::BTreeSet<&str> = snapshot
            .values()
            .flat_map(|t| t.info.keys().copied())
            .collect();
        for name in names {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (id, totals) in &snapshot {
                if let Some(labels) = totals.info.get(name) {
                    let labels: String = labels
                        .iter()
                        .map(|(k, v)| {
                            format!(",{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                        })
                        .collect();
                    let _ = writeln!(out, "{name}{{component_id=\"{id}\"{labels}}} 1");
                }
            }
        }
        let names: std::collections::BTreeSet<(&str, bool)> = snapshot
            .values()
            .flat_map(|t| t.per_shard.iter())
            .map(|((name, _), series)| (*name, matches!(series, ShardSeries::Gauge(_))))
            .collect();
        for (name, gauge) in names {
            let kind = if gauge { "gauge" } else { "counter" };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (id, totals) in &snapshot {
                for ((series_name, shard), series) in &totals.per_shard {
                    let value = match series {
                        ShardSeries::Counter(n) => *n as i64,
                        ShardSeries::Gauge(v) => *v,
                    };
                    if *series_name == name {
                        let _ = writeln!(
                            out,
                            "{name}{{component_id=\"{id}\",shard_id=\"{shard}\"}} {value}"
                        );
                    }
                }
            }
        }
        let _ = writeln!(out, "# TYPE component_errors_total counter");
        for (id, totals) in &snapshot {
            for (error_type, n) in &totals.errors {
                let _ = writeln!(
                    out,
                    "component_errors_total{{component_id=\"{id}\",error_type=\"{error_type}\"}} {n}"
                );
            }
        }
        out
    }
}
