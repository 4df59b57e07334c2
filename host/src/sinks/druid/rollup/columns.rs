//! Rolling up a `wasm` transform's columns: no JSON is parsed. A slot made of one
//! side's attributes gets its code from the owner id, once per owner and table snapshot;
//! a slot of one field gets it from the field's value, once per distinct value.

use super::{Rollup, Slot};
use crate::batch::{Columns, Value as ColumnValue};
use crate::metadata::Table;
use crate::runtime::ColumnKind;
use rustc_hash::FxHashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// How many records ahead of the one being added an owner's slot code is asked for
/// (the codes of 50,000 owners on two sides are more than the caches keep beside the
/// rows); then, if it is not known yet, the owner's entry, and its rendered values.
const OWNER_CODES_AHEAD: usize = 16;
const OWNERS_AHEAD: usize = 8;
const OWNER_VALUES_AHEAD: usize = 4;

/// Integers below this have their codes in an array (protocol numbers fit).
const SMALL_INTEGERS: u64 = 256;

/// How a batch's columns map to the dimensions, with the codes found so far.
pub(super) struct Plan {
    /// The table snapshot the batch's owner ids belong to (held, so its address
    /// identifies it).
    table: Arc<Table>,
    /// The batch's column names (held likewise).
    names: Arc<[String]>,
    /// Per dimension.
    sources: Vec<Source>,
    /// The columns of `start`, `bytes` and `packets`.
    metrics: [Option<usize>; 3],
    /// Per slot: what decides its code.
    slot_sources: Vec<SlotSource>,
    /// Per side, per owner id: the code of the side's slot (`u32::MAX`: not yet).
    owner_codes: [Vec<u32>; 2],
    /// Per slot: codes of the integer values, raw texts and null seen in its field (or
    /// the code of a slot that is always null).
    integers: Vec<FxHashMap<u64, u32>>,
    texts: Vec<FxHashMap<Box<str>, u32>>,
    nulls: Vec<Option<u32>>,
    /// Per slot: the codes of integers below [`SMALL_INTEGERS`] (`u32::MAX`: not yet),
    /// such as protocol numbers, found without hashing.
    small_integers: Vec<Vec<u32>>,
    /// Per slot: the last text looked up and its code (`u32::MAX`: none yet); most
    /// flows repeat the last `action`.
    last_texts: Vec<(String, u32)>,
}

/// Where one dimension's value comes from.
#[derive(Clone)]
enum Source {
    /// An attribute of the source (0) or destination (1) owner: the key at this place in
    /// [`Table::keys`].
    Attribute(usize, usize),
    /// A column.
    Column(usize),
    /// Nowhere: always null.
    Null,
}

/// What decides a slot's code.
#[derive(Clone, Copy)]
enum SlotSource {
    /// The source (0) or destination (1) owner alone: every dimension of the slot is
    /// one of its attributes.
    Owner(usize),
    /// One column: the slot's only dimension.
    Field(usize),
    /// Nothing: every dimension of the slot is always null, so its code is too.
    Null,
    /// Anything else: each dimension looked at for every record.
    General,
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
                        let key = table.keys().iter().position(|k| k == key)?;
                        Some(Source::Attribute(*side, key))
                    });
                attribute
                    .or_else(|| column(dimension).map(Source::Column))
                    .unwrap_or(Source::Null)
            })
            .collect();
        let slot_sources = rollup
            .slots
            .iter()
            .map(|slot| {
                let side = |d: &usize| match sources[*d] {
                    Source::Attribute(side, _) => Some(side),
                    _ => None,
                };
                let first = side(&slot.dimensions[0]);
                let null = |d: &usize| matches!(sources[*d], Source::Null);
                match (first, &slot.dimensions[..]) {
                    (Some(s), dims) if dims.iter().all(|d| side(d) == Some(s)) => {
                        SlotSource::Owner(s)
                    }
                    (_, dims) if dims.iter().all(null) => SlotSource::Null,
                    (None, &[d]) => match sources[d] {
                        Source::Column(column) => SlotSource::Field(column),
                        _ => SlotSource::General,
                    },
                    _ => SlotSource::General,
                }
            })
            .collect();
        let slots = rollup.slots.len();
        Plan {
            table: table.clone(),
            names: names.clone(),
            metrics: ["start", "bytes", "packets"].map(column),
            slot_sources,
            owner_codes: [Vec::new(), Vec::new()],
            integers: vec![FxHashMap::default(); slots],
            texts: vec![FxHashMap::default(); slots],
            nulls: vec![None; slots],
            small_integers: vec![Vec::new(); slots],
            last_texts: vec![(String::new(), u32::MAX); slots],
            sources,
        }
    }

    fn fits(&self, columns: &Columns) -> bool {
        Arc::ptr_eq(&self.table, &columns.table) && Arc::ptr_eq(&self.names, &columns.names)
    }

    /// The code of the slot of `side`'s attributes for `owner`, when known.
    #[inline(always)]
    fn owner_code(&self, side: usize, owner: u32) -> Option<u32> {
        match self.owner_codes[side].get(owner as usize) {
            Some(&code) if code != u32::MAX => Some(code),
            _ => None,
        }
    }

    /// Forgets the codes (the slots were drained).
    pub(super) fn forget_codes(&mut self) {
        for codes in &mut self.owner_codes {
            codes.clear();
        }
        for map in &mut self.integers {
            map.clear();
        }
        for map in &mut self.texts {
            map.clear();
        }
        self.nulls.fill(None);
        for codes in &mut self.small_integers {
            codes.clear();
        }
        for (_, code) in &mut self.last_texts {
            *code = u32::MAX;
        }
    }

    /// Appends the JSON text of dimension `d` for record `row` to `out`.
    fn push_json(&self, d: usize, columns: &Columns, row: usize, out: &mut String) {
        match &self.sources[d] {
            Source::Null => out.push_str("null"),
            Source::Attribute(side, key) => {
                // As the table renders it into its fragments.
                match self.table.owner(columns.owner(row, *side)) {
                    Some(owner) => out.push_str(owner.value_json(*key)),
                    None => out.push_str("null"),
                }
            }
            Source::Column(c) => push_value_json(columns.value(row, *c), out),
        }
    }
}

