//! Putting records together: the component hands over each emitted line's JSON without
//! its closing brace and the owners its lookups found; the host appends the owners'
//! attribute fragments from the table snapshot and `}` while it copies the lines out.
//! The attributes live in the host, so they never cross into the component and back.
//!
//! The component hands the records over by calling the imported `records.emit`, which
//! is linked here by hand rather than by `bindgen!`: it reads the lists in place in the
//! component's memory (no copy out) and puts the records together in one pass.

use super::HostState;
use crate::metadata::Table;
use wasmtime::component::{Linker, WasmList};

/// A component result that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResult {
    /// `spans` and `owners` must hold two entries per emitted line.
    #[error("{spans} span offsets and {owners} owners do not describe the same lines")]
    Shape {
        /// Entries in `spans`.
        spans: usize,
        /// Entries in `owners`.
        owners: usize,
    },
    /// A span outside the output, backwards, or cutting a UTF-8 character.
    #[error("span {start}..{end} does not lie on character boundaries of the {len}-byte output")]
    Span {
        /// The span's start.
        start: u32,
        /// The span's end.
        end: u32,
        /// The output's length.
        len: usize,
    },
    /// The output is not UTF-8.
    #[error("output is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// An owner id that the table does not have.
    #[error("owner id {0} is not in the table")]
    Owner(u32),
    /// `process` succeeded with lines emitted but never called `records.emit`.
    #[error("the component emitted lines without handing them over")]
    NotEmitted,
    /// More records than the batch had lines: without this a component could make the
    /// host build output without bound.
    #[error("{records} records for a batch of at most {max_lines} lines")]
    TooMany {
        /// Records handed over.
        records: usize,
        /// The most the batch can have.
        max_lines: usize,
    },
    /// A span that starts before the previous one ends (repeating or overlapping output,
    /// which would also be unbounded).
    #[error("span starting at {start} overlaps the previous one, which ends at {previous_end}")]
    Overlap {
        /// The span's start.
        start: u32,
        /// Where the previous span ends.
        previous_end: u32,
    },
    /// Not one value per requested column of every record.
    #[error("{values} column values for {records} records of {columns} columns")]
    Values {
        /// Values handed over.
        values: usize,
        /// Records handed over.
        records: usize,
        /// Columns asked for.
        columns: usize,
    },
    /// Not one kind per requested column.
    #[error("{kinds} column kinds for {columns} columns")]
    Kinds {
        /// Kinds given.
        kinds: usize,
        /// Columns asked for.
        columns: usize,
    },
    /// `emitted` disagrees with the records handed over.
    #[error("the component says it emitted {emitted} lines but handed over {records}")]
    Count {
        /// What `batch-result.emitted` says.
        emitted: u32,
        /// Records handed over.
        records: usize,
    },
}

/// What `records.emit` handed over for one batch.
#[derive(Debug, Default)]
pub struct Emitted {
    /// The records as NDJSON (empty when the batch asked for no JSON, or deferred it).
    pub text: String,
    /// With JSON deferred (the host changes owners after the call): the drafts and
    /// spans as handed over, to [`assemble`] once the owners are final.
    pub drafts: Vec<u8>,
    /// Likewise, the spans.
    pub spans: Vec<u32>,
    /// How many records.
    pub lines: usize,
    /// Source and destination owner of each record (kept when columns were asked for).
    pub owners: Vec<u32>,
    /// Each record's column values, row after row.
    pub values: Vec<u64>,
}

/// Defines `records.emit`: the lists are read where they lie in the component's memory,
/// put together against the batch's table snapshot, and kept for the caller with the
/// number of records.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let interface = format!("flowenrich:enrich/records@{}", super::API_VERSION);
    linker.instance(&interface)?.func_wrap(
        "emit",
        |mut store: wasmtime::StoreContextMut<'_, HostState>,
         (drafts, spans, owners, values): (
            WasmList<u8>,
            WasmList<u32>,
            WasmList<u32>,
            WasmList<u64>,
        )| {
            let state = store.data();
            let (table, max_lines, json, columns, defer) = (
                state.table.clone(),
                state.max_lines,
                state.json,
                state.columns,
                state.defer_json,
            );
            let emitted = {
                let drafts = drafts.as_le_slice(&store);
                let spans = little_endian(spans.as_le_slice(&store));
                let owners = little_endian(owners.as_le_slice(&store));
                let values = values.as_le_slice(&store);
                take(
                    &table,
                    Lists {
                        drafts,
                        spans: &spans,
                        owners: &owners,
                        values,
                    },
                    Asked {
                        max_lines,
                        json,
                        columns,
                        defer,
                    },
                )
            };
            store.data_mut().records = Some(emitted);
            Ok(())
        },
    )
}

