//! Builds the test components of `tests/components/` (only tests depend on this crate,
//! so only test builds compile them) and exports their paths.

fn main() {
    let workspace = flowenrich_wasm_build::workspace(2);
    flowenrich_wasm_build::rerun_if_changed(&workspace, &["tests/components", "wit", "Cargo.lock"]);
    let built = flowenrich_wasm_build::build(
        &workspace,
        &["flowenrich-test-misbehaving", "flowenrich-test-old-api"],
    );
    for (name, file) in [
        ("MISBEHAVING", "flowenrich_test_misbehaving.wasm"),
        ("OLD_API", "flowenrich_test_old_api.wasm"),
    ] {
        println!(
            "cargo:rustc-env=FLOWENRICH_TEST_COMPONENT_{name}={}",
            built.join(file).display()
        );
    }
}
