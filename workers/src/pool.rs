//! The worker pool: N workers sharing the durable DOCS consumer.
//!
//! Each worker owns one handle on the shared consumer
//! ([`sluice_core::subjects::WORKERS_CONSUMER`], filter `sluice.docs.>`), so the log hands
//! each message to exactly one worker of one pool, in this process or another. A worker
//! loops: fetch up to `fetch_batch` messages (waiting up to [`FETCH_WAIT`]), handle them
//! one after another ([`crate::batch`]), repeat. While it works through a batch it reports
//! the messages it has not settled yet as in progress every third of `ack_wait`, so a
//! batch slowed by retries is not delivered again behind its back (which would also
//! spend the messages' `max_deliver` budget and send them to the DLQ).
//!
//! Backpressure is the log's: at most `max_ack_pending` messages are delivered and not
//! yet settled across the pool, so a slow store slows fetching instead of growing memory.
//!
//! Outages: a worker fetches only while the `log_consume` breaker permits and the store
//! breaker is closed; while the store is down the pool stops pulling and resumes when a
//! probe succeeds ([`crate::outage`]). Fetches go through the `log_consume` breaker.
//!
//! Shutdown: when the token is cancelled, a worker waiting in `fetch` stops at once; a
//! worker holding messages finishes them (retries are cut short and end in a nak, never
//! in a lost message), settles them, and stops. [`WorkerPool::wait_stopped`] returns once
//! every worker has.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::catalog::{Catalog, CatalogChange};
use sluice_core::config::WorkersConfig;
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::log::{Consumer, ConsumerConfig, Delivery, Log};
use sluice_core::resilience::{BreakerState, Breakers};
use sluice_core::store::Store;
use sluice_core::subjects::{StreamKind, WORKERS_CONSUMER};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::batch::BatchHandler;
use crate::retry::RetryPolicy;
use crate::WorkerError;

/// Longest a fetch waits for a message before the worker checks in again.
pub const FETCH_WAIT: Duration = Duration::from_secs(1);

/// Shortest interval between two in-progress reports of one batch.
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// A running pool of store writers.
pub struct WorkerPool {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    handler: Arc<BatchHandler>,
}

impl WorkerPool {
    /// Starts `config.effective_count()` workers sharing the durable DOCS consumer
    /// `sluice_core::subjects::WORKERS_CONSUMER` (filter "sluice.docs.>").
    ///
    /// `store` should already be behind `breakers.store` (`sluice_store::GuardedStore`):
    /// the pool reads that breaker to pause, and relies on the store's calls to move it.
    pub async fn start(
        config: WorkersConfig,
        ack_wait: Duration,
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        breakers: Breakers,
        shutdown: CancellationToken,
    ) -> Result<WorkerPool, WorkerError> {
        if config.fetch_batch == 0 {
            return Err(WorkerError::InvalidConfig(
                "workers.fetch_batch must be at least 1".into(),
            ));
        }
        if config.max_ack_pending == 0 {
            return Err(WorkerError::InvalidConfig(
                "workers.max_ack_pending must be at least 1".into(),
            ));
        }
        let count = config.effective_count();
        let consumer_config = ConsumerConfig {
            durable_name: WORKERS_CONSUMER.to_owned(),
            filter_subject: StreamKind::Docs.all_subjects().to_owned(),
            ack_wait,
            max_ack_pending: config.max_ack_pending,
        };
        // Open every handle before spawning anything, so a log that refuses fails the
        // start instead of leaving a half-started pool behind.
        let mut consumers = Vec::with_capacity(count);
        for _ in 0..count {
            consumers.push(
                log.consumer(StreamKind::Docs, consumer_config.clone())
                    .await
                    .map_err(WorkerError::Consumer)?,
            );
        }
        // Deletions a crash interrupted go on once the workers run.
        crate::collection_drop::resume(&catalog, log.as_ref())
            .await
            .map_err(WorkerError::ResumeDeletions)?;
        let handler = Arc::new(BatchHandler::new(
            &config,
            log,
            store,
            catalog,
            breakers,
            shutdown.clone(),
        ));
        let tracker = TaskTracker::new();
        for (worker, consumer) in consumers.into_iter().enumerate() {
            let run = run_worker(
                consumer,
                Arc::clone(&handler),
                config.fetch_batch,
                ack_wait,
                shutdown.clone(),
            );
            tracker.spawn(run.instrument(tracing::info_span!("worker", worker)));
        }
        tracker.close();
        info!(workers = count, "worker pool started");
        Ok(WorkerPool {
            tracker,
            shutdown,
            handler,
        })
    }