/// The lists of one `records.emit` call.
struct Lists<'a> {
    drafts: &'a [u8],
    spans: &'a [u32],
    owners: &'a [u32],
    values: &'a [u64],
}

/// What the batch in flight asked for.
#[derive(Clone, Copy)]
struct Asked {
    /// The most records it can have.
    max_lines: usize,
    /// Whether it asked for JSON.
    json: bool,
    /// How many columns it asked for.
    columns: usize,
    /// Keep the drafts and spans instead of putting the JSON together now.
    defer: bool,
}

/// Checks the lists against what the batch asked for and keeps what it needs.
fn take(table: &Table, lists: Lists<'_>, asked: Asked) -> Result<Emitted, InvalidResult> {
    let Asked {
        max_lines,
        json,
        columns,
        defer,
    } = asked;
    let lines = lists.owners.len() / 2;
    if lines > max_lines {
        return Err(InvalidResult::TooMany {
            records: lines,
            max_lines,
        });
    }
    if !lists.owners.len().is_multiple_of(2)
        || (json && lists.spans.len() != lists.owners.len())
        || (!json && (!lists.spans.is_empty() || !lists.drafts.is_empty()))
    {
        return Err(InvalidResult::Shape {
            spans: lists.spans.len(),
            owners: lists.owners.len(),
        });
    }
    if lists.values.len() != lines * columns {
        return Err(InvalidResult::Values {
            values: lists.values.len(),
            records: lines,
            columns,
        });
    }
    let (mut drafts, mut spans) = (Vec::new(), Vec::new());
    let text = if json && !defer {
        assemble(table, lists.drafts, lists.spans, lists.owners)?
    } else {
        if json {
            std::str::from_utf8(lists.drafts)?;
            drafts = lists.drafts.to_vec();
            spans = lists.spans.to_vec();
        }
        if let Some(&bad) = lists.owners.iter().find(|&&o| table.owner(o).is_none()) {
            return Err(InvalidResult::Owner(bad));
        }
        String::new()
    };
    let (owners, values) = if columns > 0 {
        let values = if cfg!(target_endian = "little") {
            lists.values.to_vec()
        } else {
            lists.values.iter().map(|v| u64::from_le(*v)).collect()
        };
        (lists.owners.to_vec(), values)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Emitted {
        text,
        drafts,
        spans,
        lines,
        owners,
        values,
    })
}

/// `u32`s as the component stored them (little-endian), in host order.
fn little_endian(values: &[u32]) -> std::borrow::Cow<'_, [u32]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(values)
    } else {
        values.iter().map(|v| u32::from_le(*v)).collect()
    }
}

