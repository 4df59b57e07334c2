//! The conformance corpus (`tests/conformance/peer-cases.jsonl`): 109 real flow-log
//! lines from other projects' parser tests and AWS's documentation, each with what this
//! project's contract says it becomes. Every line goes through `flowenrich enrich`, the
//! lines of one format in one run (an S3 header case in a run of its own, since a header
//! is only a header at the start of a stream).

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

fn cases() -> Vec<Value> {
    let path = crate::repo().join("tests/conformance/peer-cases.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_line_of_the_peer_corpus_parses_as_the_contract_says() {
    let cases = cases();
    assert_eq!(cases.len(), 109);
    // Runs: by format, and each header case alone.
    let mut runs: BTreeMap<(Option<String>, usize), Vec<&Value>> = BTreeMap::new();
    for (at, case) in cases.iter().enumerate() {
        let format = case["format"].as_str().map(str::to_string);
        let alone = if case["header"] == true { at + 1 } else { 0 };
        runs.entry((format, alone)).or_default().push(case);
    }
    let (mut passed, mut failures) = (0, Vec::new());
    for ((format, _), cases) in runs {
        let mut args = Vec::new();
        if let Some(format) = &format {
            args.extend(["--format", format.as_str()]);
        }
        let input: String = cases
            .iter()
            .map(|c| format!("{}\n", c["line"].as_str().unwrap()))
            .collect();
        let (code, stdout, stderr) = crate::cli::enrich(&args, &input);
        if code != 0 {
            // The format itself is refused: only right for the case whose format names a
            // field nobody documents (a configuration error, contract 2).
            for case in &cases {
                if case["name"] == "panther-v3-unknown-header-field" {
                    assert!(
                        stderr.contains("unknown-header-should-not-break"),
                        "{stderr}"
                    );
                    passed += 1;
                } else {
                    failures.push(format!("{}: enrich exited {code}: {stderr}", case["name"]));
                }
            }
            continue;
        }
        let rejected: HashSet<String> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| e["line"].as_str().map(|l| l.trim().to_string()))
            .collect();
        let mut records = stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap());
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let line = case["line"].as_str().unwrap().trim();
            let header = case["header"] == true;
            // Decided conflicts: a JSON envelope and an extra token are bad lines.
            let must_fail = case["error"] == true || case["contract_conflict"] == true;
            if header {
                // A header makes no record and is not an error.
                if rejected.contains(line) {
                    failures.push(format!("{name}: the header was rejected"));
                } else {
                    passed += 1;
                }
                continue;
            }
            if rejected.contains(line) {
                if must_fail {
                    passed += 1;
                } else {
                    failures.push(format!("{name}: rejected: {stderr}"));
                }
                continue;
            }
            let Some(record) = records.next() else {
                failures.push(format!("{name}: no record"));
                continue;
            };
            if must_fail {
                failures.push(format!("{name}: a record came out: {record}"));
                continue;
            }
            let wrong: Vec<String> = case["expect"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(key, want)| record[key.replace('-', "_")] != **want)
                .map(|(key, want)| {
                    let key = key.replace('-', "_");
                    format!("{key} = {}, want {want}", record[&key])
                })
                .collect();
            if wrong.is_empty() {
                passed += 1;
            } else {
                failures.push(format!("{name}: {}", wrong.join(", ")));
            }
        }
        if let Some(extra) = records.next() {
            failures.push(format!("an extra record: {extra}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} passed, {} failed:\n{}",
        passed,
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(passed, 109);
}
