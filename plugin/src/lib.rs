//! The flowenrich enrichment component.
//!
//! Pure modules ([`fields`], [`format`], [`parse`], [`json`], [`enrich`]) hold all the
//! logic and build natively for unit tests and benchmarks; the `component` module (only
//! on `wasm32`) binds them to the WIT world `flowenrich:enrich/enricher@0.4.0`.

pub mod enrich;
pub mod fields;
pub mod format;
pub mod json;
pub mod parse;

pub use enrich::{BatchOutput, ColumnKind, Lookup, Options, Processor};
pub use format::{Format, FormatError};

/// The WIT package version this component implements.
pub const API_VERSION: &str = "0.4.0";

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "enricher",
        path: "../wit",
    });

    use exports::flowenrich::enrich::transform::{
        BatchResult, ComponentInfo, Guest, ProcessOptions,
    };
    use flowenrich::enrich::types::{ColumnKind, LineError};
    use flowenrich::enrich::{lookup, records};
    use std::cell::RefCell;

    thread_local! {
        static PROCESSOR: RefCell<crate::Processor> = RefCell::new(crate::Processor::new());
    }

    /// Lookups answered by the host through the imported `lookup` interface.
    struct HostLookup;

    impl crate::Lookup for HostLookup {
        fn lookup_v4(&mut self, addrs: &[u32], times: &[u64]) -> Vec<u32> {
            lookup::lookup_v4(addrs, times)
        }
        fn lookup_v6(&mut self, addrs: &[u64], times: &[u64]) -> Vec<u32> {
            lookup::lookup_v6(addrs, times)
        }
    }

    struct Component;

    impl Guest for Component {
        fn info() -> ComponentInfo {
            ComponentInfo {
                name: env!("CARGO_PKG_NAME").to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                api_version: crate::API_VERSION.to_string(),
                fields: crate::enrich::field_names(),
            }
        }

        fn check_format(format: String) -> Result<String, String> {
            crate::Format::parse(&format)
                .map(|f| f.canonical().to_string())
                .map_err(|e| e.to_string())
        }

        fn process(lines: String, options: ProcessOptions) -> Result<BatchResult, String> {
            PROCESSOR.with(|processor| {
                let mut processor = processor.borrow_mut();
                let out = processor
                    .process_with(
                        &lines,
                        &crate::Options {
                            format: options.format.as_deref(),
                            stream_start: options.stream_start,
                            hold_unattributed: options.hold_unattributed,
                            json: options.json,
                            columns: &options.columns,
                        },
                        &mut HostLookup,
                    )
                    .map_err(|e| e.to_string())?;
                // The host reads the records in place, while this call is in progress.
                records::emit(&out.drafts, &out.spans, &out.owners, &out.values);
                let result = BatchResult {
                    emitted: out.emitted,
                    errors: out
                        .errors
                        .into_iter()
                        .map(|(line, message)| LineError { line, message })
                        .collect(),
                    headers: out.headers,
                    held: out.held,
                    attributed: out.attributed,
                    unattributed: out.unattributed,
                    format: out.format,
                    column_kinds: out
                        .column_kinds
                        .into_iter()
                        .map(|kind| match kind {
                            crate::ColumnKind::Integer => ColumnKind::Integer,
                            crate::ColumnKind::Text => ColumnKind::Text,
                        })
                        .collect(),
                };
                // The next batch reuses the buffers the host has read.
                processor.recycle(out.drafts, out.spans, out.owners, out.values);
                Ok(result)
            })
        }
    }

    export!(Component);
}
