//! The changelog of a table that learns events while it runs (a changelog stream, an EC2
//! poller), held in memory: the bootstrap files' events, then the new ones. Each build
//! starts from all of them, off the hot path, and the table is swapped in; with a
//! retention window the changelog is compacted to what the window needs, so memory
//! follows the window, not the table's age.

use super::events::{Event, Target};
use super::{SharedTable, TableSpec};
use crate::metrics::ComponentMetrics;
use std::collections::HashMap;

/// Every event a running table is built from.
pub struct EventLog {
    /// What every build is made with (its files already read into `events`).
    spec: TableSpec,
    events: Vec<Event>,
}

impl EventLog {
    /// The events of `spec`'s files, read once (their bad lines were counted when the
    /// table was first built); every build starts from them.
    pub fn bootstrap(spec: TableSpec) -> EventLog {
        let mut events = Vec::new();
        for path in &spec.files {
            if let Ok(log) = super::events::read_changelog_file(path) {
                events.extend(log.events);
            }
        }
        EventLog {
            spec: TableSpec {
                files: Vec::new(),
                ..spec
            },
            events,
        }
    }

    /// Adds one event after the others.
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Adds events after the others.
    pub fn extend(&mut self, events: impl IntoIterator<Item = Event>) {
        self.events.extend(events);
    }

    /// Builds a table from every event and swaps it into `shared`, then drops the events
    /// its retention window no longer needs. On failure the previous table stays (logged
    /// and counted); returns whether a table was installed. `from` says where the events
    /// came from, for the log.
    pub fn rebuild(
        &mut self,
        name: &str,
        from: &str,
        shared: &SharedTable,
        metrics: &ComponentMetrics,
    ) -> bool {
        match super::load_with(&self.spec, &self.events) {
            Ok((table, _)) => {
                tracing::info!(message = "Rebuilt metadata.", table = %name, from, events = table.events(), addresses = table.addresses(), networks = table.networks(), owners = table.owners());
                let cutoff = table.cutoff();
                super::file::install(table, shared, metrics);
                compact(&mut self.events, cutoff);
                true
            }
            Err(error) => {
                metrics.count("metadata_reload_failures_total", 1);
                tracing::error!(message = "Cannot build the table; keeping the previous one.", table = %name, from, %error);
                false
            }
        }
    }
}

/// Drops events no lookup inside the retention window needs: per target, everything
/// before its latest event at or before `cutoff`.
fn compact(events: &mut Vec<Event>, cutoff: u64) {
    if cutoff == 0 {
        return;
    }
    let mut keep_from: HashMap<Target, (u64, usize)> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        if event.ts <= cutoff {
            let entry = keep_from
                .entry(event.target.clone())
                .or_insert((event.ts, i));
            if event.ts >= entry.0 {
                *entry = (event.ts, i);
            }
        }
    }
    let mut i = 0;
    events.retain(|event| {
        let index = i;
        i += 1;
        match keep_from.get(&event.target) {
            Some(&(_, at)) => event.ts > cutoff || index == at,
            None => true,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_what_the_window_needs() {
        let line = |ts: u64, ip: &str, app: &str| {
            Event::parse(&format!(
                r#"{{"ts": {ts}, "op": "assign", "ip": "{ip}", "attrs": {{"app": "{app}"}}}}"#
            ))
            .unwrap()
        };
        let mut events = vec![
            line(100, "10.0.0.1", "a"),
            line(200, "10.0.0.1", "b"),
            line(200, "10.0.0.1", "c"),
            line(400, "10.0.0.1", "d"),
            line(150, "10.0.0.2", "e"),
            line(50, "10.0.0.2", "f"),
        ];
        let before = super::super::load_with(&TableSpec::default(), &events)
            .unwrap()
            .0;
        compact(&mut events, 300);
        let kept: Vec<u64> = events.iter().map(|e| e.ts).collect();
        assert_eq!(kept, vec![200, 400, 150]);
        let after = super::super::load_with(&TableSpec::default(), &events)
            .unwrap()
            .0;
        for ip in ["10.0.0.1", "10.0.0.2"] {
            for t in [300, 350, 400, 500] {
                let app = |table: &super::super::Table| table.attr_at(ip, t, "app");
                assert_eq!(app(&before), app(&after), "{ip} at {t}");
            }
        }
    }
}
