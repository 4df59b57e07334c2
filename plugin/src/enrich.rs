//! The batch pipeline inside the component: parse every line (writing its JSON as it
//! goes), look up all addresses in two batched calls, and report each emitted line's
//! JSON span and owners. The host appends the owners' attributes and the closing brace
//! while it copies the result out (it holds the attributes; see the WIT `batch-result`).

use crate::format::{Format, FormatError};
use crate::parse::{self, Addr};
use std::rc::Rc;

/// Metadata lookups, answered by the host (or by a native stand-in in benchmarks).
pub trait Lookup {
    /// Owner ids (0 = unattributed) of IPv4 addresses at times (epoch seconds).
    fn lookup_v4(&mut self, addrs: &[u32], times: &[u64]) -> Vec<u32>;
    /// Owner ids of IPv6 addresses given as (high, low) u64 pairs, at times.
    fn lookup_v6(&mut self, addrs: &[u64], times: &[u64]) -> Vec<u32>;
}

/// What a batch is to produce (mirrors the WIT `process-options`).
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// The format (`None`: the AWS default).
    pub format: Option<&'a str>,
    /// The batch begins a stream: a first line of field names is an S3 header.
    pub stream_start: bool,
    /// Lines with an unattributed side are held instead of emitted.
    pub hold_unattributed: bool,
    /// Render each emitted line's JSON (`drafts` and `spans`).
    pub json: bool,
    /// Output names of the fields to hand over as columns, in order.
    pub columns: &'a [String],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            format: None,
            stream_start: false,
            hold_unattributed: false,
            json: true,
            columns: &[],
        }
    }
}

/// How a column's values are read (mirrors the WIT `column-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// The value is the field's number.
    Integer,
    /// The value is the field's byte range in the batch text, `begin << 32 | end`.
    Text,
}

/// The result of one batch (mirrors the WIT `batch-result`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutput {
    /// Every accepted line's JSON without its closing brace (UTF-8); empty without
    /// `json`.
    pub drafts: Vec<u8>,
    /// Start and end in `drafts` of each emitted line; empty without `json`.
    pub spans: Vec<u32>,
    /// Source and destination owner of each emitted line (0 = unattributed).
    pub owners: Vec<u32>,
    /// Each emitted line's column values, one per requested column
    /// ([`crate::parse::NULL`] for null).
    pub values: Vec<u64>,
    /// How to read each requested column.
    pub column_kinds: Vec<ColumnKind>,
    /// Number of emitted lines.
    pub emitted: u32,
    /// Rejected lines: (line index, reason).
    pub errors: Vec<(u32, String)>,
    /// Indexes of header lines consumed as formats.
    pub headers: Vec<u32>,
    /// Indexes of lines held back (see [`Processor::process_holding`]).
    pub held: Vec<u32>,
    /// Sides with an address and a time that were attributed, among emitted lines.
    pub attributed: u32,
    /// Such sides left unattributed, among emitted lines.
    pub unattributed: u32,
    /// Canonical format in effect after the batch.
    pub format: String,
}

const NO_ADDR: u32 = u32::MAX;
const V6_FLAG: u32 = 1 << 31;

/// One accepted line, waiting for its lookups.
struct Pending {
    /// Where the line's JSON (without fragments and closing brace) starts in `draft`.
    draft_start: u32,
    /// Where it ends.
    draft_end: u32,
    /// The line's index in the batch.
    index: u32,
    /// Slot of the source address in the v4/v6 lookup lists (`NO_ADDR` if none).
    src: u32,
    /// Slot of the destination address.
    dst: u32,
}

/// Reusable state for processing batches; keeps its buffers between calls.
#[derive(Default)]
pub struct Processor {
    cached: Option<(String, Rc<Format>)>,
    formats: Vec<Rc<Format>>,
    pending: Vec<Pending>,
    v4_addrs: Vec<u32>,
    v4_times: Vec<u64>,
    v6_addrs: Vec<u64>,
    v6_times: Vec<u64>,
    /// The requested columns of every pending line, in order.
    pending_values: Vec<u64>,
    /// Buffers of an earlier output, given back with [`Processor::recycle`] and
    /// reused (cleared) by the next batch: drafts, spans, owners, values.
    spare: (Vec<u8>, Vec<u32>, Vec<u32>, Vec<u64>),
}

/// Output names of every field this component parses.
pub fn field_names() -> Vec<String> {
    crate::fields::FIELDS
        .iter()
        .map(|f| f.key.to_string())
        .collect()
}

