//! flowenrich: enrich AWS VPC flow logs with time-aware application metadata through a
//! WebAssembly component, in Vector-style pipelines.
//!
//! Layout: [`config`] (pipeline TOML) → [`topology`] (wiring and running) with
//! [`sources`], [`transforms`] and [`sinks`]; [`runtime`] hosts the component;
//! [`metadata`] holds the attribution table; [`fixtures`] runs component test cases;
//! [`api`] serves `/metrics` and `/health`.

pub mod api;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod embedded;
pub mod enrich_cli;
pub mod failpoint;
pub mod fixtures;
pub mod kinesis;
pub mod lease_publications;
pub mod leases;
pub mod lifecycle;
pub mod metadata;
pub mod metrics;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod topology;
pub mod transforms;
