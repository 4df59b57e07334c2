//! The pipeline's wiring: what `inputs` may name, cycles, and what lies upstream of a
//! component.

use super::{DEAD_LETTER, Invalid, PipelineConfig};
use std::collections::{BTreeMap, BTreeSet};

/// What feeds a sink, for checks that depend on the rest of the pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream {
    /// A source that resumes after checkpoints (Kinesis) feeds it, directly or through
    /// transforms.
    pub resumes_from_checkpoints: bool,
}

/// The component an input names (`enrich` for `enrich.dead_letter`).
fn component_of(input: &str) -> &str {
    input.split_once('.').map_or(input, |(id, _)| id)
}

/// The inputs of consumer `id` (a transform or a sink).
fn inputs_of<'a>(config: &'a PipelineConfig, id: &str) -> &'a [String] {
    match (config.sinks.get(id), config.transforms.get(id)) {
        (Some(sink), _) => sink.kind().inputs(),
        (None, Some(transform)) => transform.kind().inputs(),
        (None, None) => &[],
    }
}

/// The sources and transforms upstream of component `id` (through any number of
/// transforms and dead-letter outputs).
pub fn upstream_of(config: &PipelineConfig, id: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut sources, mut transforms) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![id.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(current) = stack.pop() {
        if !seen.insert(current.clone()) {
            continue;
        }
        if config.transforms.contains_key(&current) {
            transforms.insert(current.clone());
        }
        for input in inputs_of(config, &current) {
            let upstream = component_of(input);
            if config.sources.contains_key(upstream) {
                sources.insert(upstream.to_string());
            } else {
                stack.push(upstream.to_string());
            }
        }
    }
    (sources, transforms)
}

/// Whether a source that resumes from checkpoints feeds component `id`.
pub fn fed_by_checkpointed_source(config: &PipelineConfig, id: &str) -> bool {
    upstream_of(config, id)
        .0
        .iter()
        .any(|source| config.sources[source].kind().resumes_from_checkpoints())
}

/// What the consumers of a transform's output read of its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputNeeds {
    /// Some consumer reads JSON lines.
    pub json: bool,
    /// Fields some consumer reads as columns, in order of first mention.
    pub columns: Vec<String>,
}

/// What the consumers of component `id`'s output (not its dead letters) read: every
/// transform and most sinks read JSON; a sink that aggregates reads columns.
pub fn output_needs(config: &PipelineConfig, id: &str) -> OutputNeeds {
    let mut needs = OutputNeeds::default();
    for transform in config.transforms.values() {
        if transform.kind().inputs().iter().any(|i| i == id) {
            needs.json = true;
        }
    }
    for sink in config.sinks.values() {
        if !sink.kind().inputs().iter().any(|i| i == id) {
            continue;
        }
        match sink.kind().reads() {
            crate::sinks::Reads::Json => needs.json = true,
            crate::sinks::Reads::Columns(columns) => {
                for column in columns {
                    if !needs.columns.contains(&column) {
                        needs.columns.push(column);
                    }
                }
            }
        }
    }
    needs
}

/// Whether transform `id` feeds a `druid` sink (directly or through transforms).
pub fn feeds_druid(config: &PipelineConfig, id: &str) -> bool {
    config.sinks.iter().any(|(sink_id, sink)| {
        sink.kind().publishes_exactly_once() && upstream_of(config, sink_id).1.contains(id)
    })
}

/// Sinks that publish exactly once but reach a checkpointed source through more than
/// one input: one path's publication can cover a batch whose copy on the other path is
/// not published yet.
pub fn delivery_warnings(config: &PipelineConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    for (id, sink) in &config.sinks {
        if !sink.kind().publishes_exactly_once() {
            continue;
        }
        let mut paths: BTreeMap<String, usize> = BTreeMap::new();
        for input in sink.kind().inputs() {
            let upstream = component_of(input);
            let sources = if config.sources.contains_key(upstream) {
                BTreeSet::from([upstream.to_string()])
            } else {
                upstream_of(config, upstream).0
            };
            for source in sources {
                *paths.entry(source).or_default() += 1;
            }
        }
        if paths
            .iter()
            .any(|(source, n)| *n > 1 && config.sources[source].kind().resumes_from_checkpoints())
        {
            warnings.push(format!("sinks.{id}: reaches a Kinesis source through more than one input, a crash can leave the flows of one path out of Druid"));
        }
    }
    warnings
}

/// Every input names a source, a transform, or one's dead-letter output.
pub fn check_inputs(config: &PipelineConfig, key: &str, inputs: &[String]) -> Result<(), Invalid> {
    if inputs.is_empty() {
        return Err(Invalid::new(key, "needs at least one input"));
    }
    for input in inputs {
        let (id, output) = match input.split_once('.') {
            Some((id, output)) => (id, Some(output)),
            None => (input.as_str(), None),
        };
        let component = config.sources.contains_key(id) || config.transforms.contains_key(id);
        let known = component && matches!(output, None | Some(DEAD_LETTER));
        if !known {
            return Err(Invalid::new(
                key,
                format!(
                    "unknown input `{input}` (inputs name a source, a transform, or `<transform or source>.{DEAD_LETTER}`)"
                ),
            ));
        }
    }
    Ok(())
}

/// Transforms form no cycle.
pub fn check_acyclic(config: &PipelineConfig) -> Result<(), Invalid> {
    // Depth-first over transforms; sources have no inputs. `Err` names a transform on
    // the cycle.
    fn visit<'a>(
        config: &'a PipelineConfig,
        id: &'a str,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Result<(), &'a str> {
        if done.contains(id) {
            return Ok(());
        }
        if stack.contains(&id) {
            return Err(id);
        }
        let Some(transform) = config.transforms.get(id) else {
            return Ok(());
        };
        stack.push(id);
        for input in transform.kind().inputs() {
            visit(config, component_of(input), stack, done)?;
        }
        stack.pop();
        done.insert(id);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for id in config.transforms.keys() {
        visit(config, id, &mut Vec::new(), &mut done).map_err(|at| {
            Invalid::new(format!("transforms.{at}.inputs"), "transforms form a cycle")
        })?;
    }
    Ok(())
}
