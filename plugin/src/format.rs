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
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Empty => write!(f, "format names no fields"),
            FormatError::UnknownField(name) => write!(f, "unknown flow-log field `{name}`"),
            FormatError::DuplicateField(name) => write!(f, "field `{name}` appears twice"),
            FormatError::Malformed(text) => write!(f, "malformed format near `{text}`"),
        }
    }
}

impl std::error::Error for FormatError {}

/// A parsed format, with everything the parser and JSON writer need precomputed.
#[derive(Debug, Clone)]
pub struct Format {
    /// Indexes into [`FIELDS`], in line order.
    fields: Vec<u8>,
    /// The kind of each field, in line order.
    kinds: Vec<Kind>,
    /// The JSON key of each field with its leading `{` or `,` and trailing `:`.
    keys: Vec<Box<[u8]>>,
    /// Position of `srcaddr` in the line, if present.
    pub(crate) src: Option<usize>,
    /// Position of `dstaddr` in the line, if present.
    pub(crate) dst: Option<usize>,
    /// Position of `start` in the line, if present.
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
    /// Parses a format in AWS `${field}` syntax or as plain space-separated names.
    pub fn parse(spec: &str) -> Result<Format, FormatError> {
        let names = split_names(spec)?;
        Format::from_names(&names)
    }

    /// Treats `line` as an S3 header line (only field names) and returns its format,
    /// or `None` when the line is data.
    pub fn from_header(line: &str) -> Option<Format> {
        // Cheap rejection: data lines start with a digit, an address or `-`.
        let first = line.as_bytes().first()?;
        if !(first.is_ascii_lowercase() || *first == b'$') {
            return None;
        }
        let names = split_names(line).ok()?;
        Format::from_names(&names).ok()
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
        let keys: Vec<Box<[u8]>> = fields
            .iter()
            .enumerate()
            .map(|(pos, &index)| {
                let opener = if pos == 0 { '{' } else { ',' };
                format!("{opener}\"{}\":", FIELDS[index as usize].key)
                    .into_bytes()
                    .into_boxed_slice()
            })
            .collect();
        let kinds = fields
            .iter()
            .map(|&index| FIELDS[index as usize].kind)
            .collect();
        let position = |wanted: usize| fields.iter().position(|&index| index as usize == wanted);
        let canonical = fields
            .iter()
            .map(|&index| FIELDS[index as usize].name)
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Format {
            src: position(fields::SRCADDR),
            dst: position(fields::DSTADDR),
            start: position(fields::START),
            fields,
            kinds,
            keys,
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

    /// The kind of the field at line position `pos`.
    #[inline]
    pub(crate) fn kind(&self, pos: usize) -> Kind {
        self.kinds[pos]
    }

    /// The AWS name of the field at line position `pos`.
    pub(crate) fn name(&self, pos: usize) -> &'static str {
        FIELDS[self.fields[pos] as usize].name
    }

    /// The JSON key prefix (`{"version":` or `,"bytes":`) of line position `pos`.
    #[inline]
    pub(crate) fn key(&self, pos: usize) -> &[u8] {
        &self.keys[pos]
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
        assert_eq!(
            (format.src, format.dst, format.start),
            (Some(3), Some(4), Some(10))
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
        assert_eq!(header.len(), 5);
        assert!(
            Format::from_header("2 123 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 1 1 2 ACCEPT OK").is_none()
        );
        assert!(Format::from_header("ACCEPT OK").is_none());
        assert!(Format::from_header("").is_none());
        assert!(Format::from_header("version version").is_none());
    }
}
