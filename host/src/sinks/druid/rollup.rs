//! The rollup: enriched flows summed per time bucket and dimensions, as Druid's own
//! rollup sums them, grouped on compact keys. A key is the bucket and one code per
//! *slot*: each side's attribute dimensions (`src_app`, `src_region`, ...) share one
//! slot, whose code stands for the whole set of values, and every other dimension has a
//! slot of its own. Codes come from per-dimension dictionaries of JSON texts, so the
//! rows render without any further lookup.
//!
//! Records come in two shapes: JSON lines (parsed on a fast path without allocating),
//! or a `wasm` transform's columns, where a side's slot code is found from the owner id
//! once per owner and table snapshot, and fields are read as numbers and text ranges.
//! Both shapes give the same rows.

use super::METRICS;
use crate::batch::{Columns, Value as ColumnValue};
use crate::metadata::Table;
use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Flows rolled up in memory until the next flush: each row's key (its bucket and one
/// code per slot) in one flat arena, with its sums beside it.
pub struct Rollup {
    dimensions: Vec<String>,
    granularity: u64,
    /// Per dimension, the distinct JSON texts seen since the last drain.
    dictionaries: Vec<Dictionary>,
    /// The key's slots after the bucket.
    slots: Vec<Slot>,
    /// Per dimension, its slot and its place in the slot.
    placement: Vec<(usize, usize)>,
    /// Row `r`'s key is `keys[r * width..][..width]`: the bucket number (start /
    /// granularity) as two halves, then each slot's code.
    keys: Vec<u32>,
    /// Row `r`'s flows, bytes and packets.
    sums: Vec<[u64; 3]>,
    /// Row numbers, found by their key's hash.
    rows: HashTable<u32>,
    /// The key being built for the current record (reused).
    key: Vec<u32>,
    /// Each dimension's code in the current record (reused).
    codes: Vec<u32>,
    /// Each dimension's JSON text in the current line (reused).
    values: Vec<(usize, usize)>,
    /// What the n-th member of the last line was: lines of one format list their keys in
    /// the same order, so one comparison per member tells what it is.
    roles: Vec<(Box<str>, Role)>,
    /// How the columns of the last batch map to the dimensions.
    plan: Option<Plan>,
}

/// Dimensions that share one code in the key.
struct Slot {
    /// Their indexes in the dimensions.
    dimensions: Vec<usize>,
    /// With more than one dimension: code `c`'s dimension codes are
    /// `tuples[c * width..][..width]`.
    tuples: Vec<u32>,
    /// Tuple numbers, found by their hash.
    index: HashTable<u32>,
}

impl Slot {
    fn new(dimensions: Vec<usize>) -> Slot {
        Slot {
            dimensions,
            tuples: Vec::new(),
            index: HashTable::new(),
        }
    }

    /// The slot's code for its dimensions' codes.
    fn code(&mut self, codes: &[u32]) -> u32 {
        if let [code] = codes {
            return *code;
        }
        let width = codes.len();
        let hash = hash_key(codes);
        let tuples = &mut self.tuples;
        if let Some(&code) = self
            .index
            .find(hash, |&c| tuples[c as usize * width..][..width] == *codes)
        {
            return code;
        }
        let code = (tuples.len() / width) as u32;
        tuples.extend_from_slice(codes);
        self.index.insert_unique(hash, code, |&c| {
            hash_key(&tuples[c as usize * width..][..width])
        });
        code
    }

    /// The dimension codes of slot code `code`; `at` is the dimension's place.
    fn dimension_code(&self, code: u32, at: usize) -> u32 {
        if self.dimensions.len() == 1 {
            code
        } else {
            self.tuples[code as usize * self.dimensions.len() + at]
        }
    }

    fn clear(&mut self) {
        self.tuples.clear();
        self.index.clear();
    }
}

/// Where each dimension's value comes from in a batch's columns.
struct Plan {
    /// The table snapshot the batch's owner ids belong to (held, so its address
    /// identifies it).
    table: Arc<Table>,
    /// The batch's column names (held likewise).
    names: Arc<[String]>,
    /// Per dimension.
    sources: Vec<Source>,
    /// The columns of `start`, `bytes` and `packets`.
    metrics: [Option<usize>; 3],
    /// Per slot: the side whose owner alone decides the slot's code, if one does.
    by_owner: Vec<Option<usize>>,
    /// Per side, per owner id: the slot code found for it (`u32::MAX`: not yet).
    owner_codes: [Vec<u32>; 2],
    /// Per dimension: codes of integer values and of raw texts seen.
    integers: Vec<FxHashMap<u64, u32>>,
    texts: Vec<FxHashMap<Box<str>, u32>>,
}

