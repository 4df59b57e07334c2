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
/// (timestamp in epoch milliseconds, message), compressed at `level`: written as
/// CloudWatch Logs writes them, keys in its order and each event with a 56-digit id
/// (`first_id` and up, after the timestamp).
#[allow(dead_code)] // Used by the benchmarks that read envelopes.
pub fn gzip_envelope(
    events: &[(u64, String)],
    first_id: u64,
    level: flate2::Compression,
) -> Vec<u8> {
    use std::io::Write;
    let events: Vec<String> = events
        .iter()
        .zip(first_id..)
        .map(|((timestamp, message), id)| {
            format!(
                r#"{{"id":"{timestamp:020}{id:036}","timestamp":{timestamp},"message":{}}}"#,
                serde_json::to_string(message).unwrap()
            )
        })
        .collect();
    let envelope = format!(
        r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"vpc-flow-logs","logStream":"eni-all","subscriptionFilters":["to-kinesis"],"logEvents":[{}]}}"#,
        events.join(",")
    );
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(envelope.as_bytes()).unwrap();
    encoder.finish().unwrap()
}
