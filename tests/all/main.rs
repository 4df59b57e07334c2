//! Integration tests: the real component in the real host, through the library API and
//! the `flowenrich` binary.

mod cli;
mod failures;
mod fixtures;
mod kinesis;
mod metadata;
mod pipelines;

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