impl Processor {
    /// A processor with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `spec` (or the default format) using a one-entry cache.
    fn format_for(&mut self, spec: Option<&str>) -> Result<Rc<Format>, FormatError> {
        let spec = spec.unwrap_or(crate::fields::DEFAULT_FORMAT);
        if let Some((cached_spec, format)) = &self.cached
            && cached_spec == spec
        {
            return Ok(format.clone());
        }
        let format = Rc::new(Format::parse(spec)?);
        self.cached = Some((spec.to_string(), format.clone()));
        Ok(format)
    }

    /// Processes newline-separated `text` (see the WIT `transform.process`). When
    /// `stream_start` is set, a first line made only of field names is the S3 header and
    /// sets the format; elsewhere such a line is rejected like any other bad line.
    pub fn process(
        &mut self,
        spec: Option<&str>,
        text: &str,
        stream_start: bool,
        lookup: &mut impl Lookup,
    ) -> Result<BatchOutput, FormatError> {
        self.process_holding(spec, text, stream_start, false, lookup)
    }

    /// [`Processor::process`], and with `hold_unattributed` a line with a side that has
    /// an address and a time but no owner is left out of `output` and listed in `held`,
    /// so the caller can submit it again once the metadata has changed.
    pub fn process_holding(
        &mut self,
        spec: Option<&str>,
        text: &str,
        stream_start: bool,
        hold_unattributed: bool,
        lookup: &mut impl Lookup,
    ) -> Result<BatchOutput, FormatError> {
        let options = Options {
            format: spec,
            stream_start,
            hold_unattributed,
            ..Options::default()
        };
        self.process_with(text, &options, lookup)
    }

    /// Processes `text` as `options` say (see the WIT `transform.process`).
    pub fn process_with(
        &mut self,
        text: &str,
        options: &Options<'_>,
        lookup: &mut impl Lookup,
    ) -> Result<BatchOutput, FormatError> {
        if options.json {
            self.run::<true>(text, options, lookup)
        } else {
            self.run::<false>(text, options, lookup)
        }
    }

