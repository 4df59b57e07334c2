//! Parquet flow-log objects (AWS's Parquet delivery: one column per field, named with
//! `_` for `-`, Gzip pages) turned into the lines the component reads: a header line of
//! the column names (the format), then one line per row, `-` for a null. The object is
//! read with ranged GETs, one row group at a time, so what is held is one row group's
//! column chunks, never the object.

use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use parquet::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use std::ops::ControlFlow;
use std::sync::Arc;

/// The magic bytes a Parquet file starts (and ends) with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// An S3 object read by byte ranges.
pub struct RangedObject {
    /// Where the calls run.
    pub runtime: &'static tokio::runtime::Runtime,
    /// The S3 client.
    pub client: aws_sdk_s3::Client,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The version to read (a versioned bucket).
    pub version_id: Option<String>,
    /// Without a version: the ETag every range must still have (`If-Match`).
    pub if_match: Option<String>,
    /// The object's size in bytes.
    pub size: u64,
    /// The source's counters (`s3_object_bytes_total`).
    pub metrics: Arc<crate::metrics::ComponentMetrics>,
}

impl RangedObject {
    fn range(&self, start: u64, end: Option<u64>) -> parquet::errors::Result<super::Body> {
        let range = match end {
            Some(end) => format!("bytes={start}-{end}"),
            None => format!("bytes={start}-"),
        };
        let answer = self
            .runtime
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .set_version_id(self.version_id.clone())
                    .set_if_match(self.if_match.clone())
                    .range(range)
                    .send(),
            )
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(super::Body {
            runtime: self.runtime,
            stream: answer.body,
            chunk: bytes::Bytes::new(),
            metrics: self.metrics.clone(),
        })
    }
}

impl Length for RangedObject {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for RangedObject {
    type T = super::Body;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        self.range(start, None)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        if length == 0 {
            return Ok(bytes::Bytes::new());
        }
        let mut body = self.range(start, Some(start + length as u64 - 1))?;
        let mut buffer = Vec::with_capacity(length);
        std::io::Read::read_to_end(&mut body, &mut buffer)?;
        if buffer.len() != length {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "asked for {length} bytes at {start}, got {}",
                buffer.len()
            )));
        }
        Ok(buffer.into())
    }
}

/// Rows decoded at a time per column (what is held beside the row group's chunks).
const ROWS_PER_READ: usize = 4096;

/// One column of a row group being read: its reader and the values of the rows read.
struct Column {
    reader: ColumnReader,
    /// Definition level of a present value (0: the column cannot be null).
    present: i16,
    /// Integers stored signed but meant unsigned (`UINT_*`).
    unsigned: bool,
    levels: Vec<i16>,
    values: Values,
    /// The next of `values` to hand out.
    next: usize,
}

/// Decoded values of one column (nulls have none).
enum Values {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

impl Column {
    /// Reads up to `rows` more rows; how many it read.
    fn read(&mut self, rows: usize) -> parquet::errors::Result<usize> {
        self.next = 0;
        self.levels.clear();
        let levels = (self.present > 0).then_some(&mut self.levels);
        macro_rules! read {
            ($reader:expr, $values:expr) => {{
                $values.clear();
                $reader.read_records(rows, levels, None, $values)?.0
            }};
        }
        Ok(match (&mut self.reader, &mut self.values) {
            (ColumnReader::BoolColumnReader(r), Values::Bool(v)) => read!(r, v),
            (ColumnReader::Int32ColumnReader(r), Values::Int32(v)) => read!(r, v),
            (ColumnReader::Int64ColumnReader(r), Values::Int64(v)) => read!(r, v),
            (ColumnReader::FloatColumnReader(r), Values::Float(v)) => read!(r, v),
            (ColumnReader::DoubleColumnReader(r), Values::Double(v)) => read!(r, v),
            (ColumnReader::ByteArrayColumnReader(r), Values::Bytes(v)) => read!(r, v),
            (ColumnReader::FixedLenByteArrayColumnReader(r), Values::Fixed(v)) => read!(r, v),
            _ => unreachable!("values are made for their reader"),
        })
    }

