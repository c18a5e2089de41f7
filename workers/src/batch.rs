//! Handling one DOCS message: decode, dedup, write, publish events, then ack or nak.
//!
//! The steps for a message at sequence `m` (op `i` has sequence `m.for_op(i)`):
//! 1. Decode the [`DocBatch`]; an undecodable message goes to the DLQ
//!    (`malformed_message`) and is acked. A message delivered more than `max_deliver`
//!    times (a crash loop) goes to the DLQ whole, without being tried again.
//! 2. Under the lock of its (collection, partition): look up the known versions
//!    ([`crate::dedup`]), resolve every op, apply the writes in one `Store::apply`, and
//!    record the outcome in the dedup cache.
//! 3. Publish one [`EventBatch`] with one event per applied op (and per op an earlier
//!    delivery already applied, whose event may never have made it).
//! 4. Ack only once the store write and the event append succeeded.
//!
//! Writes carry the batch's generation; the store discards those of an incarnation
//! that is being or has been deleted (counted as `discarded`, no event). A message on a
//! collection's drop subject is a deletion, applied by [`crate::collection_drop`].
//!
//! Failures (classified by [`crate::retry`]): a transient one re-runs steps 2–3 in place
//! with backoff (they are idempotent: ops already written come back as "already
//! applied"), then naks the message with a delay; when a breaker reports the store or the
//! log down, it stops retrying at once and the nak is excused from `max_deliver`
//! ([`crate::outage`]). Every log call goes through its breaker (`log_publish` for event
//! and DLQ appends, `log_consume` for acks and naks), the store through the store breaker
//! it is wrapped in. A permanent store failure re-applies
//! the message's writes one by one so its healthy ops go through; the failing ops make
//! the message nak'ed until its delivery count reaches `max_deliver`, when they go to
//! the DLQ and the message is acked.
//!
//! Concurrency: one [`BatchHandler`] is shared by every worker of a pool. Messages of
//! different partitions are handled in parallel; the per-partition lock only covers the
//! lookup → write → cache update span, never a backoff sleep or the event append.
//! Document contents are never logged.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use sluice_core::catalog::Catalog;
use sluice_core::config::WorkersConfig;
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::ids::{CollectionName, Partition, Seq, MAX_OPS_PER_BATCH};
use sluice_core::log::{Consumer, Delivery, Log, OutgoingMessage};
use sluice_core::metrics::{
    DLQ_MESSAGES_TOTAL, WORKER_BATCH_DURATION_SECONDS, WORKER_DEDUP_SKIPS_TOTAL, WORKER_OPS_TOTAL,
};
use sluice_core::op::{CollectionDrop, DocBatch, DocOp, Event, EventBatch};
use sluice_core::resilience::{BreakerState, Breakers, Classify};
use sluice_core::store::{Store, StoreError, StoreWrite, WriteOutcome};
use sluice_core::subjects::{self, StreamKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::collection_drop;
use crate::dedup::{self, Decision, DedupCache};
use crate::dlq::{now_ms, DeadLetter, DeadLetterCode, FailureHistory, UNROUTABLE_COLLECTION};
use crate::outage::{Dependencies, ExcusedDeliveries};
use crate::retry::{with_retries, Failure, RetryPolicy};

/// Most first-failure timestamps remembered (op sequence → ms) for DLQ records.
const FAILURE_HISTORY_ENTRIES: u64 = 100_000;

/// What becomes of a delivery once handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    /// Processed (applied, skipped or dead-lettered): never deliver again.
    Ack,
    /// Deliver again after this delay.
    Nak(Duration),
}

/// Per-outcome op counts of one message, reported once it is settled.
#[derive(Debug, Default)]
struct OpCounts {
    applied: u64,
    unchanged: u64,
    deduplicated: u64,
    stale: u64,
    /// For an incarnation of the collection that is being or has been deleted.
    discarded: u64,
}

/// What one successful attempt at a message did.
#[derive(Debug, Default)]
struct AttemptOutcome {
    counts: OpCounts,
    /// Ops the store refused permanently, by index, with the error.
    failed: Vec<(usize, StoreError)>,
}

