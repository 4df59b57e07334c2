//! The `flowenrich` command line (DESIGN.md contract 1).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use flowenrich::metadata;
use flowenrich::runtime::{Runtime, RuntimeOptions};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWENRICH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Enrich {
            metadata,
            format,
            component,
        } => enrich(metadata, format, component),
    }
}

fn component_bytes(path: Option<&PathBuf>) -> Result<std::borrow::Cow<'static, [u8]>> {
    Ok(match path {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read component {}", path.display()))?
            .into(),
        None => flowenrich::embedded::COMPONENT.into(),
    })
}

fn enrich(metadata_files: Vec<PathBuf>, format: Option<String>, component: Option<PathBuf>) -> Result<ExitCode> {
    let (table, rejected) = metadata::load_files(&metadata_files)?;
    for (path, bad) in &rejected {
        tracing::warn!(
            message = "Rejected metadata line.",
            file = %path.display(),
            line_number = bad.line_number,
            error = %bad.error
        );
    }
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let component = runtime.load(&component_bytes(component.as_ref())?)?;
    let mut worker = runtime.worker(&component)?;
    if let Some(format) = &format
        && let Err(message) = worker.check_format(format)?
    {
        bail!("--format: {message}");
    }
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut stderr = std::io::BufWriter::new(std::io::stderr().lock());
    flowenrich::enrich_cli::run(&mut worker, &Arc::new(table), format, stdin, &mut stdout, &mut stderr)?;
    Ok(ExitCode::SUCCESS)
}
