//! S3 objects, as AWS delivers them: gzip text against Parquet (Gzip pages), decoded into
//! the lines the component reads, and then through the component, in one run.
//!
//! `cargo bench --bench s3_objects [-- --lines N --row-group N]`

mod support;

use flowenrich::runtime::{Runtime, RuntimeOptions, WorkerLimits};
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;
use support::Rng;

/// Default-format lines between random private and public addresses.
fn flows(n: usize) -> String {
    let mut rng = Rng(0x5eed);
    let mut text = String::with_capacity(n * 110);
    for i in 0..n {
        let a = rng.below(1 << 16);
        let b = rng.below(1 << 24);
        text.push_str(&format!(
            "2 123456789012 eni-{:08x} 10.{}.{}.{} 52.{}.{}.{} {} 443 6 {} {} {} {} ACCEPT OK\n",
            rng.below(1 << 20),
            a >> 8,
            a & 255,
            i % 250 + 1,
            b >> 16,
            (b >> 8) & 255,
            b & 255,
            1024 + rng.below(60_000),
            1 + rng.below(100),
            40 + rng.below(100_000),
            1_700_000_000 + i as u64 / 10_000,
            1_700_000_060 + i as u64 / 10_000,
        ));
    }
    text
}

/// Seconds `work` takes, best of three.
fn best(mut work: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = support::option(&args, "--lines").unwrap_or(500_000);
    let row_group = support::option(&args, "--row-group").unwrap_or(100_000);
    let text = flows(n);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(text.as_bytes()).unwrap();
    let gzip = gzip.finish().unwrap();
    let parquet = bytes::Bytes::from(flowenrich_test_support::parquet_logs::v2_parquet(
        &text, row_group,
    ));

    // Decoding: the object into lines (what the source hands on), counted.
    let gzip_secs = best(|| {
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(&gzip[..]));
        let lines = reader.split(b'\n').count();
        assert_eq!(lines, n);
    });
    let parquet_secs = best(|| {
        let mut lines = 0;
        flowenrich::sources::aws_s3::parquet::lines(parquet.clone(), |_| {
            lines += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(lines, n + 1);
    });

    // Through the component: batches of 1,000 lines of each decoding.
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let component = runtime.load(flowenrich::embedded::COMPONENT).unwrap();
    let mut worker = runtime
        .worker(&component, &WorkerLimits::default())
        .unwrap();
    let table = Arc::new(flowenrich::metadata::Table::default());
    let mut parquet_text = String::new();
    flowenrich::sources::aws_s3::parquet::lines(parquet.clone(), |line| {
        parquet_text.push_str(std::str::from_utf8(line).unwrap());
        parquet_text.push('\n');
        ControlFlow::Continue(())
    })
    .unwrap();
    let mut component = |text: &str| {
        best(|| {
            let mut emitted = 0;
            let mut format = None;
            let mut start = true;
            let mut rest = text;
            while !rest.is_empty() {
                let cut = rest
                    .match_indices('\n')
                    .nth(999)
                    .map_or(rest.len(), |(at, _)| at + 1);
                let result = worker
                    .process(format.as_deref(), &rest[..cut], start, &table)
                    .unwrap();
                emitted += result.emitted as usize;
                format = Some(result.format);
                start = false;
                rest = &rest[cut..];
            }
            assert_eq!(emitted, n);
        })
    };
    let text_component = component(&text);
    let parquet_component = component(&parquet_text);
    let ns = |secs: f64| secs * 1e9 / n as f64;
    println!(
        "s3_objects: {n} flows; gzip text {:.1} MB, Parquet {:.1} MB ({} rows per row group)",
        gzip.len() as f64 / 1e6,
        parquet.len() as f64 / 1e6,
        row_group
    );
    println!(
        "  decode into lines:  gzip text {:.0} ns/flow, Parquet {:.0} ns/flow ({:.2}x gzip)",
        ns(gzip_secs),
        ns(parquet_secs),
        parquet_secs / gzip_secs
    );
    println!(
        "  decode + component: gzip text {:.0} ns/flow, Parquet {:.0} ns/flow ({:.2}x gzip)",
        ns(gzip_secs + text_component),
        ns(parquet_secs + parquet_component),
        (parquet_secs + parquet_component) / (gzip_secs + text_component)
    );
}
