//! What the integration tests and benchmarks share: a real local Kinesis
//! ([`kinesis_local`], npm `kinesis-local`) and DynamoDB ([`dynalite`], npm `dynalite`)
//! started on 127.0.0.1, proxies that inject faults between the host and them, and the
//! test components.

pub mod dynalite;
pub mod kinesis_local;
pub mod moto;
pub mod parquet_logs;

/// A component that traps, loops or misbehaves on command (`tests/components/misbehaving`).
pub const MISBEHAVING_COMPONENT: &str = env!("FLOWENRICH_TEST_COMPONENT_MISBEHAVING");
/// A correct component of the previous WIT version, which the host must refuse
/// (`tests/components/old-api`).
pub const OLD_API_COMPONENT: &str = env!("FLOWENRICH_TEST_COMPONENT_OLD_API");
