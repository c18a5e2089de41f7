//! The JetStream log against the conformance suite, plus what only a networked log has
//! to prove: appends during a server outage fail transiently and never falsely succeed,
//! retried publishes are stored once, and consumers survive restarts and dead handles.
//!
//! Every test starts its own nats-server (random port, temporary store); a machine
//! without one fails these tests with a message saying how to install it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::log::{Consumer, ConsumerConfig, Delivery, Log, LogError, OutgoingMessage};
use sluice_core::subjects::{StreamKind, WORKERS_CONSUMER};
use sluice_core::Seq;
use sluice_queue::testing::NatsServer;
use sluice_queue::{conformance, JetStreamConfig, JetStreamLog};

const PATIENCE: Duration = Duration::from_secs(20);

fn config(server: &NatsServer) -> JetStreamConfig {
    JetStreamConfig {
        publish_timeout: Duration::from_secs(2),
        ..JetStreamConfig::new(server.url())
    }
}

async fn connect(server: &NatsServer) -> Arc<JetStreamLog> {
    JetStreamLog::connect(config(server))
        .await
        .expect("connect to the test nats-server")
}

fn message(subject: &str, msg_id: &str, payload: &str) -> OutgoingMessage {
    OutgoingMessage {
        subject: subject.to_owned(),
        msg_id: msg_id.to_owned(),
        payload: payload.to_owned().into(),
    }
}

fn consumer_config(name: &str, filter: &str, ack_wait: Duration) -> ConsumerConfig {
    ConsumerConfig {
        durable_name: name.to_owned(),
        filter_subject: filter.to_owned(),
        ack_wait,
        max_ack_pending: 1000,
    }
}

