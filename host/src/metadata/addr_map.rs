//! A compact open-addressing map from an address (or masked network) to its timeline,
//! laid out for batched lookups: slots probed linearly (32 bytes for IPv4, 64 for IPv6)
//! that hold the latest three entries inline, earlier entries contiguously in one flat
//! array of `(from_ts, owner)`, and a software-pipelined batched lookup, so a batch
//! overlaps its cache misses instead of paying them one after another.

use crate::util::prefetch_ptr;
use std::hash::Hash;

/// Keys: IPv4 (`u32`) or IPv6 (`u128`) addresses as big-endian integers.
pub trait AddrKey: Copy + Eq + Hash + Default {
    /// A well-mixed 64-bit hash (the top bits pick the slot).
    fn mix(self) -> u64;
    /// Which of [`BLOCKS`] address blocks the key is in: its /16 for IPv4, a hash of
    /// its /48 for IPv6.
    fn block(self) -> usize;
    /// Whether the address is on the public internet: not private, shared, loopback,
    /// link-local, documentation, benchmarking, multicast or reserved space.
    fn is_public(self) -> bool;
}

/// IPv4 blocks that are not public: (network, prefix length).
const NOT_PUBLIC_V4: [(u32, u32); 14] = [
    (0x0000_0000, 8),  // "this network"
    (0x0A00_0000, 8),  // 10/8 private
    (0x6440_0000, 10), // 100.64/10 shared (carrier-grade NAT)
    (0x7F00_0000, 8),  // loopback
    (0xA9FE_0000, 16), // link-local
    (0xAC10_0000, 12), // 172.16/12 private
    (0xC000_0000, 24), // IETF protocol assignments
    (0xC000_0200, 24), // TEST-NET-1
    (0xC0A8_0000, 16), // 192.168/16 private
    (0xC612_0000, 15), // benchmarking
    (0xC633_6400, 24), // TEST-NET-2
    (0xCB00_7100, 24), // TEST-NET-3
    (0xE000_0000, 4),  // multicast
    (0xF000_0000, 4),  // reserved, broadcast
];

/// Whether a big-endian IPv4 address is public (see [`AddrKey::is_public`]).
pub fn is_public_v4(addr: u32) -> bool {
    !NOT_PUBLIC_V4
        .iter()
        .any(|&(net, len)| addr >> (32 - len) == net >> (32 - len))
}

/// Whether a big-endian IPv6 address is public: global unicast (2000::/3) outside the
/// documentation, IETF-protocol and 6to4 blocks, or an IPv4-mapped public address.
pub fn is_public_v6(addr: u128) -> bool {
    if addr >> 32 == 0xFFFF {
        return is_public_v4(addr as u32);
    }
    let top16 = (addr >> 112) as u16;
    let top32 = (addr >> 96) as u32;
    addr >> 125 == 0b001
        && top32 != 0x2001_0DB8
        && addr >> 105 != 0x2001 << 7 // 2001::/23
        && top16 != 0x2002
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl AddrKey for u32 {
    #[inline]
    fn mix(self) -> u64 {
        (self as u64 ^ 0x5bd1_e995).wrapping_mul(GOLDEN)
    }
    #[inline]
    fn block(self) -> usize {
        (self >> 16) as usize
    }
    #[inline]
    fn is_public(self) -> bool {
        is_public_v4(self)
    }
}

impl AddrKey for u128 {
    #[inline]
    fn mix(self) -> u64 {
        let folded = (self as u64) ^ ((self >> 64) as u64).rotate_left(29);
        (folded ^ (folded >> 31)).wrapping_mul(GOLDEN)
    }
    #[inline]
    fn block(self) -> usize {
        (((self >> 80) as u64).wrapping_mul(GOLDEN) >> 48) as usize
    }
    #[inline]
    fn is_public(self) -> bool {
        is_public_v6(self)
    }
}

/// Address blocks [`AddrMap`] tracks the use of.
pub const BLOCKS: usize = 1 << 16;

/// "No slot" in a batched lookup (never a slot index: capacities are powers of two).
const NO_SLOT: u32 = u32::MAX;
/// "Before the cutoff" in a batched lookup (likewise).
const OLD: u32 = u32::MAX - 1;

/// Marks an empty slot (in `older`).
const EMPTY: u32 = u32::MAX;
/// Marks a timeline with no entry before the inline one (in `older`).
const NO_OLDER: u32 = u32::MAX - 1;

/// Entries of a timeline a slot holds inline: the latest ones.
const INLINE: usize = 3;

/// Owner of an unused inline entry (whose `from_ts` is 0, so it sorts last).
const NO_ENTRY: u32 = u32::MAX;

/// One key and the latest [`INLINE`] entries of its timeline: lookups are for the last
/// hour or so, and most timelines are that short, so most lookups read this slot and
/// nothing else. 32 bytes for IPv4, aligned so that a slot never straddles cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot<K> {
    key: K,
    /// Where the entries before the inline ones are in `entries` (a `(count, 0)` header,
    /// then the entries oldest first), [`NO_OLDER`], or [`EMPTY`] for an empty slot.
    older: u32,
    /// From when each inline entry holds (epoch seconds), newest first (0 when unused).
    ts: [u32; INLINE],
    /// Each inline entry's owner (0 = unassigned, [`NO_ENTRY`] = unused).
    owners: [u32; INLINE],
}

