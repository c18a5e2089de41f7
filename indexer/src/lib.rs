//! sluice index shards: Tantivy indexes fed from the EVENTS log, their commit policy, and
//! search over them.
//!
//! Each collection has `shards` Tantivy indexes (one per log partition). Each shard is fed
//! by its own consume loop on its own durable EVENTS consumer; it applies micro-batches as
//! delete-by-id + add, never letting an older sequence overwrite a newer one, commits on a
//! size-or-time policy, reloads its searcher, bumps its generation and only then acks.
//! Searches fan out over a collection's shards, merge the top hits and are cached by
//! (collection, normalized request, shard generations).
//!
//! # Layout
//! - [`indexer`]: the role: catalog following, collection lifecycle, cached search.
//! - `collection`: one collection's shards at one schema version; building from the store.
//! - `consume`: the per-shard consume loop (fetch, apply, commit, ack).
//! - `commit_policy`: when a shard commits.
//! - `writer_slots`: the node-wide bound on open index writers.
//! - `shard`: one Tantivy index, its writer, the sequence guard, commits and generations.
//! - `tombstones`: when a shard may forget a delete (tombstone compaction).
//! - [`lookup`]: one document by id from the index (the store-down fallback of `GET`).
//! - [`index_schema`]: the Tantivy schema of a collection and document mapping (public so
//!   that raw Tantivy benchmarks index exactly the documents a shard indexes).
//! - [`search`]: request validation, query planning, per-shard collection, merge, highlights.
//! - `query_limits`: the length and depth limits on query text, checked before parsing,
//!   and the parse on a thread whose stack no input can overflow.
//! - [`error`]: start-up and search errors.

mod collection;
mod commit_policy;
mod consume;
pub mod error;
pub mod index_schema;
pub mod indexer;
pub mod lookup;
mod query_limits;
pub mod search;
mod shard;
mod tombstones;
mod writer_slots;

pub use error::{IndexerError, SearchError};
pub use indexer::Indexer;
pub use sluice_core::search::{Hit, IndexedCopy, SearchRequest, SearchResponse, SearchService};
