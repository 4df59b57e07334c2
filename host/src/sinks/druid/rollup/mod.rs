//! The rollup: enriched flows summed per time bucket and dimensions, as Druid's own
//! rollup sums them, grouped on compact keys. A key is the bucket and one code per
//! *slot*: each side's attribute dimensions (`src_app`, `src_region`, ...) share one
//! slot, and every other dimension has a slot of its own. A slot's code stands for its
//! members as they are rendered in a row (`,"src_app":"api","src_region":"eu-west-1"`),
//! so rows render by copying one text per slot.
//!
//! Records come in two shapes: JSON lines (read on a fast path without allocating, see
//! [`json`]), or a `wasm` transform's columns (see [`columns`]), where a side's code is
//! found from the owner id once per owner and table snapshot. Both give the same rows.
//! Rows are found through an index of their own (see [`index`]), a batch's records
//! keyed first and then added with the index slots and rows of the records ahead
//! prefetched.

mod columns;
mod drained;
mod index;
mod json;

pub use columns::Router;
pub use drained::Drained;

use crate::util::prefetch_ptr;
use drained::{METRIC_KEYS, push_decimal};
use hashbrown::HashTable;
use index::RowIndex;
use serde_json::Value;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::mpsc;

/// A piece of rows rendered: their NDJSON text and where each row ends in it.
type Rendered = (String, Vec<usize>);

/// Flows rolled up in memory until the next flush: each row's key (its bucket's code and
/// one code per slot) in one flat arena, with its sums beside it.
pub struct Rollup {
    dimensions: Vec<String>,
    granularity: u64,
    /// The key's slots after the bucket.
    slots: Vec<Slot>,
    /// Row `r` is `keys[r * stride..][..stride]`: its key (its bucket's code, then
    /// each slot's code), then its flows, bytes and packets as pairs of `u32` halves,
    /// so that finding a row and adding to it touch the same cache line.
    keys: Vec<u32>,
    /// The buckets (start / granularity) seen since the last drain, by code.
    buckets: Vec<u64>,
    /// Bucket codes by bucket, and the last one looked up.
    bucket_codes: rustc_hash::FxHashMap<u64, u32>,
    last_bucket: Option<(u64, u32)>,
    /// Row numbers, found by their key's hash.
    rows: RowIndex,
    /// The key being built for the current record (reused).
    key: Vec<u32>,
    /// Records keyed but not added yet (reused).
    pending: Pending,
    /// A slot's members being rendered for the current record (reused).
    members: String,
    /// Each dimension's JSON text in the current line (reused).
    values: Vec<(usize, usize)>,
    /// What the n-th member of the last line was: lines of one format list their keys in
    /// the same order, so one comparison per member tells what it is.
    roles: Vec<(Box<str>, Role)>,
    /// How the columns of the last batch map to the dimensions.
    plan: Option<columns::Plan>,
    /// Threads rendering rows at a drain.
    threads: usize,
}

/// Records keyed, waiting to be added to their rows: a batch adds them in one pass that
/// asks for the index slots and rows of the records a few places ahead while it adds
/// this one, so that their cache misses overlap instead of coming one after another.
#[derive(Default)]
struct Pending {
    /// Each record's key, one after the other.
    keys: Vec<u32>,
    /// Each key's hash.
    hashes: Vec<u64>,
    /// Each record's flows, bytes and packets.
    sums: Vec<[u64; 3]>,
}

impl Pending {
    fn clear(&mut self) {
        self.keys.clear();
        self.hashes.clear();
        self.sums.clear();
    }
}

/// Records kept pending at most (then added).
const PENDING_RECORDS: usize = 1024;
/// How many records ahead of the one being added the index slot is asked for.
const SLOTS_AHEAD: usize = 16;
/// How many records ahead the row the slot names is asked for (the slot has arrived
/// by then).
const ROWS_AHEAD: usize = 8;

