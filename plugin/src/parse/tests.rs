use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn parse(line: &str) -> Result<(Parsed, String), LineError> {
    let format = Format::default();
    let mut out = b"previous".to_vec();
    let parsed = parse_line(line.as_bytes(), &format, &mut out);
    let json = String::from_utf8(out).unwrap();
    let json = json
        .strip_prefix("previous")
        .expect("earlier output is kept");
    if parsed.is_err() {
        assert_eq!(json, "", "a rejected line leaves no output");
    }
    Ok((parsed?, json.to_string()))
}

#[test]
fn default_line() {
    let (parsed, fields) =
        parse("2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK").unwrap();
    assert_eq!(
        fields,
        r#"{"version":2,"account_id":"123456789010","interface_id":"eni-1235b8ca123456789","srcaddr":"172.31.16.139","dstaddr":"172.31.16.21","srcport":20641,"dstport":22,"protocol":6,"packets":20,"bytes":4249,"start":1418530010,"end":1418530070,"action":"ACCEPT","log_status":"OK""#
    );
    assert_eq!(
        parsed.src,
        Addr::V4(u32::from(Ipv4Addr::new(172, 31, 16, 139)))
    );
    assert_eq!(parsed.start, Some(1418530010));
}

#[test]
fn runs_of_spaces_and_nodata() {
    let (parsed, fields) =
        parse("2  123 eni-1   - - - - - - - 1431280876 1431280934 - NODATA").unwrap();
    assert!(fields.contains(r#","srcaddr":null,"#), "{fields}");
    assert_eq!(parsed.src, Addr::None);
    assert_eq!(parsed.start, Some(1431280876));
}

#[test]
fn rejections() {
    assert_eq!(parse("").unwrap_err(), LineError::Empty);
    assert_eq!(parse("   ").unwrap_err(), LineError::Empty);
    assert_eq!(
        parse("2 123 eni-1").unwrap_err(),
        LineError::FieldCount {
            expected: 14,
            found: 3
        }
    );
    let bad_port = parse("2 1 e 10.0.0.1 10.0.0.2 70000 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
    assert!(matches!(
        bad_port,
        LineError::OutOfRange {
            field: "srcport",
            max: 65535,
            ..
        }
    ));
    let bad_bytes =
        parse("2 1 e 10.0.0.1 10.0.0.2 1 22 6 1 99999999999999999999 1 2 ACCEPT OK").unwrap_err();
    assert!(matches!(
        bad_bytes,
        LineError::NotANumber { field: "bytes", .. }
    ));
    let neg = parse("2 1 e 10.0.0.1 10.0.0.2 -1 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
    assert!(matches!(
        neg,
        LineError::NotANumber {
            field: "srcport",
            ..
        }
    ));
    // A field written the slow way (escaped, or a number with leading zeros) before a
    // bad one: nothing of the line may stay in the output.
    let escaped_then_bad =
        parse("2 1 e\"x 10.0.0.1 10.0.0.2 70000 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
    assert!(matches!(escaped_then_bad, LineError::OutOfRange { .. }));
    let zeros_then_bad =
        parse("02 1 e 10.0.0.1 10.0.0.2 1 22 6 1 1 1 2 ACCEPT x\"y 7").unwrap_err();
    assert!(matches!(zeros_then_bad, LineError::FieldCount { .. }));
    let zeros_then_bad_ip =
        parse("02 1 e 10.0.0.1 10.0.0.256 1 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
    assert!(matches!(zeros_then_bad_ip, LineError::BadAddress { .. }));
    let bad_ip = parse("2 1 e 10.0.0.256 10.0.0.2 1 22 6 1 1 1 2 ACCEPT OK").unwrap_err();
    assert!(matches!(
        bad_ip,
        LineError::BadAddress {
            field: "srcaddr",
            ..
        }
    ));
}

#[test]
fn addresses() {
    assert_eq!(parse_addr(b"0.0.0.0"), Some(Addr::V4(0)));
    assert_eq!(parse_addr(b"255.255.255.255"), Some(Addr::V4(u32::MAX)));
    for bad in [
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "1.2.3.4x",
        "1..2.3",
        "",
        "1234.1.1.1",
        ":::",
        "abc",
    ] {
        assert_eq!(parse_addr(bad.as_bytes()), None, "{bad}");
    }
    assert_eq!(
        parse_addr(b"2001:db8::1"),
        Some(Addr::V6(u128::from(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap()
        )))
    );
}

#[test]
fn uint_agrees_with_the_standard_parser() {
    let mut cases: Vec<String> = vec![
        "0".into(),
        "9".into(),
        "10".into(),
        "65535".into(),
        "1700000000".into(),
        "0000".into(),
        "0123".into(),
        "99999999".into(),
        "1234567890123456789".into(),
        u64::MAX.to_string(),
        "18446744073709551616".into(),
        "99999999999999999999".into(),
    ];
    for bad in [
        "12a4",
        "1/34",
        "12:4",
        "1234567\u{0}",
        "ab",
        "-1",
        "+1",
        "1 2",
        "١٢",
    ] {
        cases.push(bad.into());
    }
    let mut x = 1u64;
    for _ in 0..2000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        cases.push((x >> (x % 60)).to_string());
        let mut s = (x >> 7).to_string();
        let at = (x % s.len() as u64) as usize;
        s.replace_range(at..at + 1, [":", "/", "a", " "][(x % 4) as usize]);
        cases.push(s);
    }
    for case in cases {
        let want = if case.bytes().all(|b| b.is_ascii_digit()) {
            case.parse::<u64>().ok()
        } else {
            None
        };
        assert_eq!(parse_uint(case.as_bytes()), want, "{case:?}");
    }
}

#[test]
fn v4_agrees_with_the_standard_parser() {
    let mut x = 7u64;
    let mut cases: Vec<String> = [
        "0.0.0.0",
        "255.255.255.255",
        "1.2.3.4",
        "01.2.3.4",
        "1.2.3.04",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.",
        ".1.2.3.4",
        "1..2.3",
        "1.2.3.4 ",
        "1000.1.1.1",
        "1.2.3.255",
        "1.2.3.256",
        "9.99.199.249",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for _ in 0..5000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let octets: Vec<String> = (0..4)
            .map(|k| ((x >> (k * 16)) % 300).to_string())
            .collect();
        let mut s = octets.join(".");
        if x.is_multiple_of(5) {
            s.insert(
                ((x >> 40) % s.len() as u64) as usize,
                "0.x".as_bytes()[(x % 3) as usize] as char,
            );
        }
        cases.push(s);
    }
    for case in cases {
        let want = case.parse::<Ipv4Addr>().ok().map(u32::from);
        assert_eq!(parse_v4(case.as_bytes()), want, "{case:?}");
    }
}

#[test]
fn v6_agrees_with_the_standard_parser() {
    let mut cases: Vec<String> = [
        "::",
        "::1",
        "1::",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7::8",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        ":::",
        ":1::",
        "1:",
        ":1",
        "1:2",
        "12345::",
        "0001:0002::",
        "abcd:EF01::",
        "g::",
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4",
        "1:2:3:4:5::1.2.3.4",
        "1:2:3:4:5:6::1.2.3.4",
        "1.2.3.4::",
        "1.2.3.4",
        "::1.2.3",
        "::1.2.3.4.5",
        "::01.2.3.4",
        "::256.1.1.1",
        "::1.2.3.4:5",
        "::a.2.3.4",
        "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db8::1%eth0",
        " ::1",
        "::1 ",
        "",
        ":",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Random texts over the alphabet of addresses, and valid addresses edited once.
    let mut next = random(11);
    const ALPHABET: &[u8] = b"0123456789abcdefABCDEF::::..g";
    for _ in 0..40_000 {
        let len = (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| ALPHABET[(next() as usize) % ALPHABET.len()] as char)
            .collect();
        cases.push(text);
    }
    for _ in 0..40_000 {
        let bits = (u128::from(next()) << 96) | (u128::from(next()) << 64) | u128::from(next());
        // Zero runs make `::` appear.
        let bits = if next().is_multiple_of(2) {
            bits & !(u128::from(u32::MAX) << 32)
        } else {
            bits
        };
        let mut text = Ipv6Addr::from(bits).to_string();
        if next().is_multiple_of(3) {
            let at = (next() as usize) % (text.len() + 1);
            let byte = ALPHABET[(next() as usize) % ALPHABET.len()] as char;
            match next() % 3 {
                0 => text.insert(at, byte),
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ if at < text.len() => text.replace_range(at..at + 1, &byte.to_string()),
                _ => {}
            }
        }
        cases.push(text);
    }
    let mut valid = 0;
    for case in &cases {
        let want = case.parse::<Ipv6Addr>().ok().map(u128::from);
        valid += usize::from(want.is_some());
        assert_eq!(parse_v6(case.as_bytes()), want, "{case:?}");
    }
    assert!(valid > 30_000, "enough valid cases ({valid})");
}

#[test]
fn simd_masks_agree_with_the_portable_ones() {
    for b in 0..=255u8 {
        for at in [0, 7, 15] {
            let mut chunk = [b'a'; 16];
            chunk[at] = b;
            assert_eq!(masks16(&chunk), masks16_portable(&chunk), "{b} at {at}");
        }
    }
}

#[test]
fn tokenize_agrees_with_a_byte_loop() {
    let alphabet: &[u8] = b"  \t\r\nab-9\x01\x7f\xc3\xa9\"";
    let mut x = 11u64;
    for _ in 0..3_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (x % 300) as usize;
        let text: Vec<u8> = (0..len)
            .map(|k| {
                let r = x.rotate_left(k as u32 * 7) ^ (k as u64).wrapping_mul(0x9e37_79b9);
                // Mostly letters, so tokens grow past a 64-byte window now and then.
                if r.is_multiple_of(4) {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                } else {
                    b'x'
                }
            })
            .collect();
        let mut line_start = 0;
        while line_start <= text.len() {
            let line_end = text[line_start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |p| line_start + p);
            let mut want = Vec::new();
            let mut i = line_start;
            while i < line_end {
                if is_separator(text[i]) {
                    i += 1;
                    continue;
                }
                let begin = i;
                while i < line_end && !is_separator(text[i]) {
                    i += 1;
                }
                want.push((begin as u32, i as u32));
            }
            for room in [0, 3, MAX_FIELDS] {
                let mut bounds = [MaybeUninit::<(u32, u32)>::uninit(); MAX_FIELDS];
                let (found, end) = tokenize(&text, line_start, &mut bounds[..room]);
                assert_eq!(
                    (found, end),
                    (want.len(), line_end),
                    "{text:?} from {line_start}"
                );
                for (k, wanted) in want.iter().take(room).enumerate() {
                    assert_eq!(unsafe { bounds[k].assume_init() }, *wanted, "{text:?}");
                }
            }
            line_start = line_end + 1;
        }
    }
}

#[test]
fn swar_digits_agree_with_the_standard_parser() {
    let mut x = 3u64;
    for _ in 0..20_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 1 + (x % 16) as usize;
        let mut digits: Vec<u8> = (0..len)
            .map(|k| b'0' + ((x >> (k * 3)) % 10) as u8)
            .collect();
        if x.is_multiple_of(3) {
            let at = ((x >> 50) % len as u64) as usize;
            digits[at] = [b'/', b':', b'a', b' ', 0, 0xff][((x >> 40) % 6) as usize];
        }
        let want = std::str::from_utf8(&digits)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
        // At the start of a longer text (whole-word loads) and at its very end.
        let mut text = digits.clone();
        text.extend_from_slice(b" 12345678901234567");
        assert_eq!(digits16(&text, 0, len), want, "{digits:?}");
        let mut text = b"xxxxxxxxxxxxxxxx ".to_vec();
        let at = text.len();
        text.extend_from_slice(&digits);
        assert_eq!(digits16(&text, at, len), want, "{digits:?} at the end");
    }
}

#[test]
fn uint() {
    assert_eq!(parse_uint(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_uint(b"18446744073709551616"), None);
    assert_eq!(parse_uint(b"+1"), None);
    assert_eq!(parse_uint(b""), None);
}

/// Pseudo-random numbers from `seed` (the high bits of a linear congruential generator).
fn random(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    }
}

/// A line's outcome, values and what the enrichment needs, with or without JSON.
fn read<const JSON: bool>(
    line: &[u8],
    format: &Format,
) -> (Result<(), LineError>, Vec<u64>, Parsed) {
    let mut values = vec![0u64; format.len()];
    let mut parsed = Parsed::EMPTY;
    let (outcome, _) =
        parse_line_with::<JSON, true>(line, 0, format, &mut Vec::new(), &mut values, &mut parsed);
    (outcome, values, parsed)
}

#[test]
fn values_without_json_agree_with_the_field_by_field_pass() {
    // The columns-only parser reads kind by kind; the JSON one field by field. On every
    // line, good or bad, both must find the same values, addresses, start and error.
    let formats = [
        Format::default(),
        Format::parse("srcaddr pkt-srcaddr packets dstaddr bytes action").unwrap(),
        Format::parse("tgw").unwrap(),
    ];
    // Values of each kind, mostly good (some only for wide integers, some longer than
    // 16 digits), and bad ones of every kind.
    let uints: [&[u8]; 9] = [
        b"-",
        b"0",
        b"7",
        b"007",
        b"200",
        b"0000000000000000000042",
        b"1418530010",
        b"12345678901234567",
        b"18446744073709551615",
    ];
    let ips: [&[u8]; 4] = [b"-", b"10.0.0.1", b"2001:db8::1", b"::ffff:10.0.0.1"];
    let texts: [&[u8]; 3] = [b"-", b"ACCEPT", b"eni-1\"x"];
    let bad: [&[u8]; 8] = [
        b"65536",
        b"18446744073709551616",
        b"99999999999999999999",
        b"12a4",
        b"-1",
        b"10.0.0.256",
        b"010.0.0.1",
        b"2001:db8:::1",
    ];
    let mut next = random(11);
    for format in &formats {
        let mut good = 0;
        for _ in 0..20_000 {
            let mut line = Vec::new();
            for pos in 0..format.len() {
                if pos > 0 {
                    line.push(b' ');
                }
                let choices: &[&[u8]] = match format.columns[pos].kind {
                    _ if next().is_multiple_of(20) => &bad,
                    Column::UINT => &uints,
                    Column::IP => &ips,
                    _ => &texts,
                };
                line.extend_from_slice(choices[next() as usize % choices.len()]);
            }
            let (got, values, parsed) = read::<false>(&line, format);
            let (want, want_values, want_parsed) = read::<true>(&line, format);
            let line = String::from_utf8_lossy(&line);
            assert_eq!(got, want, "{line}");
            if want.is_ok() {
                good += 1;
                assert_eq!((values, parsed), (want_values, want_parsed), "{line}");
            }
        }
        // Good lines too, not only the first bad value of bad ones.
        assert!(good > 1_000, "{good} good lines of {}", format.canonical());
    }
}
