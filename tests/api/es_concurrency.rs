//! Elasticsearch's concurrency promises against a real node, under concurrent writers:
//! `create` conflicts once an id exists, `update` never loses another update's change,
//! and `if_seq_no` read-modify-write loops count every increment exactly once.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::Server;

/// One `_bulk` request of one action line (and its source line); the item's answer.
/// A request refused by admission (429) is sent again, as the clients do.
async fn bulk_one(server: &Server, action: Value, source: Option<Value>) -> Value {
    let mut body = format!("{action}\n");
    if let Some(source) = source {
        body.push_str(&format!("{source}\n"));
    }
    let response = loop {
        let response = server
            .client
            .post(server.url("/races/_bulk"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if response.status() != 429 {
            break response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let item = answer["items"][0].as_object().unwrap();
    item.values().next().unwrap().clone()
}

async fn started() -> (tempfile::TempDir, Arc<Server>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let schema = json!({"fields": [{"name": "id", "type": "string"},
                                   {"name": "n", "type": "i64", "required": false}]});
    assert_eq!(server.put_schema("races", &schema).await.status(), 201);
    (dir, Arc::new(server))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_id_give_one_created_and_conflicts() {
    let (_dir, server) = started().await;
    const IDS: usize = 6;
    const WRITERS: usize = 6;
    let mut tasks = Vec::new();
    for id in 0..IDS {
        for writer in 0..WRITERS {
            let server = server.clone();
            tasks.push(tokio::spawn(async move {
                let item = bulk_one(
                    &server,
                    json!({"create": {"_id": format!("c{id}")}}),
                    Some(json!({"n": writer})),
                )
                .await;
                (id, item["status"].as_u64().unwrap())
            }));
        }
    }
    let mut created = vec![0; IDS];
    for task in tasks {
        let (id, status) = task.await.unwrap();
        match status {
            201 => created[id] += 1,
            409 => {}
            other => panic!("create c{id}: status {other}"),
        }
    }
    assert_eq!(created, vec![1; IDS], "exactly one create per id succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_of_one_document_keep_every_change() {
    let (_dir, server) = started().await;
    let item = bulk_one(
        &server,
        json!({"index": {"_id": "u"}}),
        Some(json!({"n": 0})),
    )
    .await;
    assert_eq!(item["status"], 201);
    const WRITERS: usize = 16;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let server = server.clone();
            tokio::spawn(async move {
                bulk_one(
                    &server,
                    json!({"update": {"_id": "u"}}),
                    Some(json!({"doc": {format!("f{writer}"): writer}})),
                )
                .await
            })
        })
        .collect();
    for task in tasks {
        let item = task.await.unwrap();
        assert_eq!(item["status"], 200, "{item}");
    }
    let doc = server.get_json("/races/_doc/u").await;
    for writer in 0..WRITERS {
        assert_eq!(
            doc["_source"][format!("f{writer}")],
            writer,
            "update {writer} was lost: {doc}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_seq_no_loops_count_every_increment_once() {
    let (_dir, server) = started().await;
    let item = bulk_one(
        &server,
        json!({"index": {"_id": "counter"}}),
        Some(json!({"n": 0})),
    )
    .await;
    assert_eq!(item["status"], 201);
    const WRITERS: u64 = 4;
    const INCREMENTS: u64 = 5;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                let mut done = 0;
                let mut conflicts = 0;
                while done < INCREMENTS {
                    let current = server.get_json("/races/_doc/counter").await;
                    let seq_no = current["_seq_no"].as_u64().unwrap();
                    let n = current["_source"]["n"].as_u64().unwrap();
                    let item = bulk_one(
                        &server,
                        json!({"index": {"_id": "counter", "if_seq_no": seq_no, "if_primary_term": 1}}),
                        Some(json!({"n": n + 1})),
                    )
                    .await;
                    match item["status"].as_u64().unwrap() {
                        201 => {
                            assert!(item["_seq_no"].as_u64().unwrap() > seq_no, "{item}");
                            done += 1;
                        }
                        409 => conflicts += 1,
                        other => panic!("status {other}: {item}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let doc = server.get_json("/races/_doc/counter").await;
    assert_eq!(doc["_source"]["n"], WRITERS * INCREMENTS, "{doc}");
    // A stale sequence is refused.
    let item = bulk_one(
        &server,
        json!({"index": {"_id": "counter", "if_seq_no": 1, "if_primary_term": 1}}),
        Some(json!({"n": 0})),
    )
    .await;
    assert_eq!(item["status"], 409, "{item}");
    assert_eq!(item["error"]["type"], "version_conflict_engine_exception");
}
