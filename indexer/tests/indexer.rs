//! The indexer role end to end on the real embedded log and store: building from the
//! store, consuming events, the sequence guard across batches, acks after commits,
//! restart, schema-change rebuilds and collection deletion, and search fallbacks when
//! shards fail (partial and stale results).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_core::catalog::Catalog;
use sluice_core::config::{Config, IndexerConfig, LogConfig, TombstoneSchedule};
use sluice_core::document::ContentHash;
use sluice_core::faults::{FaultPlan, FaultPoint, Faults};
use sluice_core::log::{ConsumerConfig, Log, OutgoingMessage};
use sluice_core::op::{Event, EventBatch};
use sluice_core::schema::Schema;
use sluice_core::store::{Store, StoreWrite};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{CollectionName, DocId, Generation, Seq};
use sluice_indexer::{Indexer, SearchError, SearchRequest, SearchResponse};
use sluice_queue::EmbeddedLog;
use sluice_store::EmbeddedStore;
use tokio_util::sync::CancellationToken;

const SHARDS: u32 = 2;

struct Env {
    dir: tempfile::TempDir,
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    books: CollectionName,
    next_msg: std::sync::atomic::AtomicU64,
    /// The compaction schedule the indexer starts with (the defaults unless a test sets it).
    tombstones: TombstoneSchedule,
}

fn schema(extra_field: bool) -> Schema {
    let extra = if extra_field {
        r#",{"name":"genre","type":"keyword","required":false}"#
    } else {
        ""
    };
    let body = format!(
        r#"{{"shards":{SHARDS},"fields":[{{"name":"id","type":"string"}},{{"name":"title","type":"text"}},
        {{"name":"price","type":"i64","required":false}}{extra}]}}"#
    );
    Schema::from_json(body.as_bytes()).unwrap()
}

fn source(id: &str, title: &str) -> String {
    serde_json::json!({"id": id, "title": title}).to_string()
}

impl Env {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            EmbeddedLog::open(&dir.path().join("log"), &LogConfig::default()).unwrap();
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store")).unwrap();
        let catalog = Arc::new(Catalog::load(store.clone(), SHARDS).await.unwrap());
        Self {
            dir,
            log,
            store,
            catalog,
            books: CollectionName::new("books").unwrap(),
            next_msg: std::sync::atomic::AtomicU64::new(0),
            tombstones: Config::for_test("unused").store.tombstone_schedule(),
        }
    }

    fn config() -> IndexerConfig {
        Config::for_test("unused").indexer
    }

    async fn start(&self, shutdown: &CancellationToken) -> Arc<Indexer> {
        self.start_with(Self::config(), Faults::disabled(), shutdown)
            .await
    }

    async fn start_with(
        &self,
        config: IndexerConfig,
        faults: Arc<Faults>,
        shutdown: &CancellationToken,
    ) -> Arc<Indexer> {
        Indexer::start(
            config,
            self.tombstones,
            self.dir.path(),
            self.log.clone(),
            self.store.clone(),
            self.catalog.clone(),
            sluice_core::resilience::Breakers::new(
                &Default::default(),
                std::time::Duration::from_secs(5),
            ),
            faults,
            shutdown.clone(),
        )
        .await
        .unwrap()
    }

    fn index_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("index").join("books")
    }

    /// The generation of the collection's current incarnation, as workers write with.
    fn generation(&self) -> Generation {
        self.catalog
            .get(&self.books)
            .map_or(Generation::default(), |meta| meta.generation)
    }

    /// Writes the store only (as if the events had been consumed long ago).
    async fn store_only(&self, id: &str, seq: u64, title: &str) {
        let source = source(id, title);
        self.store
            .apply(
                &self.books,
                self.generation(),
                vec![StoreWrite::Upsert {
                    id: DocId::new(id).unwrap(),
                    seq: Seq(seq),
                    hash: ContentHash::of(source.as_bytes()),
                    source: Bytes::from(source),
                }],
            )
            .await
            .unwrap();
    }

    /// Does what a worker does: store write, then one EVENTS message. Returns its sequence.
    async fn publish(&self, event: Event) -> Seq {
        let write = match &event {
            Event::Upserted {
                id,
                seq,
                hash,
                source,
            } => StoreWrite::Upsert {
                id: id.clone(),
                seq: *seq,
                hash: *hash,
                source: source.clone(),
            },
            Event::Deleted { id, seq } => StoreWrite::Delete {
                id: id.clone(),
                seq: *seq,
            },
        };
        self.store
            .apply(&self.books, self.generation(), vec![write])
            .await
            .unwrap();
        let partition = event.id().partition(SHARDS);
        let batch = EventBatch {
            collection: self.books.clone(),
            partition,
            generation: self.generation(),
            events: vec![event],
        };
        let n = self
            .next_msg
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seqs = self
            .log
            .append(
                StreamKind::Events,
                vec![OutgoingMessage {
                    subject: subjects::events(&self.books, partition),
                    msg_id: format!("test-{n}"),
                    payload: batch.encode(),
                }],
            )
            .await
            .unwrap();
        seqs[0]
    }

    async fn wait_acked(&self, id: &str, seq: Seq) {
        let partition = DocId::new(id).unwrap().partition(SHARDS);
        let consumer = subjects::indexer_consumer(&self.books, partition);
        eventually("the consumer acks", || async {
            self.log
                .ack_floor(StreamKind::Events, &consumer)
                .await
                .unwrap()
                .is_some_and(|floor| floor >= seq)
        })
        .await;
    }
}

