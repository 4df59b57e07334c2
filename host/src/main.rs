//! The `flowenrich` command line (DESIGN.md contract 1).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use flowenrich::config::Pipeline;
use flowenrich::lifecycle::Lifecycle;
use flowenrich::metadata;
use flowenrich::runtime::{Runtime, RuntimeOptions, WorkerLimits};
use flowenrich::sinks::SinkConfig;
use flowenrich::topology::Topology;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Enrich AWS VPC flow logs with time-aware application metadata.
#[derive(Parser)]
#[command(name = "flowenrich", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its sources end or SIGINT/SIGTERM; then drain and flush.
    Run {
        /// Pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Check a pipeline: config, metadata, components (type-checked), formats, inputs.
    Validate {
        /// Pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Print the Druid Kinesis supervisor spec that ingests a pipeline's `druid` sink.
    DruidSpec {
        /// The pipeline file.
        pipeline: PathBuf,
        /// The `druid` sink's id, when the pipeline has several.
        #[arg(long)]
        sink: Option<String>,
    },
    /// Print the configuration reference (every key of a pipeline file, as Markdown).
    ConfigReference,
    /// Run component fixtures (`<dir>/<case>/input.log` + `expected.jsonl` ...).
    Test {
        /// Fixture folders, or folders of them; default `tests/fixtures`.
        #[arg(default_value = "tests/fixtures")]
        dirs: Vec<PathBuf>,
        /// Component to test instead of the built-in one.
        #[arg(long, value_name = "FILE.wasm")]
        component: Option<PathBuf>,
    },
    /// Enrich flow-log lines from stdin; JSON objects on stdout, rejected lines on stderr.
    Enrich {
        /// Metadata changelog (JSON Lines); repeat to combine, later files win ties.
        #[arg(long = "metadata", value_name = "FILE")]
        metadata: Vec<PathBuf>,
        /// Flow-log format (`${version} ${srcaddr} ...` or plain names); default: AWS v2.
        #[arg(long)]
        format: Option<String>,
        /// Component to use instead of the built-in one.
        #[arg(long, value_name = "FILE.wasm")]
        component: Option<PathBuf>,
    },
    /// The traffic report of a `druid` sink's rollup files (`flows-*.ndjson` in DIR, what
    /// Druid would hold): text on stdout, or the HTML page with `--html`.
    Report {
        /// The `druid` sink's `path`.
        dir: PathBuf,
        /// Write the HTML page here instead of printing the text report.
        #[arg(long, value_name = "OUT.html")]
        html: Option<PathBuf>,
        /// Rows per table.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Applications drawn as nodes of their own; the rest are one `(other)` node.
        #[arg(long, default_value_t = 40)]
        limit: usize,
        /// Attribute naming the application (`src_<key>` / `dst_<key>` dimensions).
        #[arg(long, default_value = "app")]
        app_key: String,
        /// Attribute naming the region.
        #[arg(long, default_value = "region")]
        region_key: String,
        /// Attribute naming the availability zone.
        #[arg(long, default_value = "zone")]
        zone_key: String,
    },
}

fn main() -> ExitCode {
    flowenrich::util::keep_freed_buffers();
    let cli = Cli::parse();
    // `enrich` keeps stderr for its JSON rejections, so it logs only errors by default.
    let default_level = match cli.command {
        Command::Enrich { .. } => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWENRICH_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", flowenrich::util::error_chain(error.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { pipeline } => run(pipeline),
        Command::Validate { pipeline } => validate(pipeline),
        Command::Test { dirs, component } => test(dirs, component),
        Command::DruidSpec { pipeline, sink } => druid_spec(pipeline, sink),
        Command::ConfigReference => {
            print!("{}", flowenrich::config::reference::markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Enrich {
            metadata,
            format,
            component,
        } => enrich(metadata, format, component),
        Command::Report {
            dir,
            html,
            top,
            limit,
            app_key,
            region_key,
            zone_key,
        } => {
            use flowenrich::sinks::report;
            let keys = report::ReportKeys::new(&app_key, &region_key, &zone_key);
            let (aggregated, files) = report::Report::from_rollup_dir(&dir, &keys)
                .with_context(|| format!("reading the rollup files in {}", dir.display()))?;
            if files == 0 {
                anyhow::bail!("{}: no rollup files (flows-*.ndjson)", dir.display());
            }
            match html {
                Some(out) => {
                    anyhow::ensure!(limit >= 2, "--limit must be at least 2");
                    let source = format!("{files} rollup files in {}", dir.display());
                    let page = report::html::render(&aggregated, limit, top, &source);
                    std::fs::write(&out, page)
                        .with_context(|| format!("writing {}", out.display()))?;
                    println!("HTML report: {}", out.display());
                }
                None => print!("{}", aggregated.render(top)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn druid_spec(path: PathBuf, sink: Option<String>) -> Result<ExitCode> {
    let pipeline = Pipeline::load(&path)?;
    let druid: Vec<(&String, _)> = pipeline
        .config
        .sinks
        .iter()
        .filter_map(|(id, s)| match s {
            SinkConfig::Druid(druid) => Some((id, druid.spec())),
            _ => None,
        })
        .filter(|(id, _)| sink.as_ref().is_none_or(|wanted| wanted == *id))
        .collect();
    let [(id, spec)] = druid.as_slice() else {
        anyhow::bail!(
            "{}: {} `druid` sinks{}; name one with --sink",
            path.display(),
            druid.len(),
            sink.map(|s| format!(" with id `{s}`")).unwrap_or_default()
        );
    };
    let spec = flowenrich::sinks::druid::supervisor_spec(spec)
        .map_err(|e| anyhow::anyhow!("sinks.{id}: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(ExitCode::SUCCESS)
}

fn component_bytes(path: Option<&PathBuf>) -> Result<std::borrow::Cow<'static, [u8]>> {
    Ok(flowenrich::embedded::component_bytes(
        path.map(PathBuf::as_path),
    )?)
}

fn enrich(
    metadata_files: Vec<PathBuf>,
    format: Option<String>,
    component: Option<PathBuf>,
) -> Result<ExitCode> {
    // The metadata loads on a thread of its own while the component compiles.
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let (loaded, component) = std::thread::scope(|scope| {
        let loaded = scope.spawn(|| metadata::load_files(&metadata_files));
        let component =
            component_bytes(component.as_ref()).and_then(|bytes| Ok(runtime.load(&bytes)?));
        let loaded = loaded
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (loaded, component)
    });
    let (table, rejected) = loaded?;
    let component = component?;
    // Bad metadata lines are reported like rejected flow lines: one JSON object each.
    for (path, bad) in &rejected {
        let record = serde_json::json!({
            "error": format!("metadata {} line {}: {}", path.display(), bad.line_number, bad.error),
            "line": bad.line,
        });
        eprintln!("{record}");
    }
    let mut worker = runtime.worker(&component, &WorkerLimits::default())?;
    if let Some(format) = &format {
        match worker.check_format(format) {
            Ok(_) => {}
            Err(flowenrich::runtime::CallError::InvalidFormat(message)) => {
                bail!("--format: {message}")
            }
            Err(error) => return Err(error.into()),
        }
    }
    let mut stdin = std::io::BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut stderr = std::io::BufWriter::new(std::io::stderr().lock());
    flowenrich::enrich_cli::run(
        &mut worker,
        &Arc::new(table),
        format,
        &mut stdin,
        &mut stdout,
        &mut stderr,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn runtime_for(pipeline: &Pipeline) -> Result<Runtime> {
    let max_memory_mib = pipeline
        .config
        .transforms
        .values()
        .map(|t| t.kind().memory_limit_mib())
        .max()
        .unwrap_or(1);
    Ok(Runtime::new(RuntimeOptions {
        epoch_interruption: true,
        max_memory_bytes: max_memory_mib.saturating_mul(1 << 20),
        ..RuntimeOptions::default()
    })?)
}

fn validate(path: PathBuf) -> Result<ExitCode> {
    let pipeline = Pipeline::load(&path)?;
    for warning in pipeline.delivery_warnings() {
        eprintln!("warning: {warning} (see docs/delivery.md)");
    }
    let runtime = runtime_for(&pipeline)?;
    let (sources, transforms, sinks) = (
        pipeline.config.sources.len(),
        pipeline.config.transforms.len(),
        pipeline.config.sinks.len(),
    );
    Topology::build(pipeline, &runtime).with_context(|| format!("{}", path.display()))?;
    println!(
        "{}: ok ({sources} sources, {transforms} transforms, {sinks} sinks)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(path: PathBuf) -> Result<ExitCode> {
    let pipeline = Pipeline::load(&path)?;
    for warning in pipeline.delivery_warnings() {
        eprintln!("warning: {warning} (see docs/delivery.md)");
    }
    let runtime = runtime_for(&pipeline)?;
    let api = pipeline.config.global.api.as_ref().map(|api| api.address);
    let topology =
        Topology::build(pipeline, &runtime).with_context(|| format!("{}", path.display()))?;
    if let Some(address) = api {
        let bound =
            flowenrich::api::serve(address, topology.metrics.clone(), topology.control.clone())?;
        eprintln!("admin endpoint: http://{bound}/metrics");
    }
    let lifecycle = Lifecycle::new();
    watch_signals(lifecycle.clone(), topology.control.clone())?;
    let summary = topology.run(&runtime, lifecycle)?;
    for (_, report) in &summary.reports {
        println!("{report}");
    }
    for (id, totals) in &summary.metrics {
        let errors: u64 = totals.errors.values().sum();
        let kinds: Vec<String> = totals
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        let errors = if kinds.is_empty() {
            errors.to_string()
        } else {
            format!("{errors} ({})", kinds.join(", "))
        };
        let counters: String = totals
            .counters
            .iter()
            .map(|(name, n)| format!(" {name} {n}"))
            .chain(totals.gauges.iter().map(|(name, v)| format!(" {name} {v}")))
            .collect();
        eprintln!(
            "{id}: received {} sent {} errors {errors} discarded {}{counters}",
            totals.received, totals.sent, totals.discarded
        );
    }
    if let Some(peak) = peak_rss_kib() {
        eprintln!("process: peak_rss_mib {}", peak / 1024);
    }
    if let Some(failure) = summary.failure {
        eprintln!(
            "error: {} failed: {}; nothing it did not deliver was acknowledged",
            failure.component, failure.cause
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The process's peak resident set size in KiB (Linux: `VmHWM` in `/proc/self/status`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// First SIGINT/SIGTERM: stop sources, drain, flush, exit 0 (1 when the drain deadline
/// passes with batches undelivered). Second: exit at once (130). SIGHUP: look at every
/// transform's component file now (hot swap).
fn watch_signals(
    lifecycle: Arc<Lifecycle>,
    reload: Arc<flowenrich::control::Control>,
) -> Result<()> {
    // The listeners are registered here, so a signal right after start-up is not missed.
    let registered = flowenrich::aws::runtime().block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    flowenrich::aws::runtime().spawn(async move {
        let (mut interrupt, mut terminate, mut hangup) = registered;
        let mut signalled = false;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {
                    eprintln!("SIGHUP: checking component files for a new version");
                    reload.request_reload();
                    continue;
                }
            }
            if std::mem::replace(&mut signalled, true) {
                eprintln!("second signal: exiting without draining");
                std::process::exit(130);
            }
            lifecycle.request_stop();
            eprintln!("signal received: draining in-flight batches (send again to exit at once)");
        }
    });
    Ok(())
}

fn test(dirs: Vec<PathBuf>, component: Option<PathBuf>) -> Result<ExitCode> {
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let loaded = runtime.load(&component_bytes(component.as_ref())?)?;
    let mut cases = Vec::new();
    for dir in &dirs {
        if dir.join("input.log").is_file() {
            cases.push(dir.clone());
        } else {
            cases.extend(
                flowenrich::fixtures::cases(dir)
                    .with_context(|| format!("cannot list {}", dir.display()))?,
            );
        }
    }
    if cases.is_empty() {
        bail!("no fixture cases found in {dirs:?}");
    }
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let mut worker = runtime.worker(&loaded, &WorkerLimits::default())?;
        match flowenrich::fixtures::run_case(case, &mut worker) {
            Ok(()) => {
                passed += 1;
                println!("ok      {}", case.display());
            }
            Err(message) => {
                failed += 1;
                println!(
                    "FAILED  {}\n        {}",
                    case.display(),
                    message.to_string().replace('\n', "\n        ")
                );
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
