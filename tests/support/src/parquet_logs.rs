//! Parquet flow-log files shaped like AWS's Parquet delivery (one column per field,
//! `_` for `-` in names, AWS's column types, Gzip pages), for tests and benchmarks.

use parquet::basic::{Compression, GzipLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::sync::Arc;

/// The default (v2) fields with AWS's Parquet types.
const V2: [(&str, &str); 14] = [
    ("version", "int32"),
    ("account_id", "string"),
    ("interface_id", "string"),
    ("srcaddr", "string"),
    ("dstaddr", "string"),
    ("srcport", "int32"),
    ("dstport", "int32"),
    ("protocol", "int64"),
    ("packets", "int64"),
    ("bytes", "int64"),
    ("start", "int64"),
    ("end", "int64"),
    ("action", "string"),
    ("log_status", "string"),
];

/// A Parquet file of default-format (v2) text `lines` (`-`: null), `group_rows` rows per
/// row group.
pub fn v2_parquet(lines: &str, group_rows: usize) -> Vec<u8> {
    let rows: Vec<Vec<&str>> = lines
        .lines()
        .map(|l| l.split_ascii_whitespace().collect())
        .collect();
    let fields: Vec<String> = V2
        .iter()
        .map(|(name, kind)| match *kind {
            "string" => format!("optional binary {name} (UTF8);"),
            kind => format!("optional {kind} {name};"),
        })
        .collect();
    let schema = format!("message flow_logs {{ {} }}", fields.join(" "));
    let schema = Arc::new(parquet::schema::parser::parse_message_type(&schema).unwrap());
    let properties = WriterProperties::builder()
        .set_compression(Compression::GZIP(GzipLevel::default()))
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties)).unwrap();
    for group in rows.chunks(group_rows.max(1)) {
        let mut row_group = writer.next_row_group().unwrap();
        let mut at = 0;
        while let Some(mut column) = row_group.next_column().unwrap() {
            let values: Vec<Option<&str>> = group
                .iter()
                .map(|row| row.get(at).copied().filter(|v| *v != "-"))
                .collect();
            let levels: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
            let present = values.iter().flatten();
            match V2[at].1 {
                "int32" => {
                    let values: Vec<i32> = present.map(|v| v.parse().unwrap()).collect();
                    column
                        .typed::<Int32Type>()
                        .write_batch(&values, Some(&levels), None)
                        .unwrap();
                }
                "int64" => {
                    let values: Vec<i64> = present.map(|v| v.parse().unwrap()).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&values, Some(&levels), None)
                        .unwrap();
                }
                _ => {
                    let values: Vec<ByteArray> = present.map(|v| ByteArray::from(*v)).collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&levels), None)
                        .unwrap();
                }
            }
            column.close().unwrap();
            at += 1;
        }
        row_group.close().unwrap();
    }
    writer.into_inner().unwrap()
}
