//! The command-line contract (DESIGN.md contract 1) through the real binary.

use crate::{bin, repo};
use std::io::Write;
use std::process::Stdio;

/// Runs `flowenrich enrich ARGS` on `stdin`: its exit code, stdout and stderr.
pub fn enrich(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = bin()
        .arg("enrich")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn enrich_writes_json_to_stdout_and_each_rejected_line_to_stderr() {
    let metadata = repo().join("tests/fixtures/v2_default/metadata.jsonl");
    let input = "2 123456789012 eni-1 10.0.1.10 10.1.1.10 1 2 6 3 4 1700000100 1700000160 ACCEPT OK\n\
                 oops\n\
                 2 123456789012 eni-1 10.0.1.10 10.1.1.10 1 2 6 3 4 1700000100 1700000160 ACCEPT OK\n";
    let (code, stdout, stderr) = enrich(&["--metadata", metadata.to_str().unwrap()], input);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["src_app"], "api");
    assert_eq!(rows[0]["dst_region"], "us-west-2");
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(errors[0]["line"], "oops");
    assert!(errors[0]["error"].as_str().unwrap().contains("field count"));
}

#[test]
fn transit_gateway_records_are_parsed_and_attributed_on_both_addresses() {
    let metadata = repo().join("tests/fixtures/v2_default/metadata.jsonl");
    // AWS's default Transit Gateway format (`tgw`): 36 fields in table order.
    let line = "6 TransitGatewayAttachment 123456789012 tgw-0a1b tgw-attach-1 123456789012 210987654321 vpc-1 vpc-2 subnet-1 subnet-2 eni-1 eni-2 use1-az1 use1-az2 tgw-attach-2 10.0.1.10 10.1.1.10 443 50000 6 10 4000 1700000100 1700000160 OK IPv4 0 1 2 3 19 us-east-1 egress - -";
    let metadata = metadata.to_str().unwrap();
    let (code, stdout, stderr) = enrich(&["--metadata", metadata, "--format", "tgw"], line);
    assert_eq!(code, 0, "{stderr}");
    let row: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(row["resource_type"], "TransitGatewayAttachment");
    assert_eq!(row["tgw_dst_vpc_account_id"], "210987654321");
    assert_eq!(row["packets_lost_ttl_expired"], 3);
    assert_eq!(row["tcp_flags"], 19);
    assert!(row["pkt_src_aws_service"].is_null());
    assert_eq!(
        (&row["src_app"], &row["dst_app"]),
        (&"api".into(), &"db".into())
    );
    // The same from an S3 header line naming the fields.
    let header = "version resource-type account-id tgw-id tgw-attachment-id tgw-src-vpc-account-id tgw-dst-vpc-account-id tgw-src-vpc-id tgw-dst-vpc-id tgw-src-subnet-id tgw-dst-subnet-id tgw-src-eni tgw-dst-eni tgw-src-az-id tgw-dst-az-id tgw-pair-attachment-id srcaddr dstaddr srcport dstport protocol packets bytes start end log-status type packets-lost-no-route packets-lost-blackhole packets-lost-mtu-exceeded packets-lost-ttl-expired tcp-flags region flow-direction pkt-src-aws-service pkt-dst-aws-service";
    let (code, again, stderr) = enrich(&["--metadata", metadata], &format!("{header}\n{line}\n"));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again, stdout);
    // An S3 header naming a field nobody documents: none of the object is read.
    let (code, out, stderr) = enrich(
        &["--metadata", metadata],
        &format!("{header} tgw-colour\n{line} red\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(out, "");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        stderr.contains("S3 header line: unknown flow-log field `tgw-colour`"),
        "{stderr}"
    );
}

#[test]
fn enrich_reports_bad_metadata_lines_as_json_on_stderr_and_uses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("m.jsonl");
    std::fs::write(
        &metadata,
        b"{\"ts\": 0, \"op\": \"assign\", \"ip\": \"10.0.0.1\", \"attrs\": {\"app\": \"a\"}}\nnot json\n\xff\xfe\n",
    )
    .unwrap();
    let (code, stdout, stderr) = enrich(
        &["--metadata", metadata.to_str().unwrap()],
        "2 1 e 10.0.0.1 10.0.0.2 1 2 6 1 1 5 6 ACCEPT OK\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(r#""src_app":"a""#), "{stdout}");
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("line 2: invalid JSON")
    );
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("line 3: line is not valid UTF-8")
    );
}

#[test]
fn enrich_accepts_aws_format_syntax_and_rejects_unknown_fields() {
    let (code, stdout, _) = enrich(&["--format", "${srcaddr} ${bytes}"], "10.0.0.1 77\n");
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), r#"{"srcaddr":"10.0.0.1","bytes":77}"#);
    let (code, stdout, stderr) = enrich(&["--format", "srcaddr colour"], "10.0.0.1 red\n");
    assert_ne!(code, 0);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("unknown flow-log field `colour`"),
        "{stderr}"
    );
}

