//! Appending and reading back: sequences, message-id deduplication (also across a
//! restart), concurrent appends, reads, purges and deletes of stored messages.

use super::*;

impl<F, Fut> Suite<'_, F>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Log>>,
{
    pub(super) async fn sequences_increase_in_order(&self) {
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

    pub(super) async fn msg_id_deduplicates_across_restarts(&self) {
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

    pub(super) async fn concurrent_appends_are_distinct_and_durable(&self) {
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

    pub(super) async fn read_purge_and_delete_message(&self) {
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
}
