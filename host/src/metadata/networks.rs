//! IPv4 networks as elementary intervals: "the most specific network assigned at `t` that
//! contains `a`" without probing every prefix length.
//!
//! Networks (CIDRs) are nested or disjoint, so their boundaries cut the address space
//! into intervals on which the set of covering networks is constant. At build time each
//! interval's answer is worked out for every time one of its networks changes, by the
//! rule itself (most specific network first, the first one assigned at that time wins),
//! and kept as a short timeline of changes. A lookup finds the interval without a
//! search: a directory entry per /16 names it when no boundary lies inside the /16;
//! otherwise a page of entries per /24 does, or, for a /24 cut by boundaries, the
//! count of its boundaries at or below the address's last byte (a few kept in one
//! 16-byte record, more in a 256-byte table). Then it reads the interval's record:
//! after the last change (the usual case: flows are minutes old, networks change
//! rarely) the record holds the answer, as it does for the two changes before that;
//! for an older time, one short run of earlier changes is scanned.

use super::addr_map::{prefetch, push_run, run_at};
use super::table::{CHUNK, Work};

/// A network as the index is built from: prefix length, network address, timeline of
/// `(from_ts, owner)` sorted by time.
pub type Network = (u8, u32, Vec<(u64, u32)>);

/// Tags of a directory entry (its top two bits); the rest is the payload.
const TAG: u32 = 0b11 << 30;
/// The entry's block lies inside one interval: the payload is the interval's index.
const LEAF: u32 = 0;
/// (/16 entries) The payload is the index of the /16's page of /24 entries.
const PAGE: u32 = 1 << 30;
/// (/24 entries) The payload indexes `few`: the /24 holds at most [`FEW`] boundaries.
const SOME: u32 = 2 << 30;
/// (/24 entries) The payload indexes `many`: a table by last byte.
const MANY: u32 = 3 << 30;

/// Boundaries inside a /24 that one [`Few`] record holds.
const FEW: usize = 12;

/// A /24 cut by at most [`FEW`] interval boundaries.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
struct Few {
    /// The interval holding the /24's first address.
    base: u32,
    /// Each boundary's last byte minus one (boundaries are never at byte 0), 255 for
    /// unused ones: the address's interval is `base` plus how many of these are below
    /// its last byte.
    below: [u8; FEW],
}

impl Few {
    /// How many of the boundaries are at or below last byte `last`.
    #[inline(always)]
    fn cuts_below(&self, last: u8) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86_64; the load reads exactly this 16-byte record.
            unsafe {
                let record = _mm_loadu_si128((self as *const Few).cast());
                let last = _mm_set1_epi8(last as i8);
                // Bytes at or above `last` (max(b, last) == b); `below` is ascending,
                // so the cuts below `last` are the lanes before the first of those.
                let at_or_above = _mm_cmpeq_epi8(_mm_max_epu8(record, last), record);
                let mask = _mm_movemask_epi8(at_or_above) as u32 >> 4;
                (mask | 1 << FEW).trailing_zeros() as usize
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.below.iter().filter(|&&b| b < last).count()
    }
}

/// A /24 cut by more than [`FEW`] boundaries.
#[derive(Clone, Copy, Debug)]
struct Many {
    /// The interval holding the /24's first address.
    base: u32,
    /// Per last byte: how many boundaries are at or below it.
    offsets: [u8; 256],
}

/// Answers an interval's record holds inline: its latest changes.
const INLINE: usize = 3;

/// Marks an interval without changes before its inline ones.
const NO_OLDER: u32 = u32::MAX;

/// One elementary interval: its answer over time, as its latest changes (most lookups
/// read nothing else) and where the earlier ones are. 32 bytes, aligned so that a
/// record never straddles cache lines.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Interval {
    /// From when each of the latest answers holds, newest first; unused ones are 0,
    /// with owner 0 (before its first change an interval has no owner).
    ts: [u32; INLINE],
    /// Each of those answers' owner (0 = nobody).
    owners: [u32; INLINE],
    /// Where the earlier changes are in `answers` (a `(count, 0)` header, then the
    /// changes oldest first), or [`NO_OLDER`].
    older: u32,
}

impl Interval {
    /// The owner at `t`, unless `t` is before the inline answers and earlier ones
    /// decide.
    #[inline(always)]
    fn inline_answer(&self, t: u64) -> Option<u32> {
        let after = self.ts.iter().filter(|&&ts| u64::from(ts) > t).count();
        match after < INLINE || self.older == NO_OLDER {
            true => Some(self.owners.get(after).copied().unwrap_or(0)),
            false => None,
        }
    }
}

