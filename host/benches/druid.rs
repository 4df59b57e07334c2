//! The `druid` sink's rollup: how many input flows become one row, and how fast.
//!
//! `cargo bench -p flowenrich --bench druid` (options: `--flows N`, default 1,000,000;
//! `--apps N`, default 50). Generates enriched flows (JSON, as the component emits them)
//! over one hour between `--apps` applications in 3 regions and 6 zones, rolls them up
//! per minute on the sink's default dimensions, and writes the rows to NDJSON files per
//! bucket. Prints flows/s into the rollup, rows/s written, and the reduction factor.
//! With `--kinesis N` it also delivers the first N rows to a stream of a real local
//! Kinesis (npm `kinesis-local`, started here on 127.0.0.1) through the sink's writer
//! and prints rows/s delivered.

use flowenrich::sinks::aws_kinesis::{KinesisSinkSpec, KinesisWriter, PartitionKey};
use flowenrich::sinks::druid::{DEFAULT_DIMENSIONS, Rollup, write_files};
use std::time::Instant;
use support::Rng;

mod support;

// Shared with the integration tests, which use other parts of it.
#[allow(dead_code)]
use flowenrich_test_support::kinesis_local;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flows = support::option(&args, "--flows").unwrap_or(1_000_000);
    let apps = support::option(&args, "--apps").unwrap_or(50) as u64;
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let mut rng = Rng(5);
    let t0 = 1_700_000_000u64;
    let lines: Vec<String> = (0..flows)
        .map(|_| {
            let (src, dst) = (rng.below(apps), rng.below(apps));
            let start = t0 + rng.below(3600);
            format!(
                r#"{{"version":2,"account_id":"123456789012","interface_id":"eni-1","srcaddr":"10.0.0.1","dstaddr":"10.0.0.2","srcport":{},"dstport":443,"protocol":6,"packets":{},"bytes":{},"start":{start},"end":{},"action":"{}","log_status":"OK","src_app":"app{src}","src_cluster":"app{src}-prod","src_account":"1234","src_region":"{}","src_zone":"z{}","dst_app":"app{dst}","dst_cluster":"app{dst}-prod","dst_account":"1234","dst_region":"{}","dst_zone":"z{}"}}"#,
                32768 + rng.below(28000),
                1 + rng.below(100),
                40 + rng.below(100_000),
                start + 60,
                if rng.below(20) == 0 { "REJECT" } else { "ACCEPT" },
                regions[(src % 3) as usize],
                src % 6,
                regions[(dst % 3) as usize],
                dst % 6,
            )
        })
        .collect();
    let dimensions: Vec<String> = DEFAULT_DIMENSIONS.iter().map(|d| d.to_string()).collect();
    let mut rollup = Rollup::new(&dimensions, 60);
    let started = Instant::now();
    for line in &lines {
        rollup.add(line).unwrap();
    }
    let grouped = started.elapsed().as_secs_f64();
    let per_row = rollup.row_bytes() as f64 / rollup.len() as f64;
    let rows = rollup.drain();
    let rolled = started.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_files(dir.path(), &rows).unwrap();
    let written = started.elapsed().as_secs_f64();
    println!(
        "host::sinks::druid rollup: {flows} flows over 1 hour between {apps} apps, per minute on {} dimensions",
        dimensions.len()
    );
    println!(
        "rollup: {:.0} flows/s (parse + group, one thread), {:.0} flows/s with the drain into rows; {} rows = {:.1} flows per row, {per_row:.0} bytes per row held; files: {:.0} rows/s",
        flows as f64 / grouped,
        flows as f64 / rolled,
        rows.len(),
        flows as f64 / rows.len() as f64,
        rows.len() as f64 / written
    );
    if let Some(count) = support::option(&args, "--kinesis") {
        let kinesis = kinesis_local::KinesisLocal::start();
        kinesis.create_stream("rollups", 4);
        // The writer reads credentials and region from the environment, as a pipeline does.
        // SAFETY: set before any other thread of this process reads the environment.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", kinesis_local::FAKE_KEY_ID);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", kinesis_local::FAKE_SECRET);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        let spec = KinesisSinkSpec {
            stream: flowenrich::aws::kinesis::StreamConfig {
                stream_name: Some("rollups".into()),
                stream_arn: None,
                endpoint: Some(kinesis.endpoint.clone()),
                region: Some("us-east-1".into()),
            },
            partition_key: PartitionKey::Spread,
        };
        let writer = KinesisWriter::new("druid", &spec);
        let text: String = rows.rows().take(count).map(|(_, r)| r).collect();
        let metrics = flowenrich::metrics::ComponentMetrics::default();
        let started = Instant::now();
        let put = writer
            .write(&text, &metrics, &flowenrich::lifecycle::Lifecycle::new())
            .expect("rows delivered");
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "kinesis: {put} rows delivered (PutRecords accepted them) at {:.0} rows/s = {:.0} flows/s at this reduction",
            put as f64 / seconds,
            put as f64 / seconds * flows as f64 / rows.len() as f64
        );
    }
}
