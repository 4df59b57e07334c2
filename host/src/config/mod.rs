//! The pipeline file: Vector-style TOML with `[metadata.*]`, `[sources.*]`,
//! `[transforms.*]` and `[sinks.*]`, wired together by `inputs`.
//!
//! This module knows only the pipeline: component ids, `inputs`, cycles, path
//! resolution and the typed [`diff`] a reload applies. Each component kind owns its
//! `Config` (serde, `deny_unknown_fields`), beside its code: [`crate::sources`],
//! [`crate::transforms`], [`crate::sinks`] and [`crate::metadata`] list the kinds, one
//! enum line each, with [`component_enum!`].
//!
//! Relative paths are resolved against the directory of the pipeline file, so a
//! pipeline runs the same from any working directory.

pub mod diff;
mod graph;
pub use graph::OutputNeeds;
pub mod reference;
pub use graph::Upstream;
#[cfg(test)]
mod tests;

use crate::metadata::MetadataConfig;
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::TransformConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Suffix of a component's dead-letter output (`<id>.dead_letter`).
pub const DEAD_LETTER: &str = "dead_letter";

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Metadata tables, by name; transforms refer to them with `metadata = "<name>"`.
    #[serde(default)]
    pub metadata: BTreeMap<String, MetadataConfig>,
    /// Where lines come from, by component id.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// What happens to lines, by component id.
    #[serde(default)]
    pub transforms: BTreeMap<String, TransformConfig>,
    /// Where results go, by component id.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    #[serde(flatten)]
    #[allow(missing_docs)]
    pub global: GlobalConfig,
}

/// The pipeline's own settings (top-level keys).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// The admin endpoint (`/metrics`, `/health`, `/reload`); off when the table is
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiConfig>,
    /// After SIGINT/SIGTERM (or a failure), how long sinks may go on retrying what they
    /// could not write yet, in seconds. When it passes they give up, nothing they did not
    /// write is acknowledged, and `run` exits 1.
    #[serde(default = "default_drain_timeout_secs")]
    pub drain_timeout_secs: u64,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            api: None,
            drain_timeout_secs: default_drain_timeout_secs(),
        }
    }
}

fn default_drain_timeout_secs() -> u64 {
    30
}

/// The admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where it listens; only loopback by default. Port 0 picks a free port (logged).
    #[serde(default = "default_api_address")]
    pub address: std::net::SocketAddr,
}

fn default_api_address() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8686))
}