/// Appends a column value as the component writes it in JSON.
fn push_value_json(value: ColumnValue<'_>, out: &mut String) {
    match value {
        ColumnValue::Null => out.push_str("null"),
        ColumnValue::Integer(n) => super::push_decimal(out, n),
        ColumnValue::Text(text) => push_json_string(text, out),
    }
}

/// Appends a text as the component writes it in JSON: quoted, with `"`, `\` and control
/// bytes escaped.
fn push_json_string(text: &str, out: &mut String) {
    out.push('"');
    if !crate::util::needs_json_escape(text) {
        // Most values need no escaping.
        out.push_str(text);
    } else {
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
    }
    out.push('"');
}

impl Rollup {
    /// Adds every record of a batch's columns; returns how many were rolled up and how
    /// many had no start. Owner ids are resolved against the batch's own table snapshot.
    pub fn add_columns(&mut self, columns: &Columns) -> (u64, u64) {
        self.add_columns_in(columns, None)
    }

    /// [`Rollup::add_columns`] for the records of `selection` alone (row numbers in
    /// ascending order), or for every record when it is `None`.
    pub fn add_columns_in(&mut self, columns: &Columns, selection: Option<&[u32]>) -> (u64, u64) {
        if !self.plan.as_ref().is_some_and(|p| p.fits(columns)) {
            self.plan = Some(Plan::new(&columns.table, &columns.names, self));
        }
        let mut plan = self.plan.take().expect("just made");
        let (mut added, mut no_start) = (0, 0);
        let width = columns.names.len();
        let (values, kinds) = (&columns.raw.values, &columns.raw.kinds);
        let integer = |base: usize, column: Option<usize>| {
            column.and_then(|c| {
                let value = values[base + c];
                (value != u64::MAX && kinds[c] == ColumnKind::Integer).then_some(value)
            })
        };
        // The sides whose slot code comes from the owner alone.
        let owner_sides: Vec<usize> = plan
            .slot_sources
            .iter()
            .filter_map(|source| match source {
                SlotSource::Owner(side) => Some(*side),
                _ => None,
            })
            .collect();
        let rows = selection.map_or(columns.rows(), <[u32]>::len);
        let row_at = |at: usize| selection.map_or(at, |s| s[at] as usize);
        for at in 0..rows {
            let row = row_at(at);
            if at + OWNER_CODES_AHEAD < rows {
                for &side in &owner_sides {
                    let owner = columns.owner(row_at(at + OWNER_CODES_AHEAD), side);
                    // Past the end of the codes is harmless: a prefetch never faults.
                    crate::util::prefetch_ptr(
                        plan.owner_codes[side].as_ptr().wrapping_add(owner as usize),
                    );
                }
            }
            // An owner whose code is not known yet costs a few cache misses one after
            // another (its entry, then its rendered values): ask for its entry some
            // records ahead, and for its values once the entry has arrived.
            for (ahead, deeper) in [(OWNERS_AHEAD, false), (OWNER_VALUES_AHEAD, true)] {
                if at + ahead < rows {
                    for &side in &owner_sides {
                        let owner = columns.owner(row_at(at + ahead), side);
                        if plan.owner_code(side, owner).is_none()
                            && let Some(entry) = plan.table.owner(owner)
                        {
                            if deeper {
                                entry.prefetch_values();
                            } else {
                                crate::util::prefetch_bytes(
                                    std::ptr::from_ref(entry).cast(),
                                    std::mem::size_of_val(entry),
                                );
                            }
                        }
                    }
                }
            }
            let base = row * width;
            let Ok(bucket) = self.bucket(integer(base, plan.metrics[0])) else {
                no_start += 1;
                continue;
            };
            self.start_key(bucket);
            for slot_at in 0..self.slots.len() {
                let (slot, members) = (&mut self.slots[slot_at], &mut self.members);
                let mut general = |plan: &Plan| general_code(slot, members, plan, columns, row);
                let code = match plan.slot_sources[slot_at] {
                    SlotSource::Owner(side) => {
                        let owner = columns.owner(row, side);
                        match plan.owner_code(side, owner) {
                            Some(code) => code,
                            None => {
                                let code = general(&plan);
                                let (cache, owner) = (&mut plan.owner_codes[side], owner as usize);
                                if cache.len() <= owner {
                                    cache.resize(owner + 1, u32::MAX);
                                }
                                cache[owner] = code;
                                code
                            }
                        }
                    }
                    SlotSource::Field(column) => field_code(
                        slot,
                        members,
                        &mut plan,
                        slot_at,
                        columns.value(row, column),
                    ),
                    SlotSource::Null => match plan.nulls[slot_at] {
                        Some(code) => code,
                        None => {
                            let code = general(&plan);
                            *plan.nulls[slot_at].insert(code)
                        }
                    },
                    SlotSource::General => general(&plan),
                };
                self.key.push(code);
            }
            self.defer([
                1,
                integer(base, plan.metrics[1]).unwrap_or(0),
                integer(base, plan.metrics[2]).unwrap_or(0),
            ]);
            added += 1;
        }
        self.add_pending();
        self.plan = Some(plan);
        (added, no_start)
    }
}

