//! A `Log` whose every call goes through the node's log circuit breakers and timeout
//! ([`sluice_core::resilience::Breaker`]), as `sluice_store::GuardedStore` does for the
//! store.
//!
//! `sluice::run` hands this wrapper, not the raw adapter, to every role (ingest, workers,
//! indexer, DLQ administration), so no call site repeats the wrapping. Writes (appends,
//! purges, deletes) go through `log_publish`; consumer creation and everything a consumer
//! does (fetch, ack, nak, in-progress) through `log_consume`. Each such call is bounded by
//! the breaker's timeout (`log.request_timeout`), so a fetch must wait less than that.
//!
//! Reads (ack floors, stream heads, stored messages) pass straight through: they serve
//! `wait=searchable`, admission and listings, which should see the log back the moment it
//! is rather than be refused by a breaker that is still open from the outage, and a failed
//! read loses no work.
//! While a breaker is open a call fails at once with a transient error instead of waiting
//! on a log that is down; callers that pull work also ask the breaker before pulling.
//!
//! The spill buffer's forwarder is the one user of the raw log: it runs its own
//! `log_publish` calls, paced by its own retries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::log::{
    Consumer, ConsumerConfig, Delivery, Log, LogError, OutgoingMessage, StoredMessage,
};
use sluice_core::resilience::Breaker;
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;

/// Wraps a log with the publish and consume breakers.
pub struct GuardedLog {
    inner: Arc<dyn Log>,
    publish: Breaker,
    consume: Breaker,
}

impl GuardedLog {
    /// Every call of `inner` through `publish` (writes) or `consume` (reads, consumers).
    pub fn new(inner: Arc<dyn Log>, publish: Breaker, consume: Breaker) -> Arc<Self> {
        Arc::new(Self {
            inner,
            publish,
            consume,
        })
    }
}

#[async_trait]
impl Log for GuardedLog {
    async fn append(
        &self,
        stream: StreamKind,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Seq>, LogError> {
        self.publish.call(self.inner.append(stream, messages)).await
    }

    async fn consumer(
        &self,
        stream: StreamKind,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, LogError> {
        let inner = self
            .consume
            .call(self.inner.consumer(stream, config))
            .await?;
        Ok(Box::new(GuardedConsumer {
            inner,
            breaker: self.consume.clone(),
        }))
    }

    async fn ack_floor(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<Option<Seq>, LogError> {
        self.inner.ack_floor(stream, durable_name).await
    }

    async fn last_seq(&self, stream: StreamKind) -> Result<Seq, LogError> {
        self.inner.last_seq(stream).await
    }

    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: Seq,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError> {
        self.inner.read(stream, filter, from, max).await
    }

    async fn purge(&self, stream: StreamKind, filter: &str) -> Result<u64, LogError> {
        self.publish.call(self.inner.purge(stream, filter)).await
    }

    async fn delete_message(&self, stream: StreamKind, seq: Seq) -> Result<bool, LogError> {
        self.publish
            .call(self.inner.delete_message(stream, seq))
            .await
    }

    async fn delete_consumer(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<(), LogError> {
        self.publish
            .call(self.inner.delete_consumer(stream, durable_name))
            .await
    }

    fn max_message_bytes(&self) -> Option<usize> {
        self.inner.max_message_bytes()
    }
}

/// A consumer handle whose calls go through the `log_consume` breaker.
struct GuardedConsumer {
    inner: Box<dyn Consumer>,
    breaker: Breaker,
}

#[async_trait]
impl Consumer for GuardedConsumer {
    async fn fetch(&self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError> {
        self.breaker.call(self.inner.fetch(max, max_wait)).await
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), LogError> {
        self.breaker.call(self.inner.ack(deliveries)).await
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<(), LogError> {
        self.breaker.call(self.inner.nak(delivery, delay)).await
    }

    async fn in_progress(&self, deliveries: &[Delivery]) -> Result<(), LogError> {
        self.breaker.call(self.inner.in_progress(deliveries)).await
    }
}
