//! Integration tests: the real component in the real host, through the library API and
//! the `flowenrich` binary.

mod aws_ec2;
mod aws_s3;
mod cli;
mod conformance;
mod delivery;
mod druid;
mod exactly_once;
mod failures;
mod fixtures;
mod fleet;
mod hot_swap;
mod kinesis;
mod leases;
mod metadata;
mod pipelines;
mod report_html;

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `flowenrich` binary built for these tests.
pub fn bin() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowenrich"));
    command.current_dir(repo());
    command
}

/// Runs a pipeline in `dir`: `[sources.in]` with the given settings, a `wasm` transform
/// `t` (plus `transform` settings), enriched rows to `out.ndjson` and dead letters to
/// `dead.ndjson`. Asserts it exits 0 and returns its output, the rows and the dead letters.
pub fn run_to_files(
    dir: &std::path::Path,
    source: &str,
    transform: &str,
) -> (
    std::process::Output,
    Vec<serde_json::Value>,
    Vec<serde_json::Value>,
) {
    let pipeline = format!(
        r#"
[sources.in]
{source}

[transforms.t]
type = "wasm"
inputs = ["in"]
{transform}

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"

[sinks.dead]
type = "file"
inputs = ["t.dead_letter"]
path = "dead.ndjson"
"#
    );
    std::fs::write(dir.join("p.toml"), pipeline).unwrap();
    let out = bin().arg("run").arg(dir.join("p.toml")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out,
        read_ndjson(&dir.join("out.ndjson")),
        read_ndjson(&dir.join("dead.ndjson")),
    )
}

/// The JSON objects of an NDJSON file.
pub fn read_ndjson(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every row of the rollup files (`flows-*.ndjson`) in `dir`, also while a sink is
/// writing them: files written aside (`*.tmp`) are not rows yet, a file renamed or
/// removed between the listing and the read is skipped, and a last line without its
/// newline yet is left for the next look. No directory, no rows.
pub fn rollup_rows_so_far(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !(name.starts_with("flows-") && name.ends_with(".ndjson")) {
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => rows.extend(complete_rows(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    rows
}

/// The complete lines' JSON objects of an NDJSON file a sink may be writing right now:
/// a last line without its newline yet is left for the next look.
fn read_ndjson_so_far(path: &std::path::Path) -> Vec<serde_json::Value> {
    complete_rows(&std::fs::read_to_string(path).unwrap())
}

/// The JSON objects of the complete lines of NDJSON `text`: a last line without its
/// newline yet is left out.
fn complete_rows(text: &str) -> Vec<serde_json::Value> {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Writes `pipeline` to `dir/p.toml` and starts `flowenrich run` on it with stdin,
/// stdout and stderr piped; `setup` adjusts the command first (environment, ...).
pub fn start_run(
    dir: &std::path::Path,
    pipeline: &str,
    setup: impl FnOnce(&mut std::process::Command),
) -> std::process::Child {
    use std::process::Stdio;
    std::fs::write(dir.join("p.toml"), pipeline).unwrap();
    let mut command = bin();
    command
        .arg("run")
        .arg(dir.join("p.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup(&mut command);
    command.spawn().unwrap()
}

/// Waits up to `secs` seconds for `child` to end and returns how it ended; past that,
/// stops it and panics with `what` (what was awaited) and its stderr.
pub fn exit_within(
    child: &mut std::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            signal(child, "TERM");
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            panic!("{what}\n{stderr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends `signal` (`TERM`, `KILL`, ...) to `child`.
pub fn signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Waits (up to a minute) until `path` holds at least `n` complete rows, and returns them.
pub fn rows_after(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if path.exists() {
            let rows = read_ndjson_so_far(path);
            if rows.len() >= n {
                return rows;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no row {n} in {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The complete rows of an NDJSON file (a sink may be writing it), or none while it does
/// not exist yet.
pub fn rows_now(path: &std::path::Path) -> Vec<serde_json::Value> {
    if path.exists() {
        read_ndjson_so_far(path)
    } else {
        Vec::new()
    }
}

/// The `srcport`s of `rows`, sorted.
pub fn sorted_ports(rows: &[serde_json::Value]) -> Vec<u64> {
    let mut ports: Vec<u64> = rows
        .iter()
        .map(|r| r["srcport"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    ports
}

/// The line `flowenrich run` prints on stderr for `component` when it ends.
pub fn summary<'a>(stderr: &'a str, component: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with(&format!("{component}:")))
        .unwrap_or_else(|| panic!("no summary for {component} in {stderr}"))
}

/// The value of counter `name` in a summary line (`... name N ...`).
pub fn counter(summary: &str, name: &str) -> u64 {
    let words: Vec<&str> = summary.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == name)
        .unwrap_or_else(|| panic!("{name} in {summary}"));
    words[at + 1].parse().unwrap()
}

/// `METHOD path` on an HTTP endpoint at `address` (the admin endpoint); the body.
pub fn http(address: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}
