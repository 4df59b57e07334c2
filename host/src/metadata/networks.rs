//! IPv4 networks as elementary intervals: "the most specific network assigned at `t` that
//! contains `a`" without probing every prefix length.
//!
//! Networks (CIDRs) are nested or disjoint, so their boundaries cut the address space
//! into intervals on which the set of covering networks is constant. At build time each
//! interval's answer is worked out for every time one of its networks changes, by the
//! rule itself (most specific network first, the first one assigned at that time wins),
//! and kept as a short timeline of changes. A lookup finds the interval through a
//! directory of every /16 (and, where a /16 holds many boundaries, of its /24s) and a
//! short scan, then reads the interval's record: after the last change (the usual case:
//! flows are minutes old, networks change rarely) the record holds the answer; for an
//! older time, one short run of answers is scanned.

use super::addr_map::prefetch;
use super::table::CHUNK;

/// A network as the index is built from: prefix length, network address, timeline of
/// `(from_ts, owner)` sorted by time.
pub type Network = (u8, u32, Vec<(u64, u32)>);

/// Boundaries in a /16 above which it gets a directory of its /24s.
const DENSE: u32 = 8;

/// One elementary interval.
#[derive(Clone, Copy, Debug, Default)]
struct Interval {
    /// Where its answers start in `answers`.
    answers_start: u32,
    /// How many answers it has.
    answers_len: u32,
    /// From this time on no covering network changes...
    settled_ts: u32,
    /// ...and this is the owner (0 = nobody).
    settled_owner: u32,
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
    /// Per /16 `h` (65,537 entries): how many interval starts lie below `h << 16`, and
    /// 1 + the index of its /24 directory in `dir24` (0: none).
    dir16: Vec<(u32, u32)>,
    /// 257 entries per dense /16: interval starts below each of its /24s, then the total.
    dir24: Vec<u32>,
    /// Interval start addresses, ascending; the first is 0.
    starts: Vec<u32>,
    intervals: Vec<Interval>,
    /// Each interval's answer over time, `(from_ts, owner)` oldest first, one entry per
    /// change: the rule applied to its covering networks at every time one of them
    /// changes, so a lookup reads one short run instead of walking the networks.
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
        let mut chain: Vec<u32> = Vec::new();
        let mut times: Vec<u32> = Vec::new();
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
            let answers_start = index.answers.len() as u32;
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
                    index.answers.push((ts, now));
                    owner = now;
                }
            }
            index.starts.push(bound as u32);
            index.intervals.push(Interval {
                answers_start,
                answers_len: index.answers.len() as u32 - answers_start,
                settled_ts: times.last().copied().unwrap_or(0),
                settled_owner: owner,
            });
        }
        // The directories.
        index.dir16 = Vec::with_capacity(65_537);
        for h in 0..=65_536u64 {
            let below = index.starts.partition_point(|&s| u64::from(s) < h << 16) as u32;
            index.dir16.push((below, 0));
        }
        for h in 0..65_536usize {
            let (lo, hi) = (index.dir16[h].0, index.dir16[h + 1].0);
            if hi - lo > DENSE {
                let block = index.dir24.len() / 257;
                for b in 0..256u64 {
                    let at = ((h as u64) << 16) | (b << 8);
                    index
                        .dir24
                        .push(index.starts.partition_point(|&s| u64::from(s) < at) as u32);
                }
                index.dir24.push(hi);
                index.dir16[h].1 = block as u32 + 1;
            }
        }
        index
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
        self.dir16.capacity() * size_of::<(u32, u32)>()
            + self.dir24.capacity() * 4
            + self.starts.capacity() * 4
            + self.intervals.capacity() * size_of::<Interval>()
            + self.answers.capacity() * 8
    }

    /// The interval starts a search for `addr` looks at: the ones inside its /16 (or
    /// /24 in a dense /16); when none of them is at or before `addr`, its interval is the
    /// one just before them.
    #[inline(always)]
    fn candidates(&self, addr: u32) -> (usize, usize) {
        let h = (addr >> 16) as usize;
        let (lo, hi) = (self.dir16[h].0 as usize, self.dir16[h + 1].0 as usize);
        let block = self.dir16[h].1 as usize;
        if block == 0 {
            return (lo, hi);
        }
        let b = ((addr >> 8) & 0xff) as usize;
        let dir = &self.dir24[(block - 1) * 257..];
        (dir[b] as usize, dir[b + 1] as usize)
    }

    /// Index of the interval holding `addr`: the last one starting at or before it
    /// (`starts[0]` is 0, so there always is one).
    #[inline(always)]
    fn interval_of(&self, addr: u32) -> usize {
        let (lo, hi) = self.candidates(addr);
        self.interval_among(lo, hi, addr)
    }

    /// [`NetworksV4::interval_of`] once its [`NetworksV4::candidates`] are known.
    #[inline(always)]
    fn interval_among(&self, lo: usize, hi: usize, addr: u32) -> usize {
        lo + self.starts[lo..hi].partition_point(|&s| s <= addr) - 1
    }

    /// [`NetworksV4::owner`] of up to [`CHUNK`] lookups, in passes so that each one's
    /// loads were prefetched by the pass before: the candidate starts of every lookup,
    /// then every interval, then every answer.
    pub fn owners(&self, addrs: &[u32], times: &[u64], owners: &mut [u32]) {
        let n = addrs.len().min(times.len()).min(owners.len()).min(CHUNK);
        if self.networks == 0 {
            owners[..n].fill(super::table::UNATTRIBUTED);
            return;
        }
        let mut found = [(0u32, 0u32); CHUNK];
        for (k, &addr) in addrs[..n].iter().enumerate() {
            let (lo, hi) = self.candidates(addr);
            prefetch(&self.starts[lo.saturating_sub(1)]);
            prefetch(&self.starts[hi.saturating_sub(1)]);
            found[k] = (lo as u32, hi as u32);
        }
        for (k, &addr) in addrs[..n].iter().enumerate() {
            let at = self.interval_among(found[k].0 as usize, found[k].1 as usize, addr);
            prefetch(&self.intervals[at]);
            found[k].0 = at as u32;
        }
        for k in 0..n {
            owners[k] = self.answer(&self.intervals[found[k].0 as usize], times[k]);
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
        if t >= u64::from(interval.settled_ts) {
            return interval.settled_owner;
        }
        let start = interval.answers_start as usize;
        self.answers[start..start + interval.answers_len as usize]
            .iter()
            .rev()
            .find(|&&(ts, _)| u64::from(ts) <= t)
            .map_or(super::table::UNATTRIBUTED, |&(_, owner)| owner)
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
        for round in 0..20 {
            // Networks crowded into a few /16s (so some /16s get /24 directories), plus
            // a default route and a few wide ones in some rounds.
            let mut nets: Vec<Network> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let count = 5 + (rand() % 200) as usize;
            for _ in 0..count {
                let len = [8u8, 12, 16, 20, 24, 26, 28, 30, 32][(rand() % 9) as usize];
                let base = 0x0A00_0000u32 | ((rand() % 3) as u32) << 16;
                let addr = base | (rand() as u32 & 0xFFFF);
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
            for _ in 0..2_000 {
                let addr = if rand() % 8 == 0 {
                    rand() as u32
                } else {
                    0x0A00_0000 | ((rand() % 3) as u32) << 16 | (rand() as u32 & 0xFFFF)
                };
                let t = rand() % 120;
                assert_eq!(
                    index.owner(addr, t),
                    reference(&nets, addr, t),
                    "round {round}, {addr:#x} at {t}"
                );
            }
        }
        let empty = NetworksV4::build(Vec::new());
        assert_eq!(empty.owner(0x0A00_0001, 5), 0);
        assert_eq!(
            NetworksV4::build(vec![(32, u32::MAX, vec![(0, 3)])]).owner(u32::MAX, 0),
            3
        );
    }
}
