//! A component for the host's failure tests. It implements the real `enricher` world.
//! It misbehaves on purpose when a batch contains a trigger word:
//! `TRAP` panics (a wasm trap), `LOOP` spins forever (an epoch timeout), and `GROW`
//! allocates until the memory limit. Any other line comes back as `{"line": "..."}`
//! (the host closes each object), unattributed.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "enricher",
        path: "../../../wit",
    });

    use exports::flowenrich::enrich::transform::{
        BatchResult, ComponentInfo, Guest, ProcessOptions,
    };

    struct Component;

    impl Guest for Component {
        fn info() -> ComponentInfo {
            ComponentInfo {
                name: "misbehaving".into(),
                version: "0.0.0".into(),
                api_version: "0.4.0".into(),
                fields: Vec::new(),
            }
        }

        fn check_format(format: String) -> Result<String, String> {
            Ok(format)
        }

        fn process(lines: String, options: ProcessOptions) -> Result<BatchResult, String> {
            if lines.contains("TRAP") {
                panic!("fixture trap");
            }
            if lines.contains("LOOP") {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            if lines.contains("GROW") {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            let mut drafts = String::new();
            let mut spans = Vec::new();
            let mut emitted = 0;
            for line in lines.lines() {
                spans.push(drafts.len() as u32);
                drafts.push_str("{\"line\":\"");
                drafts.push_str(&line.replace('\\', "\\\\").replace('"', "\\\""));
                drafts.push('"');
                spans.push(drafts.len() as u32);
                emitted += 1;
            }
            // It parses no field: every column it is asked for is null.
            let values = vec![u64::MAX; emitted as usize * options.columns.len()];
            if !options.json {
                drafts.clear();
                spans.clear();
            }
            flowenrich::enrich::records::emit(
                drafts.as_bytes(),
                &spans,
                &vec![0; 2 * emitted as usize],
                &values,
            );
            Ok(BatchResult {
                emitted,
                errors: Vec::new(),
                headers: Vec::new(),
                held: Vec::new(),
                attributed: 0,
                unattributed: 0,
                format: options.format.unwrap_or_default(),
                column_kinds: options
                    .columns
                    .iter()
                    .map(|_| flowenrich::enrich::types::ColumnKind::Text)
                    .collect(),
            })
        }
    }

    export!(Component);
}
