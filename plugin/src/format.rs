//! Flow-log formats: which fields a line holds, in which order.
//!
//! Accepts AWS's own syntax (`${version} ${account-id} ...`) and plain names separated by
//! spaces, with hyphens or underscores. Unknown and duplicate names are errors.

use crate::fields::{self, DEFAULT_FORMAT, FIELDS, Kind};
use std::fmt;

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The format names no field at all.
    Empty,
    /// A name that is not a documented flow-log field.
    UnknownField(String),
    /// A field named twice.
    DuplicateField(String),
    /// A `${` without its closing `}`, or text between `${...}` fields.
    Malformed(String),
    /// An S3 header line that cannot be a format (its object cannot be read safely).
    Header(Box<FormatError>),
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Empty => write!(f, "format names no fields"),
            FormatError::UnknownField(name) => write!(f, "unknown flow-log field `{name}`"),
            FormatError::DuplicateField(name) => write!(f, "field `{name}` appears twice"),
            FormatError::Malformed(text) => write!(f, "malformed format near `{text}`"),
            FormatError::Header(error) => write!(f, "S3 header line: {error}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Longest JSON key with its opener, quotes and colon (`,"ecs_container_instance_arn":`
/// is 30 bytes), rounded up so every key is copied as one 32-byte block.
pub(crate) const KEY_BYTES: usize = 32;

/// How the parser treats one line position: everything the hot loop needs in one
/// compact record, so it keeps few values live (the wasm compiler spills the rest).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    /// The JSON key (`{"version":` or `,"bytes":`), zero-padded to [`KEY_BYTES`].
    pub key: [u8; KEY_BYTES],
    /// Bytes of `key` in use.
    pub key_len: u8,
    /// [`Column::TEXT`], [`Column::UINT`] or [`Column::IP`].
    pub kind: u8,
    /// [`Column::NO_ROLE`], [`Column::SRC`], [`Column::DST`] or [`Column::START`].
    pub role: u8,
    /// Largest value of a `UINT` column.
    pub max: u64,
}

impl Column {
    pub(crate) const TEXT: u8 = 0;
    pub(crate) const UINT: u8 = 1;
    pub(crate) const IP: u8 = 2;
    pub(crate) const NO_ROLE: u8 = 0;
    pub(crate) const SRC: u8 = 1;
    pub(crate) const DST: u8 = 2;
    pub(crate) const START: u8 = 3;
}

/// A parsed format, with everything the parser and JSON writer need precomputed.
#[derive(Debug, Clone)]
pub struct Format {
    /// Indexes into [`FIELDS`], in line order.
    fields: Vec<u8>,
    /// How each position is parsed and written, in line order.
    pub(crate) columns: Vec<Column>,
    /// Sum of the columns' key lengths (sizes the output reservation for a line).
    pub(crate) keys_len: usize,
    /// The integer columns' positions and maxima, for the parser without JSON.
    pub(crate) uints: Vec<(u32, u64)>,
    /// The address columns' positions and roles, for the parser without JSON.
    pub(crate) ips: Vec<(u32, u8)>,
    /// The position of `start`, if the format has it.
    pub(crate) start: Option<usize>,
    /// Canonical spelling: AWS names separated by single spaces.
    canonical: String,
}

impl Default for Format {
    fn default() -> Self {
        Format::parse(DEFAULT_FORMAT).expect("the default format is valid")
    }
}

impl Format {
    /// Parses a format in AWS `${field}` syntax or as plain space-separated names; the
    /// reserved name `tgw` is the Transit Gateway default (its 36 fields in order).
    pub fn parse(spec: &str) -> Result<Format, FormatError> {
        if spec.trim() == fields::TGW_FORMAT_NAME {
            return Format::parse(fields::TGW_FORMAT);
        }
        let names = split_names(spec)?;
        Format::from_names(&names)
    }

