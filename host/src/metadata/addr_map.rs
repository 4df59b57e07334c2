//! A compact open-addressing map from an address (or masked network) to its timeline,
//! laid out for batched lookups: 12–24-byte slots probed linearly, timelines stored
//! contiguously in one flat array of `(from_ts, owner)` entries, and prefetch hints so a
//! batch of lookups overlaps its cache misses instead of paying them one after another.

use std::hash::Hash;

/// Keys: IPv4 (`u32`) or IPv6 (`u128`) addresses as big-endian integers.
pub trait AddrKey: Copy + Eq + Hash + Default {
    /// A well-mixed 64-bit hash (the top bits pick the slot).
    fn mix(self) -> u64;
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl AddrKey for u32 {
    #[inline]
    fn mix(self) -> u64 {
        (self as u64 ^ 0x5bd1_e995).wrapping_mul(GOLDEN)
    }
}

impl AddrKey for u128 {
    #[inline]
    fn mix(self) -> u64 {
        let folded = (self as u64) ^ ((self >> 64) as u64).rotate_left(29);
        (folded ^ (folded >> 31)).wrapping_mul(GOLDEN)
    }
}

#[derive(Clone, Copy, Default)]
struct Slot<K> {
    key: K,
    /// First entry of the timeline in `entries`.
    start: u32,
    /// Timeline length; 0 marks an empty slot.
    len: u32,
}

/// Address → timeline of `(from_ts, owner)`, sorted by time; owner 0 = unassigned.
pub struct AddrMap<K> {
    slots: Vec<Slot<K>>,
    shift: u32,
    entries: Vec<(u64, u32)>,
    len: usize,
}

impl<K: AddrKey> AddrMap<K> {
    /// Builds the map from timelines already sorted by time.
    pub fn build(timelines: impl ExactSizeIterator<Item = (K, Vec<(u64, u32)>)>) -> AddrMap<K> {
        let len = timelines.len();
        let capacity = (len * 2).next_power_of_two().max(8);
        let mut map = AddrMap {
            slots: vec![Slot::default(); capacity],
            shift: 64 - capacity.trailing_zeros(),
            entries: Vec::new(),
            len,
        };
        for (key, timeline) in timelines {
            if timeline.is_empty() {
                continue;
            }
            let start = map.entries.len() as u32;
            map.entries.extend_from_slice(&timeline);
            let mut at = map.home(key);
            while map.slots[at].len != 0 {
                at = (at + 1) & (capacity - 1);
            }
            map.slots[at] = Slot {
                key,
                start,
                len: timeline.len() as u32,
            };
        }
        map.entries.shrink_to_fit();
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
        self.slots.capacity() * std::mem::size_of::<Slot<K>>()
            + self.entries.capacity() * std::mem::size_of::<(u64, u32)>()
    }

    #[inline]
    fn find(&self, key: K) -> Option<Slot<K>> {
        let mask = self.slots.len() - 1;
        let mut at = self.home(key);
        loop {
            let slot = self.slots[at];
            if slot.len == 0 {
                return None;
            }
            if slot.key == key {
                return Some(slot);
            }
            at = (at + 1) & mask;
        }
    }

    /// The owner recorded by the latest entry at or before `t`, if there is one
    /// (0 when that entry is an unassign).
    #[inline]
    pub fn at(&self, key: K, t: u64) -> Option<u32> {
        let slot = self.find(key)?;
        let (start, end) = (slot.start as usize, (slot.start + slot.len) as usize);
        // Timelines are short and lookups are mostly for recent times: scan from the end.
        self.entries[start..end]
            .iter()
            .rev()
            .find(|&&(ts, _)| ts <= t)
            .map(|&(_, owner)| owner)
    }

    /// Hints the CPU to fetch the slot `key` hashes to.
    #[inline]
    pub fn prefetch_slot(&self, key: K) {
        prefetch(&self.slots[self.home(key)]);
    }

    /// Hints the CPU to fetch `key`'s timeline (if its slot is already at hand).
    #[inline]
    pub fn prefetch_timeline(&self, key: K) {
        let slot = self.slots[self.home(key)];
        if slot.len != 0 && slot.key == key {
            let end = (slot.start + slot.len - 1) as usize;
            prefetch(&self.entries[end]);
        }
    }
}

#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_only_those() {
        let map = AddrMap::build((0..1000u32).map(|k| (k * 7, vec![(10, k + 1), (20, 0)])));
        for k in 0..1000u32 {
            assert_eq!(map.at(k * 7, 9), None);
            assert_eq!(map.at(k * 7, 15), Some(k + 1));
            assert_eq!(map.at(k * 7, 25), Some(0));
            map.prefetch_slot(k * 7);
            map.prefetch_timeline(k * 7);
        }
        assert_eq!(map.at(3, 15), None);
        let v6 = AddrMap::build([(1u128 << 100, vec![(0, 5)])].into_iter());
        assert_eq!(v6.at(1u128 << 100, 1), Some(5));
        assert_eq!(v6.at(1, 1), None);
        let empty: AddrMap<u32> = AddrMap::build(std::iter::empty());
        assert_eq!(empty.at(1, 1), None);
    }
}
