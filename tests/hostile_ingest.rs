//! Hostile ingest bodies against a real `sluice serve` with its default configuration:
//! small compressed bodies that decode to millions of bad or blank lines get answers
//! and memory bounded by configuration, not by the line count; documents wider than the
//! field limit are refused per line, through the native API and through `_bulk`. After
//! each, the server is healthy and a control collection is unchanged.

mod support;

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use support::Server;

/// `ingest.max_reported_errors` and `ingest.max_fields_per_collection` by default.
const MAX_REPORTED_ERRORS: u64 = 1_000;
const MAX_FIELDS: usize = 1_000;
/// The default `ingest.max_body_size`.
const MAX_BODY: usize = 64 << 20;

async fn start(dir: &std::path::Path) -> Server {
    let mut server = Server::start(&dir.join("data"), None).await;
    server.client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    server
}

/// A control collection with a few documents, searchable; returns what it looks like.
async fn control(server: &Server) -> (u64, Value) {
    let body: String = (0..20)
        .map(|i| format!("{{\"id\":\"c{i}\",\"title\":\"control {i}\",\"n\":{i}}}\n"))
        .collect();
    let (status, result) = server.ingest("control", body, "searchable").await;
    assert_eq!(status, 200, "{result}");
    snapshot(server).await
}

async fn snapshot(server: &Server) -> (u64, Value) {
    let total = server.total("control", "*").await;
    let meta = server.get_json("/v1/collections/control").await;
    (total, meta)
}

