//! The time-aware attribution table: "who owned address `a` at time `t`".
//!
//! Rules (DESIGN.md contract 3, extended): a flow older than the retention window is left
//! unattributed; otherwise the latest exact-IP event at or before `t` decides if it is an
//! `assign`; otherwise (no event, or an `unassign`) the most specific network whose latest
//! event at or before `t` is an `assign` (changelog networks and AWS's published ranges
//! compete on specificity; an AWS range holds from time 0, so a changelog event for the
//! same network overrides it from the event's timestamp on); otherwise, when internet
//! classification is on, a public address belongs to the `internet` owner; otherwise
//! nobody. Events with equal timestamps apply in the order they were read, so the later
//! one wins.
//!
//! Observations (contract 5): an `unknown` entry of an address leaves it unattributed
//! with no network or internet fallback until its next entry; and where sources have
//! sent `observed` horizons, an address's timeline says nothing after its source's
//! horizon (the earliest horizon, for an address whose events name no source): its
//! entries after it are set aside until the horizon passes them, and from one second
//! after it the address is unknown.
//!
//! Owners named by records: where configured (`local_owner_fields`), a record's own
//! fields (v7's `ecs_*`) name its local side's owner; such owners are registered in the
//! snapshot as records name them ([`Table::record_owner`]), up to
//! [`MAX_RECORD_OWNERS`], with ids after the changelog's.
//!
//! Interfaces (contract 5): a network interface's own timeline (`interface` events, the
//! same rules as an exact address's, with no network fallback) answers who owned the
//! interface at `t`; [`Table::interface_owner`] is how a record's local side is
//! attributed by the `interface-id` that captured it.

use super::addr_map::{AddrKey, AddrMap};
use super::aws_ranges::AwsRanges;
use super::events::{Attrs, Event, Op, Target};
use super::networks::NetworksV4;
use super::packed_attrs::PackedAttrs;
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Owner id meaning "nobody".
pub const UNATTRIBUTED: u32 = 0;

/// The owner entry of an `unknown` event in an exact timeline: the lookup answers
/// [`UNATTRIBUTED`] without looking at networks. Never an answer of a lookup.
const UNKNOWN: u32 = u32::MAX - 2;

/// A source index meaning "no source named": bounded by every source's horizon.
const ANY_SOURCE: u16 = u16::MAX;

/// Most owners records may name in one table snapshot (the next ones are not named).
pub const MAX_RECORD_OWNERS: usize = 4096;

/// Owners named by records' fields, registered as they are first named.
struct RecordOwners {
    /// Id of each owner registered so far.
    ids: std::sync::Mutex<FxHashMap<Attrs, u32>>,
    /// The owners, by id minus the first id; set once each.
    slots: Box<[std::sync::OnceLock<Owner>]>,
}

/// A timeline of one address or network: `(from_ts, owner)` sorted by time, where owner
/// [`UNATTRIBUTED`] marks an `unassign`.
type History = Vec<(u64, u32)>;

/// One owner: its attributes and the JSON fragments the component appends.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The owner's attributes.
    pub attrs: PackedAttrs,
    /// `,"src_<key>":<value>` for every attribute key the table knows.
    pub src_fragment: String,
    /// `,"dst_<key>":<value>` likewise.
    pub dst_fragment: String,
    /// Where each key's value (its JSON text, or `null`) is in `src_fragment`, in the
    /// order of [`Table::keys`].
    value_ranges: Box<[(u32, u32)]>,
}

impl Owner {
    /// The JSON text of the value of the table's `key`-th key ([`Table::keys`]), as the
    /// fragments hold it: a string, or `null` when the owner has no such attribute.
    pub fn value_json(&self, key: usize) -> &str {
        let (from, to) = self.value_ranges[key];
        &self.src_fragment[from as usize..to as usize]
    }

    /// Asks the CPU for the memory [`Owner::value_json`] reads: the value ranges and
    /// every cache line of the fragment they point into.
    pub fn prefetch_values(&self) {
        crate::util::prefetch_ptr(self.value_ranges.as_ptr());
        crate::util::prefetch_bytes(self.src_fragment.as_ptr(), self.src_fragment.len());
    }
}

/// CIDR timelines for one prefix length.
struct PrefixLevel<K> {
    mask: K,
    nets: AddrMap<K>,
}

/// An immutable snapshot of the attribution table. Build it with [`TableBuilder`].
pub struct Table {
    v4: AddrMap<u32>,
    v6: AddrMap<u128>,
    /// IPv4 networks as elementary intervals.
    cidr_v4: NetworksV4,
    /// Most specific first.
    cidr_v6: Vec<PrefixLevel<u128>>,
    owners: Vec<Owner>,
    keys: Vec<String>,
    /// Network interfaces' timelines, by interface id.
    interfaces: FxHashMap<Box<str>, History>,
    /// Attribute = record field naming the local side's owner (`local_owner_fields`).
    local_fields: Vec<(String, String)>,
    /// Owners records named (allocated when `local_fields` is not empty).
    record_owners: Option<RecordOwners>,
    /// Each key's `,"src_<key>":` and `,"dst_<key>":`, to render record owners.
    member_names: [Vec<String>; 2],
    events: usize,
    /// Flows that started before this epoch second are left unattributed (0 = none).
    cutoff: u64,
    /// Owner of public addresses nobody else covers ([`UNATTRIBUTED`] = not classified).
    internet: u32,
}

impl Default for Table {
    fn default() -> Self {
        TableBuilder::default().build()
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("events", &self.events)
            .field("addresses", &self.addresses())
            .field("networks", &self.networks())
            .field("interfaces", &self.interfaces.len())
            .field("owners", &self.owners())
            .field("cutoff", &self.cutoff)
            .finish()
    }
}

/// The networks of one address family: who owns an address through them at `t`.
trait Networks<K: AddrKey> {
    /// The most specific network containing `addr` whose latest entry at or before `t`
    /// is an assign, or [`UNATTRIBUTED`].
    fn owner(&self, addr: K, t: u64) -> u32;
    /// [`Networks::owner`] of the lookups `which` names: `owners[k]` becomes the owner
    /// of `addrs[k]` at `times[k]` for every `k` in `which` (at most [`CHUNK`]).
    #[inline]
    fn owners(
        &self,
        addrs: &[K],
        times: &[u64],
        which: &[u16],
        owners: &mut [u32],
        _work: &mut Work,
    ) {
        for &k in which {
            let k = k as usize;
            owners[k] = self.owner(addrs[k], times[k]);
        }
    }
}

