//! sluice's HTTP front door.
//!
//! Every route of the public API lives here: bulk NDJSON ingest, documents by id,
//! collections, search, health, metrics and the OpenAPI document. Handlers are thin: they
//! validate input, call the log, the store, the catalog or the indexer through their
//! ports, and map failures to stable error codes ([`error::ApiError`]).
//!
//! # Layout
//! - [`state`]: the shared handles every handler uses.
//! - [`admission`]: the bound on accepted, not yet searchable documents (429 past it).
//! - [`routes`]: the route table and the middleware stack.
//! - [`body`]: reading request bodies: content types, decompression, size limits.
//! - [`bulk`]: `POST /v1/collections/{c}/documents`: NDJSON in, durable batches out.
//! - [`documents`]: `GET`/`DELETE` of one document.
//! - [`collections`]: the collection catalog routes.
//! - [`search`]: search routes.
//! - [`dlq`]: the dead-letter queue routes: list, replay, purge.
//! - [`spill`]: the local spill buffer and its forwarder, while the log is down.
//! - [`visibility`]: waiting for writes to be applied or searchable.
//! - [`ops`]: health, metrics and the OpenAPI document.
//! - [`faults`]: the test-only fault plan routes (`[faults] enabled`).
//! - [`error`]: the error type, trace ids, fallbacks.

pub mod admission;
pub mod body;
pub mod bulk;
pub mod collections;
pub mod dlq;
pub mod documents;
pub mod error;
pub mod faults;
pub mod ops;
pub mod routes;
pub mod search;
pub mod spill;
pub mod state;
pub mod visibility;

pub use routes::router;
pub use state::AppState;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the DLQ depth gauge picks up entries appended by the workers.
const DLQ_DEPTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves `state`'s API on `listener` until `shutdown` is cancelled, then stops accepting
/// and lets in-flight requests finish. Meanwhile keeps the backlog ledger and the DLQ
/// depth gauge current.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let background = shutdown.child_token();
    tokio::spawn(state.inner.backlog.clone().run(background.clone()));
    tokio::spawn(
        state
            .inner
            .dlq
            .clone()
            .keep_depth_current(DLQ_DEPTH_INTERVAL, background.clone()),
    );
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    background.cancel();
    served
}