/// Where one dimension's value comes from.
#[derive(Clone)]
enum Source {
    /// An attribute of the source (0) or destination (1) owner.
    Attribute(usize, String),
    /// A column.
    Column(usize),
    /// Nowhere: always null.
    Null,
}

impl Plan {
    fn new(table: &Arc<Table>, names: &Arc<[String]>, rollup: &Rollup) -> Plan {
        let column = |name: &str| names.iter().position(|n| n == name);
        let sources: Vec<Source> = rollup
            .dimensions
            .iter()
            .map(|dimension| {
                // An owner's attribute wins over a field of the same name, as in the
                // JSON, where the attributes come last.
                let attribute = [("src_", 0), ("dst_", 1)]
                    .iter()
                    .find_map(|(prefix, side)| {
                        let key = dimension.strip_prefix(prefix)?;
                        table
                            .keys()
                            .iter()
                            .any(|k| k == key)
                            .then(|| Source::Attribute(*side, key.to_string()))
                    });
                attribute
                    .or_else(|| column(dimension).map(Source::Column))
                    .unwrap_or(Source::Null)
            })
            .collect();
        let by_owner = rollup
            .slots
            .iter()
            .map(|slot| {
                let sides: Vec<Option<usize>> = slot
                    .dimensions
                    .iter()
                    .map(|&d| match sources[d] {
                        Source::Attribute(side, _) => Some(side),
                        _ => None,
                    })
                    .collect();
                match sides[0] {
                    Some(side) if sides.iter().all(|s| *s == Some(side)) => Some(side),
                    _ => None,
                }
            })
            .collect();
        Plan {
            table: table.clone(),
            names: names.clone(),
            metrics: ["start", "bytes", "packets"].map(column),
            by_owner,
            owner_codes: [Vec::new(), Vec::new()],
            integers: sources.iter().map(|_| FxHashMap::default()).collect(),
            texts: sources.iter().map(|_| FxHashMap::default()).collect(),
            sources,
        }
    }

    fn fits(&self, columns: &Columns) -> bool {
        Arc::ptr_eq(&self.table, &columns.table) && Arc::ptr_eq(&self.names, &columns.names)
    }

    /// Forgets the codes (the dictionaries were drained).
    fn forget_codes(&mut self) {
        for codes in &mut self.owner_codes {
            codes.clear();
        }
        for map in &mut self.integers {
            map.clear();
        }
        for map in &mut self.texts {
            map.clear();
        }
    }
}

/// A text as the component writes it in JSON: quoted, with `"`, `\\` and control bytes
/// escaped.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a member of an enriched flow counts as: a metric, a dimension, both, or neither.
#[derive(Clone, Copy)]
struct Role {
    /// 0 for `start`, 1 for `bytes`, 2 for `packets`.
    metric: Option<u8>,
    /// Its place in the dimensions.
    dimension: Option<usize>,
}

/// One dimension's distinct values, each with a code: its place in `texts`.
#[derive(Default)]
struct Dictionary {
    codes: FxHashMap<Box<str>, u32>,
    texts: Vec<Box<str>>,
}

impl Dictionary {
    /// The code of `text`, given one if it is new.
    fn code(&mut self, text: &str) -> u32 {
        if let Some(&code) = self.codes.get(text) {
            return code;
        }
        let code = self.texts.len() as u32;
        self.texts.push(text.into());
        self.codes.insert(text.into(), code);
        code
    }

    /// Each code's rank in the texts' sorted order.
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.texts.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.texts[a as usize].cmp(&self.texts[b as usize]));
        let mut ranks = vec![0; order.len()];
        for (rank, code) in order.into_iter().enumerate() {
            ranks[code as usize] = rank as u32;
        }
        ranks
    }
}

fn hash_key(key: &[u32]) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// Why a line was not rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Not a JSON object.
    InvalidJson,
    /// No integer `start` to put it in a bucket.
    NoStart,
}