    fn run<const JSON: bool>(
        &mut self,
        text: &str,
        options: &Options<'_>,
        lookup: &mut impl Lookup,
    ) -> Result<BatchOutput, FormatError> {
        let Options {
            format: spec,
            stream_start,
            hold_unattributed,
            ..
        } = *options;
        let format = self.format_for(spec)?;
        self.formats.clear();
        self.formats.push(format);
        self.pending.clear();
        self.v4_addrs.clear();
        self.v4_times.clear();
        self.v6_addrs.clear();
        self.v6_times.clear();
        self.pending_values.clear();
        let mut result = BatchOutput::default();
        let (mut draft, spans, owners, values) = std::mem::take(&mut self.spare);
        (result.spans, result.owners, result.values) = (spans, owners, values);
        result.spans.clear();
        result.owners.clear();
        result.values.clear();
        // The JSON of accepted lines, written while parsing: what the host receives.
        // Sized for the JSON of typical lines (keys included), so it rarely grows.
        draft.clear();
        if JSON {
            draft.reserve(text.len() * 3 + 4 * crate::format::KEY_BYTES);
        }
        // Each requested column's field (an index into FIELDS), if it is one.
        let requested: Vec<Option<usize>> = options
            .columns
            .iter()
            .map(|name| crate::fields::find(name))
            .collect();
        result.column_kinds = requested
            .iter()
            .map(|field| match field.map(|f| crate::fields::FIELDS[f].kind) {
                Some(crate::fields::Kind::UInt(_)) => ColumnKind::Integer,
                _ => ColumnKind::Text,
            })
            .collect();
        let want_values = !requested.is_empty();
        let mut line_values = [parse::NULL; crate::fields::FIELDS.len()];
        let mut parsed = parse::Parsed::EMPTY;

        // Pass 1: parse and collect addresses.
        let bytes = text.as_bytes();
        let body_len = bytes.len() - usize::from(bytes.last() == Some(&b'\n'));
        let mut start = 0usize;
        let mut index = 0u32;
        if stream_start {
            // An S3 file's first line names its fields: it is the format, not data.
            let first_end = bytes[..body_len]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(body_len);
            // Lines are cut at ASCII `\n`, so this slice is valid UTF-8.
            match Format::from_header(text[..first_end].trim()) {
                Ok(Some(header)) => {
                    self.formats.push(Rc::new(header));
                    result.headers.push(0);
                    start = first_end + 1;
                    index = 1;
                }
                Ok(None) => {}
                Err(error) => return Err(error),
            }
        }
        // Each requested column's line position in the batch's format (an S3 header
        // at line 0 sets the format of every line after it).
        let format = self.formats[self.formats.len() - 1].clone();
        let positions: Vec<Option<usize>> = requested
            .iter()
            .map(|field| field.and_then(|f| format.position(f)))
            .collect();
        while !text.is_empty() && start <= body_len {
            let draft_start = draft.len() as u32;
            let (outcome, end) = if want_values {
                parse::parse_line_with::<JSON, true>(
                    &bytes[..body_len],
                    start,
                    &format,
                    &mut draft,
                    &mut line_values[..format.len()],
                    &mut parsed,
                )
            } else {
                parse::parse_line_with::<JSON, false>(
                    &bytes[..body_len],
                    start,
                    &format,
                    &mut draft,
                    &mut [],
                    &mut parsed,
                )
            };
            match outcome {
                Ok(()) => {
                    if want_values {
                        self.pending_values.extend(
                            positions
                                .iter()
                                .map(|pos| pos.map_or(parse::NULL, |p| line_values[p])),
                        );
                    }
                    let time = parsed.start;
                    let src = self.slot(&parsed.src, time);
                    let dst = self.slot(&parsed.dst, time);
                    self.pending.push(Pending {
                        draft_start,
                        draft_end: draft.len() as u32,
                        index,
                        src,
                        dst,
                    });
                }
                Err(error) => {
                    result.errors.push((index, error.to_string()));
                }
            }
            // `end` is at the line's `\n` (or the end of the body); the next line follows.
            start = end + 1;
            index += 1;
        }

        // Pass 2: batched lookups.
        let v4_owners = if self.v4_addrs.is_empty() {
            Vec::new()
        } else {
            lookup.lookup_v4(&self.v4_addrs, &self.v4_times)
        };
        let v6_owners = if self.v6_addrs.is_empty() {
            Vec::new()
        } else {
            lookup.lookup_v6(&self.v6_addrs, &self.v6_times)
        };
        let owner_of = |slot: u32| -> u32 {
            if slot == NO_ADDR {
                0
            } else if slot & V6_FLAG != 0 {
                v6_owners
                    .get((slot & !V6_FLAG) as usize)
                    .copied()
                    .unwrap_or(0)
            } else {
                v4_owners.get(slot as usize).copied().unwrap_or(0)
            }
        };

        // Pass 3: each emitted line's span and owners; held lines are left out.
        if JSON {
            result.spans.reserve(self.pending.len() * 2);
        }
        result.owners.reserve(self.pending.len() * 2);
        let width = requested.len();
        if want_values && hold_unattributed {
            result.values.reserve(self.pending_values.len());
        }
        for (at, pending) in self.pending.iter().enumerate() {
            let (src, dst) = (owner_of(pending.src), owner_of(pending.dst));
            let missing = u32::from(pending.src != NO_ADDR && src == 0)
                + u32::from(pending.dst != NO_ADDR && dst == 0);
            if hold_unattributed && missing > 0 {
                result.held.push(pending.index);
                continue;
            }
            result.unattributed += missing;
            result.attributed += u32::from(src != 0) + u32::from(dst != 0);
            if JSON {
                result
                    .spans
                    .extend_from_slice(&[pending.draft_start, pending.draft_end]);
            }
            if want_values && hold_unattributed {
                result
                    .values
                    .extend_from_slice(&self.pending_values[at * width..][..width]);
            }
            result.owners.extend_from_slice(&[src, dst]);
            result.emitted += 1;
        }
        if want_values && !hold_unattributed {
            // Every pending line was emitted: its values are the output's, and the
            // output's (empty) buffer gathers the next batch's.
            std::mem::swap(&mut result.values, &mut self.pending_values);
        }
        result.drafts = draft;
        result.format = self
            .formats
            .last()
            .map(|f| f.canonical().to_string())
            .unwrap_or_default();
        Ok(result)
    }

    /// Takes back the buffers of an output that has been read (its `drafts`, `spans`,
    /// `owners` and `values`), for the next batch to reuse.
    pub fn recycle(
        &mut self,
        drafts: Vec<u8>,
        spans: Vec<u32>,
        owners: Vec<u32>,
        values: Vec<u64>,
    ) {
        self.spare = (drafts, spans, owners, values);
    }

