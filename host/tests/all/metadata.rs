//! Metadata at scale: a churn scenario checked against ground truth computed here, AWS
//! ranges and internet classification, and tables re-read while a pipeline runs.

use crate::{counter, read_ndjson, rows_after, run_to_files, start_run, summary};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One change event, as the test itself understands it.
#[derive(Clone)]
struct Change {
    ts: u64,
    /// Network and prefix length (32 for an exact address).
    net: u32,
    len: u32,
    /// `None` for an unassign.
    app: Option<String>,
    exact: bool,
}

impl Change {
    fn json(&self) -> String {
        let target = if self.exact {
            format!(r#""ip": "{}""#, Ipv4Addr::from(self.net))
        } else {
            format!(r#""cidr": "{}/{}""#, Ipv4Addr::from(self.net), self.len)
        };
        match &self.app {
            Some(app) => format!(
                r#"{{"ts": {}, "op": "assign", {target}, "attrs": {{"app": "{app}"}}}}"#,
                self.ts
            ),
            None => format!(r#"{{"ts": {}, "op": "unassign", {target}}}"#, self.ts),
        }
    }

    fn covers(&self, addr: u32) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        };
        addr & mask == self.net
    }
}

/// Contract 3, the slow and obvious way: the latest exact event at or before `t` if it
/// assigns, else the most specific network whose latest event at or before `t` assigns.
fn truth(changes: &[Change], addr: u32, t: u64) -> Option<String> {
    let latest = |exact: bool, net: u32, len: u32| {
        changes
            .iter()
            .filter(|c| c.exact == exact && c.net == net && c.len == len && c.ts <= t)
            .max_by_key(|c| c.ts)
    };
    if let Some(Change { app: Some(app), .. }) = latest(true, addr, 32) {
        return Some(app.clone());
    }
    let mut best: Option<(u32, String)> = None;
    for c in changes.iter().filter(|c| !c.exact && c.covers(addr)) {
        if let Some(Change { app: Some(app), .. }) = latest(false, c.net, c.len)
            && best.as_ref().is_none_or(|(len, _)| c.len > *len)
        {
            best = Some((c.len, app.clone()));
        }
    }
    best.map(|(_, app)| app)
}

const T0: u64 = 1_700_000_000;
/// The scenario spans two hours of changes.
const SPAN: u64 = 7200;

/// 200 hosts reassigned every 2–10 minutes with unassigned gaps, /24 and /16 fallbacks
/// that change too; timestamps are unique per target so read order never matters.
fn churn(rng: &mut Rng) -> Vec<Change> {
    let mut changes = Vec::new();
    for host in 0..200u32 {
        let addr = u32::from(Ipv4Addr::new(
            10,
            1,
            (host / 50) as u8,
            (host % 50) as u8 + 1,
        ));
        let mut ts = T0 + rng.below(300);
        while ts < T0 + SPAN {
            let app = (rng.below(5) != 0).then(|| format!("app{}", rng.below(12)));
            changes.push(Change {
                ts,
                net: addr,
                len: 32,
                app,
                exact: true,
            });
            ts += 120 + rng.below(480);
        }
    }
    for subnet in 0..3u32 {
        let net = u32::from(Ipv4Addr::new(10, 1, subnet as u8, 0));
        for (k, ts) in [T0 + 600, T0 + 3000, T0 + 5400].into_iter().enumerate() {
            changes.push(Change {
                ts: ts + subnet as u64,
                net,
                len: 24,
                app: (k != 1).then(|| format!("subnet{subnet}-{k}")),
                exact: false,
            });
        }
    }
    changes.push(Change {
        ts: T0,
        net: u32::from(Ipv4Addr::new(10, 1, 0, 0)),
        len: 16,
        app: Some("vpc".into()),
        exact: false,
    });
    changes
}

#[test]
fn churn_scenario_has_no_misattributed_side_with_or_without_a_retention_window() {
    let mut rng = Rng(0x5eed);
    let mut changes = churn(&mut rng);
    // The file lists events out of time order: the table must not care.
    for i in (1..changes.len()).rev() {
        changes.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let newest = changes.iter().map(|c| c.ts).max().unwrap();
    // Flows up to 15 minutes late, shuffled: start times anywhere in the span, addresses
    // from the hosts, hosts that never had an owner, and outside the networks.
    let pick = |rng: &mut Rng| -> u32 {
        match rng.below(10) {
            0 => u32::from(Ipv4Addr::new(10, 1, 3, rng.below(250) as u8 + 1)),
            1 => u32::from(Ipv4Addr::new(10, 2, 0, rng.below(250) as u8 + 1)),
            _ => {
                let host = rng.below(200) as u32;
                u32::from(Ipv4Addr::new(
                    10,
                    1,
                    (host / 50) as u8,
                    (host % 50) as u8 + 1,
                ))
            }
        }
    };
    let flows: Vec<(u32, u32, u64)> = (0..3000)
        .map(|_| {
            let start = T0 + rng.below(SPAN + 900);
            (pick(&mut rng), pick(&mut rng), start)
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let events: String = changes.iter().map(|c| c.json() + "\n").collect();
    std::fs::write(dir.path().join("apps.jsonl"), events).unwrap();
    let lines: String = flows
        .iter()
        .map(|&(src, dst, start)| {
            format!(
                "2 123456789012 eni-1 {} {} 40000 443 6 1 100 {start} {} ACCEPT OK\n",
                Ipv4Addr::from(src),
                Ipv4Addr::from(dst),
                start + 60
            )
        })
        .collect();
    std::fs::write(dir.path().join("flows.log"), lines).unwrap();

    for retention in [0u64, 3600] {
        let cutoff = if retention == 0 {
            0
        } else {
            newest - retention
        };
        let (_, rows, dead) = run_to_files(
            dir.path(),
            r#"type = "file"
path = "flows.log""#,
            &format!(
                r#"metadata = "apps"

[metadata.apps]
type = "file"
path = "apps.jsonl"
retention_secs = {retention}"#
            ),
        );
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(rows.len(), flows.len());
        let (mut misattributed, mut attributed, mut expected_sides) = (0, 0, 0);
        for (row, &(src, dst, start)) in rows.iter().zip(&flows) {
            assert_eq!(row["start"], start);
            for (side, addr) in [("src_app", src), ("dst_app", dst)] {
                let want = if start < cutoff {
                    None
                } else {
                    truth(&changes, addr, start)
                };
                let got = row[side].as_str().map(str::to_string);
                if got.is_some() {
                    attributed += 1;
                }
                if want.is_some() {
                    expected_sides += 1;
                }
                if got.is_some() && got != truth(&changes, addr, start) {
                    misattributed += 1;
                }
                assert_eq!(got, want, "{side} of {row} (retention {retention})");
            }
        }
        assert_eq!(misattributed, 0);
        assert_eq!(attributed, expected_sides);
        assert!(
            attributed > 1000,
            "the scenario attributes most sides ({attributed})"
        );
    }
}

const RANGES: &str = r#"{"syncToken": "1", "createDate": "2023-11-14-00-00-00", "prefixes": [
  {"ip_prefix": "52.95.0.0/16", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
  {"ip_prefix": "52.95.0.0/16", "region": "us-east-1", "service": "S3", "network_border_group": "us-east-1"}
], "ipv6_prefixes": []}"#;

#[test]
fn aws_ranges_and_internet_classification_in_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ranges.json"), RANGES).unwrap();
    std::fs::write(
        dir.path().join("apps.jsonl"),
        r#"{"ts": 100, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "api", "region": "us-east-1"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("flows.log"),
        "2 1 eni-1 10.0.0.1 52.95.3.4 1 443 6 1 10 200 260 ACCEPT OK\n\
         2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 10 200 260 ACCEPT OK\n\
         2 1 eni-1 192.168.0.9 2a00:1450::1 1 443 6 1 10 200 260 ACCEPT OK\n",
    )
    .unwrap();
    let (_, rows, _) = run_to_files(
        dir.path(),
        "type = \"file\"\npath = \"flows.log\"",
        r#"metadata = "apps"

[metadata.apps]
type = "file"
path = "apps.jsonl"
aws_ip_ranges = "ranges.json""#,
    );
    assert_eq!(rows[0]["src_app"], "api");
    assert_eq!(rows[0]["dst_app"], "aws");
    assert_eq!(rows[0]["dst_service"], "S3");
    assert_eq!(rows[0]["dst_region"], "us-east-1");
    assert_eq!(rows[1]["dst_app"], "internet");
    assert_eq!(rows[1]["dst_service"], serde_json::Value::Null);
    assert_eq!(rows[2]["src_app"], serde_json::Value::Null, "private space");
    assert_eq!(rows[2]["dst_app"], "internet");
}

#[test]
fn changed_files_are_swapped_in_while_running_and_a_broken_one_keeps_the_previous_table() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.jsonl");
    let ranges = dir.path().join("ranges.json");
    std::fs::write(&ranges, RANGES).unwrap();
    std::fs::write(
        &apps,
        "{\"ts\": 100, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {\"app\": \"old\"}}\n",
    )
    .unwrap();
    let mut child = start_run(
        dir.path(),
        r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"
aws_ip_ranges = "ranges.json"
retention_secs = 0
reload_interval_ms = 50

[sources.in]
type = "stdin"

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
        |_| {},
    );
    let mut stdin = child.stdin.take().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut sent = 0;
    let mut send = |stdin: &mut std::process::ChildStdin| -> serde_json::Value {
        writeln!(
            stdin,
            "2 1 eni-1 10.0.0.1 52.95.3.4 1 443 6 1 10 200 260 ACCEPT OK"
        )
        .unwrap();
        stdin.flush().unwrap();
        sent += 1;
        rows_after(&out, sent).pop().unwrap()
    };
    let row = send(&mut stdin);
    assert_eq!(
        (row["src_app"].as_str(), row["dst_service"].as_str()),
        (Some("old"), Some("S3"))
    );

    // A late change for an earlier time arrives in the file: later batches see it.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&apps)
        .unwrap();
    writeln!(
        file,
        "{{\"ts\": 150, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {{\"app\": \"new\"}}}}"
    )
    .unwrap();
    drop(file);
    let deadline = Instant::now() + Duration::from_secs(30);
    while send(&mut stdin)["src_app"] != "new" {
        assert!(Instant::now() < deadline, "the change was never swapped in");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A broken ranges file and a vanished changelog: the previous table stays.
    // (Written aside and renamed, so the watcher never sees a half-written file.)
    let aside = dir.path().join("ranges.tmp");
    std::fs::write(&aside, "<html>not ip-ranges</html>").unwrap();
    std::fs::rename(&aside, &ranges).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&apps).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let row = send(&mut stdin);
        assert_eq!(
            (row["src_app"].as_str(), row["dst_service"].as_str()),
            (Some("new"), Some("S3")),
            "{row}"
        );
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary = summary(&stderr, "metadata.apps");
    assert!(counter(summary, "metadata_reloads_total") >= 1, "{summary}");
    // The first table is version 1 and every swap makes a new one; the last table's
    // size is reported.
    assert_eq!(
        counter(summary, "metadata_table_version"),
        1 + counter(summary, "metadata_reloads_total"),
        "{summary}"
    );
    assert!(counter(summary, "metadata_table_events") >= 1, "{summary}");
    assert_eq!(
        counter(summary, "metadata_reload_failures_total"),
        2,
        "{summary}"
    );
}

#[test]
fn holdback_waits_for_late_metadata_and_releases_the_rest_unattributed() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps.jsonl");
    std::fs::write(
        &apps,
        "{\"ts\": 100, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {\"app\": \"api\"}}\n",
    )
    .unwrap();
    let mut child = start_run(
        dir.path(),
        r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"
retention_secs = 0
reload_interval_ms = 50

[sources.in]
type = "stdin"

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"
holdback_secs = 3

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
        |_| {},
    );
    let mut stdin = child.stdin.take().unwrap();
    let out = dir.path().join("out.ndjson");
    // The stream starts with an S3-style header in the same batch as the held lines:
    // they must be parsed again with the format it set, not the default.
    let flow = |dst: &str, port: u32| format!("{port} 10.0.0.1 {dst} 200");
    // Fully attributed: goes straight through. Then two flows waiting on their
    // destination: one whose owner arrives late, one that never gets an owner.
    // No line can be held before it is written: the lower bound of the hold's start.
    let written_at = Instant::now();
    write!(
        stdin,
        "srcport srcaddr dstaddr start\n{}\n{}\n{}\n",
        flow("10.0.0.1", 1),
        flow("10.0.0.2", 2),
        flow("10.0.0.9", 3)
    )
    .unwrap();
    stdin.flush().unwrap();
    rows_after(&out, 1);
    // The batch that emitted row 1 held the other two.
    let held_at = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_ndjson(&out).len(), 1, "both are held");

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&apps)
        .unwrap();
    writeln!(
        file,
        "{{\"ts\": 150, \"op\": \"assign\", \"ip\": \"10.0.0.2\", \"attrs\": {{\"app\": \"db\"}}}}"
    )
    .unwrap();
    drop(file);
    let rows = rows_after(&out, 2);
    assert_eq!(rows[1]["srcport"], 2);
    assert_eq!(
        rows[1]["dst_app"], "db",
        "released attributed after the reload"
    );
    assert!(
        held_at.elapsed() < Duration::from_secs(3),
        "before the window ends"
    );

    let rows = rows_after(&out, 3);
    assert_eq!(rows[2]["srcport"], 3);
    assert_eq!(rows[2]["dst_app"], serde_json::Value::Null);
    assert!(
        written_at.elapsed() >= Duration::from_secs(3),
        "held for the whole window"
    );

    // A line still held at shutdown is released, not lost.
    writeln!(stdin, "{}", flow("10.0.0.8", 4)).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rows = read_ndjson(&out);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[3]["srcport"], 4);
    let summary = summary(&stderr, "t");
    for (name, want) in [
        ("holdback_held_total", 3),
        ("holdback_released_total", 3),
        ("attributed_sides_total", 6),
        ("unattributed_sides_total", 2),
    ] {
        assert_eq!(counter(summary, name), want, "{name} in {summary}");
    }
}

