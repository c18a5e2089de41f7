//! The node-wide bound on open index writers.
//!
//! An open writer costs threads (indexing, segment updater, merge) and a memory arena of
//! up to `writer_memory`, so a node with many collections written at once would grow
//! both with their number. A shard's consume loop holds one [`WriterSlot`] while its
//! writer is open; there are `indexer.max_open_writers` of them. A loop that needs a
//! writer and finds none free waits for one (its events wait in the log meanwhile), and
//! while any loop waits, every loop closes its writer as soon as its changes are committed
//! and acked instead of after `writer_idle_timeout`. Slots are handed out first come,
//! first served, so under contention busy shards take turns, one commit each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sluice_core::metrics::{INDEXER_OPEN_WRITERS, INDEXER_WRITER_SLOT_WAITS_TOTAL};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The slots of one node, shared by every shard's consume loop.
pub(crate) struct WriterSlots {
    semaphore: Arc<Semaphore>,
    limit: usize,
    waiting: AtomicUsize,
}

/// The right to keep one index writer open; given back on drop.
pub(crate) struct WriterSlot {
    /// Held until the slot is dropped (`None` only inside `drop`).
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<WriterSlots>,
}

impl WriterSlots {
    /// `limit` slots (at least one).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        let limit = limit.max(1);
        metrics::gauge!(INDEXER_OPEN_WRITERS).set(0.0);
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
            waiting: AtomicUsize::new(0),
        })
    }

    /// A slot, waiting for one when all are taken; `None` when `cancel` fires first.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> Option<WriterSlot> {
        let permit = match Arc::clone(&self.semaphore).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!(INDEXER_WRITER_SLOT_WAITS_TOTAL).increment(1);
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let acquired = tokio::select! {
                    biased;
                    () = cancel.cancelled() => None,
                    permit = Arc::clone(&self.semaphore).acquire_owned() => permit.ok(),
                };
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                acquired?
            }
        };
        self.publish();
        Some(WriterSlot {
            permit: Some(permit),
            slots: Arc::clone(self),
        })
    }

    /// Whether a loop is waiting for a slot: holders should give theirs back early.
    pub(crate) fn contended(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Slots taken now.
    pub(crate) fn taken(&self) -> usize {
        self.limit - self.semaphore.available_permits()
    }

    fn publish(&self) {
        metrics::gauge!(INDEXER_OPEN_WRITERS).set(self.taken() as f64);
    }
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        // Give the slot back first, so the gauge counts what is taken after it.
        drop(self.permit.take());
        self.slots.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_are_bounded_contention_is_seen_and_cancel_ends_a_wait() {
        let slots = WriterSlots::new(2);
        let cancel = CancellationToken::new();
        let first = slots.acquire(&cancel).await.expect("a free slot");
        let second = slots.acquire(&cancel).await.expect("a free slot");
        assert_eq!(slots.taken(), 2);
        assert!(!slots.contended());

        let waiter = {
            let slots = Arc::clone(&slots);
            let cancel = cancel.clone();
            tokio::spawn(async move { slots.acquire(&cancel).await })
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            while !slots.contended() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the third acquire waits");
        drop(first);
        let third = waiter.await.unwrap();
        assert!(third.is_some(), "a released slot goes to the waiter");
        assert!(!slots.contended());
        assert_eq!(slots.taken(), 2);

        let cancelled = CancellationToken::new();
        let waiting = {
            let slots = Arc::clone(&slots);
            let cancelled = cancelled.clone();
            tokio::spawn(async move { slots.acquire(&cancelled).await.is_none() })
        };
        cancelled.cancel();
        assert!(
            waiting.await.unwrap(),
            "cancel ends the wait without a slot"
        );
        assert!(!slots.contended());
        drop((second, third));
        assert_eq!(slots.taken(), 0, "dropped slots are given back");
    }
}
