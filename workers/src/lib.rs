//! The store-writer pool: DOCS log → dedup → store (last-writer-wins) → EVENTS log.
//!
//! A [`WorkerPool`] runs N workers that share one durable consumer on the DOCS stream, so
//! each batch message is handled by exactly one worker of one process and redelivered if
//! it is not acked. For every op a worker skips what the store already has (same content
//! hash, or an older sequence), writes the rest last-writer-wins, publishes one event per
//! applied change, and acks only once both are durable. Transient failures are retried
//! with backoff and then redelivered; ops the store keeps refusing go to the dead-letter
//! queue ([`dlq::DeadLetter`]) without holding back their batch-mates.
//!
//! Every step is idempotent, so at-least-once delivery gives an exactly-once effect on
//! the store; events may be published again after a crash (indexers are idempotent).
//!
//! Known limit: the dedup cache and the per-partition serialization are per pool. When
//! several pools (processes) write the same ids at once, a pool may skip an op as
//! "unchanged" against a version another pool has just replaced; closing that gap needs
//! a conditional write in the `Store` port.
//!
//! # Layout
//! - [`pool`]: the pool, its workers' fetch loop, shutdown.
//! - `batch`: handling one DOCS message, from decode to ack or nak.
//! - [`collection_drop`]: applying a collection's deletion, and resuming unfinished ones.
//! - `dedup`: the version cache in front of the store and the per-op decisions.
//! - `retry`: failures (classified by the ports' `Classify`) and backoff.
//! - `outage`: pausing while a dependency is down; deliveries an outage does not count.
//! - [`dlq`]: the dead-letter record (its contract lives in `sluice_core::dlq`).
//! - [`dlq_admin`]: listing, replaying and purging dead letters; the DLQ depth gauge;
//!   the `sluice_core::dlq::DeadLetterAdmin` the HTTP layer uses.
//! - [`tombstones`]: the periodic pass removing store tombstones past their retention,
//!   once the workers have acked every message that could race them.

mod batch;
pub mod collection_drop;
mod dedup;
pub mod dlq;
pub mod dlq_admin;
mod outage;
pub mod pool;
mod retry;
pub mod tombstones;

pub use dlq::{DeadLetter, DeadLetterCode};
pub use dlq_admin::DeadLetterQueue;
pub use pool::WorkerPool;
pub use sluice_core::dlq::DlqSelection;
pub use tombstones::TombstoneCompactor;

use sluice_core::log::LogError;

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The `[workers]` configuration cannot work; fix the value named.
    #[error("invalid workers configuration: {0}")]
    InvalidConfig(String),
    /// The log refused to open the shared DOCS consumer; check that the log is reachable.
    #[error("cannot open the DOCS consumer: {0}")]
    Consumer(#[source] LogError),
    /// The log refused the drops of collections whose deletion a stop interrupted.
    #[error("cannot resume interrupted collection deletions: {0}")]
    ResumeDeletions(#[source] LogError),
}
