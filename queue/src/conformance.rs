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

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_core::log::{Consumer, ConsumerConfig, Delivery, Log, LogError, OutgoingMessage};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;

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

    async fn sequences_increase_in_order(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Dlq, "order");
        let before_ms = now_ms();
        let payloads: Vec<String> = (0..5).map(|i| format!("order-{i}")).collect();
        let first = log
            .append(
                StreamKind::Dlq,
                payloads
                    .iter()
                    .map(|payload| message(&subject, self.msg_id(), payload.clone()))
                    .collect(),
            )
            .await
            .expect("append failed");
        assert_eq!(first.len(), 5, "one sequence per message");
        assert!(
            first.windows(2).all(|w| w[0] < w[1]),
            "sequences increase within a batch: {first:?}"
        );
        let second = self
            .append(&*log, StreamKind::Dlq, &subject, "order-5")
            .await;
        assert!(second > first[4], "a later append gets a higher sequence");
        let after_ms = now_ms();
        let last = log
            .last_seq(StreamKind::Dlq)
            .await
            .expect("last_seq failed");
        assert!(
            last >= second,
            "last_seq {last} is below an appended sequence {second}"
        );

        let stored = log
            .read(StreamKind::Dlq, &subject, first[0], 100)
            .await
            .expect("read failed");
        let expected: Vec<Seq> = first.iter().copied().chain([second]).collect();
        assert_eq!(
            seqs_of_stored(&stored),
            expected,
            "read returns the messages in order"
        );
        for (message, i) in stored.iter().zip(0..) {
            assert_eq!(message.subject, subject);
            assert_eq!(message.payload, Bytes::from(format!("order-{i}")));
            assert!(
                message.appended_at_ms + 60_000 >= before_ms
                    && message.appended_at_ms <= after_ms + 60_000,
                "appended_at_ms {} is not the append time",
                message.appended_at_ms
            );
        }
    }

    async fn msg_id_deduplicates_across_restarts(&self) {
        let subject = self.subject(StreamKind::Dlq, "dedup");
        let id = self.msg_id();
        let log = self.open().await;
        let original = log
            .append(
                StreamKind::Dlq,
                vec![message(&subject, id.clone(), "first")],
            )
            .await
            .expect("append failed")[0];
        let last = log
            .last_seq(StreamKind::Dlq)
            .await
            .expect("last_seq failed");
        let again = log
            .append(
                StreamKind::Dlq,
                vec![message(&subject, id.clone(), "second")],
            )
            .await
            .expect("append failed")[0];
        assert_eq!(
            again, original,
            "a duplicate msg_id returns the original sequence"
        );
        assert_eq!(
            log.last_seq(StreamKind::Dlq)
                .await
                .expect("last_seq failed"),
            last,
            "a duplicate stores nothing"
        );
        let twin = self.msg_id();
        let pair = log
            .append(
                StreamKind::Dlq,
                vec![
                    message(&subject, twin.clone(), "twin-a"),
                    message(&subject, twin, "twin-b"),
                ],
            )
            .await
            .expect("append failed");
        assert_eq!(
            pair[0], pair[1],
            "duplicates within one append share a sequence"
        );
        drop(log);

        let log = self.open().await;
        let after_restart = log
            .append(StreamKind::Dlq, vec![message(&subject, id, "third")])
            .await
            .expect("append failed")[0];
        assert_eq!(after_restart, original, "msg_id dedup survives a restart");
        let stored = log
            .read(StreamKind::Dlq, &subject, Seq(0), 100)
            .await
            .expect("read failed");
        let payloads: Vec<&[u8]> = stored.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(
            payloads,
            vec![&b"first"[..], &b"twin-a"[..]],
            "only originals are stored"
        );
    }

    async fn shared_consumer_delivers_each_message_once(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "shared");
        let name = self.consumer_name("shared");
        let config = consumer_config(&name, &subject, SHORT_ACK_WAIT, 1000);
        let first = log
            .consumer(StreamKind::Docs, config.clone())
            .await
            .expect("consumer failed");
        let second = log
            .consumer(StreamKind::Docs, config)
            .await
            .expect("consumer failed");
        let mut appended = BTreeSet::new();
        for i in 0..20 {
            appended.insert(
                self.append(&*log, StreamKind::Docs, &subject, &format!("m{i}"))
                    .await,
            );
        }

        let deadline = Instant::now() + PATIENCE;
        let mut seen: BTreeMap<Seq, usize> = BTreeMap::new();
        let mut per_handle = [0usize; 2];
        while seen.len() < appended.len() && Instant::now() < deadline {
            for (index, handle) in [&first, &second].into_iter().enumerate() {
                let batch = handle
                    .fetch(3, Duration::from_millis(200))
                    .await
                    .expect("fetch failed");
                handle.ack(&batch).await.expect("ack failed");
                per_handle[index] += batch.len();
                for delivery in batch {
                    assert_eq!(delivery.delivery_count, 1, "nothing was redelivered");
                    *seen.entry(delivery.seq).or_default() += 1;
                }
            }
        }
        assert_eq!(
            seen.keys().copied().collect::<BTreeSet<_>>(),
            appended,
            "every message delivered"
        );
        assert!(
            seen.values().all(|count| *count == 1),
            "each message to exactly one handle: {seen:?}"
        );
        assert!(
            per_handle.iter().all(|n| *n > 0),
            "both handles share the work: {per_handle:?}"
        );
        expect_no_redelivery(
            &*first,
            SHORT_ACK_WAIT,
            "acked messages are not delivered again",
        )
        .await;
        drop((first, second));
        log.delete_consumer(StreamKind::Docs, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn filter_selects_subjects(&self) {
        let log = self.open().await;
        let wanted_0 = format!("sluice.events.{}filta.0", self.run);
        let wanted_1 = format!("sluice.events.{}filta.1", self.run);
        let other = format!("sluice.events.{}filtb.0", self.run);
        let a0 = self
            .append(&*log, StreamKind::Events, &wanted_0, "a0")
            .await;
        let b0 = self.append(&*log, StreamKind::Events, &other, "b0").await;
        let a1 = self
            .append(&*log, StreamKind::Events, &wanted_1, "a1")
            .await;
        let b1 = self.append(&*log, StreamKind::Events, &other, "b1").await;

        // Both consumers exist before anything is acked: an adapter may truncate what
        // every existing consumer has acked, and a filter counts non-matching as acked.
        let star_name = self.consumer_name("filtstar");
        let star = log
            .consumer(
                StreamKind::Events,
                consumer_config(
                    &star_name,
                    &format!("sluice.events.{}filta.*", self.run),
                    Duration::from_secs(30),
                    100,
                ),
            )
            .await
            .expect("consumer failed");
        let tail_name = self.consumer_name("filttail");
        let tail = log
            .consumer(
                StreamKind::Events,
                consumer_config(
                    &tail_name,
                    &format!("sluice.events.{}filtb.>", self.run),
                    Duration::from_secs(30),
                    100,
                ),
            )
            .await
            .expect("consumer failed");

        let got = fetch_n(&*star, 2).await;
        assert_eq!(
            seqs_of(&got),
            vec![a0, a1],
            "`*` filter selects its subjects, in order"
        );
        assert_eq!(got[1].subject, wanted_1);
        star.ack(&got).await.expect("ack failed");
        expect_nothing(&*star, "non-matching subjects are never delivered").await;

        let got = fetch_n(&*tail, 2).await;
        assert_eq!(
            seqs_of(&got),
            vec![b0, b1],
            "`>` filter selects its subjects"
        );
        assert_eq!(got[0].payload, Bytes::from_static(b"b0"));
        tail.ack(&got).await.expect("ack failed");
        expect_nothing(&*tail, "non-matching subjects are never delivered").await;
        drop((star, tail));
        log.delete_consumer(StreamKind::Events, &star_name)
            .await
            .expect("delete_consumer failed");
        log.delete_consumer(StreamKind::Events, &tail_name)
            .await
            .expect("delete_consumer failed");
    }

    async fn in_progress_holds_off_redelivery(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "progress");
        let name = self.consumer_name("progress");
        let ack_wait = Duration::from_millis(500);
        let consumer = log
            .consumer(
                StreamKind::Docs,
                consumer_config(&name, &subject, ack_wait, 100),
            )
            .await
            .expect("consumer failed");
        let seq = self.append(&*log, StreamKind::Docs, &subject, "slow").await;
        let first = fetch_n(&*consumer, 1).await;
        assert_eq!(seqs_of(&first), vec![seq]);

        // Three ack waits in all, each shorter stretch ended by a progress report.
        let held_until = Instant::now() + ack_wait * 3;
        while Instant::now() < held_until {
            consumer
                .in_progress(&first)
                .await
                .expect("in_progress failed");
            let got = consumer
                .fetch(10, ack_wait / 3)
                .await
                .expect("fetch failed");
            assert!(
                got.is_empty(),
                "a message reported in progress is not redelivered: got {:?}",
                seqs_of(&got)
            );
        }
        let reported_at = Instant::now();
        let again = fetch_n(&*consumer, 1).await;
        assert_eq!(
            seqs_of(&again),
            vec![seq],
            "once reports stop, the message is redelivered"
        );
        assert_eq!(
            again[0].delivery_count, 2,
            "progress reports are not deliveries"
        );
        assert!(
            reported_at.elapsed() >= ack_wait.mul_f32(0.3),
            "redelivered too soon after the last report: {:?}",
            reported_at.elapsed()
        );
        consumer.ack(&again).await.expect("ack failed");
        drop(consumer);
        log.delete_consumer(StreamKind::Docs, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn unacked_message_is_redelivered_after_ack_wait(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "ackwait");
        let name = self.consumer_name("ackwait");
        let ack_wait = Duration::from_millis(500);
        let consumer = log
            .consumer(
                StreamKind::Docs,
                consumer_config(&name, &subject, ack_wait, 100),
            )
            .await
            .expect("consumer failed");
        let seq = self.append(&*log, StreamKind::Docs, &subject, "late").await;
        let first = fetch_n(&*consumer, 1).await;
        assert_eq!(seqs_of(&first), vec![seq]);
        assert_eq!(first[0].delivery_count, 1, "first delivery counts 1");
        let delivered_at = Instant::now();

        let again = fetch_n(&*consumer, 1).await;
        assert_eq!(
            seqs_of(&again),
            vec![seq],
            "an unacked message is redelivered"
        );
        assert_eq!(again[0].delivery_count, 2, "the redelivery counts 2");
        assert!(
            delivered_at.elapsed() >= ack_wait.mul_f32(0.6),
            "redelivered before ack_wait: after {:?}",
            delivered_at.elapsed()
        );
        consumer.ack(&again).await.expect("ack failed");
        let quiet = consumer
            .fetch(10, ack_wait * 2)
            .await
            .expect("fetch failed");
        assert!(
            quiet.is_empty(),
            "an acked message is not redelivered: {:?}",
            seqs_of(&quiet)
        );
        drop(consumer);
        log.delete_consumer(StreamKind::Docs, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn nak_redelivers_after_delay(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "nak");
        let name = self.consumer_name("nak");
        let consumer = log
            .consumer(
                StreamKind::Docs,
                consumer_config(&name, &subject, SHORT_ACK_WAIT, 100),
            )
            .await
            .expect("consumer failed");
        let seq = self
            .append(&*log, StreamKind::Docs, &subject, "retry")
            .await;
        let first = fetch_n(&*consumer, 1).await;
        assert_eq!(seqs_of(&first), vec![seq]);
        consumer
            .nak(&first[0], Duration::ZERO)
            .await
            .expect("nak failed");
        let second = fetch_n(&*consumer, 1).await;
        assert_eq!(seqs_of(&second), vec![seq], "a nak'ed message comes back");
        assert_eq!(second[0].delivery_count, 2);

        let delay = Duration::from_millis(300);
        let naked_at = Instant::now();
        consumer.nak(&second[0], delay).await.expect("nak failed");
        let third = fetch_n(&*consumer, 1).await;
        assert_eq!(seqs_of(&third), vec![seq], "a delayed nak comes back");
        assert_eq!(third[0].delivery_count, 3);
        assert!(
            naked_at.elapsed() >= delay.mul_f32(0.6),
            "redelivered before the nak delay: after {:?}",
            naked_at.elapsed()
        );
        consumer.ack(&third).await.expect("ack failed");
        expect_no_redelivery(
            &*consumer,
            SHORT_ACK_WAIT,
            "an acked message is not redelivered",
        )
        .await;
        drop(consumer);
        log.delete_consumer(StreamKind::Docs, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn max_ack_pending_bounds_deliveries(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "pending");
        let name = self.consumer_name("pending");
        let config = consumer_config(&name, &subject, Duration::from_secs(30), 3);
        let first = log
            .consumer(StreamKind::Docs, config.clone())
            .await
            .expect("consumer failed");
        let second = log
            .consumer(StreamKind::Docs, config)
            .await
            .expect("consumer failed");
        for i in 0..6 {
            self.append(&*log, StreamKind::Docs, &subject, &format!("p{i}"))
                .await;
        }
        let held = fetch_n(&*first, 3).await;
        assert_eq!(held.len(), 3, "up to max_ack_pending are delivered");
        expect_nothing(
            &*second,
            "max_ack_pending counts every handle's unacked messages",
        )
        .await;
        expect_nothing(&*first, "max_ack_pending is a hard bound").await;

        first.ack(&held[..1]).await.expect("ack failed");
        let one_more = fetch_n(&*second, 1).await;
        assert_eq!(one_more.len(), 1, "an ack frees one slot");
        assert!(
            !seqs_of(&held).contains(&one_more[0].seq),
            "the freed slot takes a new message"
        );
        expect_nothing(&*second, "the bound holds again").await;

        first.ack(&held[1..]).await.expect("ack failed");
        second.ack(&one_more).await.expect("ack failed");
        let rest = fetch_n(&*second, 2).await;
        assert_eq!(rest.len(), 2, "the remaining messages flow once acked");
        second.ack(&rest).await.expect("ack failed");
        drop((first, second));
        log.delete_consumer(StreamKind::Docs, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn restart_redelivers_only_unacked(&self) {
        let subject = self.subject(StreamKind::Events, "restart");
        let name = self.consumer_name("restart");
        let config = consumer_config(&name, &subject, Duration::from_secs(1), 100);
        let log = self.open().await;
        let consumer = log
            .consumer(StreamKind::Events, config.clone())
            .await
            .expect("consumer failed");
        for i in 0..6 {
            self.append(&*log, StreamKind::Events, &subject, &format!("r{i}"))
                .await;
        }
        let delivered = fetch_n(&*consumer, 6).await;
        assert_eq!(delivered.len(), 6);
        let mut acked = Vec::new();
        let mut unacked = Vec::new();
        for (index, delivery) in delivered.into_iter().enumerate() {
            if index % 2 == 0 {
                acked.push(delivery);
            } else {
                unacked.push(delivery);
            }
        }
        consumer.ack(&acked).await.expect("ack failed");
        drop(consumer);
        drop(log);

        let log = self.open().await;
        let consumer = log
            .consumer(StreamKind::Events, config.clone())
            .await
            .expect("consumer failed");
        let expected: BTreeSet<Seq> = unacked.iter().map(|d| d.seq).collect();
        let again = fetch_until(&*consumer, 10, |got| {
            got.iter().map(|d| d.seq).collect::<BTreeSet<_>>() == expected
        })
        .await;
        let again_seqs: BTreeSet<Seq> = again.iter().map(|d| d.seq).collect();
        assert_eq!(
            again_seqs, expected,
            "after a restart exactly the unacked messages come back"
        );
        assert!(
            again.iter().all(|d| d.delivery_count == 2),
            "delivery counts continue across a restart: {:?}",
            again
                .iter()
                .map(|d| (d.seq, d.delivery_count))
                .collect::<Vec<_>>()
        );
        consumer.ack(&again).await.expect("ack failed");
        drop(consumer);
        drop(log);

        let log = self.open().await;
        let consumer = log
            .consumer(StreamKind::Events, config)
            .await
            .expect("consumer failed");
        let quiet = consumer
            .fetch(10, Duration::from_millis(1500))
            .await
            .expect("fetch failed");
        assert!(
            quiet.is_empty(),
            "acked messages never come back: {:?}",
            seqs_of(&quiet)
        );
        floor_eventually(
            &*log,
            StreamKind::Events,
            &name,
            "everything acked",
            |floor, last| floor == last,
        )
        .await;
        drop(consumer);
        log.delete_consumer(StreamKind::Events, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn ack_floor_follows_acks_gaps_and_filters(&self) {
        let log = self.open().await;
        let wanted = self.subject(StreamKind::Events, "floora");
        let other = self.subject(StreamKind::Events, "floorb");
        let name = self.consumer_name("floor");
        assert!(
            log.ack_floor(StreamKind::Events, &name)
                .await
                .expect("ack_floor failed")
                .is_none(),
            "no floor for a consumer that does not exist"
        );
        let a1 = self.append(&*log, StreamKind::Events, &wanted, "a1").await;
        self.append(&*log, StreamKind::Events, &other, "b1").await;
        let a2 = self.append(&*log, StreamKind::Events, &wanted, "a2").await;
        let a3 = self.append(&*log, StreamKind::Events, &wanted, "a3").await;
        let consumer = log
            .consumer(
                StreamKind::Events,
                consumer_config(&name, &wanted, Duration::from_secs(30), 100),
            )
            .await
            .expect("consumer failed");
        let got = fetch_n(&*consumer, 3).await;
        assert_eq!(seqs_of(&got), vec![a1, a2, a3]);

        consumer.ack(&got[1..2]).await.expect("ack failed");
        floor_eventually(
            &*log,
            StreamKind::Events,
            &name,
            "a gap holds the floor",
            |floor, _| floor < a1,
        )
        .await;
        consumer.ack(&got[..1]).await.expect("ack failed");
        floor_eventually(
            &*log,
            StreamKind::Events,
            &name,
            "acked up to a2",
            |floor, _| floor >= a2 && floor < a3,
        )
        .await;
        consumer.ack(&got[2..]).await.expect("ack failed");
        floor_eventually(
            &*log,
            StreamKind::Events,
            &name,
            "all acked",
            |floor, last| floor == last,
        )
        .await;

        self.append(&*log, StreamKind::Events, &other, "b2").await;
        floor_eventually(
            &*log,
            StreamKind::Events,
            &name,
            "non-matching counts as acked",
            |floor, last| floor == last,
        )
        .await;
        let a4 = self.append(&*log, StreamKind::Events, &wanted, "a4").await;
        let floor = log
            .ack_floor(StreamKind::Events, &name)
            .await
            .expect("ack_floor failed")
            .expect("consumer exists");
        assert!(
            floor < a4,
            "an undelivered match holds the floor: {floor} >= {a4}"
        );
        let last = fetch_n(&*consumer, 1).await;
        assert_eq!(seqs_of(&last), vec![a4]);
        consumer.ack(&last).await.expect("ack failed");
        floor_eventually(
            &*log,
            StreamKind::Events,
            &name,
            "caught up again",
            |floor, last| floor == last,
        )
        .await;
        drop(consumer);
        log.delete_consumer(StreamKind::Events, &name)
            .await
            .expect("delete_consumer failed");
        assert!(
            log.ack_floor(StreamKind::Events, &name)
                .await
                .expect("ack_floor failed")
                .is_none(),
            "no floor once the consumer is deleted"
        );
    }

    async fn read_purge_and_delete_message(&self) {
        let log = self.open().await;
        let x = self.subject(StreamKind::Dlq, "purgex");
        let y = self.subject(StreamKind::Dlq, "purgey");
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..5 {
            xs.push(
                self.append(&*log, StreamKind::Dlq, &x, &format!("x{i}"))
                    .await,
            );
            if i < 3 {
                ys.push(
                    self.append(&*log, StreamKind::Dlq, &y, &format!("y{i}"))
                        .await,
                );
            }
        }
        let read = |filter: String, from: Seq, max: usize| {
            let log = Arc::clone(&log);
            async move {
                seqs_of_stored(
                    &log.read(StreamKind::Dlq, &filter, from, max)
                        .await
                        .expect("read failed"),
                )
            }
        };
        assert_eq!(
            read(x.clone(), xs[0], 100).await,
            xs,
            "read filters by subject"
        );
        assert_eq!(
            read(x.clone(), xs[0], 2).await,
            xs[..2].to_vec(),
            "read stops at max"
        );
        assert_eq!(
            read(x.clone(), xs[2], 100).await,
            xs[2..].to_vec(),
            "read starts at from"
        );

        assert!(log
            .delete_message(StreamKind::Dlq, xs[1])
            .await
            .expect("delete failed"));
        assert!(
            !log.delete_message(StreamKind::Dlq, xs[1])
                .await
                .expect("delete failed"),
            "deleting a missing message says so"
        );
        let remaining: Vec<Seq> = xs.iter().copied().filter(|seq| *seq != xs[1]).collect();
        assert_eq!(
            read(x.clone(), xs[0], 100).await,
            remaining,
            "a deleted message is gone"
        );

        assert_eq!(
            log.purge(StreamKind::Dlq, &x).await.expect("purge failed"),
            4,
            "purge counts"
        );
        assert!(
            read(x.clone(), Seq(0), 100).await.is_empty(),
            "purged messages are gone"
        );
        assert_eq!(
            read(y.clone(), Seq(0), 100).await,
            ys,
            "purge keeps other subjects"
        );
        assert_eq!(
            log.purge(StreamKind::Dlq, &y).await.expect("purge failed"),
            3
        );
    }

    async fn delete_consumer_forgets_its_position(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Events, "delete");
        let name = self.consumer_name("delete");
        let config = consumer_config(&name, &subject, Duration::from_secs(30), 100);
        let consumer = log
            .consumer(StreamKind::Events, config.clone())
            .await
            .expect("consumer failed");
        for i in 0..3 {
            self.append(&*log, StreamKind::Events, &subject, &format!("d{i}"))
                .await;
        }
        let got = fetch_n(&*consumer, 3).await;
        assert_eq!(got.len(), 3);
        consumer.ack(&got[..1]).await.expect("ack failed");
        drop(consumer);
        log.delete_consumer(StreamKind::Events, &name)
            .await
            .expect("delete_consumer failed");
        assert!(
            log.ack_floor(StreamKind::Events, &name)
                .await
                .expect("ack_floor failed")
                .is_none(),
            "a deleted consumer has no floor"
        );
        assert!(
            matches!(
                log.delete_consumer(StreamKind::Events, &name).await,
                Err(LogError::ConsumerNotFound(_))
            ),
            "deleting a missing consumer reports it"
        );

        let consumer = log
            .consumer(StreamKind::Events, config)
            .await
            .expect("consumer failed");
        let wanted: BTreeSet<Seq> = seqs_of(&got[1..]).into_iter().collect();
        let again = fetch_until(&*consumer, 10, |got| {
            wanted.iter().all(|seq| got.iter().any(|d| d.seq == *seq))
        })
        .await;
        for seq in &wanted {
            let delivery = again.iter().find(|d| d.seq == *seq);
            assert!(
                delivery.is_some_and(|d| d.delivery_count == 1),
                "a re-created consumer starts over: {seq} -> {:?}",
                delivery.map(|d| d.delivery_count)
            );
        }
        consumer.ack(&again).await.expect("ack failed");
        drop(consumer);
        log.delete_consumer(StreamKind::Events, &name)
            .await
            .expect("delete_consumer failed");
    }

    async fn concurrent_appends_are_distinct_and_durable(&self) {
        const TASKS: usize = 32;
        const APPENDS: usize = 50;
        let subject = self.subject(StreamKind::Dlq, "concurrent");
        let log = self.open().await;
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let log = Arc::clone(&log);
            let subject = subject.clone();
            let run = self.run.clone();
            tasks.spawn(async move {
                let mut appended = Vec::with_capacity(APPENDS);
                for i in 0..APPENDS {
                    let payload = format!("t{task}-{i}");
                    let seqs = log
                        .append(
                            StreamKind::Dlq,
                            vec![message(
                                &subject,
                                format!("{run}-c{task}-{i}"),
                                payload.clone(),
                            )],
                        )
                        .await
                        .expect("append failed");
                    appended.push((seqs[0], payload));
                }
                appended
            });
        }
        let mut expected = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            for (seq, payload) in joined.expect("append task panicked") {
                assert!(
                    expected.insert(seq, payload).is_none(),
                    "sequence {seq} handed out twice"
                );
            }
        }
        assert_eq!(expected.len(), TASKS * APPENDS);
        drop(log);

        let log = self.open().await;
        let first = *expected.keys().next().expect("appended something");
        let stored = log
            .read(StreamKind::Dlq, &subject, first, TASKS * APPENDS + 10)
            .await
            .expect("read failed");
        let found: BTreeMap<Seq, String> = stored
            .into_iter()
            .map(|m| (m.seq, String::from_utf8_lossy(&m.payload).into_owned()))
            .collect();
        assert_eq!(
            found, expected,
            "every acknowledged append is stored, with its payload"
        );
    }
}

fn seqs_of_stored(stored: &[sluice_core::log::StoredMessage]) -> Vec<Seq> {
    stored.iter().map(|message| message.seq).collect()
}