impl<K: AddrKey> Default for Slot<K> {
    fn default() -> Self {
        Slot {
            key: K::default(),
            older: EMPTY,
            ts: [0; INLINE],
            owners: [NO_ENTRY; INLINE],
        }
    }
}

/// Address → timeline of `(from_ts, owner)`, sorted by time; owner 0 = unassigned.
pub struct AddrMap<K> {
    /// One bit per address block ([`AddrKey::block`]): whether any key is in it. A
    /// lookup of an address in a block without keys (most of the internet) ends here,
    /// in 8 KiB that stay cached, instead of probing the slots.
    blocks: Box<[u64; BLOCKS / 64]>,
    slots: Vec<Slot<K>>,
    shift: u32,
    /// Earlier entries of every timeline, `(from_ts, owner)`, each run behind a header.
    entries: Vec<(u32, u32)>,
    len: usize,
}

impl<K: AddrKey> AddrMap<K> {
    /// Builds the map from timelines already sorted by time, with times at most
    /// [`super::events::MAX_TS`] (larger ones are clamped).
    pub fn build(timelines: impl ExactSizeIterator<Item = (K, Vec<(u64, u32)>)>) -> AddrMap<K> {
        let timelines: Vec<(K, Vec<(u64, u32)>)> = timelines.collect();
        let len = timelines.len();
        let capacity = (len * 2).next_power_of_two().max(8);
        let earlier: usize = timelines
            .iter()
            .map(|(_, t)| {
                if t.len() > INLINE {
                    t.len() - INLINE + 1
                } else {
                    0
                }
            })
            .sum();
        let mut map = AddrMap {
            blocks: Box::new([0; BLOCKS / 64]),
            slots: huge_vec(capacity, Slot::default()),
            shift: 64 - capacity.trailing_zeros(),
            entries: huge_vec(earlier, (0, 0)),
            len,
        };
        map.entries.clear();
        let ts32 = |ts: u64| ts.min(super::events::MAX_TS) as u32;
        for (key, timeline) in timelines {
            if timeline.is_empty() {
                continue;
            }
            let (earlier, latest) = timeline.split_at(timeline.len().saturating_sub(INLINE));
            let older = match earlier.is_empty() {
                true => NO_OLDER,
                false => push_run(
                    &mut map.entries,
                    earlier.iter().map(|&(ts, owner)| (ts32(ts), owner)),
                ),
            };
            let mut slot = Slot {
                key,
                older,
                ..Slot::default()
            };
            for (j, &(ts, owner)) in latest.iter().rev().enumerate() {
                slot.ts[j] = ts32(ts);
                slot.owners[j] = owner;
            }
            let block = key.block();
            map.blocks[block / 64] |= 1 << (block % 64);
            let mut at = map.home(key);
            while map.slots[at].older != EMPTY {
                at = (at + 1) & (capacity - 1);
            }
            map.slots[at] = slot;
        }
        map
    }