impl Networks<u32> for NetworksV4 {
    #[inline]
    fn owner(&self, addr: u32, t: u64) -> u32 {
        NetworksV4::owner(self, addr, t)
    }
    #[inline]
    fn owners(
        &self,
        addrs: &[u32],
        times: &[u64],
        which: &[u16],
        owners: &mut [u32],
        work: &mut Work,
    ) {
        NetworksV4::owners(self, addrs, times, which, owners, work)
    }
}

/// Per prefix length, most specific first (IPv6: networks there are few).
impl<K: AddrKey + std::ops::BitAnd<Output = K>> Networks<K> for [PrefixLevel<K>] {
    #[inline]
    fn owner(&self, addr: K, t: u64) -> u32 {
        for level in self {
            if let Some(owner) = level.nets.at(addr & level.mask, t)
                && owner != UNATTRIBUTED
            {
                return owner;
            }
        }
        UNATTRIBUTED
    }
}

/// One address family of a table.
struct Family<'a, K, N: ?Sized> {
    exact: &'a AddrMap<K>,
    networks: &'a N,
    cutoff: u64,
    internet: u32,
}

/// Owner of `addr` at `t`: nobody before the cutoff, then the exact timeline, the most
/// specific network, and the internet owner for public addresses.
#[inline]
fn resolve<K: AddrKey, N: Networks<K> + ?Sized>(family: &Family<'_, K, N>, addr: K, t: u64) -> u32 {
    if t < family.cutoff {
        return UNATTRIBUTED;
    }
    match family.exact.at(addr, t) {
        Some(UNKNOWN) => return UNATTRIBUTED,
        Some(owner) if owner != UNATTRIBUTED => return owner,
        _ => {}
    }
    family.or_internet(addr, family.networks.owner(addr, t))
}

impl<K: AddrKey, N: ?Sized> Family<'_, K, N> {
    /// `network_owner`, or when no network decided, the internet owner for a public
    /// address.
    #[inline(always)]
    fn or_internet(&self, addr: K, network_owner: u32) -> u32 {
        if network_owner == UNATTRIBUTED && self.internet != UNATTRIBUTED && addr.is_public() {
            self.internet
        } else {
            network_owner
        }
    }
}

/// Lookups a batch works through at a time: their exact timelines first, then the
/// networks of those the timelines left open.
pub(super) const CHUNK: usize = 256;
const _: () = assert!(CHUNK.is_power_of_two() && CHUNK <= 1 << 16);

/// How far ahead a software-pipelined pass may look past its last lookup.
pub(super) const LOOK_AHEAD: usize = 48;

/// Working space of a batched lookup, set up once per batch rather than per chunk.
pub(super) struct Scratch {
    /// Per lookup: its owner so far.
    owners: [u32; CHUNK],
    /// Lookups the exact timelines left open.
    open: [u16; CHUNK],
    /// What the passes of the exact and network lookups keep.
    work: Work,
}

/// What the passes of a chunk's lookups keep between them.
pub(super) struct Work {
    /// Per lookup: the slot or interval it is at (and room for a pipeline's look
    /// ahead past the last lookup).
    pub(super) at: [u32; CHUNK + LOOK_AHEAD],
    /// Lookups set aside for a later pass: (lookup, slot or interval to go on from).
    pub(super) aside: [(u16, u32); CHUNK],
    /// Likewise, for the pass after that.
    pub(super) later: [(u16, u32); CHUNK],
}

impl Scratch {
    /// Working space for one batch.
    fn new() -> Scratch {
        Scratch {
            owners: [UNATTRIBUTED; CHUNK],
            open: [0; CHUNK],
            work: Work::new(),
        }
    }
}

impl Work {
    /// Working space for the passes of one chunk after another.
    pub(super) fn new() -> Work {
        Work {
            at: [0; CHUNK + LOOK_AHEAD],
            aside: [(0, 0); CHUNK],
            later: [(0, 0); CHUNK],
        }
    }
}

/// Batched [`resolve`] of at most [`CHUNK`] lookups, appended to `out`, arranged so the
/// cache misses of many lookups overlap instead of being paid one after another:
/// 1. exact timelines, in one [`AddrMap::owners`] call, which also sets aside the
///    lookups they leave open (and that are not older than the cutoff);
/// 2. the networks of those set aside, in one [`Networks::owners`] call;
/// 3. the internet owner for public addresses no network covers.
fn resolve_chunk<K: AddrKey, N: Networks<K> + ?Sized>(
    family: &Family<'_, K, N>,
    keys: &[K],
    times: &[u64],
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    let len = keys.len().min(times.len()).min(CHUNK);
    let (keys, times) = (&keys[..len], &times[..len]);
    let Scratch { owners, open, work } = scratch;
    let n_open = family
        .exact
        .owners(keys, times, family.cutoff, owners, open, work);
    if n_open > 0 {
        let open = &open[..n_open];
        family.networks.owners(keys, times, open, owners, work);
        if family.internet != UNATTRIBUTED {
            for &k in open {
                let k = k as usize;
                owners[k] = family.or_internet(keys[k], owners[k]);
            }
        }
    }
    // `unknown` entries were not open: they answer nobody.
    for owner in &mut owners[..len] {
        *owner = std::hint::select_unpredictable(*owner == UNKNOWN, UNATTRIBUTED, *owner);
    }
    out.extend_from_slice(&owners[..len]);
}