/// Timelines of the networks, by network id: `(from_ts, owner)` oldest first.
#[derive(Default)]
struct Timelines {
    /// Per network: where its entries start in `entries`, and how many there are.
    runs: Vec<(u32, u32)>,
    entries: Vec<(u32, u32)>,
}

impl Timelines {
    /// The owner of the latest entry at or before `t`, if any (0 for an unassign).
    #[inline]
    fn at(&self, id: u32, t: u64) -> Option<u32> {
        let (start, len) = self.runs[id as usize];
        self.entries[start as usize..(start + len) as usize]
            .iter()
            .rev()
            .find(|&&(ts, _)| u64::from(ts) <= t)
            .map(|&(_, owner)| owner)
    }
}

/// The IPv4 networks of a table.
#[derive(Default)]
pub struct NetworksV4 {
    /// One entry per /16: [`LEAF`] or [`PAGE`].
    dir16: Vec<u32>,
    /// 256 entries per page, one per /24: [`LEAF`], [`SOME`] or [`MANY`]. Page 0 is
    /// a dummy that no /16 names.
    pages: Vec<u32>,
    /// The cut /24s' records; `few[0]` is a dummy that no /24 names.
    few: Vec<Few>,
    many: Vec<Many>,
    intervals: Vec<Interval>,
    /// The intervals' changes before their inline ones, `(from_ts, owner)` oldest
    /// first, each run behind a header. An interval's changes are worked out by the
    /// rule applied to its covering networks at every time one of them changes, so a
    /// lookup reads one record (or one short run) instead of walking the networks.
    answers: Vec<(u32, u32)>,
    /// Number of networks.
    networks: usize,
}

impl NetworksV4 {
    /// Builds the index from `(prefix length, network address, timeline)` with timelines
    /// sorted by time and times at most [`super::events::MAX_TS`].
    pub fn build(networks: impl IntoIterator<Item = Network>) -> NetworksV4 {
        let ts32 = |ts: u64| ts.min(super::events::MAX_TS) as u32;
        // Ordered by start, then less specific first: a sweep then meets every network
        // after the networks that contain it.
        // (start, end, prefix length, timeline)
        type Span = (u32, u64, u8, Vec<(u64, u32)>);
        let mut nets: Vec<Span> = networks
            .into_iter()
            .map(|(len, net, timeline)| {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let start = net & mask;
                (
                    start,
                    u64::from(start) + (1u64 << (32 - len)),
                    len,
                    timeline,
                )
            })
            .collect();
        nets.sort_by_key(|&(start, _, len, _)| (start, len));
        let mut timelines = Timelines::default();
        for (_, _, _, timeline) in &nets {
            let at = timelines.entries.len() as u32;
            timelines
                .entries
                .extend(timeline.iter().map(|&(ts, owner)| (ts32(ts), owner)));
            timelines.runs.push((at, timeline.len() as u32));
        }
        let mut bounds: Vec<u64> = nets
            .iter()
            .flat_map(|&(start, end, _, _)| [u64::from(start), end])
            .chain([0])
            .filter(|&b| b < 1 << 32)
            .collect();
        bounds.sort_unstable();
        bounds.dedup();

        let mut index = NetworksV4 {
            networks: timelines.runs.len(),
            ..NetworksV4::default()
        };
        let mut starts: Vec<u32> = Vec::with_capacity(bounds.len());
        let mut chain: Vec<u32> = Vec::new();
        let mut times: Vec<u32> = Vec::new();
        let mut changes: Vec<(u32, u32)> = Vec::new();
        // Sweep the boundaries with the stack of networks containing the current one.
        let mut stack: Vec<(u64, u32)> = Vec::new(); // (end, id), innermost last
        let mut next = 0usize;
        for &bound in &bounds {
            while stack.last().is_some_and(|&(end, _)| end <= bound) {
                stack.pop();
            }
            while next < nets.len() && u64::from(nets[next].0) == bound {
                stack.push((nets[next].1, next as u32));
                next += 1;
            }
            // The covering networks, most specific first, and every time one changes.
            chain.clear();
            chain.extend(stack.iter().rev().map(|&(_, id)| id));
            times.clear();
            for &id in &chain {
                let (start, len) = timelines.runs[id as usize];
                times.extend(
                    timelines.entries[start as usize..(start + len) as usize]
                        .iter()
                        .map(|&(ts, _)| ts),
                );
            }
            times.sort_unstable();
            times.dedup();
            changes.clear();
            let mut owner = super::table::UNATTRIBUTED;
            for &ts in &times {
                let now = chain
                    .iter()
                    .find_map(|&id| {
                        timelines
                            .at(id, u64::from(ts))
                            .filter(|&owner| owner != super::table::UNATTRIBUTED)
                    })
                    .unwrap_or(super::table::UNATTRIBUTED);
                if now != owner {
                    changes.push((ts, now));
                    owner = now;
                }
            }
            let (earlier, latest) = changes.split_at(changes.len().saturating_sub(INLINE));
            let mut interval = Interval {
                ts: [0; INLINE],
                owners: [super::table::UNATTRIBUTED; INLINE],
                older: NO_OLDER,
            };
            for (j, &(ts, owner)) in latest.iter().rev().enumerate() {
                interval.ts[j] = ts;
                interval.owners[j] = owner;
            }
            if !earlier.is_empty() {
                interval.older = push_run(&mut index.answers, earlier.iter().copied());
            }
            starts.push(bound as u32);
            index.intervals.push(interval);
        }
        assert!(
            index.intervals.len() < 1 << 30,
            "too many networks for the IPv4 index"
        );
        if index.networks > 0 {
            index.build_directories(&starts);
        }
        index
    }

