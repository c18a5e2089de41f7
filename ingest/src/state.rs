//! The handles shared by every request handler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sluice_core::catalog::Catalog;
use sluice_core::config::IngestConfig;
use sluice_core::config::LOG_MESSAGE_RESERVE;
use sluice_core::dlq::DeadLetterAdmin;
use sluice_core::document::LineLimits;
use sluice_core::faults::Faults;
use sluice_core::log::Log;
use sluice_core::resilience::Breakers;
use sluice_core::search::SearchService;
use sluice_core::store::Store;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::ack_floors::AckFloors;
use crate::admission::Backlog;
use crate::id_locks::IdLocks;
use crate::spill::Spill;
use crate::visibility::Visibility;

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: IngestConfig,
    pub log: Arc<dyn Log>,
    /// Distributed mode: where batches go while the log is down.
    pub spill: Option<Arc<Spill>>,
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    /// Searches, and the indexed copies read while the store is down.
    pub search: Arc<dyn SearchService>,
    pub metrics: Option<PrometheusHandle>,
    /// The node's breakers (health reports the open ones; reads check the store's).
    pub breakers: Breakers,
    /// The node's fault plans, set through `/_internal_/faults` when enabled.
    pub faults: Arc<Faults>,
    pub ready: AtomicBool,
    pub ingest_permits: Arc<Semaphore>,
    pub visibility: Visibility,
    pub backlog: Arc<Backlog>,
    /// Listing, replaying and purging dead letters.
    pub dlq: Arc<dyn DeadLetterAdmin>,
    /// `indexer.max_result_window`, as the OpenAPI document states it.
    pub max_result_window: AtomicUsize,
    /// Serializes the writes that depend on the current document, per id.
    pub id_locks: IdLocks,
}

impl AppState {
    /// Bundles the handles. `metrics` renders `/metrics` (absent: an empty page).
    /// `breakers` and `faults` are the node's, shared with the other roles (appends go
    /// through `breakers.log_publish`); `spill` (distributed mode only) takes the batches
    /// the log cannot take now. `search` and `dlq` are the indexer's and the workers'
    /// services, local or remote: the HTTP layer knows them only by their ports.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: IngestConfig,
        log: Arc<dyn Log>,
        spill: Option<Arc<Spill>>,
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        search: Arc<dyn SearchService>,
        dlq: Arc<dyn DeadLetterAdmin>,
        metrics: Option<PrometheusHandle>,
        breakers: Breakers,
        faults: Arc<Faults>,
    ) -> Self {
        let ingest_permits = Arc::new(Semaphore::new(config.max_in_flight_requests));
        let floors = AckFloors::new(log.clone());
        let visibility = Visibility::new(
            log.clone(),
            floors.clone(),
            spill.clone(),
            config.visibility_timeout,
        );
        let backlog = Arc::new(Backlog::new(
            log.clone(),
            floors,
            catalog.clone(),
            config.max_backlog_docs,
        ));
        Self {
            inner: Arc::new(Inner {
                config,
                log,
                spill,
                store,
                catalog,
                search,
                metrics,
                breakers,
                faults,
                ready: AtomicBool::new(false),
                ingest_permits,
                visibility,
                backlog,
                dlq,
                max_result_window: AtomicUsize::new(
                    sluice_core::config::IndexerConfig::default().max_result_window,
                ),
                id_locks: IdLocks::default(),
            }),
        }
    }

    /// Starts the API's background upkeep until `shutdown`: the backlog ledger behind
    /// admission.
    pub fn spawn_upkeep(&self, shutdown: CancellationToken) {
        tokio::spawn(self.inner.backlog.clone().run(shutdown));
    }

    /// Sets the largest `limit + offset` of a search (`indexer.max_result_window`) the
    /// API document states; the indexer enforces it.
    pub fn set_max_result_window(&self, window: usize) {
        self.inner
            .max_result_window
            .store(window, Ordering::Release);
    }

    pub(crate) fn max_result_window(&self) -> usize {
        self.inner.max_result_window.load(Ordering::Acquire)
    }

    /// Marks recovery done: the healthcheck answers healthy from now on.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// The per-line limits: `ingest.max_line_size`, lowered to what the log takes in one
    /// message when it has a limit (JetStream's `max_payload`), less the room the
    /// envelopes around a document need, so that every document accepted fits the log.
    pub(crate) fn line_limits(&self) -> LineLimits {
        let configured =
            usize::try_from(self.inner.config.max_line_size.as_u64()).unwrap_or(usize::MAX);
        let log_limit = self
            .inner
            .log
            .max_message_bytes()
            .map_or(usize::MAX, |max| max.saturating_sub(LOG_MESSAGE_RESERVE));
        LineLimits {
            max_line_bytes: configured.min(log_limit),
            max_depth: self.inner.config.max_depth,
        }
    }
}
