//! Parquet flow-log objects (AWS's Parquet delivery: one column per field, named with
//! `_` for `-`, Gzip pages) turned into the lines the component reads: a header line of
//! the column names (the format), then one line per row, `-` for a null. The object is
//! read with ranged GETs, one row group at a time, so what is held is one row group's
//! column chunks, never the object.

use parquet::file::reader::{ChunkReader, FileReader, Length, SerializedFileReader};
use parquet::record::Field;
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

/// Hands `line` the header line (the column names) and then every row as a line, row
/// group by row group; stops at the first error (what was handed over stays handed).
pub fn lines(
    reader: impl ChunkReader + 'static,
    mut line: impl FnMut(&[u8]),
) -> Result<(), parquet::errors::ParquetError> {
    let file = SerializedFileReader::new(reader)?;
    let schema = file.metadata().file_metadata().schema_descr();
    let header: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
    line(header.join(" ").as_bytes());
    let mut text = Vec::new();
    for group in 0..file.num_row_groups() {
        let row_group = file.get_row_group(group)?;
        for row in row_group.get_row_iter(None)? {
            let row = row?;
            text.clear();
            for (at, (_, field)) in row.get_column_iter().enumerate() {
                if at > 0 {
                    text.push(b' ');
                }
                render(field, &mut text);
            }
            line(&text);
        }
    }
    Ok(())
}

/// One value as the text line holds it: `-` for null, numbers in decimal, text as it is.
fn render(field: &Field, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = match field {
        Field::Null => write!(out, "-"),
        Field::Str(text) if text.is_empty() => write!(out, "-"),
        Field::Str(text) => write!(out, "{text}"),
        Field::Bytes(bytes) => write!(out, "{}", String::from_utf8_lossy(bytes.data())),
        Field::Byte(v) => write!(out, "{v}"),
        Field::Short(v) => write!(out, "{v}"),
        Field::Int(v) => write!(out, "{v}"),
        Field::Long(v) => write!(out, "{v}"),
        Field::UByte(v) => write!(out, "{v}"),
        Field::UShort(v) => write!(out, "{v}"),
        Field::UInt(v) => write!(out, "{v}"),
        Field::ULong(v) => write!(out, "{v}"),
        other => write!(out, "{other}"),
    };
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
            out.push(String::from_utf8(line.to_vec()).unwrap())
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
        assert!(lines(bytes::Bytes::from_static(b"PAR1 not really"), |_| none += 1).is_err());
        assert_eq!(none, 0);
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
        lines(counting, |_| rows += 1).unwrap();
        assert_eq!(rows, 10_001);
        let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            largest > 0 && largest * 5 < size,
            "a read of {largest} bytes of a {size}-byte file of 10 row groups"
        );
    }
}
