//! The sluice domain, free of transport and storage details.
//!
//! Everything the roles (ingest, workers, indexer, search) agree on lives here:
//! what a collection schema is, how a document is validated and hashed, what travels
//! through the logs (batches of ops, batches of events), the error codes users see, and
//! the ports the roles talk through — [`log::Log`] and [`store::Store`] for the engines,
//! [`search::SearchService`] and [`dlq::DeadLetterAdmin`] for what the HTTP layer asks of
//! the indexer and the workers. Adapters (`sluice-queue`, `sluice-store`) and roles
//! (`sluice-indexer`, `sluice-workers`) implement them; nothing here depends on those, and
//! the binary wires concrete types together.
//!
//! # Layout
//! - [`ids`]: newtypes for collection names, document ids, sequences and partitions.
//! - [`name_token`]: the one encoding of a collection name into subject tokens, consumer
//!   names and directory names.
//! - [`config`]: the configuration file, its sections and defaults.
//! - [`crash_point`]: test-only fault points that abort the process (crash tests).
//! - [`catalog`]: collections and their schemas, cached in front of the store.
//! - [`schema`]: the collection schema document, its validation and compatibility rules.
//! - [`document`]: per-line validation against a schema, id assignment, canonical hash.
//! - [`op`]: ops, events and the batch messages that carry them through the logs.
//! - [`log`]: the durable log port (append, shared durable consumers, acks, redelivery).
//! - [`store`]: the document store port (last-writer-wins writes, tombstones, scans).
//! - [`search`]: the search port: request, response and hit types, indexed reads.
//! - [`dlq`]: the dead-letter record and the DLQ administration port.
//! - [`faults`]: test-only fault injection (errors, latency) at named points.
//! - [`resilience`]: error classification, call timeouts and circuit breakers.
//! - [`error`]: stable error codes and their HTTP statuses.
//! - [`metrics`]: every metric name, in one place.
//! - [`subjects`]: the log subject names shared by every adapter.

pub mod catalog;
pub mod config;
pub mod crash_point;
pub mod dlq;
pub mod document;
pub mod error;
pub mod faults;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod name_token;
pub mod op;
pub mod resilience;
pub mod schema;
pub mod search;
pub mod store;
pub mod subjects;

pub use error::ErrorCode;
pub use ids::{CollectionName, DocId, Generation, Partition, Seq};