#[test]
fn enrich_refuses_a_file_that_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"not wasm").unwrap();
    let (code, _, stderr) = enrich(&["--component", fake.to_str().unwrap()], "");
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot compile component"), "{stderr}");
}

#[test]
fn an_error_says_each_cause_once() {
    // The metadata error puts the I/O error in its message; a pipeline's build error
    // puts the component's error in its own.
    let (code, _, stderr) = enrich(&["--metadata", "/nonexistent/m.jsonl"], "");
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: cannot read metadata file /nonexistent/m.jsonl: "),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.log"), "").unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        "[sources.f]\ntype = \"file\"\npath = \"x.log\"\n\
         [transforms.e]\ntype = \"wasm\"\ninputs = [\"f\"]\ncomponent = \"/nonexistent/c.wasm\"\n\
         [sinks.o]\ntype = \"stdout\"\ninputs = [\"e\"]\n",
    )
    .unwrap();
    let out = bin().arg("run").arg(&config).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr
            .matches("cannot read component /nonexistent/c.wasm")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
}

fn validate(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).unwrap();
    let out = bin().arg("validate").arg(&path).output().unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), all)
}

fn pipeline(extra: &str) -> String {
    let data = repo().join("pipelines/data");
    format!(
        r#"
[metadata.apps]
type = "file"
path = "{data}/apps.jsonl"

[sources.flows]
type = "file"
path = "{data}/flows"

[transforms.enrich]
type = "wasm"
inputs = ["flows"]
metadata = "apps"
{extra}

[sinks.out]
type = "stdout"
inputs = ["enrich"]
"#,
        data = data.display()
    )
}

#[test]
fn validate_accepts_the_shipped_pipelines() {
    let shipped: Vec<_> = std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(!shipped.is_empty());
    for path in shipped {
        let out = bin().arg("validate").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, out) = validate(&pipeline(""));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn validate_names_the_offending_key_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let empty_component = dir.path().join("empty.wasm");
    // A valid but empty component: it exports nothing, so it fails the type check.
    std::fs::write(&empty_component, b"\0asm\x0d\x00\x01\x00").unwrap();
    let cases = [
        (
            pipeline("format = \"srcaddr colour\""),
            "transforms.enrich.format",
        ),
        (
            pipeline("batch_timeout_ms = 0"),
            "transforms.enrich.batch_timeout_ms",
        ),
        (pipeline("colour = \"red\""), "unknown field `colour`"),
        (
            pipeline("component = \"/nonexistent/x.wasm\""),
            "transforms.enrich.component",
        ),
        (
            pipeline(&format!("component = \"{}\"", empty_component.display())),
            "does not implement flowenrich:enrich/enricher@0.4.0",
        ),
        (
            // A correct component of the previous WIT version.
            pipeline(&format!(
                "component = \"{}\"",
                flowenrich_test_support::OLD_API_COMPONENT
            )),
            "does not implement flowenrich:enrich/enricher@0.4.0",
        ),
        (
            pipeline("")
                .replace("\"{data}/flows\"", "x")
                .replace("/flows\"", "/no-such-dir\""),
            "sources.flows.path",
        ),
        (
            pipeline("").replace("inputs = [\"enrich\"]", "inputs = [\"enrich.dropped\"]"),
            "sinks.out.inputs",
        ),
        (
            pipeline("")
                + "\n[sinks.page]\ntype = \"report\"\ninputs = [\"enrich\"]\nformat = \"html\"\n",
            "sinks.page.path",
        ),
        (
            pipeline("")
                + "\n[sinks.page]\ntype = \"report\"\ninputs = [\"enrich\"]\nformat = \"html\"\npath = \"r.html\"\nlimit = 1\n",
            "sinks.page.limit",
        ),
        (
            pipeline("")
                + "\n[sinks.page]\ntype = \"report\"\ninputs = [\"enrich\"]\nformat = \"pdf\"\n",
            "unknown variant `pdf`",
        ),
        (
            pipeline("").replace("apps.jsonl", "missing.jsonl"),
            "metadata.apps.path",
        ),
        (
            pipeline("").replace(
                "[metadata.apps]\n",
                "[metadata.apps]\nlocal_owner_fields = { app = \"srcaddr\" }\n",
            ),
            "metadata.apps.local_owner_fields.app",
        ),
    ];
    // The metadata table made an `aws_ec2` one with `settings`.
    let ec2 = |settings: &str| {
        let text = pipeline("");
        let start = text.find("[metadata.apps]").unwrap();
        let end = start + text[start..].find("\n\n").unwrap();
        format!(
            "{}[metadata.apps]\ntype = \"aws_ec2\"\n{settings}{}",
            &text[..start],
            &text[end..]
        )
    };
    let ec2_cases = [
        ("regions = []", "metadata.apps.regions"),
        (
            "regions = [\"us-east-1\"]\npoll_interval_secs = 0",
            "metadata.apps.poll_interval_secs",
        ),
        (
            "regions = [\"us-east-1\"]\ntags = { region = [\"r\"] }",
            "`region` is an attribute AWS gives",
        ),
        (
            "regions = [\"us-east-1\"]\nrole_arns = [\"arn:aws:iam::1:role/x\"]",
            "metadata.apps.role_arns",
        ),
        (
            "regions = [\"us-east-1\"]\ncolour = 1",
            "unknown field `colour`",
        ),
        (
            "regions = [\"us-east-1\"]\nchangelog_stream = { region = \"us-east-1\" }",
            "metadata.apps.changelog_stream.stream_name",
        ),
        (
            "regions = [\"us-east-1\"]\nchangelog_stream = { stream_name = \"s\", snapshot_interval_secs = 0 }",
            "metadata.apps.changelog_stream.snapshot_interval_secs",
        ),
        (
            "regions = [\"us-east-1\"]\nchangelog_stream = { stream_name = \"s\", shards = 2 }",
            "unknown field `shards`",
        ),
    ];
    // The file source made an `aws_s3` one with `settings`.
    let s3 = |settings: &str| {
        let text = pipeline("");
        let start = text.find("[sources.flows]").unwrap();
        let end = start + text[start..].find("\n\n").unwrap();
        format!(
            "{}[sources.flows]\ntype = \"aws_s3\"\n{settings}{}",
            &text[..start],
            &text[end..]
        )
    };
    let s3_cases = [
        ("sqs = { queue_url = \" \" }", "sources.flows.sqs.queue_url"),
        (
            "sqs = { queue_url = \"q\", poll_secs = 21 }",
            "sources.flows.sqs.poll_secs",
        ),
        (
            "sqs = { queue_url = \"q\", visibility_timeout_secs = 0 }",
            "sources.flows.sqs.visibility_timeout_secs",
        ),
        (
            "sqs = { queue_url = \"q\", colour = 1 }",
            "unknown field `colour`",
        ),
        ("region = \"us-east-1\"", "needs exactly one of `sqs`"),
        (
            "backfill = { bucket = \"b\", start_time = \"yesterday\" }",
            "sources.flows.backfill.start_time",
        ),
        (
            "backfill = { bucket = \"b\" }\nsqs = { queue_url = \"q\" }",
            "needs exactly one of `sqs`",
        ),
        (
            "sqs = { queue_url = \"q\" }\nleases = { table_name = \" \" }",
            "sources.flows.leases.table_name",
        ),
        (
            "sqs = { queue_url = \"q\" }\nleases = { table_name = \"t\", lease_duration_ms = 100 }",
            "sources.flows.leases.lease_duration_ms",
        ),
    ];
    let ec2_cases = ec2_cases.map(|(settings, needle)| (ec2(settings), needle));
    let s3_cases = s3_cases.map(|(settings, needle)| (s3(settings), needle));
    let cases = cases.into_iter().chain(ec2_cases).chain(s3_cases);
    for (text, needle) in cases {
        let (code, out) = validate(&text);
        assert_ne!(code, 0, "should fail naming {needle}");
        assert!(out.contains(needle), "expected `{needle}` in: {out}");
    }
}

