//! The HTML report at scale: 2,000 applications and 50,000 pairs over four regions and
//! an hour, rendered as the page and opened in headless Chromium (Debian's, driven by
//! npm `playwright-core` through `tests/browser/report.cjs`, as the browser test does).
//! Prints, per `limit`, the file size, the time to first drawing and the time a filter
//! change takes to redraw.
//!
//! `cargo bench --bench report_page [-- --pairs N]` (needs what `scripts/test` installs)

mod support;

use flowenrich::sinks::report::{Report, ReportKeys, html};
use std::path::PathBuf;
use std::time::Instant;
use support::Rng;

const APPS: u64 = 2_000;
const PAIRS: usize = 50_000;
const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let wanted = support::option(&args, "--pairs").unwrap_or(PAIRS);
    let keys = ReportKeys::new("app", "region", "zone");
    let mut report = Report::default();
    let mut rng = Rng(0x7e9047);
    let mut pairs = std::collections::HashSet::new();
    let started = Instant::now();
    while pairs.len() < wanted {
        // Skewed: low-numbered applications talk the most.
        let s = rng.below(APPS).min(rng.below(APPS));
        let d = rng.below(APPS);
        if !pairs.insert((s, d)) {
            continue;
        }
        let region = |app: u64| REGIONS[(app % 4) as usize];
        let bytes = 1 + rng.below(1 << 30) / (1 + s);
        for minute in 0..1 + rng.below(3) {
            let row = format!(
                r#"{{"timestamp":{},"src_app":"app-{s:04}","dst_app":"app-{d:04}","src_region":"{}","dst_region":"{}","src_zone":"{}a","dst_zone":"{}b","action":"{}","bytes":{bytes},"packets":{},"flows":{}}}"#,
                (1_700_000_000 / 60 + rng.below(60) + minute) * 60_000,
                region(s),
                region(d),
                region(s),
                region(d),
                if rng.below(50) == 0 {
                    "REJECT"
                } else {
                    "ACCEPT"
                },
                bytes / 1000 + 1,
                1 + rng.below(20),
            );
            report.add(&row, &keys);
        }
    }
    eprintln!(
        "{wanted} pairs of {APPS} applications summed in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let npm = std::env::var_os("FLOWENRICH_NPM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/flowenrich/npm")
        });
    let dir = tempfile::tempdir().unwrap();
    println!(
        "{:>7} {:>7} {:>9} {:>11} {:>15} {:>17}",
        "limit", "nodes", "links", "page MB", "first drawing", "filter redraw"
    );
    for limit in [40, 200, 2_000] {
        let started = Instant::now();
        let page = html::render(&report, limit, 10, "bench");
        let render_ms = started.elapsed().as_secs_f64() * 1e3;
        let path = dir.path().join(format!("page-{limit}.html"));
        std::fs::write(&path, &page).unwrap();
        let out = std::process::Command::new("node")
            .arg(repo.join("tests/browser/report.cjs"))
            .arg(&path)
            .args(["--filter", "region=eu-west-1", "--filter", "app=app-0001"])
            .env("PLAYWRIGHT_CORE", npm.join("node_modules/playwright-core"))
            .output()
            .expect("node");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let drawn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(drawn["errors"], serde_json::json!([]));
        let links = page.matches("\"s\":").count();
        let filters: Vec<String> = drawn["filtered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{} ms", f["ms"]))
            .collect();
        println!(
            "{limit:>7} {:>7} {links:>9} {:>11.2} {:>12} ms {:>17}   (page rendered in {render_ms:.0} ms; in-page draw {} ms)",
            drawn["initial"]["nodes"].as_array().unwrap().len(),
            page.len() as f64 / 1e6,
            drawn["firstDrawingMs"],
            filters.join(" / "),
            drawn["initial"]["drawMs"],
        );
    }
}
