//! Waiting for writes to take effect: applied to the store (read-your-writes) or visible
//! to search (`wait=searchable`).
//!
//! Both are answered from consumer ack floors, so they work the same on any log:
//! 1. every DOCS message up to `s` is applied once the workers' floor reaches `s` (workers
//!    ack only after the store write and the event append);
//! 2. the events of those messages then all sit at or below the EVENTS head `e` read
//!    after step 1, so they are searchable once every index shard consumer of the
//!    collection has acked through `e` (indexers ack only after commit and reload).
//!
//! Polling backs off from 2 ms to 25 ms; a wait is bounded by the visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::log::{Log, LogError};
use sluice_core::store::CollectionMeta;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{Partition, Seq};
use tokio::time::Instant;

/// Why a wait ended without success.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed first.
    #[error("timed out waiting for visibility")]
    Timeout,
    /// The log could not answer.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Answers "is it applied yet?" and "is it searchable yet?".
pub struct Visibility {
    log: Arc<dyn Log>,
    timeout: Duration,
}

impl Visibility {
    /// Waits at most `timeout` per call.
    pub fn new(log: Arc<dyn Log>, timeout: Duration) -> Self {
        Self { log, timeout }
    }

    /// Waits until every DOCS message appended so far is applied (read-your-writes).
    pub async fn wait_all_applied(&self) -> Result<(), WaitError> {
        let head = self.log.last_seq(StreamKind::Docs).await?;
        self.wait_applied(head, Instant::now() + self.timeout).await
    }

    /// Waits until the DOCS messages up to `docs_seq` are searchable in `collection`.
    pub async fn wait_searchable(
        &self,
        collection: &CollectionMeta,
        docs_seq: Seq,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + self.timeout;
        self.wait_applied(docs_seq, deadline).await?;
        let events_head = self.log.last_seq(StreamKind::Events).await?;
        for shard in 0..collection.shards() {
            let consumer = subjects::indexer_consumer(&collection.name, Partition(shard));
            self.wait_floor(StreamKind::Events, &consumer, events_head, deadline)
                .await?;
        }
        Ok(())
    }

    /// Waits until every index shard consumer of a new collection exists, so that no
    /// event of the collection can be appended (and truncated) before its shard listens.
    pub async fn wait_index_ready(&self, collection: &CollectionMeta) -> Result<(), WaitError> {
        let deadline = Instant::now() + self.timeout;
        for shard in 0..collection.shards() {
            let consumer = subjects::indexer_consumer(&collection.name, Partition(shard));
            self.wait_floor(StreamKind::Events, &consumer, Seq(0), deadline)
                .await?;
        }
        Ok(())
    }

    async fn wait_applied(&self, docs_seq: Seq, deadline: Instant) -> Result<(), WaitError> {
        self.wait_floor(
            StreamKind::Docs,
            subjects::WORKERS_CONSUMER,
            docs_seq,
            deadline,
        )
        .await
    }

    async fn wait_floor(
        &self,
        stream: StreamKind,
        consumer: &str,
        target: Seq,
        deadline: Instant,
    ) -> Result<(), WaitError> {
        let mut pause = Duration::from_millis(2);
        loop {
            // A consumer that does not exist yet (a shard still opening) has acked nothing.
            if let Some(floor) = self.log.ack_floor(stream, consumer).await? {
                if floor >= target {
                    return Ok(());
                }
            }
            if Instant::now() + pause > deadline {
                return Err(WaitError::Timeout);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }
}