/// One async lock per (collection, partition), created on first use. Their number is
/// bounded by collections × partitions.
#[derive(Default)]
struct PartitionLocks {
    locks: Mutex<HashMap<(CollectionName, Partition), PartitionLock>>,
}

/// Serializes dedup lookups and writes of one partition within a pool.
type PartitionLock = Arc<tokio::sync::Mutex<()>>;

impl PartitionLocks {
    fn get(&self, collection: &CollectionName, partition: Partition) -> PartitionLock {
        // The map is only ever left consistent (one insert), so a poisoned lock is usable.
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks
            .entry((collection.clone(), partition))
            .or_default()
            .clone()
    }
}

/// Handles DOCS messages for every worker of a pool.
pub(crate) struct BatchHandler {
    max_deliver: u32,
    policy: RetryPolicy,
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    dedup: DedupCache,
    partition_locks: PartitionLocks,
    /// op sequence (or message sequence for a malformed message) → first failure time.
    first_failures: moka::sync::Cache<Seq, u64>,
    /// The breakers, and the store probe that resumes fetching.
    deps: Dependencies,
    /// Deliveries spent by outages, not counted towards `max_deliver`.
    excused: ExcusedDeliveries,
    shutdown: CancellationToken,
}

impl BatchHandler {
    /// Forgets what the dedup cache knows of a deleted collection.
    pub(crate) fn forget_collection(&self, collection: &CollectionName) {
        self.dedup.forget_collection(collection);
    }

    /// Forgets everything the dedup cache knows (it refills from the store).
    pub(crate) fn forget_everything(&self) {
        self.dedup.clear();
    }

