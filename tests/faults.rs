//! Dependency faults against a real `sluice serve` process: store errors and latency
//! injected through the fault-injecting store (`[faults] enabled`, set at run time with
//! `PUT /_internal_/faults/store`). Breakers open and close, nothing acknowledged is lost
//! or duplicated, nothing is dead-lettered, and document reads fall back to the index.
//! (nats-server stopped and restarted under the pool: `tests/api.rs`.)

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{corpus, corpus_schema, eventually, Server};

/// Short breaker delays and a short ack wait, so outages outlast every delivery attempt
/// (`ack_wait × max_deliver` = 2 s) while the tests stay short.
const CONFIG: &str = r#"
[log]
ack_wait = "1s"

[workers]
max_deliver = 2
retry_max = "200ms"

[resilience]
breaker_failures = 3
breaker_open_initial = "200ms"
breaker_open_max = "1s"
store_timeout = "500ms"

[faults]
enabled = true
"#;

const DEADLINE: Duration = Duration::from_secs(60);

async fn start(dir: &tempfile::TempDir) -> Server {
    let server = Server::start(&dir.path().join("data"), Some(CONFIG)).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    server
}

async fn set_fault(server: &Server, point: &str, plan: Value) {
    let response = server
        .client
        .put(server.url(&format!("/_internal_/faults/{point}")))
        .json(&plan)
        .send()
        .await
        .expect("PUT fault");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn set_store_fault(server: &Server, plan: Value) {
    set_fault(server, "store", plan).await;
}

async fn clear_store_fault(server: &Server) {
    let response = server.delete("/_internal_/faults/store").await;
    assert_eq!(response.status(), 200);
}

/// Ingests `lines` in requests of 250 with `wait`; every request must be a 200.
async fn ingest_all(server: &Server, lines: &[String], wait: &str) {
    for chunk in lines.chunks(250) {
        let (status, body) = server.ingest("corpus", chunk.join("\n"), wait).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], chunk.len(), "{body}");
    }
}

async fn wait_breaker(server: &Server, dependency: &str, state: f64) {
    assert!(
        eventually(DEADLINE, || async {
            server.breaker_state(dependency).await == Some(state)
        })
        .await,
        "{dependency} breaker never reached state {state}"
    );
}

/// Waits until all `n` documents are searchable; returns how long that took.
async fn wait_searchable(server: &Server, n: u64) -> Duration {
    let started = Instant::now();
    assert!(
        eventually(DEADLINE, || async {
            server.total("corpus", "*").await == n
        })
        .await,
        "not all {n} documents became searchable (have {})",
        server.total("corpus", "*").await
    );
    started.elapsed()
}

