//! The pipeline file's checks: every error names its key.

use super::*;
use crate::sources::aws_kinesis::leases::LeaseSpec;

fn parse(text: &str) -> Result<Pipeline, ConfigError> {
    Pipeline::parse(Path::new("/etc/p/pipeline.toml"), text)
}

#[test]
fn delivery_warnings_name_what_is_not_exactly_once() {
    let pipeline = |leases: &str, holdback: u64| {
        parse(&format!(
            r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"

[sources.flows]
type = "aws_kinesis_streams"
stream_name = "f"
region = "us-east-1"
{leases}

[transforms.t]
type = "wasm"
inputs = ["flows"]
metadata = "apps"
holdback_secs = {holdback}

[sinks.d]
type = "druid"
inputs = ["t"]
stream_name = "rollups"
region = "us-east-1"
"#
        ))
        .unwrap()
        .delivery_warnings()
    };
    assert!(pipeline("", 0).is_empty());
    // A fleet is exact too: publications go to the shards' lease rows.
    assert!(pipeline("[sources.flows.leases]\ntable_name = \"t\"", 0).is_empty());
    // Holdback is exact: the transform sends batches whole (whole-batch mode).
    assert!(pipeline("", 60).is_empty());
}

const GOOD: &str = r#"
[metadata.apps]
type = "file"
path = "apps.jsonl"

[sources.flows]
type = "file"
path = "flows/*.log.gz"

[transforms.enrich]
type = "wasm"
inputs = ["flows"]
metadata = "apps"

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "/tmp/out.ndjson"

[sinks.rejects]
type = "stdout"
inputs = ["enrich.dead_letter"]
"#;

#[test]
fn good_pipeline_resolves_relative_paths() {
    let p = parse(GOOD).unwrap();
    assert_eq!(
        p.config.metadata["apps"].kind().table().files(),
        vec![PathBuf::from("/etc/p/apps.jsonl")]
    );
    let SourceConfig::File(file) = &p.config.sources["flows"] else {
        panic!()
    };
    assert_eq!(file.path, "/etc/p/flows/*.log.gz");
    assert_eq!(file.lines.batch_lines, 1000);
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            GOOD.replace("inputs = [\"flows\"]", "inputs = [\"nope\"]"),
            "transforms.enrich.inputs",
        ),
        (
            GOOD.replace("metadata = \"apps\"", "metadata = \"other\""),
            "transforms.enrich.metadata",
        ),
        (
            GOOD.replace("metadata = \"apps\"", "holdback_secs = 60"),
            "transforms.enrich.holdback_secs",
        ),
        (
            GOOD.replace(
                "type = \"file\"\ninputs = [\"enrich\"]\npath = \"/tmp/out.ndjson\"",
                "type = \"aws_kinesis_streams\"\ninputs = [\"enrich\"]",
            ),
            "sinks.out.stream_name",
        ),
        (
            GOOD.replace(
                "path = \"apps.jsonl\"",
                "path = \"apps.jsonl\"\nstream_name = \"x\"",
            ),
            "metadata.apps.stream_name",
        ),
        (
            GOOD.replace(
                "type = \"file\"\npath = \"apps.jsonl\"",
                "type = \"aws_kinesis_streams\"",
            ),
            "metadata.apps.stream_name",
        ),
        (
            GOOD.replace(
                "type = \"file\"\npath = \"apps.jsonl\"",
                "type = \"aws_kinesis_streams\"\nstream_name = \"a\"\nstream_arn = \"b\"",
            ),
            "metadata.apps.stream_name",
        ),
        (
            GOOD.replace("enrich.dead_letter", "enrich.errors"),
            "sinks.rejects.inputs",
        ),
        (
            GOOD.replace("type = \"stdout\"", "type = \"stdout\"\ncolour = 1"),
            "colour",
        ),
        (
            GOOD.replace("type = \"stdout\"", "type = \"kafka\""),
            "kafka",
        ),
        (
            GOOD.replace("[sinks.rejects]", "[sinks.enrich]"),
            "sinks.enrich",
        ),
    ];
    for (text, key) in cases {
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains(key), "{message} should name {key}");
        assert!(message.contains("/etc/p/pipeline.toml"), "{message}");
    }
}

fn lease_spec(pipeline: &Pipeline) -> LeaseSpec {
    let SourceConfig::AwsKinesisStreams(source) = &pipeline.config.sources["flows"] else {
        panic!("a kinesis source")
    };
    source.leases.as_ref().expect("leases").spec()
}

