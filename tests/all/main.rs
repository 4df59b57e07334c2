//! Integration tests: the real component in the real host, through the library API and
//! the `flowenrich` binary.

mod cli;
mod failures;
mod fixtures;
mod pipelines;

use std::path::PathBuf;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `flowenrich` binary built for these tests.
pub fn bin() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowenrich"));
    command.current_dir(repo());
    command
}
