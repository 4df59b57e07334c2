//! Builds the enrichment component (`plugin/`) for `wasm32-wasip2` and places it in
//! `OUT_DIR`, so the host binary embeds its own component (Spin builds its test
//! components the same way). The nested build uses its own target directory next to
//! the outer one, so it never waits on the outer build's lock. The same build produces
//! the test components of `tests/components/` (`misbehaving`, `old-api`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for watched in [
        "plugin/src",
        "plugin/Cargo.toml",
        "tests/components",
        "wit",
        "Cargo.lock",
    ] {
        rerun_if_changed(&workspace.join(watched));
    }

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one nested target dir.
    let target_root = out_dir.ancestors().nth(4).unwrap_or(&out_dir).to_path_buf();
    let nested_target = target_root.join("wasm-component");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args([
            "-p",
            "flowenrich-plugin",
            "-p",
            "flowenrich-test-misbehaving",
            "-p",
            "flowenrich-test-old-api",
        ])
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
        .expect("failed to run cargo for the component");
    if !status.success() {
        panic!(
            "building the component for wasm32-wasip2 failed; is the target installed? \
             Run `rustup target add wasm32-wasip2` (the README's commands do this)."
        );
    }
    let built = nested_target.join("wasm32-wasip2/release/flowenrich_plugin.wasm");
    let embedded = out_dir.join("flowenrich_plugin.wasm");
    std::fs::copy(&built, &embedded).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    // Also leave a copy at a stable path for `--component` users and the benchmarks.
    let _ = std::fs::copy(&built, target_root.join("flowenrich_plugin.wasm"));
    // The failure-test component, for tests only (its path is a compile-time constant).
    let misbehaving = nested_target.join("wasm32-wasip2/release/flowenrich_test_misbehaving.wasm");
    println!(
        "cargo:rustc-env=FLOWENRICH_TEST_COMPONENT_MISBEHAVING={}",
        misbehaving.display()
    );
    // A correct component of the previous WIT version, which the host must refuse.
    let old_api = nested_target.join("wasm32-wasip2/release/flowenrich_test_old_api.wasm");
    println!(
        "cargo:rustc-env=FLOWENRICH_TEST_COMPONENT_OLD_API={}",
        old_api.display()
    );
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
}