    /// Builds `dir16`, `pages`, `few` and `many` over the sorted interval `starts`.
    fn build_directories(&mut self, starts: &[u32]) {
        // The interval holding `addr`, and the boundaries strictly inside
        // `addr..addr + size`.
        let interval_at = |addr: u64| starts.partition_point(|&s| u64::from(s) <= addr) - 1;
        let inside = |addr: u64, size: u64| {
            let lo = starts.partition_point(|&s| u64::from(s) <= addr);
            let hi = starts.partition_point(|&s| u64::from(s) < addr + size);
            &starts[lo..hi]
        };
        self.dir16 = Vec::with_capacity(1 << 16);
        // The dummies `interval_of` reads instead of a page and a `Few`.
        self.pages = vec![LEAF; 256];
        self.few = vec![Few {
            base: 0,
            below: [u8::MAX; FEW],
        }];
        for h in 0..1u64 << 16 {
            let at16 = h << 16;
            if inside(at16, 1 << 16).is_empty() {
                self.dir16.push(LEAF | interval_at(at16) as u32);
                continue;
            }
            self.dir16.push(PAGE | (self.pages.len() >> 8) as u32);
            for b in 0..256u64 {
                let at24 = at16 | b << 8;
                let base = interval_at(at24) as u32;
                let cuts = inside(at24, 256);
                let entry = if cuts.is_empty() {
                    LEAF | base
                } else if cuts.len() <= FEW {
                    let mut below = [u8::MAX; FEW];
                    for (below, &cut) in below.iter_mut().zip(cuts) {
                        *below = (u64::from(cut) - at24 - 1) as u8;
                    }
                    self.few.push(Few { base, below });
                    SOME | (self.few.len() - 1) as u32
                } else {
                    let mut offsets = [0u8; 256];
                    for &cut in cuts {
                        for offset in &mut offsets[(u64::from(cut) - at24) as usize..] {
                            *offset += 1;
                        }
                    }
                    self.many.push(Many { base, offsets });
                    MANY | (self.many.len() - 1) as u32
                };
                self.pages.push(entry);
            }
        }
    }
    /// Number of networks.
    pub fn len(&self) -> usize {
        self.networks
    }

    /// True when there is no network.
    pub fn is_empty(&self) -> bool {
        self.networks == 0
    }

