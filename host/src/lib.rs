//! flowenrich: enrich AWS VPC flow logs with time-aware application metadata through a
//! WebAssembly component, in Vector-style pipelines.
//!
//! Layout: [`config`] (the pipeline file) → [`topology`] (wiring and running) with
//! [`sources`], [`transforms`], [`sinks`] and [`metadata`] tables, one module per kind,
//! each owning its config; [`aws`] holds what the AWS clients share; [`runtime`] hosts
//! the component; [`fixtures`] runs component test cases; [`api`] serves `/metrics`,
//! `/health` and `/reload`. ARCHITECTURE.md draws it.

pub mod api;
pub mod aws;
pub mod batch;
pub mod config;
pub mod control;
pub mod embedded;
pub mod enrich_cli;
pub mod failpoint;
pub mod fixtures;
pub mod lifecycle;
pub mod metadata;
pub mod metrics;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod topology;
pub mod transforms;
pub mod util;
