//! Throughput of parse + 2 lookups + JSON, through the wasm component and natively.
//!
//! `cargo bench -p flowenrich --bench throughput` (add `-- --lines N` to change the
//! input size, default 1,000,000). Prints lines/s per batch size for: the same plugin
//! code compiled natively, the component with epoch interruption on (as pipelines run
//! it) and off, and the ratios, all measured in one run on one thread. Configurations
//! take turns slice by slice (10,000 lines) for three rounds over the input, and each
//! reports its best round. Options: `--lines N`,
//! `--batch N` (one batch size), `--native-only` (for profiling the plugin code),
//! `--wasm-only` (only the component with epoch interruption, for profiling it) and
//! `--component FILE.wasm` (another build of the component instead of the embedded one),
//! `--dump-cwasm FILE` (write its compiled code for `objdump -d`).

use flowenrich::metadata::{Event, Table, TableBuilder};
use flowenrich::runtime::records::assemble;
use flowenrich::runtime::{Runtime, RuntimeOptions, WorkerLimits};
use flowenrich_plugin::{Lookup, Processor};
use std::sync::Arc;
use std::time::Instant;
use support::Rng;

mod support;

const BATCH_SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
/// Rounds per configuration; the best is reported.
const ROUNDS: usize = 3;
/// Lines per slice: the configurations take turns slice by slice.
const SLICE_LINES: usize = 10_000;
const T0: u64 = 1_700_000_000;

/// The host's lookup code, called directly instead of across the component boundary.
struct NativeLookup<'a>(&'a Table);

impl Lookup for NativeLookup<'_> {
    fn lookup_v4(&mut self, addrs: &[u32], times: &[u64]) -> Vec<u32> {
        let mut owners = Vec::new();
        self.0.lookup_v4_batch(addrs, times, &mut owners);
        owners
    }
    fn lookup_v6(&mut self, addrs: &[u64], times: &[u64]) -> Vec<u32> {
        let mut owners = Vec::new();
        self.0.lookup_v6_batch(addrs, times, &mut owners);
        owners
    }
}

fn ip(i: u64) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

/// 10,000 hosts, each reassigned every 10 minutes over an hour; 100 /24 fallbacks.
fn table() -> Table {
    let mut builder = TableBuilder::new();
    let apps = [
        "api", "web", "db", "cache", "batch", "payments", "search", "auth",
    ];
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let mut rng = Rng(7);
    for host in 0..10_000u64 {
        for slot in 0..6 {
            let app = apps[rng.below(apps.len() as u64) as usize];
            let region = regions[rng.below(3) as usize];
            let line = format!(
                r#"{{"ts": {}, "op": "assign", "ip": "{}", "attrs": {{"app": "{app}", "cluster": "{app}-prod", "region": "{region}", "zone": "{region}a"}}}}"#,
                T0 + slot * 600,
                ip(host)
            );
            builder.apply(&Event::parse(&line).unwrap());
        }
    }
    for net in 0..100u64 {
        let line = format!(
            r#"{{"ts": {T0}, "op": "assign", "cidr": "10.{}.{}.0/24", "attrs": {{"app": "vpc"}}}}"#,
            net >> 8,
            net & 0xff
        );
        builder.apply(&Event::parse(&line).unwrap());
    }
    builder.build()
}

fn lines(n: usize) -> Vec<String> {
    let mut rng = Rng(42);
    (0..n)
        .map(|_| {
            let start = T0 + rng.below(3600);
            format!(
                "2 123456789012 eni-{:08x} {} {} {} {} 6 {} {} {start} {} {} OK",
                rng.below(1 << 32),
                ip(rng.below(12_000)),
                ip(rng.below(12_000)),
                32768 + rng.below(28000),
                [443, 5432, 6379, 8080][rng.below(4) as usize],
                1 + rng.below(100),
                40 + rng.below(1_000_000),
                start + 60,
                if rng.below(20) == 0 {
                    "REJECT"
                } else {
                    "ACCEPT"
                },
            )
        })
        .collect()
}

