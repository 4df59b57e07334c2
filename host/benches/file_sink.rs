//! What durability costs the `file` sink: the real sink (a sync before every
//! acknowledgement, group commit) against the same bytes written without any sync, in
//! one run.
//!
//! `cargo bench -p flowenrich --bench file_sink` (options: `--batches N`, default 2,000
//! batches of 1,000 lines of about 400 bytes; the file goes to the system's temporary
//! directory). Rows:
//! - `no sync`: the bytes appended with plain writes, never synced (what the sink did
//!   before it synced: a power cut could lose acknowledged lines);
//! - `group commit`: the sink fed as fast as it takes batches (one sync covers every
//!   batch waiting, up to 64);
//! - `sync per batch`: the sink fed one batch at a time, each sent only once the one
//!   before is acknowledged (one sync per batch: the worst case, a slow source).

use flowenrich::batch::LineBatch;
use flowenrich::lifecycle::Lifecycle;
use flowenrich::metrics::ComponentMetrics;
use flowenrich::sources::aws_kinesis::checkpoint::Checkpoints;
use flowenrich::topology::output::{Output, channel};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

#[allow(dead_code)] // shared with the other benchmarks
mod support;

fn batch(text: &Arc<str>, store: &Checkpoints, n: u64) -> Arc<LineBatch> {
    Arc::new(LineBatch {
        columns: None,
        permit: None,
        text: text.to_string(),
        lines: 1000,
        stream: "bench".into(),
        stream_start: n == 0,
        stream_end: false,
        acks: vec![store.ack("s", n, Some((n + 1).to_string()), false)],
    })
}

/// Runs the real sink on `path`, feeding `batches` batches; with `lockstep`, each only
/// once the one before is acknowledged. Returns seconds and syncs.
fn sink(path: &std::path::Path, text: &Arc<str>, batches: u64, lockstep: bool) -> (f64, u64) {
    let lifecycle = Lifecycle::new();
    let store = Checkpoints::in_memory();
    let (sender, mut input) = channel("sinks.bench", &lifecycle);
    let mut output = Output::default();
    output.connect(sender);
    let metrics = Arc::new(ComponentMetrics::default());
    let started = Instant::now();
    let thread = {
        let (path, metrics, lifecycle) = (path.to_path_buf(), metrics.clone(), lifecycle.clone());
        std::thread::spawn(move || {
            flowenrich::sinks::file::run("bench", &path, false, &mut input, &metrics, &lifecycle)
                .unwrap()
        })
    };
    for n in 0..batches {
        output.send(batch(text, &store, n));
        while lockstep && store.in_flight() > 0 {
            std::hint::spin_loop();
        }
    }
    drop(output);
    thread.join().unwrap();
    assert_eq!(store.checkpointed_batches("s"), batches);
    let syncs = metrics.totals().counters["file_syncs_total"];
    (started.elapsed().as_secs_f64(), syncs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batches = support::option(&args, "--batches").unwrap_or(2000) as u64;
    let line = format!(
        "{{\"version\":2,\"srcaddr\":\"10.0.0.1\",\"dstaddr\":\"10.0.0.2\",\"padding\":\"{}\"}}\n",
        "x".repeat(330)
    );
    let text: Arc<str> = line.repeat(1000).into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.ndjson");
    let bytes = text.len() as f64 * batches as f64;
    let started = Instant::now();
    {
        let mut file = std::fs::File::create(&path).unwrap();
        for _ in 0..batches {
            file.write_all(text.as_bytes()).unwrap();
        }
    }
    let plain = started.elapsed().as_secs_f64();
    let (grouped, grouped_syncs) = sink(&path, &text, batches, false);
    let (lockstep, lockstep_syncs) = sink(&path, &text, batches, true);
    let lines = batches as f64 * 1000.0;
    println!(
        "host::sinks::file, {batches} batches of 1,000 lines ({:.0} MiB):",
        bytes / 1048576.0
    );
    for (name, secs, syncs) in [
        ("no sync", plain, 0),
        ("group commit", grouped, grouped_syncs),
        ("sync per batch", lockstep, lockstep_syncs),
    ] {
        println!(
            "  {name:15} {:>8.2} M lines/s  {:>7.0} MiB/s  {syncs:>5} syncs  {:.2}x the no-sync time",
            lines / secs / 1e6,
            bytes / secs / 1048576.0,
            secs / plain
        );
    }
}
