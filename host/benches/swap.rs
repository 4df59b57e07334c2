//! What a hot swap costs the transform that runs through it.
//!
//! `cargo bench -p flowenrich --bench swap` (options: `--batches N`, default 3,000;
//! `--swap-every N`, default 50). One thread processes 1,000-line batches the way a
//! `wasm` transform does: before every batch it looks at the shared component and, when
//! a new generation is installed, moves its worker to it (a fresh instance). Another
//! thread installs a new generation every `--swap-every` batches, alternating two
//! components that are already compiled and checked (as the watcher has them when it
//! swaps). Prints batch latency (median, 99th percentile, worst) for batches that
//! followed a swap and for the others, from the same run.

use flowenrich::metadata::Table;
use flowenrich::runtime::{Runtime, RuntimeOptions, WorkerLimits};
use flowenrich::transforms::wasm::swap::SharedComponent;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[allow(dead_code)] // shared with the other benchmarks
mod support;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let batches = support::option(&args, "--batches").unwrap_or(3_000);
    let swap_every = support::option(&args, "--swap-every").unwrap_or(50) as u64;
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let started = Instant::now();
    let first = runtime.load(flowenrich::embedded::COMPONENT).unwrap();
    let compile = started.elapsed();
    let second = runtime.load(flowenrich::embedded::COMPONENT).unwrap();
    let shared = Arc::new(SharedComponent::new(first.clone()));
    let table = Arc::new(Table::default());
    let text: String = (0..1000)
        .map(|i| {
            format!("2 123456789012 eni-1 10.0.0.1 10.0.0.2 {i} 443 6 1 10 200 260 ACCEPT OK\n")
        })
        .collect();

    // The swapper installs a new generation whenever the worker has done `swap_every`
    // more batches.
    let done = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (shared, done) = (shared.clone(), done.clone());
        std::thread::spawn(move || {
            let mut next = swap_every;
            let mut flip = false;
            while next < batches as u64 {
                if done.load(Ordering::Relaxed) >= next {
                    shared.install(if flip { first.clone() } else { second.clone() });
                    flip = !flip;
                    next += swap_every;
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };

    let mut worker = runtime
        .worker(&shared.current().component, &WorkerLimits::default())
        .unwrap();
    let mut generation = 1;
    let (mut after_swap, mut others) = (Vec::new(), Vec::new());
    for n in 0..batches {
        let started = Instant::now();
        let current = shared.current();
        let swapped = current.number != generation;
        if swapped {
            worker.set_component(&current.component);
            generation = current.number;
        }
        let out = worker.process(None, &text, false, &table).unwrap();
        assert_eq!(out.emitted, 1000);
        let elapsed = started.elapsed();
        if swapped {
            after_swap.push(elapsed);
        } else {
            others.push(elapsed);
        }
        done.store(n as u64 + 1, Ordering::Relaxed);
    }
    swapper.join().unwrap();
    after_swap.sort();
    others.sort();
    println!(
        "host::transforms::swap: {batches} batches of 1,000 lines, a new generation every {swap_every} batches ({} swaps); compiling the component took {:.1} ms (off the hot path)",
        after_swap.len(),
        compile.as_secs_f64() * 1e3
    );
    println!(
        "{:>32}  {:>10}  {:>10}  {:>10}",
        "batch latency (ms)", "median", "p99", "worst"
    );
    for (name, set) in [
        ("first batch after a swap", &after_swap),
        ("every other batch", &others),
    ] {
        println!(
            "{name:>32}  {:>10.3}  {:>10.3}  {:>10.3}",
            percentile(set, 0.5).as_secs_f64() * 1e3,
            percentile(set, 0.99).as_secs_f64() * 1e3,
            set.last().unwrap().as_secs_f64() * 1e3
        );
    }
    let added = percentile(&after_swap, 0.5).saturating_sub(percentile(&others, 0.5));
    println!(
        "(a swap adds {:.3} ms to the median batch; the worst batch after a swap is {:.3} ms over the median batch)",
        added.as_secs_f64() * 1e3,
        after_swap
            .last()
            .unwrap()
            .saturating_sub(percentile(&others, 0.5))
            .as_secs_f64()
            * 1e3
    );
}
