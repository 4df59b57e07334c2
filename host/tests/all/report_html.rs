//! The HTML report in a real browser: the bundled sample through the pipeline into a
//! `report` sink's page and a `druid` sink's rollup files, `flowenrich report DIR --html`
//! on those, and the page opened in headless Chromium (Debian's, driven by npm
//! `playwright-core`; both installed by `scripts/test`), which reports what it drew.

use crate::{bin, repo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Applications drawn as nodes of their own in the test (the sample has more).
const LIMIT: usize = 8;

/// Bytes, packets and flows.
type Sums = [u64; 3];

/// Runs `tests/browser/report.cjs` on `page` with `args`; what the page drew.
pub fn browse(page: &Path, args: &[&str]) -> Value {
    let npm = flowenrich_test_support::kinesis_local::npm_dir();
    let playwright = npm.join("node_modules/playwright-core");
    assert!(
        playwright.exists() && Path::new("/usr/bin/chromium").exists(),
        "playwright-core (npm, in {}) and Debian's chromium are needed: scripts/test installs them",
        npm.display()
    );
    let out = std::process::Command::new("node")
        .arg(repo().join("tests/browser/report.cjs"))
        .arg(page)
        .args(args)
        .env("PLAYWRIGHT_CORE", &playwright)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The data a page embeds.
fn page_data(page: &Path) -> Value {
    let text = std::fs::read_to_string(page).unwrap();
    let start = text
        .find(r#"<script id="data" type="application/json">"#)
        .unwrap();
    let rest = &text[start..];
    let json = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
    serde_json::from_str(json).unwrap()
}

/// Per application pair, the sums of the rollup rows (the tail past `limit - 1`
/// applications by bytes sent and received merged into `(other)`), where `keep` says
/// which rows count.
fn expected_pairs(
    rows: &[Value],
    limit: usize,
    keep: &dyn Fn(&Value) -> bool,
) -> BTreeMap<(String, String), Sums> {
    let app = |row: &Value, key: &str| row[key].as_str().unwrap_or("(unattributed)").to_string();
    let mut volume: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        let (s, d, bytes) = (
            app(row, "src_app"),
            app(row, "dst_app"),
            row["bytes"].as_u64().unwrap(),
        );
        *volume.entry(s.clone()).or_default() += bytes;
        if d != s {
            *volume.entry(d).or_default() += bytes;
        }
    }
    let mut ranked: Vec<(String, u64)> = volume.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let named: BTreeSet<String> = if ranked.len() > limit {
        ranked
            .iter()
            .take(limit - 1)
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        ranked.iter().map(|(n, _)| n.clone()).collect()
    };
    let node = |name: String| {
        if named.contains(&name) {
            name
        } else {
            "(other)".to_string()
        }
    };
    let mut pairs = BTreeMap::new();
    for row in rows.iter().filter(|r| keep(r)) {
        let key = (node(app(row, "src_app")), node(app(row, "dst_app")));
        let sums: &mut Sums = pairs.entry(key).or_default();
        for (i, name) in ["bytes", "packets", "flows"].iter().enumerate() {
            sums[i] += row[*name].as_u64().unwrap();
        }
    }
    pairs
}

/// The series the per-minute chart draws, in order: each pair with its bytes.
fn drawn_lines(drawing: &Value) -> Vec<((String, String), u64)> {
    drawing["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let name = |k: &str| l[k].as_str().unwrap().to_string();
            ((name("src"), name("dst")), l["bytes"].as_u64().unwrap())
        })
        .collect()
}

/// The edges a drawing shows, by pair, with their stroke widths.
fn drawn_edges(drawing: &Value) -> BTreeMap<(String, String), (f64, u64)> {
    let mut edges = BTreeMap::new();
    for edge in drawing["edges"].as_array().unwrap() {
        let key = (
            edge["src"].as_str().unwrap().to_string(),
            edge["dst"].as_str().unwrap().to_string(),
        );
        let previous = edges.insert(
            key.clone(),
            (
                edge["width"].as_f64().unwrap(),
                edge["bytes"].as_u64().unwrap(),
            ),
        );
        assert!(previous.is_none(), "one edge per pair: {key:?} drawn twice");
    }
    edges
}

/// "a → b\n1,234 bytes, 5 packets, 6 flows[...]" → ((a, b), [1234, 5, 6]).
fn parse_hover(text: &str) -> ((String, String), Sums) {
    let mut lines = text.lines();
    let (src, dst) = lines.next().unwrap().split_once(" → ").unwrap();
    let numbers: Vec<u64> = lines
        .next()
        .unwrap()
        .split(", ")
        .map(|part| {
            part.split(' ')
                .next()
                .unwrap()
                .replace(',', "")
                .parse()
                .unwrap()
        })
        .collect();
    (
        (src.to_string(), dst.to_string()),
        [numbers[0], numbers[1], numbers[2]],
    )
}

#[test]
fn the_report_page_draws_the_rollup_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("pipelines/data");
    let pipeline = format!(
        r#"
[metadata.apps]
type = "file"
path = "{apps}"
retention_secs = 0

[sources.flows]
type = "file"
path = "{flows}"

[transforms.enrich]
type = "wasm"
inputs = ["flows"]
metadata = "apps"

[sinks.page]
type = "report"
inputs = ["enrich", "enrich.dead_letter"]
format = "html"
path = "sink.html"
limit = {LIMIT}

[sinks.druid]
type = "druid"
inputs = ["enrich"]
path = "druid"
"#,
        apps = data.join("apps.jsonl").display(),
        flows = data.join("flows").display(),
    );
    std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
    let run = bin()
        .arg("run")
        .arg(dir.path().join("p.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("HTML report: "),
        "the run names its page: {stdout}"
    );
    let page = dir.path().join("rollup.html");
    let out = bin()
        .args(["report", "--limit", &LIMIT.to_string(), "--html"])
        .arg(&page)
        .arg(dir.path().join("druid"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same page from the sink and from the rollup files (what Druid would hold).
    let (from_sink, from_rollup) = (page_data(&dir.path().join("sink.html")), page_data(&page));
    for key in ["nodes", "links", "regions", "minutes"] {
        assert_eq!(from_sink[key], from_rollup[key], "{key} differ");
    }
    let rows: Vec<Value> = std::fs::read_dir(dir.path().join("druid"))
        .unwrap()
        .flat_map(|e| crate::read_ndjson(&e.unwrap().path()))
        .collect();
    let apps: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| [r["src_app"].as_str(), r["dst_app"].as_str()])
        .map(|a| a.unwrap_or("(unattributed)"))
        .collect();
    assert!(
        apps.len() > LIMIT,
        "the sample has {} applications",
        apps.len()
    );
    let expected = expected_pairs(&rows, LIMIT, &|_| true);
    // A region that only some pairs touch, and an application.
    let region = rows
        .iter()
        .filter_map(|r| r["dst_region"].as_str())
        .find(|r| *r != "us-east-1")
        .expect("a second region")
        .to_string();
    let app = expected.keys().next().unwrap().0.clone();
    let screenshot = dir.path().join("report.png");
    let drawn = browse(
        &page,
        &[
            "--screenshot",
            screenshot.to_str().unwrap(),
            "--filter",
            &format!("region={region}"),
            "--filter",
            &format!("app={app}"),
        ],
    );
    assert_eq!(drawn["errors"], serde_json::json!([]), "no console errors");
    assert_eq!(
        drawn["requests"],
        serde_json::json!([]),
        "no request leaves the page"
    );
    let initial = &drawn["initial"];
    // One visible node per application up to the limit, the rest as one "(other)".
    let nodes = initial["nodes"].as_array().unwrap();
    let names: BTreeSet<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), nodes.len(), "one node per application");
    assert_eq!(nodes.len(), LIMIT, "{names:?}");
    assert!(names.contains("(other)"));
    for n in nodes {
        let b = &n["box"];
        assert!(
            b["width"].as_f64().unwrap() >= 3.0 && b["x"].as_f64().unwrap() >= 0.0,
            "visible: {n}"
        );
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let (dx, dy) = (
                a["cx"].as_f64().unwrap() - b["cx"].as_f64().unwrap(),
                a["cy"].as_f64().unwrap() - b["cy"].as_f64().unwrap(),
            );
            let gap =
                (dx * dx + dy * dy).sqrt() - a["r"].as_f64().unwrap() - b["r"].as_f64().unwrap();
            assert!(gap > 0.0, "{} and {} overlap", a["name"], b["name"]);
        }
    }
    // One edge per pair present, widths ordered as the pairs' bytes.
    let edges = drawn_edges(initial);
    assert_eq!(
        edges.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "one edge per pair"
    );
    for (pair, (width, bytes)) in &edges {
        assert_eq!(*bytes, expected[pair][0], "{pair:?}");
        for (other, (w, b)) in &edges {
            if bytes > b {
                assert!(
                    width > w,
                    "{pair:?} ({bytes} bytes) drawn no wider than {other:?} ({b})"
                );
            }
        }
    }
    // Hover values are the rollup's sums.
    let hovers = drawn["edgeHovers"].as_array().unwrap();
    assert!(!hovers.is_empty());
    let mut checked = 0;
    for hover in hovers {
        let text = hover["text"].as_str().expect("a tooltip shows on hover");
        let (pair, sums) = parse_hover(text);
        assert_eq!(sums, expected[&pair], "hover of {pair:?}: {text}");
        checked += 1;
    }
    // A node's: what it sent and received (a pair with itself once).
    let mut node_sums: BTreeMap<&str, Sums> = BTreeMap::new();
    for ((s, d), sums) in &expected {
        for (name, counts) in [(s, true), (d, s != d)] {
            if counts {
                let into = node_sums.entry(name.as_str()).or_default();
                for i in 0..3 {
                    into[i] += sums[i];
                }
            }
        }
    }
    for hover in drawn["nodeHovers"].as_array().unwrap() {
        let name = hover["under"].as_str().expect("a node under the pointer");
        let text = hover["text"].as_str().expect("a tooltip shows on hover");
        let (_, sums) = parse_hover(&format!("x → y\n{}", text.lines().nth(1).unwrap()));
        assert_eq!(sums, node_sums[name], "hover of node {name}: {text}");
    }
    // Filters change what is drawn: exactly the pairs with a link touching the region,
    // then those of the application.
    let filtered = drawn["filtered"].as_array().unwrap();
    let by_region = expected_pairs(&rows, LIMIT, &|r| {
        r["src_region"].as_str() == Some(region.as_str())
            || r["dst_region"].as_str() == Some(region.as_str())
    });
    let region_edges = drawn_edges(&filtered[0]);
    assert_eq!(
        region_edges.keys().collect::<Vec<_>>(),
        by_region.keys().collect::<Vec<_>>()
    );
    assert!(
        region_edges.len() < edges.len(),
        "the region filter leaves some pairs out"
    );
    for (pair, (_, bytes)) in &region_edges {
        assert_eq!(*bytes, by_region[pair][0], "{pair:?} under {region}");
    }
    let app_edges = drawn_edges(&filtered[1]);
    assert!(!app_edges.is_empty() && app_edges.len() < edges.len());
    assert!(app_edges.keys().all(|(s, d)| *s == app || *d == app));
    // The per-minute chart follows the filters: the top 5 pairs of what a filter leaves,
    // each with its bytes there (under a region filter, the bytes within the region).
    let top5 = |pairs: &BTreeMap<(String, String), Sums>| {
        let mut bytes: Vec<u64> = pairs.values().map(|s| s[0]).filter(|b| *b > 0).collect();
        bytes.sort_unstable_by(|a, b| b.cmp(a));
        bytes.truncate(5);
        bytes
    };
    let region_lines = drawn_lines(&filtered[0]);
    for (pair, bytes) in &region_lines {
        assert_eq!(
            *bytes, by_region[pair][0],
            "{pair:?}'s series under {region}"
        );
    }
    assert_eq!(
        region_lines.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
        top5(&by_region),
        "the top pairs under {region}"
    );
    let by_app = expected_pairs(&rows, LIMIT, &|_| true)
        .into_iter()
        .filter(|((s, d), _)| *s == app || *d == app)
        .collect();
    let app_lines = drawn_lines(&filtered[1]);
    for (pair, bytes) in &app_lines {
        assert_eq!(*bytes, expected[pair][0], "{pair:?}'s series with {app}");
    }
    assert_eq!(
        app_lines.iter().map(|(_, b)| *b).collect::<Vec<_>>(),
        top5(&by_app),
        "the top pairs with {app}"
    );
    // The other views are drawn too.
    assert!(initial["bands"].as_u64().unwrap() >= expected.len() as u64 - 1);
    assert!(initial["series"].as_u64().unwrap() >= 1);
    assert!(!initial["regions"].as_array().unwrap().is_empty());
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 20_000,
        "a screenshot with something in it"
    );
    if std::env::var_os("FLOWENRICH_UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(&screenshot, repo().join("docs/report.png")).unwrap();
    }
    eprintln!(
        "report page: {} nodes, {} edges ({checked} hovers checked), first drawing {} ms, filters {} / {} ms",
        nodes.len(),
        edges.len(),
        drawn["firstDrawingMs"],
        filtered[0]["ms"],
        filtered[1]["ms"]
    );
}