/// How many rows ahead of the one being rendered its key is asked for, then where the
/// texts its codes name are (each dictionary's ends), then the texts.
const RENDER_KEYS_AHEAD: usize = 24;
const RENDER_ENDS_AHEAD: usize = 16;
const RENDER_TEXTS_AHEAD: usize = 8;

/// Dimensions that share one code in the key.
struct Slot {
    /// Their indexes in the dimensions.
    dimensions: Vec<usize>,
    /// Each one's `,"name":` in a row.
    names: Vec<String>,
    /// The members' texts seen since the last drain, each with a code.
    members: Dictionary,
}

impl Slot {
    /// Renders the slot's members into `out` (cleared first): each dimension's name,
    /// then its value (JSON text) as `value(d, out)` appends it.
    fn render(&self, out: &mut String, mut value: impl FnMut(usize, &mut String)) {
        out.clear();
        for (name, &d) in self.names.iter().zip(&self.dimensions) {
            out.push_str(name);
            value(d, out);
        }
    }
}

/// What a member of an enriched flow counts as: a metric, a dimension, both, or neither.
#[derive(Clone, Copy)]
struct Role {
    /// 0 for `start`, 1 for `bytes`, 2 for `packets`.
    metric: Option<u8>,
    /// Its place in the dimensions.
    dimension: Option<usize>,
}

/// Distinct texts, each with a code: its place in the order they came. Each text is held
/// once, all of them one after another in one arena (no allocation per text).
#[derive(Default)]
struct Dictionary {
    index: HashTable<u32>,
    /// Every text, in code order.
    arena: String,
    /// Where each code's text ends in `arena`.
    ends: Vec<usize>,
    /// Each code's hash, so that growing the index reads no text.
    hashes: Vec<u64>,
}

fn hash_text(text: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(text)
}

/// Where `code`'s text is in a dictionary's arena, given where every text ends.
fn span(ends: &[usize], code: u32) -> std::ops::Range<usize> {
    let code = code as usize;
    let start = if code == 0 { 0 } else { ends[code - 1] };
    start..ends[code]
}

impl Dictionary {
    /// The code of `text`, given one if it is new.
    fn code(&mut self, text: &str) -> u32 {
        let hash = hash_text(text);
        let (arena, ends, hashes) = (&mut self.arena, &mut self.ends, &mut self.hashes);
        if let Some(&code) = self.index.find(hash, |&c| arena[span(ends, c)] == *text) {
            return code;
        }
        let code = ends.len() as u32;
        arena.push_str(text);
        ends.push(arena.len());
        hashes.push(hash);
        self.index
            .insert_unique(hash, code, |&c| hashes[c as usize]);
        code
    }

    /// The text of `code`.
    fn text(&self, code: u32) -> &str {
        &self.arena[span(&self.ends, code)]
    }

    /// Asks for where the text of `code` is (see [`Dictionary::prefetch_text`]).
    #[inline(always)]
    fn prefetch_span(&self, code: u32) {
        // The text runs from the end before it to its own; the two share a cache line
        // unless its own starts one.
        prefetch_ptr(self.ends.as_ptr().wrapping_add(code as usize));
        prefetch_ptr(
            self.ends
                .as_ptr()
                .wrapping_add((code as usize).wrapping_sub(1)),
        );
    }

    /// Asks for every cache line of the text of `code` (its span should have arrived).
    #[inline(always)]
    fn prefetch_text(&self, code: u32) {
        let span = span(&self.ends, code);
        crate::util::prefetch_bytes(self.arena.as_ptr().wrapping_add(span.start), span.len());
    }

    /// Every text, in code order.
    fn texts(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len() as u32).map(|code| self.text(code))
    }

    /// Each code's rank in the texts' sorted order.
    fn ranks(&self) -> Vec<u32> {
        rank_texts(&self.texts().collect::<Vec<_>>())
    }

    fn clear(&mut self) {
        self.index.clear();
        self.arena.clear();
        self.ends.clear();
        self.hashes.clear();
    }
}