    pub(crate) fn new(
        config: &WorkersConfig,
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        breakers: Breakers,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            deps: Dependencies::new(breakers, store.clone()),
            excused: ExcusedDeliveries::new(),
            max_deliver: config.max_deliver.max(1),
            policy: RetryPolicy::from_config(config),
            log,
            store,
            catalog,
            dedup: DedupCache::new(config.dedup_cache_entries),
            partition_locks: PartitionLocks::default(),
            first_failures: moka::sync::Cache::new(FAILURE_HISTORY_ENTRIES),
            shutdown,
        }
    }

    /// The retry policy shared by the pool.
    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The pool's dependencies: breakers and the fetch gate.
    pub(crate) fn dependencies(&self) -> &Dependencies {
        &self.deps
    }

    /// Whether the log refuses acks and naks for now (retrying them in place is pointless:
    /// an unsettled message is delivered again after `ack_wait`).
    fn log_consume_down(&self) -> bool {
        self.deps.breakers.log_consume.state() == BreakerState::Open
    }

    fn log_publish_down(&self) -> bool {
        self.deps.breakers.log_publish.state() == BreakerState::Open
    }

    /// Handles one delivery to the end: it is acked or nak'ed when this returns.
    pub(crate) async fn handle(&self, consumer: &dyn Consumer, delivery: &Delivery) {
        let started = Instant::now();
        let disposition = self.process(delivery).await;
        let settled = match disposition {
            Disposition::Ack => {
                self.excused.forget(delivery);
                // Crash tests: everything is applied and published, the DOCS ack is not.
                crash_point::reached(CrashPoint::BeforeDocsAck);
                let give_up = || self.log_consume_down();
                with_retries(&self.policy, &self.shutdown, "ack", give_up, || async {
                    Ok(consumer.ack(std::slice::from_ref(delivery)).await?)
                })
                .await
            }
            Disposition::Nak(delay) => {
                let give_up = || self.log_consume_down();
                with_retries(&self.policy, &self.shutdown, "nak", give_up, || async {
                    Ok(consumer.nak(delivery, delay).await?)
                })
                .await
            }
        };
        if let Err(error) = settled {
            // Not lost: an unacked message is delivered again after ack_wait, and every
            // step above is idempotent.
            warn!(%error, seq = delivery.seq.0, ?disposition, "could not settle DOCS message");
        }
        histogram!(WORKER_BATCH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    }

    async fn process(&self, delivery: &Delivery) -> Disposition {
        if subjects::is_docs_drop(&delivery.subject) {
            return self.process_drop(delivery).await;
        }
        let batch = match DocBatch::decode(&delivery.payload) {
            Ok(batch) if batch.ops.len() <= MAX_OPS_PER_BATCH => batch,
            Ok(batch) => {
                let error = format!(
                    "message carries {} ops; at most {MAX_OPS_PER_BATCH} fit op sequences",
                    batch.ops.len()
                );
                return self.dead_letter_malformed(delivery, error).await;
            }
            Err(error) => {
                return self
                    .dead_letter_malformed(delivery, error.to_string())
                    .await
            }
        };
        let collection = &batch.collection;
        let deliveries = self.excused.counted(delivery);
        if deliveries > self.max_deliver {
            warn!(
                %collection,
                seq = delivery.seq.0,
                deliveries = delivery.delivery_count,
                "message exceeded max_deliver, moving its ops to the DLQ"
            );
            let message = format!(
                "message delivered {} times, more than max_deliver ({})",
                delivery.delivery_count, self.max_deliver
            );
            let failed: Vec<usize> = (0..batch.ops.len()).collect();
            return self
                .dead_letter_ops(
                    delivery,
                    &batch,
                    &failed,
                    DeadLetterCode::DeliveryLimitExceeded,
                    |_| message.clone(),
                )
                .await;
        }

        let give_up = || self.deps.in_outage();
        let outcome = with_retries(&self.policy, &self.shutdown, "apply", give_up, || {
            self.attempt(delivery, &batch)
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                if error.is_transient() && self.deps.in_outage() {
                    // The dependency is down, not the message: this delivery does not
                    // count towards max_deliver (see `crate::outage`).
                    self.excused.excuse(delivery);
                    debug!(%error, %collection, seq = delivery.seq.0, "dependency down, message will be redelivered");
                } else {
                    warn!(%error, %collection, seq = delivery.seq.0, "message not applied, will be redelivered");
                }
                count_ops(collection, "failed", batch.ops.len() as u64);
                return Disposition::Nak(self.policy.nak_delay(deliveries));
            }
        };
        report_counts(collection, &outcome.counts);
        if outcome.failed.is_empty() {
            return Disposition::Ack;
        }

        let now = now_ms();
        for (index, _) in &outcome.failed {
            self.first_failures
                .get_with(delivery.seq.for_op(*index), || now);
        }
        if deliveries < self.max_deliver {
            warn!(
                %collection,
                seq = delivery.seq.0,
                failed_ops = outcome.failed.len(),
                deliveries,
                "ops refused by the store, message will be redelivered"
            );
            count_ops(collection, "failed", outcome.failed.len() as u64);
            return Disposition::Nak(self.policy.nak_delay(deliveries));
        }
        let failed_indices: Vec<usize> = outcome.failed.iter().map(|(i, _)| *i).collect();
        let errors: HashMap<usize, String> = outcome
            .failed
            .iter()
            .map(|(i, e)| (*i, e.to_string()))
            .collect();
        self.dead_letter_ops(
            delivery,
            &batch,
            &failed_indices,
            DeadLetterCode::StoreRejected,
            |i| errors.get(&i).cloned().unwrap_or_default(),
        )
        .await
    }

    /// Applies a collection drop ([`crate::collection_drop`]), retrying in place, then
    /// naks it while it keeps failing (it is never dead-lettered: a deletion must
    /// finish).
    async fn process_drop(&self, delivery: &Delivery) -> Disposition {
        let drop = match CollectionDrop::decode(&delivery.payload) {
            Ok(drop) => drop,
            Err(error) => {
                return self
                    .dead_letter_malformed(delivery, error.to_string())
                    .await
            }
        };
        let give_up = || self.deps.in_outage();
        let applied = with_retries(&self.policy, &self.shutdown, "drop", give_up, || {
            collection_drop::apply(&self.catalog, self.store.as_ref(), self.log.as_ref(), &drop)
        })
        .await;
        match applied {
            Ok(_) => {
                self.dedup.forget_collection(&drop.collection);
                Disposition::Ack
            }
            Err(error) => {
                warn!(%error, collection = %drop.collection, "collection drop not applied, will be redelivered");
                let deliveries = self.excused.counted(delivery);
                Disposition::Nak(self.policy.nak_delay(deliveries))
            }
        }
    }

    /// One try at steps 2–3 (see module docs). Idempotent.
    async fn attempt(
        &self,
        delivery: &Delivery,
        batch: &DocBatch,
    ) -> Result<AttemptOutcome, Failure> {
        let collection = &batch.collection;
        let message_seq = delivery.seq;
        let partition_lock = self.partition_locks.get(collection, batch.partition);
        let guard = partition_lock.lock().await;

        let mut known = self
            .dedup
            .lookup(self.store.as_ref(), collection, &batch.ops)
            .await?;
        let decisions = dedup::resolve(&batch.ops, message_seq, &mut known);
        let to_write: Vec<usize> = (0..batch.ops.len())
            .filter(|&i| decisions[i] == Decision::Write)
            .collect();
        let writes: Vec<StoreWrite> = to_write
            .iter()
            .map(|&i| {
                let (op, seq) = batch.ops[i].sequenced(message_seq.for_op(i));
                store_write(op, seq)
            })
            .collect();

        let mut write_outcomes: HashMap<usize, WriteOutcome> = HashMap::new();
        let mut failed: Vec<(usize, StoreError)> = Vec::new();
        if !writes.is_empty() {
            match self
                .store
                .apply(collection, batch.generation, writes.clone())
                .await
            {
                Ok(outcomes) => {
                    // Crash tests: the store has the writes, the EVENTS log not yet.
                    crash_point::reached(CrashPoint::AfterStoreWrite);
                    for (k, &i) in to_write.iter().enumerate() {
                        // A store that reports fewer outcomes than writes is treated as
                        // having applied them: an extra event is harmless (indexers are
                        // idempotent and sequence-guarded), a missing one is not.
                        let outcome = outcomes.get(k).copied().unwrap_or(WriteOutcome::Applied);
                        write_outcomes.insert(i, outcome);
                    }
                }
                Err(error) if error.is_transient() => return Err(error.into()),
                Err(error) => {
                    debug!(%error, %collection, seq = message_seq.0, "batch write refused, applying ops one by one");
                    for (&i, write) in to_write.iter().zip(writes) {
                        match self
                            .store
                            .apply(collection, batch.generation, vec![write])
                            .await
                        {
                            Ok(outcomes) => {
                                let outcome =
                                    outcomes.first().copied().unwrap_or(WriteOutcome::Applied);
                                write_outcomes.insert(i, outcome);
                            }
                            Err(error) if error.is_transient() => return Err(error.into()),
                            Err(error) => failed.push((i, error)),
                        }
                    }
                }
            }
        }

        // Bring the cache in line with the store before another message of this
        // partition looks at it. An id with a stale or failed write is forgotten: the
        // store holds something this message did not predict.
        let mut unpredictable: HashSet<usize> = failed.iter().map(|(i, _)| *i).collect();
        unpredictable.extend(
            write_outcomes
                .iter()
                .filter(|(_, outcome)| {
                    matches!(**outcome, WriteOutcome::Stale | WriteOutcome::Discarded)
                })
                .map(|(i, _)| *i),
        );
        let forget: HashSet<_> = unpredictable.iter().map(|&i| batch.ops[i].id()).collect();
        for (id, version) in known {
            if forget.contains(&id) {
                self.dedup.forget(collection, id);
            } else {
                self.dedup.remember(collection, id, version);
            }
        }
        drop(guard);

        let mut counts = OpCounts::default();
        let mut events = Vec::new();
        let mut published_ops = Vec::new();
        for (i, (op, decision)) in batch.ops.iter().zip(&decisions).enumerate() {
            let publish = match decision {
                Decision::Write => match write_outcomes.get(&i) {
                    Some(WriteOutcome::Applied) => {
                        counts.applied += 1;
                        true
                    }
                    Some(WriteOutcome::Stale) => {
                        counts.stale += 1;
                        false
                    }
                    Some(WriteOutcome::Discarded) => {
                        counts.discarded += 1;
                        false
                    }
                    None => false, // failed, reported separately
                },
                Decision::AlreadyApplied => {
                    // No write needed now; counted as unchanged so a redelivery does not
                    // count an op as applied twice.
                    counts.unchanged += 1;
                    true
                }
                Decision::Unchanged => {
                    counts.unchanged += 1;
                    if matches!(op.sequenced(Seq::default()).0, DocOp::Upsert { .. }) {
                        counts.deduplicated += 1;
                    }
                    false
                }
                Decision::Stale => {
                    counts.stale += 1;
                    false
                }
            };
            if publish {
                let (op, seq) = op.sequenced(message_seq.for_op(i));
                events.push(event_of(op, seq));
                published_ops.push(i);
            }
        }
        if !events.is_empty() {
            let message = events_message(batch, message_seq, &published_ops, events);
            self.log.append(StreamKind::Events, vec![message]).await?;
        }
        Ok(AttemptOutcome { counts, failed })
    }

    /// Moves ops `indices` of `batch` to the DLQ, then acks; naks if the DLQ append fails.
    async fn dead_letter_ops(
        &self,
        delivery: &Delivery,
        batch: &DocBatch,
        indices: &[usize],
        code: DeadLetterCode,
        error_of: impl Fn(usize) -> String,
    ) -> Disposition {
        let now = now_ms();
        let records: Vec<DeadLetter> = indices
            .iter()
            .map(|&i| {
                let position = delivery.seq.for_op(i);
                let history = FailureHistory {
                    attempts: delivery.delivery_count,
                    first_failure_ms: self.first_failures.get(&position).unwrap_or(now),
                    last_failure_ms: now,
                };
                DeadLetter::for_op(
                    &batch.collection,
                    &batch.ops[i],
                    position,
                    code,
                    error_of(i),
                    history,
                )
            })
            .collect();
        let disposition = self.append_dead_letters(delivery, &records).await;
        if disposition == Disposition::Ack {
            for &i in indices {
                self.first_failures.invalidate(&delivery.seq.for_op(i));
            }
            warn!(
                collection = %batch.collection,
                seq = delivery.seq.0,
                ops = records.len(),
                code = code.as_str(),
                "ops moved to the DLQ"
            );
            count_ops(&batch.collection, "dead_lettered", records.len() as u64);
            counter!(DLQ_MESSAGES_TOTAL, "collection" => batch.collection.to_string())
                .increment(records.len() as u64);
        }
        disposition
    }

    /// Moves an undecodable message to the DLQ, then acks; naks if the append fails.
    async fn dead_letter_malformed(&self, delivery: &Delivery, error: String) -> Disposition {
        let collection = collection_of_subject(&delivery.subject);
        let now = now_ms();
        let history = FailureHistory {
            attempts: delivery.delivery_count,
            first_failure_ms: now,
            last_failure_ms: now,
        };
        let record = DeadLetter::for_malformed_message(
            &collection,
            delivery.seq,
            &delivery.payload,
            error,
            history,
        );
        let disposition = self
            .append_dead_letters(delivery, std::slice::from_ref(&record))
            .await;
        if disposition == Disposition::Ack {
            warn!(%collection, seq = delivery.seq.0, "undecodable DOCS message moved to the DLQ");
            count_ops(&collection, "dead_lettered", 1);
            counter!(DLQ_MESSAGES_TOTAL, "collection" => collection.to_string()).increment(1);
        }
        disposition
    }

    async fn append_dead_letters(
        &self,
        delivery: &Delivery,
        records: &[DeadLetter],
    ) -> Disposition {
        let messages: Vec<OutgoingMessage> = records.iter().map(DeadLetter::to_outgoing).collect();
        let give_up = || self.log_publish_down();
        let appended = with_retries(&self.policy, &self.shutdown, "dlq append", give_up, || {
            let messages = messages.clone();
            async move { Ok(self.log.append(StreamKind::Dlq, messages).await?) }
        })
        .await;
        match appended {
            Ok(_) => Disposition::Ack,
            Err(error) => {
                warn!(%error, seq = delivery.seq.0, "could not append to the DLQ, message will be redelivered");
                Disposition::Nak(self.policy.nak_delay(delivery.delivery_count))
            }
        }
    }
}