impl Table {
    fn family_v4(&self) -> Family<'_, u32, NetworksV4> {
        Family {
            exact: &self.v4,
            networks: &self.cidr_v4,
            cutoff: self.cutoff,
            internet: self.internet,
        }
    }

    fn family_v6(&self) -> Family<'_, u128, [PrefixLevel<u128>]> {
        Family {
            exact: &self.v6,
            networks: &self.cidr_v6[..],
            cutoff: self.cutoff,
            internet: self.internet,
        }
    }

    /// Owner id of IPv4 address `addr` (big-endian integer) at epoch second `t`.
    #[inline]
    pub fn lookup_v4(&self, addr: u32, t: u64) -> u32 {
        resolve(&self.family_v4(), addr, t)
    }

    /// Owner id of IPv6 address `addr` at epoch second `t`.
    #[inline]
    pub fn lookup_v6(&self, addr: u128, t: u64) -> u32 {
        resolve(&self.family_v6(), addr, t)
    }

    /// Flows that started before this epoch second are outside the retention window and
    /// left unattributed (0 when nothing has been trimmed).
    pub fn cutoff(&self) -> u64 {
        self.cutoff
    }

    /// Owner ids of IPv4 addresses at times (`addrs[i]` at `times[i]`), appended to `out`.
    pub fn lookup_v4_batch(&self, addrs: &[u32], times: &[u64], out: &mut Vec<u32>) {
        let n = addrs.len().min(times.len());
        out.reserve(n);
        let family = self.family_v4();
        let mut scratch = Scratch::new();
        for (addrs, times) in addrs[..n].chunks(CHUNK).zip(times[..n].chunks(CHUNK)) {
            resolve_chunk(&family, addrs, times, &mut scratch, out);
        }
    }

    /// Owner ids of IPv6 addresses given as (high, low) u64 pairs, appended to `out`.
    pub fn lookup_v6_batch(&self, addrs: &[u64], times: &[u64], out: &mut Vec<u32>) {
        let n = (addrs.len() / 2).min(times.len());
        out.reserve(n);
        let family = self.family_v6();
        let mut keys = [0u128; CHUNK];
        let mut scratch = Scratch::new();
        for (halves, times) in addrs[..2 * n]
            .chunks(2 * CHUNK)
            .zip(times[..n].chunks(CHUNK))
        {
            for (key, pair) in keys.iter_mut().zip(halves.chunks_exact(2)) {
                *key = (u128::from(pair[0]) << 64) | u128::from(pair[1]);
            }
            resolve_chunk(&family, &keys[..times.len()], times, &mut scratch, out);
        }
    }

    /// Approximate bytes held by the lookup structures (not the owners' attributes).
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.v6.heap_bytes()
            + self.cidr_v4.heap_bytes()
            + self
                .cidr_v6
                .iter()
                .map(|l| l.nets.heap_bytes())
                .sum::<usize>()
    }

    /// What the address's own (exact) timeline says at `t`, without networks or the
    /// internet owner: `Some(owner)` for an assignment, `Some(UNATTRIBUTED)` for an
    /// `unknown` stretch, `None` where it says nothing (no entry, or unassigned) or `t`
    /// is before the cutoff.
    pub fn exact_owner(&self, addr: IpAddr, t: u64) -> Option<u32> {
        if t < self.cutoff {
            return None;
        }
        let found = match addr {
            IpAddr::V4(a) => self.v4.at(u32::from(a), t),
            IpAddr::V6(a) => self.v6.at(u128::from(a), t),
        };
        match found? {
            UNATTRIBUTED => None,
            UNKNOWN => Some(UNATTRIBUTED),
            owner => Some(owner),
        }
    }

    /// Owner id of network interface `id` at `t` from its own timeline
    /// ([`UNATTRIBUTED`] where it is unknown, unassigned, has no timeline, or `t` is
    /// before the cutoff).
    pub fn interface_owner(&self, id: &str, t: u64) -> u32 {
        if t < self.cutoff {
            return UNATTRIBUTED;
        }
        let Some(history) = self.interfaces.get(id) else {
            return UNATTRIBUTED;
        };
        let at = history.partition_point(|&(ts, _)| ts <= t);
        match at.checked_sub(1).map(|at| history[at].1) {
            Some(UNKNOWN) | None => UNATTRIBUTED,
            Some(owner) => owner,
        }
    }

    /// Number of network interfaces with a timeline.
    pub fn interfaces(&self) -> usize {
        self.interfaces.len()
    }

    /// Owner id of any address at `t`.
    pub fn lookup(&self, addr: IpAddr, t: u64) -> u32 {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(u32::from(a), t),
            IpAddr::V6(a) => self.lookup_v6(u128::from(a), t),
        }
    }

    /// The owner with id `id` (id 0 is the unattributed owner with no attributes).
    pub fn owner(&self, id: u32) -> Option<&Owner> {
        let id = id as usize;
        match self.owners.get(id) {
            Some(owner) => Some(owner),
            None => self
                .record_owners
                .as_ref()?
                .slots
                .get(id - self.owners.len())?
                .get(),
        }
    }

    /// Attribute = record field naming the local side's owner, as configured.
    pub fn local_owner_fields(&self) -> &[(String, String)] {
        &self.local_fields
    }

    /// The id of the owner with exactly `attrs`, named by a record: the changelog's own
    /// owner with those attributes is not reused (record owners are their own), a new
    /// one is registered the first time; `None` once [`MAX_RECORD_OWNERS`] are, or when
    /// no `local_owner_fields` are configured.
    pub fn record_owner(&self, attrs: Attrs) -> Option<u32> {
        let registry = self.record_owners.as_ref()?;
        let mut ids = registry.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = ids.get(&attrs) {
            return Some(id);
        }
        let at = ids.len();
        let slot = registry.slots.get(at)?;
        let owner = render(PackedAttrs::pack(&attrs), &self.member_names, &self.keys);
        slot.set(owner).ok()?;
        let id = (self.owners.len() + at) as u32;
        ids.insert(attrs, id);
        Some(id)
    }

    /// Attribute keys present in the table, sorted.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Number of events the table was built from.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Number of exact addresses with a history.
    pub fn addresses(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Number of networks with a history.
    pub fn networks(&self) -> usize {
        self.cidr_v4.len() + self.cidr_v6.iter().map(|l| l.nets.len()).sum::<usize>()
    }

    /// Number of distinct owners (without the unattributed one).
    pub fn owners(&self) -> usize {
        self.owners.len() - 1
    }
}

/// The attributes of the owner of public addresses nobody else covers.
pub fn internet_attrs() -> Attrs {
    Attrs::from([("app".to_string(), "internet".to_string())])
}

/// Folds events (and optionally AWS's ranges) into a [`Table`].
#[derive(Default)]
pub struct TableBuilder {
    v4: FxHashMap<u32, History>,
    v6: FxHashMap<u128, History>,
    cidr_v4: FxHashMap<(u8, u32), History>,
    cidr_v6: FxHashMap<(u8, u128), History>,
    aws: AwsRanges,
    internet: bool,
    retention: Option<u64>,
    newest: u64,
    /// Owner ids (1-based places in `owners`), found by their attributes' hash: each
    /// owner's attributes are held once.
    owner_ids: hashbrown::HashTable<u32>,
    owners: Vec<PackedAttrs>,
    events: usize,
    /// Sources named by events, by index, each with its latest `observed` horizon.
    sources: Vec<(Box<str>, Option<u64>)>,
    /// Per exact address whose events named a source: that source's index (the latest
    /// named; [`ANY_SOURCE`] when none was).
    v4_sources: FxHashMap<u32, u16>,
    v6_sources: FxHashMap<u128, u16>,
    /// Attribute = record field naming the local side's owner.
    local_fields: Vec<(String, String)>,
    /// Network interfaces' timelines and the source each one's events named.
    interfaces: FxHashMap<Box<str>, History>,
    interface_sources: FxHashMap<Box<str>, u16>,
}

impl TableBuilder {
    /// An empty builder: no retention limit, no AWS ranges, no internet classification.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps only the history needed to attribute flows up to `seconds` older than the
    /// newest event; older flows are left unattributed.
    pub fn retention(mut self, seconds: Option<u64>) -> Self {
        self.retention = seconds;
        self
    }