/// The code of a one-field slot for `value`, remembered per distinct value (`members`
/// is room to render it in).
fn field_code(
    slot: &mut Slot,
    members: &mut String,
    plan: &mut Plan,
    at: usize,
    value: ColumnValue<'_>,
) -> u32 {
    let mut code = |value: ColumnValue<'_>| {
        slot.render(members, |_, out| push_value_json(value, out));
        slot.members.code(members)
    };
    match value {
        ColumnValue::Null => *plan.nulls[at].get_or_insert_with(|| code(value)),
        ColumnValue::Integer(n) if n < SMALL_INTEGERS => {
            let codes = &mut plan.small_integers[at];
            if codes.is_empty() {
                codes.resize(SMALL_INTEGERS as usize, u32::MAX);
            }
            if codes[n as usize] == u32::MAX {
                codes[n as usize] = code(value);
            }
            codes[n as usize]
        }
        ColumnValue::Integer(n) => *plan.integers[at].entry(n).or_insert_with(|| code(value)),
        ColumnValue::Text(text) => {
            let (last, last_code) = &mut plan.last_texts[at];
            if *last_code != u32::MAX && last.as_str() == text {
                return *last_code;
            }
            let c = match plan.texts[at].get(text) {
                Some(&c) => c,
                None => {
                    let c = code(value);
                    plan.texts[at].insert(text.into(), c);
                    c
                }
            };
            let (last, last_code) = &mut plan.last_texts[at];
            last.clear();
            last.push_str(text);
            *last_code = c;
            c
        }
    }
}

/// A slot's code for record `row`, from each of its dimensions (`members` is room to
/// render them in).
fn general_code(
    slot: &mut Slot,
    members: &mut String,
    plan: &Plan,
    columns: &Columns,
    row: usize,
) -> u32 {
    render_members(slot, members, plan, columns, row);
    slot.members.code(members)
}

/// The hash of a slot's text for record `row` (as its dictionary hashes it), whatever
/// code a rollup gives it (`members` is room to render it in).
fn slot_hash(slot: &Slot, members: &mut String, plan: &Plan, columns: &Columns, row: usize) -> u64 {
    render_members(slot, members, plan, columns, row);
    super::hash_text(members)
}