/// Each element's rank in the sorted order of `values`.
fn rank_of<T: Ord>(values: &[T]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| values[a as usize].cmp(&values[b as usize]));
    let mut ranks = vec![0; order.len()];
    for (rank, code) in order.into_iter().enumerate() {
        ranks[code as usize] = rank as u32;
    }
    ranks
}

/// Each text's rank in the sorted order of `texts`, as [`rank_of`] gives it, sorted
/// mostly on numbers: a slot's members share a long beginning (`,"src_app":"`), so the
/// texts are sorted on the 8 bytes after what they all share, read as one big-endian
/// number (zero bytes past a text's end), and only texts whose 8 bytes are the same are
/// compared whole.
fn rank_texts(texts: &[&str]) -> Vec<u32> {
    let Some(first) = texts.first() else {
        return Vec::new();
    };
    let shared = texts.iter().fold(first.len(), |shared, text| {
        first.as_bytes()[..shared]
            .iter()
            .zip(text.as_bytes())
            .take_while(|(a, b)| a == b)
            .count()
    });
    let prefix_key = |text: &str| {
        let mut bytes = [0u8; 8];
        let rest = &text.as_bytes()[shared..];
        let n = rest.len().min(8);
        bytes[..n].copy_from_slice(&rest[..n]);
        u64::from_be_bytes(bytes)
    };
    let mut order: Vec<(u64, u32)> = texts
        .iter()
        .enumerate()
        .map(|(code, text)| (prefix_key(text), code as u32))
        .collect();
    order.sort_unstable();
    // A shorter text and a longer one can share a key (zero bytes, or more than 8 bytes
    // alike): those are put in order by their whole texts.
    for run in order.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| texts[a.1 as usize].cmp(texts[b.1 as usize]));
        }
    }
    let mut ranks = vec![0; order.len()];
    for (rank, (_, code)) in order.into_iter().enumerate() {
        ranks[code as usize] = rank as u32;
    }
    ranks
}

/// `u32`s of a row's flows, bytes and packets.
const SUM_WORDS: usize = 6;

/// How a drain sorts its rows: on each key's ranks packed into one number with the
/// row's (when all fit in 64 bits), packed beside it (in 128), or compared rank by rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    Packed64,
    Packed128,
    Ranks,
}

/// How many rows [`Rollup::drain_each`] renders in one piece, about 4 MiB (two in unit
/// tests, so that their buckets come in several pieces).
const DRAIN_PIECE_ROWS: usize = if cfg!(test) { 2 } else { 16_384 };

fn hash_key(key: &[u32]) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    index::mix(hasher.finish())
}

/// Adds `add` (flows, bytes, packets) to the row of `key` (whose hash is `hash`) in
/// `keys`, which `rows` indexes; a new key makes a new row.
#[inline(always)]
fn add_to_row(keys: &mut Vec<u32>, rows: &mut RowIndex, key: &[u32], hash: u64, add: [u64; 3]) {
    let width = key.len();
    let stride = width + SUM_WORDS;
    let new_row = (keys.len() / stride) as u32;
    let (row, new) = rows.find_or_insert(
        hash,
        new_row,
        |row| keys[row as usize * stride..][..width] == *key,
        |row| hash_key(&keys[row as usize * stride..][..width]),
    );
    if new {
        if keys.len() == keys.capacity() {
            // Grown by a quarter, not doubled: rows are most of the sink's memory.
            keys.reserve_exact((row as usize / 4).max(1024) * stride);
        }
        keys.extend_from_slice(key);
        keys.extend_from_slice(&[0; SUM_WORDS]);
    }
    let sums = &mut keys[row as usize * stride + width..][..SUM_WORDS];
    for (at, add) in add.into_iter().enumerate() {
        let value =
            (u64::from(sums[2 * at + 1]) << 32 | u64::from(sums[2 * at])).saturating_add(add);
        sums[2 * at] = value as u32;
        sums[2 * at + 1] = (value >> 32) as u32;
    }
}

