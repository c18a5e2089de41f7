//! Durable consumers shared by name (queue-group semantics).
//!
//! Every handle opened with the same durable name shares one [`ConsumerGroup`]: a cursor,
//! the set of delivered-unacked ("pending") messages with their delivery counts and
//! redelivery deadlines, and the configuration. A fetch takes the group's lock, first
//! redelivers pending messages whose deadline passed, then delivers new matching
//! messages after the cursor while fewer than `max_ack_pending` are pending, so each
//! message goes to exactly one handle at a time.
//!
//! Concurrency: the group state sits behind a `std` mutex that is only taken on
//! blocking threads (storage reads and writes happen under it, which keeps the persisted
//! state in the same order as the in-memory one). Waiting fetches park on a tokio
//! [`Notify`] woken by appends, acks, naks and deletion, or sleep until the next
//! redelivery deadline: no polling. The ack floor is mirrored in an atomic so
//! [`ConsumerGroup::ack_floor`] never waits for the lock.
//!
//! Persistence (`consumers/` database, written without fsync: a lost write only means an
//! idempotent redelivery): a header with the cursor and configuration, plus one record
//! per pending message holding its delivery count. This is equivalent to "ack floor +
//! acks above it + pending counts": everything at or below the cursor that is not
//! pending was acked or did not match. After a restart every pending message is due at
//! once and its delivery count continues.
//!
//! Invariants: every pending sequence is at or below the cursor; the ack floor is the
//! sequence before the lowest pending one, or the cursor when nothing is pending, so it
//! never passes an unacked matching message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sluice_core::log::{AckToken, Consumer, ConsumerConfig, Delivery, LogError};
use sluice_core::metrics::LOG_REDELIVERIES_TOTAL;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::Seq;
use tokio::sync::Notify;

use super::codec::{self, ConsumerHeader};
use super::storage::{lock, storage_error, Shared};

/// Runs blocking storage work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, LogError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LogError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| LogError::Storage(format!("log storage task failed: {error}")))?
}

struct PendingDelivery {
    delivery_count: u32,
    redeliver_at: Instant,
}

struct GroupState {
    filter: String,
    ack_wait: Duration,
    max_ack_pending: usize,
    cursor: u64,
    pending: BTreeMap<u64, PendingDelivery>,
    deleted: bool,
}

impl GroupState {
    fn ack_floor(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .map_or(self.cursor, |lowest| lowest - 1)
    }

    fn header(&self) -> ConsumerHeader {
        ConsumerHeader {
            cursor: self.cursor,
            ack_wait_ms: u64::try_from(self.ack_wait.as_millis()).unwrap_or(u64::MAX),
            max_ack_pending: self.max_ack_pending as u64,
            filter: self.filter.clone(),
        }
    }
}

/// The shared state of one durable consumer.
pub(crate) struct ConsumerGroup {
    stream: StreamKind,
    name: String,
    key_prefix: Vec<u8>,
    state: Mutex<GroupState>,
    floor: AtomicU64,
    wake: Notify,
}

/// A zero `max_ack_pending` would deliver nothing, ever; treat it as one.
fn effective_max_ack_pending(configured: usize) -> usize {
    configured.max(1)
}

impl ConsumerGroup {
    fn with_state(stream: StreamKind, name: String, state: GroupState) -> Arc<Self> {
        Arc::new(Self {
            stream,
            key_prefix: codec::consumer_prefix(stream, &name),
            name,
            floor: AtomicU64::new(state.ack_floor()),
            state: Mutex::new(state),
            wake: Notify::new(),
        })
    }

    /// Creates a consumer starting at the beginning of the retained stream and persists
    /// its header.
    pub(crate) fn create(
        shared: &Shared,
        stream: StreamKind,
        config: &ConsumerConfig,
    ) -> Result<Arc<Self>, LogError> {
        let state = GroupState {
            filter: config.filter_subject.clone(),
            ack_wait: config.ack_wait,
            max_ack_pending: effective_max_ack_pending(config.max_ack_pending),
            cursor: shared.stream(stream).start_cursor()?,
            pending: BTreeMap::new(),
            deleted: false,
        };
        let group = Self::with_state(stream, config.durable_name.clone(), state);
        group.write_header(shared, &lock(&group.state))?;
        Ok(group)
    }

    /// Rebuilds a consumer from its persisted records; pending messages are due now.
    pub(crate) fn recovered(
        stream: StreamKind,
        name: String,
        header: ConsumerHeader,
        pending: BTreeMap<u64, u32>,
        default_ack_wait: Duration,
        now: Instant,
    ) -> Arc<Self> {
        let ack_wait = match header.ack_wait_ms {
            0 => default_ack_wait,
            ms => Duration::from_millis(ms),
        };
        let state = GroupState {
            filter: header.filter,
            ack_wait,
            max_ack_pending: effective_max_ack_pending(
                usize::try_from(header.max_ack_pending).unwrap_or(usize::MAX),
            ),
            cursor: header.cursor,
            pending: pending
                .into_iter()
                // A record above the cursor cannot come from a consistent write order;
                // the cursor scan will deliver that message anyway.
                .filter(|(seq, _)| *seq <= header.cursor)
                .map(|(seq, delivery_count)| {
                    (
                        seq,
                        PendingDelivery {
                            delivery_count,
                            redeliver_at: now,
                        },
                    )
                })
                .collect(),
            deleted: false,
        };
        Self::with_state(stream, name, state)
    }

