//! End-to-end tests of `sluice serve` over real HTTP: each test starts its own server
//! process on a random port with a temp data directory.

mod support;

#[path = "api/es.rs"]
mod es;
#[path = "api/spill.rs"]
mod spill;

#[path = "api/es_concurrency.rs"]
mod es_concurrency;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_queue::testing::NatsServer;
use support::{corpus, corpus_schema, eventually, Server};

fn body_word_counts(docs: &[Value]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for doc in docs {
        let words: HashSet<&str> = doc["body"].as_str().unwrap().split(' ').collect();
        for word in words {
            *counts.entry(word.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// A frequent, a medium and a rare body word with their document counts.
fn pick_words(counts: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let frequent = counts.iter().max_by_key(|(_, c)| **c).unwrap();
    let medium = counts
        .iter()
        .find(|(_, c)| (150..=400).contains(*c))
        .unwrap();
    let rare = counts.iter().find(|(_, c)| **c == 2).unwrap();
    [frequent, medium, rare]
        .into_iter()
        .map(|(w, c)| (w.clone(), *c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_ingest_search_dedup_and_update() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    corpus_scenario(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_ingest_search_dedup_and_update_on_jetstream() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    corpus_scenario(&server).await;
}

/// The standard corpus through the whole pipeline: exact totals, paging, sorting, GET,
/// re-ingest without writes, updates.
async fn corpus_scenario(server: &Server) {
    let response = server.put_schema("corpus", &corpus_schema()).await;
    assert_eq!(response.status(), 201);

    let (lines, docs) = corpus(20_000);
    let requests: Vec<String> = lines.chunks(2_000).map(|c| c.join("\n") + "\n").collect();
    for (i, body) in requests.iter().enumerate() {
        let wait = if i == requests.len() - 1 {
            "searchable"
        } else {
            "durable"
        };
        let (status, result) = server.ingest("corpus", body.clone(), wait).await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["accepted"], 2_000);
        assert_eq!(result["rejected"], 0);
        assert_eq!(result["ids"][0], docs[i * 2_000]["id"]);
    }

    // Searchable means searchable: totals are exact right after the last answer.
    let counts = body_word_counts(&docs);
    let words = pick_words(&counts);
    for (word, expected) in &words {
        assert_eq!(
            server.total("corpus", &format!("body:{word}")).await,
            *expected,
            "body:{word}"
        );
    }
    assert_eq!(server.total("corpus", "*").await, 20_000);

    // Paging without overlap.
    let (frequent, frequent_count) = &words[0];
    let mut seen = HashSet::new();
    for page in 0..5 {
        let offset = (page * 20).to_string();
        let (status, body) = server
            .search(
                "corpus",
                &[
                    ("q", &format!("body:{frequent}")),
                    ("limit", "20"),
                    ("offset", &offset),
                ],
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["total"].as_u64().unwrap(), *frequent_count);
        let hits = body["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 20);
        for hit in hits {
            assert!(
                seen.insert(hit["id"].as_str().unwrap().to_owned()),
                "overlap at {hit}"
            );
            assert!(hit["doc"]["body"]
                .as_str()
                .unwrap()
                .split(' ')
                .any(|w| w == frequent));
        }
    }

    // Sorted by price.
    let (status, body) = server
        .search(
            "corpus",
            &[("q", "*"), ("sort", "price:asc"), ("limit", "200")],
        )
        .await;
    assert_eq!(status, 200);
    let prices: Vec<i64> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["doc"]["price"].as_i64().unwrap())
        .collect();
    assert_eq!(prices.len(), 200);
    assert!(
        prices.windows(2).all(|w| w[0] <= w[1]),
        "not ascending: {prices:?}"
    );
    let min_price = docs
        .iter()
        .map(|d| d["price"].as_i64().unwrap())
        .min()
        .unwrap();
    assert_eq!(prices[0], min_price);

    // GET returns the document as sent.
    for i in [0, 7_777, 19_999] {
        let response = server
            .get(&format!("/v1/collections/corpus/documents/doc-{i}"))
            .await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("etag").is_some());
        let got: Value = response.json().await.unwrap();
        assert_eq!(got, docs[i]);
    }

    // Re-ingesting the same documents changes nothing and writes nothing.
    let writes_before = server.metric("sluice_store_writes_total").await;
    let skips_before = server.metric("sluice_worker_dedup_skips_total").await;
    assert_eq!(writes_before, 20_000.0);
    for (i, body) in requests.iter().enumerate() {
        let wait = if i == requests.len() - 1 {
            "searchable"
        } else {
            "durable"
        };
        let (status, _) = server.ingest("corpus", body.clone(), wait).await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        server.metric("sluice_store_writes_total").await,
        writes_before
    );
    assert_eq!(
        server.metric("sluice_worker_dedup_skips_total").await - skips_before,
        20_000.0
    );
    for (word, expected) in &words {
        assert_eq!(
            server.total("corpus", &format!("body:{word}")).await,
            *expected
        );
    }
    assert_eq!(server.total("corpus", "*").await, 20_000);

    // Updating 100 documents: new words findable, old words gone.
    let mut updated = String::new();
    let mut old_words = Vec::new();
    for i in 0..100 {
        let mut doc = docs[i * 100].clone();
        old_words.push((
            doc["id"].as_str().unwrap().to_owned(),
            doc["body"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned(),
        ));
        doc["body"] = json!(format!("replacementword{i} sharedreplacement"));
        updated.push_str(&doc.to_string());
        updated.push('\n');
    }
    let (status, result) = server.ingest("corpus", updated, "searchable").await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(server.total("corpus", "body:sharedreplacement").await, 100);
    assert_eq!(server.total("corpus", "body:replacementword42").await, 1);
    for (id, old_word) in old_words.iter().take(20) {
        let q = format!("id:\"{id}\" AND body:{old_word}");
        assert_eq!(server.total("corpus", &q).await, 0, "{q}");
        assert_eq!(server.total("corpus", &format!("id:\"{id}\"")).await, 1);
    }
    assert_eq!(server.total("corpus", "*").await, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_rejected_by_line_and_code_while_good_lines_go_through() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, _) = corpus(6);
    let mut body: Vec<u8> = Vec::new();
    body.extend_from_slice(lines[0].as_bytes());
    body.extend_from_slice(b"\n{\"id\": \"broken\", \"title\": \n");
    body.extend_from_slice(
        lines[1]
            .replace("\"price\":", "\"price\":\"cheap\",\"x\":")
            .as_bytes(),
    );
    body.push(b'\n');
    let missing: Value = {
        let mut doc: Value = serde_json::from_str(&lines[2]).unwrap();
        doc.as_object_mut().unwrap().remove("author");
        doc
    };
    body.extend_from_slice(missing.to_string().as_bytes());
    body.push(b'\n');
    body.extend_from_slice(&lines[3].as_bytes()[..20]);
    body.extend_from_slice(b"\xff\xfe");
    body.extend_from_slice(&lines[3].as_bytes()[20..]);
    body.push(b'\n');
    body.extend_from_slice(lines[4].as_bytes());
    body.push(b'\n');

    let (status, result) = server.ingest("corpus", body, "searchable").await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["accepted"], 2);
    assert_eq!(result["rejected"], 4);
    let errors: Vec<(u64, &str)> = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (2, "malformed_json"),
            (3, "wrong_type"),
            (4, "missing_field"),
            (5, "invalid_utf8")
        ]
    );
    let ids = result["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[0], "doc-0");
    assert!(ids[1..5].iter().all(Value::is_null));
    assert_eq!(ids[5], "doc-4");
    assert_eq!(server.total("corpus", "*").await, 2);
    let status = server
        .get("/v1/collections/corpus/documents/doc-1")
        .await
        .status();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_ingest_loses_no_acknowledged_document_and_duplicates_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    kill9_scenario(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_ingest_on_jetstream_loses_nothing_and_duplicates_nothing() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A shared log redelivers what a dead process held only after `ack_wait`.
    let config = "[log]\nack_wait = \"3s\"\n[indexer]\nack_wait = \"3s\"\n[ingest]\nvisibility_timeout = \"60s\"\n";
    let server = Server::start_with(
        &dir.path().join("data"),
        Some(config),
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    kill9_scenario(server).await;
}

/// `kill -9` of sluice while two producers send; after a restart every acknowledged
/// document is present and searchable exactly once.
async fn kill9_scenario(server: Server) {
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, _) = corpus(6_000);
    let bodies: Vec<String> = lines.chunks(100).map(|c| c.join("\n")).collect();

    // Two concurrent producers; the server is killed while they are still sending.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut producers = Vec::new();
    for part in 0..2 {
        let client = server.client.clone();
        let url = server.url("/v1/collections/corpus/documents");
        let bodies: Vec<String> = bodies.iter().skip(part).step_by(2).cloned().collect();
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            for body in bodies {
                let Ok(response) = client.post(&url).body(body).send().await else {
                    break;
                };
                if response.status() != 200 {
                    break;
                }
                let result: Value = response.json().await.unwrap();
                let ids = result["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned());
                acked.lock().unwrap().extend(ids);
            }
        }));
    }
    assert!(
        eventually(Duration::from_secs(60), || {
            let n = acked.lock().unwrap().len();
            async move { n >= 1_500 }
        })
        .await,
        "ingest did not progress"
    );
    let server = server.kill9_and_restart().await;
    for producer in producers {
        producer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1_500 && acked.len() < 6_000,
        "killed too late to test anything: {}",
        acked.len()
    );

    // A sentinel written with wait=searchable after the restart is visible only once
    // everything before it (redelivered work included) is.
    let mut sentinel: Value = serde_json::from_str(&lines[0]).unwrap();
    sentinel["id"] = json!("sentinel");
    let (status, result) = server
        .ingest("corpus", sentinel.to_string(), "searchable")
        .await;
    assert_eq!(status, 200, "{result}");

    // Everything acknowledged is there after the restart, and searchable exactly once.
    let present = server.total("corpus", "*").await as usize - 1;
    assert!(present >= acked.len(), "{present} < {}", acked.len());
    let (status, body) = server
        .search(
            "corpus",
            &[("q", "*"), ("limit", "6001"), ("highlight", "false")],
        )
        .await;
    assert_eq!(status, 200);
    let hit_ids: Vec<&str> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = hit_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        hit_ids.len(),
        "a document appears twice in search results"
    );
    for id in &acked {
        assert!(
            unique.contains(id.as_str()),
            "acknowledged {id} missing from search"
        );
    }
    for id in acked.iter().step_by(97) {
        let status = server
            .get(&format!("/v1/collections/corpus/documents/{id}"))
            .await
            .status();
        assert_eq!(status, 200, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_are_validated_created_updated_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let schema = corpus_schema();
    assert_eq!(server.put_schema("books", &schema).await.status(), 201);
    assert_eq!(server.put_schema("books", &schema).await.status(), 200);

    let mut retyped = schema.clone();
    retyped["fields"][1]["type"] = json!("keyword");
    let response = server.put_schema("books", &retyped).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "incompatible_schema");
    assert!(!body["error"]["trace_id"].as_str().unwrap().is_empty());

    let response = server
        .put_schema(
            "books",
            &json!({"fields": [{"name": "x", "type": "colour"}]}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_schema");
    let response = server.put_schema("Bad.Name", &schema).await;
    assert_eq!(response.status(), 400);

    // First ingest into an unknown collection creates it with an inferred schema.
    let (status, result) = server
        .ingest(
            "notes",
            "{\"id\":\"n1\",\"text\":\"hello world\",\"stars\":4}\n",
            "searchable",
        )
        .await;
    assert_eq!(status, 200, "{result}");
    let info = server.get_json("/v1/collections/notes").await;
    assert_eq!(info["dynamic"], true);
    let fields: Vec<&str> = info["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"text") && fields.contains(&"stars"),
        "{info}"
    );
    assert_eq!(server.total("notes", "text:hello").await, 1);
    assert_eq!(server.total("notes", "hello").await, 1);
    let (status, result) = server
        .ingest(
            "notes",
            "{\"id\":\"n2\",\"text\":\"bye\",\"stars\":\"many\",\"extra\":\"late field\"}\n",
            "searchable",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["errors"][0]["code"], "wrong_type");
    let (_, result) = server
        .ingest(
            "notes",
            "{\"id\":\"n3\",\"text\":\"bye\",\"extra\":\"late field\"}\n",
            "searchable",
        )
        .await;
    assert_eq!(result["accepted"], 1);
    assert_eq!(server.total("notes", "extra:late").await, 1);

    let list = server.get_json("/v1/collections").await;
    assert_eq!(list["collections"].as_array().unwrap().len(), 2);

    let response = server.delete("/v1/collections/notes").await;
    assert_eq!(response.status(), 200);
    let response = server.get("/v1/collections/notes").await;
    assert_eq!(response.status(), 404);
    let (status, _) = server.search("notes", &[("q", "hello")]).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_updates_and_read_your_writes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, docs) = corpus(50);
    let (status, _) = server.ingest("corpus", lines.join("\n"), "durable").await;
    assert_eq!(status, 200);
    // GET right after a durable 2xx sees the write.
    let got = server
        .get_json("/v1/collections/corpus/documents/doc-3")
        .await;
    assert_eq!(got, docs[3]);

    let response = server
        .delete("/v1/collections/corpus/documents/doc-3?wait=searchable")
        .await;
    assert_eq!(response.status(), 200);
    let response = server.get("/v1/collections/corpus/documents/doc-3").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "document_not_found");
    assert_eq!(server.total("corpus", "id:\"doc-3\"").await, 0);
    assert_eq!(server.total("corpus", "*").await, 49);

    // Ids are assigned (UUIDv7) when missing.
    let mut doc = docs[0].clone();
    doc.as_object_mut().unwrap().remove("id");
    let (status, result) = server.ingest("corpus", doc.to_string(), "searchable").await;
    assert_eq!(status, 200);
    let id = result["ids"][0].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    let got = server
        .get_json(&format!("/v1/collections/corpus/documents/{id}"))
        .await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["title"], docs[0]["title"]);

    // The same id twice in one request: the later line wins.
    let mut first = docs[5].clone();
    first["title"] = json!("first version");
    let mut second = docs[5].clone();
    second["title"] = json!("second version");
    let (status, _) = server
        .ingest("corpus", format!("{first}\n{second}\n"), "searchable")
        .await;
    assert_eq!(status, 200);
    let got = server
        .get_json("/v1/collections/corpus/documents/doc-5")
        .await;
    assert_eq!(got["title"], "second version");
    assert_eq!(
        server
            .total("corpus", "title:second AND id:\"doc-5\"")
            .await,
        1
    );
    assert_eq!(
        server.total("corpus", "title:first AND id:\"doc-5\"").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_limits_and_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[ingest]\nmax_body_size = \"64KiB\"\nmax_line_size = \"4KiB\"\nmax_depth = 16\n";
    let server = Server::start(&dir.path().join("data"), Some(config)).await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, _) = corpus(20);

    // gzip and zstd bodies.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(lines[..10].join("\n").as_bytes()).unwrap();
    let response = server
        .client
        .post(server.url("/v1/collections/corpus/documents"))
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = zstd::encode_all(lines[10..].join("\n").as_bytes(), 3).unwrap();
    let response = server
        .client
        .post(server.url("/v1/collections/corpus/documents?wait=searchable"))
        .header("content-encoding", "zstd")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.total("corpus", "*").await, 20);

    // Body over the limit (after decompression: a small gzip of a large body).
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 10 << 20]).unwrap();
    let response = server
        .client
        .post(server.url("/v1/collections/corpus/documents"))
        .header("content-encoding", "gzip")
        .body(bomb.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    // Truncated gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(lines.join("\n").as_bytes()).unwrap();
    let mut truncated = gz.finish().unwrap();
    truncated.truncate(truncated.len() / 2);
    let response = server
        .client
        .post(server.url("/v1/collections/corpus/documents"))
        .header("content-encoding", "gzip")
        .body(truncated)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Line over the line limit and nesting over the depth limit: per-line errors.
    let long = format!("{{\"id\":\"long\",\"title\":\"{}\"}}", "x".repeat(5_000));
    let deep = format!(
        "{{\"id\":\"deep\",\"j\":{}{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let (status, result) = server
        .ingest(
            "corpus",
            format!("{long}\n{deep}\n{}\n", lines[0]),
            "durable",
        )
        .await;
    assert_eq!(status, 200, "{result}");
    let codes: Vec<&str> = result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["line_too_large", "nesting_too_deep"]);
    assert_eq!(result["accepted"], 1);

    // Wrong content type, unknown route, wrong method, invalid query.
    let response = server
        .client
        .post(server.url("/v1/collections/corpus/documents"))
        .header("content-type", "application/xml")
        .body("<doc/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = server.get("/v2/nothing").await;
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("x-trace-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let response = server
        .client
        .patch(server.url("/v1/collections/corpus"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let (status, body) = server.search("corpus", &[("q", "title:(unclosed")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_query");
    let (status, body) = server
        .search("corpus", &[("q", "*"), ("sort", "body:asc")])
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = server
        .search("corpus", &[("q", "*"), ("limit", "ten")])
        .await;
    assert_eq!(status, 400);

    // Filters and POST search.
    let response = server
        .client
        .post(server.url("/v1/collections/corpus/search"))
        .json(
            &json!({"q": "*", "filter": ["price:[0 TO 4999]"], "sort": "price:desc", "limit": 100}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let prices: Vec<i64> = body["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["doc"]["price"].as_i64().unwrap())
        .collect();
    assert!(prices.iter().all(|p| *p <= 4999));
    assert!(prices.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(body["total"].as_u64().unwrap() as usize, prices.len());

    // The server is still serving after all of that.
    let response = server.get("/_internal_/healthcheck").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "healthy"})
    );
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("sluice_http_requests_total"));
    assert!(metrics.contains("sluice_ingest_documents_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let doc = server.get_json("/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 8);
    let mut checked = 0;
    for (path, operations) in paths {
        let concrete = path
            .replace("{c}", "openapi_probe")
            .replace("{id}", "some-id")
            .replace("{index}", "openapi_probe");
        for method in operations.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = server
                .client
                .request(method.clone(), server.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("");
            assert!(
                code != "not_found" && code != "method_not_allowed",
                "{method} {path} is documented but not routed"
            );
            assert!(status != 405, "{method} {path}");
            checked += 1;
        }
        // Methods not documented are not routed either.
        for method in ["get", "put", "post", "delete"] {
            if operations.get(method).is_none() {
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let status = server
                    .client
                    .request(m, server.url(&concrete))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 405, "{method} {path} is routed but not documented");
            }
        }
    }
    assert!(checked >= 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_with_an_idempotency_key_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let body = "{\"text\":\"alpha\"}\n{\"text\":\"beta\"}\n";
    let send = |key: &'static str| {
        let request = server
            .client
            .post(server.url("/v1/collections/keyed/documents?wait=searchable"))
            .header("idempotency-key", key)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let first = send("batch-7").await;
    let retry = send("batch-7").await;
    assert_eq!(first["ids"], retry["ids"]);
    assert_eq!(server.total("keyed", "*").await, 2);
    let other = send("batch-8").await;
    assert_ne!(first["ids"], other["ids"]);
    assert_eq!(server.total("keyed", "*").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_ingest_gives_503s_never_a_false_2xx_and_loses_nothing() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Without the spill buffer (the path a full buffer takes too); breakers probe at most
    // 2 s apart, so recovery does not wait out the default 30 s.
    let config = "[log]\nrequest_timeout = \"2s\"\n[spill]\nenabled = false\n[resilience]\nbreaker_open_max = \"2s\"\n";
    let server = Server::start_with(
        &dir.path().join("data"),
        Some(config),
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, _) = corpus(50_000);
    let bodies: Vec<String> = lines.chunks(500).map(|c| c.join("\n")).collect();

    // Two producers; each request carries an Idempotency-Key, and a 503 is retried with
    // the same key until it succeeds, as a well-behaved client does.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let unavailable = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
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
        let acked = acked.clone();
        let unavailable = unavailable.clone();
        producers.push(tokio::spawn(async move {
            for (n, body) in bodies {
                loop {
                    let sent = client
                        .post(&url)
                        .header("idempotency-key", format!("req-{n}"))
                        .body(body.clone())
                        .send()
                        .await;
                    let response = sent.expect("sluice itself stays up");
                    let status = response.status().as_u16();
                    let result: Value = response.json().await.unwrap();
                    // Whatever the status, every non-null id is durable.
                    let durable = result["ids"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned));
                    acked.lock().unwrap().extend(durable);
                    match status {
                        200 => break,
                        503 => {
                            unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        other => panic!("unexpected status {other}: {result}"),
                    }
                }
            }
        }));
    }
    assert!(
        eventually(Duration::from_secs(120), || {
            let n = acked.lock().unwrap().len();
            async move { n >= 10_000 }
        })
        .await,
        "ingest did not progress"
    );
    nats.stop();
    let during_outage = acked.lock().unwrap().len();
    assert!(
        eventually(Duration::from_secs(30), || {
            let n = unavailable.load(std::sync::atomic::Ordering::Relaxed);
            async move { n >= 2 }
        })
        .await,
        "no request saw the outage"
    );
    // The pool and the index shards stop pulling from the log while it is down.
    assert!(
        eventually(Duration::from_secs(60), || async {
            server.breaker_state("log_consume").await == Some(2.0)
        })
        .await,
        "the log_consume breaker did not open"
    );
    nats.start_again().expect("restart nats-server");
    for producer in producers {
        producer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 50_000);
    assert!(during_outage < 50_000, "the outage came too late to matter");

    // Every document exactly once.
    let mut sentinel: Value = serde_json::from_str(&lines[0]).unwrap();
    sentinel["id"] = json!("sentinel");
    let (status, result) = server
        .ingest("corpus", sentinel.to_string(), "durable")
        .await;
    assert_eq!(status, 200, "{result}");
    // The backlog of the outage may take longer than one visibility timeout to index on
    // a busy machine: wait for it, bounded, rather than for one request.
    assert!(
        eventually(Duration::from_secs(120), || async {
            server.total("corpus", "*").await >= 50_001
        })
        .await,
        "the backlog never became searchable: {}",
        server.total("corpus", "*").await
    );
    assert_eq!(server.total("corpus", "*").await, 50_001);
    assert_eq!(server.breaker_state("log_consume").await, Some(0.0));
    for i in (0..50_000).step_by(4_999) {
        assert_eq!(
            server.total("corpus", &format!("id:\"doc-{i}\"")).await,
            1,
            "doc-{i}"
        );
    }
}

#[test]
fn the_readme_configuration_example_parses_and_validates() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config =
        sluice_core::config::Config::from_toml(&readme[start..end]).expect("README config parses");
    config.validate().expect("README config validates");
    assert_eq!(
        config.log.nats_url.as_deref(),
        Some("nats://127.0.0.1:4222")
    );
    assert_eq!(
        config.log.events_max_age,
        Duration::from_secs(7 * 24 * 3600)
    );
    let store_defaults = sluice_core::config::StoreConfig::default();
    assert_eq!(
        config.store.tombstone_retention, store_defaults.tombstone_retention,
        "the README shows the default tombstone retention"
    );
    assert_eq!(
        config.store.tombstone_compaction_interval, store_defaults.tombstone_compaction_interval,
        "the README shows the default compaction interval"
    );
}

/// The action key and body of each item of an Elasticsearch bulk response.
fn bulk_items(result: &Value) -> Vec<(String, Value)> {
    result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (action, body) = item.as_object().unwrap().iter().next().unwrap();
            (action.clone(), body.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_bulk_api_indexes_creates_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let bulk = |path: &str, body: String| {
        let request = server
            .client
            .post(server.url(path))
            .header("content-type", "application/x-ndjson")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // Two indexes in one request, one from the path; ids given and assigned.
    let body = [
        r#"{"index":{"_id":"1"}}"#,
        r#"{"title":"red fox","n":1}"#,
        r#"{"index":{"_index":"other","_id":"1"}}"#,
        r#"{"title":"other index"}"#,
        r#"{"create":{}}"#,
        r#"{"title":"assigned id","n":2}"#,
        r#"{"create":{"_id":"2"}}"#,
        r#"{"title":"blue whale","n":3,"meta":{"a":1,"b":2}}"#,
        r#"{"delete":{"_id":"never-existed"}}"#,
    ]
    .join("\n");
    let (status, result) = bulk("/books/_bulk?refresh=wait_for", body + "\n").await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["errors"], false);
    assert!(result["took"].is_u64());
    let items = bulk_items(&result);
    let summary: Vec<(&str, &str, u64)> = items
        .iter()
        .map(|(action, b)| {
            (
                action.as_str(),
                b["_index"].as_str().unwrap(),
                b["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("index", "books", 201),
            ("index", "other", 201),
            ("create", "books", 201),
            ("create", "books", 201),
            ("delete", "books", 200)
        ]
    );
    let assigned = items[2].1["_id"].as_str().unwrap().to_owned();
    assert_eq!(server.total("books", "*").await, 3);
    assert_eq!(server.total("other", "*").await, 1);
    assert_eq!(server.total("books", "title:whale").await, 1);
    let doc = server
        .get_json(&format!("/v1/collections/books/documents/{assigned}"))
        .await;
    assert_eq!(doc["id"], assigned.as_str());

    // create on a taken id conflicts; update merges (objects recursively); upserts;
    // updates of missing documents are 404s; noop updates write nothing.
    let body = [
        r#"{"create":{"_index":"books","_id":"1"}}"#,
        r#"{"title":"should not replace"}"#,
        r#"{"create":{"_index":"books"}}"#,
        r#"{"id":"2","title":"should not replace either"}"#,
        r#"{"update":{"_index":"books","_id":"2"}}"#,
        r#"{"doc":{"title":"blue whale shark","meta":{"b":3}}}"#,
        r#"{"update":{"_index":"books","_id":"1"}}"#,
        r#"{"doc":{"n":1}}"#,
        r#"{"update":{"_index":"books","_id":"3"}}"#,
        r#"{"doc":{"title":"ghost"}}"#,
        r#"{"update":{"_index":"books","_id":"4"}}"#,
        r#"{"doc":{"title":"upserted","n":4},"doc_as_upsert":true}"#,
        r#"{"delete":{"_index":"other","_id":"1"}}"#,
    ]
    .join("\n");
    let (status, result) = bulk("/_bulk?refresh=true", body).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["errors"], true);
    let summary: Vec<(String, u64, Option<String>, Option<String>)> = bulk_items(&result)
        .into_iter()
        .map(|(action, b)| {
            (
                action,
                b["status"].as_u64().unwrap(),
                b["result"].as_str().map(str::to_owned),
                b["error"]["type"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let s = |a: &str, status: u64, r: Option<&str>, e: Option<&str>| {
        (
            a.to_owned(),
            status,
            r.map(str::to_owned),
            e.map(str::to_owned),
        )
    };
    assert_eq!(
        summary,
        vec![
            s(
                "create",
                409,
                None,
                Some("version_conflict_engine_exception")
            ),
            s(
                "create",
                409,
                None,
                Some("version_conflict_engine_exception")
            ),
            s("update", 200, Some("updated"), None),
            s("update", 200, Some("noop"), None),
            s("update", 404, None, Some("document_missing_exception")),
            s("update", 201, Some("created"), None),
            s("delete", 200, Some("deleted"), None),
        ]
    );
    let doc = server.get_json("/v1/collections/books/documents/2").await;
    assert_eq!(doc["title"], "blue whale shark");
    assert_eq!(doc["meta"], json!({"a": 1, "b": 3}));
    assert_eq!(doc["n"], 3);
    let doc = server.get_json("/v1/collections/books/documents/1").await;
    assert_eq!(doc["title"], "red fox");
    assert_eq!(server.total("books", "title:shark").await, 1);
    assert_eq!(server.total("books", "title:upserted").await, 1);
    assert_eq!(server.total("books", "title:ghost").await, 0);
    assert_eq!(server.total("other", "*").await, 0);

    // An Idempotency-Key makes a retried bulk request assign the same ids, append nothing.
    let send_keyed = || {
        let request = server
            .client
            .post(server.url("/keyed/_bulk?wait=searchable"))
            .header("idempotency-key", "es-batch-1")
            .header("content-type", "application/json")
            .body("{\"index\":{}}\n{\"text\":\"once\"}\n");
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = send_keyed().await;
    let retry = send_keyed().await;
    assert_eq!(first["items"], retry["items"]);
    assert_eq!(server.total("keyed", "*").await, 1);

    // gzip bodies and unknown parameters.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"index\":{\"_id\":\"z\"}}\n{\"title\":\"zipped\"}\n")
        .unwrap();
    let response = server
        .client
        .post(server.url("/books/_bulk?refresh=wait_for&timeout=1m"))
        .header("content-encoding", "gzip")
        .header("content-type", "application/x-ndjson")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.total("books", "title:zipped").await, 1);
    let (status, result) = bulk(
        "/books/_bulk?pipeline=p",
        "{\"delete\":{\"_id\":\"z\"}}\n".into(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(result["error"]["code"], "invalid_request");
}
