//! Small helpers several modules share.

use std::time::Duration;

/// A pause between `d / 2` and `d`, so that callers that failed together do not retry
/// together.
pub fn jittered(d: Duration) -> Duration {
    let fraction = (random_u64() % 1000) as u32;
    d / 2 + d / 2 * fraction / 1000
}

/// A random number, good for jitter and unique ids (not for secrets): RandomState is
/// seeded from the OS for every process and differently for every instance.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// Seconds since the Unix epoch, now.
pub fn epoch_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch, now.
pub fn epoch_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The cores this process may use (1 when that cannot be told): the default number of
/// workers.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The UTC civil time of `epoch` seconds: (year, month, day, hour, minute, second).
pub fn civil_utc(epoch: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Whether `bytes` start like a gzip stream.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Keeps the C allocator from handing batch-sized buffers back to the kernel after each
/// batch. glibc serves allocations above its mmap threshold (128 KiB at first) with a
/// fresh `mmap` and returns them with `munmap` on free, and trims the heap top when
/// 128 KiB are free there: a pipeline that allocates and frees a few hundred KiB per
/// batch then pays page faults and page clearing on every batch (system time of the
/// order of user time). Raising both thresholds keeps such buffers in the heap, where
/// the next batch reuses them; the peak resident size does not grow. No-op elsewhere.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Whether `text` has a byte that JSON escapes (a control byte, `"` or `\`): most
/// values have none and can be quoted as they are.
pub fn needs_json_escape(text: &str) -> bool {
    json_special_offset(text.as_bytes()) < text.len()
}

/// The offset of the first byte in `bytes` that JSON escapes in a string (and that ends
/// a plain run of string contents): a quote, a backslash or a control character (`bytes.len()` if none does). Sixteen
/// bytes at a time (SSE2, part of every x86_64), the rest eight at a time.
#[cfg(target_arch = "x86_64")]
pub fn json_special_offset(bytes: &[u8]) -> usize {
    use core::arch::x86_64::*;
    let mut offset = 0;
    while offset + 16 <= bytes.len() {
        // SAFETY: SSE2 is always present on x86_64; the 16 bytes at `offset` are within
        // `bytes`, and `loadu` needs no alignment.
        let found = unsafe {
            let v = _mm_loadu_si128(bytes.as_ptr().add(offset).cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Below 0x20 (unsigned) where the minimum with 0x1f is the byte itself.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        if found != 0 {
            return offset + found.trailing_zeros() as usize;
        }
        offset += 16;
    }
    offset + json_special_offset_words(&bytes[offset..])
}

/// [`json_special_offset`] on other targets.
#[cfg(not(target_arch = "x86_64"))]
pub fn json_special_offset(bytes: &[u8]) -> usize {
    json_special_offset_words(bytes)
}

/// [`json_special_offset`], eight bytes at a time.
fn json_special_offset_words(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (in `quote`, `backslash`) or below
        // 0x20 (in `word`); only bytes above the lowest such one can be set falsely.
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGHS;
        if found != 0 {
            return offset + (found.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    let rest = chunks.remainder();
    offset
        + rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(rest.len())
}

/// Hints the CPU to fetch the cache line at `ptr`, which may point anywhere, into the
/// level-2 cache. Not into level 1: a prefetch there holds one of the few level-1 miss
/// buffers until its line arrives, which capped how many lookups overlap (the metadata
/// bench measured exact lookups at 14-17 ns that way, 10.5-12 ns this way).
#[inline(always)]
pub fn prefetch_ptr<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// Asks the CPU for every cache line of the `len` bytes at `ptr` (none for 0): a text
/// or a struct may start anywhere in a line and run into the next.
#[inline(always)]
pub fn prefetch_bytes(ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let mut at = 0;
    while at < len {
        prefetch_ptr(ptr.wrapping_add(at));
        at += 64;
    }
    // The last line, which the steps above miss when `ptr` is not at a line's start.
    prefetch_ptr(ptr.wrapping_add(len - 1));
}

/// `error` and its causes, joined with `: `, leaving out a cause whose message is
/// already said (many errors put their cause in their own message and also give it as
/// their source).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_special_offset_finds_the_first_quote_backslash_or_control() {
        for text in [
            "",
            "a",
            "abcdefgh",
            "abcdefghijklmnopq",
            "2 123456789012 eni-1",
        ] {
            assert_eq!(json_special_offset(text.as_bytes()), text.len());
        }
        for len in 0..40 {
            for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                let mut bytes = vec![b'x'; len];
                bytes.push(special);
                bytes.extend_from_slice(b"\"\\ abc");
                assert_eq!(json_special_offset(&bytes), len, "{len} {special}");
            }
        }
        // Bytes just above the limits, and multi-byte UTF-8, are plain.
        let plain = "  !#[]^é€😀 \u{7f}".repeat(3);
        assert_eq!(json_special_offset(plain.as_bytes()), plain.len());
        assert_eq!(json_special_offset_words(plain.as_bytes()), plain.len());
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_pause() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(800));
            assert!(
                d >= Duration::from_millis(400) && d <= Duration::from_millis(800),
                "{d:?}"
            );
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        // A cause its error already says, and one it does not.
        let said = Wrapped(
            "cannot read x: disk gone".into(),
            std::io::Error::other("disk gone"),
        );
        assert_eq!(error_chain(&said), "cannot read x: disk gone");
        let unsaid = Wrapped("cannot read x".into(), std::io::Error::other("disk gone"));
        assert_eq!(error_chain(&unsaid), "cannot read x: disk gone");
    }

    #[derive(Debug)]
    struct Wrapped(String, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }
}
