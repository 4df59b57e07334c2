//! Hot swap of a transform's component while a pipeline runs: a new file is compiled,
//! checked and swapped in between batches; broken ones are refused and the running one
//! carries on. Every line is accounted for exactly once across a swap.

use crate::kinesis::free_port;
use crate::{http, read_ndjson, repo, rows_after, signal, start_run};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const MISBEHAVING: &str = flowenrich_test_support::MISBEHAVING_COMPONENT;
const OLD_API: &str = flowenrich_test_support::OLD_API_COMPONENT;

/// Replaces `path` atomically (written aside, then renamed), as a deploy should.
fn replace(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The value of the series `name{component_id="t"...}` (summed over its labels), or 0.
fn metric(address: &str, name: &str, label: &str) -> i64 {
    metric_of(address, "t", name, label)
}

/// The value of `name{component_id="<component>"...}` with `label` in its labels, or 0.
fn metric_of(address: &str, component: &str, name: &str, label: &str) -> i64 {
    http(address, "GET", "/metrics")
        .lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{component_id=\"{component}\"")) && l.contains(label)
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum()
}

/// Waits until `metric(...) >= at_least`.
fn wait_metric(address: &str, name: &str, label: &str, at_least: i64) {
    wait_metric_of(address, "t", name, label, at_least)
}

/// Waits until `metric_of(...) >= at_least`.
fn wait_metric_of(address: &str, component: &str, name: &str, label: &str, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric_of(address, component, name, label) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name}{label} never reached {at_least}: {}",
            http(address, "GET", "/metrics")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn line(i: u64) -> String {
    format!("2 123456789012 eni-1 10.0.0.1 10.0.0.2 1 443 6 1 {i} 200 260 ACCEPT OK")
}

/// The key of an output row: `bytes` of an enriched row, or the number in the line the
/// misbehaving component echoes back.
fn key(row: &serde_json::Value) -> (u64, bool) {
    match row["bytes"].as_u64() {
        Some(bytes) => (bytes, true),
        None => {
            let echoed = row["line"].as_str().expect("an echoed line");
            (echoed.split(' ').nth(9).unwrap().parse().unwrap(), false)
        }
    }
}

fn pipeline(api: &str, extra: &str) -> String {
    format!(
        r#"
[api]
address = "{api}"

[sources.in]
type = "stdin"
batch_lines = 20

[transforms.t]
type = "wasm"
inputs = ["in"]
component = "c.wasm"
{extra}

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#
    )
}

#[test]
fn a_new_component_is_swapped_in_under_load_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("c.wasm");
    std::fs::write(&component, flowenrich::embedded::COMPONENT).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = start_run(
        dir.path(),
        &pipeline(&api, "reload_interval_ms = 50"),
        |_| {},
    );
    let mut stdin = child.stdin.take().unwrap();
    const LINES: u64 = 3000;
    // Continuous load from another thread: a line every ~0.5 ms, at least LINES of them
    // and 200 more after the swap is installed (so the load spans it however slowly this
    // machine compiles the new component). Returns how many lines it wrote.
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let swapped = swapped.clone();
        std::thread::spawn(move || {
            let (mut written, mut after_swap) = (0u64, 0u64);
            while written < LINES || after_swap < 200 {
                writeln!(stdin, "{}", line(written)).unwrap();
                written += 1;
                if swapped.load(std::sync::atomic::Ordering::SeqCst) {
                    after_swap += 1;
                }
                if written % 20 == 0 {
                    stdin.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            stdin.flush().unwrap();
            drop(stdin);
            written
        })
    };
    let out = dir.path().join("out.ndjson");
    rows_after(&out, 200);
    assert_eq!(
        metric(&api, "component_info", "name=\"flowenrich-plugin\""),
        1,
        "{}",
        http(&api, "GET", "/metrics")
    );
    // A broken file (a truncated component) is refused; the running one carries on.
    replace(&component, &flowenrich::embedded::COMPONENT[..1000]);
    wait_metric(
        &api,
        "component_errors_total",
        "component_compile_failed",
        1,
    );
    assert_eq!(metric(&api, "component_generation", ""), 1);
    let rows_before_swap = rows_after(&out, 800).len();
    // Another component that fits the world: swapped in between batches.
    replace(&component, &std::fs::read(MISBEHAVING).unwrap());
    wait_metric(&api, "component_generation", "", 2);
    swapped.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(metric(&api, "component_swaps_total", ""), 1);
    // The new generation's identity is on the endpoint too.
    assert_eq!(
        metric(
            &api,
            "component_info",
            "name=\"misbehaving\",version=\"0.0.0\",api_version=\"0.4.0\",generation=\"2\""
        ),
        1
    );
    let written = writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let rows = read_ndjson(&out);
    let keys: Vec<(u64, bool)> = rows.iter().map(key).collect();
    let mut seen: Vec<u64> = keys.iter().map(|k| k.0).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..written).collect::<Vec<u64>>(),
        "every line exactly once"
    );
    // The version change is visible in the output, and it happened at one point: every
    // line before it enriched by the real plugin, every line after it echoed.
    let first_echo = keys
        .iter()
        .position(|k| !k.1)
        .expect("the new component ran");
    assert!(
        first_echo >= rows_before_swap,
        "{first_echo} < {rows_before_swap}"
    );
    assert!(keys[..first_echo].iter().all(|k| k.1));
    assert!(keys[first_echo..].iter().all(|k| !k.1), "no switch back");
    assert!(stderr.contains("New component refused"), "{stderr}");
}

