//! The `file` source: one file, a directory (recursively) or a glob; plain or gzip
//! (detected by magic bytes, so `.log.gz` files from S3 work as delivered).

use super::{Batcher, BuiltSource, LineLimits, Sink, SourceKind, read_lines_bounded};
use crate::config::{BuildError, Invalid};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The `file` source's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// File, directory or glob pattern (`data/**/*.log.gz`), relative to the pipeline
    /// file.
    pub path: String,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub lines: LineLimits,
}

impl SourceKind for Config {
    fn validate(&self, key: &str) -> Result<(), Invalid> {
        self.lines.validate(key)
    }

    fn resolve_paths(&mut self, _id: &str, base: &Path) {
        if Path::new(&self.path).is_relative() {
            self.path = base.join(&self.path).to_string_lossy().into_owned();
        }
    }

    fn build(&self, id: &str) -> Result<BuiltSource, BuildError> {
        let files =
            expand(&self.path).map_err(|e| BuildError::new(format!("sources.{id}.path"), e))?;
        let lines = self.lines.clone();
        Ok(Box::new(move |cx| {
            run(files, cx.sink(&lines), cx.lifecycle.stop_flag());
            Ok(())
        }))
    }
}

/// Why the file source could not start.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The glob pattern is malformed.
    #[error("invalid glob `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing matched.
    #[error("no files match `{0}`")]
    NoFiles(String),
    /// A directory could not be listed.
    #[error("cannot list {path}: {error}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// Opens a text file, transparently decompressing gzip (by magic bytes).
pub fn open_text(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = File::open(path)?;
    if n == 2 && crate::util::is_gzip(&magic) {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(file),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

/// The files `path` names, sorted: the file itself, every file under a directory, or
/// the matches of a glob pattern.
pub fn expand(path: &str) -> Result<Vec<PathBuf>, FileSourceError> {
    let mut files = Vec::new();
    if path.contains(['*', '?', '[']) {
        let matches = glob::glob(path).map_err(|e| FileSourceError::Pattern {
            pattern: path.to_string(),
            message: e.to_string(),
        })?;
        files.extend(matches.filter_map(Result::ok).filter(|p| p.is_file()));
    } else if Path::new(path).is_dir() {
        walk(Path::new(path), &mut files)?;
    } else if Path::new(path).is_file() {
        files.push(PathBuf::from(path));
    }
    if files.is_empty() {
        return Err(FileSourceError::NoFiles(path.to_string()));
    }
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), FileSourceError> {
    let entries = std::fs::read_dir(dir).map_err(|error| FileSourceError::List {
        path: dir.to_path_buf(),
        error,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads every file in order, one stream per file, until done or `stop` is set.
pub fn run(files: Vec<PathBuf>, to: Sink<'_>, stop: &AtomicBool) {
    let metrics = to.metrics;
    for path in files {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let stream = path.to_string_lossy();
        let mut batcher = Batcher::new(&stream, to);
        match open_text(&path) {
            Ok(mut reader) => {
                let mut line = Vec::new();
                let read = read_lines_bounded(
                    &mut reader,
                    &mut line,
                    to.max_line_bytes + 1,
                    |raw, length| {
                        batcher.push(raw, length);
                        !stop.load(Ordering::Relaxed)
                    },
                );
                if let Err(error) = read {
                    // Truncated gzip, I/O error: keep what was read (a partial last line
                    // goes on and is dead-lettered if malformed), report, move on.
                    if !line.is_empty() {
                        batcher.push(&line, line.len());
                    }
                    metrics.error("read", 1);
                    tracing::error!(message = "Failed to read file; continuing with the next one.", file = %path.display(), %error);
                }
            }
            Err(error) => {
                metrics.error("open", 1);
                tracing::error!(message = "Failed to open file.", file = %path.display(), %error);
            }
        }
        batcher.flush(true);
    }
}