    /// Treats `line` as an S3 header line (only field names) and returns its format,
    /// `Ok(None)` when the line is data, or the error of a header that names a field
    /// nobody documents (no line after it can be read safely).
    pub fn from_header(line: &str) -> Result<Option<Format>, FormatError> {
        // Cheap rejection: data lines start with a digit, an address or `-`.
        let Some(first) = line.as_bytes().first() else {
            return Ok(None);
        };
        if !(first.is_ascii_lowercase() || *first == b'$') {
            return Ok(None);
        }
        let Ok(names) = split_names(line) else {
            return Ok(None);
        };
        // A header names fields: every token looks like a name, and one at least is a
        // documented field (a data line of text fields, `eni-1 vpc-2`, names none).
        let name_like = |name: &str| {
            name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !names.iter().all(|n| name_like(n)) || !names.iter().any(|n| fields::find(n).is_some()) {
            return Ok(None);
        }
        Format::from_names(&names)
            .map(Some)
            .map_err(|e| FormatError::Header(Box::new(e)))
    }

    fn from_names(names: &[&str]) -> Result<Format, FormatError> {
        if names.is_empty() {
            return Err(FormatError::Empty);
        }
        let mut fields: Vec<u8> = Vec::with_capacity(names.len());
        for name in names {
            let index =
                fields::find(name).ok_or_else(|| FormatError::UnknownField(name.to_string()))?;
            if fields.contains(&(index as u8)) {
                return Err(FormatError::DuplicateField(FIELDS[index].name.to_string()));
            }
            fields.push(index as u8);
        }
        let columns: Vec<Column> = fields
            .iter()
            .enumerate()
            .map(|(pos, &index)| {
                let spec = &FIELDS[index as usize];
                let opener = if pos == 0 { '{' } else { ',' };
                let text = format!("{opener}\"{}\":", spec.key);
                let mut key = [0u8; KEY_BYTES];
                key[..text.len()].copy_from_slice(text.as_bytes());
                let (kind, max) = match spec.kind {
                    Kind::Text => (Column::TEXT, 0),
                    Kind::UInt(max) => (Column::UINT, max),
                    Kind::Ip => (Column::IP, 0),
                };
                let role = match index as usize {
                    fields::SRCADDR => Column::SRC,
                    fields::DSTADDR => Column::DST,
                    fields::START => Column::START,
                    _ => Column::NO_ROLE,
                };
                Column {
                    key,
                    key_len: text.len() as u8,
                    kind,
                    role,
                    max,
                }
            })
            .collect();
        let keys_len = columns.iter().map(|c| c.key_len as usize).sum();
        let positions = |kind: u8| {
            let columns = columns.iter().enumerate();
            columns.filter(move |(_, c)| c.kind == kind)
        };
        let uints = positions(Column::UINT)
            .map(|(pos, c)| (pos as u32, c.max))
            .collect();
        let ips = positions(Column::IP)
            .map(|(pos, c)| (pos as u32, c.role))
            .collect();
        let start = columns.iter().position(|c| c.role == Column::START);
        let canonical = fields
            .iter()
            .map(|&index| FIELDS[index as usize].name)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Format {
            fields,
            columns,
            keys_len,
            uints,
            ips,
            start,
            canonical,
        })
    }

    /// Number of fields a line must have.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Always false: a format names at least one field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The canonical spelling (AWS names, single spaces).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The line position of field `field` (an index into [`FIELDS`]), if the format
    /// has it.
    pub fn position(&self, field: usize) -> Option<usize> {
        self.fields.iter().position(|&f| f as usize == field)
    }

    /// The AWS name of the field at line position `pos`.
    pub(crate) fn name(&self, pos: usize) -> &'static str {
        FIELDS[self.fields[pos] as usize].name
    }

    /// The JSON key prefix (`{"version":` or `,"bytes":`) of line position `pos`.
    #[cfg(test)]
    pub(crate) fn key(&self, pos: usize) -> &[u8] {
        let column = &self.columns[pos];
        &column.key[..column.key_len as usize]
    }
}

