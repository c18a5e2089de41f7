//! `sluice`: the command line. Parses arguments and configuration, installs logging,
//! metrics and signal handling, then hands over to [`sluice::run`]. `sluice dlq` talks
//! to a running node instead ([`dlq_cli`]).

mod dlq_cli;

/// mimalloc returns freed memory to the system soon after a burst (the system allocator
/// kept about half of a burst's peak resident); see the README's "Bad input and slow
/// clients".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_core::config::Config;
use tokio_util::sync::CancellationToken;

/// Longest the process waits, after a node stopped, for leftover blocking tasks.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Durable bulk ingestion and full-text search"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node: HTTP API, log, store, workers and index shards.
    Serve {
        /// TOML configuration file.
        #[arg(long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory (default ./data).
        #[arg(long, env = "SLUICE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:7171; port 0 picks a free one).
        #[arg(long, env = "SLUICE_LISTEN")]
        listen: Option<SocketAddr>,
    },
    /// Operates the dead-letter queue of a running node over HTTP.
    Dlq {
        #[command(subcommand)]
        command: dlq_cli::DlqCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
        } => serve(config, data_dir, listen),
        Command::Dlq { command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let output = runtime.block_on(dlq_cli::run(command))?;
            print!("{output}");
            Ok(())
        }
    }
}

fn serve(
    config_path: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    log_panics();

    let mut config = match &config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml(&text)?
        }
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        config.server.data_dir = dir;
    }
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    if let Some(url) = std::env::var("SLUICE_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        config.log.nats_url = Some(url);
    }
    config.apply_env(|name| std::env::var(name).ok())?;
    if std::env::var_os("SLUICE_SCYLLA_NODES").is_some() {
        anyhow::bail!(
            "SLUICE_SCYLLA_NODES is set, but this build has no ScyllaDB store yet; unset it to use the embedded store"
        );
    }
    config.validate()?;
    if let Some((point, count)) = sluice_core::crash_point::arm_from_env()? {
        tracing::warn!(
            point = point.name(),
            count,
            "crash point armed: the process will abort there (crash tests only)"
        );
    }

    // Series nobody updates expire after the idle timeout; `LiveSeries` keeps every live
    // one updated, so only a deleted collection's series go.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .idle_timeout(
            metrics_util::MetricKindMask::COUNTER | metrics_util::MetricKindMask::GAUGE,
            Some(config.server.metrics_idle_timeout),
        )
        .build_recorder();
    let metrics = recorder.handle();
    sluice::series::LiveSeries::install(recorder, config.server.metrics_idle_timeout)
        .context("installing the metrics recorder")?;
    sluice_core::metrics::describe();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.server.max_blocking_threads)
        // Idle blocking threads leave soon: a burst's threads do not outlive it long.
        .thread_keep_alive(Duration::from_secs(2))
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        // Tests and scripts read this line to learn the port when listening on port 0.
        println!("sluice listening on http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        tokio::spawn(handle_signals(shutdown.clone()));
        sluice::run(config, listener, shutdown, Some(metrics)).await
    });
    // Everything acknowledged is durable by now; do not wait on stray blocking tasks
    // (dropping the runtime would wait for them without a bound).
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    result
}

/// Installs a panic hook that logs every panic, on any thread, as one ERROR line with
/// its message and location (a handler panic then answers 500; a panic elsewhere is
/// found in the log, not only on a bare stderr).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic payload".to_owned());
        let location = info
            .location()
            .map_or_else(|| "unknown".to_owned(), ToString::to_string);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        // Captured only when RUST_BACKTRACE asks for it.
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, %location, %backtrace, "panic: {message}");
        } else {
            tracing::error!(thread, %location, "panic: {message}");
        }
    }));
}

/// First SIGTERM/SIGINT: graceful shutdown. Second: exit at once (still safe: the log
/// redelivers whatever was not acked).
async fn handle_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
