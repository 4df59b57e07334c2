//! The publication log of `druid` sinks for a source that shares its stream through a
//! lease table ([`crate::sources::aws_kinesis::leases`]): what a host publishes is logged in the lease row of
//! the shard it covers, so a host that takes the shard over (after a crash, a kill -9,
//! a handoff) knows what its last owner published and what it left half done.
//!
//! In a fleet a publication covers **one shard** (one holding of its lease): only the
//! holder of a lease writes its row, so one conditional write begins or ends a
//! publication, and only the next holder settles what a crash left. The price is rows
//! per shard instead of per host; Druid rolls them up again at ingestion.
//!
//! The steps, each a write conditional on `leaseOwner` being this worker and
//! `leaseEpoch` this holding's token:
//!
//! 1. **begin**: the rows go, gzipped in chunks of 256 KiB of text, to items of the table
//!    `<table>-publications` (`key` = `<publication id>#<n>`, `rows` = the bytes,
//!    `expiresAt` = a week on, for DynamoDB's TTL if enabled); then the lease row gets
//!    `publication_<sink>` (the id, when it began, the sequence number it covers, rows
//!    and chunks). If the condition fails the holding is gone: nothing is written, and
//!    the batches are left to the next holder, which reads them again.
//! 2. **write**: the rows go to the output stream (each carrying its id), but only while
//!    the holding is valid by this host's clock (the same rule as reading: it ends
//!    before anyone else may take the lease).
//! 3. **end**: `published_<sink>` is set to the covered sequence number and
//!    `publication_<sink>` removed, conditional also on it naming this publication;
//!    then the chunks are deleted (leftovers only cost storage).
//!
//! A new holder that finds `publication_<sink>` in the row it took waits until a write
//! the last owner started before its holding ran out has been applied or given up (the
//! AWS clients' attempt timeout), then settles it as one host does: reads the output
//! stream back, writes the rows that are missing, ends it. Its reading ends batches at
//! the covered and published sequence numbers, and skips those wholly published.

use crate::sources::aws_kinesis::checkpoint::Publication;
use crate::sources::aws_kinesis::leases::{
    HeldView, LeaseError, LeaseSpec, LeaseTable, publication_attribute, published_attribute,
};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use std::io::{Read, Write};

/// Text of rows per chunk item, before gzip (an item holds at most 400 KB).
const CHUNK_BYTES: usize = 256 * 1024;

/// How long leftover chunks are kept, for a TTL on `expiresAt`.
const CHUNK_TTL_SECS: u64 = 7 * 24 * 3600;

/// A host's side of the publication log in a lease table, for `druid` sinks (which call
/// it from their own threads: it has a client of its own and runs on the shared runtime).
pub struct LeaseLog {
    table: LeaseTable,
    runtime: &'static tokio::runtime::Runtime,
    view: HeldView,
}

use super::table::s;

impl LeaseLog {
    /// A log in `spec`'s table, writing under the leases `view` shows held.
    pub fn new(spec: &LeaseSpec, view: HeldView) -> LeaseLog {
        let runtime = crate::aws::runtime();
        let table = runtime.block_on(LeaseTable::connect(spec));
        LeaseLog {
            table,
            runtime,
            view,
        }
    }

    /// Whether this host holds `shard` in holding `epoch` and may write under it now.
    pub fn holds(&self, shard: &str, epoch: &str) -> bool {
        self.view.holds(shard, epoch)
    }

    /// Step 1: stores `rows` and names `publication` in `shard`'s lease row (setting
    /// its `chunks`). `Ok(false)`: the holding `epoch` is gone.
    pub fn begin(
        &self,
        shard: &str,
        epoch: &str,
        sink: &str,
        publication: &mut Publication,
        rows: &[String],
    ) -> Result<bool, LeaseError> {
        let chunks = chunk(rows);
        publication.chunks = chunks.len();
        let header = serde_json::to_string(&*publication).expect("publications serialise");
        self.runtime.block_on(async {
            let expires = (crate::util::epoch_seconds() as u64 + CHUNK_TTL_SECS).to_string();
            let puts = chunks.into_iter().enumerate().map(|(n, bytes)| {
                self.table
                    .client()
                    .put_item()
                    .table_name(self.table.publications_table())
                    .item("key", s(&chunk_key(&publication.id, n)))
                    .item("rows", AttributeValue::B(Blob::new(bytes)))
                    .item("expiresAt", AttributeValue::N(expires.clone()))
                    .send()
            });
            for put in futures_util::future::join_all(puts).await {
                put.map_err(|e| self.table.error("PutItem (rows)", e.into_service_error()))?;
            }
            let begun = self
                .table
                .update_named(
                    "UpdateItem (begin publication)",
                    shard,
                    "SET #publication = :header",
                    "leaseOwner = :me AND leaseEpoch = :epoch",
                    &[
                        (":header", s(&header)),
                        (":me", s(self.table.worker())),
                        (":epoch", s(epoch)),
                    ],
                    &[("#publication", publication_attribute(sink))],
                )
                .await?;
            Ok(begun.is_some())
        })
    }

