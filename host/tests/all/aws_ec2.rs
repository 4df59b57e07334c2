//! The `aws_ec2` table against a real EC2 API on 127.0.0.1 (moto in server mode):
//! interfaces created, retagged, deleted, an address reused by another application and
//! a secondary address moved, while a pipeline polls; then flows at every second
//! before, between and after the changes, checked against when the test made them.

use flowenrich_test_support::kinesis_local::KinesisLocal;
use flowenrich_test_support::moto::Moto;
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One change the test made: between `before` and `after` (epoch seconds), `ip` went to
/// `app` (`None`: nobody's).
struct Change {
    before: f64,
    after: f64,
    ip: &'static str,
    app: Option<&'static str>,
}

/// Who owned `ip` during the whole second `t`, or `Err` when a change fell in it.
fn truth(changes: &[Change], ip: &str, t: u64) -> Result<Option<&'static str>, ()> {
    let (from, to) = (t as f64, t as f64 + 1.0);
    let mut owner = None;
    for change in changes.iter().filter(|c| c.ip == ip) {
        if change.after < from {
            owner = change.app;
        } else if change.before < to {
            return Err(());
        }
    }
    Ok(owner)
}

#[test]
fn interface_churn_is_never_misattributed_and_stable_sides_are_attributed() {
    let moto = Moto::start();
    let ec2 = &moto.ec2;
    let (subnet, _vpc) = moto.block_on(async {
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.0.0.0/16")
            .send()
            .await
            .unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("10.0.1.0/24")
            .availability_zone("us-east-1a")
            .send()
            .await
            .unwrap();
        (
            subnet.subnet().unwrap().subnet_id().unwrap().to_string(),
            vpc,
        )
    });
    let create = |ip: &str, app: &str| -> String {
        let eni = moto
            .block_on(
                ec2.create_network_interface()
                    .subnet_id(&subnet)
                    .private_ip_address(ip)
                    .send(),
            )
            .unwrap();
        let id = eni
            .network_interface()
            .unwrap()
            .network_interface_id()
            .unwrap()
            .to_string();
        tag(&moto, &id, app);
        id
    };
    let mut changes: Vec<Change> = Vec::new();
    let (a, b, c) = (
        create("10.0.1.10", "alpha"),
        create("10.0.1.11", "beta"),
        create("10.0.1.12", "gamma"),
    );
    moto.block_on(
        ec2.assign_private_ip_addresses()
            .network_interface_id(&a)
            .private_ip_addresses("10.0.1.20")
            .send(),
    )
    .unwrap();
    // An instance tagged `app = zeta`: its interface has no tags of its own.
    moto.block_on(
        ec2.run_instances()
            .image_id("ami-12c6146b")
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .private_ip_address("10.0.1.30")
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("app")
                            .value("zeta")
                            .build(),
                    )
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let start = now();
    for (ip, app) in [
        ("10.0.1.30", "zeta"),
        ("10.0.1.10", "alpha"),
        ("10.0.1.20", "alpha"),
        ("10.0.1.11", "beta"),
        ("10.0.1.12", "gamma"),
    ] {
        changes.push(Change {
            before: 0.0,
            after: start,
            ip,
            app: Some(app),
        });
    }

    // A fleet: this poller publishes its changelog to a stream, which two hosts read
    // (started now, so they read it while the poller polls).
    let kinesis = KinesisLocal::start();
    kinesis.create_stream("ec2-changes", 2);
    let readers: Vec<(tempfile::TempDir, std::process::Child)> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let pipeline = format!(
                r#"[metadata.fleet]
type = "aws_kinesis_streams"
stream_name = "ec2-changes"
endpoint = "{}"
region = "us-east-1"
poll_interval_ms = 200

[sources.in]
type = "stdin"

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "fleet"

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
                kinesis.endpoint
            );
            let child = crate::start_run(dir.path(), &pipeline, KinesisLocal::aws_env);
            (dir, child)
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!(
            r#"[metadata.aws]
type = "aws_ec2"
regions = ["us-east-1"]
endpoint = "{}"
poll_interval_secs = 3
changelog_path = "changelog.jsonl"

[metadata.aws.changelog_stream]
stream_name = "ec2-changes"
endpoint = "{}"
region = "us-east-1"
snapshot_interval_secs = 10

[sources.in]
type = "stdin"

[transforms.t]
type = "wasm"
inputs = ["in"]
metadata = "aws"

[sinks.out]
type = "file"
inputs = ["t"]
path = "out.ndjson"
"#,
            moto.endpoint, kinesis.endpoint
        ),
    )
    .unwrap();
    let mut command = crate::bin();
    KinesisLocal::aws_env(&mut command);
    let mut child = command
        .current_dir(dir.path())
        .args(["run", "pipeline.toml"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let changelog = dir.path().join("changelog.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&changelog).is_ok_and(|t| t.contains("observed")) {
        assert!(Instant::now() < deadline, "the poller wrote no observation");
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_poll = now();
    let mut change = |ip: &'static str, app: Option<&'static str>, action: &dyn Fn()| {
        let before = now();
        action();
        changes.push(Change {
            before,
            after: now(),
            ip,
            app,
        });
    };
    let pause = || std::thread::sleep(Duration::from_millis(7000));
    pause();
    // Retagged: beta → delta.
    change("10.0.1.11", Some("delta"), &|| tag(&moto, &b, "delta"));
    pause();
    // Deleted.
    change("10.0.1.12", None, &|| {
        moto.block_on(
            ec2.delete_network_interface()
                .network_interface_id(&c)
                .send(),
        )
        .unwrap();
    });
    pause();
    // The address reused by a new interface of another application.
    change("10.0.1.12", Some("epsilon"), &|| {
        create("10.0.1.12", "epsilon");
    });
    pause();
    // A secondary address moved from alpha's interface to delta's.
    change("10.0.1.20", Some("delta"), &|| {
        moto.block_on(async {
            ec2.unassign_private_ip_addresses()
                .network_interface_id(&a)
                .private_ip_addresses("10.0.1.20")
                .send()
                .await
                .unwrap();
            ec2.assign_private_ip_addresses()
                .network_interface_id(&b)
                .private_ip_addresses("10.0.1.20")
                .send()
                .await
                .unwrap();
        })
    });
    pause();
    let end = now();

    // Flows of every address at every second from before the first poll to the end.
    let ips = [
        "10.0.1.10",
        "10.0.1.11",
        "10.0.1.12",
        "10.0.1.20",
        "10.0.1.30",
    ];
    let seconds = (start as u64 - 3)..(end as u64);
    let mut input = String::new();
    for t in seconds.clone() {
        for ip in ips {
            input.push_str(&format!(
                "2 123456789012 eni-x {ip} 10.99.0.1 1000 443 6 1 100 {t} {} ACCEPT OK\n",
                t + 1
            ));
        }
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let changelog = std::fs::read_to_string(&changelog).unwrap();
    let polls: Vec<u64> = changelog
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["op"] == "observed")
        .map(|e| e["ts"].as_u64().unwrap())
        .collect();
    assert!(polls.len() >= 8, "{changelog}");

    let rows = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    let (mut misattributed, mut stable, mut stable_attributed, mut total, mut unattributed) =
        (Vec::new(), 0, 0, 0, 0);
    let mut seen: BTreeMap<(String, u64), ()> = BTreeMap::new();
    for row in rows.lines() {
        let row: serde_json::Value = serde_json::from_str(row).unwrap();
        let ip = row["srcaddr"].as_str().unwrap().to_string();
        let t = row["start"].as_u64().unwrap();
        seen.insert((ip.clone(), t), ());
        let got = row["src_app"].as_str();
        total += 1;
        unattributed += usize::from(got.is_none());
        let Ok(want) = truth(&changes, &ip, t) else {
            // A change fell in this very second: either answer could be right, but
            // only an owner of that second.
            continue;
        };
        if got.is_some() && got != want {
            misattributed.push(format!("{ip} at {t}: got {got:?}, truth {want:?}"));
        }
        // Stable across the polls around it: the same owner (and no change) from the
        // last poll at or before `t` to the first at or after it.
        let (Some(&before), Some(&after)) = (
            polls.iter().rev().find(|&&p| p <= t),
            polls.iter().find(|&&p| p >= t),
        ) else {
            continue;
        };
        let unchanged = (before..=after).all(|s| truth(&changes, &ip, s) == Ok(want));
        if want.is_some() && unchanged {
            stable += 1;
            if got == want {
                stable_attributed += 1;
            } else {
                misattributed.push(format!("{ip} at {t}: stable {want:?} but got {got:?}"));
            }
        }
        assert_eq!(row["src_interface"].is_string(), got.is_some());
    }
    assert_eq!(
        seen.len(),
        ips.len() * seconds.clone().count(),
        "every flow came out"
    );
    assert!(
        misattributed.is_empty(),
        "{}\n{changelog}",
        misattributed.join("\n")
    );
    assert!(stable > 40, "stable sides {stable}");
    assert_eq!(stable, stable_attributed);
    // The fleet's hosts, reading the changelog stream, attribute every flow as the
    // poller's own table did, once they have read its last horizon: a probe of a stable
    // address at that second is attributed only then.
    let last_horizon = *polls.last().unwrap();
    for (host, (reader_dir, mut child)) in readers.into_iter().enumerate() {
        let mut stdin = child.stdin.take().unwrap();
        let out = reader_dir.path().join("out.ndjson");
        let deadline = Instant::now() + Duration::from_secs(60);
        for sent in 1.. {
            writeln!(
                stdin,
                "2 123456789012 eni-x 10.0.1.30 10.99.0.1 9 9 6 1 100 {last_horizon} {} ACCEPT OK",
                last_horizon + 1
            )
            .unwrap();
            stdin.flush().unwrap();
            let probe = crate::rows_after(&out, sent).pop().unwrap();
            if probe["src_app"] == "zeta" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {host} never read the last horizon"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let read = std::fs::read_to_string(&out).unwrap();
        let flows: String = read
            .lines()
            .filter(|l| !l.contains("\"srcport\":9,"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            apps(&flows),
            apps(&rows),
            "host {host} reading the changelog stream"
        );
    }
    // Hosts reading the poller's changelog file attribute every flow the same way too.
    for host in 0..2 {
        let changelog_file = dir.path().join("changelog.jsonl");
        let (code, read, stderr) =
            crate::cli::enrich(&["--metadata", changelog_file.to_str().unwrap()], &input);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            apps(&read),
            apps(&rows),
            "host {host} reading the changelog"
        );
    }
    eprintln!(
        "aws_ec2 churn: {total} sides, {unattributed} unattributed ({:.1} %), {stable} stable ones all attributed; first poll at {first_poll:.1}",
        100.0 * unattributed as f64 / total as f64
    );
    local_sides_by_interface(&changes, &changelog_file(&dir), &a, &b, seconds.clone());
}

/// Each flow's source owner (`src_app`), by source address and start.
fn apps(text: &str) -> BTreeMap<(String, u64), Option<String>> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| {
            let key = (
                r["srcaddr"].as_str().unwrap().to_string(),
                r["start"].as_u64().unwrap(),
            );
            (key, r["src_app"].as_str().map(str::to_string))
        })
        .collect()
}

fn changelog_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("changelog.jsonl")
}