/// Why a line was not rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Not a JSON object.
    InvalidJson,
    /// No integer `start` to put it in a bucket.
    NoStart,
}

impl Rollup {
    /// An empty rollup on `dimensions` with buckets of `granularity` seconds.
    pub fn new(dimensions: &[String], granularity: u64) -> Rollup {
        // One slot per side's attributes, in order of first appearance, then one per
        // other dimension.
        let mut slot_dimensions: Vec<Vec<usize>> = Vec::new();
        let mut sides: [Option<usize>; 2] = [None, None];
        for (d, dimension) in dimensions.iter().enumerate() {
            let side = ["src_", "dst_"]
                .iter()
                .position(|p| dimension.starts_with(p));
            match side.and_then(|side| sides[side]) {
                Some(slot) => slot_dimensions[slot].push(d),
                None => {
                    if let Some(side) = side {
                        sides[side] = Some(slot_dimensions.len());
                    }
                    slot_dimensions.push(vec![d]);
                }
            }
        }
        let slots = slot_dimensions
            .into_iter()
            .map(|dims| Slot {
                names: dims
                    .iter()
                    .map(|&d| format!(",{}:", Value::String(dimensions[d].clone())))
                    .collect(),
                dimensions: dims,
                members: Dictionary::default(),
            })
            .collect();
        Rollup {
            dimensions: dimensions.to_vec(),
            granularity: granularity.max(1),
            slots,
            keys: Vec::new(),
            buckets: Vec::new(),
            bucket_codes: Default::default(),
            last_bucket: None,
            rows: RowIndex::default(),
            key: Vec::new(),
            pending: Pending::default(),
            members: String::new(),
            values: Vec::new(),
            roles: Vec::new(),
            plan: None,
            threads: 1,
        }
    }

    /// The rollup, rendering rows on `threads` threads (at least one) at a drain.
    pub fn with_threads(mut self, threads: usize) -> Rollup {
        self.threads = threads.max(1);
        self
    }

    /// Adds one enriched flow (a JSON object).
    pub fn add(&mut self, line: &str) -> Result<(), Skipped> {
        // Each dimension's value as a range of `line`, or of `owned` for the slow path.
        let mut owned = String::new();
        self.values.clear();
        self.values.resize(self.dimensions.len(), (0, 0));
        let (mut start, mut bytes, mut packets) = (None, None, None);
        let dimensions = &self.dimensions;
        let values = &mut self.values;
        let base = line.as_ptr() as usize;
        let roles = &mut self.roles;
        let mut member = 0;
        let fast = json::flat_members(line, |key, value| {
            let role = match roles.get(member) {
                Some((known, role)) if **known == *key => *role,
                _ => {
                    let role = Role {
                        metric: ["start", "bytes", "packets"]
                            .iter()
                            .position(|m| *m == key)
                            .map(|m| m as u8),
                        dimension: dimensions.iter().position(|d| d == key),
                    };
                    roles.truncate(member);
                    roles.push((key.into(), role));
                    role
                }
            };
            member += 1;
            let number = || value.parse::<u64>().ok();
            match role.metric {
                Some(0) => start = number(),
                Some(1) => bytes = number(),
                Some(2) => packets = number(),
                _ => {}
            }
            if let Some(at) = role.dimension {
                let offset = value.as_ptr() as usize - base;
                values[at] = (offset, offset + value.len());
            }
        });
        let text: &str = if fast.is_some() {
            line
        } else {
            // Not a flat object: parse it properly (or reject it).
            let flow: Value = serde_json::from_str(line).map_err(|_| Skipped::InvalidJson)?;
            let object = flow.as_object().ok_or(Skipped::InvalidJson)?;
            start = object.get("start").and_then(Value::as_u64);
            bytes = object.get("bytes").and_then(Value::as_u64);
            packets = object.get("packets").and_then(Value::as_u64);
            for (at, dimension) in dimensions.iter().enumerate() {
                let value = object.get(dimension).unwrap_or(&Value::Null).to_string();
                values[at] = (owned.len(), owned.len() + value.len());
                owned.push_str(&value);
            }
            &owned
        };
        let bucket = self.bucket(start)?;
        self.start_key(bucket);
        for slot in &mut self.slots {
            let values = &self.values;
            slot.render(&mut self.members, |d, out| {
                let (from, to) = values[d];
                // A dimension the flow lacks is null.
                out.push_str(if from == to { "null" } else { &text[from..to] });
            });
            self.key.push(slot.members.code(&self.members));
        }
        self.sum([1, bytes.unwrap_or(0), packets.unwrap_or(0)]);
        Ok(())
    }

