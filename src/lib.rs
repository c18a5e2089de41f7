//! The `sluice` node: wires the log, the store, the catalog, the worker pool, the index
//! shards and the HTTP API together, and shuts them down in order.
//!
//! [`run`] is the injected entry point (tests call it with their own listener and
//! shutdown token); `main` only parses the command line and the configuration.
//!
//! Shutdown order, within `server.shutdown_timeout`: stop accepting requests and finish
//! the in-flight ones, then let every worker finish and ack its batch, then let every
//! index shard commit and ack. Anything unacked at a hard stop is redelivered at the next
//! start, so stopping early is safe, only slower to recover.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_core::catalog::Catalog;
use sluice_core::config::Config;
use sluice_core::log::Log;
use sluice_core::store::Store;
use sluice_indexer::Indexer;
use sluice_ingest::AppState;
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

/// Runs a node until `shutdown` is cancelled, serving on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    config.validate()?;
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;

    let log = open_log(&config).await?;
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
    state.set_ready();
    tracing::info!(address = %listener.local_addr()?, data_dir = %data_dir.display(), "sluice is serving");

    sluice_ingest::serve(listener, state, &config.server, shutdown.clone())
        .await
        .context("serving HTTP")?;

    let drain = async {
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
    tracing::info!("sluice stopped");
    Ok(())
}