/// Records with `flow-direction`, captured on the interface that held the address: the
/// secondary address moved from `a` (alpha) to `b` (delta) is attributed by its
/// interface also where its address's timeline is unknown (between the polls around the
/// move), and a record whose address the table gives another owner than its interface
/// is left unattributed.
fn local_sides_by_interface(
    changes: &[Change],
    changelog: &std::path::Path,
    a: &str,
    b: &str,
    seconds: std::ops::Range<u64>,
) {
    let moved = changes.last().unwrap();
    assert_eq!((moved.ip, moved.app), ("10.0.1.20", Some("delta")));
    let mut input = String::from(
        "version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status flow-direction\n",
    );
    let mut expected = Vec::new();
    for t in seconds {
        let (from, to) = (t as f64, t as f64 + 1.0);
        let interface = if to < moved.before {
            a
        } else if from > moved.after {
            b
        } else {
            continue;
        };
        let app = if interface == a { "alpha" } else { "delta" };
        input.push_str(&format!(
            "2 {interface} 10.0.1.20 10.99.0.1 1000 443 6 1 100 {t} {} ACCEPT OK egress\n",
            t + 1
        ));
        input.push_str(&format!(
            "2 {interface} 10.99.0.1 10.0.1.20 443 1000 6 1 100 {t} {} ACCEPT OK ingress\n",
            t + 1
        ));
        expected.push((t, app));
    }
    // Captured on `a` just before the move, when `a` was alpha's and 10.0.1.11 had
    // been delta's since its retag: the two disagree.
    let t = moved.before as u64 - 2;
    input.push_str(&format!(
        "2 {a} 10.0.1.11 10.99.0.1 1000 443 6 1 100 {t} {} ACCEPT OK egress\n",
        t + 1
    ));
    let (code, out, stderr) =
        crate::cli::enrich(&["--metadata", changelog.to_str().unwrap()], &input);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2 * expected.len() + 1);
    // The same records without `flow-direction`: attributed by address alone.
    let plain: String = input
        .lines()
        .map(|l| format!("{}\n", l.rsplit_once(' ').unwrap().0))
        .collect();
    let (code, address_only, stderr) =
        crate::cli::enrich(&["--metadata", changelog.to_str().unwrap()], &plain);
    assert_eq!(code, 0, "{stderr}");
    let address_rows: Vec<serde_json::Value> = address_only
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (mut attributed, mut gained) = (0, 0);
    for (i, &(t, app)) in expected.iter().enumerate() {
        for (row, side, by_address) in [
            (&rows[2 * i], "src_app", &address_rows[2 * i]),
            (&rows[2 * i + 1], "dst_app", &address_rows[2 * i + 1]),
        ] {
            assert_eq!(row["start"], t);
            let got = row[side].as_str();
            assert!(got.is_none() || got == Some(app), "10.0.1.20 at {t}: {row}");
            attributed += usize::from(got.is_some());
            gained += usize::from(got.is_some() && by_address[side].is_null());
        }
    }
    assert!(
        gained >= 2,
        "the interface attributed nothing the address lookup left open"
    );
    let liar = rows.last().unwrap();
    assert!(liar["src_app"].is_null(), "{liar}");
    assert_eq!(
        address_rows.last().unwrap()["src_app"],
        "delta",
        "the address alone"
    );
    eprintln!(
        "aws_ec2 local sides: {attributed} of {} attributed, {gained} of them only by their interface",
        2 * expected.len()
    );
}

fn tag(moto: &Moto, id: &str, app: &str) {
    moto.block_on(
        moto.ec2
            .create_tags()
            .resources(id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("app")
                    .value(app)
                    .build(),
            )
            .send(),
    )
    .unwrap();
}