    /// Applies the configuration of a newly opened handle (the latest opener wins, as
    /// when a JetStream consumer is updated); position and pending set are kept.
    pub(crate) fn reconfigure(
        &self,
        shared: &Shared,
        config: &ConsumerConfig,
    ) -> Result<(), LogError> {
        let mut state = lock(&self.state);
        if state.filter == config.filter_subject
            && state.ack_wait == config.ack_wait
            && state.max_ack_pending == effective_max_ack_pending(config.max_ack_pending)
        {
            return Ok(());
        }
        state.filter.clone_from(&config.filter_subject);
        state.ack_wait = config.ack_wait;
        state.max_ack_pending = effective_max_ack_pending(config.max_ack_pending);
        self.write_header(shared, &state)?;
        drop(state);
        self.wake.notify_waiters();
        Ok(())
    }

    fn write_header(&self, shared: &Shared, state: &GroupState) -> Result<(), LogError> {
        shared
            .consumer_state
            .insert(
                codec::consumer_header_key(&self.key_prefix),
                codec::encode_consumer_header(&state.header()),
            )
            .map_err(storage_error)
    }

    fn publish_floor(&self, state: &GroupState) {
        self.floor.store(state.ack_floor(), Ordering::Release);
    }

    /// The highest sequence at or below which every matching message is acked.
    pub(crate) fn ack_floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Called by the committer once `appended` is durable: moves a caught-up cursor past
    /// messages that do not match (so the ack floor reaches the stream's end when nothing
    /// matching is left) and wakes waiting fetches.
    pub(crate) fn on_appended(&self, appended: &[(u64, String)]) {
        let mut state = lock(&self.state);
        if state.deleted {
            return;
        }
        for (seq, subject) in appended {
            if *seq == state.cursor + 1 && !subjects::matches(&state.filter, subject) {
                state.cursor = *seq;
            }
        }
        self.publish_floor(&state);
        drop(state);
        self.wake.notify_waiters();
    }

    /// Marks the group deleted and removes its persisted records; waiting fetches wake
    /// and fail with [`LogError::ConsumerNotFound`].
    pub(crate) fn delete(&self, shared: &Shared) -> Result<(), LogError> {
        let mut state = lock(&self.state);
        state.deleted = true;
        state.pending.clear();
        let mut batch = shared.consumers_db.batch();
        for entry in shared.consumer_state.prefix(&self.key_prefix) {
            batch.remove(&shared.consumer_state, entry.key().map_err(storage_error)?);
        }
        let outcome = batch.commit().map_err(storage_error);
        drop(state);
        self.wake.notify_waiters();
        outcome
    }

    fn not_found(&self) -> LogError {
        LogError::ConsumerNotFound(self.name.clone())
    }

    fn ack_token(&self, seq: u64, delivery_count: u32) -> AckToken {
        AckToken(format!(
            "{}/{seq}/{delivery_count}/{}",
            self.stream.name(),
            self.name
        ))
    }