/// Healthy, accepting and searching, the control collection as it was.
async fn assert_unharmed(server: &Server, control: &(u64, Value)) {
    let health = server.get_json("/_internal_/healthcheck").await;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(&snapshot(server).await, control);
    let doc = server
        .get_json("/v1/collections/control/documents/c7")
        .await;
    assert_eq!(doc["title"], "control 7");
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// POSTs a gzip body; returns the status, the answer's size in bytes, the parsed answer
/// and how much the server's peak RSS grew while it handled it.
async fn post_gzip(server: &Server, path: &str, body: &[u8]) -> (u16, usize, Value, u64) {
    let compressed = gzip(body);
    server.reset_peak_rss();
    let baseline = server.rss_bytes();
    let response = server
        .client
        .post(server.url(path))
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(compressed.clone())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let answer = response.bytes().await.expect("answer");
    let grown = server.peak_rss_bytes().saturating_sub(baseline);
    eprintln!(
        "{path}: {} MiB body, {} KiB gzip: {status}, answer {} bytes, peak RSS +{} MiB",
        body.len() >> 20,
        compressed.len() >> 10,
        answer.len(),
        grown >> 20
    );
    let parsed = serde_json::from_slice(&answer).expect("JSON answer");
    (status, answer.len(), parsed, grown)
}

/// MiB of `1\n` lines the amplification test sends (16 by default; 64 for the figure
/// with the whole default body limit).
fn amplification_mib() -> usize {
    std::env::var("SLUICE_HOSTILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplification_bodies_get_bounded_answers_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let control = control(&server).await;
    let baseline = server.rss_bytes();
    let mut peak_growth = 0;

    // Millions of lines that are not objects: every one rejected, 1,000 listed.
    let mib = amplification_mib();
    let ones = b"1\n".repeat((mib << 20).min(MAX_BODY) / 2);
    let lines = (ones.len() / 2) as u64;
    let (status, size, answer, grown) =
        post_gzip(&server, "/v1/collections/ones/documents", &ones).await;
    assert_eq!(status, 200, "{answer:.300}");
    assert_eq!(answer["accepted"], 0);
    assert_eq!(answer["rejected"], lines);
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len() as u64, MAX_REPORTED_ERRORS);
    assert_eq!(errors[0]["line"], 1);
    assert_eq!(errors[999]["line"], 1_000);
    assert!(errors.iter().all(|e| e["code"] == "not_an_object"));
    assert_eq!(answer["errors_omitted"], lines - MAX_REPORTED_ERRORS);
    let ids = answer["ids"].as_array().unwrap();
    assert_eq!(ids.len() as u64, lines);
    assert!(ids.iter().all(Value::is_null));
    // `null,` per line plus the listed errors: the answer follows the decoded body,
    // 2.5 times its size at most, not one error object per line.
    assert!(
        size as u64 <= 5 * lines + (256 << 10),
        "answer of {size} bytes"
    );
    // The decoded body is held once (and gathered while it arrives); nothing per line.
    let bound = 4 * ones.len() as u64 + (96 << 20);
    assert!(grown < bound, "peak RSS grew by {} MiB", grown >> 20);
    peak_growth = peak_growth.max(grown);
    drop(ones);
    assert_unharmed(&server, &control).await;

    // Blank lines around one document: they carry nothing and cost nothing.
    let document = b"{\"id\":\"only\",\"title\":\"between blank lines\"}\n";
    let mut blanks = b"\n".repeat(MAX_BODY / 2 - document.len());
    blanks.extend_from_slice(document);
    blanks.extend(b"\r\n".repeat(MAX_BODY / 4));
    assert_eq!(blanks.len(), MAX_BODY);
    let (status, size, answer, grown) =
        post_gzip(&server, "/v1/collections/blanks/documents", &blanks).await;
    assert_eq!(status, 200, "{answer:.300}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "rejected": 0, "errors": [], "ids": ["only"]})
    );
    assert!(size < 100, "answer of {size} bytes");
    let bound = 3 * blanks.len() as u64 + (96 << 20);
    assert!(grown < bound, "peak RSS grew by {} MiB", grown >> 20);
    peak_growth = peak_growth.max(grown);
    drop(blanks);
    assert_unharmed(&server, &control).await;

    // The same through `_bulk`: one item per action, as Elasticsearch answers, but only
    // the first 1,000 failures carry a reason.
    let actions = (mib << 20).min(MAX_BODY) / 16;
    let bulk = b"{\"index\":{}}\n1\n".repeat(actions);
    let (status, size, answer, grown) = post_gzip(&server, "/amp/_bulk", &bulk).await;
    assert_eq!(status, 200, "{answer:.300}");
    assert_eq!(answer["errors"], true);
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), actions);
    assert_eq!(
        answer["errors_omitted"],
        actions as u64 - MAX_REPORTED_ERRORS
    );
    let error = |i: usize| &items[i]["index"]["error"];
    assert_eq!(error(0)["type"], "not_an_object");
    assert!(error(999)["reason"].is_string());
    assert_eq!(error(1_000), &json!({"type": "not_an_object"}));
    assert!(items.iter().all(|i| i["index"]["status"] == 400));
    assert!(
        size <= 100 * actions + (256 << 10),
        "answer of {size} bytes"
    );
    let bound = 16 * bulk.len() as u64 + (96 << 20);
    assert!(grown < bound, "peak RSS grew by {} MiB", grown >> 20);
    peak_growth = peak_growth.max(grown);
    assert_unharmed(&server, &control).await;

    // What the burst took is given back to the system soon after (the allocator returns
    // freed memory; nothing per request is kept).
    let kept = kept_after_burst(&server, baseline).await;
    eprintln!(
        "after the burst: peak +{} MiB, kept +{} MiB",
        peak_growth >> 20,
        kept >> 20
    );
    assert!(
        kept <= KEPT_AFTER_BURST,
        "{} MiB still resident 10 s after a burst that peaked at +{} MiB",
        kept >> 20,
        peak_growth >> 20
    );
}

/// Resident memory above the pre-burst baseline the server may keep once a burst is
/// over: caches, writer arenas and allocator slack, not the burst's buffers.
const KEPT_AFTER_BURST: u64 = 64 << 20;

