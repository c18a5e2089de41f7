//! Delivering through shared durable consumers: each message to one handle, filters,
//! in-progress reports, redelivery after the ack wait and after a nak, the
//! `max_ack_pending` bound, and redelivery of only the unacked messages after a restart.

use super::*;

impl<F, Fut> Suite<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    pub(super) async fn shared_consumer_delivers_each_message_once(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "shared");
        let name = self.consumer_name("shared");
        let config = consumer_config(&name, &subject, SHORT_ACK_WAIT, 1000);
        let first = open_consumer(&*log, StreamKind::Docs, config.clone()).await;
        let second = open_consumer(&*log, StreamKind::Docs, config).await;
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
        remove_consumer(&*log, StreamKind::Docs, &name).await;
    }

    pub(super) async fn filter_selects_subjects(&self) {
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
        remove_consumer(&*log, StreamKind::Events, &star_name).await;
        remove_consumer(&*log, StreamKind::Events, &tail_name).await;
    }

    pub(super) async fn in_progress_holds_off_redelivery(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "progress");
        let name = self.consumer_name("progress");
        let ack_wait = Duration::from_millis(500);
        let consumer = open_consumer(
            &*log,
            StreamKind::Docs,
            consumer_config(&name, &subject, ack_wait, 100),
        )
        .await;
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
        remove_consumer(&*log, StreamKind::Docs, &name).await;
    }

    pub(super) async fn unacked_message_is_redelivered_after_ack_wait(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "ackwait");
        let name = self.consumer_name("ackwait");
        let ack_wait = Duration::from_millis(500);
        let consumer = open_consumer(
            &*log,
            StreamKind::Docs,
            consumer_config(&name, &subject, ack_wait, 100),
        )
        .await;
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
        remove_consumer(&*log, StreamKind::Docs, &name).await;
    }

    pub(super) async fn nak_redelivers_after_delay(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "nak");
        let name = self.consumer_name("nak");
        let consumer = open_consumer(
            &*log,
            StreamKind::Docs,
            consumer_config(&name, &subject, SHORT_ACK_WAIT, 100),
        )
        .await;
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
        remove_consumer(&*log, StreamKind::Docs, &name).await;
    }

    pub(super) async fn max_ack_pending_bounds_deliveries(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Docs, "pending");
        let name = self.consumer_name("pending");
        let config = consumer_config(&name, &subject, Duration::from_secs(30), 3);
        let first = open_consumer(&*log, StreamKind::Docs, config.clone()).await;
        let second = open_consumer(&*log, StreamKind::Docs, config).await;
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
        remove_consumer(&*log, StreamKind::Docs, &name).await;
    }

    pub(super) async fn restart_redelivers_only_unacked(&self) {
        let subject = self.subject(StreamKind::Events, "restart");
        let name = self.consumer_name("restart");
        let config = consumer_config(&name, &subject, Duration::from_secs(1), 100);
        let log = self.open().await;
        let consumer = open_consumer(&*log, StreamKind::Events, config.clone()).await;
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
        let consumer = open_consumer(&*log, StreamKind::Events, config.clone()).await;
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
        let consumer = open_consumer(&*log, StreamKind::Events, config).await;
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
        remove_consumer(&*log, StreamKind::Events, &name).await;
    }
}