fn upsert(id: &str, seq: u64, title: &str) -> Event {
    let source = source(id, title);
    Event::Upserted {
        id: DocId::new(id).unwrap(),
        seq: Seq(seq),
        hash: ContentHash::of(source.as_bytes()),
        source: Bytes::from(source),
    }
}

fn query(q: &str) -> SearchRequest {
    SearchRequest {
        q: Some(q.to_owned()),
        limit: Some(100),
        ..SearchRequest::default()
    }
}

async fn search(indexer: &Indexer, request: SearchRequest) -> Result<SearchResponse, SearchError> {
    indexer
        .search(&CollectionName::new("books").unwrap(), &request)
        .await
}

async fn total(indexer: &Indexer, request: SearchRequest) -> u64 {
    search(indexer, request).await.unwrap().total
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(indexer: &Indexer, shutdown: &CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), indexer.wait_stopped())
        .await
        .expect("indexer stops in time");
}

fn built(dir: &Path) -> bool {
    dir.join(".built").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_from_the_store_consumes_events_and_survives_a_restart() {
    let env = Env::new().await;
    env.catalog
        .put_schema(&env.books, schema(false))
        .await
        .unwrap();
    for i in 0..5 {
        env.store_only(&format!("old-{i}"), i + 1, "stored before start")
            .await;
    }
    let shutdown = CancellationToken::new();
    let indexer = env.start(&shutdown).await;
    assert_eq!(
        total(&indexer, SearchRequest::default()).await,
        5,
        "built from the store"
    );
    assert!(built(&env.index_dir().join("v1")));

    for i in 0..10 {
        env.publish(upsert(&format!("new-{i}"), 100 + i, "fresh arrival"))
            .await;
    }
    eventually("new documents are searchable", || async {
        total(&indexer, query("fresh")).await == 10
    })
    .await;

    // A delete, then an older upsert of the same id in a later batch: it stays deleted.
    env.publish(Event::Deleted {
        id: DocId::new("new-0").unwrap(),
        seq: Seq(300),
    })
    .await;
    let last = env
        .publish(upsert("new-0", 200, "fresh resurrection"))
        .await;
    // And an update that wins over its older version.
    let update = env.publish(upsert("new-1", 400, "fresh rewrite")).await;
    env.wait_acked("new-0", last).await;
    env.wait_acked("new-1", update).await;
    // Acks come after the commit: everything acked is searchable.
    assert_eq!(total(&indexer, query("fresh")).await, 9);
    assert_eq!(total(&indexer, query("resurrection")).await, 0);
    assert_eq!(total(&indexer, query("rewrite")).await, 1);
    assert_eq!(total(&indexer, SearchRequest::default()).await, 14);

    stop(&indexer, &shutdown).await;
    drop(indexer);

    // Only in the store: a restart that rebuilt from the store would show it.
    env.store_only("store-only", 500, "never evented").await;
    let shutdown = CancellationToken::new();
    let indexer = env.start(&shutdown).await;
    assert_eq!(
        total(&indexer, SearchRequest::default()).await,
        14,
        "committed index reopened"
    );
    assert_eq!(total(&indexer, query("never")).await, 0);
    // Still consuming after the restart.
    env.publish(upsert("after-restart", 600, "fresh again"))
        .await;
    eventually("events after a restart are indexed", || async {
        total(&indexer, query("again")).await == 1
    })
    .await;
    stop(&indexer, &shutdown).await;
}

/// One writer slot for two shards, and writers that would stay open for an hour when
/// idle: each shard gets its turn because a holder gives its slot back as soon as its
/// changes are committed while the other waits. Every round of writes to both shards
/// becomes searchable.
/// Appends one DOCS message per name (payloads are never decoded here: only the workers'
/// ack floor over them matters); returns their sequences.
async fn docs_messages(env: &Env, names: &[&str]) -> Vec<Seq> {
    let messages = names
        .iter()
        .map(|name| OutgoingMessage {
            subject: subjects::docs(&env.books, sluice_core::Partition(0)),
            msg_id: format!("docs-{name}"),
            payload: Bytes::from_static(b"{}"),
        })
        .collect();
    env.log.append(StreamKind::Docs, messages).await.unwrap()
}

/// A delete's tombstone stays in its shard while an older op of its id can still arrive
/// (its DOCS message not yet acked by the workers, so its event may come after the
/// delete's, and is refused), and goes about one retention after the workers' ack floor
/// has passed the delete. Other documents are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_go_once_no_older_event_can_arrive() {
    let mut env = Env::new().await;
    env.tombstones = TombstoneSchedule {
        retention: Duration::from_millis(300),
        interval: Duration::from_millis(50),
    };
    env.catalog
        .put_schema(&env.books, schema(false))
        .await
        .unwrap();
    // The workers' view of DOCS: the first write of "gone" and of "kept", then an update
    // of "gone" still being worked on, then the delete of "gone".
    let docs = docs_messages(&env, &["first", "slow-update", "delete"]).await;
    let (first, slow_update, delete) = (docs[0], docs[1], docs[2]);
    let workers = env
        .log
        .consumer(
            StreamKind::Docs,
            ConsumerConfig {
                durable_name: subjects::WORKERS_CONSUMER.to_owned(),
                filter_subject: "sluice.docs.>".to_owned(),
                ack_wait: Duration::from_secs(600),
                max_ack_pending: 100,
            },
        )
        .await
        .unwrap();
    let delivered = workers.fetch(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(delivered.len(), 3);
    let settled: Vec<_> = delivered
        .iter()
        .filter(|delivery| delivery.seq != slow_update)
        .cloned()
        .collect();
    workers.ack(&settled).await.unwrap();
    let held_back: Vec<_> = delivered
        .into_iter()
        .filter(|delivery| delivery.seq == slow_update)
        .collect();

    let shutdown = CancellationToken::new();
    let indexer = env.start(&shutdown).await;
    env.publish(upsert("gone", first.for_op(0).0, "fresh original"))
        .await;
    env.publish(upsert("kept", first.for_op(1).0, "fresh survivor"))
        .await;
    let deleted = env
        .publish(Event::Deleted {
            id: DocId::new("gone").unwrap(),
            seq: delete.for_op(0),
        })
        .await;
    env.wait_acked("gone", deleted).await;
    assert_eq!(indexer.tombstones(&env.books), Some(1));

    // Many retentions later the tombstone is still there: the workers' floor is below
    // the delete. The slow update's event, appended after the delete's, is refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(indexer.tombstones(&env.books), Some(1));
    let late = env
        .publish(upsert("gone", slow_update.for_op(0).0, "fresh late"))
        .await;
    env.wait_acked("gone", late).await;
    assert_eq!(
        total(&indexer, query("late")).await,
        0,
        "refused by the tombstone"
    );

    // The workers settle the slow update: nothing older than the delete can come any more.
    workers.ack(&held_back).await.unwrap();
    eventually("the tombstone is compacted", || async {
        indexer.tombstones(&env.books) == Some(0)
    })
    .await;
    assert_eq!(total(&indexer, query("survivor")).await, 1);
    assert_eq!(total(&indexer, SearchRequest::default()).await, 1);
    // The tombstone is really gone: an op older than the delete, handed in again (what
    // only a dead-letter replay can still do, see the README), is indexed now.
    let replayed = env
        .publish(upsert("gone", slow_update.for_op(0).0, "fresh replayed"))
        .await;
    env.wait_acked("gone", replayed).await;
    eventually("the replayed op is searchable", || async {
        total(&indexer, query("replayed")).await == 1
    })
    .await;
    stop(&indexer, &shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_take_turns_when_writers_are_scarce() {
    let env = Env::new().await;
    env.catalog
        .put_schema(&env.books, schema(false))
        .await
        .unwrap();
    let config = IndexerConfig {
        max_open_writers: 1,
        writer_idle_timeout: Duration::from_secs(3600),
        ..Env::config()
    };
    let shutdown = CancellationToken::new();
    let indexer = env.start_with(config, Faults::disabled(), &shutdown).await;
    let mut seq = 0;
    for round in 1..=3u64 {
        for i in 0..8 {
            seq += 1;
            env.publish(upsert(&format!("r{round}-{i}"), seq, "scarce writers"))
                .await;
        }
        let partitions: std::collections::HashSet<_> = (0..8)
            .map(|i| {
                DocId::new(format!("r{round}-{i}"))
                    .unwrap()
                    .partition(SHARDS)
            })
            .collect();
        assert_eq!(
            partitions.len(),
            SHARDS as usize,
            "the round writes every shard"
        );
        eventually(&format!("round {round} is searchable"), || async {
            total(&indexer, query("scarce")).await == round * 8
        })
        .await;
    }
    stop(&indexer, &shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_creation_schema_changes_and_deletion() {
    let env = Env::new().await;
    let shutdown = CancellationToken::new();
    let indexer = env.start(&shutdown).await;
    assert!(matches!(
        search(&indexer, SearchRequest::default()).await,
        Err(SearchError::CollectionNotFound)
    ));

    // Created after start: shards open and consume.
    env.catalog
        .put_schema(&env.books, schema(false))
        .await
        .unwrap();
    eventually("the new collection is served", || async {
        search(&indexer, SearchRequest::default()).await.is_ok()
    })
    .await;
    for i in 0..6 {
        env.publish(upsert(&format!("doc-{i}"), 10 + i, "first version"))
            .await;
    }
    eventually("documents are indexed", || async {
        total(&indexer, query("first")).await == 6
    })
    .await;

    // A compatible schema change rebuilds the index at v2 from the store.
    let genre_filter = || SearchRequest {
        filter: vec!["genre:scifi".into()],
        ..SearchRequest::default()
    };
    assert!(matches!(
        search(&indexer, genre_filter()).await,
        Err(SearchError::InvalidQuery(_))
    ));
    env.catalog
        .put_schema(&env.books, schema(true))
        .await
        .unwrap();
    eventually("the rebuilt index is served", || async {
        search(&indexer, genre_filter()).await.is_ok()
    })
    .await;
    assert!(built(&env.index_dir().join("v2")));
    assert!(
        !env.index_dir().join("v1").exists(),
        "the old version is removed"
    );
    assert_eq!(
        total(&indexer, query("first")).await,
        6,
        "rebuilt from the store"
    );
    let source = serde_json::json!({"id": "doc-9", "title": "later", "genre": "scifi"}).to_string();
    env.publish(Event::Upserted {
        id: DocId::new("doc-9").unwrap(),
        seq: Seq(99),
        hash: ContentHash::of(source.as_bytes()),
        source: Bytes::from(source),
    })
    .await;
    eventually("the new field is filterable", || async {
        total(&indexer, genre_filter()).await == 1
    })
    .await;

    // Deletion drops shards, consumers and files.
    env.catalog.begin_delete(&env.books).await.unwrap();
    eventually("the collection is gone", || async {
        matches!(
            search(&indexer, SearchRequest::default()).await,
            Err(SearchError::CollectionNotFound)
        )
    })
    .await;
    eventually("its index directory is removed", || async {
        !env.index_dir().exists()
    })
    .await;
    for shard in 0..SHARDS {
        let consumer = subjects::indexer_consumer(&env.books, sluice_core::Partition(shard));
        eventually("its consumers are deleted", || async {
            env.log
                .ack_floor(StreamKind::Events, &consumer)
                .await
                .unwrap()
                .is_none()
        })
        .await;
    }
    stop(&indexer, &shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shards_give_partial_results_and_all_failing_serve_stale_ones() {
    let env = Env::new().await;
    env.catalog
        .put_schema(&env.books, schema(false))
        .await
        .unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("doc-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        env.store_only(id, i as u64 + 1, "common words").await;
    }
    let on_shard = |shard: u32| -> Vec<&String> {
        ids.iter()
            .filter(|id| DocId::new(id.as_str()).unwrap().partition(SHARDS).0 == shard)
            .collect()
    };
    assert!(!on_shard(0).is_empty() && !on_shard(1).is_empty());
    let mut config = Env::config();
    config.shard_search_timeout = Duration::from_millis(300);
    let faults = Faults::enabled();
    let shutdown = CancellationToken::new();
    let indexer = env.start_with(config, faults.clone(), &shutdown).await;
    let fail = |shards: Vec<u32>| FaultPlan {
        error_rate: 1.0,
        shards,
        ..FaultPlan::default()
    };
    let request = |limit: usize| SearchRequest {
        limit: Some(limit),
        ..query("words")
    };

    // Shard 1 fails: shard 0's results, flagged.
    faults
        .set(FaultPoint::IndexSearch, Some(fail(vec![1])))
        .unwrap();
    let partial = search(&indexer, request(50)).await.unwrap();
    assert!(partial.partial && !partial.stale);
    assert_eq!(partial.failed_shards, vec![1]);
    assert_eq!(partial.total, on_shard(0).len() as u64);
    assert!(partial
        .hits
        .iter()
        .all(|hit| on_shard(0).contains(&&hit.id)));
    let json = serde_json::to_value(&partial).unwrap();
    assert_eq!(json["partial"], true);
    assert_eq!(json["failed_shards"], serde_json::json!([1]));

    // A shard slower than shard_search_timeout is left out too.
    let slow = FaultPlan {
        latency: Duration::from_secs(30),
        shards: vec![0],
        ..FaultPlan::default()
    };
    faults.set(FaultPoint::IndexSearch, Some(slow)).unwrap();
    let partial = search(&indexer, request(40)).await.unwrap();
    assert_eq!(partial.failed_shards, vec![0]);
    assert_eq!(partial.total, on_shard(1).len() as u64);

    // Partial results were not cached: once the shards recover, the same request is whole.
    faults.set(FaultPoint::IndexSearch, None).unwrap();
    let whole = search(&indexer, request(50)).await.unwrap();
    assert!(!whole.partial && !whole.stale);
    assert_eq!(whole.total, 20);
    let json = serde_json::to_value(&whole).unwrap();
    assert!(json.get("partial").is_none() && json.get("stale").is_none());

    // A commit moves the generations on, then every shard fails: the last complete
    // result of the request is served, flagged stale; a request never answered whole
    // is unavailable.
    let seq = env.publish(upsert("late", 100, "common words")).await;
    env.wait_acked("late", seq).await;
    faults
        .set(FaultPoint::IndexSearch, Some(fail(Vec::new())))
        .unwrap();
    let stale = search(&indexer, request(50)).await.unwrap();
    assert!(stale.stale && !stale.partial);
    assert_eq!(stale.total, 20, "the result from before the commit");
    assert!(matches!(
        search(&indexer, request(7)).await,
        Err(SearchError::Unavailable(_))
    ));

    faults.set(FaultPoint::IndexSearch, None).unwrap();
    let fresh = search(&indexer, request(50)).await.unwrap();
    assert!(!fresh.stale);
    assert_eq!(fresh.total, 21);
    stop(&indexer, &shutdown).await;
}