    /// Takes up to `max` deliveries: due redeliveries first, then new matching messages.
    /// Also returns when the next pending message falls due, for the waiting fetch.
    fn collect(
        &self,
        shared: &Shared,
        max: usize,
    ) -> Result<(Vec<Delivery>, Option<Instant>), LogError> {
        let mut state = lock(&self.state);
        if state.deleted {
            return Err(self.not_found());
        }
        let store = shared.stream(self.stream);
        let now = Instant::now();
        let redeliver_at = now + state.ack_wait;
        let mut batch = shared.consumers_db.batch();
        let mut out = Vec::new();

        let due: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, pending)| pending.redeliver_at <= now)
            .map(|(seq, _)| *seq)
            .take(max)
            .collect();
        for seq in due {
            let key = codec::consumer_pending_key(&self.key_prefix, seq);
            let Some(value) = store
                .messages
                .get(codec::seq_key(seq))
                .map_err(storage_error)?
            else {
                // Purged or deleted since it was delivered: nothing is left to redeliver.
                state.pending.remove(&seq);
                batch.remove(&shared.consumer_state, key);
                continue;
            };
            let record = codec::decode_message(&value)?;
            let Some(pending) = state.pending.get_mut(&seq) else {
                continue;
            };
            pending.delivery_count = pending.delivery_count.saturating_add(1);
            pending.redeliver_at = redeliver_at;
            let delivery_count = pending.delivery_count;
            batch.insert(
                &shared.consumer_state,
                key,
                delivery_count.to_be_bytes().to_vec(),
            );
            out.push(Delivery {
                seq: Seq(seq),
                subject: record.subject.to_owned(),
                payload: Bytes::copy_from_slice(record.payload),
                delivery_count,
                ack_token: self.ack_token(seq, delivery_count),
            });
            metrics::counter!(LOG_REDELIVERIES_TOTAL, "stream" => self.stream.name()).increment(1);
        }

        if out.len() < max && state.pending.len() < state.max_ack_pending {
            let mut cursor = state.cursor;
            for entry in store.messages.range(codec::seq_key(cursor + 1)..) {
                let (key, value) = entry.into_inner().map_err(storage_error)?;
                let seq = codec::decode_seq_key(&key)?;
                let record = codec::decode_message(&value)?;
                if !subjects::matches(&state.filter, record.subject) {
                    cursor = seq;
                    continue;
                }
                if out.len() >= max || state.pending.len() >= state.max_ack_pending {
                    break;
                }
                cursor = seq;
                state.pending.insert(
                    seq,
                    PendingDelivery {
                        delivery_count: 1,
                        redeliver_at,
                    },
                );
                batch.insert(
                    &shared.consumer_state,
                    codec::consumer_pending_key(&self.key_prefix, seq),
                    1u32.to_be_bytes().to_vec(),
                );
                out.push(Delivery {
                    seq: Seq(seq),
                    subject: record.subject.to_owned(),
                    payload: Bytes::copy_from_slice(record.payload),
                    delivery_count: 1,
                    ack_token: self.ack_token(seq, 1),
                });
            }
            if cursor != state.cursor {
                state.cursor = cursor;
                batch.insert(
                    &shared.consumer_state,
                    codec::consumer_header_key(&self.key_prefix),
                    codec::encode_consumer_header(&state.header()),
                );
            }
        }
        batch.commit().map_err(storage_error)?;
        self.publish_floor(&state);
        let next_due = state
            .pending
            .values()
            .map(|pending| pending.redeliver_at)
            .min();
        Ok((out, next_due))
    }

    /// Acknowledges `seqs`; unknown or already acked sequences are ignored.
    fn ack(&self, shared: &Shared, seqs: &[u64]) -> Result<(), LogError> {
        let mut state = lock(&self.state);
        if state.deleted {
            return Err(self.not_found());
        }
        let mut batch = shared.consumers_db.batch();
        for seq in seqs {
            if state.pending.remove(seq).is_some() {
                batch.remove(
                    &shared.consumer_state,
                    codec::consumer_pending_key(&self.key_prefix, *seq),
                );
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        batch.commit().map_err(storage_error)?;
        self.publish_floor(&state);
        drop(state);
        // Capacity under max_ack_pending was freed.
        self.wake.notify_waiters();
        Ok(())
    }

    /// Makes a pending message due again after `delay`.
    fn nak(&self, seq: u64, delay: Duration) -> Result<(), LogError> {
        let mut state = lock(&self.state);
        if state.deleted {
            return Err(self.not_found());
        }
        if let Some(pending) = state.pending.get_mut(&seq) {
            pending.redeliver_at = Instant::now() + delay;
        }
        drop(state);
        self.wake.notify_waiters();
        Ok(())
    }

    /// Restarts the ack wait of the pending messages among `seqs`.
    fn in_progress(&self, seqs: &[u64]) -> Result<(), LogError> {
        let mut state = lock(&self.state);
        if state.deleted {
            return Err(self.not_found());
        }
        let redeliver_at = Instant::now() + state.ack_wait;
        for seq in seqs {
            if let Some(pending) = state.pending.get_mut(seq) {
                pending.redeliver_at = redeliver_at;
            }
        }
        Ok(())
    }
}

/// One handle on a shared durable consumer of the embedded log.
pub(crate) struct EmbeddedConsumer {
    shared: Arc<Shared>,
    group: Arc<ConsumerGroup>,
}

impl EmbeddedConsumer {
    /// A handle on `group`.
    pub(crate) fn new(shared: Arc<Shared>, group: Arc<ConsumerGroup>) -> Self {
        Self { shared, group }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn fetch(&self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + max_wait;
        loop {
            // Registered before looking, so a wake-up between the look and the wait is kept.
            let woken = self.group.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            let shared = Arc::clone(&self.shared);
            let group = Arc::clone(&self.group);
            let (deliveries, next_due) = blocking(move || group.collect(&shared, max)).await?;
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
            let wake_at = next_due.map_or(deadline, |due| due.min(deadline));
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(wake_at), woken).await;
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), LogError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let seqs: Vec<u64> = deliveries.iter().map(|delivery| delivery.seq.0).collect();
        let shared = Arc::clone(&self.shared);
        let group = Arc::clone(&self.group);
        blocking(move || {
            group.ack(&shared, &seqs)?;
            shared.request_truncation();
            Ok(())
        })
        .await
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<(), LogError> {
        let seq = delivery.seq.0;
        let group = Arc::clone(&self.group);
        blocking(move || group.nak(seq, delay)).await
    }

    async fn in_progress(&self, deliveries: &[Delivery]) -> Result<(), LogError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let seqs: Vec<u64> = deliveries.iter().map(|delivery| delivery.seq.0).collect();
        let group = Arc::clone(&self.group);
        blocking(move || group.in_progress(&seqs)).await
    }
}
