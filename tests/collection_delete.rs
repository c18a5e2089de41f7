//! Deleting a collection, with real `sluice serve` processes: a crash at each step of the
//! deletion (`SLUICE_CRASH_AT`, see `sluice_core::crash_point`), and a deletion racing
//! live ingest followed by a re-creation and a `kill -9`.
//!
//! The deletion is an operation in the DOCS log (see `sluice_core::catalog`): the handler
//! marks the entry `Deleting` and appends the drop, a worker drops the documents, purges
//! the log and retires the entry. Whatever step the process dies after, the restarted
//! node finishes the deletion on its own, the name can be used again, and nothing of
//! the deleted incarnation ever comes back: not in the store, not in the index.

mod support;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{corpus, corpus_schema, eventually, Server};

/// Documents of the deleted incarnation.
const OLD_DOCS: usize = 300;
/// Documents ingested into the new incarnation (the first ones of the same corpus, same
/// ids and contents: dedup must not skip them).
const NEW_DOCS: usize = 100;
/// SIGABRT: what `std::process::abort` ends the process with.
const SIGABRT: i32 = 6;
/// Frequent commits, so searches see documents soon.
const CONFIG: &str = "[indexer]\ncommit_interval = \"100ms\"\n";
/// How long a restarted node may take to finish an interrupted deletion.
const RESUME_TIMEOUT: Duration = Duration::from_secs(60);

/// Re-creates `collection` with the corpus schema, retrying while the deletion is still
/// under way (409 `collection_being_deleted`); true once created.
async fn recreate(server: &Server, collection: &str) -> bool {
    eventually(RESUME_TIMEOUT, || async {
        let response = server.put_schema(collection, &corpus_schema()).await;
        let status = response.status().as_u16();
        if status == 409 {
            let body: Value = response.json().await.expect("JSON body");
            assert_eq!(body["error"]["code"], "collection_being_deleted", "{body}");
        } else {
            assert_eq!(status, 201, "re-creating {collection}");
        }
        status == 201
    })
    .await
}

/// The ids a search for everything finds (at most 10 000).
async fn searchable_ids(server: &Server, collection: &str) -> HashSet<String> {
    let (status, body) = server
        .search(collection, &[("q", "*"), ("limit", "10000")])
        .await;
    assert_eq!(status, 200, "{body}");
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["id"].as_str().expect("hit id").to_owned())
        .collect()
}

async fn stored(server: &Server, collection: &str, id: &str) -> bool {
    let status = server
        .get(&format!("/v1/collections/{collection}/documents/{id}"))
        .await
        .status();
    assert!(status == 200 || status == 404, "GET {id}: {status}");
    status == 200
}