/// The members of a flat JSON object (no nested objects or arrays), as raw key text
/// (without quotes) and raw value text, given to `member`; `None` when the line is not
/// such an object (then the caller parses it fully). Enriched flows are flat objects, so
/// this is the fast path: nothing is allocated and each byte is looked at once.
fn flat_members<'a>(line: &'a str, mut member: impl FnMut(&'a str, &'a str)) -> Option<()> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let skip = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    // The end of the string that starts at `at` (a quote), just past its closing quote.
    // Only plain strings take the fast path: a control byte or a `\u` escape sends the
    // line to the full parser (which checks it), and any other escape must be valid.
    let string_end = |mut at: usize| -> Option<usize> {
        at += 1;
        while at < bytes.len() {
            match bytes[at] {
                b'"' => return Some(at + 1),
                b'\\' => match bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                    _ => return None,
                },
                0..0x20 => return None,
                _ => at += 1,
            }
        }
        None
    };
    skip(&mut i);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    skip(&mut i);
    if bytes.get(i) == Some(&b'}') {
        return Some(());
    }
    loop {
        skip(&mut i);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = &line[i + 1..key_end - 1];
        if key.as_bytes().contains(&b'\\') {
            // An escaped key is compared decoded by the full parser.
            return None;
        }
        i = key_end;
        skip(&mut i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip(&mut i);
        let value_start = i;
        match bytes.get(i)? {
            b'"' => i = string_end(i)?,
            b'{' | b'[' => return None,
            _ => {
                while i < bytes.len() && !matches!(bytes[i], b',' | b'}') {
                    i += 1;
                }
            }
        }
        let value = line[value_start..i].trim_end();
        if bytes[value_start] != b'"' && !is_scalar(value) {
            return None;
        }
        member(key, value);
        skip(&mut i);
        match bytes.get(i)? {
            b',' => i += 1,
            b'}' => {
                i += 1;
                skip(&mut i);
                return (i == bytes.len()).then_some(());
            }
            _ => return None,
        }
    }
}

/// Whether `text` is a JSON number, `true`, `false` or `null`.
fn is_scalar(text: &str) -> bool {
    matches!(text, "true" | "false" | "null") || is_json_number(text.as_bytes())
}

/// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &[u8]) -> bool {
    let mut i = usize::from(text.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while text.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    match text.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if text.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == text.len()
}