    /// Classifies public addresses that nothing else covers as the `internet` owner.
    pub fn internet(mut self, on: bool) -> Self {
        self.internet = on;
        self
    }

    /// Lets records name their local side's owner: attribute = record field (output
    /// name, e.g. `app = ecs_service_name`).
    pub fn local_owner_fields(mut self, fields: Vec<(String, String)>) -> Self {
        self.local_fields = fields;
        self
    }

    /// Adds AWS's published ranges as networks valid at all times; a changelog event for
    /// the same network overrides the range from its timestamp on.
    pub fn aws_ranges(&mut self, ranges: AwsRanges) {
        self.aws.extend(ranges);
    }

    /// The id of the owner with `attrs`, given one if they are new (then kept packed).
    fn owner_id(&mut self, attrs: &Attrs) -> u32 {
        use std::hash::BuildHasher;
        let hash = |attrs: &PackedAttrs| rustc_hash::FxBuildHasher.hash_one(attrs);
        let attrs = PackedAttrs::pack(attrs);
        let owners = &mut self.owners;
        let at = |id: u32| &owners[id as usize - 1];
        let attrs_hash = hash(&attrs);
        if let Some(&id) = self.owner_ids.find(attrs_hash, |&id| *at(id) == attrs) {
            return id;
        }
        owners.push(attrs);
        let id = owners.len() as u32; // ids start at 1
        self.owner_ids
            .insert_unique(attrs_hash, id, |&id| hash(&owners[id as usize - 1]));
        id
    }

    /// Adds one event (in read order; events need not be sorted by time).
    pub fn apply(&mut self, event: &Event) {
        self.newest = self.newest.max(event.ts);
        self.events += 1;
        let owner = match &event.op {
            Op::Unassign => UNATTRIBUTED,
            Op::Unknown => UNKNOWN,
            Op::Assign(attrs) => self.owner_id(attrs),
            Op::Observed => {
                if let Target::Source(name) = &event.target {
                    let at = self.source_index(name);
                    let horizon = &mut self.sources[at as usize].1;
                    *horizon = Some(horizon.map_or(event.ts, |h| h.max(event.ts)));
                }
                return;
            }
        };
        let source = match &event.source {
            Some(name) => self.source_index(name),
            None => ANY_SOURCE,
        };
        let entry = (event.ts, owner);
        match &event.target {
            Target::Ip(IpAddr::V4(a)) => {
                let a = u32::from(*a);
                self.v4.entry(a).or_default().push(entry);
                note_source(&mut self.v4_sources, a, source);
            }
            Target::Ip(IpAddr::V6(a)) => {
                let a = u128::from(*a);
                self.v6.entry(a).or_default().push(entry);
                note_source(&mut self.v6_sources, a, source);
            }
            Target::Cidr(ipnet::IpNet::V4(n)) => self
                .cidr_v4
                .entry((n.prefix_len(), u32::from(n.network())))
                .or_default()
                .push(entry),
            Target::Cidr(ipnet::IpNet::V6(n)) => self
                .cidr_v6
                .entry((n.prefix_len(), u128::from(n.network())))
                .or_default()
                .push(entry),
            Target::Interface(id) => {
                if let Some(history) = self.interfaces.get_mut(id) {
                    history.push(entry);
                } else {
                    self.interfaces.insert(id.clone(), vec![entry]);
                }
                note_source(&mut self.interface_sources, id.clone(), source);
            }
            // Only `observed` is about a source.
            Target::Source(_) => {}
        }
    }

    /// The index of the source named `name`, given one if it is new.
    fn source_index(&mut self, name: &str) -> u16 {
        match self.sources.iter().position(|(n, _)| **n == *name) {
            Some(at) => at as u16,
            None => {
                // More sources than that share the last index's horizon rules: none.
                let at = self.sources.len().min(usize::from(ANY_SOURCE) - 1);
                if at == self.sources.len() {
                    self.sources.push((name.into(), None));
                }
                at as u16
            }
        }
    }

    /// Bounds every exact timeline by its source's horizon: entries after it are left
    /// out of this build, and from one second after it the address is unknown. Nothing
    /// changes where no source has sent a horizon.
    fn apply_horizons(&mut self) {
        let earliest = self.sources.iter().filter_map(|(_, h)| *h).min();
        if earliest.is_none() {
            return;
        }
        let horizons: Vec<Option<u64>> = self.sources.iter().map(|(_, h)| *h).collect();
        let horizon_of = |source: Option<&u16>| match source.copied().unwrap_or(ANY_SOURCE) {
            ANY_SOURCE => earliest,
            at => horizons[at as usize],
        };
        fn bound(history: &mut History, horizon: Option<u64>) {
            if let Some(horizon) = horizon {
                history.sort_by_key(|&(ts, _)| ts);
                history.truncate(history.partition_point(|&(ts, _)| ts <= horizon));
                history.push((horizon + 1, UNKNOWN));
            }
        }
        for (addr, history) in &mut self.v4 {
            bound(history, horizon_of(self.v4_sources.get(addr)));
        }
        for (addr, history) in &mut self.v6 {
            bound(history, horizon_of(self.v6_sources.get(addr)));
        }
        for (id, history) in &mut self.interfaces {
            bound(history, horizon_of(self.interface_sources.get(id)));
        }
    }

    /// The latest horizon of every source that has sent one (contract 5's `observed`).
    pub fn horizons(&self) -> impl Iterator<Item = (&str, u64)> {
        self.sources
            .iter()
            .filter_map(|(name, h)| h.map(|h| (&**name, h)))
    }

