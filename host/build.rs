//! Builds the enrichment component (`plugin/`) for `wasm32-wasip2` and places it in
//! `OUT_DIR`, so the host binary embeds its own component (Spin builds its test
//! components the same way). The test components are built by the test-support crate,
//! which only tests depend on.

use std::path::PathBuf;

fn main() {
    let workspace = flowenrich_wasm_build::workspace(1);
    flowenrich_wasm_build::rerun_if_changed(
        &workspace,
        &["plugin/src", "plugin/Cargo.toml", "wit", "Cargo.lock"],
    );
    let built = flowenrich_wasm_build::build(&workspace, &["flowenrich-plugin"])
        .join("flowenrich_plugin.wasm");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let embedded = out_dir.join("flowenrich_plugin.wasm");
    std::fs::copy(&built, &embedded).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    // Also leave a copy at a stable path for `--component` users and the benchmarks.
    let _ = std::fs::copy(
        &built,
        flowenrich_wasm_build::target_root().join("flowenrich_plugin.wasm"),
    );
}