/// The write of a plain op (see [`DocOp::sequenced`]) at `seq`.
fn store_write(op: &DocOp, seq: Seq) -> StoreWrite {
    match op {
        DocOp::Upsert { id, hash, source } => StoreWrite::Upsert {
            id: id.clone(),
            seq,
            hash: *hash,
            source: source.clone(),
        },
        DocOp::Delete { id } => StoreWrite::Delete {
            id: id.clone(),
            seq,
        },
        DocOp::Replayed { op, .. } => store_write(op, seq),
    }
}

/// The event of a plain op (see [`DocOp::sequenced`]) applied at `seq`.
fn event_of(op: &DocOp, seq: Seq) -> Event {
    match op {
        DocOp::Upsert { id, hash, source } => Event::Upserted {
            id: id.clone(),
            seq,
            hash: *hash,
            source: source.clone(),
        },
        DocOp::Delete { id } => Event::Deleted {
            id: id.clone(),
            seq,
        },
        DocOp::Replayed { op, .. } => event_of(op, seq),
    }
}

/// The EVENTS message of one DOCS message. Its `msg_id` names the DOCS message, the
/// partition and which of its ops are included: a retried publish of the same events is
/// deduplicated by the log, while a later delivery that publishes a different set (an
/// op that failed before now succeeded) is not mistaken for a duplicate.
fn events_message(
    batch: &DocBatch,
    message_seq: Seq,
    op_indices: &[usize],
    events: Vec<Event>,
) -> OutgoingMessage {
    let index_bytes: Vec<u8> = op_indices
        .iter()
        .flat_map(|&i| (i as u64).to_le_bytes())
        .collect();
    let digest = xxhash_rust::xxh3::xxh3_64(&index_bytes);
    let payload = EventBatch {
        collection: batch.collection.clone(),
        partition: batch.partition,
        events,
        generation: batch.generation,
    }
    .encode();
    OutgoingMessage {
        subject: subjects::events(&batch.collection, batch.partition),
        msg_id: format!("ev-{message_seq}-{}-{digest:016x}", batch.partition),
        payload,
    }
}