    /// Adds many events.
    pub fn extend<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for event in events {
            self.apply(event);
        }
    }

    /// Sorts and trims every timeline and renders the owners' fragments.
    pub fn build(mut self) -> Table {
        self.apply_horizons();
        let cutoff = match self.retention {
            Some(retention) if self.events > 0 => self.newest.saturating_sub(retention),
            _ => 0,
        };
        // An AWS range holds from the beginning of time; a changelog event for the same
        // network comes after it in read order, so it wins from its own timestamp on.
        for (net, attrs) in std::mem::take(&mut self.aws) {
            let owner = self.owner_id(&attrs);
            let history = match net {
                ipnet::IpNet::V4(n) => self
                    .cidr_v4
                    .entry((n.prefix_len(), u32::from(n.network())))
                    .or_default(),
                ipnet::IpNet::V6(n) => self
                    .cidr_v6
                    .entry((n.prefix_len(), u128::from(n.network())))
                    .or_default(),
            };
            history.insert(0, (0, owner));
        }
        let internet = if self.internet {
            self.owner_id(&internet_attrs())
        } else {
            UNATTRIBUTED
        };
        let interfaces = timelines(std::mem::take(&mut self.interfaces), cutoff).collect();
        let v4 = AddrMap::build(timelines(self.v4, cutoff));
        let v6 = AddrMap::build(timelines(self.v6, cutoff));
        let cidr_v4 = NetworksV4::build(
            timelines(self.cidr_v4, cutoff).map(|((len, net), history)| (len, net, history)),
        );
        let cidr_v6 = levels(timelines(self.cidr_v6, cutoff), |len| {
            if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            }
        });

        let keys: Vec<String> = self
            .owners
            .iter()
            .flat_map(|attrs| attrs.keys())
            .chain(self.local_fields.iter().map(|(attr, _)| attr.as_str()))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut owners = Vec::with_capacity(self.owners.len() + 1);
        let names = member_names(&keys);
        owners.push(render(PackedAttrs::default(), &names, &keys));
        owners.extend(
            self.owners
                .into_iter()
                .map(|attrs| render(attrs, &names, &keys)),
        );
        let record_owners = (!self.local_fields.is_empty()).then(|| RecordOwners {
            ids: Default::default(),
            slots: (0..MAX_RECORD_OWNERS)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        });
        Table {
            v4,
            v6,
            cidr_v4,
            cidr_v6,
            owners,
            keys,
            interfaces,
            local_fields: self.local_fields,
            record_owners,
            member_names: names,
            events: self.events,
            cutoff,
            internet,
        }
    }
}

/// Records `source` as the source of `addr`'s timeline: a named one replaces what was
/// there; [`ANY_SOURCE`] only fills a blank.
fn note_source<K: std::hash::Hash + Eq>(sources: &mut FxHashMap<K, u16>, addr: K, source: u16) {
    match source {
        ANY_SOURCE => {
            sources.entry(addr).or_insert(ANY_SOURCE);
        }
        named => {
            sources.insert(addr, named);
        }
    }
}

/// Sorts each timeline by time (stably: equal timestamps keep read order, so the later
/// event wins) and drops what no lookup at or after `cutoff` can reach: entries older
/// than the last one at or before the cutoff, and timelines that end unassigned before
/// it.
fn timelines<Key>(
    histories: FxHashMap<Key, History>,
    cutoff: u64,
) -> impl ExactSizeIterator<Item = (Key, History)> {
    let kept: Vec<(Key, History)> = histories
        .into_iter()
        .filter_map(|(key, mut history)| {
            history.sort_by_key(|&(ts, _)| ts);
            let at_cutoff = history.partition_point(|&(ts, _)| ts <= cutoff);
            if at_cutoff > 1 {
                history.drain(..at_cutoff - 1);
            }
            let dormant =
                history.len() == 1 && history[0].1 == UNATTRIBUTED && history[0].0 <= cutoff;
            (!dormant).then_some((key, history))
        })
        .collect();
    kept.into_iter()
}

/// Groups network timelines by prefix length, most specific first.
fn levels<K: AddrKey>(
    nets: impl Iterator<Item = ((u8, K), History)>,
    mask: impl Fn(u8) -> K,
) -> Vec<PrefixLevel<K>> {
    let mut by_len: std::collections::BTreeMap<u8, Vec<(K, History)>> = Default::default();
    for ((len, net), history) in nets {
        by_len.entry(len).or_default().push((net, history));
    }
    by_len
        .into_iter()
        .rev()
        .map(|(len, nets)| PrefixLevel {
            mask: mask(len),
            nets: AddrMap::build(nets.into_iter()),
        })
        .collect()
}

/// Each attribute key's `,"src_<key>":` and `,"dst_<key>":`, as the fragments start
/// their members.
fn member_names(keys: &[String]) -> [Vec<String>; 2] {
    ["src", "dst"].map(|side| {
        keys.iter()
            .map(|key| {
                let name = serde_json::to_string(&format!("{side}_{key}")).expect("string");
                format!(",{name}:")
            })
            .collect()
    })
}

fn render(attrs: PackedAttrs, names: &[Vec<String>; 2], keys: &[String]) -> Owner {
    let mut value_ranges = Vec::with_capacity(keys.len());
    // Names, values and their quotes (`null` fits in a name's share).
    let values_len: usize = attrs.iter().map(|(_, v)| v.len()).sum();
    let room = |names: &[String]| names.iter().map(|n| n.len() + 2).sum::<usize>() + values_len;
    let fragment = |names: &[String], mut ranges: Option<&mut Vec<(u32, u32)>>| {
        let mut out = String::with_capacity(room(names));
        let mut owned = attrs.iter().peekable();
        for (name, key) in names.iter().zip(keys) {
            out.push_str(name);
            let from = out.len() as u32;
            // Both in key order: the owner's next attribute is this key's or a later one.
            while owned.next_if(|(k, _)| *k < key.as_str()).is_some() {}
            match owned.next_if(|(k, _)| *k == key.as_str()).map(|(_, v)| v) {
                // Most values need no escaping: quoted as they are.
                Some(value) if !crate::util::needs_json_escape(value) => {
                    out.push('"');
                    out.push_str(value);
                    out.push('"');
                }
                Some(value) => out.push_str(&serde_json::to_string(value).expect("string")),
                None => out.push_str("null"),
            }
            if let Some(ranges) = ranges.as_deref_mut() {
                ranges.push((from, out.len() as u32));
            }
        }
        out
    };
    let src_fragment = fragment(&names[0], Some(&mut value_ranges));
    let dst_fragment = fragment(&names[1], None);
    Owner {
        src_fragment,
        dst_fragment,
        value_ranges: value_ranges.into_boxed_slice(),
        attrs,
    }
}

#[cfg(test)]
impl Table {
    /// Attribute `key` of whoever owns `ip` at `t` (tests).
    pub(crate) fn attr_at(&self, ip: &str, t: u64, key: &str) -> Option<String> {
        self.owner_attr(self.lookup(ip.parse().unwrap(), t), key)
    }