impl Rollup {
    /// An empty rollup on `dimensions` with buckets of `granularity` seconds.
    pub fn new(dimensions: &[String], granularity: u64) -> Rollup {
        // One slot per side's attributes, in order of first appearance, then one per
        // other dimension.
        let mut slots: Vec<Slot> = Vec::new();
        let mut sides: [Option<usize>; 2] = [None, None];
        for (d, dimension) in dimensions.iter().enumerate() {
            let side = ["src_", "dst_"]
                .iter()
                .position(|p| dimension.starts_with(p));
            match side.and_then(|side| sides[side].map(|slot| (side, slot))) {
                Some((_, slot)) => slots[slot].dimensions.push(d),
                None => {
                    if let Some(side) = side {
                        sides[side] = Some(slots.len());
                    }
                    slots.push(Slot::new(vec![d]));
                }
            }
        }
        let mut placement = vec![(0, 0); dimensions.len()];
        for (at, slot) in slots.iter().enumerate() {
            for (place, &d) in slot.dimensions.iter().enumerate() {
                placement[d] = (at, place);
            }
        }
        Rollup {
            dimensions: dimensions.to_vec(),
            granularity: granularity.max(1),
            dictionaries: dimensions.iter().map(|_| Dictionary::default()).collect(),
            slots,
            placement,
            keys: Vec::new(),
            sums: Vec::new(),
            rows: HashTable::new(),
            key: Vec::new(),
            codes: Vec::new(),
            values: Vec::new(),
            roles: Vec::new(),
            plan: None,
        }
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
        let fast = flat_members(line, |key, value| {
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
        self.codes.clear();
        for (&(from, to), dictionary) in self.values.iter().zip(&mut self.dictionaries) {
            // A dimension the flow lacks is null.
            let value = if from == to { "null" } else { &text[from..to] };
            self.codes.push(dictionary.code(value));
        }
        self.key.clear();
        self.key.extend([(bucket >> 32) as u32, bucket as u32]);
        for slot in &mut self.slots {
            let mut tuple = [0u32; 32];
            let n = slot.dimensions.len();
            let code = if n <= tuple.len() {
                for (place, &d) in slot.dimensions.iter().enumerate() {
                    tuple[place] = self.codes[d];
                }
                slot.code(&tuple[..n])
            } else {
                let tuple: Vec<u32> = slot.dimensions.iter().map(|&d| self.codes[d]).collect();
                slot.code(&tuple)
            };
            self.key.push(code);
        }
        self.sum(bytes.unwrap_or(0), packets.unwrap_or(0));
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

    /// Adds the flow whose key is in `self.key` to its row.
    fn sum(&mut self, bytes: u64, packets: u64) {
        let width = self.key.len();
        let hash = hash_key(&self.key);
        let keys = &mut self.keys;
        let found = self.rows.find(hash, |&row| {
            keys[row as usize * width..][..width] == self.key[..]
        });
        let row = match found {
            Some(&row) => row as usize,
            None => {
                let row = self.sums.len();
                keys.extend_from_slice(&self.key);
                self.sums.push([0; 3]);
                self.rows.insert_unique(hash, row as u32, |&row| {
                    hash_key(&keys[row as usize * width..][..width])
                });
                row
            }
        };
        let sums = &mut self.sums[row];
        sums[0] += 1;
        sums[1] = sums[1].saturating_add(bytes);
        sums[2] = sums[2].saturating_add(packets);
    }

    /// Adds every record of a batch's columns; returns how many were rolled up and how
    /// many had no start. Owner ids are resolved against the batch's own table snapshot.
    pub fn add_columns(&mut self, columns: &Columns) -> (u64, u64) {
        if !self.plan.as_ref().is_some_and(|p| p.fits(columns)) {
            self.plan = Some(Plan::new(&columns.table, &columns.names, self));
        }
        let mut plan = self.plan.take().expect("just made");
        let (mut added, mut no_start) = (0, 0);
        let integer =
            |row: usize, column: Option<usize>| match column.map(|c| columns.value(row, c)) {
                Some(ColumnValue::Integer(n)) => Some(n),
                _ => None,
            };
        for row in 0..columns.rows() {
            let Ok(bucket) = self.bucket(integer(row, plan.metrics[0])) else {
                no_start += 1;
                continue;
            };
            let owners = columns.owners(row);
            self.key.clear();
            self.key.extend([(bucket >> 32) as u32, bucket as u32]);
            for at in 0..self.slots.len() {
                let code = match plan.by_owner[at] {
                    Some(side) => {
                        let owner = if side == 0 { owners.0 } else { owners.1 };
                        let cache = &mut plan.owner_codes[side];
                        match cache.get(owner as usize) {
                            Some(&code) if code != u32::MAX => code,
                            _ => {
                                let code = self.slot_code(at, &mut plan, columns, row);
                                let cache = &mut plan.owner_codes[side];
                                if cache.len() <= owner as usize {
                                    cache.resize(owner as usize + 1, u32::MAX);
                                }
                                cache[owner as usize] = code;
                                code
                            }
                        }
                    }
                    None => self.slot_code(at, &mut plan, columns, row),
                };
                self.key.push(code);
            }
            self.sum(
                integer(row, plan.metrics[1]).unwrap_or(0),
                integer(row, plan.metrics[2]).unwrap_or(0),
            );
            added += 1;
        }
        self.plan = Some(plan);
        (added, no_start)
    }

    /// Slot `at`'s code for record `row` of `columns`.
    fn slot_code(&mut self, at: usize, plan: &mut Plan, columns: &Columns, row: usize) -> u32 {
        let mut codes = Vec::with_capacity(self.slots[at].dimensions.len());
        for &d in &self.slots[at].dimensions {
            let dictionary = &mut self.dictionaries[d];
            let code = match &plan.sources[d] {
                Source::Null => dictionary.code("null"),
                Source::Attribute(side, key) => {
                    let owners = columns.owners(row);
                    let owner = if *side == 0 { owners.0 } else { owners.1 };
                    match plan.table.owner(owner).and_then(|o| o.attrs.get(key)) {
                        Some(value) => {
                            dictionary.code(&serde_json::to_string(value).expect("a string"))
                        }
                        None => dictionary.code("null"),
                    }
                }
                Source::Column(c) => match columns.value(row, *c) {
                    ColumnValue::Null => dictionary.code("null"),
                    ColumnValue::Integer(n) => match plan.integers[d].get(&n) {
                        Some(&code) => code,
                        None => {
                            let code = dictionary.code(&n.to_string());
                            plan.integers[d].insert(n, code);
                            code
                        }
                    },
                    ColumnValue::Text(text) => match plan.texts[d].get(text) {
                        Some(&code) => code,
                        None => {
                            let code = dictionary.code(&json_string(text));
                            plan.texts[d].insert(text.into(), code);
                            code
                        }
                    },
                },
            };
            codes.push(code);
        }
        self.slots[at].code(&codes)
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Bytes the rows take (keys, sums, the table), without the dictionaries.
    pub fn row_bytes(&self) -> usize {
        self.keys.capacity() * 4 + self.sums.capacity() * 24 + self.rows.capacity() * 5
    }

    /// Takes every row out, as `(bucket start, NDJSON line)` ordered by bucket and
    /// dimension values.
    pub fn drain(&mut self) -> Vec<(u64, String)> {
        let width = self.slots.len() + 2;
        let ranks: Vec<Vec<u32>> = self.dictionaries.iter().map(Dictionary::ranks).collect();
        let key = |row: u32| &self.keys[row as usize * width..][..width];
        let bucket = |key: &[u32]| (u64::from(key[0]) << 32) | u64::from(key[1]);
        // Dimension `d`'s code in a key.
        let code = |key: &[u32], d: usize| {
            let (slot, place) = self.placement[d];
            self.slots[slot].dimension_code(key[2 + slot], place)
        };
        // By bucket, then by each dimension's text, as the texts sort.
        let mut order: Vec<u32> = (0..self.sums.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            let (a, b) = (key(a), key(b));
            bucket(a).cmp(&bucket(b)).then_with(|| {
                (0..self.dimensions.len())
                    .map(|d| ranks[d][code(a, d) as usize].cmp(&ranks[d][code(b, d) as usize]))
                    .find(|order| order.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        });
        let names: Vec<String> = self
            .dimensions
            .iter()
            .map(|d| Value::String(d.clone()).to_string())
            .collect();
        let rows = order
            .into_iter()
            .map(|row| {
                let key = key(row);
                let start = bucket(key) * self.granularity;
                let mut text = String::with_capacity(64 + 32 * names.len());
                let _ = write!(text, "{{\"timestamp\":{}", start * 1000);
                for (d, (name, dictionary)) in names.iter().zip(&self.dictionaries).enumerate() {
                    text.push(',');
                    text.push_str(name);
                    text.push(':');
                    text.push_str(&dictionary.texts[code(key, d) as usize]);
                }
                for (name, sum) in METRICS.iter().zip(self.sums[row as usize]) {
                    let _ = write!(text, ",\"{name}\":{sum}");
                }
                text.push_str("}\n");
                (start, text)
            })
            .collect();
        self.keys.clear();
        self.sums.clear();
        self.rows.clear();
        for dictionary in &mut self.dictionaries {
            *dictionary = Dictionary::default();
        }
        for slot in &mut self.slots {
            slot.clear();
        }
        if let Some(plan) = &mut self.plan {
            plan.forget_codes();
        }
        rows
    }
}

/// `2023-11-14T22:13` style UTC time of `epoch` seconds, without separators that some
/// file systems refuse (`20231114T2213Z`).
pub fn bucket_name(epoch: u64) -> String {
    // Howard Hinnant's civil-from-days.
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_up_per_bucket_and_dimensions() {
        let dims: Vec<String> = ["src_app", "protocol"].map(String::from).into();
        let mut rollup = Rollup::new(&dims, 60);
        for line in [
            r#"{"start":120,"src_app":"api","protocol":6,"bytes":10,"packets":1}"#,
            r#"{"start":179,"src_app":"api","protocol":6,"bytes":5,"packets":2}"#,
            r#"{"start":180,"src_app":"api","protocol":6,"bytes":1,"packets":1}"#,
            r#"{"start":121,"src_app":null,"protocol":17,"bytes":null,"packets":3}"#,
        ] {
            rollup.add(line).unwrap();
        }
        assert_eq!(rollup.add("{\"start\":null}"), Err(Skipped::NoStart));
        assert_eq!(rollup.add("not json"), Err(Skipped::InvalidJson));
        let rows: Vec<String> = rollup.drain().into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            rows,
            vec![
                "{\"timestamp\":120000,\"src_app\":\"api\",\"protocol\":6,\"flows\":2,\"bytes\":15,\"packets\":3}\n",
                "{\"timestamp\":120000,\"src_app\":null,\"protocol\":17,\"flows\":1,\"bytes\":0,\"packets\":3}\n",
                "{\"timestamp\":180000,\"src_app\":\"api\",\"protocol\":6,\"flows\":1,\"bytes\":1,\"packets\":1}\n",
            ]
        );
        assert!(rollup.is_empty());
    }

    #[test]
    fn the_fast_path_agrees_with_a_json_parser() {
        let dims: Vec<String> = ["a", "b", "c"].map(String::from).into();
        for line in [
            r#"{"start":60,"a":"x","b":7,"c":null,"bytes":3,"packets":1}"#,
            r#" { "start" : 60 , "a" : "x\"y,}" , "b":true,"bytes":3 } "#,
            r#"{"start":61,"b":{"nested":1},"a":"x"}"#,
            r#"{"start":62,"a":["list"],"bytes":9}"#,
            r#"{"start":63}"#,
            r#"{"start":64,"a":"\u00e9","b":-0,"c":1e5}"#,
            r#"{"\u0073tart":65,"a":"x"}"#,
        ] {
            let mut fast = Rollup::new(&dims, 60);
            fast.add(line).unwrap();
            // The reference: the same line through serde_json.
            let value: Value = serde_json::from_str(line).unwrap();
            let o = value.as_object().unwrap();
            let want = format!(
                "{{\"timestamp\":60000,\"a\":{},\"b\":{},\"c\":{},\"flows\":1,\"bytes\":{},\"packets\":{}}}\n",
                o.get("a").unwrap_or(&Value::Null),
                o.get("b").unwrap_or(&Value::Null),
                o.get("c").unwrap_or(&Value::Null),
                o.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                o.get("packets").and_then(Value::as_u64).unwrap_or(0),
            );
            assert_eq!(fast.drain()[0].1, want, "{line}");
        }
        let mut rollup = Rollup::new(&dims, 60);
        for bad in [
            "{\"start\":1",
            "{\"start\":1}}",
            "[1]",
            "{\"a\":1,}",
            "{\"start\":1,\"a\":xyz}",
            "{\"start\":1,\"a\":1x}",
            "{\"start\":1,\"a\":01}",
            "{\"start\":1,\"a\":1.}",
            "{\"start\":1,\"a\":-.5}",
            "{\"start\":1,\"a\":\"bad \\q escape\"}",
            "{\"start\":1,\"a\":\"raw \u{1} control\"}",
        ] {
            assert_eq!(rollup.add(bad), Err(Skipped::InvalidJson), "{bad}");
        }
    }

    #[test]
    fn compact_keys_agree_with_grouping_on_text() {
        // Random flows over a few values per dimension, some members missing, some
        // lines with keys in another order: rows and their order must be what grouping
        // on the texts gives, also on a second round after a drain.
        let dims: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let mut rollup = Rollup::new(&dims, 60);
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2 {
            let mut want: std::collections::BTreeMap<(u64, Vec<String>), [u64; 3]> =
                Default::default();
            for _ in 0..5_000 {
                let start = next(300);
                let a = format!("\"x{}\"", next(30));
                let b = next(5).to_string();
                let c = ["null", "true", "\"é\""][next(3) as usize];
                let (bytes, packets) = (next(1000), next(10));
                let line = if next(2) == 0 {
                    format!(
                        r#"{{"start":{start},"a":{a},"b":{b},"c":{c},"bytes":{bytes},"packets":{packets}}}"#
                    )
                } else {
                    format!(
                        r#"{{"b":{b},"packets":{packets},"start":{start},"a":{a},"bytes":{bytes}}}"#
                    )
                };
                let c = if line.contains("\"c\"") { c } else { "null" };
                rollup.add(&line).unwrap();
                let sums = want
                    .entry((start - start % 60, vec![a, b, c.to_string()]))
                    .or_default();
                sums[0] += 1;
                sums[1] += bytes;
                sums[2] += packets;
            }
            let want: Vec<String> = want
                .into_iter()
                .map(|((bucket, values), [flows, bytes, packets])| {
                    format!(
                        "{{\"timestamp\":{},\"a\":{},\"b\":{},\"c\":{},\"flows\":{flows},\"bytes\":{bytes},\"packets\":{packets}}}\n",
                        bucket * 1000,
                        values[0],
                        values[1],
                        values[2]
                    )
                })
                .collect();
            let rows: Vec<String> = rollup.drain().into_iter().map(|(_, r)| r).collect();
            assert_eq!(rows, want);
            assert!(rollup.is_empty());
        }
    }

    #[test]
    fn bucket_names_are_utc() {
        assert_eq!(bucket_name(0), "19700101T0000Z");
        assert_eq!(bucket_name(1_700_000_000), "20231114T2213Z");
        assert_eq!(bucket_name(951_782_400), "20000229T0000Z");
    }
}