#[test]
fn reloads_on_request_only_and_a_component_must_pass_the_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("c.wasm");
    std::fs::write(&component, flowenrich::embedded::COMPONENT).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let fixtures = repo().join("tests/fixtures");
    let mut child = start_run(
        dir.path(),
        &pipeline(
            &api,
            &format!(
                "reload_interval_ms = 0\nfixtures = \"{}\"",
                fixtures.display()
            ),
        ),
        |_| {},
    );
    let mut stdin = child.stdin.take().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut sent = 0;
    let mut send = |stdin: &mut std::process::ChildStdin| {
        writeln!(stdin, "{}", line(sent)).unwrap();
        stdin.flush().unwrap();
        sent += 1;
        rows_after(&out, sent as usize).pop().unwrap()
    };
    assert!(send(&mut stdin)["bytes"].is_u64());

    // A correct component of the previous WIT version is refused by the type check.
    replace(&component, &std::fs::read(OLD_API).unwrap());
    assert!(http(&api, "POST", "/reload").contains("requested"));
    wait_metric(
        &api,
        "component_errors_total",
        "component_type_check_failed",
        1,
    );
    assert_eq!(metric(&api, "component_generation", ""), 1);
    assert!(send(&mut stdin)["bytes"].is_u64(), "still the real plugin");

    // Without polling, a new file waits for a request...
    replace(&component, &std::fs::read(MISBEHAVING).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(metric(&api, "component_generation", ""), 1);
    // ...and on `POST /reload` this one fails the fixtures, so it is refused.
    assert!(http(&api, "POST", "/reload").contains("requested"));
    wait_metric(
        &api,
        "component_errors_total",
        "component_fixtures_failed",
        1,
    );
    assert_eq!(metric(&api, "component_generation", ""), 1);
    assert!(send(&mut stdin)["bytes"].is_u64(), "still the real plugin");

    // A component that passes the fixtures is swapped in on SIGHUP.
    replace(&component, flowenrich::embedded::COMPONENT);
    signal(&child, "HUP");
    wait_metric(&api, "component_generation", "", 2);
    assert!(send(&mut stdin)["bytes"].is_u64());

    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("fixture"), "{stderr}");
}

#[test]
fn the_pipeline_file_is_reloaded_where_safe_and_other_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let assign = |ts: u64, app: &str| {
        format!(
            "{{\"ts\": {ts}, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {{\"app\": \"{app}\"}}}}\n"
        )
    };
    std::fs::write(dir.path().join("a.jsonl"), assign(0, "api")).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), assign(0, "db")).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let text = |table: &str, extra: &str, batch_lines: u32| {
        format!(
            r#"
[api]
address = "{api}"

[metadata.apps]
type = "file"
path = "{table}"
reload_interval_ms = 100

[sources.in]
type = "stdin"
batch_lines = {batch_lines}

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"
{extra}

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#
        )
    };
    let mut child = start_run(dir.path(), &text("a.jsonl", "", 1), |_| {});
    let pipeline = dir.path().join("p.toml");
    let mut stdin = child.stdin.take().unwrap();
    let out = dir.path().join("out.ndjson");
    let mut sent = 0;
    let mut send = |stdin: &mut std::process::ChildStdin, start: u64| {
        writeln!(
            stdin,
            "2 1 eni-1 10.0.0.1 10.0.0.2 1 443 6 1 {sent} {start} {} ACCEPT OK",
            start + 60
        )
        .unwrap();
        stdin.flush().unwrap();
        sent += 1;
        rows_after(&out, sent as usize).pop().unwrap()
    };
    assert_eq!(send(&mut stdin, 10)["src_app"], "api");

    // Live: the table's file and the transform's format (the same fields in AWS syntax).
    let aws_syntax = "format = \"${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} ${log-status}\"";
    replace(&pipeline, text("b.jsonl", aws_syntax, 1).as_bytes());
    signal(&child, "HUP");
    wait_metric_of(&api, "config", "config_reloads_total", "", 1);
    assert_eq!(
        send(&mut stdin, 10)["src_app"],
        "db",
        "the new file's table"
    );
    // The table's watcher follows the new file.
    std::fs::write(
        dir.path().join("b.jsonl"),
        assign(0, "db") + &assign(100, "web"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while send(&mut stdin, 200)["src_app"] != "web" {
        assert!(Instant::now() < deadline, "the new file was never re-read");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Refused: a source option needs a restart; a format the component rejects; a file
    // that does not parse. Each is counted and nothing changes.
    // Writes `contents` as the pipeline, asks for a reload (SIGHUP) and waits until the
    // config component has refused `refusals` times with `error_type`.
    let refused = |contents: &[u8], error_type: &str, refusals: i64| {
        replace(&pipeline, contents);
        signal(&child, "HUP");
        wait_metric_of(
            &api,
            "config",
            "component_errors_total",
            error_type,
            refusals,
        );
    };
    replace(&pipeline, text("b.jsonl", aws_syntax, 5).as_bytes());
    assert!(http(&api, "POST", "/reload").contains("requested"));
    wait_metric_of(
        &api,
        "config",
        "component_errors_total",
        "config_restart_needed",
        1,
    );
    // A memory limit above what the engine was sized for at start-up needs one too.
    refused(
        text("b.jsonl", "memory_limit_mib = 4096", 1).as_bytes(),
        "config_restart_needed",
        2,
    );
    refused(
        text("b.jsonl", "format = \"srcaddr colour\"", 1).as_bytes(),
        "config_invalid",
        1,
    );
    refused(b"[sources.in\n", "config_invalid", 2);
    assert_eq!(metric_of(&api, "config", "config_reloads_total", ""), 1);
    assert_eq!(
        send(&mut stdin, 200)["src_app"],
        "web",
        "still running as before"
    );

    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("restart needed to apply changes to: sources.in.batch_lines"),
        "{stderr}"
    );
    assert!(
        stderr.contains("memory_limit_mib (above the 512 MiB"),
        "{stderr}"
    );
}
