//! A component that traps, loops or hoards memory never takes the host down: the batch is
//! retried once on a fresh instance, then its lines are dead-lettered; later batches run.

use flowenrich::metadata::Table;
use flowenrich::runtime::{Runtime, RuntimeError, RuntimeOptions, Worker, WorkerLimits};
use std::sync::Arc;
use std::time::Duration;

const MISBEHAVING: &str = flowenrich_test_support::MISBEHAVING_COMPONENT;

fn worker(limits: WorkerLimits) -> (Runtime, Worker) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let component = runtime.load(&std::fs::read(MISBEHAVING).unwrap()).unwrap();
    let worker = runtime.worker(&component, &limits).unwrap();
    (runtime, worker)
}

fn process(worker: &mut Worker, text: &str) -> Result<String, RuntimeError> {
    let table = Arc::new(Table::default());
    match worker.process(None, text, false, &table) {
        Ok(processed) => Ok(processed.output),
        Err(flowenrich::runtime::CallError::Runtime(error)) => Err(error),
        Err(refused) => panic!("{refused}"),
    }
}

#[test]
fn a_trap_fails_only_its_batch_and_the_next_batch_runs_on_a_fresh_instance() {
    let (_runtime, mut worker) = worker(WorkerLimits::default());
    assert_eq!(process(&mut worker, "a\n").unwrap(), "{\"line\":\"a\"}\n");
    let error = process(&mut worker, "b\nTRAP\n").unwrap_err();
    assert!(matches!(error, RuntimeError::Trap(_)), "{error}");
    assert_eq!(process(&mut worker, "c\n").unwrap(), "{\"line\":\"c\"}\n");
}

#[test]
fn a_runaway_component_is_interrupted_by_the_epoch_deadline() {
    let (_runtime, mut worker) = worker(WorkerLimits {
        batch_timeout: Duration::from_millis(100),
        ..WorkerLimits::default()
    });
    let error = process(&mut worker, "LOOP\n").unwrap_err();
    assert!(
        format!("{error:?}").to_lowercase().contains("interrupt"),
        "{error:?}"
    );
    assert_eq!(
        process(&mut worker, "after\n").unwrap(),
        "{\"line\":\"after\"}\n"
    );
}

#[test]
fn unbounded_allocation_stops_at_the_memory_limit() {
    let (_runtime, mut worker) = worker(WorkerLimits {
        memory_limit_bytes: 32 << 20,
        ..WorkerLimits::default()
    });
    assert!(process(&mut worker, "GROW\n").is_err());
    assert_eq!(process(&mut worker, "ok\n").unwrap(), "{\"line\":\"ok\"}\n");
}

#[test]
fn a_pipeline_dead_letters_the_lines_of_a_failing_batch_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.log"),
        "one\ntwo\nthree TRAP\nfour\nfive\n",
    )
    .unwrap();
    let (_, good, dead) = crate::run_to_files(
        dir.path(),
        "type = \"file\"\npath = \"in.log\"\nbatch_lines = 2",
        &format!("component = \"{MISBEHAVING}\""),
    );
    let lines: Vec<&str> = good
        .iter()
        .map(|row| row["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["one", "two", "five"]);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["line"], "three TRAP");
    assert_eq!(dead[1]["line"], "four");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("component failed"),
        "{:?}",
        dead[0]
    );
}

#[test]
fn an_s3_header_naming_an_unknown_field_dead_letters_its_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    // Fourteen fields, one of them unknown: read with any other format, each line would
    // parse (as the default v2 fields), and wrongly.
    let mut bad = String::from(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action colour\n",
    );
    let line = |port: u32| {
        format!(
            "2 123456789012 eni-1 10.0.0.1 10.0.0.2 {port} 443 6 1 10 1700000000 1700000060 ACCEPT OK\n"
        )
    };
    for port in 0..7 {
        bad.push_str(&line(port));
    }
    std::fs::write(flows.join("a-bad.log"), bad).unwrap();
    std::fs::write(flows.join("b-good.log"), line(99)).unwrap();
    let (_, good, dead) = crate::run_to_files(
        dir.path(),
        "type = \"file\"\npath = \"flows\"\nbatch_lines = 3",
        "",
    );
    // The other file is read as usual.
    assert_eq!(good.len(), 1, "{good:?}");
    assert_eq!(good[0]["srcport"], 99);
    // The header and all seven lines, in three batches, go to the dead letters.
    assert_eq!(dead.len(), 8, "{dead:?}");
    for letter in &dead {
        let error = letter["error"].as_str().unwrap();
        assert!(
            error.contains("unknown flow-log field `colour`"),
            "{letter}"
        );
    }
}
