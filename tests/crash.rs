//! The crash suite, graceful shutdown and start-up: real `sluice serve` processes.
//!
//! Crash tests arm one fault point (`SLUICE_CRASH_AT=<point>:<n>`, see
//! `sluice_core::crash_point`) so the server aborts (like `kill -9`) at a chosen place in
//! the pipeline while producers send the standard corpus, then restart it on the same
//! data directory, disarmed, and check that every acknowledged document is stored and
//! searchable exactly once and that store and index agree on the rest.

mod support;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_queue::testing::NatsServer;
use support::{corpus, corpus_schema, eventually, Server};

/// Documents per scenario (standard corpus ids `doc-0` ..).
const DOCS: usize = 3_000;
/// Lines per request.
const PER_REQUEST: usize = 50;
/// SIGABRT: what `std::process::abort` ends the process with.
const SIGABRT: i32 = 6;
/// Frequent commits, so the index points are reached early in the ingest.
const EMBEDDED_CONFIG: &str = "[indexer]\ncommit_interval = \"100ms\"\n";
/// On JetStream a dead process's unacked messages come back after `ack_wait`.
const JETSTREAM_CONFIG: &str = "[indexer]\ncommit_interval = \"100ms\"\nack_wait = \"3s\"\n[log]\nack_wait = \"3s\"\n[ingest]\nvisibility_timeout = \"60s\"\n";

/// What the producers learned before the server went away.
#[derive(Default)]
struct Produced {
    /// Ids of 2xx answers (and non-null ids of error answers, durable by contract).
    acked: HashSet<String>,
    /// Ids of requests that got no answer: they may or may not have made it.
    unknown: HashSet<String>,
}

