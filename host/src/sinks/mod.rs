//! Sinks: where results go. Each runs on its own thread until all its inputs close.

pub mod druid;
pub mod file;
pub mod kinesis;
pub mod report;
pub mod stdout;