    /// Follows the catalog's changes until they end: a deleted collection's versions leave
    /// the dedup cache, so a collection created again under its name takes the same
    /// documents again (the store dropped them with the deleted one). Spawn it once,
    /// subscribed before any collection can be deleted.
    pub fn forget_deleted_collections(
        &self,
        mut changes: broadcast::Receiver<CatalogChange>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let handler = Arc::clone(&self.handler);
        async move {
            loop {
                match changes.recv().await {
                    Ok(CatalogChange::Deleted(name)) => handler.forget_collection(&name),
                    Ok(CatalogChange::Upserted(_)) => {}
                    // Changes were missed: which collections went is unknown, so forget
                    // everything (the cache refills from the store).
                    Err(broadcast::error::RecvError::Lagged(_)) => handler.forget_everything(),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// After `shutdown` is cancelled: waits until every worker finished (and acked) its batch.
    pub async fn wait_stopped(self) {
        self.tracker.wait().await;
        if self.shutdown.is_cancelled() {
            info!("worker pool stopped");
        }
    }
}

async fn run_worker(
    consumer: Box<dyn Consumer>,
    handler: Arc<BatchHandler>,
    fetch_batch: usize,
    ack_wait: Duration,
    shutdown: CancellationToken,
) {
    let progress_every = progress_interval(ack_wait);
    let policy: RetryPolicy = *handler.policy();
    let mut fetch_errors: u32 = 0;
    let deps = handler.dependencies();
    while !shutdown.is_cancelled() {
        // Pull nothing the store cannot take: during an outage messages stay in the log.
        if !deps.wait_until_usable(&shutdown).await {
            break;
        }
        let fetch = consumer.fetch(fetch_batch, FETCH_WAIT);
        let fetched = tokio::select! {
            // Dropping a pending fetch is safe: anything it had taken but not returned
            // stays unacked and is delivered again after ack_wait.
            () = shutdown.cancelled() => break,
            fetched = fetch => fetched,
        };
        let deliveries = match fetched {
            Ok(deliveries) => {
                fetch_errors = 0;
                deliveries
            }
            Err(error) => {
                fetch_errors = fetch_errors.saturating_add(1);
                if deps.breakers.log_consume.state() == BreakerState::Open {
                    // The gate above waits for the breaker; no extra backoff on top.
                    continue;
                }
                let delay = policy.nak_delay(fetch_errors);
                warn!(%error, ?delay, "fetch from DOCS failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // Messages of this batch not yet settled keep their ack wait restarted while
        // earlier ones are handled (retries, a slow store), so none is delivered to
        // another worker meanwhile and its delivery count does not grow.
        let settled = AtomicUsize::new(0);
        let handle_batch = async {
            for (i, delivery) in deliveries.iter().enumerate() {
                if i > 0 {
                    // Crash tests: earlier messages of this batch are applied, later ones not.
                    crash_point::reached(CrashPoint::WorkerBatch);
                }
                handler
                    .handle(consumer.as_ref(), delivery)
                    .instrument(tracing::debug_span!(
                        "docs_message",
                        subject = %delivery.subject,
                        seq = delivery.seq.0,
                        deliveries = delivery.delivery_count
                    ))
                    .await;
                settled.store(i + 1, Ordering::Relaxed);
            }
        };
        tokio::select! {
            biased;
            () = handle_batch => {}
            () = keep_in_progress(consumer.as_ref(), &deliveries, &settled, progress_every) => {}
        }
    }
}

/// Every `every`, reports the batch's unsettled messages (from index `settled` on) as in
/// progress. Never returns; dropped once the batch is handled.
async fn keep_in_progress(
    consumer: &dyn Consumer,
    deliveries: &[Delivery],
    settled: &AtomicUsize,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let unsettled = &deliveries[settled.load(Ordering::Relaxed).min(deliveries.len())..];
        if unsettled.is_empty() {
            continue;
        }
        if let Err(error) = consumer.in_progress(unsettled).await {
            // Not fatal: at worst the log delivers them again, and applying is idempotent.
            debug!(%error, messages = unsettled.len(), "in-progress report failed");
        }
    }
}

/// How often a worker reports a batch in progress: well inside the ack wait, so one late
/// report does not let it expire.
fn progress_interval(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(MIN_PROGRESS_INTERVAL)
}
