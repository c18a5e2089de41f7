//! What the pool does while a dependency is down: stop pulling, probe, resume; and do not
//! let an outage spend the delivery attempts of the messages it caught in flight.
//!
//! - **Gate.** Before every fetch a worker waits until the `log_consume` breaker permits
//!   calls and the `store` breaker is closed ([`Dependencies::wait_until_usable`]). While
//!   the store breaker is open nothing is fetched: messages stay in the log, no delivery
//!   attempt is made, and the wait polls the breaker a few times a second (no busy loop).
//!   Once its open delay has passed, the worker probes the store with a call that carries
//!   no message (a catalog listing): success closes the breaker and every worker resumes;
//!   failure opens it again for a longer delay.
//! - **Excused deliveries.** A message held when the store (or the log) goes down fails
//!   with a transient error; its retries stop as soon as a breaker opens and it is nak'ed.
//!   Such a delivery is remembered as *excused* ([`ExcusedDeliveries`]): the `max_deliver`
//!   limit counts `delivery_count - excused`, so an outage of any length, or several, never
//!   pushes a healthy message into the dead-letter queue. Deliveries that failed while the
//!   dependencies looked healthy still count, and so does every delivery after a crash
//!   (excuses are kept in memory only), which is what the limit is for.
//!
//! Known limit: a message whose own write makes the store time out repeatedly opens the
//! breaker itself and is excused each time, so it is retried (slowly, at probe pace)
//! instead of being dead-lettered.
//!
//! Concurrency: the breakers are shared by the node; the excuse table is a bounded
//! concurrent cache shared by the pool's workers.

use std::sync::Arc;

use sluice_core::ids::Seq;
use sluice_core::log::Delivery;
use sluice_core::resilience::{BreakerState, Breakers};
use sluice_core::store::Store;
use tokio_util::sync::CancellationToken;

/// Most messages whose excused deliveries are remembered at once.
const EXCUSED_ENTRIES: u64 = 100_000;

/// The pool's view of its dependencies' health.
pub(crate) struct Dependencies {
    /// The node's breakers (the store's also guards `store`'s every call).
    pub breakers: Breakers,
    /// The store, behind the store breaker.
    store: Arc<dyn Store>,
}

impl Dependencies {
    pub(crate) fn new(breakers: Breakers, store: Arc<dyn Store>) -> Self {
        Self { breakers, store }
    }

    /// Whether a dependency a message needs is known to be down (its breaker is not
    /// closed): retrying in place is pointless, the message is better nak'ed.
    pub(crate) fn in_outage(&self) -> bool {
        [
            &self.breakers.store,
            &self.breakers.log_publish,
            &self.breakers.log_consume,
        ]
        .iter()
        .any(|breaker| breaker.state() != BreakerState::Closed)
    }

    /// Waits until fetching makes sense: the log accepts fetches and the store is up (a
    /// successful probe when its breaker was open). `false` when `shutdown` came first.
    pub(crate) async fn wait_until_usable(&self, shutdown: &CancellationToken) -> bool {
        loop {
            if !self
                .breakers
                .log_consume
                .wait_until_permitted(shutdown.cancelled())
                .await
            {
                return false;
            }
            if self.breakers.store.state() == BreakerState::Closed {
                return true;
            }
            if !self
                .breakers
                .store
                .wait_until_permitted(shutdown.cancelled())
                .await
            {
                return false;
            }
            // Half-open: probe with a call that spends no message's delivery attempt. A
            // failure reopens the breaker and the wait above starts over.
            match self.store.list_collections().await {
                Ok(_) => return true,
                Err(error) => {
                    tracing::debug!(%error, "store probe failed; workers stay paused");
                }
            }
        }
    }
}

/// Deliveries that failed only because a dependency was down, per message.
pub(crate) struct ExcusedDeliveries {
    counts: moka::sync::Cache<Seq, u32>,
}

impl ExcusedDeliveries {
    pub(crate) fn new() -> Self {
        Self {
            counts: moka::sync::Cache::new(EXCUSED_ENTRIES),
        }
    }

    /// Records that `delivery` was spent by an outage.
    pub(crate) fn excuse(&self, delivery: &Delivery) {
        self.counts
            .entry(delivery.seq)
            .and_upsert_with(|entry| entry.map_or(1, |e| e.into_value().saturating_add(1)));
    }

    /// The deliveries of this message that count towards `max_deliver` (this one included).
    pub(crate) fn counted(&self, delivery: &Delivery) -> u32 {
        let excused = self.counts.get(&delivery.seq).unwrap_or(0);
        delivery.delivery_count.saturating_sub(excused).max(1)
    }

    /// Forgets a settled message.
    pub(crate) fn forget(&self, delivery: &Delivery) {
        self.counts.invalidate(&delivery.seq);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_core::log::AckToken;

    use super::*;

    fn delivery(seq: u64, delivery_count: u32) -> Delivery {
        Delivery {
            seq: Seq(seq),
            subject: "sluice.docs.books.0".into(),
            payload: Bytes::new(),
            delivery_count,
            ack_token: AckToken(String::new()),
        }
    }

    #[test]
    fn excused_deliveries_do_not_count() {
        let excused = ExcusedDeliveries::new();
        assert_eq!(excused.counted(&delivery(7, 1)), 1);
        excused.excuse(&delivery(7, 1));
        excused.excuse(&delivery(7, 2));
        assert_eq!(excused.counted(&delivery(7, 3)), 1);
        assert_eq!(excused.counted(&delivery(7, 5)), 3);
        assert_eq!(excused.counted(&delivery(8, 5)), 5, "per message");
        excused.forget(&delivery(7, 5));
        assert_eq!(excused.counted(&delivery(7, 5)), 5);
    }
}
