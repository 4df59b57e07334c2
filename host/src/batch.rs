//! The unit that flows between pipeline components.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A batch of lines from one stream (a file, stdin, a shard).
#[derive(Debug, Clone)]
pub struct LineBatch {
    /// The lines, each terminated by `\n`.
    pub text: String,
    /// How many lines `text` holds.
    pub lines: usize,
    /// Identity of the stream the lines came from (file path, `stdin`, ...).
    pub stream: Arc<str>,
    /// True on the first batch of the stream: its first line may be an S3 header.
    pub stream_start: bool,
    /// True on the last batch of the stream, so per-stream state (the format set by an
    /// S3 header line) can be dropped.
    pub stream_end: bool,
    /// Acknowledgements released when every holder has dropped this batch (sources with
    /// checkpoints set them; transforms pass them on to what they emit).
    pub acks: Vec<Arc<crate::sources::aws_kinesis::checkpoint::Ack>>,
    /// The share of its source's [`ByteBudget`] this batch's text takes, given back
    /// when every holder has dropped it (a transform passes it on to what it emits).
    pub permit: Option<Arc<Permit>>,
    /// The same records as columns, when a `wasm` transform made them for a consumer
    /// that aggregates (then `text` may be empty: JSON is rendered only when some
    /// consumer needs it).
    pub columns: Option<Arc<Columns>>,
}

impl LineBatch {
    /// A batch of the lines in `text` (counted), in the middle of stream `stream`, with no
    /// acknowledgements, budget share or columns.
    pub fn of_text(stream: &str, text: String) -> LineBatch {
        LineBatch {
            lines: memchr::memchr_iter(b'\n', text.as_bytes()).count(),
            text,
            stream: stream.into(),
            stream_start: false,
            stream_end: false,
            acks: Vec::new(),
            permit: None,
            columns: None,
        }
    }
}

/// A batch's records as columns: each record's owners and the fields a consumer asked
/// for, with what reading them takes (the text the ranges point into, the table
/// snapshot the owner ids belong to).
pub struct Columns {
    /// The field names, in column order.
    pub names: Arc<[String]>,
    /// Kinds, values and owners, as the component handed them over.
    pub raw: crate::runtime::RawColumns,
    /// The batch the records were made of: text columns are ranges of its text.
    pub input: SharedBatch,
    /// The snapshot the owner ids belong to.
    pub table: Arc<crate::metadata::Table>,
}

/// One column value of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `-`, or a field the format lacks.
    Null,
    /// An integer field.
    Integer(u64),
    /// Any other field, as the line holds it (not JSON-escaped).
    Text(&'a str),
}

impl Columns {
    /// How many records.
    pub fn rows(&self) -> usize {
        self.raw.owners.len() / 2
    }

    /// The column named `name`, if there is one.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Record `row`'s value of column `column`.
    pub fn value(&self, row: usize, column: usize) -> Value<'_> {
        let value = self.raw.values[row * self.names.len() + column];
        if value == u64::MAX {
            return Value::Null;
        }
        match self.raw.kinds[column] {
            crate::runtime::ColumnKind::Integer => Value::Integer(value),
            // The runtime checked every range against this text.
            crate::runtime::ColumnKind::Text => Value::Text(
                self.input
                    .text
                    .get((value >> 32) as usize..value as u32 as usize)
                    .unwrap_or_default(),
            ),
        }
    }

    /// Record `row`'s source and destination owners.
    pub fn owners(&self, row: usize) -> (u32, u32) {
        (self.raw.owners[2 * row], self.raw.owners[2 * row + 1])
    }

    /// The owner id of record `row`'s source (`side` 0) or destination (1).
    pub fn owner(&self, row: usize, side: usize) -> u32 {
        self.raw.owners[2 * row + side]
    }
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Columns")
            .field("names", &self.names)
            .field("rows", &self.rows())
            .finish_non_exhaustive()
    }
}

/// A bound on the bytes of a source's batches alive anywhere in the pipeline together
/// (inflated text, in channels, transforms and sinks): the source waits before sending
/// a batch that would go over it.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    state: Arc<(Mutex<usize>, Condvar)>,
    limit: usize,
}

/// Bytes taken from a [`ByteBudget`], given back when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: ByteBudget,
    bytes: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> ByteBudget {
        ByteBudget {
            state: Arc::default(),
            limit,
        }
    }

    /// Takes `bytes`, waiting while they do not fit. A batch larger than the whole
    /// budget goes once nothing else is in flight. Gives up waiting (and takes them
    /// anyway) once `stop` is set, so a shutdown never waits on it: whoever sets `stop`
    /// calls [`ByteBudget::wake`] after. Returns the permit and whether it had to wait.
    pub fn acquire(&self, bytes: usize, stop: &AtomicBool) -> (Arc<Permit>, bool) {
        let (lock, freed) = &*self.state;
        let mut used = lock.lock().expect("budget lock");
        let mut waited = false;
        while *used > 0 && *used + bytes > self.limit && !stop.load(Ordering::Relaxed) {
            waited = true;
            used = freed.wait(used).expect("budget lock");
        }
        *used += bytes;
        drop(used);
        (
            Arc::new(Permit {
                budget: self.clone(),
                bytes,
            }),
            waited,
        )
    }

    /// Wakes every waiter, to look at its `stop` flag again.
    pub fn wake(&self) {
        let (lock, freed) = &*self.state;
        drop(lock.lock().expect("budget lock"));
        freed.notify_all();
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        *self.state.0.lock().expect("budget lock")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let (lock, freed) = &*self.budget.state;
        *lock.lock().expect("budget lock") -= self.bytes;
        freed.notify_all();
    }
}

/// Batches are shared between the consumers of one output.
pub type SharedBatch = Arc<LineBatch>;

/// Appends one raw line (with or without its `\n`) to batch text, replacing invalid UTF-8.
pub fn push_line(text: &mut String, raw: &[u8]) {
    match std::str::from_utf8(raw) {
        Ok(line) => text.push_str(line),
        Err(_) => text.push_str(&String::from_utf8_lossy(raw)),
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_budget_waits_until_bytes_are_given_back() {
        let budget = ByteBudget::new(100);
        let stop = AtomicBool::new(false);
        let (a, waited) = budget.acquire(60, &stop);
        assert!(!waited);
        // More than the whole budget goes when nothing else is in flight.
        let other = ByteBudget::new(10);
        let (big, waited) = other.acquire(1000, &stop);
        assert!(!waited);
        drop(big);
        assert_eq!(other.used(), 0);
        let taker = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                let (b, waited) = budget.acquire(60, &stop);
                (b.bytes, waited)
            })
        };
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(budget.used(), 60, "the second 60 waits");
        drop(a);
        assert_eq!(taker.join().unwrap(), (60, true));
        assert_eq!(budget.used(), 0);
        // A stop ends the wait, also one already waiting.
        let (_c, _) = budget.acquire(90, &stop);
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (budget, stop) = (budget.clone(), stop.clone());
            std::thread::spawn(move || budget.acquire(90, &stop).1)
        };
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        budget.wake();
        assert!(
            waiter.join().unwrap(),
            "it waited, and the stop ended the wait"
        );
        let (_d, waited) = budget.acquire(90, &stop);
        assert!(!waited);
    }
}