fn batches(lines: &[String], size: usize) -> Vec<String> {
    lines
        .chunks(size)
        .map(|chunk| {
            let mut text = String::with_capacity(chunk.iter().map(|l| l.len() + 1).sum());
            for line in chunk {
                text.push_str(line);
                text.push('\n');
            }
            text
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total = support::option(&args, "--lines").unwrap_or(1_000_000);
    // `--native-only`: skip the wasm runs (for profiling the plugin code with perf).
    let native_only = args.iter().any(|a| a == "--native-only");
    let wasm_only = args.iter().any(|a| a == "--wasm-only");
    let component_bytes = match args.iter().position(|a| a == "--component") {
        Some(at) => std::fs::read(&args[at + 1]).expect("read --component"),
        None => flowenrich::embedded::COMPONENT.to_vec(),
    };
    let table = Arc::new(table());
    let input = lines(total);
    println!(
        "host::transforms::wasm throughput: {total} lines, table of {} addresses ({} owners) + {} networks",
        table.addresses(),
        table.owners(),
        table.networks()
    );

    // Lookup cost alone: every address of the input at its start time, in batches of 1,000.
    let pairs: Vec<(u32, u64)> = input
        .iter()
        .flat_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let t: u64 = fields[10].parse().unwrap();
            [fields[3], fields[4]].map(|a| (u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()), t))
        })
        .collect();
    // Batches are split beforehand; best of 3 rounds.
    let lookup_batches: Vec<(Vec<u32>, Vec<u64>)> = pairs
        .chunks(1000)
        .map(|chunk| chunk.iter().copied().unzip())
        .collect();
    let (mut per_ip, mut attributed) = (f64::INFINITY, 0usize);
    for _ in 0..3 {
        let started = Instant::now();
        attributed = 0;
        for (addrs, times) in &lookup_batches {
            let owners = NativeLookup(&table).lookup_v4(addrs, times);
            attributed += owners.iter().filter(|&&o| o != 0).count();
        }
        per_ip = per_ip.min(started.elapsed().as_nanos() as f64 / pairs.len() as f64);
    }
    println!(
        "batched lookup (native, 1,000 IPs per call, as the component asks): {per_ip:.1} ns per IP ({attributed} of {} attributed)",
        pairs.len()
    );

    let runtimes: Vec<Runtime> = if native_only {
        Vec::new()
    } else {
        [true, false][..if wasm_only { 1 } else { 2 }]
            .iter()
            .map(|&epoch_interruption| {
                Runtime::new(RuntimeOptions {
                    epoch_interruption,
                    ..RuntimeOptions::default()
                })
                .unwrap()
            })
            .collect()
    };
    // `--dump-cwasm FILE`: write the component as compiled with epoch interruption (an
    // ELF object: `objdump -d FILE` shows the machine code of every wasm function).
    if let (Some(at), Some(runtime)) = (
        args.iter().position(|a| a == "--dump-cwasm"),
        runtimes.first(),
    ) {
        std::fs::write(&args[at + 1], runtime.precompile(&component_bytes).unwrap()).unwrap();
    }
    let mut workers: Vec<_> = runtimes
        .iter()
        .map(|runtime| {
            let component = runtime.load(&component_bytes).unwrap();
            runtime
                .worker(&component, &WorkerLimits::default())
                .unwrap()
        })
        .collect();

    println!(
        "{:>7}  {:>14}  {:>14}  {:>14}  {:>11}  {:>11}",
        "batch", "native l/s", "wasm+epoch l/s", "wasm l/s", "native/wasm", "epoch cost"
    );
    // `--batch N`: only that batch size.
    let only_batch = support::option(&args, "--batch");
    for size in BATCH_SIZES
        .into_iter()
        .filter(|s| only_batch.is_none_or(|only| only == *s))
    {
        let batches = batches(&input, size);
        // This machine's speed drifts from one moment to the next, so the configurations
        // take turns on every slice of about SLICE_LINES lines (each timed on its own)
        // and the ratios compare like with like. Each round covers all the input; each
        // configuration reports its best round.
        let per_slice = (SLICE_LINES / size).max(1);
        let mut processor = Processor::new();
        let configs = 1 + workers.len();
        let mut best = vec![f64::INFINITY; configs];
        for _ in 0..ROUNDS {
            let mut elapsed = vec![0.0f64; configs];
            let mut emitted = vec![0u64; configs];
            for slice in batches.chunks(per_slice) {
                let started = Instant::now();
                for batch in slice.iter().filter(|_| !wasm_only) {
                    // The same work as the wasm path: the plugin code, then the host
                    // putting the records together.
                    let out = processor
                        .process(None, batch, false, &mut NativeLookup(&table))
                        .unwrap();
                    let records = assemble(&table, &out.drafts, &out.spans, &out.owners).unwrap();
                    std::hint::black_box(records);
                    emitted[0] += out.emitted as u64;
                }
                elapsed[0] += started.elapsed().as_secs_f64();
                for (config, worker) in workers.iter_mut().enumerate() {
                    let started = Instant::now();
                    for batch in slice {
                        emitted[config + 1] +=
                            worker.process(None, batch, false, &table).unwrap().emitted as u64;
                    }
                    elapsed[config + 1] += started.elapsed().as_secs_f64();
                }
            }
            for config in usize::from(wasm_only)..configs {
                assert_eq!(emitted[config], total as u64);
                best[config] = best[config].min(elapsed[config]);
            }
        }
        let rate = |config: usize| {
            best.get(config)
                .map_or(f64::NAN, |seconds| total as f64 / seconds)
        };
        let (native, rates) = (rate(0), [rate(1), rate(2)]);
        println!(
            "{size:>7}  {:>14.0}  {:>14.0}  {:>14.0}  {:>10.2}x  {:>10.1}%",
            native,
            rates[0],
            rates[1],
            native / rates[0],
            (rates[1] / rates[0] - 1.0) * 100.0
        );
    }
    println!(
        "(native/wasm compares native with wasm+epoch; epoch cost = extra time per line with epoch interruption on)"
    );
}