    /// Bytes held by the index.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.dir16.capacity() * 4
            + self.pages.capacity() * 4
            + self.few.capacity() * size_of::<Few>()
            + self.many.capacity() * size_of::<Many>()
            + self.intervals.capacity() * size_of::<Interval>()
            + self.answers.capacity() * 8
    }

    /// Index of the interval holding `addr`: through its /16's directory entry, and
    /// its /24's when the /16 is cut.
    #[inline(always)]
    fn interval_of(&self, addr: u32) -> usize {
        self.interval_in(self.entry_of(addr), addr)
    }

    /// The directory entry that decides `addr`'s interval: its /16's, or its /24's
    /// when the /16 is cut ([`LEAF`], [`SOME`] or [`MANY`]).
    #[inline(always)]
    fn entry_of(&self, addr: u32) -> u32 {
        // Without branches: which entries a lookup takes is unpredictable, and a
        // mispredicted branch would throw away the loads and prefetches issued after
        // it. Page 0 is a dummy read instead.
        use std::hint::select_unpredictable as select;
        let entry16 = self.dir16[(addr >> 16) as usize];
        let paged = entry16 & TAG == PAGE;
        let at = ((entry16 & !TAG) as usize) << 8 | ((addr >> 8) & 0xff) as usize;
        select(paged, self.pages[select(paged, at, 0)], entry16)
    }

    /// Prefetches what [`NetworksV4::interval_in`] reads of the record `entry` (from
    /// [`NetworksV4::entry_of`]) points to.
    #[inline(always)]
    fn prefetch_record(&self, entry: u32, addr: u32) {
        use std::hint::select_unpredictable as select;
        let payload = (entry & !TAG) as usize;
        match entry & TAG {
            MANY => prefetch(&self.many[payload].offsets[addr as u8 as usize]),
            // `few[0]` (a dummy) for a LEAF: cheaper than a branch.
            tag => prefetch(&self.few[select(tag == SOME, payload, 0)]),
        }
    }

    /// Index of the interval holding `addr`, from its directory entry.
    #[inline(always)]
    fn interval_in(&self, entry: u32, addr: u32) -> usize {
        // Without branches but for the rare MANY; `few[0]` is a dummy read instead.
        use std::hint::select_unpredictable as select;
        let (tag, payload, last) = (entry & TAG, (entry & !TAG) as usize, addr as u8);
        if tag == MANY {
            let many = &self.many[payload];
            return many.base as usize + many.offsets[last as usize] as usize;
        }
        let some = tag == SOME;
        let few = &self.few[select(some, payload, 0)];
        select(some, few.base as usize, payload) + few.cuts_below(last)
    }

    /// [`NetworksV4::owner`] of the lookups `which` names (at most [`CHUNK`]):
    /// `owners[k]` becomes the owner of `addrs[k]` at `times[k]` for every `k` in
    /// `which`. In passes, each prefetching what the next one reads: every lookup's
    /// directory entry; every interval; every answer a record holds; the rest.
    pub(super) fn owners(
        &self,
        addrs: &[u32],
        times: &[u64],
        which: &[u16],
        owners: &mut [u32],
        work: &mut Work,
    ) {
        let which = &which[..which.len().min(CHUNK)];
        if self.networks == 0 {
            for &k in which {
                owners[k as usize] = super::table::UNATTRIBUTED;
            }
            return;
        }
        // Every directory entry, prefetching the record it points to; then every
        // interval, prefetching its record.
        let found = &mut work.at;
        for (found, &k) in found.iter_mut().zip(which) {
            let addr = addrs[k as usize];
            let entry = self.entry_of(addr);
            self.prefetch_record(entry, addr);
            *found = entry;
        }
        for (found, &k) in found.iter_mut().zip(which) {
            let at = self.interval_in(*found, addrs[k as usize]);
            prefetch(&self.intervals[at]);
            *found = at as u32;
        }
        let later = &mut work.later;
        let mut n_later = 0;
        for (i, &k) in which.iter().enumerate() {
            let at = found[i];
            let interval = &self.intervals[at as usize];
            if let Some(owner) = interval.inline_answer(times[k as usize]) {
                owners[k as usize] = owner;
            } else {
                prefetch(&self.answers[interval.older as usize]);
                later[n_later] = (k, at);
                n_later += 1;
            }
        }
        for &(k, at) in &later[..n_later] {
            let k = k as usize;
            owners[k] = self.answer(&self.intervals[at as usize], times[k]);
        }
    }

    /// The owner of `addr` at `t`: the most specific network containing it whose latest
    /// entry at or before `t` is an assign (0 = none).
    #[inline]
    pub fn owner(&self, addr: u32, t: u64) -> u32 {
        if self.networks == 0 {
            return super::table::UNATTRIBUTED;
        }
        self.answer(&self.intervals[self.interval_of(addr)], t)
    }

    /// The owner `interval` has at `t`.
    #[inline(always)]
    fn answer(&self, interval: &Interval, t: u64) -> u32 {
        if let Some(owner) = interval.inline_answer(t) {
            return owner;
        }
        run_at(&self.answers, interval.older, t).unwrap_or(super::table::UNATTRIBUTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule itself: every network, most specific first.
    fn reference(nets: &[Network], addr: u32, t: u64) -> u32 {
        let mut covering: Vec<&Network> = nets
            .iter()
            .filter(|(len, net, _)| {
                let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
                addr & mask == net & mask
            })
            .collect();
        covering.sort_by_key(|(len, _, _)| std::cmp::Reverse(*len));
        covering
            .iter()
            .find_map(|(_, _, timeline)| {
                timeline
                    .iter()
                    .rev()
                    .find(|&&(ts, _)| ts <= t)
                    .map(|&(_, owner)| owner)
                    .filter(|&owner| owner != 0)
            })
            .unwrap_or(0)
    }

    #[test]
    fn agrees_with_the_rule_on_random_nested_networks() {
        let mut x = 5u64;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut few_used, mut many_used, mut older_used) = (false, false, false);
        for round in 0..30 {
            // Networks crowded into a few /16s (so some /16s get pages of /24s), in
            // some rounds into a few /24s (so some /24s are cut many times), plus a
            // default route and a few wide ones in some rounds.
            let spread = if round % 3 == 1 { 0xFF } else { 0xFFFF };
            let mut nets: Vec<Network> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let count = 5 + (rand() % 200) as usize;
            for _ in 0..count {
                let len = [8u8, 12, 16, 20, 24, 26, 28, 30, 32][(rand() % 9) as usize];
                let base = 0x0A00_0000u32 | ((rand() % 3) as u32) << 16;
                let addr = base | (rand() as u32 & spread);
                let net = addr & (u32::MAX << (32 - len as u32));
                if !seen.insert((len, net)) {
                    continue;
                }
                let mut timeline: Vec<(u64, u32)> = (0..1 + rand() % 3)
                    .map(|_| (rand() % 100, (rand() % 4) as u32))
                    .collect();
                timeline.sort_by_key(|e| e.0);
                nets.push((len, net, timeline));
            }
            if round % 4 == 0 {
                nets.push((0, 0, vec![(50, 9)]));
            }
            let index = NetworksV4::build(nets.clone());
            few_used |= index.few.len() > 1;
            many_used |= !index.many.is_empty();
            let (mut addrs, mut times) = (Vec::new(), Vec::new());
            for _ in 0..2_000 {
                let addr = if rand() % 8 == 0 {
                    rand() as u32
                } else {
                    0x0A00_0000 | ((rand() % 3) as u32) << 16 | (rand() as u32 & spread)
                };
                let t = rand() % 120;
                let want = reference(&nets, addr, t);
                assert_eq!(
                    index.owner(addr, t),
                    want,
                    "round {round}, {addr:#x} at {t}"
                );
                older_used |=
                    t < u64::from(index.intervals[index.interval_of(addr)].ts[INLINE - 1])
                        && index.intervals[index.interval_of(addr)].older != NO_OLDER;
                addrs.push(addr);
                times.push(t);
            }
            // Batched, over every other lookup of each chunk (as the table asks for the
            // lookups its exact addresses left open).
            let mut work = Work::new();
            for (addrs, times) in addrs.chunks(CHUNK).zip(times.chunks(CHUNK)) {
                let which: Vec<u16> = (0..addrs.len() as u16).step_by(2).collect();
                let mut owners = vec![u32::MAX; addrs.len()];
                index.owners(addrs, times, &which, &mut owners, &mut work);
                for k in 0..addrs.len() {
                    let want = match k % 2 {
                        0 => reference(&nets, addrs[k], times[k]),
                        _ => u32::MAX,
                    };
                    assert_eq!(
                        owners[k], want,
                        "round {round}, batched {:#x} at {}",
                        addrs[k], times[k]
                    );
                }
            }
        }
        assert!(few_used && many_used, "every kind of /24 entry was tested");
        assert!(
            older_used,
            "lookups before an interval's inline answers were tested"
        );
        let empty = NetworksV4::build(Vec::new());
        assert_eq!(empty.owner(0x0A00_0001, 5), 0);
        assert_eq!(
            NetworksV4::build(vec![(32, u32::MAX, vec![(0, 3)])]).owner(u32::MAX, 0),
            3
        );
    }
}
