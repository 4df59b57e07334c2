//! Sources: where flow-log lines come from.

pub mod file;
