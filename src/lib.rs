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
//! Resilience: one set of circuit breakers per node ([`Breakers`]), shared by every role;
//! every role gets the store behind the store breaker ([`GuardedStore`]), itself over the
//! fault-injecting wrapper when `[faults] enabled` (test configuration).
//!
//! Shutdown order, within `server.shutdown_timeout` counted from the signal: stop
//! accepting requests and finish the in-flight ones (workers and indexes keep running
//! for them), then stop the spill forwarder (what it has not forwarded stays in the spill
//! buffer for the next start), then let every worker finish and ack its batch, then let
//! every index shard commit and ack. Anything unacked at a hard stop is redelivered at the
//! next start, so stopping early is safe, only slower to recover.

pub mod series;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_core::catalog::{Catalog, CollectionLimits};
use sluice_core::config::Config;
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::faults::Faults;
use sluice_core::log::Log;
use sluice_core::resilience::Breakers;
use sluice_core::store::Store;
use sluice_indexer::Indexer;
use sluice_ingest::spill::Spill;
use sluice_ingest::{AppState, StartupGate};
use sluice_queue::{EmbeddedLog, GuardedLog, JetStreamConfig, JetStreamLog};
use sluice_store::{EmbeddedStore, FaultInjectingStore, GuardedStore};
use sluice_workers::{DeadLetterQueue, TombstoneCompactor, WorkerPool};
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

/// The spill buffer under `data_dir/spill`: distributed mode only (the embedded log is
/// local, so there is nothing to spill to), unless `[spill] enabled = false`.
async fn open_spill(
    config: &Config,
    log: &Arc<dyn Log>,
    breakers: &Breakers,
) -> anyhow::Result<Option<Arc<Spill>>> {
    let dir = config.server.data_dir.join("spill");
    if config.log.nats_url.is_none() || !config.spill.enabled {
        if dir.exists() {
            tracing::warn!(
                dir = %dir.display(),
                "a spill buffer exists but spilling is off: batches it may hold are not \
                 forwarded until the node runs on JetStream with [spill] enabled again"
            );
        }
        return Ok(None);
    }
    let local: Arc<dyn Log> =
        EmbeddedLog::open(&dir, &config.log).context("opening the spill buffer")?;
    let spill = Spill::open(
        local,
        log.clone(),
        breakers.log_publish.clone(),
        config.spill.max_size.as_u64(),
    )
    .await
    .context("opening the spill buffer")?;
    Ok(Some(spill))
}

/// How often the DLQ depth gauge picks up entries appended by the workers.
const DLQ_DEPTH_INTERVAL: Duration = Duration::from_secs(1);

/// The roles of a running node, between recovery and shutdown.
struct Node {
    state: AppState,
    workers: WorkerPool,
    workers_stop: CancellationToken,
    indexer: Arc<Indexer>,
    indexer_stop: CancellationToken,
    spill_stop: CancellationToken,
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

/// Opens the log, the store and the catalog, and starts the workers, the indexes and the
/// spill forwarder (recovery: replaying unacked work, rebuilding missing indexes).
async fn start_node(config: &Config, metrics: Option<PrometheusHandle>) -> anyhow::Result<Node> {
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;

    let breakers = Breakers::new(&config.resilience, config.log.request_timeout);
    let faults = if config.faults.enabled {
        tracing::warn!("fault injection is enabled: test configuration only");
        Faults::enabled()
    } else {
        Faults::disabled()
    };
    let raw_log = open_log(config).await?;
    // Every role's log calls go through the log breakers; only the spill forwarder, which
    // paces its own retries through `log_publish`, uses the raw log.
    let log: Arc<dyn Log> = GuardedLog::new(
        raw_log.clone(),
        breakers.log_publish.clone(),
        breakers.log_consume.clone(),
    );
    let mut store: Arc<dyn Store> =
        EmbeddedStore::open(&data_dir.join("store")).context("opening the embedded store")?;
    if faults.is_enabled() {
        store = FaultInjectingStore::new(store, faults.clone());
    }
    let store: Arc<dyn Store> = GuardedStore::new(store, breakers.store.clone());
    let catalog = Arc::new(
        Catalog::load(store.clone(), config.ingest.default_shards)
            .await
            .context("loading the collection catalog")?
            .with_limits(CollectionLimits {
                max_collections: config.ingest.max_collections,
                max_auto_created: config.ingest.max_auto_created_collections,
            }),
    );
    // Retires deleted collections' metric series (see `series`).
    if let Some(live) = series::LiveSeries::installed() {
        tokio::spawn(live.keep_alive(catalog.clone()));
    }

    let workers_stop = CancellationToken::new();
    let indexer_stop = CancellationToken::new();
    let workers = WorkerPool::start(
        config.workers.clone(),
        config.log.ack_wait,
        log.clone(),
        store.clone(),
        catalog.clone(),
        breakers.clone(),
        workers_stop.clone(),
    )
    .await
    .context("starting the worker pool")?;
    tokio::spawn(workers.forget_deleted_collections(catalog.subscribe()));
    let indexer = Indexer::start(
        config.indexer.clone(),
        config.store.tombstone_schedule(),
        data_dir,
        log.clone(),
        store.clone(),
        catalog.clone(),
        breakers.clone(),
        faults.clone(),
        indexer_stop.clone(),
    )
    .await
    .context("starting the indexer")?;

    let spill_stop = CancellationToken::new();
    let spill = open_spill(config, &raw_log, &breakers).await?;
    let forwarder = spill
        .clone()
        .map(|spill| tokio::spawn(spill.forward(spill_stop.clone())));

    // Compaction is only deletes of dead records: stopping it with the workers, even in
    // the middle of a pass, is safe.
    tokio::spawn(
        TombstoneCompactor::new(store.clone(), catalog.clone(), log.clone(), &config.store)
            .run(workers_stop.clone()),
    );

    let dlq = DeadLetterQueue::new(log.clone());
    tokio::spawn(
        dlq.clone()
            .keep_depth_current(DLQ_DEPTH_INTERVAL, workers_stop.clone()),
    );
    let state = AppState::new(
        config.ingest.clone(),
        log,
        spill,
        store,
        catalog,
        indexer.clone(),
        dlq,
        metrics,
        breakers,
        faults,
    );
    Ok(Node {
        state,
        workers,
        workers_stop,
        indexer,
        indexer_stop,
        spill_stop,
        forwarder,
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
    let server_config = config.server.clone();
    let serving = gate.router();
    let http_shutdown = shutdown.clone();
    let mut http = tokio::spawn(async move {
        sluice_ingest::serve(listener, serving, &server_config, http_shutdown).await
    });

    let node = match start_node(&config, metrics).await {
        Ok(node) => node,
        Err(error) => {
            shutdown.cancel();
            let _ = http.await;
            return Err(error);
        }
    };
    let upkeep = shutdown.child_token();
    node.state.spawn_upkeep(upkeep.clone());
    node.state
        .set_max_result_window(config.indexer.max_result_window);
    node.state.set_ready();
    gate.open(sluice_ingest::router(
        node.state.clone(),
        config.server.body_read_timeout,
    ));
    tracing::info!(%address, data_dir = %config.server.data_dir.display(), "sluice is serving");

    tokio::select! {
        // Shutdown first: the server also stops once the token is cancelled, and when
        // both are ready that is the shutdown, not the server failing.
        biased;
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
        spill_stop,
        forwarder,
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
        spill_stop.cancel();
        if let Some(forwarder) = forwarder {
            let _ = forwarder.await;
        }
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
