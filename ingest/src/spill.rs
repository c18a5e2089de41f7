//! The spill buffer: ingest stays writable while the log (JetStream) is down.
//!
//! Job: in distributed mode, a DOCS batch that cannot be appended to the log (its
//! breaker is open, or the append failed transiently) is appended instead to a local
//! durable log (the embedded log under `data_dir/spill`), and ingest answers 2xx: the
//! batch IS durable, on this node's disk. A forwarder task moves spilled batches to the
//! log in spill order, one at a time, with the batch's original `Nats-Msg-Id`, and acks
//! the spill entry only once the log confirmed it. A crash between the two forwards the
//! batch again at the next start; the log's msg-id dedup (and the workers' idempotence
//! beyond its window) make that a no-op.
//!
//! Invariants:
//! - Order: while anything waits in the buffer, new batches are spilled too, so a write
//!   acknowledged after another never reaches the log before it (last-writer-wins is by
//!   log sequence). Forwarding is sequential: when a forward is retried, nothing spilled
//!   after it has reached the log yet, so even a duplicate outside the dedup window cannot
//!   overtake a newer write.
//! - Quota: the bytes of batches waiting never exceed `max_bytes`; a batch that does not
//!   fit is refused ([`SpillError::Full`]), and ingest answers 503 with `Retry-After` for
//!   it, never a 2xx.
//! - Visibility: [`Spill::wait_forwarded`] tells when a spilled batch has reached the log,
//!   after which the usual ack-floor waits apply (`wait=searchable`, read-your-writes).
//!
//! Concurrency: appends run concurrently (the embedded log group-commits them); one
//! forwarder task per node reads the buffer through a durable consumer; counters are
//! atomics and the forward position a `watch` channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_core::log::{ConsumerConfig, Delivery, Log, LogError, OutgoingMessage};
use sluice_core::metrics as m;
use sluice_core::resilience::Breaker;
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The durable consumer the forwarder reads the buffer with.
const FORWARDER: &str = "spill-forwarder";
/// Spilled batches fetched at once by the forwarder.
const FORWARD_BATCH: usize = 16;
/// Longer than any outage retry of one batch is expected to last; a redelivery after it
/// is harmless anyway (skipped by sequence).
const FORWARD_ACK_WAIT: Duration = Duration::from_secs(600);
/// Delays between attempts at forwarding one batch: doubling, capped.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Format version of a spill entry's payload.
const ENTRY_V1: u8 = 1;

/// Why a batch could not be spilled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpillError {
    /// The buffer holds `max_bytes` already; retry once the log is back and drained.
    #[error("the spill buffer is full")]
    Full,
    /// The local buffer failed to append.
    #[error("spill buffer: {0}")]
    Log(#[from] LogError),
}

/// The spill buffer of one node (see the module documentation).
pub struct Spill {
    local: Arc<dyn Log>,
    remote: Arc<dyn Log>,
    breaker: Breaker,
    max_bytes: u64,
    pending_bytes: AtomicU64,
    pending_messages: AtomicU64,
    /// Every spill entry at or below this sequence has reached the remote log.
    forwarded: watch::Sender<Seq>,
}

impl Spill {
    /// Opens the buffer on `local` (which it owns), forwarding to `remote` through
    /// `breaker` (the log-publish breaker). Counts what an earlier run left to forward.
    pub async fn open(
        local: Arc<dyn Log>,
        remote: Arc<dyn Log>,
        breaker: Breaker,
        max_bytes: u64,
    ) -> Result<Arc<Spill>, LogError> {
        // Creating the consumer first pins retention: nothing unforwarded is truncated.
        drop(local.consumer(StreamKind::Docs, consumer_config()).await?);
        let floor = local
            .ack_floor(StreamKind::Docs, FORWARDER)
            .await?
            .unwrap_or(Seq(0));
        let (mut bytes, mut messages) = (0u64, 0u64);
        let mut from = Seq(floor.0 + 1);
        loop {
            let stored = local
                .read(StreamKind::Docs, StreamKind::Docs.all_subjects(), from, 256)
                .await?;
            let Some(last) = stored.last() else { break };
            from = Seq(last.seq.0 + 1);
            for message in &stored {
                bytes += message.payload.len() as u64;
                messages += 1;
            }
        }
        if messages > 0 {
            tracing::warn!(
                messages,
                bytes,
                "spill buffer holds batches from an earlier run; forwarding them"
            );
        }
        let spill = Spill {
            local,
            remote,
            breaker,
            max_bytes,
            pending_bytes: AtomicU64::new(bytes),
            pending_messages: AtomicU64::new(messages),
            forwarded: watch::Sender::new(floor),
        };
        spill.report();
        Ok(Arc::new(spill))
    }

