//! The consume loop of one shard: fetch EVENTS micro-batches, apply them, commit on the
//! policy (soon after catching up with the events; rarely while a backlog lasts), then ack.
//!
//! Concurrency: one task per shard; Tantivy work (applying, committing) runs on blocking
//! threads so the async workers stay free. The loop is the only writer of its shard.
//!
//! Invariants:
//! - A message is acked only after the commit that made its events durable and
//!   searchable (acks trail the commit, never precede it). A crash before the ack means
//!   redelivery, and re-applying is a no-op thanks to the shard's sequence guard. A failed
//!   ack (log unreachable) is retried with the next commits, a bounded number of times.
//! - On cancellation the loop finishes its batch, commits and acks before returning.
//! - The shard's index writer is closed only with nothing pending and nothing unacked,
//!   after `writer_idle_timeout` without changes (at once while another shard waits for
//!   a writer slot, [`crate::writer_slots`]); the next change opens it again.
//! - The loop applies events only while it holds a writer slot, and gives the slot back
//!   when its writer is closed.
//! - A message that cannot be decoded can never succeed: it is logged and acked with the
//!   next commit rather than redelivered forever. So is one of another incarnation of
//!   the collection (its generation differs from the shard's): it can never apply.
//!
//! Breakers: fetches and acks go through `log_consume`; commits are recorded in
//! `index_commit` (a commit slower than its timeout counts as a failure). While either is
//! open the loop fetches nothing, so events wait in the log instead of piling up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::config::{IndexerConfig, TombstoneSchedule};
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::log::{Consumer, ConsumerConfig, Delivery, Log};
use sluice_core::op::EventBatch;
use sluice_core::resilience::{Breaker, Breakers};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::Generation;
use tokio_util::sync::CancellationToken;

use crate::commit_policy::CommitPolicy;
use crate::error::ShardError;
use crate::shard::ShardIndex;
use crate::tombstones::TombstoneCompaction;
use crate::writer_slots::{WriterSlot, WriterSlots};

/// Most event messages delivered and unacked per shard (backpressure on the log).
pub(crate) const MAX_ACK_PENDING: usize = 512;
/// Longest a fetch waits when nothing is pending (bounds shutdown and idle latency).
const MAX_FETCH_WAIT: Duration = Duration::from_millis(250);
/// Attempts at acking committed messages before leaving them to redelivery.
const MAX_ACK_ATTEMPTS: u32 = 3;
/// Delay after a log failure before trying again.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The durable consumer name of one shard.
pub(crate) fn consumer_name(shard: &ShardIndex) -> String {
    subjects::indexer_consumer(shard.collection(), shard.partition())
}

/// The consumer configuration of one shard; `ack_wait` should span several longest
/// uncommitted stretches (`commit_max_interval`), so that a slow commit does not trigger
/// redeliveries (the configuration refuses less than twice).
pub(crate) fn consumer_config(shard: &ShardIndex, ack_wait: Duration) -> ConsumerConfig {
    ConsumerConfig {
        durable_name: consumer_name(shard),
        filter_subject: subjects::events(shard.collection(), shard.partition()),
        ack_wait,
        max_ack_pending: MAX_ACK_PENDING,
    }
}

/// Runs `f` on a blocking thread.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ShardError>
where
    F: FnOnce() -> Result<T, ShardError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShardError::Task(e.to_string()))?
}

/// What every shard loop of a node shares.
#[derive(Clone)]
pub(crate) struct LoopContext {
    pub log: Arc<dyn Log>,
    pub config: IndexerConfig,
    /// When tombstones may be compacted ([`crate::tombstones`]).
    pub tombstones: TombstoneSchedule,
    pub breakers: Breakers,
    /// The node-wide bound on open index writers.
    pub slots: Arc<WriterSlots>,
}

