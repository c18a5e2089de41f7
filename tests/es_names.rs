//! What Elasticsearch accepts and shippers send, against a real `sluice serve` on both
//! logs (the embedded log, and JetStream on a real nats-server):
//! - index names with dots (`logstash-2024.06.01`) and other characters Elasticsearch
//!   allows, next to look-alike names that must stay distinct collections: ingest,
//!   search, delete, re-create, restart;
//! - `_id` apart from a source field named like the primary key: hit ids, `GET` by
//!   `_id`, the source kept as sent, for index, create, update and delete;
//! - documents over the old 1 MiB line limit, within the new default, through `_bulk`
//!   and native ingest, and one over the limit refused alone.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use sluice_queue::testing::NatsServer;
use support::{eventually, Server};

/// Frequent commits, so searches see documents soon.
const CONFIG: &str = "[indexer]\ncommit_interval = \"100ms\"\n";

/// A dotted name as shippers make them, and names a careless encoding would merge with it.
const DOTTED: &str = "logstash-2024.06.01";
const LOOK_ALIKES: [&str; 3] = [
    "logstash-2024_06_01",
    "logstash-2024-06-01",
    "logstash-2024~06~01",
];
/// Characters Elasticsearch allows beyond `a-z 0-9 _ - .`.
const WIDE: &str = "app+x%y.données";

/// `POST path` with an NDJSON body of `lines`; status and JSON answer.
async fn bulk(server: &Server, path: &str, lines: &[Value]) -> (u16, Value) {
    let body = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    bulk_raw(server, path, body).await
}

async fn bulk_raw(server: &Server, path: &str, body: String) -> (u16, Value) {
    let response = server
        .client
        .post(server.url(path))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("POST _bulk");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

/// The collection part of a URL path for `name` (percent-encoded where needed).
fn path_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Hit ids and `msg` values of a search for everything, sorted by id.
async fn hits(server: &Server, name: &str) -> Vec<(String, Value)> {
    let (status, body) = server
        .search(&path_name(name), &[("q", "*"), ("limit", "100")])
        .await;
    assert_eq!(status, 200, "{name}: {body}");
    let mut hits: Vec<(String, Value)> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| {
            (
                hit["id"].as_str().unwrap().to_owned(),
                hit["doc"]["msg"].clone(),
            )
        })
        .collect();
    hits.sort_by(|a, b| a.0.cmp(&b.0));
    hits
}

fn item_of(answer: &Value, i: usize) -> &Value {
    let item = &answer["items"][i];
    item.as_object()
        .and_then(|o| o.values().next())
        .unwrap_or_else(|| panic!("item {i} of {answer}"))
}

/// Every `_bulk` item of `names`, then searches: each name is its own collection.
async fn write_each(server: &Server, names: &[&str], generation: &str) {
    let mut lines = Vec::new();
    for name in names {
        for n in 0..3 {
            lines.push(json!({"index": {"_index": name, "_id": format!("{generation}-{n}")}}));
            lines.push(json!({"msg": format!("{name} {generation} {n}")}));
        }
    }
    let (status, answer) = bulk(server, "/_bulk?refresh=wait_for", &lines).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], false, "{answer}");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(item_of(&answer, i * 3)["_index"], *name, "{answer}");
    }
}

async fn assert_holds(server: &Server, name: &str, generation: &str) {
    let expected: Vec<(String, Value)> = (0..3)
        .map(|n| {
            (
                format!("{generation}-{n}"),
                json!(format!("{name} {generation} {n}")),
            )
        })
        .collect();
    assert_eq!(hits(server, name).await, expected, "{name}");
}