#[test]
fn a_full_holdback_releases_its_oldest_lines_unattributed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("apps.jsonl"),
        "{\"ts\": 100, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {\"app\": \"api\"}}\n",
    )
    .unwrap();
    let mut child = start_run(
        dir.path(),
        r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"
retention_secs = 0

[sources.in]
type = "stdin"
batch_lines = 1

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"
format = "srcport srcaddr dstaddr start"
holdback_secs = 600
holdback_max_lines = 3

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
        |_| {},
    );
    let mut stdin = child.stdin.take().unwrap();
    // Ten flows to an address nobody owns: each is held, and once more than three
    // are, the oldest go out unattributed long before their window ends.
    for port in 1..=10 {
        writeln!(stdin, "{port} 10.0.0.1 10.0.0.9 200").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let out = dir.path().join("out.ndjson");
    let rows = rows_after(&out, 7);
    let ports: Vec<u64> = rows
        .iter()
        .map(|r| r["srcport"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, (1..=7).collect::<Vec<u64>>(), "the oldest first");
    assert!(rows.iter().all(|r| r["dst_app"].is_null()));
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(read_ndjson(&out).len(), 10, "the rest at shutdown");
    assert_eq!(counter(summary(&stderr, "t"), "holdback_overflow_total"), 7);
}

#[test]
fn records_fields_name_the_local_owner_into_json_and_druid_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("apps.jsonl"),
        r#"{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "db", "region": "us-east-1"}}
"#,
    )
    .unwrap();
    let pipeline = r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"