#[test]
fn lease_tables_are_checked() {
    let source = |extra: &str, leases: &str| {
        GOOD.replace(
            "type = \"file\"\npath = \"flows/*.log.gz\"",
            &format!(
                "type = \"aws_kinesis_streams\"\nstream_name = \"f\"\n{extra}\n[sources.flows.leases]\n{leases}"
            ),
        )
    };
    let good = parse(&source("", "table_name = \"t\"\nworker_id = \"w1\"")).unwrap();
    let leases = lease_spec(&good);
    assert_eq!((leases.table.as_str(), leases.worker.as_str()), ("t", "w1"));
    assert_eq!(leases.lease_duration, std::time::Duration::from_secs(10));
    assert_eq!(leases.renew_interval(), leases.lease_duration / 3);
    let defaulted = parse(&source("", "table_name = \"t\"")).unwrap();
    let worker = lease_spec(&defaulted).worker;
    assert!(
        worker.contains(&format!("-{}-", std::process::id())),
        "{worker}"
    );
    for (text, key) in [
        (
            source("checkpoints = \"c.json\"", "table_name = \"t\""),
            "sources.flows.checkpoints",
        ),
        (
            source("", "table_name = \" \""),
            "sources.flows.leases.table_name",
        ),
        (
            source("", "table_name = \"t\"\nworker_id = \"\""),
            "sources.flows.leases.worker_id",
        ),
        (
            source("", "table_name = \"t\"\nlease_duration_ms = 100"),
            "sources.flows.leases.lease_duration_ms",
        ),
        (
            source("", "table_name = \"t\"\nscan_interval_ms = 10000"),
            "sources.flows.leases.scan_interval_ms",
        ),
        (
            source("", "table_name = \"t\"\ncheckpoint_interval_ms = 0"),
            "sources.flows.leases.checkpoint_interval_ms",
        ),
        (source("", "table_name = \"t\"\nlease_ms = 5"), "lease_ms"),
        (source("", "worker_id = \"w\""), "table_name"),
    ] {
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains(key), "{message} should name {key}");
    }
}

#[test]
fn druid_sinks_are_checked() {
    let druid = |source: &str, sink: &str| {
        format!(
            "[sources.s]\n{source}\n[transforms.t]\ntype = \"wasm\"\ninputs = [\"s\"]\n[sinks.d]\ntype = \"druid\"\ninputs = [\"t\"]\n{sink}\n"
        )
    };
    let stdin = "type = \"stdin\"";
    let kinesis = "type = \"aws_kinesis_streams\"\nstream_name = \"f\"";
    assert!(parse(&druid(stdin, "path = \"d\"")).is_ok());
    assert!(parse(&druid(stdin, "path = \"d\"\nworkers = 3")).is_ok());
    assert!(parse(&druid(kinesis, "path = \"d\"\nappend = true")).is_ok());
    assert!(parse(&druid(kinesis, "stream_name = \"r\"")).is_ok());
    for (sink, source, key, why) in [
        ("path = \"d\"", kinesis, "sinks.d.append", "checkpoints"),
        ("", stdin, "sinks.d.stream_name", "exactly one"),
        (
            "path = \"d\"\nstream_name = \"r\"",
            stdin,
            "sinks.d.path",
            "not both",
        ),
        (
            "path = \"d\"\noverlord_url = \"http://o\"",
            stdin,
            "sinks.d.overlord_url",
            "stream",
        ),
        (
            "path = \"d\"\nworkers = 0",
            stdin,
            "sinks.d.workers",
            "at least 1",
        ),
        (
            "path = \"d\"\nworkers = 257",
            stdin,
            "sinks.d.workers",
            "at most 256",
        ),
        (
            "path = \"d\"\ndimensions = [\"a\", \"a\"]",
            stdin,
            "sinks.d.dimensions",
            "twice",
        ),
        (
            "path = \"d\"\ndimensions = [\"bytes\"]",
            stdin,
            "sinks.d.dimensions",
            "column",
        ),
        (
            "path = \"d\"\ndimensions = []",
            stdin,
            "sinks.d.dimensions",
            "no dimension",
        ),
        (
            "path = \"d\"\ngranularity_secs = 0",
            stdin,
            "sinks.d.granularity_secs",
            "must divide an hour",
        ),
        (
            "path = \"d\"\ngranularity_secs = 7000",
            stdin,
            "sinks.d.granularity_secs",
            "or a day",
        ),
        (
            "path = \"d\"\ndimensions = [\"__time\"]",
            stdin,
            "sinks.d.dimensions",
            "Druid reserves",
        ),
        (
            "path = \"d\"\ndimensions = [\"sink_rows\"]",
            stdin,
            "sinks.d.dimensions",
            "Druid reserves",
        ),
    ] {
        let message = parse(&druid(source, sink)).unwrap_err().to_string();
        assert!(
            message.contains(key) && message.contains(why),
            "{sink}: {message}"
        );
    }
}

#[test]
fn cycles_are_refused() {
    let text = r#"
[sources.s]
type = "stdin"
[transforms.a]
type = "wasm"
inputs = ["s", "b"]
[transforms.b]
type = "wasm"
inputs = ["a"]
[sinks.o]
type = "stdout"
inputs = ["b"]
"#;
    assert!(parse(text).unwrap_err().to_string().contains("cycle"));
}
