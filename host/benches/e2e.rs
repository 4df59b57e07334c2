//! The user's job end to end, against the component alone, in one run.
//!
//! `cargo bench -p flowenrich --bench e2e` (options: `--lines N`, default 1,000,000;
//! `--events-per-envelope N`, default 100; `--apps N`: the owned addresses belong to N
//! applications instead of one each, for a rollup of fewer rows). Generates its own data: N default-format
//! lines between 100,000 addresses (90 % IPv4, 10 % IPv6), half of them assigned to
//! 50,000 owners at time 0 (app, cluster, account, region, zone), random source and
//! destination pairs, starts spread over 80 s — a high-cardinality rollup. Then it
//! measures, each as wall flows/s and flows per CPU-second (user + sys):
//!
//! - the component alone (one worker, batches of 1,000 lines, in process), with JSON
//!   and with columns only (what the druid sink asks for);
//! - `flowenrich enrich` (stdin → stdout), the release binary as a child process, with
//!   its compiled component from the cache and compiling it at start;
//! - `flowenrich run`: file → wasm → file, and file → wasm → druid (rollup files);
//! - in process: gzip CloudWatch Logs envelopes held in memory → inflate → envelope
//!   parse → wasm (columns) → druid rollup rows (everything but the Kinesis emulator);
//!
//! with the ratio of each to the component alone and, for the child processes, peak RSS
//! and system time as a share of user time. The configurations take turns for
//! `--rounds N` rounds (default 3), and each reports its round with the least CPU time:
//! on a shared machine one run's figures can be a quarter off another's.

use flowenrich::batch::{Columns, LineBatch};
use flowenrich::metadata::{Event, Table, TableBuilder};
use flowenrich::runtime::component_cache::CACHE_ENV;
use flowenrich::runtime::{ProcessOptions, Runtime, RuntimeOptions, WorkerLimits};
use flowenrich::sinks::druid::{DEFAULT_DIMENSIONS, Rollup};
use flowenrich::sources::aws_kinesis::{RecordFormat, decode};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use support::Rng;

mod support;

/// Distinct addresses in the flows; the first 90 % IPv4, the rest IPv6.
const ADDRESSES: u64 = 100_000;
const IPV4: u64 = 90_000;
/// Start times spread over this many seconds from `T0`.
const SPREAD_SECS: u64 = 80;
const T0: u64 = 1_700_000_000;
/// Lines per batch for the in-process runs (a pipeline's batches are of this order).
const BATCH_LINES: usize = 1_000;

fn address(i: u64) -> String {
    if i < IPV4 {
        format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
    } else {
        format!("2001:db8::{:x}:{:x}", i >> 16, i & 0xffff)
    }
}

/// The metadata changelog: every even address is owned from time 0, by its own
/// application, or with `apps`, by one of that many.
fn metadata(apps: Option<u64>) -> String {
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let mut text = String::new();
    for address_number in (0..ADDRESSES).step_by(2) {
        let i = apps.map_or(address_number, |apps| address_number / 2 % apps);
        let region = regions[(i % 3) as usize];
        text.push_str(&format!(
            "{{\"ts\": 0, \"op\": \"assign\", \"ip\": \"{}\", \"attrs\": {{\"app\": \"app{i}\", \"cluster\": \"app{i}-prod\", \"account\": \"{}\", \"region\": \"{region}\", \"zone\": \"{region}{}\"}}}}\n",
            address(address_number),
            100_000_000_000 + i % 40,
            ["a", "b", "c"][(i % 3) as usize],
        ));
    }
    text
}