/// NDJSON of the lines `spans` cut out of `drafts`, each followed by its source and
/// destination owners' fragments (from `owners`, two per line), `}` and `\n`. Spans
/// must follow one another without overlapping, so the output is bounded by the drafts
/// plus one pair of fragments per line.
pub fn assemble(
    table: &Table,
    drafts: &[u8],
    spans: &[u32],
    owners: &[u32],
) -> Result<String, InvalidResult> {
    if spans.len() != owners.len() || !spans.len().is_multiple_of(2) {
        return Err(InvalidResult::Shape {
            spans: spans.len(),
            owners: owners.len(),
        });
    }
    let text = std::str::from_utf8(drafts)?;
    let mut widest = 0;
    for pair in owners.chunks_exact(2) {
        let src = table.owner(pair[0]).ok_or(InvalidResult::Owner(pair[0]))?;
        let dst = table.owner(pair[1]).ok_or(InvalidResult::Owner(pair[1]))?;
        widest = widest.max(src.src_fragment.len() + dst.dst_fragment.len());
    }
    let lines = spans.len() / 2;
    let mut out = String::with_capacity(drafts.len() + lines * (widest + 2));
    let mut previous_end = 0;
    for (span, pair) in spans.chunks_exact(2).zip(owners.chunks_exact(2)) {
        let (start, end) = (span[0], span[1]);
        if start < previous_end {
            return Err(InvalidResult::Overlap {
                start,
                previous_end,
            });
        }
        previous_end = end;
        let line = text
            .get(start as usize..end as usize)
            .ok_or(InvalidResult::Span {
                start,
                end,
                len: drafts.len(),
            })?;
        out.push_str(line);
        // Checked above: both ids are in the table.
        if let (Some(src), Some(dst)) = (table.owner(pair[0]), table.owner(pair[1])) {
            out.push_str(&src.src_fragment);
            out.push_str(&dst.dst_fragment);
        }
        out.push_str("}\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Event, TableBuilder};

    fn table() -> Table {
        let mut builder = TableBuilder::new();
        builder.apply(
            &Event::parse(
                r#"{"ts": 1, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "api"}}"#,
            )
            .unwrap(),
        );
        builder.build()
    }

    #[test]
    fn appends_each_sides_attributes_and_closes_the_object() {
        let table = table();
        let api = table.lookup("10.0.0.1".parse().unwrap(), 5);
        assert_ne!(api, 0);
        let drafts = b"{\"a\":1{\"held\":0{\"b\":\"\xc3\xa9\"";
        let out = assemble(&table, drafts, &[0, 6, 15, 24], &[api, 0, 0, api]).unwrap();
        assert_eq!(
            out,
            "{\"a\":1,\"src_app\":\"api\",\"dst_app\":null}\n{\"b\":\"é\",\"src_app\":null,\"dst_app\":\"api\"}\n"
        );
    }

    #[test]
    fn columns_must_fit_the_records_and_what_was_asked() {
        let table = table();
        let api = table.lookup("10.0.0.1".parse().unwrap(), 5);
        fn lists<'a>(owners: &'a [u32], values: &'a [u64]) -> Lists<'a> {
            Lists {
                drafts: b"",
                spans: &[],
                owners,
                values,
            }
        }
        // Without JSON: owners and one value per column of each record, kept as given.
        let owners = &[api, 0, 0, api][..];
        let asked = |max_lines, columns| Asked {
            max_lines,
            json: false,
            columns,
            defer: false,
        };
        let taken = take(&table, lists(owners, &[1, 2, 3, 4]), asked(10, 2)).unwrap();
        assert_eq!((taken.lines, taken.text.as_str()), (2, ""));
        assert_eq!((taken.owners.len(), taken.values), (4, vec![1, 2, 3, 4]));
        assert!(matches!(
            take(&table, lists(owners, &[1, 2, 3]), asked(10, 2)),
            Err(InvalidResult::Values {
                values: 3,
                records: 2,
                columns: 2
            })
        ));
        assert_eq!(
            take(&table, lists(&[0, 7777], &[]), asked(10, 0)).err(),
            Some(InvalidResult::Owner(7777))
        );
        // JSON handed over when none was asked for.
        let json = Lists {
            drafts: b"{",
            spans: &[0, 1],
            owners: &[0, 0],
            values: &[],
        };
        assert!(matches!(
            take(&table, json, asked(10, 0)),
            Err(InvalidResult::Shape { .. })
        ));
        assert!(matches!(
            take(&table, lists(owners, &[1, 2, 3, 4]), asked(1, 2)),
            Err(InvalidResult::TooMany { .. })
        ));
    }

    #[test]
    fn rejects_results_that_do_not_hold_together() {
        let table = table();
        let drafts = "{\"b\":\"é\"".as_bytes();
        assert!(matches!(
            assemble(&table, drafts, &[0, 3], &[0]),
            Err(InvalidResult::Shape { .. })
        ));
        assert!(matches!(
            assemble(&table, drafts, &[0, 99], &[0, 0]),
            Err(InvalidResult::Span { .. })
        ));
        assert!(matches!(
            assemble(&table, drafts, &[0, 7], &[0, 0]),
            Err(InvalidResult::Span { .. }),
        ));
        assert!(matches!(
            assemble(&table, drafts, &[3, 1], &[0, 0]),
            Err(InvalidResult::Span { .. }),
        ));
        assert!(matches!(
            assemble(&table, b"\xff", &[0, 1], &[0, 0]),
            Err(InvalidResult::Utf8(_))
        ));
        assert_eq!(
            assemble(&table, drafts, &[0, 3], &[0, 7777]),
            Err(InvalidResult::Owner(7777))
        );
        // The same span twice would repeat output without bound.
        assert!(matches!(
            assemble(&table, drafts, &[0, 3, 0, 3], &[0, 0, 0, 0]),
            Err(InvalidResult::Overlap {
                start: 0,
                previous_end: 3
            })
        ));
    }
}