/// Renders a slot's members for record `row` into `members`, as a row shows them.
fn render_members(slot: &Slot, members: &mut String, plan: &Plan, columns: &Columns, row: usize) {
    slot.render(members, |d, out| plan.push_json(d, columns, row, out));
}

/// Which of several rollups (shards) each record of a batch's columns goes to, so that
/// every key lives in one shard and the shards' rows need no merging: a hash of what the
/// record's key is made of (its bucket, and per slot the text its members render as, or
/// the value that text is rendered from), the same whatever codes a shard gives them.
/// A side's text is hashed once per owner and table snapshot.
pub struct Router {
    /// A rollup on the shards' dimensions, for its slots.
    template: Rollup,
    plan: Option<Plan>,
    /// Per side, per owner id: the hash of the side's slot text (0: not yet).
    owner_hashes: [Vec<u64>; 2],
    /// A slot's members being rendered (reused).
    members: String,
    shards: usize,
}

/// Tells apart the kinds of a field's value in a shard hash (an integer and a text
/// never render alike).
const TEXT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const NULL_HASH: u64 = 0x2545_f491_4f6c_dd1d;

/// The hash of a field's value, a function of the text it renders as.
fn value_hash(value: ColumnValue<'_>) -> u64 {
    match value {
        ColumnValue::Null => NULL_HASH,
        ColumnValue::Integer(n) => super::index::mix(n.wrapping_add(1)),
        ColumnValue::Text(text) => super::hash_text(text) ^ TEXT_SEED,
    }
}

impl Router {
    /// Routes records among `shards` rollups on `dimensions` and `granularity`.
    pub fn new(dimensions: &[String], granularity: u64, shards: usize) -> Router {
        Router {
            template: Rollup::new(dimensions, granularity),
            plan: None,
            owner_hashes: [Vec::new(), Vec::new()],
            members: String::new(),
            shards: shards.max(1),
        }
    }

    /// Appends each record's row number to the selection of its shard (`selections`
    /// has one per shard). Records without a usable start go to the first shard, which
    /// counts them.
    pub fn route(&mut self, columns: &Columns, selections: &mut [Vec<u32>]) {
        debug_assert_eq!(selections.len(), self.shards);
        if !self.plan.as_ref().is_some_and(|p| p.fits(columns)) {
            self.plan = Some(Plan::new(&columns.table, &columns.names, &self.template));
            for hashes in &mut self.owner_hashes {
                hashes.clear();
            }
        }
        let plan = self.plan.as_ref().expect("just made");
        let width = columns.names.len();
        let (values, kinds) = (&columns.raw.values, &columns.raw.kinds);
        let rows = columns.rows();
        for row in 0..rows {
            if row + OWNER_CODES_AHEAD < rows {
                for side in 0..2 {
                    let owner = columns.owner(row + OWNER_CODES_AHEAD, side);
                    // Past the end is harmless: a prefetch never faults.
                    crate::util::prefetch_ptr(
                        self.owner_hashes[side]
                            .as_ptr()
                            .wrapping_add(owner as usize),
                    );
                }
            }
            let start = plan.metrics[0].and_then(|c| {
                let value = values[row * width + c];
                (value != u64::MAX && kinds[c] == ColumnKind::Integer).then_some(value)
            });
            let Ok(bucket) = self.template.bucket(start) else {
                selections[0].push(row as u32);
                continue;
            };
            let mut hash = bucket;
            for (at, source) in plan.slot_sources.iter().enumerate() {
                let part = match *source {
                    SlotSource::Owner(side) => {
                        let owner = columns.owner(row, side) as usize;
                        match self.owner_hashes[side].get(owner) {
                            Some(&known) if known != 0 => known,
                            _ => {
                                let slot = &self.template.slots[at];
                                let known =
                                    slot_hash(slot, &mut self.members, plan, columns, row) | 1;
                                let hashes = &mut self.owner_hashes[side];
                                if hashes.len() <= owner {
                                    hashes.resize(owner + 1, 0);
                                }
                                hashes[owner] = known;
                                known
                            }
                        }
                    }
                    SlotSource::Field(column) => value_hash(columns.value(row, column)),
                    SlotSource::Null => 0,
                    SlotSource::General => slot_hash(
                        &self.template.slots[at],
                        &mut self.members,
                        plan,
                        columns,
                        row,
                    ),
                };
                hash = super::index::mix(hash.rotate_left(23) ^ part);
            }
            let shard = ((u128::from(hash) * self.shards as u128) >> 64) as usize;
            selections[shard].push(row as u32);
        }
    }
}
