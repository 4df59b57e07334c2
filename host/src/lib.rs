//! flowenrich: enrich AWS VPC flow logs with time-aware application metadata through a
//! WebAssembly component, in Vector-style pipelines.

pub mod embedded;
pub mod enrich_cli;
pub mod metadata;
pub mod runtime;
pub mod sources;