fn ids_of(body: &str) -> Vec<String> {
    body.lines()
        .map(|line| {
            let doc: Value = serde_json::from_str(line).unwrap();
            doc["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Two producers send `bodies` (alternately) with idempotency keys until the server stops
/// answering; returns their handles and the shared record.
fn start_producers(
    server: &Server,
    bodies: &[String],
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Mutex<Produced>>) {
    let produced = Arc::new(Mutex::new(Produced::default()));
    let mut producers = Vec::new();
    for part in 0..2 {
        let client = server.client.clone();
        let url = server.url("/v1/collections/corpus/documents");
        let bodies: Vec<(usize, String)> = bodies
            .iter()
            .cloned()
            .enumerate()
            .skip(part)
            .step_by(2)
            .collect();
        let produced = produced.clone();
        producers.push(tokio::spawn(async move {
            for (n, body) in bodies {
                let sent = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .header("idempotency-key", format!("req-{n}"))
                    .body(body.clone())
                    .send()
                    .await;
                let answer = match sent {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        response.json::<Value>().await.ok().map(|v| (ok, v))
                    }
                    Err(_) => None,
                };
                let mut record = produced.lock().unwrap();
                let Some((ok, result)) = answer else {
                    record.unknown.extend(ids_of(&body));
                    return;
                };
                let durable = result["ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned));
                record.acked.extend(durable);
                if !ok {
                    // Only possible while going down; the lines without an id are unknown.
                    let acked = record.acked.clone();
                    record
                        .unknown
                        .extend(ids_of(&body).into_iter().filter(|id| !acked.contains(id)));
                    return;
                }
            }
        }));
    }
    (producers, produced)
}

/// After a restart: everything acked is stored and searchable exactly once, nothing
/// else is, and store and index agree on the documents whose fate was unknown.
async fn verify(server: &Server, produced: &Produced, docs: &HashMap<String, Value>) {
    // A sentinel written with wait=searchable after the restart is visible only once
    // everything before it (redelivered work included) is.
    let mut sentinel = docs["doc-0"].clone();
    sentinel["id"] = json!("sentinel");
    let (status, result) = server
        .ingest("corpus", sentinel.to_string(), "searchable")
        .await;
    assert_eq!(status, 200, "{result}");

    let limit = (DOCS + 10).to_string();
    let (status, body) = server
        .search(
            "corpus",
            &[("q", "*"), ("limit", &limit), ("highlight", "false")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let hits: Vec<&str> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(body["total"].as_u64().unwrap() as usize, hits.len());
    let indexed: HashSet<&str> = hits.iter().copied().collect();
    assert_eq!(indexed.len(), hits.len(), "a document is indexed twice");
    assert!(indexed.contains("sentinel"));

    for id in &produced.acked {
        assert!(
            indexed.contains(id.as_str()),
            "acknowledged {id} is not searchable"
        );
    }
    for id in indexed.iter().filter(|id| **id != "sentinel") {
        assert!(
            produced.acked.contains(*id) || produced.unknown.contains(*id),
            "{id} is indexed but was never sent"
        );
    }
    // Store and index agree on the documents whose request got no answer.
    for id in &produced.unknown {
        let status = server
            .get(&format!("/v1/collections/corpus/documents/{id}"))
            .await
            .status();
        assert_eq!(
            status == 200,
            indexed.contains(id.as_str()),
            "{id}: store says {status}, index disagrees"
        );
    }
    // Acknowledged documents are stored whole and found by their own id exactly once.
    let mut acked: Vec<&String> = produced.acked.iter().collect();
    acked.sort();
    for id in acked.iter().step_by(37) {
        let stored = server
            .get_json(&format!("/v1/collections/corpus/documents/{id}"))
            .await;
        assert_eq!(&stored, &docs[id.as_str()], "{id} stored differently");
    }
    for id in acked.iter().step_by(211) {
        assert_eq!(
            server.total("corpus", &format!("id:\"{id}\"")).await,
            1,
            "{id}"
        );
    }
}

fn corpus_bodies() -> (Vec<String>, HashMap<String, Value>) {
    let (lines, parsed) = corpus(DOCS);
    let bodies = lines.chunks(PER_REQUEST).map(|c| c.join("\n")).collect();
    let docs = parsed
        .into_iter()
        .map(|doc| (doc["id"].as_str().unwrap().to_owned(), doc))
        .collect();
    (bodies, docs)
}

/// Arms `point` at its `n`-th arrival, ingests until the server aborts there, restarts
/// it disarmed and verifies. `nats`: run on JetStream.
async fn crash_scenario(point: &str, n: u32, nats: Option<&NatsServer>) {
    let dir = tempfile::tempdir().unwrap();
    let crash_at = format!("{point}:{n}");
    let nats_url = nats.map(NatsServer::url);
    let mut envs = vec![("SLUICE_CRASH_AT", crash_at.as_str())];
    let mut restart_envs = Vec::new();
    if let Some(url) = &nats_url {
        envs.push(("SLUICE_NATS_URL", url));
        restart_envs.push(("SLUICE_NATS_URL", url.as_str()));
    }
    let config = if nats.is_some() {
        JETSTREAM_CONFIG
    } else {
        EMBEDDED_CONFIG
    };
    let mut server = Server::start_with(&dir.path().join("data"), Some(config), &envs).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (bodies, docs) = corpus_bodies();
    let (producers, produced) = start_producers(&server, &bodies);

    let status = server.wait_exit(Duration::from_secs(90)).await;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "{point}: expected the armed abort, got {status}"
    );
    for producer in producers {
        producer.await.unwrap();
    }
    let produced = std::mem::take(&mut *produced.lock().unwrap());
    eprintln!(
        "{point}:{n}{}: aborted with {} documents acknowledged, {} unknown",
        if nats.is_some() { " (JetStream)" } else { "" },
        produced.acked.len(),
        produced.unknown.len()
    );

    let server = server.restart_with(&restart_envs).await;
    verify(&server, &produced, &docs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_in_log_group_commit_after_fsync_before_ack() {
    crash_scenario("log_append", 15, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_worker_batch() {
    crash_scenario("worker_batch", 4, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_store_write_and_event_append() {
    crash_scenario("after_store_write", 12, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_event_append_and_docs_ack() {
    crash_scenario("before_docs_ack", 12, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_index_commit() {
    crash_scenario("index_commit", 4, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_index_commit_and_events_ack() {
    crash_scenario("before_events_ack", 4, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_on_jetstream_mid_worker_batch() {
    let nats = NatsServer::start();
    crash_scenario("worker_batch", 4, Some(&nats)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_on_jetstream_between_store_write_and_event_append() {
    let nats = NatsServer::start();
    crash_scenario("after_store_write", 12, Some(&nats)).await;
}

/// Waits until the producers have `at_least` acknowledged documents.
async fn wait_acked(produced: &Mutex<Produced>, at_least: usize) {
    assert!(
        eventually(Duration::from_secs(60), || {
            let n = produced.lock().unwrap().acked.len();
            async move { n >= at_least }
        })
        .await,
        "ingest did not progress"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_graceful_shutdown_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        &dir.path().join("data"),
        Some(EMBEDDED_CONFIG),
        &[("SLUICE_CRASH_AT", "shutdown:1")],
    )
    .await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (bodies, docs) = corpus_bodies();
    let (producers, produced) = start_producers(&server, &bodies);
    wait_acked(&produced, 600).await;
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.signal(), Some(SIGABRT), "{status}");
    for producer in producers {
        producer.await.unwrap();
    }
    let produced = std::mem::take(&mut *produced.lock().unwrap());
    let server = server.restart_with(&[]).await;
    verify(&server, &produced, &docs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_searchable_ingest_commits_acks_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\nshutdown_timeout = \"20s\"\n";
    let mut server = Server::start(&dir.path().join("data"), Some(config)).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, _) = corpus(2_500);
    // A backlog for the workers and indexes, then one request waiting for search.
    let (status, result) = server
        .ingest("corpus", lines[..2_000].join("\n"), "durable")
        .await;
    assert_eq!(status, 200, "{result}");
    let request = server
        .client
        .post(server.url("/v1/collections/corpus/documents?wait=searchable"))
        .header("content-type", "application/x-ndjson")
        .body(lines[2_000..].join("\n"))
        .send();
    let in_flight = tokio::spawn(request);
    // The request is in flight once its lines are counted as accepted (durable).
    assert!(
        eventually(Duration::from_secs(30), || async {
            server.metric("sluice_ingest_documents_total").await >= 2_500.0
        })
        .await,
        "the searchable request never arrived"
    );
    server.signal("TERM");
    let signalled = Instant::now();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    let status = server.wait_exit(Duration::from_secs(25)).await;
    let shutdown_time = signalled.elapsed();
    eprintln!("graceful shutdown with a searchable request in flight took {shutdown_time:?}");
    assert!(status.success(), "{status}");

    // Searchable right away: everything was committed before the exit.
    let server = server.restart_with(&[]).await;
    assert_eq!(server.total("corpus", "*").await, 2_500);
    // And everything was acked: after a new write is searchable, nothing was redelivered
    // and no old op or event was handled again.
    let mut sentinel: Value = serde_json::from_str(&lines[0]).unwrap();
    sentinel["id"] = json!("sentinel");
    let (status, result) = server
        .ingest("corpus", sentinel.to_string(), "searchable")
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(server.total("corpus", "*").await, 2_501);
    assert_eq!(server.metric("sluice_log_redeliveries_total").await, 0.0);
    assert_eq!(server.metric("sluice_worker_ops_total").await, 1.0);
    assert_eq!(server.metric("sluice_indexer_events_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), Some(EMBEDDED_CONFIG)).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (bodies, docs) = corpus_bodies();
    let (producers, produced) = start_producers(&server, &bodies);
    wait_acked(&produced, 600).await;
    server.signal("TERM");
    let signalled = Instant::now();
    // The second signal once the first has been handled (intake stopped), not coalesced
    // with it; the graceful stop may even be through already.
    assert!(
        eventually(Duration::from_secs(30), || async {
            server
                .client
                .get(server.url("/_internal_/healthcheck"))
                .send()
                .await
                .is_err()
        })
        .await,
        "intake did not stop"
    );
    server.try_signal("TERM");
    let status = server.wait_exit(Duration::from_secs(10)).await;
    eprintln!(
        "two SIGTERMs: exited with {status} after {:?}",
        signalled.elapsed()
    );
    // At once (130) unless the graceful stop was already through (0).
    assert!(matches!(status.code(), Some(130 | 0)), "{status}");
    for producer in producers {
        producer.await.unwrap();
    }
    let produced = std::mem::take(&mut *produced.lock().unwrap());
    let server = server.restart_with(&[]).await;
    verify(&server, &produced, &docs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_answers_starting_during_recovery_then_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), None).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, _) = corpus(DOCS);
    let (status, result) = server
        .ingest("corpus", lines.join("\n"), "searchable")
        .await;
    assert_eq!(status, 200, "{result}");
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(30)).await.success());

    // Without its index the next start rebuilds it from the store: a recovery long
    // enough to be seen from outside.
    std::fs::remove_dir_all(server.data_dir.join("index")).unwrap();
    let server = server.restart_unready(&[]);
    let health = server.get("/_internal_/healthcheck").await;
    assert_eq!(
        health.status(),
        503,
        "recovery was over before the first request"
    );
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "starting"})
    );
    let refused = server.get("/v1/collections/corpus/search?q=*").await;
    if refused.status() == 503 {
        assert_eq!(refused.headers()["retry-after"], "1");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "starting", "{body}");
    } else {
        // Recovery finished in between: the real answer.
        assert_eq!(refused.status(), 200);
    }
    server.wait_healthy().await;
    assert_eq!(
        server.get_json("/_internal_/healthcheck").await,
        json!({"status": "healthy"})
    );
    assert_eq!(server.total("corpus", "*").await, DOCS as u64);
}