    /// The bucket number of a flow that starts at `start`.
    fn bucket(&self, start: Option<u64>) -> Result<u64, Skipped> {
        // A start beyond what milliseconds can hold is no time.
        let start = start
            .filter(|&s| s.checked_mul(1000).is_some())
            .ok_or(Skipped::NoStart)?;
        Ok(start / self.granularity)
    }

    /// Starts the key of a record in `bucket`.
    fn start_key(&mut self, bucket: u64) {
        let code = match self.last_bucket {
            Some((last, code)) if last == bucket => code,
            _ => {
                let next = self.buckets.len() as u32;
                let code = *self.bucket_codes.entry(bucket).or_insert(next);
                if code == next {
                    self.buckets.push(bucket);
                }
                self.last_bucket = Some((bucket, code));
                code
            }
        };
        self.key.clear();
        self.key.push(code);
    }

    /// Adds `add` (flows, bytes, packets) to the row whose key is in `self.key`.
    fn sum(&mut self, add: [u64; 3]) {
        let hash = hash_key(&self.key);
        add_to_row(&mut self.keys, &mut self.rows, &self.key, hash, add);
    }

    /// Keeps the record whose key is in `self.key` (with its flows, bytes and packets)
    /// to be added with the others pending.
    fn defer(&mut self, add: [u64; 3]) {
        let pending = &mut self.pending;
        pending.keys.extend_from_slice(&self.key);
        pending.hashes.push(hash_key(&self.key));
        pending.sums.push(add);
        if pending.hashes.len() == PENDING_RECORDS {
            self.add_pending();
        }
    }

    /// Adds the records pending to their rows.
    fn add_pending(&mut self) {
        let width = self.slots.len() + 1;
        let stride = width + SUM_WORDS;
        let Pending { keys, hashes, sums } = &mut self.pending;
        for &hash in hashes.iter().take(SLOTS_AHEAD) {
            self.rows.prefetch_slot(hash);
        }
        for (at, (&hash, &add)) in hashes.iter().zip(sums.iter()).enumerate() {
            if let Some(&ahead) = hashes.get(at + SLOTS_AHEAD) {
                self.rows.prefetch_slot(ahead);
            }
            if let Some(row) = hashes
                .get(at + ROWS_AHEAD)
                .and_then(|&ahead| self.rows.likely_row(ahead))
            {
                // A row may straddle two cache lines.
                let first = self.keys.as_ptr().wrapping_add(row as usize * stride);
                prefetch_ptr(first);
                prefetch_ptr(first.wrapping_add(stride - 1));
            }
            let key = &keys[at * width..][..width];
            add_to_row(&mut self.keys, &mut self.rows, key, hash, add);
        }
        self.pending.clear();
    }

