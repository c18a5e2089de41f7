//! Operating a node: the dead-letter queue routes and CLI, overload admission and
//! tombstone compaction. Real `sluice serve` processes, real logs (embedded and
//! JetStream).
//!
//! No input makes the real store refuse an op for good, so the dead letters are made
//! by a real worker pool run in-process, through the crate APIs, on the very log the
//! server then opens: its store (a real embedded store, in a directory of its own)
//! refuses the poisoned ids permanently, the way `sluice-workers`' own tests inject
//! faults. Everything after that goes through the server's HTTP API and the CLI.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};
use sluice_core::catalog::Catalog;
use sluice_core::config::{LogConfig, ResilienceConfig, WorkersConfig};
use sluice_core::document::ContentHash;
use sluice_core::log::{Log, OutgoingMessage};
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::resilience::Breakers;
use sluice_core::store::{
    CollectionMeta, CompactionPage, DefinitionKind, DocVersion, Store, StoreError, StoreWrite,
    StoredDoc, TombstoneHorizon, WriteOutcome,
};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{CollectionName, DocId, Generation, Seq};
use sluice_queue::testing::NatsServer;
use sluice_queue::{EmbeddedLog, JetStreamConfig, JetStreamLog};
use sluice_store::EmbeddedStore;
use sluice_workers::WorkerPool;
use support::{eventually, Server};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);
const SHARDS: u32 = 2;

/// The real embedded store, refusing every write of `poisoned` ids permanently.
struct PoisonStore {
    inner: Arc<EmbeddedStore>,
    poisoned: Vec<DocId>,
}

#[async_trait]
impl Store for PoisonStore {
    async fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: Vec<StoreWrite>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.iter().any(|w| self.poisoned.contains(w.id())) {
            return Err(StoreError::Rejected("refused by the test store".into()));
        }
        self.inner.apply(collection, generation, writes).await
    }
    async fn get(&self, c: &CollectionName, id: &DocId) -> Result<Option<StoredDoc>, StoreError> {
        self.inner.get(c, id).await
    }
    async fn versions(
        &self,
        c: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError> {
        self.inner.versions(c, ids).await
    }
    async fn scan(
        &self,
        c: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        self.inner.scan(c, after, limit).await
    }
    async fn compact_tombstones(
        &self,
        c: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError> {
        self.inner
            .compact_tombstones(c, horizon, after, limit)
            .await
    }
    async fn drop_documents(&self, c: &CollectionName) -> Result<(), StoreError> {
        self.inner.drop_documents(c).await
    }
    async fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError> {
        self.inner.put_collection(meta).await
    }
    async fn get_collection(
        &self,
        c: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        self.inner.get_collection(c).await
    }
    async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        self.inner.list_collections().await
    }
    async fn delete_collection(&self, c: &CollectionName) -> Result<(), StoreError> {
        self.inner.delete_collection(c).await
    }
    async fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        value: Bytes,
    ) -> Result<(), StoreError> {
        self.inner.put_definition(kind, name, value).await
    }
    async fn get_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        self.inner.get_definition(kind, name).await
    }
    async fn list_definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.inner.list_definitions(kind).await
    }
    async fn delete_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.inner.delete_definition(kind, name).await
    }
}

fn upsert(id: &str, title: &str) -> DocOp {
    let source = serde_json::to_vec(&json!({"id": id, "title": title})).unwrap();
    DocOp::Upsert {
        id: DocId::new(id).unwrap(),
        hash: ContentHash::of(&source),
        source: Bytes::from(source),
    }
}

