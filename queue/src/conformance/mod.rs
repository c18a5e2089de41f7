//! The `Log` conformance suite: the contract of [`sluice_core::log`], as executable checks.
//!
//! Written once against the port only, run against every adapter (the embedded log
//! here, JetStream in its own tests). Call [`run_all`] with a function that opens the
//! log on the same storage every time it is called: restart cases drop every handle and
//! open it again. Cases panic with a message naming the broken guarantee.
//!
//! Isolation: each run draws a fresh token, and every case uses its own subjects and
//! consumer names built from it, so runs and cases never see each other's messages.
//! Every case deletes the consumers it created. Cases that read messages back use the
//! DLQ stream, on which the suite never creates a consumer, because an adapter may
//! truncate what the consumers of a stream have acked (filters count non-matching
//! messages as acked); for the same reason a case that uses several consumers on one
//! stream creates them all before acking anything. Cases run one after the other.
//!
//! Timing: no sleeps as synchronization; waits are fetches with `max_wait` or polls
//! with a deadline. The whole suite takes a few seconds (the ack-wait cases dominate).
//!
//! # Layout
//! - this module: [`run_all`], the run's names and ids, and the waiting helpers;
//! - `appends`: sequences, deduplication, concurrent appends, reads, purges, deletes;
//! - `delivery`: shared consumers, filters, in-progress, ack-wait and nak redelivery,
//!   the ack-pending bound, restarts;
//! - `positions`: ack floors and consumer deletion.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_core::log::{Consumer, ConsumerConfig, Delivery, Log, LogError, OutgoingMessage};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;

mod appends;
mod delivery;
mod positions;

/// Longest any single expectation may take before the case fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a fetch waits when the case expects nothing new to arrive.
const QUIET: Duration = Duration::from_millis(300);
/// Ack wait of the cases that check an acked message is not delivered again: short, so
/// that waiting past it ([`expect_no_redelivery`]) keeps the suite quick.
const SHORT_ACK_WAIT: Duration = Duration::from_secs(1);

/// Runs every case. `open` must open the log on the same storage on every call.
pub async fn run_all<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    let suite = Suite::new(&open);
    suite.sequences_increase_in_order().await;
    suite.msg_id_deduplicates_across_restarts().await;
    suite.shared_consumer_delivers_each_message_once().await;
    suite.filter_selects_subjects().await;
    suite.unacked_message_is_redelivered_after_ack_wait().await;
    suite.in_progress_holds_off_redelivery().await;
    suite.nak_redelivers_after_delay().await;
    suite.max_ack_pending_bounds_deliveries().await;
    suite.restart_redelivers_only_unacked().await;
    suite.ack_floor_follows_acks_gaps_and_filters().await;
    suite.read_purge_and_delete_message().await;
    suite.delete_consumer_forgets_its_position().await;
    suite.concurrent_appends_are_distinct_and_durable().await;
}

struct Suite<'a, F> {
    open: &'a F,
    run: String,
    ids: AtomicU64,
}

fn message(subject: &str, msg_id: String, payload: impl Into<Bytes>) -> OutgoingMessage {
    OutgoingMessage {
        subject: subject.to_owned(),
        msg_id,
        payload: payload.into(),
    }
}

fn consumer_config(
    name: &str,
    filter: &str,
    ack_wait: Duration,
    max_ack_pending: usize,
) -> ConsumerConfig {
    ConsumerConfig {
        durable_name: name.to_owned(),
        filter_subject: filter.to_owned(),
        ack_wait,
        max_ack_pending,
    }
}

/// A handle on the durable consumer `config` names on `stream`; the case fails when the
/// log refuses it.
async fn open_consumer(
    log: &dyn Log,
    stream: StreamKind,
    config: ConsumerConfig,
) -> Box<dyn Consumer> {
    log.consumer(stream, config).await.expect("consumer failed")
}