/// Arms `point`, fills a collection, deletes it (the node aborts at the point), restarts
/// disarmed and checks that the deletion finished and the name takes new documents with
/// nothing of the old incarnation. `done_before_crash` says the point comes after the
/// deletion is durably finished, so the DELETE may be answered 200 before the abort.
async fn crash_during_delete(point: &str, done_before_crash: bool) {
    let dir = tempfile::tempdir().unwrap();
    let crash_at = format!("{point}:1");
    let mut server = Server::start_with(
        &dir.path().join("data"),
        Some(CONFIG),
        &[("SLUICE_CRASH_AT", crash_at.as_str())],
    )
    .await;
    assert_eq!(
        server.put_schema("corpus", &corpus_schema()).await.status(),
        201
    );
    let (lines, docs) = corpus(OLD_DOCS);
    let (status, body) = server
        .ingest("corpus", lines.join("\n"), "searchable")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.total("corpus", "*").await, OLD_DOCS as u64);

    // The node aborts while deleting: the answer never comes, unless the deletion was
    // durably done first, when it may be a 200 and nothing else.
    let answer = server
        .client
        .delete(server.url("/v1/collections/corpus"))
        .send()
        .await;
    match &answer {
        Err(_) => {}
        Ok(response) if done_before_crash && response.status() == 200 => {}
        Ok(_) => panic!("{point}: the DELETE was answered before the crash: {answer:?}"),
    }
    let status = server.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "{point}: expected the armed abort, got {status}"
    );

    let server = server.restart_with(&[]).await;
    assert_eq!(
        server.get("/v1/collections/corpus").await.status(),
        404,
        "{point}: a collection whose deletion began is gone at once after a restart"
    );
    assert!(
        recreate(&server, "corpus").await,
        "{point}: the restarted node never finished the deletion"
    );
    assert!(
        searchable_ids(&server, "corpus").await.is_empty(),
        "{point}: the re-created collection shows old documents"
    );
    for doc in &docs {
        let id = doc["id"].as_str().unwrap();
        assert!(
            !stored(&server, "corpus", id).await,
            "{point}: old document {id} is still stored"
        );
    }

    let (status, body) = server
        .ingest("corpus", lines[..NEW_DOCS].join("\n"), "searchable")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], NEW_DOCS as u64, "{body}");
    let expected: HashSet<String> = docs[..NEW_DOCS]
        .iter()
        .map(|doc| doc["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        searchable_ids(&server, "corpus").await,
        expected,
        "{point}: exactly the new incarnation's documents are searchable"
    );
    assert!(stored(&server, "corpus", "doc-0").await);
    assert!(!stored(&server, "corpus", &format!("doc-{}", OLD_DOCS - 1)).await);
    let (status, body) = server.search("corpus", &[("q", "*")]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_collection_is_marked_deleting() {
    crash_during_delete("drop_marked", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_documents_are_dropped() {
    crash_during_delete("drop_documents", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_log_is_purged() {
    crash_during_delete("drop_purged", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_the_entry_is_retired_before_the_drop_is_acked() {
    crash_during_delete("drop_retired", true).await;
}

/// One acknowledged ingest request of the race test: its ids, when it was sent and
/// when it was answered.
struct Ack {
    ids: Vec<String>,
    sent: Instant,
    answered: Instant,
}

/// Producers write into an auto-created collection while it is deleted; it is created
/// again, filled, and the node is killed with `kill -9`. After the restart no document
/// acknowledged before the deletion was asked for is stored or searchable (some of them
/// were still in the pipeline when it began), and every document sent after the
/// deletion answered is. (A request in flight across the deletion may land either way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_racing_ingest_leaves_nothing_of_the_old_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some(CONFIG)).await;
    let (status, body) = server
        .ingest("race", r#"{"id":"seed","text":"first"}"#, "searchable")
        .await;
    assert_eq!(status, 200, "{body}");

    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer in 0..2 {
        let client = server.client.clone();
        let url = server.url("/v1/collections/race/documents");
        let (acks, stop) = (acks.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut request = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = (0..20)
                    .map(|i| format!("p{producer}-r{request}-{i}"))
                    .collect();
                let body: Vec<String> = ids
                    .iter()
                    .map(|id| format!(r#"{{"id":"{id}","text":"racing words"}}"#))
                    .collect();
                request += 1;
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.join("\n"))
                    .send()
                    .await
                    .expect("the node stays up");
                if response.status().is_success() {
                    let answered = Instant::now();
                    acks.lock().unwrap().push(Ack {
                        ids,
                        sent,
                        answered,
                    });
                } else {
                    // 409 collection_being_deleted while the deletion runs.
                    let body: Value = response.json().await.expect("JSON body");
                    assert_eq!(body["error"]["code"], "collection_being_deleted", "{body}");
                }
            }
        }));
    }
    // Let documents reach the pipeline, then delete while the producers go on.
    assert!(
        eventually(Duration::from_secs(30), || async {
            acks.lock().unwrap().len() >= 20
        })
        .await
    );
    let delete_sent = Instant::now();
    let response = server.delete("/v1/collections/race").await;
    let delete_answered = Instant::now();
    assert_eq!(response.status(), 200, "the deletion finished in time");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for producer in producers {
        producer.await.unwrap();
    }
    // The producers may have created it again on first ingest; make sure it exists.
    let (status, body) = server
        .ingest("race", r#"{"id":"after","text":"again"}"#, "searchable")
        .await;
    assert_eq!(status, 200, "{body}");

    let server = server.kill9_and_restart().await;
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let ids_where = |keep: &dyn Fn(&Ack) -> bool| -> HashSet<String> {
        acks.iter()
            .filter(|ack| keep(ack))
            .flat_map(|ack| ack.ids.iter().cloned())
            .collect()
    };
    let mut old = ids_where(&|ack| ack.answered < delete_sent);
    old.insert("seed".to_owned());
    let mut new = ids_where(&|ack| ack.sent > delete_answered);
    new.insert("after".to_owned());
    assert!(
        old.len() > 1,
        "documents were acknowledged before the deletion"
    );
    // The new incarnation settles: what it acknowledged becomes searchable.
    assert!(
        eventually(Duration::from_secs(60), || async {
            searchable_ids(&server, "race").await.is_superset(&new)
        })
        .await,
        "documents sent after the deletion answered are missing"
    );
    let searchable = searchable_ids(&server, "race").await;
    let back: Vec<&String> = searchable.intersection(&old).collect();
    assert!(
        back.is_empty(),
        "{} documents acknowledged before the deletion are searchable again: {:?}",
        back.len(),
        back.iter().take(5).collect::<Vec<_>>()
    );
    for id in old.iter().take(300) {
        assert!(
            !stored(&server, "race", id).await,
            "{id}, acknowledged before the deletion, is stored again"
        );
    }
}