/// Appends `ops` to DOCS as one message per op, each in its id's partition.
async fn append(log: &dyn Log, collection: &str, ops: Vec<DocOp>) {
    let collection = CollectionName::new(collection).unwrap();
    let messages = ops
        .into_iter()
        .map(|op| {
            let partition = op.id().partition(SHARDS);
            let batch = DocBatch {
                collection: collection.clone(),
                partition,
                generation: Default::default(),
                ops: vec![op],
            };
            OutgoingMessage {
                subject: subjects::docs(&collection, partition),
                msg_id: uuid_like(),
                payload: batch.encode(),
            }
        })
        .collect();
    log.append(StreamKind::Docs, messages).await.unwrap();
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs a real worker pool on `log` until it has dead-lettered: `books/p1` and `books/p2`
/// (refused by the store) and an undecodable message of collection `other`; `books/ok`
/// is applied.
async fn make_dead_letters(log: Arc<dyn Log>, store_dir: &std::path::Path) {
    let store = Arc::new(PoisonStore {
        inner: EmbeddedStore::open(store_dir).unwrap(),
        poisoned: vec![DocId::new("p1").unwrap(), DocId::new("p2").unwrap()],
    });
    let shutdown = CancellationToken::new();
    let config = WorkersConfig {
        count: 1,
        max_deliver: 2,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..WorkersConfig::default()
    };
    let catalog_store: Arc<dyn Store> = store.clone();
    let catalog = Arc::new(Catalog::load(catalog_store, 1).await.unwrap());
    let pool = WorkerPool::start(
        config,
        Duration::from_secs(5),
        log.clone(),
        store,
        catalog,
        Breakers::new(&ResilienceConfig::default(), Duration::from_secs(5)),
        shutdown.clone(),
    )
    .await
    .unwrap();
    append(
        log.as_ref(),
        "books",
        vec![
            upsert("p1", "first poisoned"),
            upsert("ok", "fine"),
            upsert("p2", "old title"),
        ],
    )
    .await;
    let garbage = OutgoingMessage {
        subject: "sluice.docs.other.0".into(),
        msg_id: uuid_like(),
        payload: Bytes::from_static(b"\xff\xfe"),
    };
    log.append(StreamKind::Docs, vec![garbage]).await.unwrap();
    let dead = eventually(DEADLINE, || {
        let log = log.clone();
        async move {
            log.read(StreamKind::Dlq, StreamKind::Dlq.all_subjects(), Seq(1), 10)
                .await
                .unwrap()
                .len()
                == 3
        }
    })
    .await;
    assert!(dead, "the pool dead-lettered three entries");
    shutdown.cancel();
    pool.wait_stopped().await;
}

/// The `sluice` binary's output for `args`, asserting success.
fn cli(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("run sluice");
    assert!(
        output.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

async fn dlq_depth(server: &Server, collection: &str) -> Option<f64> {
    let text = server.get("/metrics").await.text().await.unwrap();
    let prefix = format!("sluice_dlq_depth{{collection=\"{collection}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_replay_purge_and_cli_on_the_embedded_log() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    {
        let log: Arc<dyn Log> =
            EmbeddedLog::open(&data_dir.join("log"), &LogConfig::default()).unwrap();
        make_dead_letters(log.clone(), &dir.path().join("poison-store")).await;
        // Joins the log's threads: the server can lock the directory next.
        tokio::task::spawn_blocking(move || drop(log))
            .await
            .unwrap();
    }
    let server = Server::start(&data_dir, None).await;
    dlq_scenario(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_replay_purge_and_cli_on_jetstream() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = JetStreamLog::connect(JetStreamConfig {
        url: nats.url(),
        ..JetStreamConfig::default()
    })
    .await
    .unwrap();
    make_dead_letters(log, &dir.path().join("poison-store")).await;
    let server = Server::start_with(
        &dir.path().join("data"),
        None,
        &[("SLUICE_NATS_URL", &nats.url())],
    )
    .await;
    dlq_scenario(&server).await;
}

async fn dlq_scenario(server: &Server) {
    // Listing: every entry, then one collection, then paging.
    let all = server.get_json("/v1/dlq").await;
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{all}");
    assert_eq!(all["next_after"], Value::Null);
    let books = server.get_json("/v1/dlq?collection=books").await;
    let books_entries = books["entries"].as_array().unwrap().clone();
    assert_eq!(books_entries.len(), 2, "{books}");
    let p1 = books_entries.iter().find(|e| e["id"] == "p1").unwrap();
    assert_eq!(p1["collection"], "books");
    assert_eq!(p1["op"], "upsert");
    assert_eq!(p1["code"], "store_rejected");
    assert_eq!(p1["attempts"], 2);
    assert!(p1["message"]
        .as_str()
        .unwrap()
        .contains("refused by the test store"));
    assert!(p1["first_failure"].as_str().unwrap() <= p1["last_failure"].as_str().unwrap());
    assert!(
        p1.get("title").is_none() && !p1.to_string().contains("first poisoned"),
        "no document values: {p1}"
    );
    assert_eq!(books["depth"], json!({"books": 2}));
    let first = server.get_json("/v1/dlq?limit=1").await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 1);
    let after = first["next_after"].as_u64().expect("a next page");
    let rest = server
        .get_json(&format!("/v1/dlq?after={after}&limit=10"))
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 2);
    assert_eq!(server.get("/v1/dlq?limit=0").await.status(), 400);
    assert_eq!(server.get("/v1/dlq?collection=Bad!").await.status(), 400);

    // The depth gauge counted them at start.
    let depth_ok = eventually(DEADLINE, || async {
        dlq_depth(server, "books").await == Some(2.0)
            && dlq_depth(server, "other").await == Some(1.0)
    })
    .await;
    assert!(depth_ok, "sluice_dlq_depth per collection");

    // The CLI lists the same entries, as a table and as JSON.
    let table = cli(&["dlq", "list", "--url", &server.base]);
    assert!(table.starts_with("ENTRY"), "{table}");
    assert!(
        table.contains("p1")
            && table.contains("store_rejected")
            && table.contains("malformed_message"),
        "{table}"
    );
    assert!(table.contains("3 entries shown"), "{table}");
    let listed: Value = serde_json::from_str(&cli(&[
        "dlq",
        "list",
        "--url",
        &server.base,
        "--collection",
        "books",
        "--json",
    ]))
    .unwrap();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 2);

    // Replay needs the collection; "p2" gets a newer version first, which must survive.
    let schema = json!({"shards": SHARDS, "fields": [{"name": "id", "type": "string"}, {"name": "title", "type": "text"}]});
    assert_eq!(server.put_schema("books", &schema).await.status(), 201);
    let (status, body) = server
        .ingest(
            "books",
            "{\"id\":\"p2\",\"title\":\"new title\"}\n",
            "searchable",
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let bad = server
        .client
        .post(server.url("/v1/dlq/replay"))
        .json(&json!({"all": true, "collection": "books"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let report: Value = server
        .client
        .post(server.url("/v1/dlq/replay"))
        .json(&json!({"collection": "books"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["replayed"], 2, "{report}");
    assert_eq!(report["failed"], 0, "{report}");

    // GET is read-your-writes, so it sees the replayed ops applied.
    let p1_doc = server.get_json("/v1/collections/books/documents/p1").await;
    assert_eq!(p1_doc["title"], "first poisoned");
    let p2_doc = server.get_json("/v1/collections/books/documents/p2").await;
    assert_eq!(
        p2_doc["title"], "new title",
        "the replayed older op did not overwrite the newer one"
    );
    let searchable = eventually(DEADLINE, || async {
        server.total("books", "title:poisoned").await == 1
    })
    .await;
    assert!(searchable, "the replayed document becomes searchable");
    assert_eq!(server.total("books", "title:old").await, 0);

    // The entries are gone; replaying them again finds nothing and changes nothing.
    let books = server.get_json("/v1/dlq?collection=books").await;
    assert_eq!(books["entries"].as_array().unwrap().len(), 0, "{books}");
    let ids: Vec<u64> = books_entries
        .iter()
        .map(|e| e["entry_id"].as_u64().unwrap())
        .collect();
    let again: Value = server
        .client
        .post(server.url("/v1/dlq/replay"))
        .json(&json!({ "ids": ids }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["replayed"].as_u64(), again["not_found"].as_u64()),
        (Some(0), Some(2)),
        "{again}"
    );
    assert_eq!(
        server.get_json("/v1/collections/books/documents/p1").await["title"],
        "first poisoned"
    );
    assert_eq!(server.total("books", "id:p1").await, 1, "no duplicate");
    let depth_zero = eventually(DEADLINE, || async {
        dlq_depth(server, "books").await == Some(0.0)
    })
    .await;
    assert!(depth_zero, "depth drops with the replay");

    // The undecodable message cannot be replayed; the CLI says why, then purges it.
    let replay_out = cli(&["dlq", "replay", "--url", &server.base, "--all"]);
    assert!(
        replay_out.contains("replayed 0, failed 1") && replay_out.contains("not_replayable"),
        "{replay_out}"
    );
    assert_eq!(
        server.delete("/v1/dlq").await.status(),
        400,
        "purging everything is explicit"
    );
    let purge_out = cli(&[
        "dlq",
        "purge",
        "--url",
        &server.base,
        "--collection",
        "other",
    ]);
    assert_eq!(purge_out, "purged 1\n");
    let empty = server.get_json("/v1/dlq").await;
    assert_eq!(empty["entries"].as_array().unwrap().len(), 0);
    let depth_zero = eventually(DEADLINE, || async {
        dlq_depth(server, "other").await == Some(0.0)
    })
    .await;
    assert!(depth_zero, "depth drops with the purge");
    assert!(cli(&["dlq", "list", "--url", &server.base]).contains("0 entries shown"));
}

/// Requests each of the overload test's six producers sends.
const REQUESTS_PER_PRODUCER: usize = 300;

/// What one producer of the overload test saw.
#[derive(Default)]
struct Produced {
    /// Requests answered 200 (all their documents acknowledged).
    accepted: Vec<String>,
    overloaded: u64,
    sent_bytes: u64,
}

/// Sends `requests` requests of 1,000 documents (~600 KB) as fast as they are answered.
async fn produce(
    client: reqwest::Client,
    url: String,
    producer: usize,
    requests: usize,
) -> Produced {
    let filler = "lorem ipsum dolor sit amet ".repeat(20);
    let mut produced = Produced::default();
    for r in 0..requests {
        let body: String = (0..1000)
            .map(|i| {
                format!(
                    "{{\"id\":\"p{producer}-r{r}-{i}\",\"body\":\"{filler} w{producer}x{r}\"}}\n"
                )
            })
            .collect();
        produced.sent_bytes += body.len() as u64;
        let sent = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        // A request refused before its body was read may see its connection closed
        // under it: not acknowledged, so there is nothing to check.
        let Ok(response) = sent else { continue };
        match response.status().as_u16() {
            200 => {
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["accepted"], 1000);
                produced.accepted.push(format!("p{producer}-r{r}"));
            }
            429 => {
                assert!(
                    response.headers().get("retry-after").is_some(),
                    "429 without Retry-After"
                );
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["error"]["code"], "overloaded");
                produced.overloaded += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    produced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_backlog_limit_ingest_answers_429_loses_nothing_and_memory_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[ingest]\nmax_backlog_docs = 2000\n\n[indexer]\nwriter_memory = \"16MiB\"\ncommit_interval = \"200ms\"\n";
    let server = Server::start(&dir.path().join("data"), Some(config)).await;
    let schema = json!({"shards": 1, "fields": [{"name": "id", "type": "string"}, {"name": "body", "type": "text"}]});
    assert_eq!(server.put_schema("load", &schema).await.status(), 201);
    let baseline = server.rss_bytes();
    // Memory may grow by this much, plus what the accepted documents legitimately cost
    // while they sit in the log's and the store's memtables and the index writer (a few
    // times their size); the refused input is far more than the bound, so a queue
    // growing with the input would break it.
    let allowance = 200 * 1024 * 1024;
    const ACCEPTED_COST: u64 = 5;

    let url = server.url("/v1/collections/load/documents");
    let mut producers: Vec<_> = (0..6)
        .map(|p| {
            tokio::spawn(produce(
                server.client.clone(),
                url.clone(),
                p,
                REQUESTS_PER_PRODUCER,
            ))
        })
        .collect();
    let mut peak = baseline;
    let mut results = Vec::new();
    while !producers.is_empty() {
        peak = peak.max(server.rss_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (done, running): (Vec<_>, Vec<_>) =
            producers.into_iter().partition(|p| p.is_finished());
        for handle in done {
            results.push(handle.await.unwrap());
        }
        producers = running;
    }
    let accepted: Vec<String> = results.iter().flat_map(|r| r.accepted.clone()).collect();
    let overloaded: u64 = results.iter().map(|r| r.overloaded).sum();
    let sent: u64 = results.iter().map(|r| r.sent_bytes).sum();
    eprintln!(
        "overload: {} requests accepted, {overloaded} refused with 429, {sent} bytes sent, RSS {baseline} -> peak {peak}",
        accepted.len()
    );
    assert!(overloaded > 0, "some requests were refused with 429");
    assert!(!accepted.is_empty(), "some requests were accepted");
    let requests = (6 * REQUESTS_PER_PRODUCER) as u64;
    let accepted_bytes = sent / requests * accepted.len() as u64;
    let bound = allowance + ACCEPTED_COST * accepted_bytes;
    assert!(
        sent - accepted_bytes > bound,
        "the test refused only {} bytes, not more than the bound {bound}",
        sent - accepted_bytes
    );
    assert!(
        peak < baseline + bound,
        "RSS peaked at {peak} bytes from {baseline}, with {sent} bytes sent and {accepted_bytes} accepted"
    );

    // Nothing acknowledged is lost: every accepted request's documents become searchable.
    let expected = accepted.len() as u64 * 1000;
    let all_there = eventually(Duration::from_secs(60), || async {
        server.total("load", "*").await == expected
    })
    .await;
    assert!(
        all_there,
        "{expected} acknowledged documents searchable, found {}",
        server.total("load", "*").await
    );
    for request in accepted.iter().take(5) {
        let id = format!("{request}-999");
        let status = server
            .get(&format!("/v1/collections/load/documents/{id}"))
            .await
            .status();
        assert_eq!(status, 200, "{id}");
    }
    // Once the backlog drained, ingest is admitted again.
    let admitted = eventually(DEADLINE, || async {
        server
            .ingest("load", "{\"id\":\"after\",\"body\":\"x\"}\n", "durable")
            .await
            .0
            == 200
    })
    .await;
    assert!(admitted, "admitted again once drained");
}

/// A running node compacts the tombstones of deletes past `store.tombstone_retention`:
/// the compacted counter moves, one info line says so, and deleted documents stay
/// deleted while live ones stay readable and searchable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_compacts_tombstones_past_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let config = "[log]\nevents_max_age = \"1s\"\n\
                  [store]\ntombstone_retention = \"1s\"\ntombstone_compaction_interval = \"100ms\"\n";
    let server = Server::start_logging_to(&data_dir, Some(config), &log_path).await;
    let body: String = (0..5)
        .map(|i| format!("{{\"id\":\"d{i}\",\"title\":\"compaction\"}}\n"))
        .collect();
    let (status, answer) = server.ingest("trash", body, "searchable").await;
    assert_eq!(status, 200, "{answer}");
    for i in 0..3 {
        let status = server
            .delete(&format!(
                "/v1/collections/trash/documents/d{i}?wait=searchable"
            ))
            .await
            .status();
        assert!(status.is_success(), "delete d{i}: {status}");
    }

    let compacted = eventually(DEADLINE, || async {
        server
            .series(
                "sluice_store_tombstones_compacted_total",
                "collection=\"trash\"",
            )
            .await
            == Some(3.0)
    })
    .await;
    assert!(
        compacted,
        "three tombstones compacted, the counter shows {:?}",
        server
            .series(
                "sluice_store_tombstones_compacted_total",
                "collection=\"trash\"",
            )
            .await
    );
    // The index shards forget the three deletes too.
    let index_compacted = eventually(DEADLINE, || async {
        server
            .series(
                "sluice_indexer_tombstones_compacted_total",
                "collection=\"trash\"",
            )
            .await
            == Some(3.0)
    })
    .await;
    assert!(
        index_compacted,
        "three index tombstones compacted, the counter shows {:?}",
        server
            .series(
                "sluice_indexer_tombstones_compacted_total",
                "collection=\"trash\"",
            )
            .await
    );
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logged
            .lines()
            // Fields are coloured (`removed` and `=` apart), so look for the words.
            .any(|l| l.contains("INFO")
                && l.contains("tombstone compaction pass")
                && l.contains("removed")),
        "no info line for the pass in:\n{logged}"
    );
    for i in 0..3 {
        let path = format!("/v1/collections/trash/documents/d{i}");
        assert_eq!(server.get(&path).await.status(), 404, "{path}");
    }
    for i in 3..5 {
        let path = format!("/v1/collections/trash/documents/d{i}");
        assert_eq!(server.get(&path).await.status(), 200, "{path}");
    }
    assert_eq!(server.total("trash", "title:compaction").await, 2);
}
