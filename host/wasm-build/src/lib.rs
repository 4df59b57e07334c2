//! Builds components of this workspace for `wasm32-wasip2` from a build script: the host
//! embeds the enrichment component (`plugin/`), and the test-support crate builds the
//! test components (`tests/components/`) that only tests load, so a release build of the
//! host compiles no test component.
//!
//! The nested build has its own target directory beside the outer one (so it never
//! waits on the outer build's lock) and the same settings for every caller (so the
//! callers share its artifacts): release, LTO, one codegen unit, wasm SIMD.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root, from a build script of a crate `depth` directories below it.
pub fn workspace(depth: usize) -> PathBuf {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("a build script"));
    manifest_dir
        .ancestors()
        .nth(depth)
        .expect("inside the workspace")
        .to_path_buf()
}

/// Tells cargo to run the build script again when `paths` (under `workspace`) change.
pub fn rerun_if_changed(workspace: &Path, paths: &[&str]) {
    for path in paths {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
}

/// The outer target directory (`OUT_DIR` is `<target>/<profile>/build/<pkg>-<hash>/out`).
pub fn target_root() -> PathBuf {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("a build script"));
    out_dir.ancestors().nth(4).unwrap_or(&out_dir).to_path_buf()
}

/// Builds `packages` for `wasm32-wasip2` in release mode; returns the directory holding
/// their `.wasm` files. Panics with what to do when the target is missing.
pub fn build(workspace: &Path, packages: &[&str]) -> PathBuf {
    let nested_target = target_root().join("wasm-component");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .arg("--target-dir")
        .arg(&nested_target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        // wasm SIMD lets LLVM vectorise the byte scans; wasmtime supports it by default.
        .env(
            "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
            "-C target-feature=+simd128",
        );
    for inherited in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        command.env_remove(inherited);
    }
    let status = command
        .status()
        .expect("failed to run cargo for the components");
    if !status.success() {
        panic!(
            "building {packages:?} for wasm32-wasip2 failed; is the target installed? \
             Run `rustup target add wasm32-wasip2` (the README's commands do this)."
        );
    }
    nested_target.join("wasm32-wasip2/release")
}
