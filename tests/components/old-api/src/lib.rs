//! A component for the host's version checks: a correct enricher of the previous WIT
//! version (`flowenrich:enrich@0.2.0`, kept in `wit/` beside this crate). Every line
//! comes back as `{"line": "..."}`. The host speaks a newer version and must refuse it,
//! at start-up and as a hot-swap candidate.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "enricher",
        path: "wit",
    });

    use exports::flowenrich::enrich::transform::{BatchResult, ComponentInfo, Guest};

    struct Component;

    impl Guest for Component {
        fn info() -> ComponentInfo {
            ComponentInfo {
                name: "old-api".into(),
                version: "0.0.0".into(),
                api_version: "0.2.0".into(),
            }
        }

        fn check_format(format: String) -> Result<String, String> {
            Ok(format)
        }

        fn process(
            format: Option<String>,
            lines: String,
            _stream_start: bool,
            _hold_unattributed: bool,
        ) -> Result<BatchResult, String> {
            let mut output = String::new();
            let mut emitted = 0;
            for line in lines.lines() {
                output.push_str("{\"line\":\"");
                output.push_str(&line.replace('\\', "\\\\").replace('"', "\\\""));
                output.push_str("\"}\n");
                emitted += 1;
            }
            Ok(BatchResult {
                output,
                emitted,
                errors: Vec::new(),
                headers: Vec::new(),
                held: Vec::new(),
                attributed: 0,
                unattributed: 0,
                format: format.unwrap_or_default(),
            })
        }
    }

    export!(Component);
}