    /// Attribute `key` of owner `id` (tests).
    pub(crate) fn owner_attr(&self, id: u32, key: &str) -> Option<String> {
        self.owner(id).unwrap().attrs.get(key).map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Event;

    /// The table of a changelog.
    fn table(lines: &str) -> Table {
        let log = super::super::events::read_changelog(lines.as_bytes()).unwrap();
        assert!(log.rejected.is_empty(), "{:?}", log.rejected);
        let mut builder = TableBuilder::new();
        builder.extend(&log.events);
        builder.build()
    }

    fn app(table: &Table, ip: &str, t: u64) -> Option<String> {
        table.attr_at(ip, t, "app")
    }

    #[test]
    fn contract_three_rules() {
        let t = table(
            r#"{"ts": 1700000000, "op": "assign", "ip": "10.1.2.3", "attrs": {"app": "api"}}
{"ts": 1700000300, "op": "unassign", "ip": "10.1.2.3"}
{"ts": 1699990000, "op": "assign", "cidr": "10.1.0.0/16", "attrs": {"app": "vpc-main"}}
{"ts": 1700000600, "op": "assign", "ip": "10.1.2.3", "attrs": {"app": "web"}}
{"ts": 1699999000, "op": "assign", "cidr": "10.1.2.0/24", "attrs": {"app": "subnet"}}
"#,
        );
        assert_eq!(app(&t, "10.1.2.3", 1699980000), None, "before anything");
        assert_eq!(app(&t, "10.1.2.3", 1699990000).as_deref(), Some("vpc-main"));
        assert_eq!(
            app(&t, "10.1.2.3", 1699999999).as_deref(),
            Some("subnet"),
            "most specific"
        );
        assert_eq!(
            app(&t, "10.1.2.3", 1700000000).as_deref(),
            Some("api"),
            "ts <= t"
        );
        assert_eq!(app(&t, "10.1.2.3", 1700000299).as_deref(), Some("api"));
        assert_eq!(
            app(&t, "10.1.2.3", 1700000300).as_deref(),
            Some("subnet"),
            "unassigned"
        );
        assert_eq!(app(&t, "10.1.2.3", 1700000600).as_deref(), Some("web"));
        assert_eq!(app(&t, "10.1.9.9", 1700000600).as_deref(), Some("vpc-main"));
        assert_eq!(app(&t, "10.2.0.1", 1700000600), None);
    }

    #[test]
    fn equal_timestamps_apply_in_read_order() {
        let t = table(
            r#"{"ts": 10, "op": "assign", "ip": "::1", "attrs": {"app": "a"}}
{"ts": 10, "op": "assign", "ip": "::1", "attrs": {"app": "b"}}
{"ts": 20, "op": "assign", "ip": "::1", "attrs": {"app": "c"}}
{"ts": 20, "op": "unassign", "ip": "::1"}
"#,
        );
        assert_eq!(app(&t, "::1", 10).as_deref(), Some("b"));
        assert_eq!(app(&t, "::1", 25), None);
    }

    #[test]
    fn cidr_unassign_and_ipv6_prefixes() {
        let t = table(
            r#"{"ts": 0, "op": "assign", "cidr": "2001:db8::/32", "attrs": {"app": "v6"}}
{"ts": 0, "op": "assign", "cidr": "0.0.0.0/0", "attrs": {"app": "internet"}}
{"ts": 50, "op": "unassign", "cidr": "2001:db8::/32"}
"#,
        );
        assert_eq!(app(&t, "2001:db8::7", 49).as_deref(), Some("v6"));
        assert_eq!(app(&t, "2001:db8::7", 50), None);
        assert_eq!(app(&t, "8.8.8.8", 50).as_deref(), Some("internet"));
    }

    #[test]
    fn batched_lookups_agree_with_single_lookups() {
        // Internet classification on and a retention window, so batches meet every rule:
        // the cutoff, exact timelines, nested networks with unassigns, the internet owner.
        let mut builder = TableBuilder::new().internet(true).retention(Some(900));
        let mut x = 99u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 16
        };
        for i in 0..3000u64 {
            let (ip4, ip6) = (
                format!("10.0.{}.{}", i / 250, i % 250),
                format!("2001:db8::{i:x}"),
            );
            for ip in [ip4, ip6] {
                let ts = next() % 1000;
                // A third of the addresses observed by source `p`, the others by no
                // source in particular.
                let source = if i % 3 == 0 { r#", "source": "p""# } else { "" };
                let line = match next() % 6 {
                    0 => format!(r#"{{"ts": {ts}, "op": "unassign", "ip": "{ip}"{source}}}"#),
                    1 => format!(r#"{{"ts": {ts}, "op": "unknown", "ip": "{ip}"{source}}}"#),
                    _ => format!(
                        r#"{{"ts": {ts}, "op": "assign", "ip": "{ip}", "attrs": {{"app": "a{}"}}{source}}}"#,
                        next() % 50
                    ),
                };
                builder.apply(&Event::parse(&line).unwrap());
            }
        }
        builder.apply(
            &Event::parse(
                r#"{"ts": 500, "op": "assign", "cidr": "10.0.0.0/20", "attrs": {"app": "net"}}"#,
            )
            .unwrap(),
        );
        // Horizons: `p` at 1050, `q` at 990 (the one of addresses naming no source).
        for (ts, source) in [(1050, "p"), (990, "q")] {
            let line = format!(r#"{{"ts": {ts}, "op": "observed", "source": "{source}"}}"#);
            builder.apply(&Event::parse(&line).unwrap());
        }
        // Nested networks in 10.1/16 (dense enough for a /24 directory) and a public /16,
        // each assigned and some unassigned later.
        for _ in 0..400 {
            let len = [16, 20, 24, 26, 28, 30, 32][(next() % 7) as usize];
            let (c, d) = (next() % 256, next() % 256);
            let (a, b) = if next() % 5 == 0 { (8, 8) } else { (10, 1) };
            let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(a, b, c as u8, d as u8), len)
                .unwrap()
                .trunc();
            for (ts, op) in [(next() % 1000, "assign"), (next() % 1200, "unassign")] {
                if op == "unassign" && next() % 3 != 0 {
                    continue;
                }
                let line = format!(
                    r#"{{"ts": {ts}, "op": "{op}", "cidr": "{net}", "attrs": {{"app": "n{}"}}}}"#,
                    next() % 20
                );
                builder.apply(&Event::parse(&line).unwrap());
            }
        }
        let table = builder.build();
        assert!(table.cutoff() > 0, "the retention window trims something");
        let (mut v4, mut v6, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5000 {
            let i = next() % 3500;
            let (a, b) = match next() % 4 {
                0 => (10, 1),
                1 => (8, 8),
                2 => (9, 9), // public, no network: the internet owner
                _ => (10, 0),
            };
            let (c, d) = if a == 10 && b == 0 {
                ((i / 250) as u8, (i % 250) as u8)
            } else {
                (next() as u8, next() as u8)
            };
            v4.push(u32::from_be_bytes([a, b, c, d]));
            let a = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap()) | i as u128;
            v6.extend([(a >> 64) as u64, a as u64]);
            times.push(next() % 1100);
        }
        let (mut got4, mut got6) = (Vec::new(), Vec::new());
        table.lookup_v4_batch(&v4, &times, &mut got4);
        table.lookup_v6_batch(&v6, &times, &mut got6);
        for i in 0..times.len() {
            assert_eq!(got4[i], table.lookup_v4(v4[i], times[i]));
            let a = ((v6[2 * i] as u128) << 64) | v6[2 * i + 1] as u128;
            assert_eq!(got6[i], table.lookup_v6(a, times[i]));
        }
        assert!(got4.iter().any(|&o| o != 0) && got6.iter().any(|&o| o != 0));
        // Every rule decided some of the lookups.
        let internet = table.lookup_v4(u32::from_be_bytes([9, 9, 9, 9]), 1000);
        assert!(got4.contains(&internet) && got4.contains(&0));
        let net_owned = (0..times.len())
            .filter(|&i| v4[i] >> 16 == 0x0A01 && got4[i] != 0 && got4[i] != internet);
        assert!(net_owned.count() > 100);
    }

    #[test]
    fn unknown_and_observed_never_guess() {
        let t = table(
            r#"{"ts": 0, "op": "assign", "cidr": "10.0.0.0/8", "attrs": {"app": "vpc"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}, "source": "p"}
{"ts": 31, "op": "unknown", "ip": "10.0.0.1", "source": "p"}
{"ts": 60, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "b"}, "source": "p"}
{"ts": 0, "op": "assign", "ip": "10.0.0.2", "attrs": {"app": "c"}, "source": "p"}
{"ts": 31, "op": "unknown", "ip": "10.0.0.2", "source": "p"}
{"ts": 60, "op": "unassign", "ip": "10.0.0.2", "source": "p"}
{"ts": 0, "op": "assign", "ip": "10.0.0.3", "attrs": {"app": "d"}, "source": "q"}
{"ts": 0, "op": "assign", "ip": "10.0.0.4", "attrs": {"app": "e"}}
{"ts": 150, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "f"}, "source": "p"}
{"ts": 30, "op": "observed", "source": "p"}
{"ts": 60, "op": "observed", "source": "p"}
{"ts": 90, "op": "observed", "source": "p"}
{"ts": 40, "op": "observed", "source": "q"}
"#,
        );
        let app_of = |ip: &str, time: u64| app(&t, ip, time);
        // Owner A proven at 0 and 30, B at 60 and 90: between the polls, nobody (not
        // the network); after p's horizon (90), not known yet; the assign at 150 comes
        // after the horizon and says nothing yet.
        for (time, want) in [
            (0, Some("a")),
            (30, Some("a")),
            (31, None),
            (59, None),
            (60, Some("b")),
            (90, Some("b")),
            (91, None),
            (150, None),
        ] {
            assert_eq!(
                app_of("10.0.0.1", time).as_deref(),
                want,
                "10.0.0.1 at {time}"
            );
        }
        // Gone at 60: the network again from then, up to the horizon.
        for (time, want) in [
            (30, Some("c")),
            (45, None),
            (60, Some("vpc")),
            (90, Some("vpc")),
            (91, None),
        ] {
            assert_eq!(
                app_of("10.0.0.2", time).as_deref(),
                want,
                "10.0.0.2 at {time}"
            );
        }
        // q's horizon is 40; an address naming no source is bounded by the earliest (40).
        assert_eq!(app_of("10.0.0.3", 40).as_deref(), Some("d"));
        assert_eq!(app_of("10.0.0.3", 41), None);
        assert_eq!(app_of("10.0.0.4", 40).as_deref(), Some("e"));
        assert_eq!(app_of("10.0.0.4", 41), None);
        // Addresses no source has events for keep the network rules.
        assert_eq!(app_of("10.9.9.9", 1000).as_deref(), Some("vpc"));
        let mut builder = TableBuilder::new();
        for line in [
            r#"{"ts": 7, "op": "observed", "source": "p"}"#,
            r#"{"ts": 5, "op": "observed", "source": "p"}"#,
        ] {
            builder.apply(&Event::parse(line).unwrap());
        }
        assert_eq!(builder.horizons().collect::<Vec<_>>(), [("p", 7)]);
        // Batches agree.
        let addrs: Vec<u32> = (1..=4).map(|d| u32::from_be_bytes([10, 0, 0, d])).collect();
        for time in [0, 30, 31, 45, 60, 90, 91, 150] {
            let mut got = Vec::new();
            t.lookup_v4_batch(&addrs, &[time; 4], &mut got);
            let want: Vec<u32> = addrs.iter().map(|&a| t.lookup_v4(a, time)).collect();
            assert_eq!(got, want, "at {time}");
        }
    }

    #[test]
    fn interface_timelines_follow_the_address_rules_without_networks() {
        let t = table(
            r#"{"ts": 0, "op": "assign", "cidr": "10.0.0.0/8", "attrs": {"app": "vpc"}}
{"ts": 0, "op": "assign", "interface": "eni-1", "attrs": {"app": "a"}, "source": "p"}
{"ts": 31, "op": "unknown", "interface": "eni-1", "source": "p"}
{"ts": 60, "op": "assign", "interface": "eni-1", "attrs": {"app": "b"}, "source": "p"}
{"ts": 0, "op": "assign", "interface": "eni-2", "attrs": {"app": "c"}, "source": "p"}
{"ts": 31, "op": "unknown", "interface": "eni-2", "source": "p"}
{"ts": 60, "op": "unassign", "interface": "eni-2", "source": "p"}
{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}, "source": "p"}
{"ts": 31, "op": "unknown", "ip": "10.0.0.1", "source": "p"}
{"ts": 30, "op": "observed", "source": "p"}
{"ts": 60, "op": "observed", "source": "p"}
{"ts": 90, "op": "observed", "source": "p"}
"#,
        );
        let app_of = |id: &str, time: u64| t.owner_attr(t.interface_owner(id, time), "app");
        for (time, one, two) in [
            (0, Some("a"), Some("c")),
            (30, Some("a"), Some("c")),
            (31, None, None),
            (60, Some("b"), None),
            (90, Some("b"), None),
            (91, None, None),
        ] {
            assert_eq!(app_of("eni-1", time).as_deref(), one, "eni-1 at {time}");
            assert_eq!(app_of("eni-2", time).as_deref(), two, "eni-2 at {time}");
        }
        assert_eq!(app_of("eni-9", 10), None);
        assert_eq!(t.interfaces(), 2);
        // The exact timeline alone: an owner, an unknown stretch, or nothing said.
        let addr = "10.0.0.1".parse().unwrap();
        let a = t.exact_owner(addr, 10).unwrap();
        assert_eq!(t.owner(a).unwrap().attrs.get("app").unwrap(), "a");
        assert_eq!(t.exact_owner(addr, 40), Some(UNATTRIBUTED));
        assert_eq!(t.exact_owner("10.0.0.9".parse().unwrap(), 40), None);
        // The same attributes are the same owner, whether an address or an interface has them.
        assert_eq!(t.interface_owner("eni-1", 10), a);
    }

