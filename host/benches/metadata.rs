//! The attribution table at scale.
//!
//! `cargo bench -p flowenrich --bench metadata` (options: `--ips N`, default 1,000,000;
//! `--cidrs N`, default 100,000; `--batches N` of 1,000 lookups per case, default 500;
//! `--lookups-only` stops after the lookup costs, e.g. for a profiler; `--hold` keeps
//! the tables replaced during the swap window alive until it ends, to tell the swap's
//! cost from the cost of freeing a table). Builds a table of N IPv4 addresses with 3 owners each
//! over time plus the CIDRs, then prints, all from one run:
//! - build time from events, and the time to swap it in;
//! - bytes held by the lookup structures, per address and per history entry;
//! - batched lookup cost per IP (1,000 per batch, as the component asks), for addresses
//!   with a history and for addresses that only networks cover;
//! - the pauses a worker sees while tables are swapped under it: a worker thread loops
//!   on snapshot + a 1,000-IP batch and records every batch, with and without swaps
//!   going on (median, 99.9th percentile, slowest, how many over 1 ms, and the slowest
//!   `snapshot()` alone: the part a swap could block).

use flowenrich::metadata::events::{Attrs, Event, Op, Target};
use flowenrich::metadata::{SharedTable, Table, TableBuilder};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::Rng;

mod support;

const T0: u64 = 1_700_000_000;
const BATCH: usize = 1000;

/// Address `i` of the table: spread over 10.0.0.0/8 and 100.64.0.0/10.
fn host(i: u64) -> u32 {
    let spread = (i.wrapping_mul(0x9E37_79B9) & 0x3F_FFFF) as u32;
    if i.is_multiple_of(2) {
        0x0A00_0000 | (spread & 0xFF_FFFF)
    } else {
        0x6440_0000 | (spread & 0x3F_FFFF)
    }
}

fn events(ips: usize, cidrs: usize) -> Vec<Event> {
    let mut rng = Rng(11);
    let owners: Vec<Attrs> = (0..2000)
        .map(|i| {
            Attrs::from([
                ("app".to_string(), format!("app{i}")),
                ("cluster".to_string(), format!("app{i}-prod")),
                (
                    "region".to_string(),
                    ["us-east-1", "eu-west-1"][i % 2].to_string(),
                ),
                ("zone".to_string(), format!("zone{}", i % 6)),
            ])
        })
        .collect();
    let mut out = Vec::with_capacity(ips * 3 + cidrs);
    for i in 0..ips as u64 {
        let addr = IpAddr::V4(Ipv4Addr::from(host(i)));
        for slot in 0..3 {
            out.push(Event {
                ts: T0 + slot * 1200 + rng.below(600),
                target: Target::Ip(addr),
                op: Op::Assign(owners[rng.below(owners.len() as u64) as usize].clone()),
                source: None,
            });
        }
    }
    // `cidrs` distinct networks, /16 … /28, in 172.16.0.0 … 173.15.255.255.
    let mut seen = std::collections::HashSet::new();
    while seen.len() < cidrs {
        let len = 16 + rng.below(13) as u8;
        let net = ipnet::Ipv4Net::new(
            Ipv4Addr::from(0xAC10_0000 | (rng.below(1 << 20) as u32) << 4),
            len,
        )
        .expect("valid prefix")
        .trunc();
        if !seen.insert(net) {
            continue;
        }
        out.push(Event {
            ts: T0 + rng.below(3600),
            target: Target::Cidr(ipnet::IpNet::V4(net)),
            op: Op::Assign(owners[rng.below(owners.len() as u64) as usize].clone()),
            source: None,
        });
    }
    out
}

/// Batches of (addresses, times): `hit` = addresses with a history, else 172.16/12 ones
/// that only networks cover; times anywhere in the history, or only after its last
/// change (`recent`).
fn batches(ips: usize, hit: bool, recent: bool, count: usize) -> Vec<(Vec<u32>, Vec<u64>)> {
    let mut rng = Rng(99);
    (0..count)
        .map(|_| {
            (0..BATCH)
                .map(|_| {
                    let addr = if hit {
                        host(rng.below(ips as u64))
                    } else {
                        0xAC10_0000 | rng.below(1 << 24) as u32
                    };
                    let t = if recent {
                        T0 + 3000 + rng.below(900)
                    } else {
                        T0 + rng.below(3 * 1200 + 600)
                    };
                    (addr, t)
                })
                .unzip()
        })
        .collect()
}