    /// Appends row `row`'s value (of the rows last read) to `out`: `-` for a null or
    /// empty text, numbers in decimal, text as it is.
    fn render(&mut self, row: usize, out: &mut Vec<u8>) {
        if self.present > 0 && self.levels[row] < self.present {
            out.push(b'-');
            return;
        }
        let at = self.next;
        self.next += 1;
        let mut number = itoa::Buffer::new();
        let text: &[u8] = match &self.values {
            Values::Bool(v) => {
                if v[at] {
                    b"true"
                } else {
                    b"false"
                }
            }
            Values::Int32(v) if self.unsigned => number.format(v[at] as u32).as_bytes(),
            Values::Int64(v) if self.unsigned => number.format(v[at] as u64).as_bytes(),
            Values::Int32(v) => number.format(v[at]).as_bytes(),
            Values::Int64(v) => number.format(v[at]).as_bytes(),
            Values::Float(v) => return out.extend_from_slice(v[at].to_string().as_bytes()),
            Values::Double(v) => return out.extend_from_slice(v[at].to_string().as_bytes()),
            Values::Bytes(v) => v[at].data(),
            Values::Fixed(v) => v[at].data(),
        };
        if text.is_empty() {
            out.push(b'-');
        } else {
            out.extend_from_slice(text);
        }
    }
}

/// Hands `line` the header line (the column names) and then every row as a line, row
/// group by row group, each decoded column by column a few thousand rows at a time;
/// stops at the first error (what was handed over stays handed), or when `line` says
/// [`ControlFlow::Break`].
pub fn lines(
    reader: impl ChunkReader + 'static,
    mut line: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> Result<(), parquet::errors::ParquetError> {
    use parquet::errors::ParquetError;
    let file = SerializedFileReader::new(reader)?;
    let schema = file.metadata().file_metadata().schema_descr();
    if let Some(nested) = schema.columns().iter().find(|c| c.max_rep_level() > 0) {
        return Err(ParquetError::General(format!(
            "column {} is repeated: flow-log objects have flat columns",
            nested.name()
        )));
    }
    let header: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    if line(header.join(" ").as_bytes()).is_break() {
        return Ok(());
    }
    let mut text = Vec::new();
    for group in 0..file.num_row_groups() {
        let row_group = file.get_row_group(group)?;
        let mut columns = Vec::with_capacity(schema.num_columns());
        for (i, descr) in schema.columns().iter().enumerate() {
            let reader = row_group.get_column_reader(i)?;
            let values = match &reader {
                ColumnReader::BoolColumnReader(_) => Values::Bool(Vec::new()),
                ColumnReader::Int32ColumnReader(_) => Values::Int32(Vec::new()),
                ColumnReader::Int64ColumnReader(_) => Values::Int64(Vec::new()),
                ColumnReader::FloatColumnReader(_) => Values::Float(Vec::new()),
                ColumnReader::DoubleColumnReader(_) => Values::Double(Vec::new()),
                ColumnReader::ByteArrayColumnReader(_) => Values::Bytes(Vec::new()),
                ColumnReader::FixedLenByteArrayColumnReader(_) => Values::Fixed(Vec::new()),
                ColumnReader::Int96ColumnReader(_) => {
                    return Err(ParquetError::General(format!(
                        "column {} is INT96, which no flow-log field is",
                        descr.name()
                    )));
                }
            };
            use parquet::basic::{ConvertedType, LogicalType};
            let unsigned = matches!(
                descr.logical_type_ref(),
                Some(LogicalType::Integer {
                    is_signed: false,
                    ..
                })
            ) || matches!(
                descr.converted_type(),
                ConvertedType::UINT_8
                    | ConvertedType::UINT_16
                    | ConvertedType::UINT_32
                    | ConvertedType::UINT_64
            );
            columns.push(Column {
                reader,
                unsigned,
                present: descr.max_def_level(),
                levels: Vec::new(),
                values,
                next: 0,
            });
        }
        let mut left = usize::try_from(row_group.metadata().num_rows()).unwrap_or(0);
        while left > 0 {
            let want = left.min(ROWS_PER_READ);
            for (column, descr) in columns.iter_mut().zip(schema.columns()) {
                let read = column.read(want)?;
                if read != want {
                    return Err(ParquetError::General(format!(
                        "column {} of row group {group} ends after {read} of {want} rows",
                        descr.name()
                    )));
                }
            }
            for row in 0..want {
                text.clear();
                for (at, column) in columns.iter_mut().enumerate() {
                    if at > 0 {
                        text.push(b' ');
                    }
                    column.render(row, &mut text);
                }
                if line(&text).is_break() {
                    return Ok(());
                }
            }
            left -= want;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_lines_of_the_header_format_row_group_by_row_group() {
        let text = "2 123456789012 eni-1 10.0.0.1 10.0.0.2 1000 443 6 3 400 1700000000 1700000060 ACCEPT OK\n\
                    2 123456789012 eni-1 - - - - - - - 1700000000 1700000060 - NODATA\n\
                    2 123456789012 eni-2 2001:db8::1 10.0.0.2 5 6 17 1 9 1700000001 1700000061 REJECT OK\n";
        let file = flowenrich_test_support::parquet_logs::v2_parquet(text, 2);
        assert_eq!(&file[..4], MAGIC);
        let mut out = Vec::new();
        lines(bytes::Bytes::from(file), |line| {
            out.push(String::from_utf8(line.to_vec()).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            out[0],
            "version account_id interface_id srcaddr dstaddr srcport dstport protocol packets bytes start end action log_status"
        );
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(out[1..], rows);
        // Not Parquet: an error, nothing handed over but what was read.
        let mut none = 0;
        let file = bytes::Bytes::from_static(b"PAR1 not really");
        assert!(
            lines(file, |_| {
                none += 1;
                ControlFlow::Continue(())
            })
            .is_err()
        );
        assert_eq!(none, 0);
        // Stopped by the caller: no line after the one that said so.
        let file = flowenrich_test_support::parquet_logs::v2_parquet(text, 1);
        let mut seen = 0;
        lines(bytes::Bytes::from(file), |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    /// An in-memory file that remembers the most bytes read at once: by one
    /// `get_bytes`, or through one reader of `get_read`.
    struct Counting {
        file: bytes::Bytes,
        largest: Arc<std::sync::atomic::AtomicUsize>,
    }

    /// A reader that reports how much was read through it when dropped.
    struct Tracked {
        inner: bytes::buf::Reader<bytes::Bytes>,
        read: usize,
        largest: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl std::io::Read for Tracked {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.largest
                .fetch_max(self.read, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Length for Counting {
        fn len(&self) -> u64 {
            self.file.len() as u64
        }
    }

    impl ChunkReader for Counting {
        type T = Tracked;
        fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
            Ok(Tracked {
                inner: self.file.get_read(start)?,
                read: 0,
                largest: self.largest.clone(),
            })
        }
        fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
            self.largest
                .fetch_max(length, std::sync::atomic::Ordering::Relaxed);
            self.file.get_bytes(start, length)
        }
    }

    #[test]
    fn an_object_is_read_one_row_group_at_a_time() {
        let text: String = (0..10_000)
            .map(|i| {
                format!(
                    "2 1 eni-{i} 10.0.0.1 10.0.0.2 1 2 6 1 {i} 1700000000 1700000060 ACCEPT OK\n"
                )
            })
            .collect();
        let file = flowenrich_test_support::parquet_logs::v2_parquet(&text, 1000);
        let size = file.len();
        let largest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = Counting {
            file: file.into(),
            largest: largest.clone(),
        };
        let mut rows = 0;
        lines(counting, |_| {
            rows += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(rows, 10_001);
        let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            largest > 0 && largest * 5 < size,
            "a read of {largest} bytes of a {size}-byte file of 10 row groups"
        );
    }
}
