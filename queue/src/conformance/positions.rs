//! Consumer positions: ack floors through acks, gaps and filters, and deleting a
//! consumer with its position.

use super::*;

impl<F, Fut> Suite<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    pub(super) async fn ack_floor_follows_acks_gaps_and_filters(&self) {
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
        remove_consumer(&*log, StreamKind::Events, &name).await;
        assert!(
            log.ack_floor(StreamKind::Events, &name)
                .await
                .expect("ack_floor failed")
                .is_none(),
            "no floor once the consumer is deleted"
        );
    }

    pub(super) async fn delete_consumer_forgets_its_position(&self) {
        let log = self.open().await;
        let subject = self.subject(StreamKind::Events, "delete");
        let name = self.consumer_name("delete");
        let config = consumer_config(&name, &subject, Duration::from_secs(30), 100);
        let consumer = open_consumer(&*log, StreamKind::Events, config.clone()).await;
        for i in 0..3 {
            self.append(&*log, StreamKind::Events, &subject, &format!("d{i}"))
                .await;
        }
        let got = fetch_n(&*consumer, 3).await;
        assert_eq!(got.len(), 3);
        consumer.ack(&got[..1]).await.expect("ack failed");
        drop(consumer);
        remove_consumer(&*log, StreamKind::Events, &name).await;
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

        let consumer = open_consumer(&*log, StreamKind::Events, config).await;
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
        remove_consumer(&*log, StreamKind::Events, &name).await;
    }
}
