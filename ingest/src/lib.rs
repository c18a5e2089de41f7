//! sluice's HTTP front door.
//!
//! Every route of the public API lives here: bulk NDJSON ingest, documents by id,
//! collections, search, health, metrics and the OpenAPI document. Handlers are thin: they
//! validate input, call the log, the store, the catalog or the indexer through their
//! ports, and map failures to stable error codes ([`error::ApiError`]).
//!
//! # Layout
//! - [`state`]: the shared handles every handler uses.
//! - [`routes`]: the route table and the middleware stack.
//! - [`body`]: reading request bodies: content types, decompression, size limits.
//! - [`bulk`]: `POST /v1/collections/{c}/documents`: NDJSON in, durable batches out.
//! - [`documents`]: `GET`/`DELETE` of one document.
//! - [`collections`]: the collection catalog routes.
//! - [`search`]: search routes.
//! - [`visibility`]: waiting for writes to be applied or searchable.
//! - [`ops`]: health, metrics and the OpenAPI document.
//! - [`error`]: the error type, trace ids, fallbacks.
//! - [`startup`]: the starting gate that answers while the node recovers.

pub mod body;
pub mod bulk;
pub mod collections;
pub mod documents;
pub mod error;
pub mod ops;
pub mod routes;
pub mod search;
pub mod startup;
pub mod state;
pub mod visibility;

pub use routes::router;
pub use startup::StartupGate;
pub use state::AppState;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `state`'s API on `listener` until `shutdown` is cancelled, then stops accepting
/// and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