#[test]
fn test_subcommand_runs_the_fixtures() {
    let out = bin().arg("test").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn observations_bound_what_a_changelog_proves() {
    // Contract 5 through the binary: a poller's changelog (owner a seen at 100 and 130,
    // b at 160 and 190) beside a network that covers the address.
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("m.jsonl");
    std::fs::write(
        &metadata,
        r#"{"ts": 0, "op": "assign", "cidr": "10.0.0.0/8", "attrs": {"app": "vpc"}}
{"ts": 100, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "a"}, "source": "aws_ec2/us-east-1"}
{"ts": 100, "op": "observed", "source": "aws_ec2/us-east-1"}
{"ts": 130, "op": "observed", "source": "aws_ec2/us-east-1"}
{"ts": 131, "op": "unknown", "ip": "10.0.0.1", "source": "aws_ec2/us-east-1"}
{"ts": 160, "op": "assign", "ip": "10.0.0.1", "attrs": {"app": "b"}, "source": "aws_ec2/us-east-1"}
{"ts": 160, "op": "observed", "source": "aws_ec2/us-east-1"}
{"ts": 190, "op": "observed", "source": "aws_ec2/us-east-1"}
"#,
    )
    .unwrap();
    let starts = [99, 100, 130, 131, 159, 160, 190, 191, 500];
    let input: String = starts
        .iter()
        .map(|t| {
            format!(
                "2 1 e 10.0.0.1 10.0.0.9 1 2 6 1 1 {t} {} ACCEPT OK\n",
                t + 1
            )
        })
        .collect();
    let (code, stdout, stderr) = enrich(&["--metadata", metadata.to_str().unwrap()], &input);
    assert_eq!(code, 0, "{stderr}");
    let apps: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["src_app"].clone())
        .collect();
    let want = ["vpc", "a", "a", "", "", "b", "b", "", ""].map(|a| match a {
        "" => serde_json::Value::Null,
        app => app.into(),
    });
    assert_eq!(apps, want, "{stdout}");
    // The other side's address has no events of the poller: the network's.
    assert!(
        stdout.lines().all(|l| l.contains(r#""dst_app":"vpc""#)),
        "{stdout}"
    );
}