/// Resident memory above `baseline` once it stopped falling (or after 10 s).
async fn kept_after_burst(server: &Server, baseline: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let kept = server.rss_bytes().saturating_sub(baseline);
        if kept <= KEPT_AFTER_BURST / 2 || std::time::Instant::now() >= deadline {
            return kept;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A document with `n` distinct top-level fields besides its id.
fn wide_document(id: &str, n: usize) -> String {
    let fields: Vec<String> = (0..n).map(|k| format!("\"f{k}\":{k}")).collect();
    format!("{{\"id\":\"{id}\",{}}}", fields.join(","))
}

/// A document within the limit in top-level keys but past it in nested paths.
fn deep_wide_document(id: &str) -> String {
    let inner: Vec<String> = (0..MAX_FIELDS).map(|k| format!("\"k{k}\":{k}")).collect();
    format!("{{\"id\":\"{id}\",\"o\":{{{}}}}}", inner.join(","))
}

async fn field_count(server: &Server, collection: &str) -> usize {
    let meta = server
        .get_json(&format!("/v1/collections/{collection}"))
        .await;
    let fields = meta["schema"]["fields"]
        .as_array()
        .or_else(|| meta["fields"].as_array())
        .unwrap_or_else(|| panic!("no fields in {meta}"));
    fields.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_documents_are_refused_per_line_and_the_schema_stays_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let control = control(&server).await;

    // Into a collection created by this request: the wide line is among the ones its
    // schema is inferred from.
    let body = [
        "{\"id\":\"a\",\"title\":\"narrow\"}".to_owned(),
        wide_document("wide", 10_000),
        deep_wide_document("deep"),
        wide_document("fits", 50),
        "{\"id\":\"b\",\"title\":\"narrow too\"}".to_owned(),
    ]
    .join("\n");
    let (status, answer) = server.ingest("wide", body, "searchable").await;
    assert_eq!(status, 200, "{answer:.300}");
    assert_eq!(answer["accepted"], 3, "{answer:.500}");
    assert_eq!(answer["rejected"], 2);
    let codes: Vec<(u64, &str)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(codes, vec![(2, "too_many_fields"), (3, "too_many_fields")]);
    assert_eq!(
        answer["ids"],
        json!(["a", null, null, "fits", "b"]),
        "{answer:.300}"
    );
    let fields = field_count(&server, "wide").await;
    assert!(fields <= MAX_FIELDS, "the schema grew to {fields} fields");
    assert_eq!(server.total("wide", "*").await, 3);
    let missing = server.get("/v1/collections/wide/documents/wide").await;
    assert_eq!(missing.status(), 404);

    // Through `_bulk`, into another new index.
    let body = [
        "{\"index\":{\"_id\":\"a\"}}".to_owned(),
        "{\"title\":\"narrow\"}".to_owned(),
        "{\"index\":{\"_id\":\"wide\"}}".to_owned(),
        wide_document("wide", 2_000),
        "{\"create\":{\"_id\":\"deep\"}}".to_owned(),
        deep_wide_document("deep"),
        "{\"index\":{\"_id\":\"b\"}}".to_owned(),
        "{\"title\":\"narrow too\"}".to_owned(),
        String::new(),
    ]
    .join("\n");
    let response = server
        .client
        .post(server.url("/widebulk/_bulk?refresh=wait_for"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let outcome: Vec<(u64, &str)> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (_, body) = item.as_object().unwrap().iter().next().unwrap();
            (
                body["status"].as_u64().unwrap(),
                body["error"]["type"].as_str().unwrap_or("ok"),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        vec![
            (201, "ok"),
            (400, "too_many_fields"),
            (400, "too_many_fields"),
            (201, "ok")
        ]
    );
    let fields = field_count(&server, "widebulk").await;
    assert!(fields <= MAX_FIELDS, "the schema grew to {fields} fields");
    assert_eq!(server.total("widebulk", "*").await, 2);

    // Into an existing collection, where undeclared fields are dynamic: counted per
    // document with the declared ones.
    let (status, answer) = server
        .ingest(
            "control",
            format!("{}\n", wide_document("c-wide", MAX_FIELDS)),
            "durable",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["errors"][0]["code"], "too_many_fields",
        "{answer:.300}"
    );
    assert_unharmed(&server, &control).await;
}