/// Declares the enum of a component family's kinds: one variant per kind, wrapping the
/// kind's `Config`, tagged by `type` in snake case (`AwsKinesisStreams` is
/// `type = "aws_kinesis_streams"`), with `kind()` / `kind_mut()` giving the variant's
/// config as the family's trait object.
macro_rules! component_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $kind:ident {
            $( $(#[$vmeta:meta])* $variant:ident($config:ty), )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum $name {
            $( $(#[$vmeta])* $variant($config), )+
        }

        impl $name {
            /// The kind's config, as what every kind does.
            pub fn kind(&self) -> &dyn $kind {
                match self {
                    $( $name::$variant(config) => config, )+
                }
            }

            /// The kind's config, to resolve its paths.
            pub fn kind_mut(&mut self) -> &mut dyn $kind {
                match self {
                    $( $name::$variant(config) => config, )+
                }
            }
        }
    };
}
pub(crate) use component_enum;

/// A setting that is wrong, by its dotted key (`sinks.out.inputs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    /// Dotted key of the offending setting.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Most workers (threads, each with its own state) one component may have.
pub const MAX_WORKERS: usize = 256;

impl Invalid {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Checks a `workers` setting of `key`: none (the default), or 1 to [`MAX_WORKERS`].
    pub fn workers(key: &str, workers: Option<usize>) -> Result<(), Invalid> {
        let Some(workers) = workers else {
            return Ok(());
        };
        Invalid::at_least_1(key, "workers", workers as u64)?;
        if workers > MAX_WORKERS {
            return Err(Invalid::new(
                format!("{key}.workers"),
                format!("at most {MAX_WORKERS}"),
            ));
        }
        Ok(())
    }

    /// `key.name` must be at least 1.
    pub fn at_least_1(key: &str, name: &str, value: u64) -> Result<(), Invalid> {
        if value == 0 {
            return Err(Invalid::new(format!("{key}.{name}"), "must be at least 1"));
        }
        Ok(())
    }
}

/// Any error, boxed: what a running component may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A component that cannot be built from its settings (a file that does not exist, a
/// component that does not load), by the dotted key of the setting.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct BuildError {
    /// Dotted key (`transforms.enrich.component`).
    pub key: String,
    /// Why.
    #[source]
    pub source: BoxError,
}

impl BuildError {
    /// A build problem at `key`.
    pub fn new(key: impl Into<String>, source: impl Into<BoxError>) -> BuildError {
        BuildError {
            key: key.into(),
            source: source.into(),
        }
    }
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The pipeline file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// TOML syntax.
    #[error("{path}: {error}")]
    Syntax {
        /// The pipeline file.
        path: PathBuf,
        /// toml's error, which names the line.
        #[source]
        error: toml::de::Error,
    },
    /// An unknown, missing, mistyped or wrong setting, a bad reference, a cycle.
    #[error("{path}: {invalid}")]
    Invalid {
        /// The pipeline file.
        path: PathBuf,
        /// The key and what is wrong.
        #[source]
        invalid: Invalid,
    },
}

impl ConfigError {
    /// The dotted key of an invalid setting.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { invalid, .. } => Some(&invalid.key),
            _ => None,
        }
    }
}

/// A loaded pipeline with paths resolved and references checked.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its settings, with relative paths made absolute.
    pub config: PipelineConfig,
}

impl Pipeline {
    /// Reads, parses and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Pipeline::parse(path, &text)
    }

    /// Parses and checks pipeline text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
        let invalid = |invalid| ConfigError::Invalid {
            path: path.to_path_buf(),
            invalid,
        };
        let table: toml::Table = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            error,
        })?;
        let mut config = from_table(table).map_err(invalid)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        resolve_paths(&mut config, &base);
        validate(&config).map_err(invalid)?;
        Ok(Pipeline {
            path: path.to_path_buf(),
            config,
        })
    }

    /// What the consumers of component `id`'s output read of its records.
    pub fn output_needs(&self, id: &str) -> OutputNeeds {
        graph::output_needs(&self.config, id)
    }

    /// Whether transform `id` feeds a `druid` sink (directly or through transforms).
    pub fn feeds_druid(&self, id: &str) -> bool {
        graph::feeds_druid(&self.config, id)
    }

    /// What this pipeline delivers less strictly than exactly once into Druid (see
    /// docs/delivery.md): a `druid` sink fed by one source through two inputs.
    pub fn delivery_warnings(&self) -> Vec<String> {
        graph::delivery_warnings(&self.config)
    }
}

/// The sections of a pipeline file, by their table names.
const SECTIONS: [&str; 4] = ["metadata", "sources", "transforms", "sinks"];