/// Every document exactly once, and nothing in the DLQ.
async fn assert_exactly_once(server: &Server, n: usize) {
    assert_eq!(server.total("corpus", "*").await, n as u64);
    for i in (0..n).step_by(97) {
        assert_eq!(
            server.total("corpus", &format!("id:\"doc-{i}\"")).await,
            1,
            "doc-{i}"
        );
    }
    assert_eq!(server.metric("sluice_dlq_messages_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_pauses_the_workers_reads_fall_back_to_the_index_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let (lines, _) = corpus(1500);
    ingest_all(&server, &lines[..500], "searchable").await;
    let doc_path = "/v1/collections/corpus/documents/doc-7";
    let normal = server.get(doc_path).await;
    assert_eq!(normal.status(), 200);
    assert!(normal.headers().get("sluice-degraded").is_none());
    let etag = normal.headers()["etag"].clone();
    let original: Value = normal.json().await.unwrap();

    set_store_fault(&server, json!({"error_rate": 1.0, "error": "unavailable"})).await;
    let outage = Instant::now();
    // The log is up: ingest still acknowledges, durably.
    ingest_all(&server, &lines[500..], "durable").await;
    wait_breaker(&server, "store", 2.0).await;
    let health = server.get_json("/_internal_/healthcheck").await;
    assert_eq!(health["status"], "healthy");
    assert!(
        health["degraded"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("store"))),
        "{health}"
    );

    // Reads: from the index when it has the document (flagged), else a 503.
    let fallback = server.get(doc_path).await;
    assert_eq!(fallback.status(), 200);
    assert_eq!(fallback.headers()["sluice-degraded"], "store_unavailable");
    assert_eq!(fallback.headers()["etag"], etag);
    assert_eq!(fallback.json::<Value>().await.unwrap(), original);
    let missing = server
        .get("/v1/collections/corpus/documents/doc-1400")
        .await;
    assert_eq!(missing.status(), 503);
    assert!(missing.headers().get("retry-after").is_some());
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");

    // The outage outlasts every delivery attempt the messages have (ack_wait ×
    // max_deliver = 2 s), with margin: none of them may end up in the DLQ.
    let outage_length = Duration::from_secs(4);
    if let Some(rest) = outage_length.checked_sub(outage.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    assert_eq!(server.breaker_state("store").await, Some(2.0));
    assert_eq!(
        server.total("corpus", "*").await,
        500,
        "workers were paused"
    );

    clear_store_fault(&server).await;
    let recovery = wait_searchable(&server, 1500).await;
    println!("store outage of {outage_length:?}: all documents searchable {recovery:?} after the store came back");
    wait_breaker(&server, "store", 0.0).await;
    assert_exactly_once(&server, 1500).await;
    let health = server.get_json("/_internal_/healthcheck").await;
    assert_eq!(health, json!({"status": "healthy"}));
    let again = server.get(doc_path).await;
    assert_eq!(again.status(), 200);
    assert!(again.headers().get("sluice-degraded").is_none());
    assert_eq!(again.json::<Value>().await.unwrap(), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_latency_beyond_the_timeout_opens_the_breaker_until_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let (lines, _) = corpus(500);
    // 2 s per call against a 500 ms store_timeout: every call times out.
    set_store_fault(&server, json!({"latency": "2s"})).await;
    ingest_all(&server, &lines, "durable").await;
    wait_breaker(&server, "store", 2.0).await;
    assert_eq!(server.total("corpus", "*").await, 0);

    clear_store_fault(&server).await;
    let recovery = wait_searchable(&server, 500).await;
    println!("store latency cleared: all documents searchable {recovery:?} later");
    wait_breaker(&server, "store", 0.0).await;
    assert_exactly_once(&server, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_store_error_rate_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let (lines, _) = corpus(2000);
    set_store_fault(&server, json!({"error_rate": 0.3, "error": "timeout"})).await;
    ingest_all(&server, &lines, "durable").await;
    // Everything goes through while 30 % of the store's calls fail.
    let took = wait_searchable(&server, 2000).await;
    println!("2000 documents searchable {took:?} after ingest under a 30 % store error rate");
    // The faults were real: some reads of one document failed on the store and were
    // answered from the index, flagged (all 40 succeeding has odds of 0.7^40 ≈ 6e-7).
    let (_, hit) = server.search("corpus", &[("q", "*"), ("limit", "1")]).await;
    let path = format!(
        "/v1/collections/corpus/documents/{}",
        hit["hits"][0]["id"].as_str().unwrap()
    );
    let mut degraded = 0;
    for _ in 0..40 {
        let response = server.get(&path).await;
        assert_eq!(response.status(), 200);
        degraded += usize::from(response.headers().get("sluice-degraded").is_some());
    }
    assert!(degraded > 0, "no store call failed");
    clear_store_fault(&server).await;
    assert_exactly_once(&server, 2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shard_gives_flagged_partial_results_and_all_failing_serve_stale_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let (lines, _) = corpus(400);
    ingest_all(&server, &lines[..300], "searchable").await;
    let (status, complete) = server.search("corpus", &[("q", "*"), ("limit", "5")]).await;
    assert_eq!(status, 200, "{complete}");
    assert_eq!(complete["total"], 300);
    assert!(complete.get("partial").is_none(), "{complete}");
    assert!(complete.get("stale").is_none(), "{complete}");

    // One shard of two fails: the other's results, flagged.
    set_fault(
        &server,
        "index_search",
        json!({"error_rate": 1.0, "shards": [0]}),
    )
    .await;
    let (status, partial) = server.search("corpus", &[("q", "*"), ("limit", "6")]).await;
    assert_eq!(status, 200, "{partial}");
    assert_eq!(partial["partial"], true, "{partial}");
    assert_eq!(partial["failed_shards"], json!([0]), "{partial}");
    let partial_total = partial["total"].as_u64().unwrap();
    assert!(partial_total > 0 && partial_total < 300, "{partial}");

    // Every shard fails, after new writes moved the index on (so the result cache misses):
    // the last complete result of the same request, flagged stale; a request never
    // answered completely has nothing to fall back on.
    set_fault(&server, "index_search", json!({"error_rate": 1.0})).await;
    ingest_all(&server, &lines[300..], "searchable").await;
    let (status, stale) = server.search("corpus", &[("q", "*"), ("limit", "5")]).await;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(stale["stale"], true, "{stale}");
    assert_eq!(stale["total"], 300, "{stale}");
    let (status, refused) = server.search("corpus", &[("q", "*"), ("limit", "7")]).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "unavailable", "{refused}");

    // Cleared: complete and current again; the partial answer was never cached.
    let response = server.delete("/_internal_/faults/index_search").await;
    assert_eq!(response.status(), 200);
    let (status, current) = server.search("corpus", &[("q", "*"), ("limit", "6")]).await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["total"], 400, "{current}");
    assert!(current.get("partial").is_none(), "{current}");
}

/// Items of one `_bulk` answer: `(status, _id)`.
fn bulk_statuses(answer: &Value) -> Vec<(u64, String)> {
    answer["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            let item = item["index"].as_object().expect("an index item");
            (
                item["status"].as_u64().unwrap(),
                item["_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A `_bulk` of documents without `_id` while the log refuses about half the batches:
/// the answer is a 200 whose refused items are `429 es_rejected_execution_exception`;
/// sending those items again writes every document exactly once (a whole-request retry
/// would have written the accepted ones twice, under new ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_the_log_takes_in_part_rejects_only_the_items_to_retry() {
    const DOCS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(CONFIG)).await;
    let schema = json!({"shards": 8, "fields": [{"name": "id", "type": "string"},
                                                {"name": "n", "type": "i64"}]});
    let bulk = |collection: String, numbers: Vec<usize>| {
        let body: String = numbers
            .iter()
            .map(|n| format!("{{\"index\":{{}}}}\n{{\"n\":{n}}}\n"))
            .collect();
        let request = server
            .client
            .post(server.url(&format!("/{collection}/_bulk?refresh=wait_for")))
            .header("content-type", "application/x-ndjson")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Batches fail at random: try collections until one answer has both outcomes.
    let mut mixed = None;
    for attempt in 0..20 {
        let collection = format!("rejects{attempt}");
        assert_eq!(server.put_schema(&collection, &schema).await.status(), 201);
        set_fault(&server, "log_append", json!({"error_rate": 0.5})).await;
        let (status, answer) = bulk(collection.clone(), (0..DOCS).collect()).await;
        let _ = server.delete("/_internal_/faults/log_append").await;
        let statuses = bulk_statuses(&answer);
        let rejected = statuses.iter().filter(|(s, _)| *s == 429).count();
        match (status, rejected) {
            (200, 0) => continue,
            (503, DOCS) => continue,
            (200, _) => {
                assert_eq!(answer["errors"], true, "{answer}");
                mixed = Some((collection, answer));
                break;
            }
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    let (collection, answer) = mixed.expect("no attempt had both written and rejected items");
    let statuses = bulk_statuses(&answer);
    for (item, (status, _)) in answer["items"].as_array().unwrap().iter().zip(&statuses) {
        if *status == 429 {
            assert_eq!(
                item["index"]["error"]["type"],
                "es_rejected_execution_exception"
            );
        } else {
            assert_eq!(*status, 201, "{item}");
        }
    }
    let written: Vec<&String> = statuses
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, id)| id)
        .collect();
    for id in &written {
        let stored = server
            .get(&format!("/v1/collections/{collection}/documents/{id}"))
            .await;
        assert_eq!(stored.status(), 200, "a 201 item is stored: {id}");
    }
    assert_eq!(
        server.total(&collection, "*").await,
        written.len() as u64,
        "only the accepted items are written"
    );
    // The client sends the rejected items again, and only them.
    let retry: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == 429)
        .map(|(n, _)| n)
        .collect();
    let (status, again) = bulk(collection.clone(), retry).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["errors"], false, "{again}");
    assert_eq!(server.total(&collection, "*").await, DOCS as u64);
    for n in (0..DOCS).step_by(7) {
        assert_eq!(
            server.total(&collection, &format!("n:{n}")).await,
            1,
            "n={n}"
        );
    }
}