/// Dotted and look-alike names through the whole pipeline, a deletion of the dotted one
/// and its re-creation, then a restart.
async fn dotted_names_scenario(server: Server, embedded: bool) -> Server {
    let mut names = vec![DOTTED, WIDE];
    names.extend(LOOK_ALIKES);
    write_each(&server, &names, "first").await;
    for name in &names {
        assert_holds(&server, name, "first").await;
    }
    let listed = server.get_json("/v1/collections").await;
    let listed: Vec<&str> = listed["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in &names {
        assert!(listed.contains(name), "{name} not in {listed:?}");
    }
    let doc = server
        .get_json(&format!("/{}/_doc/first-1", path_name(DOTTED)))
        .await;
    assert_eq!(doc["_index"], DOTTED);
    assert_eq!(doc["_source"]["msg"], format!("{DOTTED} first 1"));
    if embedded {
        // Index directories are the names' tokens, one per collection.
        let index = server.data_dir.join("index");
        for token in [
            "logstash-2024~06~01",
            "logstash-2024_06_01",
            "logstash-2024-06-01",
            "logstash-2024%7e06%7e01",
            "app%2bx%25y~donn%c3%a9es",
        ] {
            assert!(index.join(token).is_dir(), "no index directory {token}");
        }
    }

    // Deleting the dotted collection leaves its look-alikes alone.
    let response = server
        .delete(&format!("/v1/collections/{}", path_name(DOTTED)))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        server
            .get(&format!("/v1/collections/{}", path_name(DOTTED)))
            .await
            .status(),
        404
    );
    for name in LOOK_ALIKES.iter().chain([&WIDE]) {
        assert_holds(&server, name, "first").await;
    }

    // Re-created by a first `_bulk` write: only the new incarnation's documents.
    assert!(
        eventually(Duration::from_secs(60), || async {
            let lines = [
                json!({"index": {"_index": DOTTED, "_id": "second-0"}}),
                json!({"msg": format!("{DOTTED} second 0")}),
            ];
            let (status, answer) = bulk(&server, "/_bulk", &lines).await;
            assert_eq!(status, 200, "{answer}");
            let item = item_of(&answer, 0);
            if item["status"] == 409 {
                assert_eq!(
                    item["error"]["type"], "collection_being_deleted",
                    "{answer}"
                );
                return false;
            }
            assert_eq!(item["status"], 201, "{answer}");
            true
        })
        .await,
        "the dotted name was never taken again"
    );
    write_each(&server, &[DOTTED], "second").await;
    assert_holds(&server, DOTTED, "second").await;

    // A restart finds every collection again (nothing mistaken for a deleted one's files).
    let server = server.kill9_and_restart().await;
    assert_holds(&server, DOTTED, "second").await;
    for name in LOOK_ALIKES.iter().chain([&WIDE]) {
        assert_holds(&server, name, "first").await;
    }
    // A new dotted name after the restart.
    write_each(&server, &["filebeat-8.15.0"], "third").await;
    assert_holds(&server, "filebeat-8.15.0", "third").await;
    server
}

/// Names Elasticsearch refuses are refused with a message naming the rule, on `_bulk`
/// items (the others go through) and on the native API.
async fn refused_names_scenario(server: &Server) {
    let cases = [
        ("Logs-2024", "lowercase"),
        ("_logs", "must not start with"),
        (".kibana", "hidden and system"),
        ("..", "'.' or '..'"),
        ("a:b", "must not contain"),
        ("a#b", "must not contain"),
    ];
    let mut lines = Vec::new();
    for (name, _) in cases {
        lines.push(json!({"index": {"_index": name, "_id": "1"}}));
        lines.push(json!({"msg": "refused"}));
    }
    lines.push(json!({"index": {"_index": "fine.name", "_id": "1"}}));
    lines.push(json!({"msg": "kept"}));
    let (status, answer) = bulk(server, "/_bulk?refresh=wait_for", &lines).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], true);
    for (i, (name, rule)) in cases.iter().enumerate() {
        let item = item_of(&answer, i);
        assert_eq!(item["status"], 400, "{name}: {answer}");
        assert_eq!(item["error"]["type"], "invalid_collection_name", "{name}");
        let reason = item["error"]["reason"].as_str().unwrap();
        assert!(reason.contains(rule), "{name}: {reason}");
    }
    assert_eq!(item_of(&answer, cases.len())["status"], 201, "{answer}");
    assert_eq!(server.total("fine.name", "*").await, 1);
    let response = server
        .put_schema(
            "logs.A",
            &json!({"fields": [{"name": "id", "type": "string"}]}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_collection_name");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lowercase"),
        "{body}"
    );
}