retention_secs = 0
local_owner_fields = { app = "ecs_service_name", cluster = "ecs-cluster-name" }

[sources.in]
type = "stdin"

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"

[sinks.druid]
type = "druid"
inputs = ["t"]
path = "druid"
"#;
    let mut child = start_run(dir.path(), pipeline, |_| {});
    let mut stdin = child.stdin.take().unwrap();
    let t = 1_700_000_000;
    write!(
        stdin,
        "version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status flow-direction ecs-cluster-name ecs-service-name\n\
         5 eni-1 10.0.0.5 10.0.0.1 1000 5432 6 1 100 {t} {t} ACCEPT OK egress prod web\n\
         5 eni-1 10.0.0.1 10.0.0.5 5432 1000 6 1 200 {t} {t} ACCEPT OK ingress prod web\n\
         5 eni-1 10.0.0.5 10.0.0.1 1001 5432 6 1 400 {t} {t} ACCEPT OK egress - -\n"
    )
    .unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let rows = read_ndjson(&dir.path().join("out.ndjson"));
    let sides = |row: &serde_json::Value| {
        (
            row["src_app"].as_str().map(str::to_string),
            row["src_cluster"].as_str().map(str::to_string),
            row["dst_app"].as_str().map(str::to_string),
            row["dst_cluster"].as_str().map(str::to_string),
        )
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(sides(&rows[0]), (s("web"), s("prod"), s("db"), None));
    assert_eq!(sides(&rows[1]), (s("db"), None, s("web"), s("prod")));
    assert_eq!(sides(&rows[2]), (None, None, s("db"), None));
    // The named owner has exactly the configured attributes: no region of its own.
    assert!(rows[0]["src_region"].is_null() && rows[0]["dst_region"] == "us-east-1");
    assert_eq!(
        counter(summary(&stderr, "t"), "record_attributed_sides_total"),
        2
    );
    // The rollup resolves the named owners with the same table snapshot.
    let mut web_to_db = 0;
    for entry in std::fs::read_dir(dir.path().join("druid")).unwrap() {
        for row in read_ndjson(&entry.unwrap().path()) {
            if row["src_app"] == "web" && row["dst_app"] == "db" {
                web_to_db += row["bytes"].as_u64().unwrap();
            }
        }
    }
    assert_eq!(web_to_db, 100);
}