/// Retries `operation` while it fails transiently, until `PATIENCE` runs out.
async fn until_ok<T, Fut>(what: &str, operation: impl Fn() -> Fut) -> T
where
    Fut: Future<Output = Result<T, LogError>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(error) => {
                assert!(error.is_transient(), "{what}: permanent error {error}");
                assert!(Instant::now() < deadline, "{what}: still failing: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Polls `done` until it holds, failing after `PATIENCE`.
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fetches (riding out transient errors) until `n` deliveries arrived.
async fn fetch_n(consumer: &dyn Consumer, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match consumer
            .fetch(n - got.len(), Duration::from_millis(500))
            .await
        {
            Ok(batch) => got.extend(batch),
            Err(error) => assert!(error.is_transient(), "fetch: permanent error {error}"),
        }
    }
    got
}

fn seqs(deliveries: &[Delivery]) -> BTreeSet<Seq> {
    deliveries.iter().map(|delivery| delivery.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_log_passes_the_conformance_suite() {
    let server = NatsServer::start();
    let config = config(&server);
    conformance::run_all(|| {
        let config = config.clone();
        async move {
            JetStreamLog::connect(config)
                .await
                .expect("connect to the test nats-server") as Arc<dyn Log>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_are_kept_for_the_workers_and_removed_once_they_acked() {
    let server = NatsServer::start();
    let log = connect(&server).await;
    let subject = "sluice.docs.kept.0";
    // No consumer was opened: the `workers` interest created at connect keeps them.
    let appended = log
        .append(
            StreamKind::Docs,
            (0..5)
                .map(|i| message(subject, &format!("k{i}"), &format!("p{i}")))
                .collect(),
        )
        .await
        .expect("append");
    let stored = log
        .read(StreamKind::Docs, subject, Seq(0), 100)
        .await
        .expect("read");
    assert_eq!(
        stored.len(),
        5,
        "DOCS dropped messages published before any worker came"
    );

    let workers = log
        .consumer(
            StreamKind::Docs,
            consumer_config(
                WORKERS_CONSUMER,
                StreamKind::Docs.all_subjects(),
                Duration::from_secs(30),
            ),
        )
        .await
        .expect("workers consumer");
    let delivered = fetch_n(&*workers, 5).await;
    assert_eq!(seqs(&delivered), appended.iter().copied().collect());
    workers.ack(&delivered).await.expect("ack");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = log
            .read(StreamKind::Docs, subject, Seq(0), 100)
            .await
            .expect("read");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acked DOCS are never removed: {} left",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        log.ack_floor(StreamKind::Docs, WORKERS_CONSUMER)
            .await
            .expect("ack_floor"),
        Some(appended[4])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_an_outage_fail_transiently_and_every_ok_is_stored_once() {
    const APPENDERS: usize = 4;
    const BATCH: usize = 10;
    let mut server = NatsServer::start();
    let log = connect(&server).await;
    let subject = "sluice.docs.outage.0";
    // Ok'ed batches: msg id -> (seq, payload); failed batches: msg ids to retry.
    let acked: Arc<Mutex<BTreeMap<String, Seq>>> = Arc::default();
    let failed: Arc<Mutex<Vec<Vec<OutgoingMessage>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut appenders = tokio::task::JoinSet::new();
    for appender in 0..APPENDERS {
        let (log, acked, failed, stop) = (
            Arc::clone(&log),
            Arc::clone(&acked),
            Arc::clone(&failed),
            Arc::clone(&stop),
        );
        appenders.spawn(async move {
            let mut errors = 0usize;
            for round in 0usize.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let batch: Vec<OutgoingMessage> = (0..BATCH)
                    .map(|i| {
                        let id = format!("a{appender}-{round}-{i}");
                        message(subject, &id, &id)
                    })
                    .collect();
                match log.append(StreamKind::Docs, batch.clone()).await {
                    Ok(batch_seqs) => {
                        assert_eq!(batch_seqs.len(), BATCH);
                        let mut acked = acked.lock().expect("lock");
                        for (message, seq) in batch.iter().zip(batch_seqs) {
                            acked.insert(message.msg_id.clone(), seq);
                        }
                    }
                    Err(error) => {
                        assert!(
                            error.is_transient(),
                            "an outage gave a permanent error: {error}"
                        );
                        errors += 1;
                        failed.lock().expect("lock").push(batch);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            errors
        });
    }
    let acked_count = || acked.lock().expect("lock").len();
    wait_for("appends before the outage", || acked_count() >= 200).await;
    server.stop();
    let before_restart = acked_count();
    wait_for("appends fail during the outage", || {
        failed.lock().expect("lock").len() >= APPENDERS
    })
    .await;
    server.start_again().expect("restart nats-server");
    wait_for("appends succeed after the restart", || {
        acked_count() >= before_restart + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    while let Some(joined) = appenders.join_next().await {
        errors += joined.expect("appender task");
    }
    assert!(
        errors >= APPENDERS,
        "the outage was not seen: {errors} errors"
    );

    // Retry the failed batches with the same ids, as ingest does: stored once.
    let retries = std::mem::take(&mut *failed.lock().expect("lock"));
    for batch in retries {
        let retried = until_ok("retry a failed append", || {
            log.append(StreamKind::Docs, batch.clone())
        })
        .await;
        let mut acked = acked.lock().expect("lock");
        for (message, seq) in batch.iter().zip(retried) {
            acked.insert(message.msg_id.clone(), seq);
        }
    }

    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    let stored = log
        .read(StreamKind::Docs, subject, Seq(0), usize::MAX)
        .await
        .expect("read");
    let mut stored_by_payload: BTreeMap<String, Vec<Seq>> = BTreeMap::new();
    for message in &stored {
        stored_by_payload
            .entry(String::from_utf8_lossy(&message.payload).into_owned())
            .or_default()
            .push(message.seq);
    }
    for (id, seq) in &acked {
        assert_eq!(
            stored_by_payload.get(id),
            Some(&vec![*seq]),
            "acknowledged message {id} is not stored exactly once at its sequence"
        );
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "stored messages that no append reported (or duplicates)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_id_dedups_a_retried_publish_across_a_restart() {
    let mut server = NatsServer::start();
    let log = connect(&server).await;
    let subject = "sluice.dlq.dedup";
    let batch = vec![
        message(subject, "d-1", "one"),
        message(subject, "d-2", "two"),
        message(subject, "d-2", "two again"),
    ];
    let first = log
        .append(StreamKind::Dlq, batch.clone())
        .await
        .expect("append");
    assert_eq!(
        first[1], first[2],
        "a repeated id in one append shares its sequence"
    );
    server.restart().expect("restart nats-server");
    let again = until_ok("append after restart", || {
        log.append(StreamKind::Dlq, batch.clone())
    })
    .await;
    assert_eq!(
        again, first,
        "a retried publish returns the original sequences"
    );
    let stored = log
        .read(StreamKind::Dlq, subject, Seq(0), 100)
        .await
        .expect("read");
    let payloads: Vec<&[u8]> = stored.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, vec![&b"one"[..], &b"two"[..]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_go_to_another_handle_of_the_same_consumer() {
    let server = NatsServer::start();
    let subject = "sluice.events.handoff.0";
    let config = consumer_config("handoff", subject, Duration::from_secs(1));
    let dead = connect(&server).await;
    let dead_handle = dead
        .consumer(StreamKind::Events, config.clone())
        .await
        .expect("consumer");
    let appended: BTreeSet<Seq> = dead
        .append(
            StreamKind::Events,
            (0..4)
                .map(|i| message(subject, &format!("h{i}"), &format!("h{i}")))
                .collect(),
        )
        .await
        .expect("append")
        .into_iter()
        .collect();
    let taken = fetch_n(&*dead_handle, 4).await;
    assert_eq!(seqs(&taken), appended);
    dead_handle.ack(&taken[..1]).await.expect("ack");
    // The "process" holding the rest dies without acking.
    drop(dead_handle);
    drop(dead);

    let survivor = connect(&server).await;
    let handle = survivor
        .consumer(StreamKind::Events, config)
        .await
        .expect("consumer");
    let again = fetch_n(&*handle, 3).await;
    assert_eq!(
        seqs(&again),
        seqs(&taken[1..]),
        "exactly the unacked come back"
    );
    assert!(again.iter().all(|delivery| delivery.delivery_count == 2));
    handle.ack(&again).await.expect("ack");
    let quiet = handle
        .fetch(10, Duration::from_millis(1500))
        .await
        .expect("fetch");
    assert!(
        quiet.is_empty(),
        "acked messages came back: {:?}",
        seqs(&quiet)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_handle_keeps_working_after_the_server_restarts() {
    let mut server = NatsServer::start();
    let log = connect(&server).await;
    let subject = "sluice.events.restart.0";
    let handle = log
        .consumer(
            StreamKind::Events,
            consumer_config("restart", subject, Duration::from_secs(1)),
        )
        .await
        .expect("consumer");
    let before = log
        .append(
            StreamKind::Events,
            vec![message(subject, "r0", "r0"), message(subject, "r1", "r1")],
        )
        .await
        .expect("append");
    let delivered = fetch_n(&*handle, 2).await;
    assert_eq!(seqs(&delivered), before.iter().copied().collect());
    handle.ack(&delivered[..1]).await.expect("ack");

    server.restart().expect("restart nats-server");

    let after = until_ok("append after restart", || {
        log.append(StreamKind::Events, vec![message(subject, "r2", "r2")])
    })
    .await;
    // The unacked message and the new one must come. The message acked before the
    // kill may come back too: nats-server writes consumer state asynchronously, so a
    // `SIGKILL` can lose a recent ack (at-least-once; every sluice stage is idempotent).
    let expected: BTreeSet<Seq> = [before[1], after[0]].into_iter().collect();
    let allowed: BTreeSet<Seq> = [before[0], before[1], after[0]].into_iter().collect();
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while !seqs(&got).is_superset(&expected) {
        assert!(
            Instant::now() < deadline,
            "after the restart got {:?}, expected {expected:?}",
            seqs(&got)
        );
        match handle.fetch(10, Duration::from_millis(500)).await {
            Ok(batch) => got.extend(batch),
            Err(error) => assert!(error.is_transient(), "fetch: permanent error {error}"),
        }
    }
    assert!(
        seqs(&got).is_subset(&allowed),
        "unexpected deliveries after the restart: {:?}",
        seqs(&got)
    );
    // The unacked message is in `got` (checked above). Its delivery count is not checked
    // here: the server keeps consumer state asynchronously, so a `SIGKILL` can lose the
    // first delivery's count as it can lose a recent ack. Counting redeliveries is checked
    // by the conformance suite, without a server kill.
    until_ok("ack after restart", || handle.ack(&got)).await;
    // The server confirmed every ack; its consumer info can trail that confirmation by a
    // moment on a loaded machine, so the floor is polled (bounded) rather than read once.
    // A pre-restart ack the kill lost leaves its message pending until `ack_wait` has
    // passed: it is redelivered meanwhile, and acked like any other.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let floor = until_ok("ack_floor", || log.ack_floor(StreamKind::Events, "restart")).await;
        if floor == Some(after[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every ack after the restart was recorded: floor {floor:?}, expected {:?}",
            after[0]
        );
        match handle.fetch(10, Duration::from_millis(100)).await {
            Ok(redelivered) if !redelivered.is_empty() => {
                assert!(
                    seqs(&redelivered).is_subset(&allowed),
                    "unexpected redeliveries: {:?}",
                    seqs(&redelivered)
                );
                until_ok("ack a redelivery", || handle.ack(&redelivered)).await;
            }
            Ok(_) => {}
            Err(error) => assert!(error.is_transient(), "fetch: permanent error {error}"),
        }
    }
}

/// The breaker counts what says JetStream is unhealthy, and only that: requests the
/// server answered with a refusal (a stream that does not exist, a consumer that does
/// not exist) or that were the caller's mistake (a subject outside the stream) leave it
/// closed however many there are, while a few calls against a stopped server open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_caller_errors_leave_the_breaker_closed_an_outage_opens_it() {
    use sluice_core::config::ResilienceConfig;
    use sluice_core::resilience::{Breaker, BreakerState, Classify, Dependency, ErrorKind};

    let mut server = NatsServer::start();
    let log = connect(&server).await;
    // The DLQ stream goes away behind the log's back: its calls now get 10059.
    let context = async_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("connect a second client"),
    );
    context
        .delete_stream(StreamKind::Dlq.name())
        .await
        .expect("delete the DLQ stream");

    let resilience = ResilienceConfig {
        breaker_failures: 3,
        breaker_open_initial: Duration::from_secs(60),
        breaker_open_max: Duration::from_secs(60),
        ..ResilienceConfig::default()
    };
    let breaker = Breaker::new(Dependency::LogPublish, Duration::from_secs(10), &resilience);
    // Each one more times in a row than it takes to open the breaker.
    for _ in 0..5 {
        let stray = breaker
            .call(log.append(
                StreamKind::Docs,
                vec![message("sluice.events.c.0", "stray", "p")],
            ))
            .await
            .unwrap_err();
        assert!(matches!(stray, LogError::InvalidRequest(_)), "{stray:?}");
        assert_eq!(stray.kind(), ErrorKind::Caller);
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "after stray subjects"
    );
    for _ in 0..5 {
        let missing_stream = breaker
            .call(log.last_seq(StreamKind::Dlq))
            .await
            .unwrap_err();
        assert!(
            matches!(missing_stream, LogError::StreamNotFound(_)),
            "{missing_stream:?}"
        );
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "after stream not found"
    );
    for _ in 0..5 {
        let missing_consumer = breaker
            .call(log.delete_consumer(StreamKind::Events, "nobody"))
            .await
            .unwrap_err();
        assert_eq!(
            missing_consumer,
            LogError::ConsumerNotFound("nobody".into())
        );
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.permits_calls());
    // The log answered all along.
    log.last_seq(StreamKind::Docs).await.expect("last seq");

    server.stop();
    for attempt in 0..3 {
        let error = breaker
            .call(log.last_seq(StreamKind::Docs))
            .await
            .unwrap_err();
        assert!(
            error.is_infrastructure(),
            "attempt {attempt}: a stopped server gave {error:?}"
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

/// The guarded log, as every role gets it: a server that goes away opens the publish
/// breaker through appends and the consume breaker through a consumer's fetches (each on
/// its own), and once open a call fails at once, transiently, without waiting on the
/// server; caller mistakes before that left both closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guarded_log_opens_its_breakers_on_an_outage_and_then_fails_fast() {
    use sluice_core::config::ResilienceConfig;
    use sluice_core::resilience::{Breaker, BreakerState, Classify, Dependency};
    use sluice_queue::GuardedLog;

    let mut server = NatsServer::start();
    let resilience = ResilienceConfig {
        breaker_failures: 3,
        breaker_open_initial: Duration::from_secs(60),
        breaker_open_max: Duration::from_secs(60),
        ..ResilienceConfig::default()
    };
    let publish = Breaker::new(Dependency::LogPublish, Duration::from_secs(2), &resilience);
    let consume = Breaker::new(Dependency::LogConsume, Duration::from_secs(2), &resilience);
    let raw: Arc<dyn Log> = connect(&server).await;
    let log = GuardedLog::new(raw, publish.clone(), consume.clone());
    let consumer = log
        .consumer(
            StreamKind::Docs,
            ConsumerConfig {
                durable_name: "guarded".to_owned(),
                filter_subject: "sluice.docs.guarded.>".to_owned(),
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 10,
            },
        )
        .await
        .expect("consumer");
    for _ in 0..5 {
        let stray = log
            .append(
                StreamKind::Docs,
                vec![message("sluice.events.c.0", "s", "p")],
            )
            .await
            .unwrap_err();
        assert!(!stray.is_infrastructure(), "{stray:?}");
    }
    assert_eq!(publish.state(), BreakerState::Closed, "caller errors");
    log.append(
        StreamKind::Docs,
        vec![message("sluice.docs.guarded.0", "g1", "p")],
    )
    .await
    .expect("append while the server runs");

    server.stop();
    for _ in 0..3 {
        let error = log
            .append(
                StreamKind::Docs,
                vec![message("sluice.docs.guarded.0", "g2", "p")],
            )
            .await
            .unwrap_err();
        assert!(error.is_infrastructure(), "{error:?}");
    }
    assert_eq!(
        publish.state(),
        BreakerState::Open,
        "appends opened log_publish"
    );
    assert_eq!(
        consume.state(),
        BreakerState::Closed,
        "fetches were not tried yet"
    );
    let refused_at = Instant::now();
    let refused = log
        .append(
            StreamKind::Docs,
            vec![message("sluice.docs.guarded.0", "g3", "p")],
        )
        .await
        .unwrap_err();
    assert!(refused.is_transient(), "{refused:?}");
    assert!(
        refused_at.elapsed() < Duration::from_millis(500),
        "an open breaker answers at once, not after {:?}",
        refused_at.elapsed()
    );
    for _ in 0..3 {
        let error = consumer
            .fetch(1, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(error.is_infrastructure(), "{error:?}");
    }
    assert_eq!(
        consume.state(),
        BreakerState::Open,
        "fetches opened log_consume"
    );
}