/// `_id` is the id; a source field named like the primary key is kept as a value.
async fn ids_scenario(server: &Server) {
    let lines = [
        json!({"index": {"_index": "ids.test", "_id": "a1"}}),
        json!({"id": "source-a", "msg": "first"}),
        json!({"create": {"_index": "ids.test", "_id": "b1"}}),
        json!({"id": 7, "msg": "second"}),
        json!({"index": {"_index": "ids.test", "_id": "c1"}}),
        json!({"msg": "no id field"}),
        // The same source id under another `_id` is another document.
        json!({"index": {"_index": "ids.test", "_id": "d1"}}),
        json!({"id": "source-a", "msg": "twin"}),
        json!({"create": {"_index": "ids.test", "_id": "a1"}}),
        json!({"msg": "taken"}),
    ];
    let (status, answer) = bulk(server, "/_bulk?refresh=wait_for", &lines).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = (0..5)
        .map(|i| item_of(&answer, i)["status"].as_u64().unwrap())
        .collect();
    // `"id": 7` is a number in a field the dynamic schema declares as a string.
    assert_eq!(statuses, vec![201, 400, 201, 201, 409], "{answer}");
    assert_eq!(item_of(&answer, 1)["error"]["type"], "wrong_type");
    assert_eq!(item_of(&answer, 0)["_id"], "a1");

    let hit_ids: Vec<String> = hits(server, "ids.test")
        .await
        .into_iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(hit_ids, vec!["a1", "c1", "d1"]);
    let doc = server
        .get_json("/v1/collections/ids.test/documents/a1")
        .await;
    assert_eq!(
        doc,
        json!({"id": "source-a", "msg": "first"}),
        "the source as sent"
    );
    let doc = server
        .get_json("/v1/collections/ids.test/documents/c1")
        .await;
    assert_eq!(doc, json!({"msg": "no id field"}), "no id added");
    let status = server
        .get("/v1/collections/ids.test/documents/source-a")
        .await
        .status();
    assert_eq!(status, 404, "the source's id is no document id");
    let doc = server.get_json("/ids.test/_doc/d1").await;
    assert_eq!(doc["_id"], "d1");
    assert_eq!(doc["_source"], json!({"id": "source-a", "msg": "twin"}));
    // The source field stays searchable as a value: both documents carry it.
    assert_eq!(server.total("ids.test", "id:\"source-a\"").await, 2);

    // update merges into the document named by `_id`, keeping its own `id` value; index
    // replaces by `_id` (last writer wins); delete removes by `_id`.
    let lines = [
        json!({"update": {"_index": "ids.test", "_id": "a1"}}),
        json!({"doc": {"msg": "updated", "id": "source-z"}}),
        json!({"index": {"_index": "ids.test", "_id": "c1"}}),
        json!({"id": "now-has-one", "msg": "replaced"}),
        json!({"delete": {"_index": "ids.test", "_id": "d1"}}),
    ];
    let (status, answer) = bulk(server, "/_bulk?refresh=wait_for", &lines).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], false, "{answer}");
    let doc = server
        .get_json("/v1/collections/ids.test/documents/a1")
        .await;
    assert_eq!(doc, json!({"id": "source-z", "msg": "updated"}));
    let doc = server
        .get_json("/v1/collections/ids.test/documents/c1")
        .await;
    assert_eq!(doc, json!({"id": "now-has-one", "msg": "replaced"}));
    assert_eq!(
        server
            .get("/v1/collections/ids.test/documents/d1")
            .await
            .status(),
        404
    );
    let found = hits(server, "ids.test").await;
    assert_eq!(
        found,
        vec![
            ("a1".to_owned(), json!("updated")),
            ("c1".to_owned(), json!("replaced"))
        ]
    );

    // Without `_id`, an item is read as a native line: its primary key is its id.
    let lines = [
        json!({"index": {"_index": "ids.test"}}),
        json!({"id": "native-1", "msg": "native"}),
    ];
    let (status, answer) = bulk(server, "/_bulk?refresh=wait_for", &lines).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(item_of(&answer, 0)["_id"], "native-1", "{answer}");
}

