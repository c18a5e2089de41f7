//! Many collections against one node: creations past the configured limits are refused
//! (409 `too_many_collections`) on every path that creates one, collections cost no
//! threads once idle, and deleting them gives back their threads and their metric
//! series, while a control collection is unaffected and the server stays healthy.

mod support;

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use support::{corpus, corpus_schema, eventually, Server};

/// Collections created on first ingest the node allows in this test.
const MAX_AUTO_CREATED: usize = 50;
/// Collections in all (the control one and a few PUT ones on top of the auto-created).
const MAX_COLLECTIONS: usize = 55;
/// Attempts at creating collections on first ingest.
const ATTEMPTS: usize = 2000;
/// Concurrent attempts.
const CONCURRENCY: usize = 16;

const CONFIG: &str = r#"
[ingest]
max_collections = 55
max_auto_created_collections = 50

[indexer]
writer_idle_timeout = "1s"

[server]
metrics_idle_timeout = "2s"
max_blocking_threads = 16
"#;

/// Threads a node may have above its idle baseline and still count as back to it: the
/// blocking pool (at most `max_blocking_threads`, 16 here, whatever the number of
/// collections) and a few more.
const THREAD_SLACK: u64 = 24;

async fn metrics_text(server: &Server) -> String {
    server
        .get("/metrics")
        .await
        .text()
        .await
        .expect("metrics text")
}

async fn healthy(server: &Server) -> bool {
    server.get("/_internal_/healthcheck").await.status() == 200
}