/// Deserializes each component on its own, so that every error names the component's
/// key (`sinks.out`, or `sinks.out.colour` for an unknown key).
fn from_table(mut table: toml::Table) -> Result<PipelineConfig, Invalid> {
    fn section<T: serde::de::DeserializeOwned>(
        table: &mut toml::Table,
        name: &str,
    ) -> Result<BTreeMap<String, T>, Invalid> {
        let Some(value) = table.remove(name) else {
            return Ok(BTreeMap::new());
        };
        let toml::Value::Table(components) = value else {
            return Err(Invalid::new(name, "must be a table of components by id"));
        };
        components
            .into_iter()
            .map(|(id, value)| {
                let key = format!("{name}.{id}");
                T::deserialize(value)
                    .map(|config| (id, config))
                    .map_err(|e| serde_invalid(&key, e))
            })
            .collect()
    }
    let metadata = section(&mut table, SECTIONS[0])?;
    let sources = section(&mut table, SECTIONS[1])?;
    let transforms = section(&mut table, SECTIONS[2])?;
    let sinks = section(&mut table, SECTIONS[3])?;
    let global = GlobalConfig::deserialize(toml::Value::Table(table))
        .map_err(|e| serde_invalid("pipeline", e))?;
    Ok(PipelineConfig {
        metadata,
        sources,
        transforms,
        sinks,
        global,
    })
}

/// serde's message about the component at `key`, with an unknown or missing field's
/// name added to the key.
fn serde_invalid(key: &str, error: toml::de::Error) -> Invalid {
    let message = error.message().trim_end().to_string();
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field.to_string());
    match field {
        Some(field) if key == "pipeline" => Invalid::new(field, message),
        Some(field) => Invalid::new(format!("{key}.{field}"), message),
        None => Invalid::new(key, message),
    }
}

/// Makes every relative path absolute against `base`, the pipeline file's directory.
fn resolve_paths(config: &mut PipelineConfig, base: &Path) {
    for metadata in config.metadata.values_mut() {
        metadata.kind_mut().resolve_paths(base);
    }
    for (id, source) in config.sources.iter_mut() {
        source.kind_mut().resolve_paths(id, base);
    }
    for transform in config.transforms.values_mut() {
        transform.kind_mut().resolve_paths(base);
    }
    for sink in config.sinks.values_mut() {
        sink.kind_mut().resolve_paths(base);
    }
}

/// Checks every component, then the wiring.
fn validate(config: &PipelineConfig) -> Result<(), Invalid> {
    if config.sources.is_empty() {
        return Err(Invalid::new(
            "sources",
            "a pipeline needs at least one source",
        ));
    }
    if config.sinks.is_empty() {
        return Err(Invalid::new("sinks", "a pipeline needs at least one sink"));
    }
    let mut ids = BTreeSet::new();
    let sections = [
        ("sources", config.sources.keys().collect::<Vec<_>>()),
        ("transforms", config.transforms.keys().collect()),
        ("sinks", config.sinks.keys().collect()),
    ];
    for (section, names) in &sections {
        for name in names {
            let key = format!("{section}.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(Invalid::new(
                    key,
                    "component ids may only hold letters, digits, `_` and `-`",
                ));
            }
            if !ids.insert(name.as_str()) {
                return Err(Invalid::new(key, "component id used twice"));
            }
        }
    }
    for (name, metadata) in &config.metadata {
        metadata.kind().validate(&format!("metadata.{name}"))?;
        metadata
            .kind()
            .table()
            .validate(&format!("metadata.{name}"))?;
    }
    for (id, source) in &config.sources {
        source.kind().validate(&format!("sources.{id}"))?;
    }
    for (id, transform) in &config.transforms {
        let key = format!("transforms.{id}");
        let transform = transform.kind();
        transform.validate(&key)?;
        if let Some(table) = transform.metadata()
            && !config.metadata.contains_key(table)
        {
            return Err(Invalid::new(
                format!("{key}.metadata"),
                format!("no [metadata.{table}] table is defined"),
            ));
        }
        graph::check_inputs(config, &format!("{key}.inputs"), transform.inputs())?;
    }
    for (id, sink) in &config.sinks {
        let key = format!("sinks.{id}");
        let upstream = graph::Upstream {
            resumes_from_checkpoints: graph::fed_by_checkpointed_source(config, id),
        };
        sink.kind().validate(&key, &upstream)?;
        graph::check_inputs(config, &format!("{key}.inputs"), sink.kind().inputs())?;
    }
    graph::check_acyclic(config)
}