/// The collection token of `sluice.docs.{c}.{p}`, or [`UNROUTABLE_COLLECTION`].
fn collection_of_subject(subject: &str) -> CollectionName {
    subjects::collection_of(subject).unwrap_or_else(|| {
        CollectionName::new(UNROUTABLE_COLLECTION).expect("the fallback name is valid")
    })
}

fn count_ops(collection: &CollectionName, outcome: &'static str, n: u64) {
    if n > 0 {
        counter!(WORKER_OPS_TOTAL, "collection" => collection.to_string(), "outcome" => outcome)
            .increment(n);
    }
}

fn report_counts(collection: &CollectionName, counts: &OpCounts) {
    count_ops(collection, "applied", counts.applied);
    count_ops(collection, "unchanged", counts.unchanged);
    count_ops(collection, "stale", counts.stale);
    count_ops(collection, "discarded", counts.discarded);
    if counts.deduplicated > 0 {
        counter!(WORKER_DEDUP_SKIPS_TOTAL, "collection" => collection.to_string())
            .increment(counts.deduplicated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::ids::DocId;

    #[test]
    fn collection_comes_from_the_docs_subject() {
        assert_eq!(
            collection_of_subject("sluice.docs.books.3").as_str(),
            "books"
        );
        assert_eq!(
            collection_of_subject("sluice.docs.Bad!.3").as_str(),
            UNROUTABLE_COLLECTION
        );
        assert_eq!(collection_of_subject("x").as_str(), UNROUTABLE_COLLECTION);
    }

    #[test]
    fn event_msg_ids_depend_on_the_published_ops() {
        let batch = DocBatch {
            collection: CollectionName::new("books").unwrap(),
            partition: Partition(1),
            generation: Default::default(),
            ops: vec![],
        };
        let event = || Event::Deleted {
            id: DocId::new("a").unwrap(),
            seq: Seq(1),
        };
        let all = events_message(&batch, Seq(4), &[0, 1, 2], vec![event()]);
        let again = events_message(&batch, Seq(4), &[0, 1, 2], vec![event()]);
        let fewer = events_message(&batch, Seq(4), &[0, 2], vec![event()]);
        assert_eq!(all.msg_id, again.msg_id);
        assert_ne!(all.msg_id, fewer.msg_id);
        assert!(all.msg_id.starts_with("ev-4-1-"));
        assert_eq!(all.subject, "sluice.events.books.1");
        let decoded = EventBatch::decode(&all.payload).unwrap();
        assert_eq!(decoded.events, vec![event()]);
    }
}