    #[inline]
    fn home(&self, key: K) -> usize {
        (key.mix() >> self.shift) as usize
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the map holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the map's arrays.
    pub fn heap_bytes(&self) -> usize {
        BLOCKS / 8
            + self.slots.capacity() * std::mem::size_of::<Slot<K>>()
            + self.entries.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// Whether any key is in `key`'s address block.
    #[inline(always)]
    fn in_used_block(&self, key: K) -> bool {
        let block = key.block();
        self.blocks[block / 64] & (1 << (block % 64)) != 0
    }

    #[inline(always)]
    fn find(&self, key: K) -> Option<&Slot<K>> {
        if !self.in_used_block(key) {
            return None;
        }
        self.find_from(key, self.home(key))
            .map(|at| &self.slots[at])
    }

    /// Index of the slot of `key`, probing from slot `at` on.
    #[inline(always)]
    fn find_from(&self, key: K, mut at: usize) -> Option<usize> {
        let mask = self.slots.len() - 1;
        loop {
            let slot = &self.slots[at];
            if slot.older == EMPTY {
                return None;
            }
            if slot.key == key {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The owner recorded by the latest entry at or before `t`, if there is one
    /// (0 when that entry is an unassign).
    #[inline(always)]
    pub fn at(&self, key: K, t: u64) -> Option<u32> {
        self.entry_at(self.find(key)?, t)
    }

    /// The owner recorded by `slot`'s latest entry at or before `t`, if there is one.
    #[inline(always)]
    fn entry_at(&self, slot: &Slot<K>, t: u64) -> Option<u32> {
        // Inline entries are newest first: those after `t` come first.
        let after = slot.ts.iter().filter(|&&ts| u64::from(ts) > t).count();
        if after < INLINE {
            let owner = slot.owners[after];
            return (owner != NO_ENTRY).then_some(owner);
        }
        self.older_owner(slot, t)
    }

    /// The owner recorded by `slot`'s latest entry before its inline ones that is at
    /// or before `t`, if there is one.
    #[inline(always)]
    fn older_owner(&self, slot: &Slot<K>, t: u64) -> Option<u32> {
        match slot.older {
            NO_OLDER => None,
            header => run_at(&self.entries, header, t),
        }
    }

    /// What `slot`'s inline entries say about `t`: the owner (0 when there is none),
    /// or [`NO_ENTRY`] when `t` is before them and the earlier entries decide.
    #[inline(always)]
    fn inline_owner(slot: &Slot<K>, t: u64) -> u32 {
        let after = slot.ts.iter().filter(|&&ts| u64::from(ts) > t).count();
        if after < INLINE {
            match slot.owners[after] {
                NO_ENTRY => 0,
                owner => owner,
            }
        } else if slot.older == NO_OLDER {
            0
        } else {
            NO_ENTRY
        }
    }

    /// [`AddrMap::at`] of many lookups, software-pipelined: the home slot of the lookup
    /// [`AHEAD`] places on is prefetched while this one is probed and answered, so the
    /// cache misses of many lookups overlap each other and the work on the ones before
    /// them. A lookup that would wait on a second miss is set aside with that line
    /// prefetched and finished after the others: one whose probe runs into the next
    /// cache line, and one whose time is before its inline entries.
    ///
    /// `owners[k]` becomes the owner assigned to `keys[k]` at `times[k]`: 0 when there
    /// is none (no entry, or an unassign) or when the time is before `cutoff`. The
    /// indices of the lookups left at 0 but not for the cutoff go to `open`; returns how
    /// many. At most [`super::table::CHUNK`] lookups.
    pub(super) fn owners(
        &self,
        keys: &[K],
        times: &[u64],
        cutoff: u64,
        owners: &mut [u32],
        open: &mut [u16; super::table::CHUNK],
        work: &mut super::table::Work,
    ) -> usize {
        const CHUNK: usize = super::table::CHUNK;
        let n = keys.len().min(times.len()).min(owners.len()).min(CHUNK);
        let (keys, times, owners) = (&keys[..n], &times[..n], &mut owners[..n]);
        // Home slots first (no memory touched but the block bitmap): NO_SLOT for an
        // address in a block without keys, OLD for a time before the cutoff.
        use std::hint::select_unpredictable as select;
        let homes = &mut work.at;
        for ((home, &key), &t) in homes.iter_mut().zip(keys).zip(times) {
            let slot = select(self.in_used_block(key), self.home(key) as u32, NO_SLOT);
            *home = select(t >= cutoff, slot, OLD);
        }
        homes[n..n + AHEAD].fill(NO_SLOT);
        // Prefetching a sentinel's (masked) slot is harmless and saves a branch.
        let mask = self.slots.len() - 1;
        let first = self.slots.as_ptr();
        let prefetch_home = |home: u32| prefetch_ptr(first.wrapping_add(home as usize & mask));
        for &home in &homes[..AHEAD] {
            prefetch_home(home);
        }
        let per_line = (64 / std::mem::size_of::<Slot<K>>()).max(1);
        let mut n_open = 0;
        // Lookups set aside: (lookup, slot to go on from), and (lookup, its slot).
        let (crossed, later) = (&mut work.aside, &mut work.later);
        let (mut n_crossed, mut n_later) = (0, 0);
        for k in 0..n {
            prefetch_home(homes[k + AHEAD]);
            let (key, t, mut at) = (keys[k], times[k], homes[k] as usize);
            let owner = if at > mask {
                // Not open when too old: those are set to 0 at the end.
                match at == OLD as usize {
                    true => NO_ENTRY,
                    false => 0,
                }
            } else {
                loop {
                    let slot = &self.slots[at];
                    if slot.older == EMPTY {
                        break 0;
                    }
                    if slot.key == key {
                        let owner = Self::inline_owner(slot, t);
                        if owner == NO_ENTRY {
                            prefetch(&self.entries[slot.older as usize]);
                            later[n_later] = (k as u16, at as u32);
                            n_later += 1;
                        }
                        break owner;
                    }
                    at = (at + 1) & mask;
                    if at % per_line == 0 {
                        prefetch(&self.slots[at]);
                        crossed[n_crossed] = (k as u16, at as u32);
                        n_crossed += 1;
                        break NO_ENTRY;
                    }
                }
            };
            owners[k] = owner;
            // (`n_open` is below CHUNK: the mask only spares a bounds check.)
            open[n_open & (CHUNK - 1)] = k as u16;
            n_open += usize::from(owner == 0);
        }
        for &(k, at) in &crossed[..n_crossed] {
            let k = k as usize;
            let mut owner = 0;
            if let Some(at) = self.find_from(keys[k], at as usize) {
                owner = Self::inline_owner(&self.slots[at], times[k]);
                if owner == NO_ENTRY {
                    later[n_later] = (k as u16, at as u32);
                    n_later += 1;
                    continue;
                }
            }
            owners[k] = owner;
            open[n_open] = k as u16;
            n_open += usize::from(owner == 0);
        }
        for &(k, at) in &later[..n_later] {
            let k = k as usize;
            // The time is before the inline entries.
            let owner = self
                .older_owner(&self.slots[at as usize], times[k])
                .unwrap_or(0);
            owners[k] = owner;
            open[n_open] = k as u16;
            n_open += usize::from(owner == 0);
        }
        if cutoff > 0 {
            for (owner, &home) in owners.iter_mut().zip(homes.iter()) {
                *owner = select(home == OLD, 0, *owner);
            }
        }
        n_open
    }
}

/// Appends a run of `(from_ts, owner)` entries, oldest first, behind a `(count, 0)`
/// header to `entries`; returns where the header is.
pub(super) fn push_run(
    entries: &mut Vec<(u32, u32)>,
    run: impl ExactSizeIterator<Item = (u32, u32)>,
) -> u32 {
    let header = entries.len() as u32;
    entries.push((run.len() as u32, 0));
    entries.extend(run);
    header
}

/// The owner of the latest entry at or before `t` in the run [`push_run`] put at
/// `header`, if there is one.
#[inline(always)]
pub(super) fn run_at(entries: &[(u32, u32)], header: u32, t: u64) -> Option<u32> {
    let header = header as usize;
    let count = entries[header].0 as usize;
    // Runs are short and lookups are mostly for recent times: scan from the end.
    entries[header + 1..header + 1 + count]
        .iter()
        .rev()
        .find(|&&(ts, _)| u64::from(ts) <= t)
        .map(|&(_, owner)| owner)
}

/// How many lookups ahead [`AddrMap::owners`] prefetches: enough to cover a miss to
/// memory with the work on the lookups in between (16 and 32 were slower, 64 no
/// faster).
const AHEAD: usize = super::table::LOOK_AHEAD;

/// A vector of `n` copies of `value`, on transparent huge pages where the kernel offers
/// them (a large table then costs far fewer TLB misses). The advice is given before the
/// memory is first touched, so the pages are huge from the start.
fn huge_vec<T: Clone>(n: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    advise_huge_pages(v.as_ptr(), n * std::mem::size_of::<T>());
    v.resize(n, value);
    v
}

/// Asks the kernel to back `bytes` at `ptr` with huge pages; a hint, so failures are
/// ignored.
fn advise_huge_pages<T>(ptr: *const T, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes >= HUGE {
            let start = ptr as usize;
            let aligned = (start + HUGE - 1) & !(HUGE - 1);
            let end = (start + bytes) & !(HUGE - 1);
            if end > aligned {
                // SAFETY: madvise with MADV_HUGEPAGE only changes how the kernel backs
                // pages of this mapping we own; it never alters their contents.
                unsafe {
                    libc::madvise(
                        aligned as *mut libc::c_void,
                        end - aligned,
                        libc::MADV_HUGEPAGE,
                    );
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// Hints the CPU to fetch the cache line holding `value`.
#[inline(always)]
pub(super) fn prefetch<T>(value: &T) {
    prefetch_ptr(value as *const T);
}

#[cfg(test)]
mod tests {
    use super::super::table::{CHUNK, Work};
    use super::*;

    #[test]
    fn timelines_of_every_length_agree_with_a_scan() {
        let timeline = |k: u32| -> Vec<(u64, u32)> {
            (0..(k % 6) as u64 + 1)
                .map(|i| (10 * i + 5, k * 10 + i as u32))
                .collect()
        };
        let map = AddrMap::build((0..600u32).map(|k| (k, timeline(k))));
        for k in 0..600u32 {
            for t in [
                0,
                4,
                5,
                14,
                15,
                25,
                35,
                44,
                45,
                55,
                1000,
                u64::from(u32::MAX) + 7,
            ] {
                let want = timeline(k)
                    .iter()
                    .rev()
                    .find(|&&(ts, _)| ts <= t)
                    .map(|&(_, owner)| owner);
                assert_eq!(map.at(k, t), want, "key {k} at {t}");
            }
        }
        // Batched, over keys present and absent and chunks of every length.
        let keys: Vec<u32> = (0..700u32).map(|k| k * 13 % 800).collect();
        let times: Vec<u64> = (0..700u64).map(|i| i * 7 % 60).collect();
        for len in [0, 1, 5, 100, CHUNK] {
            for cutoff in [0, 20] {
                let (keys, times) = (&keys[..len], &times[..len]);
                check_batch(&map, keys, times, cutoff, &mut Work::new(), |k| {
                    map.at(keys[k], times[k])
                });
            }
        }
    }

    #[test]
    fn batches_agree_with_single_lookups_on_random_keys() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Random keys in a few blocks, at the full load factor, so that many keys sit
        // past their home slot and some probes run into the next cache line.
        let block = |r: u64| 0x0A00_0000 | ((r % 4) as u32) << 16;
        let mut timelines = std::collections::HashMap::new();
        while timelines.len() < 4_096 {
            let r = rand();
            let key = block(r) | (r >> 32) as u32 & 0xFFFF;
            let len = 1 + rand() % 6;
            let timeline: Vec<(u64, u32)> = (0..len)
                .map(|i| (10 * i + rand() % 10, (rand() % 5) as u32))
                .collect();
            timelines.insert(key, timeline);
        }
        let map = AddrMap::build(timelines.clone().into_iter());
        let crossed = timelines
            .keys()
            .filter(|&&key| {
                let at = map.find_from(key, map.home(key)).unwrap();
                at / 2 != map.home(key) / 2
            })
            .count();
        assert!(
            crossed > 100,
            "only {crossed} keys are past their home line"
        );
        let present: Vec<u32> = timelines.keys().copied().collect();
        let mut work = Work::new();
        for round in 0..40 {
            // Half of them present.
            let keys: Vec<u32> = (0..CHUNK)
                .map(|_| match rand() % 2 {
                    0 => present[(rand() % present.len() as u64) as usize],
                    _ => {
                        let r = rand();
                        block(r) | (r >> 32) as u32 & 0xFFFF
                    }
                })
                .collect();
            let times: Vec<u64> = keys.iter().map(|_| rand() % 80).collect();
            let cutoff = [0, 15][round % 2];
            let scan = |k: usize| {
                timelines.get(&keys[k]).and_then(|timeline| {
                    timeline
                        .iter()
                        .rev()
                        .find(|&&(ts, _)| ts <= times[k])
                        .map(|&(_, owner)| owner)
                })
            };
            for k in 0..keys.len() {
                assert_eq!(
                    map.at(keys[k], times[k]),
                    scan(k),
                    "{:#x} at {}",
                    keys[k],
                    times[k]
                );
            }
            check_batch(&map, &keys, &times, cutoff, &mut work, scan);
        }
    }

    /// Checks [`AddrMap::owners`] of `keys` at `times` against `single`, the answer of
    /// lookup `k` on its own: every owner (0 before `cutoff` or without one), and the
    /// list of open lookups.
    fn check_batch(
        map: &AddrMap<u32>,
        keys: &[u32],
        times: &[u64],
        cutoff: u64,
        work: &mut Work,
        single: impl Fn(usize) -> Option<u32>,
    ) {
        let mut owners = vec![u32::MAX; keys.len()];
        let mut open = [u16::MAX; CHUNK];
        let n_open = map.owners(keys, times, cutoff, &mut owners, &mut open, work);
        let mut open = open[..n_open].to_vec();
        open.sort_unstable();
        let mut want_open = Vec::new();
        for k in 0..keys.len() {
            let want = match times[k] < cutoff {
                true => 0,
                false => single(k).unwrap_or(0),
            };
            assert_eq!(owners[k], want, "batched {:#x} at {}", keys[k], times[k]);
            if want == 0 && times[k] >= cutoff {
                want_open.push(k as u16);
            }
        }
        assert_eq!(open, want_open, "{} lookups, cutoff {cutoff}", keys.len());
    }

    #[test]
    fn finds_every_key_and_only_those() {
        let map = AddrMap::build((0..1000u32).map(|k| (k * 7, vec![(10, k + 1), (20, 0)])));
        for k in 0..1000u32 {
            assert_eq!(map.at(k * 7, 9), None);
            assert_eq!(map.at(k * 7, 15), Some(k + 1));
            assert_eq!(map.at(k * 7, 25), Some(0));
        }
        assert_eq!(map.at(3, 15), None);
        let v6 = AddrMap::build([(1u128 << 100, vec![(0, 5)])].into_iter());
        assert_eq!(v6.at(1u128 << 100, 1), Some(5));
        assert_eq!(v6.at(1, 1), None);
        let empty: AddrMap<u32> = AddrMap::build(std::iter::empty());
        assert_eq!(empty.at(1, 1), None);
    }

    #[test]
    fn public_addresses() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let v4 = |a: &str| is_public_v4(u32::from(a.parse::<Ipv4Addr>().unwrap()));
        let v6 = |a: &str| is_public_v6(u128::from(a.parse::<Ipv6Addr>().unwrap()));
        for public in [
            "8.8.8.8",
            "52.95.1.2",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
        ] {
            assert!(v4(public), "{public}");
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "203.0.113.9",
        ] {
            assert!(!v4(private), "{private}");
        }
        for public in [
            "2600:1f00::1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "2001:4860::8888",
        ] {
            assert!(v6(public), "{public}");
        }
        for private in [
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2002::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!v6(private), "{private}");
        }
    }
}
