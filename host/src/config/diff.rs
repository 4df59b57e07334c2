//! What changed between two pipelines, compared as typed configs (so writing a default
//! value out, reordering keys or reformatting changes nothing), sorted into what a
//! reload applies live and what needs a restart. Each kind says which of its keys are
//! live: [`crate::transforms::TransformKind::live_keys`],
//! [`crate::metadata::MetadataKind::reloads_live`].

use super::PipelineConfig;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The changes between two pipelines, as dotted keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changes a reload applies while the pipeline runs (`metadata.<name>` for a table
    /// rebuilt whole, `transforms.<id>.<key>` for a transform option).
    pub live: Vec<String>,
    /// Changes only a restart applies.
    pub restart: Vec<String>,
}

/// A config as the object of its keys.
fn object(config: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(config) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The keys whose values differ.
fn changed_keys(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    old.keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
        .collect()
}

/// Compares the components of one section; `live` gives the keys of a changed
/// component that apply live (`None`: the component is rebuilt whole, live).
fn section<T: Serialize>(
    name: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    live_keys: impl Fn(&T, &T) -> LiveKeys,
    diff: &mut Diff,
) {
    let ids: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for id in ids {
        let (Some(before), Some(after)) = (old.get(id), new.get(id)) else {
            diff.restart.push(format!("{name}.{id} (added or removed)"));
            continue;
        };
        let changed = changed_keys(&object(before), &object(after));
        if changed.is_empty() {
            continue;
        }
        match live_keys(before, after) {
            LiveKeys::Whole => diff.live.push(format!("{name}.{id}")),
            LiveKeys::Some(live) => {
                for key in changed {
                    let dotted = format!("{name}.{id}.{key}");
                    if live.contains(&key.as_str()) {
                        diff.live.push(dotted);
                    } else {
                        diff.restart.push(dotted);
                    }
                }
            }
        }
    }
}

/// Which keys of a changed component a reload applies.
enum LiveKeys {
    /// Any change: the component is rebuilt whole and swapped in.
    Whole,
    /// These keys; others need a restart.
    Some(&'static [&'static str]),
}

/// Compares the running pipeline with a new one.
pub fn diff(old: &PipelineConfig, new: &PipelineConfig) -> Diff {
    let mut diff = Diff {
        live: Vec::new(),
        restart: changed_keys(&object(&old.global), &object(&new.global)),
    };
    section(
        "metadata",
        &old.metadata,
        &new.metadata,
        |before, after| {
            let same_type = std::mem::discriminant(before) == std::mem::discriminant(after);
            if same_type && before.kind().reloads_live() {
                LiveKeys::Whole
            } else {
                LiveKeys::Some(&[])
            }
        },
        &mut diff,
    );
    section(
        "sources",
        &old.sources,
        &new.sources,
        |_, _| LiveKeys::Some(&[]),
        &mut diff,
    );
    section(
        "transforms",
        &old.transforms,
        &new.transforms,
        |before, after| {
            let same_type = std::mem::discriminant(before) == std::mem::discriminant(after);
            LiveKeys::Some(if same_type {
                after.kind().live_keys()
            } else {
                &[]
            })
        },
        &mut diff,
    );
    section(
        "sinks",
        &old.sinks,
        &new.sinks,
        |_, _| LiveKeys::Some(&[]),
        &mut diff,
    );
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pipeline;
    use std::path::Path;

    const OLD: &str = r#"
[metadata.apps]
type = "file"
path = "a.jsonl"
[metadata.stream]
type = "aws_kinesis_streams"
stream_name = "s"
[sources.in]
type = "stdin"
[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "apps"
[sinks.out]
type = "stdout"
inputs = ["t"]
"#;

    fn config(text: &str) -> PipelineConfig {
        Pipeline::parse(Path::new("/p/pipeline.toml"), text)
            .unwrap()
            .config
    }

    #[test]
    fn sorts_changes_into_live_and_restart_needed() {
        let old = config(OLD);
        assert_eq!(diff(&old, &old), Diff::default());
        let new = config(
            &OLD.replace("path = \"a.jsonl\"", "path = \"b.jsonl\"")
                .replace(
                    "metadata = \"apps\"",
                    "metadata = \"apps\"\nholdback_secs = 60\nformat = \"srcaddr dstaddr\"",
                ),
        );
        let changes = diff(&old, &new);
        assert_eq!(
            changes.live,
            vec![
                "metadata.apps",
                "transforms.t.format",
                "transforms.t.holdback_secs"
            ]
        );
        assert!(changes.restart.is_empty(), "{:?}", changes.restart);

        let new = config(
            &(OLD
                .replace("type = \"stdin\"", "type = \"stdin\"\nbatch_lines = 10")
                .replace("inputs = [\"in\"]", "inputs = [\"in.dead_letter\"]")
                .replace("stream_name = \"s\"", "stream_name = \"other\"")
                + "[sinks.more]\ntype = \"stdout\"\ninputs = [\"t\"]\n[api]\n"),
        );
        assert_eq!(
            diff(&old, &new).restart,
            vec![
                "api",
                "metadata.stream.stream_name",
                "sources.in.batch_lines",
                "transforms.t.inputs",
                "sinks.more (added or removed)",
            ]
        );
    }

    #[test]
    fn defaults_written_out_change_nothing() {
        let old = config(OLD);
        let new = config(
            &("drain_timeout_secs = 30\n".to_string() + OLD)
                .replace("type = \"stdin\"", "type = \"stdin\"\nbatch_lines = 1000")
                .replace(
                    "metadata = \"apps\"",
                    "metadata = \"apps\"\nholdback_secs = 0\nbatch_timeout_ms = 5000",
                )
                .replace(
                    "stream_name = \"s\"",
                    "stream_name = \"s\"\nstart_position = \"trim_horizon\"",
                ),
        );
        assert_eq!(diff(&old, &new), Diff::default());
    }
}
