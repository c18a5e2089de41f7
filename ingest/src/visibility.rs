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
//! Batches spilled while the log was down (see [`crate::spill`]) have no log sequence
//! yet: a wait first waits for the spill to forward them, then takes the log's head
//! (which is at or past them) as its target.
//!
//! Floors are read through the node's one follower per consumer ([`crate::ack_floors`]);
//! a wait is bounded by the visibility timeout.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::log::{Log, LogError};
use sluice_core::store::CollectionMeta;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{Partition, Seq};
use tokio::time::Instant;

use crate::ack_floors::AckFloors;
use crate::spill::Spill;

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

/// Where a request's batches were made durable: the last sequence in the log and in the
/// spill buffer (either may be absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The highest DOCS sequence appended to the log.
    pub log: Option<Seq>,
    /// The highest sequence appended to the spill buffer.
    pub spill: Option<Seq>,
}

impl Written {
    /// Records one more durable batch.
    pub(crate) fn add(&mut self, durable: crate::bulk::Durable) {
        match durable {
            crate::bulk::Durable::Log(seq) => self.log = self.log.max(Some(seq)),
            crate::bulk::Durable::Spilled(seq) => self.spill = self.spill.max(Some(seq)),
        }
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.log.is_none() && self.spill.is_none()
    }
}

/// Answers "is it applied yet?" and "is it searchable yet?".
pub struct Visibility {
    log: Arc<dyn Log>,
    floors: Arc<AckFloors>,
    spill: Option<Arc<Spill>>,
    timeout: Duration,
}

impl Visibility {
    /// Waits at most `timeout` per call, reading floors through `floors`; `spill` is the
    /// node's spill buffer, if any.
    pub fn new(
        log: Arc<dyn Log>,
        floors: Arc<AckFloors>,
        spill: Option<Arc<Spill>>,
        timeout: Duration,
    ) -> Self {
        Self {
            log,
            floors,
            spill,
            timeout,
        }
    }

    /// Waits until every DOCS message appended (or spilled) so far is applied
    /// (read-your-writes).
    pub async fn wait_all_applied(&self) -> Result<(), WaitError> {
        let deadline = Instant::now() + self.timeout;
        if let Some(spill) = self.spill.as_ref().filter(|s| s.has_pending()) {
            let head = spill.head().await?;
            if !spill.wait_forwarded(head, deadline).await {
                return Err(WaitError::Timeout);
            }
        }
        let head = self.log.last_seq(StreamKind::Docs).await?;
        self.wait_applied(head, deadline).await
    }

    /// Waits until the batches of `written` are searchable in `collection`.
    pub async fn wait_searchable(
        &self,
        collection: &CollectionMeta,
        written: Written,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + self.timeout;
        let mut docs_seq = written.log.unwrap_or(Seq(0));
        if let (Some(spill), Some(spilled)) = (&self.spill, written.spill) {
            if !spill.wait_forwarded(spilled, deadline).await {
                return Err(WaitError::Timeout);
            }
            // Forwarded batches sit at or below the log's head now.
            docs_seq = docs_seq.max(self.log.last_seq(StreamKind::Docs).await?);
        }
        self.wait_applied(docs_seq, deadline).await?;
        let events_head = self.log.last_seq(StreamKind::Events).await?;
        for shard in 0..collection.shards() {
            let consumer = subjects::indexer_consumer(&collection.name, Partition(shard));
            self.wait_floor(StreamKind::Events, &consumer, events_head, deadline)
                .await?;
        }
        Ok(())
    }

    /// Waits until everything accepted for `collection` before the call is searchable:
    /// the DOCS log's head (and the spill buffer's) applied, then the EVENTS head
    /// indexed by each of its shards (Elasticsearch `_refresh`).
    pub async fn wait_all_searchable(&self, collection: &CollectionMeta) -> Result<(), WaitError> {
        let spill = match self.spill.as_ref().filter(|s| s.has_pending()) {
            Some(spill) => Some(spill.head().await?),
            None => None,
        };
        let written = Written {
            log: Some(self.log.last_seq(StreamKind::Docs).await?),
            spill,
        };
        self.wait_searchable(collection, written).await
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
        // A consumer that does not exist yet (a shard still opening) has acked nothing.
        if self
            .floors
            .wait_until(stream, consumer, target, deadline)
            .await?
        {
            Ok(())
        } else {
            Err(WaitError::Timeout)
        }
    }
}