    /// Row `row`'s flows, bytes and packets.
    fn sums(&self, row: usize) -> [u64; 3] {
        let width = self.slots.len() + 1;
        let sums = &self.keys[row * (width + SUM_WORDS) + width..][..SUM_WORDS];
        [0, 1, 2].map(|at| u64::from(sums[2 * at + 1]) << 32 | u64::from(sums[2 * at]))
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.keys.len() / (self.slots.len() + 1 + SUM_WORDS)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes the rows take (keys, sums, the table), without the slots' texts.
    pub fn row_bytes(&self) -> usize {
        self.keys.capacity() * 4 + self.rows.bytes()
    }

    /// Takes every row out, rendered as NDJSON in one text, ordered by bucket and
    /// dimension values.
    pub fn drain(&mut self) -> Drained {
        Rollup::drain_all(std::slice::from_mut(self))
    }

    /// [`Rollup::drain`] of shards: rollups on the same dimensions and granularity
    /// whose keys are apart (see [`Router`]). Each bucket's rows come shard after
    /// shard, each shard's in its own order.
    pub fn drain_all(rollups: &mut [Rollup]) -> Drained {
        let mut drained = Drained::default();
        let rows: usize = rollups.iter().map(Rollup::len).sum();
        let result: Result<usize, std::convert::Infallible> =
            Rollup::drain_pieces(rollups, false, |start, text, ends| {
                if drained.text.is_empty() {
                    // Room for all rows, at the first piece's bytes per row.
                    drained
                        .text
                        .reserve(text.len() / ends.len().max(1) * rows + text.len());
                    drained.ends.reserve(rows);
                }
                let base = drained.text.len();
                if drained.buckets.last().is_none_or(|&(b, _)| b != start) {
                    drained.buckets.push((start, drained.ends.len()));
                }
                drained.text.push_str(text);
                drained.ends.extend(ends.iter().map(|end| base + end));
                Ok(())
            });
        let Ok(_) = result;
        drained
    }

    /// Takes every row out, in bucket order, a few MiB at a time: `each` gets a bucket's
    /// start, some of its rows as NDJSON and where each row ends in that text (a bucket's
    /// rows may come in several calls, in order). The pieces are rendered on the
    /// rollup's threads ([`Rollup::with_threads`]: one by default, then on the caller's
    /// thread), so only that much text per thread is held at a time.
    /// Returns the number of rows; the first error of `each` stops the drain (the rows
    /// not given yet are dropped).
    pub fn drain_each<E>(
        &mut self,
        each: impl FnMut(u64, &str, &[usize]) -> Result<(), E>,
    ) -> Result<usize, E> {
        Rollup::drain_pieces(std::slice::from_mut(self), false, each)
    }

    /// [`Rollup::drain_each`] of shards (see [`Rollup::drain_all`]) for a writer: the
    /// pieces are rendered ahead, on as many threads of their own as the rollup with
    /// most has, while `each` writes the ones before.
    pub fn drain_each_of<E>(
        rollups: &mut [Rollup],
        each: impl FnMut(u64, &str, &[usize]) -> Result<(), E>,
    ) -> Result<usize, E> {
        Rollup::drain_pieces(rollups, true, each)
    }

    /// Drains `rollups` piece by piece into `each`: rendered `ahead` of it on threads
    /// of their own, or else on the caller's thread when the rollups render on one.
    fn drain_pieces<E>(
        rollups: &mut [Rollup],
        ahead: bool,
        mut each: impl FnMut(u64, &str, &[usize]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let orders: Vec<Vec<u32>> = rollups.iter().map(Rollup::order).collect();
        // Each bucket's rows in pieces: (the shard, the bucket's start, the piece's
        // rows), shard after shard within a bucket.
        let mut pieces: Vec<(&Rollup, u64, &[u32])> = Vec::new();
        for (rollup, order) in rollups.iter().zip(&orders) {
            let stride = rollup.slots.len() + 1 + SUM_WORDS;
            let bucket_of =
                |row: u32| -> u64 { rollup.buckets[rollup.keys[row as usize * stride] as usize] };
            for run in order.chunk_by(|&a, &b| bucket_of(a) == bucket_of(b)) {
                let start = bucket_of(run[0]) * rollup.granularity;
                pieces.extend(
                    run.chunks(DRAIN_PIECE_ROWS)
                        .map(|piece| (rollup, start, piece)),
                );
            }
        }
        // Stable: a bucket's pieces stay in shard and row order.
        pieces.sort_by_key(|&(_, start, _)| start);
        let rows = orders.iter().map(Vec::len).sum();
        let threads = rollups.iter().map(|r| r.threads).max().unwrap_or(1);
        let result = if pieces.len() > 1 && (ahead || threads > 1) {
            render_ahead(&pieces, threads, each).map(|()| rows)
        } else {
            // One piece, or one thread: nothing to render ahead of.
            let mut out = Rendered::default();
            pieces
                .iter()
                .try_for_each(|&(rollup, start, piece)| {
                    rollup.render(start, piece, &mut out);
                    each(start, &out.0, &out.1)
                })
                .map(|()| rows)
        };
        drop(pieces);
        for rollup in rollups {
            rollup.clear();
        }
        result
    }

    /// Renders `rows` of the bucket starting at `start` into `out` (cleared first): the
    /// text and where each row ends in it.
    fn render(&self, start: u64, rows: &[u32], out: &mut Rendered) {
        let width = self.slots.len() + 1;
        let stride = width + SUM_WORDS;
        let (text, ends) = out;
        text.clear();
        ends.clear();
        // Every row of the piece starts with the same timestamp.
        let mut opening = String::from("{\"timestamp\":");
        push_decimal(&mut opening, start * 1000);
        for (at, &row) in rows.iter().enumerate() {
            // Rows come in sorted order, not the order they were made in: ask for the
            // key of a row a few places ahead, and for the texts its codes name once
            // the key is there.
            if let Some(&ahead) = rows.get(at + RENDER_KEYS_AHEAD) {
                let first = self.keys.as_ptr().wrapping_add(ahead as usize * stride);
                prefetch_ptr(first);
                prefetch_ptr(first.wrapping_add(stride - 1));
            }
            if let Some(&ahead) = rows.get(at + RENDER_ENDS_AHEAD) {
                let key = &self.keys[ahead as usize * stride..][..width];
                for (slot, &code) in self.slots.iter().zip(&key[1..]) {
                    slot.members.prefetch_span(code);
                }
            }
            if let Some(&ahead) = rows.get(at + RENDER_TEXTS_AHEAD) {
                let key = &self.keys[ahead as usize * stride..][..width];
                for (slot, &code) in self.slots.iter().zip(&key[1..]) {
                    slot.members.prefetch_text(code);
                }
            }
            let key = &self.keys[row as usize * stride..][..width];
            text.push_str(&opening);
            for (slot, &code) in self.slots.iter().zip(&key[1..]) {
                text.push_str(slot.members.text(code));
            }
            for (name, sum) in METRIC_KEYS.iter().zip(self.sums(row as usize)) {
                text.push_str(name);
                push_decimal(text, sum);
            }
            text.push_str("}\n");
            ends.push(text.len());
        }
    }

    /// The rows in drain order: by bucket, then by each slot's members as their texts
    /// sort, so the order depends on the rows alone, not on the order flows came in.
    fn order(&self) -> Vec<u32> {
        self.order_by(None)
    }

    /// [`Rollup::order`], sorting the way `sort` says (it must fit), or else the first
    /// way that fits.
    fn order_by(&self, sort: Option<Sort>) -> Vec<u32> {
        let width = self.slots.len() + 1;
        let mut ranks: Vec<Vec<u32>> = vec![rank_of(&self.buckets)];
        ranks.extend(self.slots.iter().map(|s| s.members.ranks()));
        let keys = || {
            self.keys
                .chunks_exact(width + SUM_WORDS)
                .map(move |row| &row[..width])
        };
        let bits = |n: usize| usize::BITS - n.saturating_sub(1).leading_zeros();
        let widths: Vec<u32> = ranks.iter().map(|r| bits(r.len())).collect();
        let (rank_bits, row_bits) = (widths.iter().sum::<u32>(), bits(self.len()));
        // A key's ranks packed into one number, when they fit in 128 bits.
        let packed = |key: &[u32]| {
            key.iter()
                .zip(&ranks)
                .zip(&widths)
                .fold(0u128, |value, ((&code, ranks), &width)| {
                    (value << width) | u128::from(ranks[code as usize])
                })
        };
        let sort = sort.unwrap_or(if rank_bits + row_bits <= 64 {
            Sort::Packed64
        } else if rank_bits <= 128 {
            Sort::Packed128
        } else {
            Sort::Ranks
        });
        match sort {
            Sort::Packed64 => {
                // The row's number in the low bits: the sort moves 8 bytes per row.
                let mut order: Vec<u64> = keys()
                    .enumerate()
                    .map(|(row, key)| ((packed(key) as u64) << row_bits) | row as u64)
                    .collect();
                order.sort_unstable();
                let row_mask = (1u64 << row_bits) - 1;
                order.into_iter().map(|v| (v & row_mask) as u32).collect()
            }
            Sort::Packed128 => {
                let mut order: Vec<(u128, u32)> = keys()
                    .enumerate()
                    .map(|(row, key)| (packed(key), row as u32))
                    .collect();
                order.sort_unstable();
                order.into_iter().map(|(_, row)| row).collect()
            }
            Sort::Ranks => {
                let mut sort_keys: Vec<u32> = Vec::with_capacity(self.len() * width);
                for key in keys() {
                    sort_keys.extend(
                        key.iter()
                            .zip(&ranks)
                            .map(|(&code, ranks)| ranks[code as usize]),
                    );
                }
                let mut order: Vec<u32> = (0..self.len() as u32).collect();
                order.sort_unstable_by(|&a, &b| {
                    sort_keys[a as usize * width..][..width]
                        .cmp(&sort_keys[b as usize * width..][..width])
                });
                order
            }
        }
    }

    /// Forgets every row and code.
    pub(in crate::sinks::druid) fn clear(&mut self) {
        self.keys.clear();
        // Always empty between batches; cleared all the same.
        self.pending.clear();
        self.buckets.clear();
        self.bucket_codes.clear();
        self.last_bucket = None;
        self.rows.clear();
        for slot in &mut self.slots {
            slot.members.clear();
        }
        if let Some(plan) = &mut self.plan {
            plan.forget_codes();
        }
    }
}

/// `2023-11-14T22:13` style UTC time of `epoch` seconds, without separators that some
/// file systems refuse (`20231114T2213Z`).
pub fn bucket_name(epoch: u64) -> String {
    let (year, month, day, hour, minute, _) = crate::util::civil_utc(epoch as i64);
    format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}Z")
}

/// Gives `each` every piece in order, rendered on `threads` threads of their own while
/// it takes the pieces before: renderer `r` renders pieces `r`, `r + threads`, ..., each
/// into a buffer `each` is done with, and hands it over when the caller asks for it, so
/// at most one piece per renderer waits, and the caller's own work (writing) overlaps
/// the rendering.
fn render_ahead<E>(
    pieces: &[(&Rollup, u64, &[u32])],
    threads: usize,
    mut each: impl FnMut(u64, &str, &[usize]) -> Result<(), E>,
) -> Result<(), E> {
    let threads = threads.clamp(1, pieces.len().max(1));
    std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..threads)
            .map(|lane| {
                // A rendezvous: a rendered piece waits in its renderer's hands.
                let (rendered, take) = mpsc::sync_channel::<Rendered>(0);
                let (give_back, spare) = mpsc::channel::<Rendered>();
                scope.spawn(move || {
                    for &(rollup, start, rows) in pieces.iter().skip(lane).step_by(threads) {
                        let mut out = spare.try_recv().unwrap_or_default();
                        rollup.render(start, rows, &mut out);
                        if rendered.send(out).is_err() {
                            // The caller stopped at an error.
                            return;
                        }
                    }
                });
                (take, give_back)
            })
            .collect();
        for (at, &(_, start, _)) in pieces.iter().enumerate() {
            let (take, give_back) = &lanes[at % threads];
            // A renderer that panicked is seen when the scope ends.
            let Ok(out) = take.recv() else { break };
            each(start, &out.0, &out.1)?;
            let _ = give_back.send(out);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