#[test]
fn report_reads_rollup_files_as_text_and_refuses_a_directory_without_any() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("report").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rollup files"));
    std::fs::write(
        dir.path().join("flows-20231114T2213Z.ndjson"),
        concat!(
            r#"{"timestamp":1699999980000,"src_app":"api","dst_app":"db","src_region":"r1","dst_region":"r2","action":"REJECT","flows":3,"bytes":300,"packets":6}"#,
            "\n",
            r#"{"timestamp":1700000040000,"src_app":"api","dst_app":"db","src_region":"r1","dst_region":"r2","action":"ACCEPT","flows":2,"bytes":200,"packets":4}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = bin().arg("report").arg(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("flowenrich report: 5 flows, 500 bytes"),
        "{text}"
    );
    assert!(text.contains("api (r1) -> db (r2)"), "{text}");
    let rejected = text.split("Rejected flows").nth(1).unwrap();
    assert!(rejected.contains("300") && rejected.contains("3"), "{text}");
}

#[test]
fn the_per_minute_chart_shows_a_pairs_bytes_within_the_region_chosen() {
    // a → b sends in two regions; the chart under one of them shows only that one's bytes.
    let dir = tempfile::tempdir().unwrap();
    let row = |src: &str, dst: &str, region: &str, minute: u64, bytes: u64| {
        format!(
            r#"{{"timestamp":{},"src_app":"{src}","dst_app":"{dst}","src_region":"{region}","dst_region":"{region}","action":"ACCEPT","flows":1,"bytes":{bytes},"packets":1}}"#,
            (28_333_330 + minute) * 60_000
        )
    };
    let rows = [
        row("a", "b", "r1", 0, 1000),
        row("a", "b", "r1", 2, 500),
        row("a", "b", "r2", 1, 5000),
        row("c", "d", "r1", 1, 300),
        row("e", "f", "r2", 0, 9000),
    ];
    std::fs::write(
        dir.path().join("flows-20231114T2210Z.ndjson"),
        rows.join("\n") + "\n",
    )
    .unwrap();
    let page = dir.path().join("report.html");
    let out = bin()
        .args(["report", "--html"])
        .arg(&page)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn = browse(&page, &["--filter", "region=r1", "--filter", "region=r2"]);
    assert_eq!(drawn["errors"], serde_json::json!([]), "no console errors");
    let line = |s: &str, d: &str, bytes: u64| ((s.to_string(), d.to_string()), bytes);
    assert_eq!(
        drawn_lines(&drawn["initial"]),
        [
            line("e", "f", 9000),
            line("a", "b", 6500),
            line("c", "d", 300)
        ]
    );
    let filtered = drawn["filtered"].as_array().unwrap();
    assert_eq!(
        drawn_lines(&filtered[0]),
        [line("a", "b", 1500), line("c", "d", 300)]
    );
    assert_eq!(
        drawn_lines(&filtered[1]),
        [line("e", "f", 9000), line("a", "b", 5000)]
    );
}
