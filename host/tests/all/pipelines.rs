//! Whole pipelines through the binary: the embedded default, file layouts, shutdown.

use crate::{bin, repo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// An independent reading of DESIGN.md contract 3, written as plainly as possible.
struct Oracle {
    events: Vec<Value>,
}

impl Oracle {
    fn load(path: &std::path::Path) -> Oracle {
        let events = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        Oracle { events }
    }

    /// The `app` attribute of the owner of `ip` at `t`, if any.
    fn app(&self, ip: IpAddr, t: u64) -> Option<String> {
        // Rule 1: latest exact event at or before t (later lines win ties).
        let mut exact: Option<&Value> = None;
        for e in &self.events {
            if e["ip"].as_str().map(|s| s.parse::<IpAddr>().unwrap()) == Some(ip)
                && e["ts"].as_u64().unwrap() <= t
                && exact.is_none_or(|x| x["ts"].as_u64() <= e["ts"].as_u64())
            {
                exact = Some(e);
            }
        }
        if let Some(e) = exact
            && e["op"] == "assign"
        {
            return e["attrs"]["app"].as_str().map(String::from);
        }
        // Rule 2: most specific CIDR whose latest event at or before t is an assign.
        let mut per_cidr: BTreeMap<String, &Value> = BTreeMap::new();
        for e in &self.events {
            let Some(cidr) = e["cidr"].as_str() else {
                continue;
            };
            let net: ipnet::IpNet = cidr.parse().unwrap();
            if net.contains(&ip) && e["ts"].as_u64().unwrap() <= t {
                let entry = per_cidr.entry(cidr.to_string()).or_insert(e);
                if entry["ts"].as_u64() <= e["ts"].as_u64() {
                    *entry = e;
                }
            }
        }
        per_cidr
            .iter()
            .filter(|(_, e)| e["op"] == "assign")
            .max_by_key(|(cidr, _)| cidr.parse::<ipnet::IpNet>().unwrap().prefix_len())
            .and_then(|(_, e)| e["attrs"]["app"].as_str().map(String::from))
    }
}

fn count_lines(dir: &std::path::Path) -> usize {
    let mut total = 0;
    for path in flowenrich::sources::file::expand(dir.to_str().unwrap()).unwrap() {
        total += flowenrich::sources::file::open_text(&path)
            .unwrap()
            .lines()
            .count();
    }
    total
}

#[test]
fn the_embedded_default_accounts_for_every_line_and_misattributes_nothing() {
    let out = bin()
        .args(["run", "pipelines/local.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for heading in [
        "Top application pairs by bytes",
        "Cross-region bytes by application pair",
        "Cross-AZ bytes",
        "Rejected flows",
    ] {
        assert!(stdout.contains(heading), "report lacks {heading}: {stdout}");
    }

    let data = repo().join("pipelines/data");
    let files = flowenrich::sources::file::expand(data.join("flows").to_str().unwrap()).unwrap();
    let input_lines = count_lines(&data.join("flows"));
    let enriched = std::fs::read_to_string(repo().join("out/local/enriched.ndjson")).unwrap();
    let dead = std::fs::read_to_string(repo().join("out/local/dead_letters.ndjson")).unwrap();
    let (enriched, dead) = (enriched.lines().count(), dead.lines().count());
    assert!(dead > 0, "the sample data holds malformed lines");
    assert_eq!(
        enriched + dead + files.len(),
        input_lines,
        "every line is enriched, dead-lettered or a header"
    );
    assert!(stdout.contains(&format!("{enriched} flows")), "{stdout}");

    let oracle = Oracle::load(&data.join("apps.jsonl"));
    let mut attributed = 0;
    for line in std::fs::read_to_string(repo().join("out/local/enriched.ndjson"))
        .unwrap()
        .lines()
    {
        let row: Value = serde_json::from_str(line).unwrap();
        let Some(t) = row["start"].as_u64() else {
            continue;
        };
        for side in ["src", "dst"] {
            let addr = &row[format!("{side}addr")];
            let Some(addr) = addr.as_str() else { continue };
            let want = oracle.app(addr.parse().unwrap(), t);
            let got = row[format!("{side}_app")].as_str().map(String::from);
            assert_eq!(got, want, "{side} of {line}");
            attributed += usize::from(got.is_some());
        }
    }
    assert!(
        attributed > 5000,
        "sample data is mostly attributable ({attributed})"
    );
}

#[test]
fn file_source_reads_globs_gzip_and_keeps_each_files_header_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(flows.join("nested")).unwrap();
    // a.log.gz: custom header. b.log: no header, default format. c.txt: not matched.
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(flows.join("a.log.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(b"start srcaddr dstaddr bytes\n1700000100 10.0.0.1 10.0.0.2 5\n")
        .unwrap();
    gz.finish().unwrap();
    std::fs::write(
        flows.join("nested/b.log"),
        "2 1 eni 10.0.0.1 10.0.0.2 1 2 6 1 6 1700000100 1700000160 ACCEPT OK\r\nbad\n",
    )
    .unwrap();
    std::fs::write(flows.join("c.txt"), "ignored\n").unwrap();
    let (_, rows, dead) = crate::run_to_files(
        dir.path(),
        "type = \"file\"\npath = \"flows/**/*.log*\"\nbatch_lines = 1",
        "",
    );
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        serde_json::json!({"start": 1700000100, "srcaddr": "10.0.0.1", "dstaddr": "10.0.0.2", "bytes": 5})
    );
    assert_eq!(
        rows[1]["version"], 2,
        "b.log is parsed with the default format, not a.log's header"
    );
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert_eq!(dead["line"], "bad");
    assert_eq!(dead["component"], "t");
    assert!(dead["stream"].as_str().unwrap().ends_with("nested/b.log"));
    assert!(dead["error"].as_str().unwrap().contains("field count"));
}

#[test]
fn sigterm_drains_in_flight_lines_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        r#"
[sources.in]
type = "stdin"

[transforms.enrich]
type = "wasm"
inputs = ["in"]

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "out.ndjson"
"#,
    )
    .unwrap();
    let mut child = bin()
        .arg("run")
        .arg(&pipeline)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..250 {
        writeln!(
            stdin,
            "2 1 eni 10.0.0.1 10.0.0.2 1 2 6 1 {i} 1700000100 1700000160 ACCEPT OK"
        )
        .unwrap();
    }
    stdin.flush().unwrap();
    // Keep stdin open: the source would run forever without the signal.
    let out = dir.path().join("out.ndjson");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&out)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 250
    {
        assert!(Instant::now() < deadline, "lines never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::signal(&child, "TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(stdin);
    let text = std::fs::read_to_string(&out).unwrap();
    let bytes: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["bytes"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(bytes, (0..250).collect::<Vec<_>>());
}

#[test]
fn a_truncated_gzip_file_keeps_every_complete_line_and_dead_letters_the_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..2000 {
        writeln!(
            gz,
            "2 1 eni-{i:06} 10.0.0.1 10.0.0.2 1 2 6 1 {i} 1700000100 1700000160 ACCEPT OK"
        )
        .unwrap();
    }
    let bytes = gz.finish().unwrap();
    std::fs::write(dir.path().join("cut.log.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let (out, good, dead) =
        crate::run_to_files(dir.path(), "type = \"file\"\npath = \"cut.log.gz\"", "");
    assert!(
        good.len() > 100,
        "the readable part comes out ({} rows)",
        good.len()
    );
    for (i, row) in good.iter().enumerate() {
        assert_eq!(row["bytes"], i as u64, "in order, none skipped");
    }
    assert!(
        dead.len() <= 1,
        "at most the cut line is dead-lettered: {dead:?}"
    );
    assert!(good.len() < 2000, "the file was cut");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let source_line = crate::summary(&stderr, "in");
    assert!(
        source_line.contains("errors 1 "),
        "the read error is counted: {stderr}"
    );
}

/// Four workers on small batches of one big file and of files with their own S3
/// headers: every record comes out once, in input order, each file parsed with its own
/// header, bad lines dead-lettered in order.
#[test]
fn workers_keep_every_streams_order_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let mut big = String::new();
    for i in 0..20_000 {
        if i % 997 == 0 {
            big.push_str(&format!("bad {i}\n"));
        } else {
            big.push_str(&format!(
                "2 1 eni 10.0.0.1 10.0.0.2 1 2 6 1 {i} 1700000100 1700000160 ACCEPT OK\n"
            ));
        }
    }
    std::fs::write(flows.join("a-big.log"), big).unwrap();
    for (name, header) in [("b-h1.log", "bytes start"), ("c-h2.log", "start bytes")] {
        let mut text = format!("{header}\n");
        for i in 0..500 {
            let line = if header.starts_with("bytes") {
                format!("{i} 1700000100\n")
            } else {
                format!("1700000100 {i}\n")
            };
            text.push_str(&line);
        }
        std::fs::write(flows.join(name), text).unwrap();
    }
    let (_, rows, dead) = crate::run_to_files(
        dir.path(),
        "type = \"file\"\npath = \"flows/*.log\"\nbatch_lines = 7",
        "workers = 4",
    );
    let bytes: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
    let big: Vec<u64> = (0..20_000).filter(|i| i % 997 != 0).collect();
    let small: Vec<u64> = (0..500).collect();
    let mut want = big.clone();
    want.extend(&small);
    want.extend(&small);
    assert_eq!(bytes.len(), want.len());
    assert!(bytes == want, "records out of order");
    assert!(
        rows[big.len()..]
            .iter()
            .all(|r| r["start"] == 1700000100 && r.get("version").is_none()),
        "each file keeps its own header"
    );
    let dead: Vec<&str> = dead.iter().map(|d| d["line"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..20_000)
        .filter(|i| i % 997 == 0)
        .map(|i| format!("bad {i}"))
        .collect();
    assert_eq!(dead, want);
}