    #[test]
    fn fragments_cover_every_key() {
        let t = table(
            r#"{"ts": 0, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a\"b", "region": "r"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.2", "attrs": {"zone": "z"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.3", "attrs": {"app": "tab\tback\\slash \u0001 é"}}
{"ts": 0, "op": "assign", "ip": "10.0.0.4", "attrs": {"zone": "y", "app": "x"}}
"#,
        );
        assert_eq!(t.keys(), ["app", "region", "zone"]);
        for (ip, fragment) in [
            (
                "10.0.0.2",
                r#","src_app":null,"src_region":null,"src_zone":"z""#,
            ),
            (
                "10.0.0.4",
                r#","src_app":"x","src_region":null,"src_zone":"y""#,
            ),
        ] {
            let id = t.lookup(ip.parse().unwrap(), 1);
            assert_eq!(t.owner(id).unwrap().src_fragment, fragment);
        }
        let id = t.lookup("10.0.0.3".parse().unwrap(), 1);
        assert_eq!(
            t.owner(id).unwrap().dst_fragment,
            r#","dst_app":"tab\tback\\slash \u0001 é","dst_region":null,"dst_zone":null"#
        );
        let id = t.lookup("10.0.0.1".parse().unwrap(), 1);
        assert_eq!(
            t.owner(id).unwrap().src_fragment,
            r#","src_app":"a\"b","src_region":"r","src_zone":null"#
        );
        let values: Vec<&str> = (0..3).map(|k| t.owner(id).unwrap().value_json(k)).collect();
        assert_eq!(values, [r#""a\"b""#, r#""r""#, "null"]);
        assert_eq!(
            t.owner(0).unwrap().dst_fragment,
            r#","dst_app":null,"dst_region":null,"dst_zone":null"#
        );
    }

    fn built(lines: &str, builder: TableBuilder) -> Table {
        let log = super::super::events::read_changelog(lines.as_bytes()).unwrap();
        let mut builder = builder;
        builder.extend(&log.events);
        builder.build()
    }

    #[test]
    fn retention_trims_history_and_never_misattributes_older_flows() {
        let events = r#"{"ts": 1000, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}}
{"ts": 2000, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "b"}}
{"ts": 3000, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "c"}}
{"ts": 1000, "op": "assign", "ip": "10.0.0.2", "attrs": {"app": "d"}}
{"ts": 1500, "op": "unassign", "ip": "10.0.0.2"}
{"ts": 0, "op": "assign", "cidr": "10.0.0.0/24", "attrs": {"app": "net"}}
{"ts": 5000, "op": "assign", "ip": "10.0.0.9", "attrs": {"app": "e"}}
"#;
        let full = built(events, TableBuilder::new());
        let trimmed = built(events, TableBuilder::new().retention(Some(2500)));
        assert_eq!(trimmed.cutoff(), 2500);
        assert_eq!(full.cutoff(), 0);
        assert!(trimmed.heap_bytes() <= full.heap_bytes());
        // Inside the window both tables agree.
        for t in [2500, 2999, 3000, 4000, 6000] {
            for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.7", "10.0.0.9"] {
                assert_eq!(app(&trimmed, ip, t), app(&full, ip, t), "{ip} at {t}");
            }
        }
        // The owner at the cutoff is kept: b held 10.0.0.1 from 2000.
        assert_eq!(app(&trimmed, "10.0.0.1", 2600).as_deref(), Some("b"));
        // A dormant address falls back to its network inside the window...
        assert_eq!(app(&trimmed, "10.0.0.2", 2600).as_deref(), Some("net"));
        // ...and nothing older than the window is attributed, even to the network.
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.7"] {
            assert_eq!(app(&trimmed, ip, 1200), None, "{ip}");
        }
        assert_eq!(app(&full, "10.0.0.1", 1200).as_deref(), Some("a"));
        assert_eq!(trimmed.addresses(), 2, "the dormant address is dropped");
    }

    fn aws() -> AwsRanges {
        super::super::aws_ranges::parse(
            r#"{"prefixes": [
                {"ip_prefix": "52.95.0.0/16", "region": "us-east-1", "service": "S3"},
                {"ip_prefix": "52.0.0.0/8", "region": "us-east-1", "service": "AMAZON"},
                {"ip_prefix": "10.9.0.0/16", "region": "us-west-2", "service": "EC2"}
            ], "ipv6_prefixes": [
                {"ipv6_prefix": "2600:1f00::/24", "region": "us-east-1", "service": "EC2"}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn precedence_of_changelog_aws_ranges_and_internet() {
        let events = r#"{"ts": 100, "op": "assign", "ip": "52.95.1.1", "attrs": {"app": "ours"}}
{"ts": 100, "op": "assign", "cidr": "52.95.7.0/24", "attrs": {"app": "vpn"}}
{"ts": 100, "op": "assign", "cidr": "10.9.0.0/16", "attrs": {"app": "peered"}}
"#;
        let mut builder = TableBuilder::new().internet(true);
        builder.aws_ranges(aws());
        let t = built(events, builder);
        let attr = |ip: &str, key: &str| t.attr_at(ip, 200, key);
        assert_eq!(
            attr("52.95.1.1", "app").as_deref(),
            Some("ours"),
            "exact IP first"
        );
        assert_eq!(
            attr("52.95.7.7", "app").as_deref(),
            Some("vpn"),
            "more specific changelog net"
        );
        assert_eq!(attr("52.95.8.8", "app").as_deref(), Some("aws"));
        assert_eq!(
            attr("52.95.8.8", "service").as_deref(),
            Some("S3"),
            "most specific AWS range"
        );
        assert_eq!(attr("52.1.1.1", "service").as_deref(), Some("AMAZON"));
        assert_eq!(
            attr("10.9.1.1", "app").as_deref(),
            Some("peered"),
            "changelog wins a tie"
        );
        assert_eq!(attr("2600:1f00::5", "service").as_deref(), Some("EC2"));
        assert_eq!(attr("8.8.8.8", "app").as_deref(), Some("internet"));
        assert_eq!(attr("2a00:1450::1", "app").as_deref(), Some("internet"));
        assert_eq!(
            attr("192.168.1.1", "app"),
            None,
            "private space is not internet"
        );
        assert_eq!(attr("10.1.1.1", "app"), None);
        // AWS ranges hold at any time; the changelog net only from its timestamp.
        let before = t.lookup("10.9.1.1".parse().unwrap(), 50);
        assert_eq!(
            t.owner(before).unwrap().attrs.get("service").unwrap(),
            "EC2"
        );
        // Without internet classification, uncovered public addresses stay unattributed.
        let plain = built(events, TableBuilder::new());
        assert_eq!(plain.lookup("8.8.8.8".parse().unwrap(), 200), UNATTRIBUTED);
    }
}
