//! Tombstone compaction: the periodic pass that removes tombstones no op can race any
//! more, so that a collection with heavy delete traffic does not grow without bound.
//!
//! # Why a tombstone may go
//! A delete leaves a tombstone in the store only to refuse an op for the same id with a
//! lower sequence that is still on its way (a redelivery, a batch retried out of order).
//! Every op reaches the store through a DOCS message, and an op's sequence is its
//! message's sequence and its place in the message, so an op older than a delete comes
//! from the delete's message or an earlier one. A pass removes a tombstone when both:
//! - its delete was applied more than `store.tombstone_retention` ago (at least
//!   `log.events_max_age`, the longest the log keeps anything it may hand out again),
//!   by the wall-clock time the store recorded in the tombstone; and
//! - the workers' consumer has acked every DOCS message up to and including the
//!   delete's ([`Log::ack_floor`] of [`WORKERS_CONSUMER`]), so no message that could
//!   carry an older op for the id is left to deliver. This holds however long the node
//!   was stopped or the store was down, which the wall clock alone does not see.
//!
//! # The exception: replaying an old dead letter
//! A dead-letter replay appends the op again with the sequence it was first given (see
//! the README's "Dead letters"), and the DLQ keeps entries until they are purged. An
//! upsert dead-lettered before a delete of the same id and replayed after that
//! delete's tombstone was compacted finds the id absent in the store and is applied: the
//! document is back in the store, with its old content (`GET` answers it). Unless the
//! pool's dedup cache still remembers the delete (in memory, per process), which makes
//! the replay stale as before compaction. The index shards forget deletes by the same
//! schedule (`sluice_indexer::tombstones`), so once they have, the replayed upsert is
//! searchable again too. A replayed delete just writes a new tombstone. Replaying a dead letter that has been in the queue longer than
//! `store.tombstone_retention` is therefore not refused by later deletes any more: purge
//! it instead, or check (and delete again) its document after replaying.
//!
//! # Entries of deleted collections
//! A deleted collection leaves a `Retired` catalog entry, whose fence keeps writes of
//! its generation out of the store (see `sluice_core::catalog`). A pass removes the
//! entries retired more than `store.tombstone_retention` ago, by the same wall-clock
//! rule: by then no DOCS message of that incarnation is left to deliver.
//!
//! # Tombstones of unknown time
//! Tombstones written before the store recorded deletion times have none; the first pass
//! that sees one gives it the pass's time instead of removing it, so it goes one
//! retention later (never sooner than any tombstone written at that moment).
//!
//! # Concurrency and cost
//! One task per node, started by `sluice::run`, ticking every
//! `store.tombstone_compaction_interval` (the first pass one interval after start, not
//! during recovery). A pass walks every collection of the catalog in pages of
//! [`PAGE_RECORDS`] records through the `Store` port; each page holds the store's write
//! lock of its collection for one batch of removals at most, so appliers wait that long
//! at most. A pass that fails (store unavailable, breaker open) stops and is logged; the
//! next one starts over. Removals are deletes of dead records: a crash in the middle
//! loses nothing and the next pass finds what is left.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_core::catalog::{Catalog, CatalogError};
use sluice_core::config::StoreConfig;
use sluice_core::ids::{CollectionName, DocId, Seq};
use sluice_core::log::Log;
use sluice_core::metrics::STORE_TOMBSTONES_COMPACTED_TOTAL;
use sluice_core::store::{Store, StoreError, TombstoneHorizon};
use sluice_core::subjects::{StreamKind, WORKERS_CONSUMER};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Records one `compact_tombstones` call looks at: bounds how long one page holds the
/// collection's write lock.
pub const PAGE_RECORDS: usize = 1024;

/// What one pass did, over every collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Collections walked.
    pub collections: usize,
    /// Tombstones removed.
    pub removed: u64,
    /// Tombstones of unknown time given the pass's time.
    pub stamped: u64,
    /// Catalog entries of deleted collections removed.
    pub retired_removed: usize,
}

/// The horizon of a pass at `now`: deleted more than `retention` ago, and in a DOCS
/// message at or below `docs_ack_floor`.
pub fn horizon(now: SystemTime, retention: Duration, docs_ack_floor: Seq) -> TombstoneHorizon {
    let deleted_before_ms = now
        .checked_sub(retention)
        .and_then(|cutoff| cutoff.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |cutoff| cutoff.as_millis() as u64);
    TombstoneHorizon {
        deleted_before_ms,
        seq_below: docs_ack_floor.ops_below_next_message(),
    }
}

/// The periodic compaction pass of one node.
pub struct TombstoneCompactor {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    log: Arc<dyn Log>,
    retention: Duration,
    interval: Duration,
}

