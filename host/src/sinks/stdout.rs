//! The `stdout` sink: lines to standard output. A batch is done once it is written and
//! flushed; a write error (the reader went away: `EPIPE`) fails the pipeline.

use crate::config::{BuildError, Invalid, Upstream};
use crate::metrics::ComponentMetrics;
use crate::sinks::{BuiltSink, PathError, SinkError, SinkKind};
use crate::topology::output::Input;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// The `stdout` sink's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upstream component ids.
    pub inputs: Vec<String>,
}

impl SinkKind for Config {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }

    fn validate(&self, _key: &str, _upstream: &Upstream) -> Result<(), Invalid> {
        Ok(())
    }

    fn build(&self, _id: &str) -> Result<BuiltSink, BuildError> {
        Ok(Box::new(|input, cx| {
            run(input, &cx.metrics)?;
            Ok(None)
        }))
    }
}

/// Writes every batch to standard output until the input ends.
pub fn run(input: &mut Input, metrics: &ComponentMetrics) -> Result<(), SinkError> {
    let stdout = std::io::stdout();
    while let Some(batch) = input.recv() {
        metrics.received(batch.lines as u64);
        let mut out = stdout.lock();
        if let Err(error) = out
            .write_all(batch.text.as_bytes())
            .and_then(|()| out.flush())
        {
            metrics.error("write_failed", 1);
            return Err(SinkError::fatal(PathError::new(
                std::path::Path::new("standard output"),
                error,
            )));
        }
        metrics.sent(batch.lines as u64);
        batch.done();
    }
    Ok(())
}