/// Deletes a consumer a case created, once the case is done with it.
async fn remove_consumer(log: &dyn Log, stream: StreamKind, name: &str) {
    log.delete_consumer(stream, name)
        .await
        .expect("delete_consumer failed");
}

fn seqs_of(deliveries: &[Delivery]) -> Vec<Seq> {
    deliveries.iter().map(|delivery| delivery.seq).collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Fetches until `done` holds for everything collected, or `PATIENCE` runs out.
async fn fetch_until(
    consumer: &dyn Consumer,
    max: usize,
    done: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut collected = Vec::new();
    while !done(&collected) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let batch = consumer
            .fetch(max, left.min(Duration::from_secs(1)))
            .await
            .expect("fetch failed");
        collected.extend(batch);
    }
    collected
}

/// Fetches until `n` deliveries were collected (or `PATIENCE` runs out).
async fn fetch_n(consumer: &dyn Consumer, n: usize) -> Vec<Delivery> {
    fetch_until(consumer, n, |got| got.len() >= n).await
}

/// Asserts that nothing is delivered within `QUIET`: nothing new, such as a message the
/// filter or the ack-pending bound holds back. Too short to see a redelivery.
async fn expect_nothing(consumer: &dyn Consumer, why: &str) {
    let got = consumer.fetch(10, QUIET).await.expect("fetch failed");
    assert!(got.is_empty(), "{why}: got {:?}", seqs_of(&got));
}

/// Asserts that nothing is delivered within twice `ack_wait`, the consumer's ack wait:
/// a message whose ack did not take would be redelivered inside that window.
async fn expect_no_redelivery(consumer: &dyn Consumer, ack_wait: Duration, why: &str) {
    let got = consumer
        .fetch(10, ack_wait * 2)
        .await
        .expect("fetch failed");
    assert!(got.is_empty(), "{why}: got {:?}", seqs_of(&got));
}

/// Polls `ack_floor` until `check(floor, last_seq)` holds, or fails after `PATIENCE`.
async fn floor_eventually(
    log: &dyn Log,
    stream: StreamKind,
    name: &str,
    what: &str,
    check: impl Fn(Seq, Seq) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let floor = log
            .ack_floor(stream, name)
            .await
            .expect("ack_floor failed")
            .expect("consumer exists");
        let last = log.last_seq(stream).await.expect("last_seq failed");
        if check(floor, last) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: ack floor {floor}, last seq {last}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl<F, Fut> Suite<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    fn new(open: &F) -> Suite<'_, F> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        Suite {
            open,
            run: format!("conf{:x}", nanos & u128::from(u64::MAX)),
            ids: AtomicU64::new(0),
        }
    }

    async fn open(&self) -> Arc<dyn Log> {
        (self.open)().await
    }

    /// A subject of `stream` owned by `case`.
    fn subject(&self, stream: StreamKind, case: &str) -> String {
        match stream {
            StreamKind::Docs => format!("sluice.docs.{}{case}.0", self.run),
            StreamKind::Events => format!("sluice.events.{}{case}.0", self.run),
            StreamKind::Dlq => format!("sluice.dlq.{}{case}", self.run),
        }
    }

    fn consumer_name(&self, case: &str) -> String {
        format!("{}-{case}", self.run)
    }

    fn msg_id(&self) -> String {
        format!("{}-{}", self.run, self.ids.fetch_add(1, Ordering::Relaxed))
    }

    async fn append(&self, log: &dyn Log, stream: StreamKind, subject: &str, payload: &str) -> Seq {
        let seqs = log
            .append(
                stream,
                vec![message(subject, self.msg_id(), payload.to_owned())],
            )
            .await
            .expect("append failed");
        assert_eq!(seqs.len(), 1, "one sequence per appended message");
        seqs[0]
    }
}

fn seqs_of_stored(stored: &[sluice_core::log::StoredMessage]) -> Vec<Seq> {
    stored.iter().map(|message| message.seq).collect()
}