/// ns per IP over `batches`, best of 3 rounds; also returns how many were attributed.
fn lookup_cost(table: &Table, batches: &[(Vec<u32>, Vec<u64>)]) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut attributed = 0;
    let mut out = Vec::with_capacity(BATCH);
    for _ in 0..3 {
        attributed = 0;
        let started = Instant::now();
        for (addrs, times) in batches {
            out.clear();
            table.lookup_v4_batch(addrs, times, &mut out);
            attributed += out.iter().filter(|&&o| o != 0).count();
        }
        let ns = started.elapsed().as_nanos() as f64 / (batches.len() * BATCH) as f64;
        best = best.min(ns);
    }
    (best, attributed)
}

/// ns per read of `reads` independent random reads over an array of `bytes` (best of
/// 3 rounds; the addresses are computed beforehand, so reads overlap as far as the
/// memory system lets them): the floor under any lookup that reads one random cache line.
fn random_read_floor(bytes: usize, reads: usize) -> (f64, usize) {
    let words = (bytes / 8).next_power_of_two();
    let mut array: Vec<u64> = Vec::with_capacity(words);
    // SAFETY: madvise only changes how the kernel backs pages of this allocation.
    unsafe {
        let start = (array.as_ptr() as usize + (2 << 20) - 1) & !((2 << 20) - 1);
        libc::madvise(
            start as *mut libc::c_void,
            words * 8 - (2 << 20),
            libc::MADV_HUGEPAGE,
        );
    }
    array.extend((0..words as u64).map(|i| i.wrapping_mul(0x9E37_79B9)));
    let mut rng = Rng(7);
    let at: Vec<usize> = (0..reads)
        .map(|_| rng.below(words as u64) as usize)
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let sum = at.iter().fold(0u64, |sum, &i| sum.wrapping_add(array[i]));
        std::hint::black_box(sum);
        best = best.min(started.elapsed().as_nanos() as f64 / reads as f64);
    }
    (best, (words * 8) >> 20)
}

