//! The rollup's row index: rows found by their key's hash in an open-addressing table
//! of 5-byte slots (8 bits of the row's hash in one array, the row number in another).
//! Linear probing compares a key only when those 8 bits match, so a probe reads a line
//! of tags, one row number and, almost always, only the row it is looking for; and
//! since a slot's place follows from the hash alone, a batch can prefetch the slots
//! (and then the rows) of the keys it will look up next while it looks up this one.

use crate::util::prefetch_ptr;

/// Row numbers by hash, at most three quarters full. Rows are numbered as they come:
/// the rows held are always `0..len`.
#[derive(Default)]
pub(super) struct RowIndex {
    /// Per slot, 0 when it is empty, else 8 bits of its row's hash (never 0). A power of
    /// two long (or empty).
    tags: Vec<u8>,
    /// Per slot, its row.
    rows: Vec<u32>,
    /// Rows held.
    len: usize,
}

/// A hash spread over all 64 bits (Fx leaves its low bits weak).
#[inline(always)]
pub(super) fn mix(hash: u64) -> u64 {
    (hash ^ (hash >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (hash >> 32)
}

/// The tag of `hash`: its low 8 bits, never 0.
#[inline(always)]
fn tag(hash: u64) -> u8 {
    (hash as u8).max(1)
}

/// Slots looked at, from a hash's first, for the row a lookup will likely compare.
const LIKELY_SLOTS: usize = 4;

impl RowIndex {
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        // The high bits pick the slot; the low ones are the tag.
        (hash >> 32) as usize & (self.tags.len() - 1)
    }

    /// Asks for the cache lines of `hash`'s first slot.
    #[inline(always)]
    pub(super) fn prefetch_slot(&self, hash: u64) {
        if !self.tags.is_empty() {
            let home = self.home(hash);
            prefetch_ptr(&self.tags[home]);
            prefetch_ptr(&self.rows[home]);
        }
    }

    /// The row of the first slot near `hash`'s first whose tag matches: the row a lookup
    /// of this hash will most likely compare (for prefetching it).
    #[inline(always)]
    pub(super) fn likely_row(&self, hash: u64) -> Option<u32> {
        if self.tags.is_empty() {
            return None;
        }
        let (home, mask, tag) = (self.home(hash), self.tags.len() - 1, tag(hash));
        (0..LIKELY_SLOTS)
            .map(|probe| (home + probe) & mask)
            .take_while(|&at| self.tags[at] != 0)
            .find(|&at| self.tags[at] == tag)
            .map(|at| self.rows[at])
    }

    /// The row whose key `is_key` accepts, among those filed under `hash`; or, when there
    /// is none, `new_row` (the number of rows held) filed under it, after growing if need
    /// be (`hash_of` gives each held row's hash). Returns the row and whether it is new.
    #[inline(always)]
    pub(super) fn find_or_insert(
        &mut self,
        hash: u64,
        new_row: u32,
        is_key: impl Fn(u32) -> bool,
        hash_of: impl Fn(u32) -> u64,
    ) -> (u32, bool) {
        if (self.len + 1) * 4 > self.tags.len() * 3 {
            self.grow(hash_of);
        }
        let (mask, tag) = (self.tags.len() - 1, tag(hash));
        let mut at = self.home(hash);
        loop {
            let found = self.tags[at];
            if found == 0 {
                debug_assert_eq!(new_row as usize, self.len, "rows are numbered as they come");
                self.tags[at] = tag;
                self.rows[at] = new_row;
                self.len += 1;
                return (new_row, true);
            }
            if found == tag && is_key(self.rows[at]) {
                return (self.rows[at], false);
            }
            at = (at + 1) & mask;
        }
    }

    /// Doubles the slots and files every row again, in row order (so that `hash_of`
    /// reads the keys one after another).
    #[cold]
    fn grow(&mut self, hash_of: impl Fn(u32) -> u64) {
        let room = (self.tags.len() * 2).max(1024);
        self.tags = vec![0; room];
        self.rows = vec![0; room];
        let mask = room - 1;
        for row in 0..self.len as u32 {
            let hash = hash_of(row);
            let mut at = self.home(hash);
            while self.tags[at] != 0 {
                at = (at + 1) & mask;
            }
            self.tags[at] = tag(hash);
            self.rows[at] = row;
        }
    }

    /// Forgets every row, keeping the room.
    pub(super) fn clear(&mut self) {
        self.tags.fill(0);
        self.len = 0;
    }

    /// Bytes the slots take.
    pub(super) fn bytes(&self) -> usize {
        self.tags.capacity() + self.rows.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_again_across_growth_and_colliding_tags() {
        // Keys 0..n; the hash of key k is chosen so that many share a tag, and some a
        // home too.
        let hash = |k: u32| mix(u64::from(k % 97)) ^ u64::from(k / 97 % 50) << 40;
        let mut index = RowIndex::default();
        for k in 0..10_000u32 {
            assert_eq!(
                index.find_or_insert(hash(k), k, |row| row == k, hash),
                (k, true)
            );
        }
        for k in (0..10_000u32).rev() {
            assert_eq!(
                index.find_or_insert(hash(k), 99_999, |row| row == k, hash),
                (k, false)
            );
        }
        assert!(index.bytes() >= 10_000 * 5 * 4 / 3);
        index.clear();
        assert_eq!(
            index.find_or_insert(hash(5), 0, |row| row == 5, hash),
            (0, true)
        );
    }
}