    /// Queues an address for lookup and returns its slot.
    #[inline(always)]
    fn slot(&mut self, addr: &Addr, time: Option<u64>) -> u32 {
        let Some(time) = time else {
            return NO_ADDR;
        };
        match addr {
            Addr::None => NO_ADDR,
            &Addr::V4(a) => {
                self.v4_addrs.push(a);
                self.v4_times.push(time);
                (self.v4_addrs.len() - 1) as u32
            }
            &Addr::V6(a) => {
                self.v6_addrs.push((a >> 64) as u64);
                self.v6_addrs.push(a as u64);
                self.v6_times.push(time);
                (self.v6_times.len() - 1) as u32 | V6_FLAG
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owner 1 holds 10.0.0.1 from t=100; owner 2 holds 2001:db8::1 always.
    struct Fake;

    impl Lookup for Fake {
        fn lookup_v4(&mut self, addrs: &[u32], times: &[u64]) -> Vec<u32> {
            addrs
                .iter()
                .zip(times)
                .map(|(&a, &t)| u32::from(a == 0x0a00_0001 && t >= 100))
                .collect()
        }
        fn lookup_v6(&mut self, addrs: &[u64], times: &[u64]) -> Vec<u32> {
            assert_eq!(addrs.len(), times.len() * 2);
            addrs
                .chunks(2)
                .map(|p| {
                    if p == [0x2001_0db8_0000_0000, 1] {
                        2
                    } else {
                        0
                    }
                })
                .collect()
        }
    }

    /// The NDJSON the host would make of `out` (owner `n` is app `app<n>`).
    fn ndjson(out: &BatchOutput) -> String {
        let side = |owner: u32, side: &str| match owner {
            0 => format!(",\"{side}_app\":null"),
            n => format!(",\"{side}_app\":\"app{n}\""),
        };
        let mut text = String::new();
        for (span, owners) in out.spans.chunks(2).zip(out.owners.chunks(2)) {
            let draft = &out.drafts[span[0] as usize..span[1] as usize];
            text.push_str(std::str::from_utf8(draft).unwrap());
            text.push_str(&side(owners[0], "src"));
            text.push_str(&side(owners[1], "dst"));
            text.push_str("}\n");
        }
        text
    }

    fn run(spec: Option<&str>, text: &str) -> BatchOutput {
        Processor::new()
            .process(spec, text, true, &mut Fake)
            .unwrap()
    }

    #[test]
    fn enriches_in_order_and_reports_bad_lines() {
        let text = "2 1 eni 10.0.0.1 10.0.0.9 1 2 6 3 4 100 160 ACCEPT OK\r\n\
                    garbage\n\
                    2 1 eni 10.0.0.1 10.0.0.9 1 2 6 3 4 99 160 REJECT OK\n";
        let out = run(None, text);
        assert_eq!(out.emitted, 2);
        assert_eq!(
            out.errors,
            vec![(1, "wrong field count: expected 14, found 1".to_string())]
        );
        let output = ndjson(&out);
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"version":2,"account_id":"1","interface_id":"eni","srcaddr":"10.0.0.1","dstaddr":"10.0.0.9","srcport":1,"dstport":2,"protocol":6,"packets":3,"bytes":4,"start":100,"end":160,"action":"ACCEPT","log_status":"OK","src_app":"app1","dst_app":null}"#
        );
        assert!(
            lines[1].contains(r#""src_app":null"#),
            "owned only from t=100"
        );
    }

    #[test]
    fn only_the_first_line_of_a_stream_can_be_a_header() {
        let text = "srcport\nversion\n5\n";
        let out = run(Some("srcport"), text);
        assert_eq!(out.headers, vec![0]);
        assert_eq!(out.format, "srcport");
        assert_eq!(out.emitted, 1);
        assert_eq!(
            out.errors.len(),
            1,
            "`version` mid-stream is a bad line: {:?}",
            out.errors
        );
        let later = Processor::new()
            .process(Some("srcport"), "version\n5\n", false, &mut Fake)
            .unwrap();
        assert!(later.headers.is_empty());
        assert_eq!((later.emitted, later.errors.len()), (1, 1));
    }

    #[test]
    fn header_switches_format_and_is_reported() {
        let text = "start srcaddr dstaddr\n100 10.0.0.1 2001:db8::1\n";
        let out = run(None, text);
        assert_eq!(out.headers, vec![0]);
        assert_eq!(out.format, "start srcaddr dstaddr");
        assert_eq!(
            ndjson(&out),
            "{\"start\":100,\"srcaddr\":\"10.0.0.1\",\"dstaddr\":\"2001:db8::1\",\"src_app\":\"app1\",\"dst_app\":\"app2\"}\n"
        );
    }

    #[test]
    fn leading_zeros_are_normalised_and_dash_is_null() {
        let out = run(Some("${srcport} ${bytes} ${action}"), "007 - -");
        assert_eq!(
            ndjson(&out),
            "{\"srcport\":7,\"bytes\":null,\"action\":null,\"src_app\":null,\"dst_app\":null}\n"
        );
    }

    #[test]
    fn quotes_backslashes_and_unicode_survive_as_valid_json() {
        let out = run(
            Some("interface-id action"),
            "eni\"quoted\\x ünïcode\neni-long-enough-to-span-words\"\" -\n",
        );
        assert_eq!(
            ndjson(&out),
            "{\"interface_id\":\"eni\\\"quoted\\\\x\",\"action\":\"ünïcode\",\"src_app\":null,\"dst_app\":null}\n\
             {\"interface_id\":\"eni-long-enough-to-span-words\\\"\\\"\",\"action\":null,\"src_app\":null,\"dst_app\":null}\n"
        );
    }

    #[test]
    fn empty_lines_are_errors_but_a_final_newline_is_not_a_line() {
        let out = run(Some("srcport"), "1\n\n  \n2\n");
        assert_eq!(out.emitted, 2);
        assert_eq!(
            out.errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(run(Some("srcport"), "").emitted, 0);
    }

    #[test]
    fn holding_leaves_out_lines_with_an_unattributed_side_and_counts_sides() {
        // Line 0: both sides owned (10.0.0.1 from t=100, 2001:db8::1 always). Line 1:
        // 10.0.0.1 before t=100. Line 2: no addresses, nothing to wait for. Line 3: bad.
        let text = "start srcaddr dstaddr\n100 10.0.0.1 2001:db8::1\n99 10.0.0.1 2001:db8::1\n100 - -\nx 1 2\n";
        let held = Processor::new()
            .process_holding(None, text, true, true, &mut Fake)
            .unwrap();
        assert_eq!(held.held, vec![2]);
        assert_eq!(held.emitted, 2);
        assert_eq!((held.attributed, held.unattributed), (2, 0));
        assert_eq!(held.errors.len(), 1);
        assert!(!ndjson(&held).contains("\"start\":99"));
        let released = Processor::new()
            .process_holding(None, text, true, false, &mut Fake)
            .unwrap();
        assert!(released.held.is_empty());
        assert_eq!(released.emitted, 3);
        assert_eq!((released.attributed, released.unattributed), (3, 1));
    }

    #[test]
    fn columns_hand_over_each_emitted_lines_fields_with_or_without_json() {
        // Line 1 is held (10.0.0.1 before t=100), line 2 is bad.
        let text = "start srcaddr dstaddr action bytes\n\
                    100 10.0.0.1 2001:db8::1 ACC\"EPT 007\n\
                    99 10.0.0.1 2001:db8::1 - 5\n\
                    x\n\
                    101 10.0.0.1 - REJECT -\n";
        let columns: Vec<String> = ["bytes", "action", "start", "nope", "version"]
            .map(String::from)
            .to_vec();
        let run = |json, hold| {
            let options = Options {
                stream_start: true,
                hold_unattributed: hold,
                json,
                columns: &columns,
                ..Options::default()
            };
            Processor::new()
                .process_with(text, &options, &mut Fake)
                .unwrap()
        };
        let span = |needle: &str| {
            let at = text.find(needle).unwrap() as u64;
            at << 32 | (at + needle.len() as u64)
        };
        let with = run(true, true);
        let without = run(false, true);
        assert_eq!(
            with.column_kinds,
            [
                ColumnKind::Integer,
                ColumnKind::Text,
                ColumnKind::Integer,
                ColumnKind::Text,
                ColumnKind::Integer
            ]
        );
        let null = parse::NULL;
        assert_eq!(
            with.values,
            [
                7,
                span("ACC\"EPT"),
                100,
                null,
                null,
                null,
                span("REJECT"),
                101,
                null,
                null
            ]
        );
        assert_eq!(with.held, [2]);
        assert_eq!(
            (without.values.clone(), without.owners.clone()),
            (with.values.clone(), with.owners.clone())
        );
        assert!(without.drafts.is_empty() && without.spans.is_empty());
        assert_eq!((without.emitted, without.errors.len()), (2, 1));
        assert_eq!(with.spans.len(), 4);
        // Without holding, every accepted line's values, in order.
        let all = run(false, false);
        assert_eq!(all.values.len(), 3 * columns.len());
        assert_eq!(all.values[5..8], [5, null, 99]);
    }

    #[test]
    fn invalid_format_fails_the_batch() {
        assert!(
            Processor::new()
                .process(Some("nope"), "1", true, &mut Fake)
                .is_err()
        );
    }
}
