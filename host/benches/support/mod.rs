//! Pieces the benchmarks share: a deterministic generator and option parsing.

/// Cheap deterministic generator (xorshift).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The value of option `--name N` in `args`, if given and a number.
pub fn option(args: &[String], name: &str) -> Option<usize> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
}

/// A gzip CloudWatch Logs subscription envelope (`DATA_MESSAGE`) of `events`
/// (`{"id", "timestamp", "message"}` objects), compressed at `level`.
#[allow(dead_code)] // Used by the benchmarks that read envelopes.
pub fn gzip_envelope(events: Vec<serde_json::Value>, level: flate2::Compression) -> Vec<u8> {
    use std::io::Write;
    let envelope = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "123456789012",
        "logGroup": "vpc-flow-logs", "logStream": "eni-all",
        "subscriptionFilters": ["to-kinesis"], "logEvents": events,
    });
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(envelope.to_string().as_bytes()).unwrap();
    encoder.finish().unwrap()
}
