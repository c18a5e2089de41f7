//! The spill buffer (distributed mode): ingest answers 2xx while nats-server is down, the
//! forwarder drains to JetStream once it is back, a full buffer answers 503, and a crash
//! with batches in the buffer loses none of them.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_queue::testing::NatsServer;

use crate::support::{corpus, corpus_schema, eventually, Server};

/// Short log timeouts and quick breakers, so an outage is noticed within seconds; short
/// ack waits, since a shared log redelivers what a dead process held only after them.
const OUTAGE_CONFIG: &str = "[log]\nrequest_timeout = \"1s\"\nack_wait = \"3s\"\n\
    [indexer]\nack_wait = \"3s\"\n\
    [resilience]\nbreaker_failures = 2\nbreaker_open_initial = \"200ms\"\nbreaker_open_max = \"1s\"\n";

async fn start_on_jetstream(dir: &std::path::Path, nats: &NatsServer, extra: &str) -> Server {
    let config = format!("{OUTAGE_CONFIG}{extra}");
    let server = Server::start_with(
        &dir.join("data"),
        Some(&config),
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    server
}

/// Ingests `lines` in requests of `per_request`, asserting every request is a 200 whose
/// ids are all non-null; returns the ids.
async fn ingest_all_ok(server: &Server, lines: &[String], per_request: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in lines.chunks(per_request) {
        let (status, result) = server.ingest("corpus", chunk.join("\n"), "durable").await;
        assert_eq!(status, 200, "{result}");
        for id in result["ids"].as_array().unwrap() {
            ids.push(id.as_str().expect("every line durable").to_owned());
        }
    }
    ids
}

/// Waits until the spill buffer is empty.
async fn drained(server: &Server) -> bool {
    eventually(Duration::from_secs(60), || async {
        server.metric("sluice_spill_pending_messages").await == 0.0
    })
    .await
}

/// Asserts every id is searchable exactly once, and nothing else is there.
async fn assert_exactly(server: &Server, ids: &[String]) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
    // A searchable sentinel after everything else: the index has caught up.
    let (status, result) = server
        .ingest(
            "corpus",
            json!({"id": "sentinel", "title": "s", "body": "s", "author": "a", "ts": "2024-01-01T00:00:00Z"}).to_string(),
            "searchable",
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(
        server.total("corpus", "*").await,
        ids.len() as u64 + 1,
        "every acknowledged document, once"
    );
    for id in ids.iter().step_by((ids.len() / 20).max(1)) {
        assert_eq!(
            server.total("corpus", &format!("id:\"{id}\"")).await,
            1,
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_ingest_spills_then_forwards_every_document_once() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_on_jetstream(dir.path(), &nats, "").await;
    let (lines, _) = corpus(1_500);

    let mut acked = ingest_all_ok(&server, &lines[..500], 100).await;
    assert_eq!(server.metric("sluice_spill_pending_messages").await, 0.0);

    nats.stop();
    let spilled = ingest_all_ok(&server, &lines[500..1_400], 100).await;
    assert!(server.metric("sluice_spill_pending_messages").await > 0.0);
    assert!(server.metric("sluice_spill_pending_bytes").await > 0.0);
    acked.extend(spilled.iter().cloned());

    // wait=searchable on a spilled batch answers only once the batch is searchable.
    let spilled_before = server.metric("sluice_spill_appended_messages_total").await;
    let late_body = lines[1_400..].join("\n");
    let late = {
        let client = server.client.clone();
        let url = server.url("/v1/collections/corpus/documents?wait=searchable");
        tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(late_body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    // It is spilled behind the others, so it cannot be searchable while nats is down.
    assert!(
        eventually(Duration::from_secs(20), || async {
            server.metric("sluice_spill_appended_messages_total").await > spilled_before
        })
        .await,
        "the late request was not spilled"
    );
    assert!(
        !late.is_finished(),
        "wait=searchable answered before the log was back"
    );

    nats.start_again().expect("restart nats-server");
    // Read-your-writes across the outage: the GET waits for the forwarder.
    let response = server
        .get(&format!("/v1/collections/corpus/documents/{}", spilled[0]))
        .await;
    assert_eq!(response.status(), 200);
    let (status, result) = late.await.unwrap();
    assert_eq!(status, 200, "{result}");
    let late_ids: Vec<String> = result["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        server
            .total("corpus", &format!("id:\"{}\"", late_ids[0]))
            .await,
        1,
        "searchable when wait=searchable answered"
    );
    acked.extend(late_ids);

    assert!(drained(&server).await, "the spill buffer did not drain");
    assert!(server.metric("sluice_spill_forwarded_messages_total").await > 0.0);
    assert_exactly(&server, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spill_buffer_answers_503_and_loses_no_acknowledged_document() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_on_jetstream(
        dir.path(),
        &nats,
        "[spill]\nmax_size = \"48KiB\"\n[ingest]\nmax_batch_size = \"8KiB\"\nmax_line_size = \"8KiB\"\n",
    )
    .await;
    let (lines, _) = corpus(400);
    nats.stop();

    let mut acked = Vec::new();
    let mut refused = None;
    for (n, chunk) in lines.chunks(10).enumerate() {
        let response = server
            .client
            .post(server.url("/v1/collections/corpus/documents"))
            .header("content-type", "application/x-ndjson")
            .body(chunk.join("\n"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let result: Value = response.json().await.unwrap();
        // Whatever the status, every non-null id is durable.
        acked.extend(
            result["ids"]
                .as_array()
                .unwrap_or_else(|| panic!("ids in {result}"))
                .iter()
                .filter_map(|id| id.as_str().map(str::to_owned)),
        );
        match status {
            200 => {}
            503 => {
                assert!(n > 0, "the buffer took nothing");
                assert_eq!(result["error"]["code"], "unavailable", "{result}");
                assert!(retry_after.is_some(), "503 without Retry-After");
                refused = Some(n);
                break;
            }
            other => panic!("unexpected status {other}: {result}"),
        }
    }
    assert!(refused.is_some(), "the quota was never reached");
    assert!(server.metric("sluice_spill_pending_bytes").await <= 48.0 * 1024.0);
    assert!(server.metric("sluice_spill_rejected_messages_total").await > 0.0);

    nats.start_again().expect("restart nats-server");
    assert!(drained(&server).await, "the spill buffer did not drain");
    assert_exactly(&server, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_batches_in_the_spill_buffer_forwards_them_after_restart() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_on_jetstream(dir.path(), &nats, "").await;
    let (lines, _) = corpus(800);
    let mut acked = ingest_all_ok(&server, &lines[..200], 100).await;
    nats.stop();
    acked.extend(ingest_all_ok(&server, &lines[200..], 100).await);
    assert!(server.metric("sluice_spill_pending_messages").await > 0.0);

    server.kill9();
    nats.start_again().expect("restart nats-server");
    let server = server.kill9_and_restart().await;
    assert!(drained(&server).await, "the restarted node did not forward");
    assert_exactly(&server, &acked).await;
}
