//! Rows taken out of a rollup, rendered as NDJSON.

/// `,"flows":` and the other metrics' keys, in row order.
pub(super) const METRIC_KEYS: [&str; 3] = [",\"flows\":", ",\"bytes\":", ",\"packets\":"];

/// Appends `value` in decimal.
pub(super) fn push_decimal(text: &mut String, value: u64) {
    text.push_str(itoa::Buffer::new().format(value));
}

/// Rows taken out of a [`Rollup`]: NDJSON in one text, ordered by bucket, so each
/// bucket's rows are one slice of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Every row, each with its newline.
    pub(super) text: String,
    /// Where each row ends in `text`.
    pub(super) ends: Vec<usize>,
    /// Each bucket's start (epoch seconds) and its first row.
    pub(super) buckets: Vec<(u64, usize)>,
}

impl Drained {
    /// How many rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every row, each with its newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Each row with its bucket's start, in order (each row with its newline).
    pub fn rows(&self) -> impl Iterator<Item = (u64, &str)> {
        self.buckets
            .iter()
            .enumerate()
            .flat_map(move |(b, &(start, first))| {
                let last = self.buckets.get(b + 1).map_or(self.ends.len(), |&(_, f)| f);
                (first..last).map(move |row| {
                    let from = if row == 0 { 0 } else { self.ends[row - 1] };
                    (start, &self.text[from..self.ends[row]])
                })
            })
    }

    /// Each bucket's start with the text of its rows.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, &str)> {
        self.buckets
            .iter()
            .enumerate()
            .map(move |(b, &(start, first))| {
                let from = if first == 0 { 0 } else { self.ends[first - 1] };
                let to = self
                    .buckets
                    .get(b + 1)
                    .map_or(self.text.len(), |&(_, next)| self.ends[next - 1]);
                (start, &self.text[from..to])
            })
    }
}
