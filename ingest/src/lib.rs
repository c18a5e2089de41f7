//! sluice's HTTP front door.
//!
//! Every route of the public API lives here: bulk NDJSON ingest, documents by id,
//! collections, search, health, metrics and the OpenAPI document. Handlers are thin: they
//! validate input, call the log, the store, the catalog, search or the DLQ through their
//! ports, and map failures to stable error codes ([`error::ApiError`]).
//!
//! # Layout
//! - [`state`]: the shared handles every handler uses.
//! - [`admission`]: the bound on accepted, not yet searchable documents (429 past it).
//! - [`server`]: accepting connections, slow-client deadlines, graceful stop.
//! - [`routes`]: the route table and the middleware stack.
//! - [`body`]: reading request bodies: content types, decompression, size limits, the
//!   body read deadline.
//! - [`bulk`]: `POST /v1/collections/{c}/documents`: NDJSON in, durable batches out.
//! - [`es_bulk`]: `POST|PUT /_bulk`, `POST|PUT /{index}/_bulk`: the Elasticsearch bulk API on the
//!   same ingest path; [`es_bulk::reader`] pairs its action and source lines.
//! - [`es_compat`]: what Elasticsearch clients check first: the product header, the
//!   versioned media types, `GET /`, `GET /_cluster/health`, `HEAD /{index}`.
//! - [`es_documents`]: Elasticsearch single-document writes (through the bulk path) and
//!   `_mget`.
//! - [`es_indices`]: Elasticsearch index management on the catalog: create, get,
//!   delete, mappings, field capabilities, refresh.
//! - [`es_mapping`]: Elasticsearch mappings and settings to and from sluice schemas.
//! - [`es_setup`]: what shippers call while setting up: nodes, license, X-Pack, and the
//!   templates and lifecycle policies kept in the store.
//! - [`es_data_streams`]: Elasticsearch data streams, one collection each.
//! - [`es_error`]: the errors of those routes, in Elasticsearch's shape and sluice's.
//! - [`documents`]: `GET`/`DELETE` of one document.
//! - [`id_locks`]: per-id locks of the writes that depend on the current document.
//! - [`collections`]: the collection catalog routes.
//! - [`search`]: search routes.
//! - [`dlq`]: the dead-letter queue routes: list, replay, purge.
//! - [`spill`]: the local spill buffer and its forwarder, while the log is down.
//! - [`visibility`]: waiting for writes to be applied or searchable.
//! - [`ack_floors`]: one follower per consumer ack floor, read by visibility and admission.
//! - [`ops`]: health, metrics and the OpenAPI document.
//! - [`faults`]: the test-only fault plan routes (`[faults] enabled`).
//! - [`error`]: the error type, trace ids, fallbacks.
//! - [`startup`]: the starting gate that answers while the node recovers.

pub mod ack_floors;
pub mod admission;
pub mod body;
pub mod bulk;
pub mod collections;
pub mod dlq;
pub mod documents;
pub mod error;
pub mod es_bulk;
pub mod es_compat;
pub mod es_data_streams;
pub mod es_documents;
pub mod es_error;
pub mod es_indices;
pub mod es_mapping;
pub mod es_search;
pub mod es_setup;
pub mod faults;
pub mod id_locks;
pub mod ops;
pub mod routes;
pub mod search;
pub mod server;
pub mod spill;
pub mod startup;
pub mod state;
pub mod visibility;

pub use routes::router;
pub use server::serve;
pub use startup::StartupGate;
pub use state::AppState;