/// Slowest worker batch (snapshot + lookups) during `window`, with `swapping` tables
/// replaced in another thread as fast as they can be.
fn worst_batch(
    shared: &Arc<SharedTable>,
    batches: &[(Vec<u32>, Vec<u64>)],
    window: Duration,
    spare: Option<Vec<Table>>,
    hold: bool,
) -> WorkerTimes {
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let shared = shared.clone();
        let stop = stop.clone();
        let batches = batches.to_vec();
        std::thread::spawn(move || {
            // Written beforehand, so that recording a batch never faults a page in.
            let mut took = vec![Duration::from_nanos(1); 1 << 20];
            let mut n = 0;
            let mut worst_snapshot = Duration::ZERO;
            let mut out = Vec::with_capacity(BATCH);
            while !stop.load(Ordering::Relaxed) {
                for (addrs, times) in &batches {
                    let started = Instant::now();
                    let table = shared.snapshot();
                    worst_snapshot = worst_snapshot.max(started.elapsed());
                    out.clear();
                    table.lookup_v4_batch(addrs, times, &mut out);
                    drop(table);
                    if let Some(slot) = took.get_mut(n) {
                        *slot = started.elapsed();
                        n += 1;
                    }
                }
            }
            took.truncate(n);
            (took, worst_snapshot)
        })
    };
    let started = Instant::now();
    let mut swaps = 0;
    // With `hold`, the replaced tables are kept until the window ends instead of being
    // freed as they are replaced.
    let mut held = Vec::new();
    if let Some(mut spare) = spare {
        while started.elapsed() < window {
            if let Some(table) = spare.pop() {
                if hold {
                    held.push(shared.snapshot());
                }
                shared.replace(table);
                swaps += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        std::thread::sleep(window);
    }
    stop.store(true, Ordering::Relaxed);
    let (mut took, worst_snapshot) = worker.join().unwrap();
    drop(held);
    shared.reap();
    took.sort_unstable();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    WorkerTimes {
        batches: took.len(),
        median: at(0.5),
        p999: at(0.999),
        worst: at(1.0),
        over_1ms: took
            .iter()
            .filter(|&&d| d > Duration::from_millis(1))
            .count(),
        worst_snapshot,
        swaps,
    }
}

/// What a worker saw during one window.
struct WorkerTimes {
    /// Batches (snapshot + lookups) it ran.
    batches: usize,
    /// Median batch.
    median: Duration,
    /// The batch slower than 99.9 % of them.
    p999: Duration,
    /// Slowest batch.
    worst: Duration,
    /// Batches over 1 ms.
    over_1ms: usize,
    /// Slowest `snapshot()` call alone.
    worst_snapshot: Duration,
    /// Tables swapped in during the window.
    swaps: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ips = support::option(&args, "--ips").unwrap_or(1_000_000);
    let cidrs = support::option(&args, "--cidrs").unwrap_or(100_000);
    let events = events(ips, cidrs);

    let build = || {
        let mut builder = TableBuilder::new();
        builder.extend(&events);
        builder.build()
    };
    let started = Instant::now();
    let table = build();
    let built_in = started.elapsed();
    let entries = ips * 3;
    println!(
        "flowenrich::metadata table: {} addresses x 3 owners over time + {} networks ({} owners)",
        table.addresses(),
        table.networks(),
        table.owners()
    );
    println!(
        "build from {} events: {:.2} s; lookup structures {:.1} MiB = {:.1} bytes per address, {:.1} per history entry",
        events.len(),
        built_in.as_secs_f64(),
        table.heap_bytes() as f64 / (1 << 20) as f64,
        table.heap_bytes() as f64 / ips as f64,
        table.heap_bytes() as f64 / entries as f64
    );

    if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps_rollup")
        && let Some(line) = smaps.lines().find(|l| l.starts_with("AnonHugePages"))
    {
        println!(
            "transparent huge pages in use: {}",
            line.trim_start_matches("AnonHugePages:").trim()
        );
    }
    let rounds = support::option(&args, "--batches").unwrap_or(500);
    let hits = batches(ips, true, false, rounds);
    let recent = batches(ips, true, true, rounds);
    let misses = batches(ips, false, false, rounds);
    let recent_misses = batches(ips, false, true, rounds);
    println!("batched lookup, {BATCH} random IPs per batch (ns per IP, share attributed):");
    for (what, batches) in [
        ("addresses with a history, times anywhere in it", &hits),
        (
            "addresses with a history, times after their last change",
            &recent,
        ),
        ("addresses only networks cover, times anywhere", &misses),
        (
            "addresses only networks cover, times in the last 15 minutes",
            &recent_misses,
        ),
    ] {
        let (ns, attributed) = lookup_cost(&table, batches);
        println!(
            "  {what}: {ns:.1} ns ({:.0}%)",
            100.0 * attributed as f64 / (batches.len() * BATCH) as f64
        );
    }

    let (floor_ns, floor_mib) = random_read_floor(table.heap_bytes(), rounds * BATCH);
    println!(
        "  for scale, the machine's floor: independent random 8-byte reads over a {floor_mib} MiB array (huge pages asked for): {floor_ns:.1} ns each"
    );

    if args.iter().any(|a| a == "--lookups-only") {
        return;
    }

    // Install a new table while a reader still holds the old one (so this measures the
    // atomic store, not the freeing), then free the old one as the watcher would.
    let shared = Arc::new(SharedTable::new(table));
    let next = build();
    let held = shared.snapshot();
    let started = Instant::now();
    shared.replace(next);
    let install = started.elapsed();
    drop(held);
    let started = Instant::now();
    shared.reap();
    let free = started.elapsed();
    println!(
        "swap: install {:.4} ms; freeing the replaced table {:.2} ms (on the replacing thread, never a worker)",
        install.as_secs_f64() * 1e3,
        free.as_secs_f64() * 1e3
    );

    // The worker's batches, quiet and while tables are swapped under it.
    let spare: Vec<Table> = (0..4).map(|_| build()).collect();
    let window = Duration::from_millis(1500);
    let hold = args.iter().any(|a| a == "--hold");
    let quiet = worst_batch(&shared, &hits[..50], window, None, false);
    let swapping = worst_batch(&shared, &hits[..50], window, Some(spare), hold);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("worker (snapshot + {BATCH} lookups per batch), quiet vs while tables are swapped:");
    for (what, times) in [
        ("quiet".to_string(), &quiet),
        (
            format!(
                "{} swaps{}",
                swapping.swaps,
                if hold { " (replaced tables held)" } else { "" }
            ),
            &swapping,
        ),
    ] {
        println!(
            "  {what}: {} batches, median {:.3} ms, 99.9th percentile {:.3} ms, slowest {:.3} ms ({} over 1 ms); slowest snapshot {:.4} ms",
            times.batches,
            ms(times.median),
            ms(times.p999),
            ms(times.worst),
            times.over_1ms,
            ms(times.worst_snapshot)
        );
    }
}