    /// Whether batches wait to be forwarded: new batches must then be spilled too.
    pub fn has_pending(&self) -> bool {
        self.pending_messages.load(Ordering::Acquire) > 0
    }

    /// The log-publish breaker (shared with direct appends).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Appends `message` durably to the buffer; returns its spill sequence.
    pub async fn append(&self, message: OutgoingMessage) -> Result<Seq, SpillError> {
        let entry = encode_entry(&message.msg_id, &message.payload);
        let size = entry.len() as u64;
        let reserved =
            self.pending_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                    (pending + size <= self.max_bytes).then_some(pending + size)
                });
        if reserved.is_err() {
            metrics::counter!(m::SPILL_REJECTED_MESSAGES_TOTAL).increment(1);
            return Err(SpillError::Full);
        }
        // Counted before the append so that a concurrent request already spills behind it.
        self.pending_messages.fetch_add(1, Ordering::AcqRel);
        let spilled = OutgoingMessage {
            subject: message.subject,
            msg_id: message.msg_id,
            payload: entry,
        };
        match self.local.append(StreamKind::Docs, vec![spilled]).await {
            Ok(seqs) => {
                metrics::counter!(m::SPILL_APPENDED_MESSAGES_TOTAL).increment(1);
                self.report();
                seqs.first().copied().ok_or_else(|| {
                    LogError::Storage("the spill returned no sequence".into()).into()
                })
            }
            Err(error) => {
                self.release(size);
                Err(error.into())
            }
        }
    }

    /// The sequence of the last batch spilled.
    pub async fn head(&self) -> Result<Seq, LogError> {
        self.local.last_seq(StreamKind::Docs).await
    }

    /// Waits until every spill entry up to `spill_seq` has reached the log, or `deadline`.
    /// Returns whether it did.
    pub async fn wait_forwarded(&self, spill_seq: Seq, deadline: Instant) -> bool {
        let mut forwarded = self.forwarded.subscribe();
        let reached =
            tokio::time::timeout_at(deadline, forwarded.wait_for(|seq| *seq >= spill_seq)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Forwards spilled batches to the log, in order, until `shutdown`.
    pub async fn forward(self: Arc<Self>, shutdown: CancellationToken) {
        let consumer = loop {
            match self
                .local
                .consumer(StreamKind::Docs, consumer_config())
                .await
            {
                Ok(consumer) => break consumer,
                Err(error) => {
                    tracing::error!(%error, "cannot open the spill buffer's consumer");
                    if !pause(&shutdown, RETRY_MAX).await {
                        return;
                    }
                }
            }
        };
        loop {
            let fetched = tokio::select! {
                () = shutdown.cancelled() => return,
                fetched = consumer.fetch(FORWARD_BATCH, Duration::from_millis(500)) => fetched,
            };
            let mut deliveries = match fetched {
                Ok(deliveries) => deliveries,
                Err(error) => {
                    tracing::warn!(%error, "reading the spill buffer failed");
                    if !pause(&shutdown, RETRY_MAX).await {
                        return;
                    }
                    continue;
                }
            };
            deliveries.sort_by_key(|d| d.seq);
            for delivery in deliveries {
                // A redelivery of what was already forwarded (an ack that failed): ack only.
                if delivery.seq > *self.forwarded.borrow() {
                    if !self.forward_one(&delivery, &shutdown).await {
                        return;
                    }
                    self.release(delivery.payload.len() as u64);
                    metrics::counter!(m::SPILL_FORWARDED_MESSAGES_TOTAL).increment(1);
                    self.forwarded.send_replace(delivery.seq);
                }
                // A failed ack only means this entry comes again and is skipped above.
                if let Err(error) = consumer.ack(std::slice::from_ref(&delivery)).await {
                    tracing::warn!(%error, "acking a forwarded spill entry failed");
                }
            }
        }
    }

    /// Appends one spilled batch to the log, retrying until it is confirmed (`true`) or
    /// `shutdown` (`false`: it stays in the buffer for the next run).
    async fn forward_one(&self, delivery: &Delivery, shutdown: &CancellationToken) -> bool {
        let Some((msg_id, payload)) = decode_entry(&delivery.payload) else {
            // Written by this code and checksummed by the embedded log: cannot happen
            // short of a bug; dropping it silently would hide that.
            tracing::error!(
                seq = delivery.seq.0,
                "undecodable spill entry left in the buffer"
            );
            shutdown.cancelled().await;
            return false;
        };
        let message = OutgoingMessage {
            subject: delivery.subject.clone(),
            msg_id,
            payload,
        };
        let mut delay = RETRY_INITIAL;
        loop {
            if !self
                .breaker
                .wait_until_permitted(shutdown.cancelled())
                .await
            {
                return false;
            }
            let append = self.remote.append(StreamKind::Docs, vec![message.clone()]);
            match self.breaker.call(append).await {
                Ok(_) => return true,
                Err(error) => {
                    tracing::debug!(%error, "forwarding a spilled batch failed; retrying");
                    if !pause(shutdown, delay).await {
                        return false;
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    fn release(&self, bytes: u64) {
        self.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.pending_messages.fetch_sub(1, Ordering::AcqRel);
        self.report();
    }

    fn report(&self) {
        metrics::gauge!(m::SPILL_PENDING_BYTES)
            .set(self.pending_bytes.load(Ordering::Relaxed) as f64);
        metrics::gauge!(m::SPILL_PENDING_MESSAGES)
            .set(self.pending_messages.load(Ordering::Relaxed) as f64);
    }
}

fn consumer_config() -> ConsumerConfig {
    ConsumerConfig {
        durable_name: FORWARDER.to_owned(),
        filter_subject: StreamKind::Docs.all_subjects().to_owned(),
        ack_wait: FORWARD_ACK_WAIT,
        max_ack_pending: FORWARD_BATCH,
    }
}

/// Sleeps `delay`; `false` when `shutdown` came first.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// A spill entry: version, msg id (length-prefixed), then the batch as it would have
/// been appended. The msg id travels with the batch so a forward dedups on the log.
fn encode_entry(msg_id: &str, payload: &Bytes) -> Bytes {
    let id = msg_id.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let id = &id[..usize::from(id_len)];
    let mut entry = BytesMut::with_capacity(3 + id.len() + payload.len());
    entry.put_u8(ENTRY_V1);
    entry.put_u16(id_len);
    entry.put_slice(id);
    entry.put_slice(payload);
    entry.freeze()
}

fn decode_entry(entry: &Bytes) -> Option<(String, Bytes)> {
    let (&version, rest) = entry.split_first()?;
    if version != ENTRY_V1 || rest.len() < 2 {
        return None;
    }
    let id_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let id = rest.get(2..2 + id_len)?;
    let msg_id = String::from_utf8(id.to_vec()).ok()?;
    Some((msg_id, entry.slice(3 + id_len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_msg_id_and_payload() {
        let payload = Bytes::from_static(b"\x00batch bytes\xff");
        let entry = encode_entry("req-1-0", &payload);
        assert_eq!(
            decode_entry(&entry),
            Some(("req-1-0".to_owned(), payload.clone()))
        );
        assert_eq!(
            decode_entry(&encode_entry("", &payload)),
            Some((String::new(), payload))
        );
        assert_eq!(decode_entry(&Bytes::from_static(b"\x02\x00\x00")), None);
        assert_eq!(decode_entry(&Bytes::from_static(b"\x01\x00\x09ab")), None);
    }
}
