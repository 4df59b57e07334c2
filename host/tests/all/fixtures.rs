//! Every case folder in tests/fixtures runs through the real wasm component.

use flowenrich::fixtures;
use flowenrich::runtime::{Runtime, RuntimeOptions, WorkerLimits};

fn worker() -> (Runtime, flowenrich::runtime::Worker) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let component = runtime.load(flowenrich::embedded::COMPONENT).unwrap();
    let worker = runtime
        .worker(&component, &WorkerLimits::default())
        .unwrap();
    (runtime, worker)
}

#[test]
fn every_fixture_case_passes_through_the_real_component() {
    let (_runtime, mut worker) = worker();
    let cases = fixtures::cases(&crate::repo().join("tests/fixtures")).unwrap();
    assert!(cases.len() >= 15, "fixture folders went missing: {cases:?}");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            fixtures::run_case(case, &mut worker)
                .err()
                .map(|e| format!("{}: {e}", case.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_wrong_expectation_is_caught() {
    let (_runtime, mut worker) = worker();
    let dir = tempfile::tempdir().unwrap();
    let source = crate::repo().join("tests/fixtures/owner_change");
    for name in ["input.log", "metadata.jsonl", "expected.jsonl"] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    fixtures::run_case(dir.path(), &mut worker).expect("the copy passes as it is");

    let expected = std::fs::read_to_string(dir.path().join("expected.jsonl")).unwrap();
    std::fs::write(
        dir.path().join("expected.jsonl"),
        expected.replacen("\"batch\"", "\"api\"", 1),
    )
    .unwrap();
    let error = fixtures::run_case(dir.path(), &mut worker)
        .unwrap_err()
        .to_string();
    assert!(error.contains("row 7"), "{error}");

    std::fs::write(dir.path().join("expected.jsonl"), expected).unwrap();
    std::fs::write(
        dir.path().join("errors.jsonl"),
        "{\"line\": \"x\", \"error\": \"y\"}\n",
    )
    .unwrap();
    let error = fixtures::run_case(dir.path(), &mut worker)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("expected 1 rejected lines, got 0"),
        "{error}"
    );
}

#[test]
fn a_batch_is_attributed_against_one_table_and_bad_lines_do_not_fail_it() {
    use flowenrich::metadata::{Event, TableBuilder};
    use std::sync::Arc;
    let (_runtime, mut worker) = worker();
    let mut builder = TableBuilder::new();
    builder.apply(
        &Event::parse(r#"{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}}"#)
            .unwrap(),
    );
    let table = Arc::new(builder.build());
    let mut text = String::new();
    for i in 0..5000 {
        if i % 1000 == 999 {
            text.push_str("not a flow\n");
        } else {
            text.push_str(&format!(
                "2 1 eni 10.0.0.1 10.0.1.{} 1 2 6 1 {i} 100 160 ACCEPT OK\n",
                i % 250
            ));
        }
    }
    let result = worker.process(None, &text, true, &table).unwrap();
    assert_eq!(result.emitted, 4995);
    assert_eq!(
        result.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        vec![999, 1999, 2999, 3999, 4999]
    );
    for (i, line) in result.output.lines().enumerate() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["src_app"], "a");
        assert_eq!(row["dst_app"], serde_json::Value::Null);
        let original = i + i / 999;
        assert_eq!(row["bytes"], original as u64, "output keeps input order");
    }
}