/// The control collection's view: what a search returns (ids in order) and one document.
async fn control_view(server: &Server) -> (Value, Value) {
    let (status, body) = server
        .search(
            "control",
            &[("q", "*"), ("limit", "50"), ("sort", "price:asc")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<Value> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["id"].clone())
        .collect();
    let doc = server
        .get_json("/v1/collections/control/documents/doc-7")
        .await;
    (json!({"total": body["total"], "ids": ids}), doc)
}

fn probe_name(i: usize) -> String {
    format!("probe-{i:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_beyond_the_limits_are_refused_and_deleting_them_releases_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(CONFIG)).await;
    let baseline_threads = server.threads();

    // The control collection, searchable.
    let status = server
        .put_schema("control", &corpus_schema())
        .await
        .status();
    assert_eq!(status, 201);
    let (lines, _) = corpus(200);
    let (status, body) = server
        .ingest("control", lines.join("\n"), "searchable")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 200);
    let control_before = control_view(&server).await;
    let baseline_metrics = metrics_text(&server).await.len();

    // 2,000 first ingests to new names, 16 at a time.
    let mut peak_threads = 0;
    let outcomes: Vec<(usize, u16, Value)> = stream::iter(0..ATTEMPTS)
        .map(|i| {
            let server = &server;
            async move {
                let doc = json!({"id": "p1", "text": format!("probe number {i}"), "n": i});
                let (status, body) = server
                    .ingest(&probe_name(i), doc.to_string(), "durable")
                    .await;
                (i, status, body)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .inspect(|_| peak_threads = peak_threads.max(server.threads()))
        .collect()
        .await;
    let created: Vec<usize> = outcomes
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(i, _, _)| *i)
        .collect();
    let refused: Vec<&Value> = outcomes
        .iter()
        .filter(|(_, status, _)| *status == 409)
        .map(|(_, _, body)| body)
        .collect();
    let created = created.len();
    let a_created_probe = outcomes
        .iter()
        .find(|(_, status, _)| *status == 200)
        .map(|(i, _, _)| probe_name(*i))
        .expect("a created probe");
    assert_eq!(created, MAX_AUTO_CREATED, "exactly the limit is created");
    assert_eq!(
        refused.len(),
        ATTEMPTS - MAX_AUTO_CREATED,
        "the rest is refused"
    );
    for body in &refused {
        assert_eq!(body["error"]["code"], "too_many_collections", "{body}");
    }
    assert!(healthy(&server).await);
    // Threads follow the shards that write, not the collections: the busiest moment of
    // the burst stays far from the ~13 threads per collection of one writer per shard.
    assert!(
        peak_threads <= baseline_threads + 6 * MAX_AUTO_CREATED as u64,
        "{peak_threads} threads during the burst (baseline {baseline_threads})"
    );
    let listed = server.get_json("/v1/collections").await;
    let listed = listed["collections"].as_array().unwrap().len();
    assert_eq!(
        listed,
        MAX_AUTO_CREATED + 1,
        "the catalog holds what was created"
    );

    // A PUT still fits under the overall limit until it is reached, then is refused too.
    let schema = json!({"fields": [{"name": "id", "type": "string"}]});
    for i in 0..(MAX_COLLECTIONS - MAX_AUTO_CREATED - 1) {
        let status = server
            .put_schema(&format!("put-{i}"), &schema)
            .await
            .status();
        assert_eq!(status, 201, "PUT {i}");
    }
    let response = server.put_schema("put-last", &schema).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_collections", "{body}");
    // Updating an existing collection is not a creation.
    let status = server.put_schema("put-0", &schema).await.status();
    assert_eq!(status, 200);

    // `_bulk` refuses the item that would create a collection, and keeps the others.
    let bulk = [
        json!({"index": {"_index": "bulk-new", "_id": "1"}}),
        json!({"title": "refused"}),
        json!({"index": {"_index": a_created_probe, "_id": "2"}}),
        json!({"text": "accepted"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n")
        + "\n";
    let response = server
        .client
        .post(server.url("/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"], true, "{body}");
    assert_eq!(body["items"][0]["index"]["status"], 409, "{body}");
    assert_eq!(
        body["items"][0]["index"]["error"]["type"], "too_many_collections",
        "{body}"
    );
    assert_eq!(body["items"][1]["index"]["status"], 201, "{body}");

    // Idle collections cost no threads: back near the baseline once writers closed.
    assert!(
        eventually(Duration::from_secs(40), || async {
            server.threads() <= baseline_threads + THREAD_SLACK
        })
        .await,
        "threads stay at {} with {} idle collections (baseline {baseline_threads})",
        server.threads(),
        MAX_COLLECTIONS
    );
    let metrics_full = metrics_text(&server).await;
    assert!(
        metrics_full.contains(r#"collection="probe-"#),
        "the probes have series while they exist"
    );
    let metrics_full = metrics_full.len();

    // Delete every collection but the control one.
    let collections = server.get_json("/v1/collections").await;
    for collection in collections["collections"].as_array().unwrap() {
        let name = collection["name"].as_str().unwrap();
        if name != "control" {
            let status = server
                .delete(&format!("/v1/collections/{name}"))
                .await
                .status();
            assert_eq!(status, 200, "DELETE {name}");
        }
    }

    // Their series leave /metrics; the control collection's stay.
    assert!(
        eventually(Duration::from_secs(30), || async {
            let text = metrics_text(&server).await;
            !text.contains(r#"collection="probe-"#) && !text.contains(r#"collection="put-"#)
        })
        .await,
        "deleted collections' series stayed in /metrics"
    );
    let metrics_after = metrics_text(&server).await;
    assert!(
        metrics_after.contains(r#"sluice_indexer_documents{collection="control"} 200"#),
        "the control collection's series stay: {metrics_after}"
    );
    // What the collections added is gone (but for a few bounded series of the routes
    // the test used since the baseline).
    assert!(
        metrics_after.len().saturating_sub(baseline_metrics)
            < metrics_full.saturating_sub(baseline_metrics) / 4,
        "/metrics is {} bytes after deleting, {metrics_full} with the collections, \
         {baseline_metrics} before",
        metrics_after.len()
    );
    assert!(
        eventually(Duration::from_secs(40), || async {
            server.threads() <= baseline_threads + THREAD_SLACK
        })
        .await,
        "threads stay at {} after deleting (baseline {baseline_threads})",
        server.threads()
    );

    // Room again: a new collection can be created on first ingest.
    let (status, body) = server
        .ingest(
            "after-delete",
            r#"{"id":"a","text":"room again"}"#,
            "searchable",
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The control collection answers exactly as before, and the process stayed small.
    assert_eq!(control_view(&server).await, control_before);
    assert!(healthy(&server).await);
    let peak = server.peak_rss_bytes();
    assert!(peak < 1 << 30, "peak RSS {} MiB", peak >> 20);
}

/// A collection deleted and created again under the same name takes the same documents
/// again: nothing the node remembered about the deleted one (dedup versions, index
/// directories, consumers) makes it skip or hide them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_created_again_takes_the_same_documents_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(CONFIG)).await;
    let doc = r#"{"id":"same","text":"identical content"}"#;
    for round in 0..3 {
        let (status, body) = server.ingest("again", doc, "searchable").await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(body["accepted"], 1, "round {round}: {body}");
        assert_eq!(
            server.total("again", "text:identical").await,
            1,
            "round {round}: searchable"
        );
        let response = server.get("/v1/collections/again/documents/same").await;
        assert_eq!(response.status(), 200, "round {round}: stored");
        let status = server.delete("/v1/collections/again").await.status();
        assert_eq!(status, 200, "round {round}: deleted");
        let (status, _) = server.search("again", &[("q", "*")]).await;
        assert_eq!(status, 404, "round {round}: gone");
    }
    assert!(healthy(&server).await);
}