impl TombstoneCompactor {
    /// Compaction of `store` and of `catalog`'s retired entries, judged against the
    /// workers' consumer on `log`, with the retention and interval of `config`.
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        log: Arc<dyn Log>,
        config: &StoreConfig,
    ) -> Self {
        Self {
            store,
            catalog,
            log,
            retention: config.tombstone_retention,
            interval: config.tombstone_compaction_interval,
        }
    }

    /// One pass over every collection, with the horizon of `now`. Removes nothing when
    /// the workers' consumer does not exist yet (nothing was ever applied through it).
    pub async fn pass(&self, now: SystemTime) -> Result<PassReport, CompactionError> {
        let mut report = PassReport::default();
        let floor = self
            .log
            .ack_floor(StreamKind::Docs, WORKERS_CONSUMER)
            .await
            .map_err(|e| CompactionError::AckFloor(e.to_string()))?;
        let Some(floor) = floor else {
            return Ok(report);
        };
        let horizon = horizon(now, self.retention, floor);
        report.retired_removed = self
            .catalog
            .remove_retired(horizon.deleted_before_ms)
            .await
            .map_err(CatalogError::into_store_error)?;
        let collections = self.store.list_collections().await?;
        for meta in collections.iter().filter(|meta| meta.is_active()) {
            let (removed, stamped) = self.compact_collection(&meta.name, horizon).await?;
            if removed > 0 {
                metrics::counter!(
                    STORE_TOMBSTONES_COMPACTED_TOTAL,
                    "collection" => meta.name.to_string()
                )
                .increment(removed);
            }
            report.collections += 1;
            report.removed += removed;
            report.stamped += stamped;
        }
        Ok(report)
    }

    /// Pages through one collection; (removed, stamped).
    async fn compact_collection(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
    ) -> Result<(u64, u64), StoreError> {
        let (mut removed, mut stamped) = (0, 0);
        let mut after: Option<DocId> = None;
        loop {
            let page = self
                .store
                .compact_tombstones(collection, horizon, after.as_ref(), PAGE_RECORDS)
                .await?;
            removed += page.removed;
            stamped += page.stamped;
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok((removed, stamped)),
            }
        }
    }

    /// Runs a pass every interval until `shutdown` is cancelled; a pass in progress is
    /// abandoned (a page already handed to the store completes; safe, see the module
    /// docs).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate: skip it, so no pass competes with recovery.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let started = Instant::now();
            let pass = tokio::select! {
                () = shutdown.cancelled() => return,
                pass = self.pass(SystemTime::now()) => pass,
            };
            match pass {
                Ok(report) if report.removed > 0 || report.stamped > 0 => tracing::info!(
                    removed = report.removed,
                    stamped = report.stamped,
                    collections = report.collections,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "tombstone compaction pass"
                ),
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    %error,
                    "tombstone compaction pass stopped; the next one starts over"
                ),
            }
        }
    }
}

/// Why a compaction pass stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactionError {
    /// The workers' ack floor could not be read from the log; without it no tombstone
    /// is known to be safe to remove.
    #[error("reading the workers' ack floor: {0}")]
    AckFloor(String),
    /// The store failed a listing or a compaction page.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use sluice_core::ids::OP_INDEX_BITS;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn the_horizon_is_the_retention_ago_and_past_the_acked_messages() {
        let now = UNIX_EPOCH + Duration::from_millis(30 * 24 * 3600 * 1000 + 123);
        let horizon = horizon(now, 7 * DAY, Seq(41));
        assert_eq!(
            horizon.deleted_before_ms,
            23 * 24 * 3600 * 1000 + 123,
            "a retention ago"
        );
        // Every op of message 41 is below the horizon, the first op of message 42 not.
        let last_op_of_41 = Seq(42).for_op(0).0 - 1;
        assert_eq!(Seq(last_op_of_41).message(), Seq(41));
        assert!(Seq(last_op_of_41) < horizon.seq_below);
        assert_eq!(horizon.seq_below, Seq(42).for_op(0));
        // Nothing acked yet: no op is below.
        assert_eq!(super::horizon(now, DAY, Seq(0)).seq_below, Seq(1).for_op(0));
    }

    #[test]
    fn a_retention_longer_than_the_epoch_removes_nothing_and_huge_floors_saturate() {
        let now = UNIX_EPOCH + DAY;
        assert_eq!(horizon(now, 2 * DAY, Seq(1)).deleted_before_ms, 0);
        assert_eq!(horizon(now, DAY, Seq(u64::MAX)).seq_below, Seq(u64::MAX));
        assert_eq!(
            horizon(now, DAY, Seq(u64::MAX >> OP_INDEX_BITS)).seq_below,
            Seq(u64::MAX)
        );
    }
}