    /// The rows of `publication` (a pending one found in a lease row).
    pub fn rows(&self, publication: &Publication) -> Result<Vec<String>, LeaseError> {
        self.runtime.block_on(async {
            let mut rows = Vec::with_capacity(publication.rows);
            for n in 0..publication.chunks {
                let key = chunk_key(&publication.id, n);
                let item = self
                    .table
                    .client()
                    .get_item()
                    .table_name(self.table.publications_table())
                    .key("key", s(&key))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| self.table.error("GetItem (rows)", e.into_service_error()))?;
                let bytes = item
                    .item()
                    .and_then(|item| item.get("rows"))
                    .and_then(|v| v.as_b().ok())
                    .ok_or_else(|| self.invalid(&key, "the chunk of rows is missing"))?;
                let mut text = String::new();
                flate2::read::GzDecoder::new(bytes.as_ref())
                    .read_to_string(&mut text)
                    .map_err(|e| self.invalid(&key, &format!("the chunk is not gzip text: {e}")))?;
                rows.extend(text.lines().map(str::to_string));
            }
            if rows.len() != publication.rows {
                return Err(self.invalid(
                    &publication.id,
                    &format!("{} rows stored for {}", rows.len(), publication.rows),
                ));
            }
            Ok(rows)
        })
    }

    /// Step 3: `shard` is published up to `sequence` and `publication` is no longer
    /// pending; its chunks go. `Ok(false)`: the holding `epoch` is gone.
    pub fn end(
        &self,
        shard: &str,
        epoch: &str,
        sink: &str,
        publication: &Publication,
        sequence: &str,
    ) -> Result<bool, LeaseError> {
        let ended = self.runtime.block_on(async {
            let ended = self
                .table
                .update_named(
                    "UpdateItem (end publication)",
                    shard,
                    "SET #published = :sequence REMOVE #publication",
                    "leaseOwner = :me AND leaseEpoch = :epoch AND contains(#publication, :id)",
                    &[
                        (":sequence", s(sequence)),
                        (":me", s(self.table.worker())),
                        (":epoch", s(epoch)),
                        (":id", s(&format!("\"id\":\"{}\"", publication.id))),
                    ],
                    &[
                        ("#published", published_attribute(sink)),
                        ("#publication", publication_attribute(sink)),
                    ],
                )
                .await?;
            if ended.is_some() {
                return Ok(true);
            }
            // The condition failed: the holding is gone, or an earlier attempt that
            // timed out was applied after all.
            let now = self.table.get(shard).await?;
            Ok(now.is_some_and(|lease| {
                lease.owner.as_deref() == Some(self.table.worker())
                    && lease.epoch.as_deref() == Some(epoch)
                    && lease
                        .publications
                        .get(sink)
                        .is_none_or(|p| p.id != publication.id)
            }))
        })?;
        if ended {
            self.runtime.block_on(async {
                for n in 0..publication.chunks {
                    let deleted = self
                        .table
                        .client()
                        .delete_item()
                        .table_name(self.table.publications_table())
                        .key("key", s(&chunk_key(&publication.id, n)))
                        .send()
                        .await;
                    if let Err(error) = deleted {
                        tracing::warn!(message = "Cannot delete the rows of an ended publication; they stay.", publication = %publication.id, error = %error.into_service_error());
                    }
                }
            });
        }
        Ok(ended)
    }

    fn invalid(&self, key: &str, problem: &str) -> LeaseError {
        LeaseError::Invalid {
            table: self.table.publications_table(),
            key: key.to_string(),
            problem: problem.to_string(),
        }
    }
}

fn chunk_key(id: &str, n: usize) -> String {
    format!("{id}#{n}")
}

/// `rows` as gzipped chunks of at most [`CHUNK_BYTES`] of text (one row may make a chunk
/// larger; rows are far smaller than an item).
fn chunk(rows: &[String]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut text = String::new();
    let mut flush = |text: &mut String| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip to memory");
        chunks.push(gz.finish().expect("gzip to memory"));
        text.clear();
    };
    for row in rows {
        if !text.is_empty() && text.len() + row.len() + 1 > CHUNK_BYTES {
            flush(&mut text);
        }
        text.push_str(row);
        text.push('\n');
    }
    if !text.is_empty() {
        flush(&mut text);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_into_chunks_of_bounded_text_and_come_back_whole() {
        let rows: Vec<String> = (0..20_000)
            .map(|n| format!("{{\"timestamp\":{n},\"flows\":1,\"publication\":\"p/{n}\"}}"))
            .collect();
        let chunks = chunk(&rows);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let mut back = Vec::new();
        for bytes in &chunks {
            let mut text = String::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .unwrap();
            assert!(text.len() <= CHUNK_BYTES);
            back.extend(text.lines().map(str::to_string));
        }
        assert_eq!(back, rows);
        assert!(chunk(&[]).is_empty());
    }
}