/// A line of `size` bytes: `{"id":..., "msg": "xxxx..."}` padded to exactly `size`.
fn sized_line(id: &str, size: usize) -> String {
    let head = format!("{{\"id\":\"{id}\",\"msg\":\"");
    let tail = "\"}";
    format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
}

/// A `_bulk` source of `size` bytes (no id field).
fn sized_source(size: usize) -> String {
    let head = "{\"msg\":\"";
    let tail = "\"}";
    format!("{head}{}{tail}", "y".repeat(size - head.len() - tail.len()))
}

const MIB: usize = 1 << 20;

/// `accepted_size` goes through `_bulk` and native ingest; `refused_size` is refused alone
/// with `line_too_large` while its neighbours are written.
async fn sizes_scenario(
    server: &Server,
    collection: &str,
    accepted_size: usize,
    refused_size: usize,
) {
    let body = [
        json!({"index": {"_index": collection, "_id": "small-1"}}).to_string(),
        json!({"msg": "small"}).to_string(),
        json!({"index": {"_index": collection, "_id": "big"}}).to_string(),
        sized_source(accepted_size),
        json!({"index": {"_index": collection, "_id": "huge"}}).to_string(),
        sized_source(refused_size),
        json!({"index": {"_index": collection, "_id": "small-2"}}).to_string(),
        json!({"msg": "small"}).to_string(),
    ]
    .join("\n")
        + "\n";
    let (status, answer) = bulk_raw(server, "/_bulk?refresh=wait_for", body).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = (0..4)
        .map(|i| item_of(&answer, i)["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 201, 413, 201], "{answer}");
    let refused = item_of(&answer, 2);
    assert_eq!(refused["error"]["type"], "line_too_large", "{answer}");
    assert!(refused["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("limit"));
    let big = server
        .get_json(&format!("/v1/collections/{collection}/documents/big"))
        .await;
    assert_eq!(big["msg"].as_str().unwrap().len(), accepted_size - 10);
    assert_eq!(
        server
            .get(&format!("/v1/collections/{collection}/documents/huge"))
            .await
            .status(),
        404
    );

    let body = [
        sized_line("native-small-1", 100),
        sized_line("native-big", accepted_size),
        sized_line("native-huge", refused_size),
        sized_line("native-small-2", 100),
    ]
    .join("\n");
    let (status, answer) = server.ingest(collection, body, "searchable").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["errors"][0]["line"], 3, "{answer}");
    assert_eq!(answer["errors"][0]["code"], "line_too_large", "{answer}");
    let big = server
        .get_json(&format!(
            "/v1/collections/{collection}/documents/native-big"
        ))
        .await;
    assert_eq!(big.to_string().len(), accepted_size);
    assert_eq!(server.total(collection, "*").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_index_names_ids_and_sizes_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(CONFIG)).await;
    let server = dotted_names_scenario(server, true).await;
    refused_names_scenario(&server).await;
    ids_scenario(&server).await;
    // Default line limit: 8 MiB.
    sizes_scenario(&server, "sizes.default", 3 * MIB, 9 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_index_names_ids_and_sizes_on_jetstream() {
    // JetStream takes documents up to the server's max_payload (less sluice's envelope
    // room): raised here to what the default line limit needs.
    let nats = NatsServer::start_with_config("max_payload: 8MB\n");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        Some(CONFIG),
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    let server = dotted_names_scenario(server, false).await;
    refused_names_scenario(&server).await;
    ids_scenario(&server).await;
    sizes_scenario(&server, "sizes.jetstream", 3 * MIB, 9 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_nats_server_bounds_documents_by_its_max_payload() {
    // 1 MiB max_payload: a 2 MiB document is refused alone, never a 503 for the request.
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        Some(CONFIG),
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    sizes_scenario(&server, "sizes.stock", 900 * 1024, 2 * MIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_limit_follows_its_environment_override() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        Some(CONFIG),
        &[("SLUICE_INGEST_MAX_LINE_SIZE", "2MiB")],
    )
    .await;
    sizes_scenario(&server, "sizes.env", MIB + MIB / 2, 3 * MIB).await;
}