/// Writes `n` default-format (v2) lines to `path`, random pairs within one address
/// family, one at a time (this process keeps no copy).
fn write_flows(path: &Path, n: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(42);
    for line in (0..n).map(|_| {
        let (src, dst) = if rng.below(10) == 0 {
            (
                IPV4 + rng.below(ADDRESSES - IPV4),
                IPV4 + rng.below(ADDRESSES - IPV4),
            )
        } else {
            (rng.below(IPV4), rng.below(IPV4))
        };
        let start = T0 + rng.below(SPREAD_SECS);
        format!(
            "2 123456789012 eni-{:08x} {} {} {} {} {} {} {} {start} {} {} OK",
            rng.below(1 << 32),
            address(src),
            address(dst),
            32768 + rng.below(28000),
            [443, 5432, 6379, 8080][rng.below(4) as usize],
            [6, 6, 6, 17][rng.below(4) as usize],
            1 + rng.below(100),
            40 + rng.below(1_000_000),
            start + 60,
            if rng.below(20) == 0 {
                "REJECT"
            } else {
                "ACCEPT"
            },
        )
    }) {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

/// The lines packed into gzip CloudWatch Logs subscription envelopes.
fn envelopes(lines: &[String], per_envelope: usize) -> Vec<Vec<u8>> {
    lines
        .chunks(per_envelope)
        .enumerate()
        .map(|(n, chunk)| {
            let events: Vec<(u64, String)> = chunk
                .iter()
                .map(|message| (T0 * 1000, message.clone()))
                .collect();
            let first_id = (n * per_envelope) as u64;
            support::gzip_envelope(&events, first_id, flate2::Compression::default())
        })
        .collect()
}

/// What one measured run took.
/// The child processes' best rounds.
struct Children {
    enrich: Measured,
    enrich_cold: Measured,
    to_file: Measured,
    to_file_2: Measured,
    to_druid: Measured,
    /// 2 transform workers, the sink on 1 thread.
    to_druid_2: Measured,
    /// 2 transform workers, the sink on 2 threads (sharded).
    to_druid_2_sharded: Measured,
}

struct Measured {
    wall: f64,
    user: f64,
    sys: f64,
    /// Peak resident set of the child process, if it was one.
    max_rss_mib: Option<f64>,
}

impl Measured {
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

/// Keeps in `best` whichever of it and `measured` took less CPU time.
fn keep_best(best: &mut Option<Measured>, measured: Measured) {
    if best.as_ref().is_none_or(|b| measured.cpu() < b.cpu()) {
        *best = Some(measured);
    }
}

fn seconds(time: libc::timeval) -> f64 {
    time.tv_sec as f64 + time.tv_usec as f64 / 1e6
}

/// This process's CPU time so far (user, sys).
fn own_cpu() -> (f64, f64) {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// Runs `work` in this process and measures it.
fn in_process(work: impl FnOnce()) -> Measured {
    let (user0, sys0) = own_cpu();
    let started = Instant::now();
    work();
    let wall = started.elapsed().as_secs_f64();
    let (user, sys) = own_cpu();
    Measured {
        wall,
        user: user - user0,
        sys: sys - sys0,
        max_rss_mib: None,
    }
}

/// Runs `command` as a child and measures it with `wait4` (its own CPU time and peak
/// RSS, not this process's); `wait4` reaps it.
#[allow(clippy::zombie_processes)]
fn child(command: &mut Command) -> Measured {
    let started = Instant::now();
    let spawned = command.spawn().expect("start flowenrich");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's; status and usage are valid and writable.
    let pid = unsafe { libc::wait4(spawned.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(pid, spawned.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "flowenrich failed: {command:?}"
    );
    Measured {
        wall,
        user: seconds(usage.ru_utime),
        sys: seconds(usage.ru_stime),
        max_rss_mib: Some(usage.ru_maxrss as f64 / 1024.0),
    }
}

/// A pipeline reading `flows`, enriching with `metadata` on `workers` workers and
/// writing to `sink`.
fn pipeline(dir: &Path, name: &str, sink: &str, workers: usize) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[metadata.owners]\ntype = \"file\"\npath = \"metadata.jsonl\"\nretention_secs = 0\n\n\
         [sources.flows]\ntype = \"file\"\npath = \"flows.log\"\n\n\
         [transforms.enrich]\ntype = \"wasm\"\ninputs = [\"flows\"]\nmetadata = \"owners\"\nworkers = {workers}\n\n\
         [sinks.out]\ninputs = [\"enrich\"]\n{sink}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total = support::option(&args, "--lines").unwrap_or(1_000_000);
    let per_envelope = support::option(&args, "--events-per-envelope").unwrap_or(100);
    let rounds = support::option(&args, "--rounds").unwrap_or(3).max(1);
    // `--in-process`: only the in-process configurations (for profiling them with perf).
    let in_process_only = args.iter().any(|a| a == "--in-process");
    let binary = env!("CARGO_BIN_EXE_flowenrich");
    let dir = tempfile::tempdir().unwrap();
    let metadata_text = metadata(support::option(&args, "--apps").map(|n| n as u64));
    std::fs::write(dir.path().join("metadata.jsonl"), &metadata_text).unwrap();
    write_flows(&dir.path().join("flows.log"), total);
    if let Some(keep) = std::env::var_os("E2E_KEEP") {
        // For profiling a child by hand: the data stays in $E2E_KEEP.
        std::fs::create_dir_all(&keep).unwrap();
        for file in ["metadata.jsonl", "flows.log"] {
            std::fs::copy(dir.path().join(file), Path::new(&keep).join(file)).unwrap();
        }
    }
    // The child processes run first, while this process holds little: a child's peak
    // RSS as the kernel counts it includes the parent's until `exec`.

    let devnull = || std::fs::File::create("/dev/null").unwrap();
    // The children keep compiled components in a cache of their own: the first run
    // compiles, the others load (one `enrich` per round compiles at start instead).
    let cache = dir.path().join("components");
    let run = |name: &str, sink: &str, workers: usize| {
        // What an earlier run wrote is gone and on disk: its writeback does not fall
        // into this run.
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let config = pipeline(dir.path(), name, sink, workers);
        child(
            Command::new(binary)
                .current_dir(dir.path())
                .env(CACHE_ENV, &cache)
                .arg("run")
                .arg(&config)
                .stdout(devnull())
                .stderr(devnull()),
        )
    };
    let file_sink = "type = \"file\"\npath = \"out/enriched.ndjson\"";
    // The sink's rollup threads: 1, its default on 2 cores (half the cores), or 2.
    let druid_sink =
        |workers: usize| format!("type = \"druid\"\npath = \"out/druid\"\nworkers = {workers}");
    // The configurations take turns, round after round; each keeps its best round.
    let (mut enrich, mut enrich_cold, mut to_file, mut to_file_2) = (None, None, None, None);
    let (mut to_druid, mut to_druid_2, mut to_druid_2_sharded) = (None, None, None);
    let enrich_with = |cache: &std::ffi::OsStr| {
        child(
            Command::new(binary)
                .current_dir(dir.path())
                .env(CACHE_ENV, cache)
                .args(["enrich", "--metadata", "metadata.jsonl"])
                .stdin(std::fs::File::open(dir.path().join("flows.log")).unwrap())
                .stdout(devnull())
                .stderr(devnull()),
        )
    };
    for _ in 0..if in_process_only { 0 } else { rounds } {
        keep_best(&mut enrich, enrich_with(cache.as_os_str()));
        keep_best(&mut enrich_cold, enrich_with("off".as_ref()));
        keep_best(&mut to_file, run("to_file", file_sink, 1));
        keep_best(&mut to_file_2, run("to_file_2", file_sink, 2));
        keep_best(&mut to_druid_2, run("to_druid_2", &druid_sink(1), 2));
        keep_best(
            &mut to_druid_2_sharded,
            run("to_druid_2_sharded", &druid_sink(2), 2),
        );
        // Last, so that its rollup files are there to count.
        keep_best(&mut to_druid, run("to_druid", &druid_sink(1), 1));
    }
    let best = |m: Option<Measured>| m.expect("at least one round");
    let druid_rows: Option<usize> = (!in_process_only).then(|| {
        std::fs::read_dir(dir.path().join("out/druid"))
            .unwrap()
            .map(|entry| bytecount(&std::fs::read(entry.unwrap().path()).unwrap()))
            .sum()
    });

    let text = std::fs::read_to_string(dir.path().join("flows.log")).unwrap();
    let batches: Vec<&str> = {
        let mut batches = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let cut = rest
                .match_indices('\n')
                .nth(BATCH_LINES - 1)
                .map_or(rest.len(), |(at, _)| at + 1);
            batches.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        batches
    };
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let envelopes = envelopes(&lines, per_envelope);
    drop(lines);
    let mut builder = TableBuilder::new();
    for line in metadata_text.lines() {
        let event = Event::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        builder.apply(&event);
    }
    let table: Arc<Table> = Arc::new(builder.build());
    println!(
        "e2e: {total} lines between {ADDRESSES} addresses ({} owners), starts over {SPREAD_SECS} s; {} envelopes of {per_envelope} events ({:.1} MB gzip)",
        table.owners(),
        envelopes.len(),
        envelopes.iter().map(Vec::len).sum::<usize>() as f64 / 1e6,
    );

    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let component = runtime.load(flowenrich::embedded::COMPONENT).unwrap();
    let mut worker = runtime
        .worker(&component, &WorkerLimits::default())
        .unwrap();
    // Warm up the instance (first-call costs) before anything is measured.
    worker.process(None, batches[0], false, &table).unwrap();

    let compare_with = args
        .iter()
        .position(|a| a == "--compare")
        .map(|at| args[at + 1].clone());
    let mut component_alone = None;
    for _ in 0..if compare_with.is_some() { 1 } else { rounds } {
        let measured = in_process(|| {
            let mut emitted = 0u64;
            for batch in &batches {
                emitted += worker.process(None, batch, false, &table).unwrap().emitted as u64;
            }
            assert_eq!(emitted, total as u64);
        });
        keep_best(&mut component_alone, measured);
    }
    let component_alone = best(component_alone);

    let dimensions: Vec<String> = DEFAULT_DIMENSIONS.iter().map(|d| d.to_string()).collect();
    // What the druid sink asks of the component: its dimensions and metrics, as columns
    // (those the component parses), and no JSON.
    let names: Arc<[String]> = dimensions
        .iter()
        .map(String::as_str)
        .chain(["start", "bytes", "packets"])
        .filter(|name| component.info.fields.iter().any(|f| f == name))
        .map(str::to_string)
        .collect();
    let options = ProcessOptions {
        format: None,
        stream_start: false,
        hold_unattributed: false,
        json: false,
        columns: names.to_vec(),
    };
    let batch_of = |text: String| Arc::new(LineBatch::of_text("bench", text));
    if let Some(other) = compare_with {
        compare(
            &runtime,
            &mut worker,
            &other,
            &batches,
            &options,
            &table,
            rounds,
        );
        return;
    }
    let mut columns_only = None;
    for _ in 0..rounds {
        let measured = in_process(|| {
            let mut emitted = 0u64;
            for batch in &batches {
                emitted += worker
                    .process_with(batch, &options, &table)
                    .unwrap()
                    .emitted as u64;
            }
            assert_eq!(emitted, total as u64);
        });
        keep_best(&mut columns_only, measured);
    }
    let columns_only = best(columns_only);
    let (mut rows, mut row_bytes) = (0, 0);
    // The best round, and the seconds of its stages.
    let mut kinesis_to_rows: Option<Measured> = None;
    let (mut tdec, mut tproc, mut tadd, mut tdrain) = (0f64, 0f64, 0f64, 0f64);
    for _ in 0..rounds {
        let (mut dec, mut process, mut add, mut drain) = (0f64, 0f64, 0f64, 0f64);
        let measured = in_process(|| {
            let mut rollup = Rollup::new(&dimensions, 60);
            let mut batch = String::new();
            let mut flush = |batch: &mut String, rollup: &mut Rollup| {
                // As the Kinesis source does: the next batch starts with this one's room
                // and an eighth more.
                let room = batch.len() + batch.len() / 8;
                let input = batch_of(std::mem::replace(batch, String::with_capacity(room)));
                let t = Instant::now();
                let processed = worker.process_with(&input.text, &options, &table).unwrap();
                process += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let columns = Columns {
                    names: names.clone(),
                    raw: processed.columns.unwrap(),
                    input,
                    table: table.clone(),
                };
                let (added, no_start) = rollup.add_columns(&columns);
                assert_eq!((added, no_start), (u64::from(processed.emitted), 0));
                add += t.elapsed().as_secs_f64();
            };
            for envelope in &envelopes {
                let t = Instant::now();
                decode(envelope, RecordFormat::Auto, 16 << 20, &mut batch).unwrap();
                dec += t.elapsed().as_secs_f64();
                if batch.len() >= BATCH_LINES * 100 {
                    flush(&mut batch, &mut rollup);
                }
            }
            flush(&mut batch, &mut rollup);
            row_bytes = rollup.row_bytes();
            let t = Instant::now();
            rows = rollup
                .drain_each(|_, text, _| {
                    std::hint::black_box(text);
                    Ok::<_, ()>(())
                })
                .unwrap();
            drain = t.elapsed().as_secs_f64();
        });
        if kinesis_to_rows
            .as_ref()
            .is_none_or(|b| measured.cpu() < b.cpu())
        {
            (tdec, tproc, tadd, tdrain) = (dec, process, add, drain);
        }
        keep_best(&mut kinesis_to_rows, measured);
    }
    let kinesis_to_rows = best(kinesis_to_rows);

    println!(
        "{:<46} {:>12} {:>12} {:>8} {:>8} {:>9} {:>8}",
        "what (1 worker unless said)",
        "flows/s",
        "flows/CPU-s",
        "wall ×",
        "CPU ×",
        "sys/user",
        "RSS MiB"
    );
    let report = |what: &str, m: &Measured| {
        println!(
            "{what:<46} {:>12.0} {:>12.0} {:>8.2} {:>8.2} {:>8.1}% {:>8}",
            total as f64 / m.wall,
            total as f64 / m.cpu(),
            m.wall / component_alone.wall,
            m.cpu() / component_alone.cpu(),
            m.sys / m.user * 100.0,
            m.max_rss_mib.map_or("-".into(), |r| format!("{r:.0}")),
        )
    };
    report("component alone (in process)", &component_alone);
    report("component, columns only (no JSON)", &columns_only);
    let children = druid_rows.map(|druid_rows| {
        assert_eq!(
            druid_rows, rows,
            "the pipeline and the in-process run agree"
        );
        Children {
            enrich: best(enrich),
            enrich_cold: best(enrich_cold),
            to_file: best(to_file),
            to_file_2: best(to_file_2),
            to_druid: best(to_druid),
            to_druid_2: best(to_druid_2),
            to_druid_2_sharded: best(to_druid_2_sharded),
        }
    });
    if let Some(c) = &children {
        report("flowenrich enrich (stdin → stdout)", &c.enrich);
        report("  … compiling the component at start", &c.enrich_cold);
        report("run: file → wasm → file", &c.to_file);
        report("  … with 2 workers", &c.to_file_2);
        report("run: file → wasm → druid (rollup files)", &c.to_druid);
        report("  … with 2 workers (sink: 1 thread)", &c.to_druid_2);
        report(
            "  … with 2 workers and 2 sink threads",
            &c.to_druid_2_sharded,
        );
    }
    report(
        "envelopes → inflate → parse → wasm → rows",
        &kinesis_to_rows,
    );
    if let Some(c) = &children {
        println!(
            "2 workers against 1 (wall): file → file {:.2}×, file → druid {:.2}× (2 sink threads: {:.2}×)",
            c.to_file.wall / c.to_file_2.wall,
            c.to_druid.wall / c.to_druid_2.wall,
            c.to_druid.wall / c.to_druid_2_sharded.wall,
        );
    }
    let per_flow = |seconds: f64| seconds * 1e9 / total as f64;
    println!(
        "envelopes → rows, ns per flow: inflate + envelope parse {:.0}, component {:.0}, rollup {:.0}, drain into rows {:.0}",
        per_flow(tdec),
        per_flow(tproc),
        per_flow(tadd),
        per_flow(tdrain)
    );
    if let Some(c) = &children {
        println!(
            "run file → druid against enrich: wall {:.2}×, CPU {:.2}×",
            c.to_druid.wall / c.enrich.wall,
            c.to_druid.cpu() / c.enrich.cpu(),
        );
    }
    println!(
        "{rows} rollup rows ({:.1} flows per row, {:.0} bytes per row held)",
        total as f64 / rows as f64,
        row_bytes as f64 / rows as f64,
    );
}

/// `--compare OTHER.wasm`: the columns-only run of the embedded component against
/// another build of it, taking turns every few batches (so both see the same moments of
/// this machine), each reporting its best round.
fn compare(
    runtime: &Runtime,
    worker: &mut flowenrich::runtime::Worker,
    other: &str,
    batches: &[&str],
    options: &ProcessOptions,
    table: &Arc<Table>,
    rounds: usize,
) {
    let bytes = std::fs::read(other).unwrap_or_else(|e| panic!("{other}: {e}"));
    let component = runtime.load(&bytes).unwrap();
    let mut other_worker = runtime
        .worker(&component, &WorkerLimits::default())
        .unwrap();
    other_worker
        .process_with(batches[0], options, table)
        .unwrap();
    let mut best = [f64::INFINITY; 2];
    for _ in 0..rounds.max(5) {
        let mut elapsed = [0f64; 2];
        for slice in batches.chunks(10) {
            for (at, worker) in [&mut *worker, &mut other_worker].into_iter().enumerate() {
                let started = Instant::now();
                for batch in slice {
                    std::hint::black_box(worker.process_with(batch, options, table).unwrap());
                }
                elapsed[at] += started.elapsed().as_secs_f64();
            }
        }
        for at in 0..2 {
            best[at] = best[at].min(elapsed[at]);
        }
    }
    let lines: usize = batches.iter().map(|b| bytecount(b.as_bytes())).sum();
    println!(
        "columns only, ns per flow: embedded {:.1}, {other} {:.1} (embedded takes {:.3}× the time)",
        best[0] * 1e9 / lines as f64,
        best[1] * 1e9 / lines as f64,
        best[0] / best[1]
    );
}

/// Lines in a file's bytes.
fn bytecount(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}
