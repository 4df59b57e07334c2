//! Component fixtures: `tests/fixtures/<case>/` folders with input lines, metadata and
//! expected output, run through the real component exactly as `flowenrich enrich` does.
//!
//! A case folder holds:
//! - `input.log` — flow-log lines (required);
//! - `expected.jsonl` — the expected JSON objects, in order (required; compared as JSON
//!   values, so key order and spacing do not matter);
//! - `metadata.jsonl` — metadata change events (optional);
//! - `format` — the flow-log format, one line (optional; default AWS v2);
//! - `errors.jsonl` — expected rejections, in order, as `{"line": ..., "error": ...}`
//!   where `error` must be contained in the reported reason (optional; default none).

use crate::enrich_cli::{self, EnrichError};
use crate::metadata::{self, EventError, MetadataError};
use crate::runtime::Worker;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a case did not pass.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// A file of the case could not be read.
    #[error("{file}: {error}")]
    Read {
        /// The file's name in the case folder.
        file: &'static str,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The metadata could not be loaded.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A metadata line was rejected.
    #[error("metadata.jsonl line {line}: {error}")]
    BadMetadata {
        /// 1-based line number.
        line: usize,
        /// Why.
        #[source]
        error: EventError,
    },
    /// Enriching the input failed as a whole.
    #[error(transparent)]
    Enrich(#[from] EnrichError),
    /// A line of the output or of an expectation is not JSON.
    #[error("{what} line {line}: {error}: {text}")]
    Json {
        /// Which text.
        what: &'static str,
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        error: serde_json::Error,
        /// The line.
        text: String,
    },
    /// The output differs from what the case expects: the first difference.
    #[error("{0}")]
    Mismatch(String),
}

/// Runs one case folder; `Err` describes the first mismatch.
pub fn run_case(dir: &Path, worker: &mut Worker) -> Result<(), FixtureError> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let input = read("input.log").map_err(|error| FixtureError::Read {
        file: "input.log",
        error,
    })?;
    let expected = read("expected.jsonl").map_err(|error| FixtureError::Read {
        file: "expected.jsonl",
        error,
    })?;
    let format = read("format")
        .ok()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty());
    let metadata_file = dir.join("metadata.jsonl");
    let files: Vec<PathBuf> = if metadata_file.exists() {
        vec![metadata_file]
    } else {
        Vec::new()
    };
    let (table, rejected) = metadata::load_files(&files)?;
    if let Some((_, bad)) = rejected.into_iter().next() {
        return Err(FixtureError::BadMetadata {
            line: bad.line_number,
            error: bad.error,
        });
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    enrich_cli::run(
        worker,
        &Arc::new(table),
        format,
        &mut std::io::BufReader::new(input.as_bytes()),
        &mut out,
        &mut errors,
    )?;

    let actual = parse_lines(&String::from_utf8_lossy(&out), "output")?;
    let wanted = parse_lines(&expected, "expected.jsonl")?;
    compare_rows("output", &actual, &wanted)?;

    let actual_errors = parse_lines(&String::from_utf8_lossy(&errors), "errors")?;
    let wanted_errors = match read("errors.jsonl") {
        Ok(text) => parse_lines(&text, "errors.jsonl")?,
        Err(_) => Vec::new(),
    };
    if actual_errors.len() != wanted_errors.len() {
        return Err(FixtureError::Mismatch(format!(
            "expected {} rejected lines, got {}: {}",
            wanted_errors.len(),
            actual_errors.len(),
            actual_errors
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    for (i, (got, want)) in actual_errors.iter().zip(&wanted_errors).enumerate() {
        if got["line"] != want["line"] {
            return Err(FixtureError::Mismatch(format!(
                "rejection {i}: line {} != expected {}",
                got["line"], want["line"]
            )));
        }
        let reason = got["error"].as_str().unwrap_or_default();
        let needle = want["error"].as_str().unwrap_or_default();
        if !reason.contains(needle) {
            return Err(FixtureError::Mismatch(format!(
                "rejection {i}: reason `{reason}` does not contain `{needle}`"
            )));
        }
    }
    Ok(())
}

fn parse_lines(text: &str, what: &'static str) -> Result<Vec<Value>, FixtureError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|error| FixtureError::Json {
                what,
                line: i + 1,
                error,
                text: l.to_string(),
            })
        })
        .collect()
}

fn compare_rows(what: &str, actual: &[Value], wanted: &[Value]) -> Result<(), FixtureError> {
    for (i, (got, want)) in actual.iter().zip(wanted).enumerate() {
        if got != want {
            return Err(FixtureError::Mismatch(format!(
                "{what} row {}:\n  got      {got}\n  expected {want}",
                i + 1
            )));
        }
    }
    if actual.len() != wanted.len() {
        return Err(FixtureError::Mismatch(format!(
            "{what}: got {} rows, expected {}",
            actual.len(),
            wanted.len()
        )));
    }
    Ok(())
}

/// Case folders under `root` (folders holding an `input.log`), sorted.
pub fn cases(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("input.log").is_file())
        .collect();
    cases.sort();
    Ok(cases)
}