/// Consumes the shard's events until `cancel` fires, then commits and acks what it holds.
pub(crate) async fn run(
    shard: Arc<ShardIndex>,
    generation: Generation,
    context: LoopContext,
    cancel: CancellationToken,
) {
    let LoopContext {
        log,
        config,
        tombstones,
        breakers,
        slots,
    } = context;
    let Some(consumer) = open_consumer(&shard, log.as_ref(), config.ack_wait, &cancel).await else {
        return;
    };
    let shard_consumer = consumer_name(&shard);
    let mut compaction = TombstoneCompaction::new(tombstones, Instant::now());
    let mut policy = CommitPolicy::new(
        config.commit_max_docs,
        config.commit_interval,
        config.backlog_commit_interval(),
    );
    let mut unacked: Vec<Delivery> = Vec::new();
    let mut failed_acks = 0;
    let mut slot: Option<WriterSlot> = None;
    loop {
        let wait = policy
            .time_until_due(Instant::now())
            .map_or(MAX_FETCH_WAIT, |until| until.min(MAX_FETCH_WAIT));
        let usable = async {
            breakers
                .log_consume
                .wait_until_permitted(cancel.cancelled())
                .await
                && breakers
                    .index_commit
                    .wait_until_permitted(cancel.cancelled())
                    .await
        };
        if !usable.await {
            break;
        }
        let fetch = consumer.fetch(config.fetch_batch, wait);
        let fetched = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            fetched = fetch => fetched,
        };
        // A fetch returns what is ready at once: short of a full batch, nothing more was
        // waiting, so the shard has caught up with its events (see `commit_policy`).
        // A failed fetch says nothing either way.
        let caught_up = match &fetched {
            Ok(deliveries) => deliveries.len() < config.fetch_batch,
            Err(_) => false,
        };
        match fetched {
            Ok(deliveries) if !deliveries.is_empty() => {
                if slot.is_none() {
                    // Cancelled while waiting: the deliveries stay unacked and come back.
                    let Some(acquired) = slots.acquire(&cancel).await else {
                        break;
                    };
                    slot = Some(acquired);
                }
                let events = decode(&shard, generation, &deliveries);
                let apply_shard = shard.clone();
                match blocking(move || apply_shard.apply(events)).await {
                    Ok(outcome) => {
                        policy.record(outcome.changed(), Instant::now());
                        unacked.extend(deliveries);
                    }
                    Err(error) => {
                        // Not acked: the log delivers these again after `ack_wait`.
                        tracing::error!(%error, collection = %shard.collection(), shard = shard.partition().0, "applying events failed");
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, collection = %shard.collection(), shard = shard.partition().0, "fetching events failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
        if let Some(seq_below) = compaction
            .turn(log.as_ref(), &shard_consumer, Instant::now())
            .await
        {
            if shard.tombstones() > 0 {
                if slot.is_none() {
                    let Some(acquired) = slots.acquire(&cancel).await else {
                        break;
                    };
                    slot = Some(acquired);
                }
                let compact_shard = shard.clone();
                match blocking(move || compact_shard.compact_tombstones(seq_below)).await {
                    Ok(0) => {}
                    // Committed with the next commit, like any change.
                    Ok(removed) => policy.record(removed as usize, Instant::now()),
                    Err(error) => {
                        tracing::warn!(%error, collection = %shard.collection(), shard = shard.partition().0, "compacting tombstones failed")
                    }
                }
            }
        }
        if policy.is_due(Instant::now(), caught_up) {
            commit_and_ack(
                &shard,
                consumer.as_ref(),
                &breakers,
                &mut policy,
                &mut unacked,
                &mut failed_acks,
            )
            .await;
        }
        if !policy.has_pending() && unacked.is_empty() {
            let idle = if slots.contended() {
                Duration::ZERO
            } else {
                config.writer_idle_timeout
            };
            if shard.writer_is_idle(idle) {
                close_idle_writer(&shard, idle).await;
            }
            if !shard.writer_is_open() {
                // Closed, or never opened (every event was stale).
                slot = None;
            }
        }
    }
    if policy.has_pending() {
        commit_and_ack(
            &shard,
            consumer.as_ref(),
            &breakers,
            &mut policy,
            &mut unacked,
            &mut failed_acks,
        )
        .await;
    }
}

/// Closes the shard's idle writer on a blocking thread (it waits for running merges).
async fn close_idle_writer(shard: &Arc<ShardIndex>, idle: Duration) {
    let close_shard = shard.clone();
    match blocking(move || close_shard.close_writer_if_idle(idle)).await {
        Ok(true) => {
            tracing::debug!(collection = %shard.collection(), shard = shard.partition().0, "idle index writer closed")
        }
        Ok(false) => {}
        Err(error) => {
            // The writer is gone either way; the next change opens a new one.
            tracing::warn!(%error, collection = %shard.collection(), shard = shard.partition().0, "closing the idle index writer failed")
        }
    }
}

async fn open_consumer(
    shard: &ShardIndex,
    log: &dyn Log,
    ack_wait: Duration,
    cancel: &CancellationToken,
) -> Option<Box<dyn Consumer>> {
    loop {
        match log
            .consumer(StreamKind::Events, consumer_config(shard, ack_wait))
            .await
        {
            Ok(consumer) => return Some(consumer),
            Err(error) => {
                tracing::warn!(%error, collection = %shard.collection(), shard = shard.partition().0, "opening the events consumer failed");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }
}

/// The events of `deliveries` that belong to incarnation `generation` of the shard's
/// collection. Events of another (a deleted incarnation's, still on their way) are
/// skipped, and acked with the rest.
fn decode(
    shard: &ShardIndex,
    generation: Generation,
    deliveries: &[Delivery],
) -> Vec<sluice_core::op::Event> {
    let mut events = Vec::new();
    for delivery in deliveries {
        match EventBatch::decode(&delivery.payload) {
            Ok(batch) if batch.generation == generation => events.extend(batch.events),
            Ok(batch) => {
                tracing::debug!(seq = delivery.seq.0, collection = %shard.collection(), events_generation = %batch.generation, %generation, "events of another incarnation skipped");
            }
            Err(error) => {
                tracing::error!(%error, seq = delivery.seq.0, collection = %shard.collection(), shard = shard.partition().0, "undecodable events message skipped");
            }
        }
    }
    events
}

/// Commits `shard` on a blocking thread, recording the outcome in `breaker`. A commit
/// that outlives the breaker's timeout is still awaited (it holds the writer and cannot
/// be abandoned half-way), but counts as a failure: the index is not healthy.
async fn guarded_commit(shard: &Arc<ShardIndex>, breaker: &Breaker) -> Result<(), ShardError> {
    let commit_shard = shard.clone();
    let mut commit = std::pin::pin!(blocking(move || commit_shard.commit()));
    let result = match tokio::time::timeout(breaker.timeout(), &mut commit).await {
        Ok(result) => result,
        Err(_) => {
            breaker.record(Err(&ShardError::Timeout));
            tracing::warn!(collection = %shard.collection(), shard = shard.partition().0, timeout = ?breaker.timeout(), "index commit is slower than its timeout");
            return commit.await;
        }
    };
    breaker.record(result.as_ref().map(|_| ()));
    result
}

async fn commit_and_ack(
    shard: &Arc<ShardIndex>,
    consumer: &dyn Consumer,
    breakers: &Breakers,
    policy: &mut CommitPolicy,
    unacked: &mut Vec<Delivery>,
    failed_acks: &mut u32,
) {
    if policy.pending_docs() > 0 {
        tracing::debug!(collection = %shard.collection(), shard = shard.partition().0, docs = policy.pending_docs(), messages = unacked.len(), "committing");
        if let Err(error) = guarded_commit(shard, &breakers.index_commit).await {
            tracing::error!(%error, collection = %shard.collection(), shard = shard.partition().0, "commit failed; changes will be redelivered");
            let rollback_shard = shard.clone();
            if let Err(error) = blocking(move || rollback_shard.rollback()).await {
                tracing::error!(%error, collection = %shard.collection(), shard = shard.partition().0, "rollback failed");
            }
            // Not acked: redelivered after `ack_wait`, re-applied idempotently.
            unacked.clear();
            *failed_acks = 0;
            policy.reset();
            return;
        }
    }
    if !unacked.is_empty() {
        // Crash tests: committed and searchable, the events not yet acked.
        crash_point::reached(CrashPoint::BeforeEventsAck);
        if let Err(error) = consumer.ack(unacked).await {
            *failed_acks += 1;
            if *failed_acks < MAX_ACK_ATTEMPTS {
                // The changes are committed. Left to redelivery, these messages would hold
                // the shard's ack floor (and every `wait=searchable`) back for a whole
                // `ack_wait`; acks are idempotent, so they go again with the next commit,
                // or on their own once the commit interval has passed.
                tracing::warn!(%error, collection = %shard.collection(), shard = shard.partition().0, "acking events failed; retrying");
                policy.reset();
                policy.record(0, Instant::now());
                return;
            }
            // Redelivered after `ack_wait`; re-applying them is a no-op.
            tracing::warn!(%error, collection = %shard.collection(), shard = shard.partition().0, "acking events failed; left to redelivery");
        }
    }
    *failed_acks = 0;
    unacked.clear();
    policy.reset();
}