/// Splits a format into field names, accepting `${a} ${b}` and `a b`.
fn split_names(spec: &str) -> Result<Vec<&str>, FormatError> {
    let spec = spec.trim();
    if !spec.contains('$') {
        return Ok(spec.split_ascii_whitespace().collect());
    }
    let mut names = Vec::new();
    let mut rest = spec;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(names);
        }
        let Some(body) = rest.strip_prefix("${") else {
            return Err(FormatError::Malformed(snippet(rest)));
        };
        let Some(end) = body.find('}') else {
            return Err(FormatError::Malformed(snippet(rest)));
        };
        let name = body[..end].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(FormatError::Malformed(snippet(rest)));
        }
        names.push(name);
        rest = &body[end + 1..];
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_version_two() {
        let format = Format::default();
        assert_eq!(format.len(), 14);
        assert_eq!(format.canonical(), DEFAULT_FORMAT);
        let roles: Vec<(usize, u8)> = (0..format.len())
            .map(|pos| (pos, format.columns[pos].role))
            .filter(|&(_, role)| role != Column::NO_ROLE)
            .collect();
        assert_eq!(
            roles,
            vec![(3, Column::SRC), (4, Column::DST), (10, Column::START)]
        );
    }

    #[test]
    fn aws_syntax_plain_names_and_underscores_agree() {
        let a = Format::parse("${vpc-id} ${srcaddr} ${log-status}").unwrap();
        let b = Format::parse("vpc-id srcaddr log-status").unwrap();
        let c = Format::parse("  vpc_id   srcaddr\tlog_status ").unwrap();
        let d = Format::parse("${vpc-id}${srcaddr}${log_status}").unwrap();
        for f in [&a, &b, &c, &d] {
            assert_eq!(f.canonical(), "vpc-id srcaddr log-status");
        }
        assert_eq!(a.key(0), b"{\"vpc_id\":");
        assert_eq!(a.key(2), b",\"log_status\":");
    }

    #[test]
    fn every_key_fits_a_column() {
        let all: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        let format = Format::parse(&all.join(" ")).unwrap();
        for pos in 0..format.len() {
            assert!(format.key(pos).len() <= KEY_BYTES);
            assert_eq!(format.key(pos)[format.key(pos).len() - 1], b':');
        }
    }

    #[test]
    fn bad_formats_name_the_problem() {
        assert_eq!(Format::parse("").unwrap_err(), FormatError::Empty);
        assert_eq!(
            Format::parse("version colour").unwrap_err(),
            FormatError::UnknownField("colour".into())
        );
        assert_eq!(
            Format::parse("srcaddr src_addr srcaddr").unwrap_err(),
            FormatError::UnknownField("src_addr".into())
        );
        assert_eq!(
            Format::parse("log-status log_status").unwrap_err(),
            FormatError::DuplicateField("log-status".into())
        );
        assert!(matches!(
            Format::parse("${version} account-id").unwrap_err(),
            FormatError::Malformed(_)
        ));
        assert!(matches!(
            Format::parse("${version").unwrap_err(),
            FormatError::Malformed(_)
        ));
    }

    #[test]
    fn headers_are_recognised_and_data_is_not() {
        let header = Format::from_header("version vpc-id srcaddr dstaddr start").unwrap();
        assert_eq!(header.unwrap().len(), 5);
        let data = |line: &str| Format::from_header(line).unwrap().is_none();
        assert!(data(
            "2 123 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1 2 ACCEPT OK"
        ));
        assert!(data("ACCEPT OK"));
        assert!(data(""));
        assert!(data("eni-1 vpc-2 subnet-3"), "text fields, no field name");
        // A header naming a field twice, or one nobody documents: no line is safe.
        for bad in ["version version", "version srcaddr unknown-field-x"] {
            let error = Format::from_header(bad).unwrap_err();
            assert!(error.to_string().starts_with("S3 header line: "), "{error}");
        }
        let tgw = Format::from_header(crate::fields::TGW_FORMAT)
            .unwrap()
            .unwrap();
        assert_eq!(tgw.len(), 36);
        assert_eq!(
            Format::parse("tgw").unwrap().canonical(),
            crate::fields::TGW_FORMAT
        );
    }
}
