use super::*;
use serde_json::Value;

/// Numbers below `n` from a xorshift generator started at `seed`.
fn below(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

/// The names of [`protocol_action_columns`], one `Arc` per test: a rollup keeps its
/// plan while a batch's names are the same `Arc`.
fn protocol_action_names() -> std::sync::Arc<[String]> {
    ["protocol", "action", "start", "bytes"]
        .map(String::from)
        .into()
}

/// Columns `protocol` (integer), `action` (text, a range of `ACCEPT REJECT`: 6 is
/// ACCEPT, `7 << 32 | 13` REJECT), `start` and `bytes` (`names`, from
/// [`protocol_action_names`]), four values per record, with each record's owner ids as
/// `owners` gives them.
fn protocol_action_columns(
    names: &std::sync::Arc<[String]>,
    table: &std::sync::Arc<crate::metadata::Table>,
    values: Vec<u64>,
    owners: Vec<u32>,
) -> crate::batch::Columns {
    use crate::runtime::ColumnKind;
    crate::batch::Columns {
        names: names.clone(),
        raw: crate::runtime::RawColumns {
            kinds: vec![
                ColumnKind::Integer,
                ColumnKind::Text,
                ColumnKind::Integer,
                ColumnKind::Integer,
            ],
            values,
            owners,
        },
        input: std::sync::Arc::new(crate::batch::LineBatch::of_text(
            "test",
            "ACCEPT REJECT\n".into(),
        )),
        table: table.clone(),
    }
}

#[test]
fn rolls_up_per_bucket_and_dimensions() {
    let dims: Vec<String> = ["src_app", "protocol"].map(String::from).into();
    let mut rollup = Rollup::new(&dims, 60);
    for line in [
        r#"{"start":120,"src_app":"api","protocol":6,"bytes":10,"packets":1}"#,
        r#"{"start":179,"src_app":"api","protocol":6,"bytes":5,"packets":2}"#,
        r#"{"start":180,"src_app":"api","protocol":6,"bytes":1,"packets":1}"#,
        r#"{"start":121,"src_app":null,"protocol":17,"bytes":null,"packets":3}"#,
    ] {
        rollup.add(line).unwrap();
    }
    assert_eq!(rollup.add("{\"start\":null}"), Err(Skipped::NoStart));
    assert_eq!(rollup.add("not json"), Err(Skipped::InvalidJson));
    let rows: Vec<String> = rollup.drain().rows().map(|(_, r)| r.to_string()).collect();
    assert_eq!(
        rows,
        vec![
            "{\"timestamp\":120000,\"src_app\":\"api\",\"protocol\":6,\"flows\":2,\"bytes\":15,\"packets\":3}\n",
            "{\"timestamp\":120000,\"src_app\":null,\"protocol\":17,\"flows\":1,\"bytes\":0,\"packets\":3}\n",
            "{\"timestamp\":180000,\"src_app\":\"api\",\"protocol\":6,\"flows\":1,\"bytes\":1,\"packets\":1}\n",
        ]
    );
    assert!(rollup.is_empty());
}

#[test]
fn the_fast_path_agrees_with_a_json_parser() {
    let dims: Vec<String> = ["a", "b", "c"].map(String::from).into();
    for line in [
        r#"{"start":60,"a":"x","b":7,"c":null,"bytes":3,"packets":1}"#,
        r#" { "start" : 60 , "a" : "x\"y,}" , "b":true,"bytes":3 } "#,
        r#"{"start":61,"b":{"nested":1},"a":"x"}"#,
        r#"{"start":62,"a":["list"],"bytes":9}"#,
        r#"{"start":63}"#,
        r#"{"start":64,"a":"\u00e9","b":-0,"c":1e5}"#,
        r#"{"\u0073tart":65,"a":"x"}"#,
    ] {
        let mut fast = Rollup::new(&dims, 60);
        fast.add(line).unwrap();
        // The reference: the same line through serde_json.
        let value: Value = serde_json::from_str(line).unwrap();
        let o = value.as_object().unwrap();
        let want = format!(
            "{{\"timestamp\":60000,\"a\":{},\"b\":{},\"c\":{},\"flows\":1,\"bytes\":{},\"packets\":{}}}\n",
            o.get("a").unwrap_or(&Value::Null),
            o.get("b").unwrap_or(&Value::Null),
            o.get("c").unwrap_or(&Value::Null),
            o.get("bytes").and_then(Value::as_u64).unwrap_or(0),
            o.get("packets").and_then(Value::as_u64).unwrap_or(0),
        );
        assert_eq!(fast.drain().text(), want, "{line}");
    }
    let mut rollup = Rollup::new(&dims, 60);
    for bad in [
        "{\"start\":1",
        "{\"start\":1}}",
        "[1]",
        "{\"a\":1,}",
        "{\"start\":1,\"a\":xyz}",
        "{\"start\":1,\"a\":1x}",
        "{\"start\":1,\"a\":01}",
        "{\"start\":1,\"a\":1.}",
        "{\"start\":1,\"a\":-.5}",
        "{\"start\":1,\"a\":\"bad \\q escape\"}",
        "{\"start\":1,\"a\":\"raw \u{1} control\"}",
    ] {
        assert_eq!(rollup.add(bad), Err(Skipped::InvalidJson), "{bad}");
    }
}

#[test]
fn compact_keys_agree_with_grouping_on_text() {
    // Random flows over a few values per dimension, some members missing, some
    // lines with keys in another order: rows and their order must be what grouping
    // on the texts gives, also on a second round after a drain.
    let dims: Vec<String> = ["a", "b", "c"].map(String::from).into();
    let mut rollup = Rollup::new(&dims, 60);
    let mut next = below(7);
    for _ in 0..2 {
        let mut want: std::collections::BTreeMap<(u64, Vec<String>), [u64; 3]> = Default::default();
        for _ in 0..5_000 {
            let start = next(300);
            let a = format!("\"x{}\"", next(30));
            let b = next(5).to_string();
            let c = ["null", "true", "\"é\""][next(3) as usize];
            let (bytes, packets) = (next(1000), next(10));
            let line = if next(2) == 0 {
                format!(
                    r#"{{"start":{start},"a":{a},"b":{b},"c":{c},"bytes":{bytes},"packets":{packets}}}"#
                )
            } else {
                format!(
                    r#"{{"b":{b},"packets":{packets},"start":{start},"a":{a},"bytes":{bytes}}}"#
                )
            };
            let c = if line.contains("\"c\"") { c } else { "null" };
            rollup.add(&line).unwrap();
            let sums = want
                .entry((start - start % 60, vec![a, b, c.to_string()]))
                .or_default();
            sums[0] += 1;
            sums[1] += bytes;
            sums[2] += packets;
        }
        let want: Vec<String> = want
            .into_iter()
            .map(|((bucket, values), [flows, bytes, packets])| {
                format!(
                    "{{\"timestamp\":{},\"a\":{},\"b\":{},\"c\":{},\"flows\":{flows},\"bytes\":{bytes},\"packets\":{packets}}}\n",
                    bucket * 1000,
                    values[0],
                    values[1],
                    values[2]
                )
            })
            .collect();
        let rows: Vec<String> = rollup.drain().rows().map(|(_, r)| r.to_string()).collect();
        assert_eq!(rows, want);
        assert!(rollup.is_empty());
    }
}

#[test]
fn rows_come_out_per_bucket_in_one_text() {
    let dims: Vec<String> = ["a"].map(String::from).into();
    let mut rollup = Rollup::new(&dims, 60);
    for start in [200, 10, 70, 15, 130] {
        rollup
            .add(&format!(r#"{{"start":{start},"a":"{}"}}"#, start % 2))
            .unwrap();
    }
    let drained = rollup.drain();
    assert_eq!(drained.len(), 5);
    let buckets: Vec<(u64, usize)> = drained
        .buckets()
        .map(|(b, text)| (b, text.lines().count()))
        .collect();
    assert_eq!(buckets, [(0, 2), (60, 1), (120, 1), (180, 1)]);
    let rows: Vec<(u64, &str)> = drained.rows().collect();
    assert_eq!(
        rows[0],
        (
            0,
            "{\"timestamp\":0,\"a\":\"0\",\"flows\":1,\"bytes\":0,\"packets\":0}\n"
        )
    );
    assert_eq!(
        rows.iter().map(|(_, r)| *r).collect::<String>(),
        drained.text()
    );
    assert_eq!(
        super::METRIC_KEYS.map(|k| k.trim_matches([',', ':', '"'])),
        super::super::METRICS
    );
}

#[test]
fn bucket_names_are_utc() {
    assert_eq!(bucket_name(0), "19700101T0000Z");
    assert_eq!(bucket_name(1_700_000_000), "20231114T2213Z");
    assert_eq!(bucket_name(951_782_400), "20000229T0000Z");
}

#[test]
fn shared_slots_group_like_text_and_drain_in_an_order_of_their_own() {
    // Two dimensions of each side share a slot; the rows must be those of grouping on
    // every dimension's text, and the drained text must not depend on the input order.
    let dims: Vec<String> = ["src_app", "dst_app", "proto", "src_zone", "dst_zone"]
        .map(String::from)
        .into();
    let mut next = below(11);
    let mut lines = Vec::new();
    let mut want: std::collections::BTreeMap<Vec<String>, [u64; 3]> = Default::default();
    for _ in 0..3_000 {
        let start = next(180);
        let values = [
            format!("\"a{}\"", next(7)),
            ["null", "\"b\"", "\"c\\\"q\""][next(3) as usize].to_string(),
            next(3).to_string(),
            format!("\"z{}\"", next(2)),
            ["null", "\"y\""][next(2) as usize].to_string(),
        ];
        let bytes = next(100);
        let mut line = format!("{{\"start\":{start},\"bytes\":{bytes}");
        for (d, v) in dims.iter().zip(&values) {
            line.push_str(&format!(",\"{d}\":{v}"));
        }
        line.push('}');
        lines.push(line);
        let mut key = vec![(start - start % 60).to_string()];
        key.extend(values);
        let sums = want.entry(key).or_default();
        sums[0] += 1;
        sums[1] += bytes;
    }
    let drain = |lines: &mut dyn Iterator<Item = &String>, threads: usize| {
        let mut rollup = Rollup::new(&dims, 60).with_threads(threads);
        for line in lines {
            rollup.add(line).unwrap();
        }
        let drained = rollup.drain();
        // Rows come out in small pieces here; a bucket's pieces make one bucket.
        let buckets: Vec<u64> = drained.buckets().map(|(b, _)| b).collect();
        assert_eq!(buckets, [0, 60, 120]);
        assert_eq!(drained.rows().count(), drained.len());
        drained.text().to_string()
    };
    let forward = drain(&mut lines.iter(), 1);
    assert_eq!(
        forward,
        drain(&mut lines.iter().rev(), 1),
        "order of its own"
    );
    // Pieces rendered on several threads come out in the same order.
    assert_eq!(forward, drain(&mut lines.iter(), 3), "threads");
    // And rendered ahead of a writer, on one thread or two, which stops at its error.
    for threads in [1, 2] {
        let mut rollup = Rollup::new(&dims, 60).with_threads(threads);
        for line in &lines {
            rollup.add(line).unwrap();
        }
        let mut ahead = String::new();
        let rows = Rollup::drain_each_of(std::slice::from_mut(&mut rollup), |_, text, _| {
            ahead.push_str(text);
            Ok::<_, ()>(())
        });
        assert_eq!(
            (rows, ahead.as_str()),
            (Ok(forward.lines().count()), &*forward)
        );
        for line in &lines {
            rollup.add(line).unwrap();
        }
        let mut pieces = 0;
        let stopped = Rollup::drain_each_of(std::slice::from_mut(&mut rollup), |_, _, _| {
            pieces += 1;
            if pieces == 3 { Err("full") } else { Ok(()) }
        });
        assert_eq!((stopped, pieces), (Err("full"), 3));
        assert!(rollup.is_empty());
    }
    let got: std::collections::BTreeMap<Vec<String>, [u64; 3]> = forward
        .lines()
        .map(|row| {
            let row: Value = serde_json::from_str(row).unwrap();
            let mut key = vec![(row["timestamp"].as_u64().unwrap() / 1000).to_string()];
            key.extend(dims.iter().map(|d| row[d].to_string()));
            let sums = ["flows", "bytes", "packets"].map(|m| row[m].as_u64().unwrap());
            (key, sums)
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn shards_routed_by_key_hold_the_rows_of_one_rollup() {
    use crate::metadata::{TableBuilder, events::Event};
    use std::sync::Arc;
    let dims: Vec<String> = ["src_app", "dst_app", "src_zone", "protocol", "action"]
        .map(String::from)
        .into();
    let names = protocol_action_names();
    // Two snapshots of 12 owners sharing 4 apps and 3 zones, built in opposite orders,
    // so one owner's id in one is another's in the other: a key's shard must follow
    // the texts, not the ids.
    let snapshot = |reversed: bool| {
        let mut builder = TableBuilder::new();
        let mut owners: Vec<u32> = (0..12).collect();
        if reversed {
            owners.reverse();
        }
        for i in owners {
            let line = format!(
                r#"{{"ts":0,"op":"assign","ip":"10.0.0.{i}","attrs":{{"app":"a{}","zone":"z{}"}}}}"#,
                i % 4,
                i % 3
            );
            builder.apply(&Event::parse(&line).unwrap());
        }
        Arc::new(builder.build())
    };
    let mut next = below(7);
    let mut columns = |table: &Arc<crate::metadata::Table>| {
        let flows = 3_000;
        let ids = table.owners() as u64 + 1;
        let mut values = Vec::new();
        let mut owners = Vec::new();
        for _ in 0..flows {
            let protocol = [6, 17, 1000][next(3) as usize];
            let action = [6, 7 << 32 | 13, u64::MAX][next(3) as usize];
            // A few flows have no start: they go to the first shard, which counts them.
            let start = if next(50) == 0 {
                u64::MAX
            } else {
                1_700_000_000 + next(180)
            };
            values.extend([protocol, action, start, next(1 << 30)]);
            owners.extend([next(ids) as u32, next(ids) as u32]);
        }
        protocol_action_columns(&names, table, values, owners)
    };
    let batches = [columns(&snapshot(false)), columns(&snapshot(true))];
    let mut whole = Rollup::new(&dims, 60);
    let mut router = Router::new(&dims, 60, 3);
    let mut shards: Vec<Rollup> = (0..3).map(|_| Rollup::new(&dims, 60)).collect();
    let mut no_start = [0; 3];
    for batch in &batches {
        whole.add_columns(batch);
        let mut selections = vec![Vec::new(); 3];
        router.route(batch, &mut selections);
        assert_eq!(selections.iter().map(Vec::len).sum::<usize>(), batch.rows());
        for (shard, selection) in selections.iter().enumerate() {
            assert!(
                selection.len() > batch.rows() / 6,
                "shard {shard}: {}",
                selection.len()
            );
            no_start[shard] += shards[shard].add_columns_in(batch, Some(selection)).1;
        }
    }
    assert!(no_start[0] > 0 && no_start[1..] == [0, 0], "{no_start:?}");
    // No key in two shards: as many rows as one rollup makes, and the same ones.
    assert_eq!(shards.iter().map(Rollup::len).sum::<usize>(), whole.len());
    let sorted = |drained: Drained| {
        let mut rows: Vec<String> = drained.text().lines().map(String::from).collect();
        rows.sort();
        rows
    };
    let drained = Rollup::drain_all(&mut shards);
    // Rows come bucket after bucket.
    let buckets: Vec<u64> = drained.rows().map(|(bucket, _)| bucket).collect();
    assert!(buckets.is_sorted());
    assert_eq!(sorted(drained), sorted(whole.drain()));
    assert!(shards.iter().all(Rollup::is_empty));
}

#[test]
fn every_way_of_sorting_rows_gives_the_same_order() {
    // Rows whose ranks fit in 64 bits with their numbers, so every way fits; each
    // must give the order that comparing the rows' ranks one by one gives.
    let dims: Vec<String> = ["a", "b"].map(String::from).into();
    let mut rollup = Rollup::new(&dims, 60);
    let mut next = below(3);
    for _ in 0..4_000 {
        let line = format!(
            r#"{{"start":{},"a":"x{}","b":{},"bytes":1}}"#,
            next(600),
            next(300),
            next(40)
        );
        rollup.add(&line).unwrap();
    }
    assert!(rollup.len() > 1_000);
    let ranks = rollup.order_by(Some(Sort::Ranks));
    assert_eq!(rollup.order_by(Some(Sort::Packed128)), ranks);
    assert_eq!(rollup.order_by(Some(Sort::Packed64)), ranks);
    assert_eq!(rollup.order(), ranks);
}

#[test]
fn texts_rank_as_they_sort() {
    let mut below = below(0x5eed);
    // Texts over a few letters (zero bytes included) behind a shared beginning of
    // several lengths, so that keys tie, texts end inside their 8 bytes, and one text
    // is the beginning of another.
    for shared in ["", ",\"src_app\":\"", ",\"src_app\":\"app-"] {
        for count in [0, 1, 2, 50, 2_000] {
            // Distinct, as a dictionary's are (equal texts may rank either way).
            let texts: std::collections::BTreeSet<String> = (0..count)
                .map(|_| {
                    let len = below(20) as usize;
                    let rest: String = (0..len)
                        .map(|_| ['a', 'b', '\0', '9', '"'][below(5) as usize])
                        .collect();
                    format!("{shared}{rest}")
                })
                .collect();
            let mut texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            // Out of order.
            for at in (1..texts.len()).rev() {
                texts.swap(at, below(at as u64 + 1) as usize);
            }
            assert_eq!(rank_texts(&texts), rank_of(&texts), "{shared:?}, {count}");
        }
    }
    let few = ["b", "a", "ab", "a\0", ""];
    assert_eq!(rank_texts(&few), rank_of(&few));
    assert_eq!(rank_texts(&few), [4, 1, 3, 2, 0]);
}

#[test]
fn columns_roll_up_like_json_after_a_drain() {
    use std::sync::Arc;
    // `flow_direction` is in no column: always null.
    let dims: Vec<String> = ["protocol", "flow_direction", "action"]
        .map(String::from)
        .into();
    let names = protocol_action_names();
    let table = Arc::new(crate::metadata::TableBuilder::new().build());
    // Text columns are ranges of the batch's text: ACCEPT is 0..6, REJECT 7..13.
    let (accept, reject) = (6u64, 7u64 << 32 | 13);
    let columns = |flows: &[(u64, bool)]| {
        let values = flows
            .iter()
            .enumerate()
            .flat_map(|(at, &(protocol, accepted))| {
                [
                    protocol,
                    if accepted { accept } else { reject },
                    1_700_000_000,
                    at as u64 + 1,
                ]
            })
            .collect();
        protocol_action_columns(&names, &table, values, vec![0; 2 * flows.len()])
    };
    let json = |flows: &[(u64, bool)]| {
        let mut rollup = Rollup::new(&dims, 60);
        for (at, &(protocol, accepted)) in flows.iter().enumerate() {
            let action = if accepted { "ACCEPT" } else { "REJECT" };
            let line = format!(
                r#"{{"protocol":{protocol},"action":"{action}","start":1700000000,"bytes":{}}}"#,
                at + 1
            );
            rollup.add(&line).unwrap();
        }
        rollup.drain().text().to_string()
    };
    let mut rollup = Rollup::new(&dims, 60);
    // The second batch starts with the values the first ended with, after a drain that
    // forgot every code: a code remembered across it would make 6 and 17 one row.
    let first = [(6, true), (17, false), (6, true), (6, true)];
    let second = [(6, true), (17, true), (17, false), (6, false)];
    for flows in [&first[..], &second[..]] {
        assert_eq!(rollup.add_columns(&columns(flows)), (flows.len() as u64, 0));
        assert_eq!(rollup.drain().text(), json(flows));
    }
}
