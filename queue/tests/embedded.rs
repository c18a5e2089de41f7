//! The embedded log against the conformance suite, plus what only it promises:
//! truncation of acked messages, group commit, and durability of every acknowledged
//! append across `kill -9` of the process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_core::config::LogConfig;
use sluice_core::log::{ConsumerConfig, Log, OutgoingMessage};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use sluice_queue::{conformance, EmbeddedLog};

/// Set (to the log directory) when this binary runs as the child of the kill -9 test.
const KILL_CHILD_DIR_ENV: &str = "SLUICE_QUEUE_TEST_KILL_CHILD_DIR";
/// Marks an acknowledged append on the child's stdout: `ACK <seq> <payload>`.
const ACK_LINE: &str = "ACK";

fn config() -> LogConfig {
    LogConfig {
        ack_wait: Duration::from_secs(5),
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(dir, &config()).expect("open the log")
}

fn message(subject: &str, msg_id: String, payload: String) -> OutgoingMessage {
    OutgoingMessage {
        subject: subject.to_owned(),
        msg_id,
        payload: payload.into(),
    }
}

async fn stored_seqs(log: &EmbeddedLog, stream: StreamKind) -> Vec<u64> {
    log.read(stream, stream.all_subjects(), Seq(0), 10_000)
        .await
        .expect("read")
        .into_iter()
        .map(|stored| stored.seq.0)
        .collect()
}

/// Polls until `stream` holds exactly `expected`; truncation runs in the background.
async fn stored_eventually(log: &EmbeddedLog, stream: StreamKind, expected: Vec<u64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = stored_seqs(log, stream).await;
        if stored == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: stored {stored:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_log_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    conformance::run_all(|| {
        let path = path.clone();
        async move { open(&path) as Arc<dyn Log> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_removes_acked_messages_and_never_reuses_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let subject = "sluice.docs.books.0";
    for i in 0..10 {
        log.append(
            StreamKind::Docs,
            vec![message(subject, format!("d{i}"), format!("p{i}"))],
        )
        .await
        .expect("append");
    }
    for i in 0..3 {
        log.append(
            StreamKind::Dlq,
            vec![message("sluice.dlq.books", format!("q{i}"), String::new())],
        )
        .await
        .expect("append");
    }
    let consumer = log
        .consumer(
            StreamKind::Docs,
            ConsumerConfig {
                durable_name: "workers".to_owned(),
                filter_subject: StreamKind::Docs.all_subjects().to_owned(),
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 100,
            },
        )
        .await
        .expect("consumer");
    let delivered = consumer
        .fetch(10, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(delivered.len(), 10);

    // Acked out of order: 6 is acked but sits above the gap at 5, so it must stay.
    consumer.ack(&delivered[5..6]).await.expect("ack");
    consumer.ack(&delivered[..4]).await.expect("ack");
    stored_eventually(
        &log,
        StreamKind::Docs,
        (5..=10).collect(),
        "truncated up to the ack floor",
    )
    .await;
    consumer.ack(&delivered).await.expect("ack");
    stored_eventually(
        &log,
        StreamKind::Docs,
        Vec::new(),
        "everything acked is gone",
    )
    .await;
    assert_eq!(
        log.last_seq(StreamKind::Docs).await.expect("last_seq"),
        Seq(10)
    );
    assert_eq!(
        stored_seqs(&log, StreamKind::Dlq).await,
        vec![1, 2, 3],
        "a stream without consumers is never truncated"
    );
    drop(consumer);
    drop(log);

    let log = open(dir.path());
    assert_eq!(
        log.last_seq(StreamKind::Docs).await.expect("last_seq"),
        Seq(10),
        "the high-water mark survives truncation and restart"
    );
    let next = log
        .append(
            StreamKind::Docs,
            vec![message(subject, "d10".to_owned(), "p10".to_owned())],
        )
        .await
        .expect("append");
    assert_eq!(next, vec![Seq(11)], "sequences are never reused");
    assert_eq!(stored_seqs(&log, StreamKind::Docs).await, vec![11]);
    assert_eq!(
        log.ack_floor(StreamKind::Docs, "workers")
            .await
            .expect("ack_floor"),
        Some(Seq(10)),
        "the consumer's position survives a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_syncs_far_less_often_than_it_appends() {
    const TASKS: usize = 64;
    const APPENDS: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let before = log.sync_count();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = Arc::clone(&log);
        tasks.spawn(async move {
            for i in 0..APPENDS {
                log.append(
                    StreamKind::Docs,
                    vec![message(
                        "sluice.docs.load.0",
                        format!("{task}-{i}"),
                        "x".repeat(1024),
                    )],
                )
                .await
                .expect("append");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("append task");
    }
    let syncs = log.sync_count() - before;
    let appends = (TASKS * APPENDS) as u64;
    assert_eq!(
        log.last_seq(StreamKind::Docs).await.expect("last_seq"),
        Seq(appends)
    );
    assert!(syncs >= 1, "appends are synced");
    assert!(
        syncs * 4 <= appends,
        "{syncs} syncs for {appends} concurrent appends: group commit is not grouping"
    );
}

/// The child half of `acked_appends_survive_kill_9`: appends forever from several tasks
/// and prints every acknowledged sequence. Not a test: ignored in a normal run, started
/// (with `--ignored`) by the parent, and refuses to run without the parent's directory.
#[test]
#[ignore = "child process of acked_appends_survive_kill_9, which starts it"]
fn kill_child_appender() {
    let dir = std::env::var_os(KILL_CHILD_DIR_ENV).unwrap_or_else(|| {
        panic!("not a test: the child process of acked_appends_survive_kill_9 ({KILL_CHILD_DIR_ENV} unset)")
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let log = open(Path::new(&dir));
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..4 {
            let log = Arc::clone(&log);
            writers.spawn(async move {
                for i in 0u64.. {
                    let payload = format!("w{writer}-{i}");
                    let seqs = log
                        .append(
                            StreamKind::Docs,
                            vec![message(
                                "sluice.docs.crash.0",
                                payload.clone(),
                                payload.clone(),
                            )],
                        )
                        .await
                        .expect("append");
                    println!("{ACK_LINE} {} {payload}", seqs[0]);
                }
            });
        }
        while writers.join_next().await.is_some() {}
    });
}

#[test]
fn acked_appends_survive_kill_9() {
    const WANTED_ACKS: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "kill_child_appender",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let acks: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let reader = {
        let acks = Arc::clone(&acks);
        std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    // A line cut short by the kill is not an acknowledgement.
                    Ok(_) if !line.ends_with('\n') => break,
                    Ok(_) => {}
                }
                let mut fields = line.trim_end().split(' ');
                if fields.next() != Some(ACK_LINE) {
                    continue;
                }
                let (Some(seq), Some(payload)) = (fields.next(), fields.next()) else {
                    continue;
                };
                let Ok(seq) = seq.parse::<u64>() else {
                    continue;
                };
                acks.lock()
                    .expect("acks lock")
                    .push((seq, payload.to_owned()));
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.lock().expect("acks lock").len() < WANTED_ACKS {
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("the child exited on its own: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the child did not acknowledge {WANTED_ACKS} appends in time"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill -9 the child");
    child.wait().expect("reap the child");
    reader.join().expect("stdout reader");
    let acks = std::mem::take(&mut *acks.lock().expect("acks lock"));
    assert!(acks.len() >= WANTED_ACKS);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let log = open(dir.path());
        let stored: BTreeMap<u64, String> = log
            .read(StreamKind::Docs, "sluice.docs.crash.0", Seq(0), usize::MAX)
            .await
            .expect("read")
            .into_iter()
            .map(|m| (m.seq.0, String::from_utf8_lossy(&m.payload).into_owned()))
            .collect();
        let mut seen = BTreeSet::new();
        for (seq, payload) in &acks {
            assert!(seen.insert(*seq), "sequence {seq} acknowledged twice");
            assert_eq!(
                stored.get(seq),
                Some(payload),
                "acknowledged append {seq} lost or altered by kill -9"
            );
        }
        // The log keeps working after the crash: new appends continue the sequence.
        let last = log.last_seq(StreamKind::Docs).await.expect("last_seq");
        let next = log
            .append(
                StreamKind::Docs,
                vec![message(
                    "sluice.docs.crash.0",
                    String::new(),
                    "after".to_owned(),
                )],
            )
            .await
            .expect("append after recovery");
        assert_eq!(next, vec![Seq(last.0 + 1)]);
    });
}
