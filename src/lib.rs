//! The `sluice` node: wires the log, the store, the catalog, the worker pool, the index
//! shards and the HTTP API together, and shuts them down in order.
//!
//! [`run`] is the injected entry point (tests call it with their own listener and
//! shutdown token); `main` only parses the command line and the configuration.
//!
//! Start-up: the listener is served before anything else, through a
//! [`StartupGate`] that answers `503 starting` while the log, the store and the indexes
//! recover; then the full API takes over and the healthcheck answers healthy.
//!
//! Shutdown order, within `server.shutdown_timeout` counted from the signal: stop
//! accepting requests and finish the in-flight ones (workers and indexes keep running
//! for them), then let every worker finish and ack its batch, then let every index shard
//! commit and ack. Anything unacked at a hard stop is redelivered at the next start, so
//! stopping early is safe, only slower to recover.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_core::catalog::Catalog;
use sluice_core::config::Config;
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::log::Log;
use sluice_core::store::Store;
use sluice_indexer::Indexer;
use sluice_ingest::{AppState, StartupGate};
use sluice_queue::{EmbeddedLog, JetStreamConfig, JetStreamLog};
use sluice_store::EmbeddedStore;
use sluice_workers::WorkerPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The log: JetStream when `log.nats_url` is set, else the embedded log.
async fn open_log(config: &Config) -> anyhow::Result<Arc<dyn Log>> {
    match &config.log.nats_url {
        Some(url) => {
            let jetstream = JetStreamConfig {
                url: url.clone(),
                replicas: config.log.replicas,
                events_max_age: config.log.events_max_age,
                publish_timeout: config.log.request_timeout,
                ..JetStreamConfig::default()
            };
            let log = JetStreamLog::connect(jetstream)
                .await
                .context("connecting to NATS JetStream")?;
            tracing::info!("log: NATS JetStream");
            Ok(log)
        }
        None => {
            let log = EmbeddedLog::open(&config.server.data_dir.join("log"), &config.log)
                .context("opening the embedded log")?;
            Ok(log)
        }
    }
}

/// The roles of a running node, between recovery and shutdown.
struct Node {
    state: AppState,
    workers: WorkerPool,
    workers_stop: CancellationToken,
    indexer: Arc<Indexer>,
    indexer_stop: CancellationToken,
}

/// Opens the log, the store and the catalog, and starts the workers and the indexes
/// (recovery: replaying unacked work, rebuilding missing indexes).
async fn start_node(config: &Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Node> {
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;

    let log = open_log(config).await?;
    let store: Arc<dyn Store> =
        EmbeddedStore::open(&data_dir.join("store")).context("opening the embedded store")?;
    let catalog = Arc::new(
        Catalog::load(store.clone(), config.ingest.default_shards)
            .await
            .context("loading the collection catalog")?,
    );

    let workers_stop = CancellationToken::new();
    let indexer_stop = CancellationToken::new();
    let workers = WorkerPool::start(
        config.workers.clone(),
        config.log.ack_wait,
        log.clone(),
        store.clone(),
        workers_stop.clone(),
    )
    .await
    .context("starting the worker pool")?;
    let indexer = Indexer::start(
        config.indexer.clone(),
        data_dir,
        log.clone(),
        store.clone(),
        catalog.clone(),
        indexer_stop.clone(),
    )
    .await
    .context("starting the indexer")?;

    let state = AppState::new(
        config.ingest.clone(),
        log,
        store,
        catalog,
        indexer.clone(),
        metrics,
    );
    Ok(Node {
        state,
        workers,
        workers_stop,
        indexer,
        indexer_stop,
    })
}

/// Runs a node until `shutdown` is cancelled, serving on `listener`.
///
/// The listener answers at once: `503 starting` until recovery is done (see
/// [`StartupGate`]), then the full API. A cancellation during recovery takes effect once
/// recovery is done.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    config.validate()?;
    let address = listener.local_addr()?;
    let gate = StartupGate::new();
    let mut http = tokio::spawn(gate.clone().serve(listener, shutdown.clone()));

    let node = match start_node(&config, metrics).await {
        Ok(node) => node,
        Err(error) => {
            shutdown.cancel();
            let _ = http.await;
            return Err(error);
        }
    };
    node.state.set_ready();
    gate.open(sluice_ingest::router(node.state.clone()));
    tracing::info!(%address, data_dir = %config.server.data_dir.display(), "sluice is serving");

    tokio::select! {
        () = shutdown.cancelled() => {}
        served = &mut http => {
            // The server only stops on its own when it fails.
            served.context("the HTTP server task failed")?.context("serving HTTP")?;
            anyhow::bail!("the HTTP server stopped on its own");
        }
    }
    let stopping = Instant::now();
    tracing::info!("shutting down: intake stopped, finishing in-flight work");
    let Node {
        workers,
        workers_stop,
        indexer,
        indexer_stop,
        ..
    } = node;
    let drain = async {
        // In-flight requests finish first, with workers and indexes still running for
        // them (a `wait=searchable` request needs both).
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "HTTP server stopped with an error"),
            Err(error) => tracing::warn!(%error, "HTTP server task failed"),
        }
        crash_point::reached(CrashPoint::Shutdown);
        workers_stop.cancel();
        workers.wait_stopped().await;
        indexer_stop.cancel();
        indexer.wait_stopped().await;
    };
    if tokio::time::timeout(config.server.shutdown_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            "shutdown deadline passed; unacked work will be redelivered at the next start"
        );
    }
    tracing::info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "sluice stopped"
    );
    Ok(())
}
