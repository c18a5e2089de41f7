//! End-to-end tests of the worker pool on both real logs: the embedded log and NATS
//! JetStream (a real nats-server per test, random port, temporary store).
//!
//! Every scenario is written once, as an `async fn(Backend)`, and [`on_both_logs!`] gives
//! it one `#[tokio::test]` per log (`embedded::<scenario>`, `jetstream::<scenario>`).
//! A [`Fixture`] opens the log for its backend (an `EmbeddedLog` in a temp dir, or a
//! `JetStreamLog` connected to its own `NatsServer`) and the real embedded store;
//! [`LogOpener`] opens further handles on the same log — on JetStream a new connection,
//! as another process would. Every test uses its own collection (suffixed by backend),
//! so tests run in parallel; counters are read through one process-wide recorder that
//! accumulates per label set. Faults are injected by [`FaultyStore`], a test-only
//! `Store` that wraps the real embedded store, and [`FlakyEventsLog`], which wraps the
//! real log. Waits poll with a deadline, never sleep blindly. A machine without
//! nats-server fails the JetStream tests with a message saying how to install it.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sluice_core::catalog::Catalog;
use sluice_core::config::{LogConfig, ResilienceConfig, StoreConfig, WorkersConfig};
use sluice_core::document::ContentHash;
use sluice_core::ids::{CollectionName, DocId, Generation, Partition, Seq};
use sluice_core::log::{Consumer, ConsumerConfig, Log, LogError, OutgoingMessage, StoredMessage};
use sluice_core::metrics::{
    DLQ_MESSAGES_TOTAL, STORE_TOMBSTONES_COMPACTED_TOTAL, WORKER_DEDUP_SKIPS_TOTAL,
    WORKER_OPS_TOTAL,
};
use sluice_core::op::{DocBatch, DocOp, Event, EventBatch};
use sluice_core::resilience::Breakers;
use sluice_core::schema::Schema;
use sluice_core::store::{
    CollectionMeta, CompactionPage, DefinitionKind, DocVersion, Store, StoreError, StoreWrite,
    StoredDoc, TombstoneHorizon, WriteOutcome,
};
use sluice_core::subjects::{self, StreamKind, WORKERS_CONSUMER};
use sluice_queue::testing::NatsServer;
use sluice_queue::{EmbeddedLog, JetStreamConfig, JetStreamLog};
use sluice_store::EmbeddedStore;
use sluice_workers::{DeadLetter, DeadLetterCode, TombstoneCompactor, WorkerPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);
/// Ack wait of the scenarios that never rely on redelivery after an ack timeout.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Ack wait of the scenario that does: short, so the test stays short.
const SHORT_ACK_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// metrics

/// A counter's name and its labels, sorted.
type CounterKey = (String, BTreeMap<String, String>);

struct Counters {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<CounterKey, u64>>,
}

fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        Counters {
            snapshotter,
            totals: Mutex::new(HashMap::new()),
        }
    })
}

/// The counter `name` with exactly `labels`, summed since the binary started. Snapshots
/// reset the recorder, so every read folds the deltas into one shared table.
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let counters = counters();
    let mut totals = counters.totals.lock().unwrap();
    for (key, _, _, value) in counters.snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(delta) = value {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            *totals.entry((key.name().to_owned(), labels)).or_default() += delta;
        }
    }
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    totals.get(&(name.to_owned(), wanted)).copied().unwrap_or(0)
}

fn ops_counter(collection: &CollectionName, outcome: &str) -> u64 {
    counter(
        WORKER_OPS_TOTAL,
        &[("collection", collection.as_str()), ("outcome", outcome)],
    )
}

// ---------------------------------------------------------------------------------------
// a store with injected faults

enum Fault {
    None,
    /// Every apply that writes this id fails permanently.
    PermanentFor(DocId),
    /// The first n applies fail transiently.
    TransientFirst(AtomicU32),
    /// Applies that write `held` fail transiently until a write of `releaser` succeeded.
    HoldUntilApplied {
        held: ContentHash,
        releaser: ContentHash,
        released: AtomicBool,
    },
    /// Applies wait until the gate opens; `entered` counts those that reached it.
    Gate {
        open: watch::Receiver<bool>,
        entered: AtomicUsize,
    },
    /// Applies are written, counted, then never return: a process that died after its
    /// store write and before its event append and ack.
    StallAfterWrite,
    /// Every apply takes this long before it writes: a slow store.
    Slow(Duration),
    /// While set, every apply, version lookup and catalog listing fails transiently (the
    /// store is down); `refused` counts them.
    Down {
        down: AtomicBool,
        refused: AtomicUsize,
    },
}

impl Fault {
    /// `Err` while the store is down.
    fn check_down(&self) -> Result<(), StoreError> {
        if let Fault::Down { down, refused } = self {
            if down.load(Ordering::SeqCst) {
                refused.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::Unavailable("injected outage".into()));
            }
        }
        Ok(())
    }
}

struct FaultyStore {
    inner: Arc<EmbeddedStore>,
    fault: Fault,
    applies: AtomicUsize,
}

fn write_hash(write: &StoreWrite) -> Option<ContentHash> {
    match write {
        StoreWrite::Upsert { hash, .. } => Some(*hash),
        StoreWrite::Delete { .. } => None,
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: Vec<StoreWrite>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.fault.check_down()?;
        match &self.fault {
            Fault::None | Fault::StallAfterWrite | Fault::Down { .. } => {}
            Fault::Slow(delay) => tokio::time::sleep(*delay).await,
            Fault::PermanentFor(id) => {
                if writes.iter().any(|w| w.id() == id) {
                    return Err(StoreError::Rejected("injected permanent failure".into()));
                }
            }
            Fault::TransientFirst(left) => {
                let failing = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return Err(StoreError::Unavailable("injected outage".into()));
                }
            }
            Fault::HoldUntilApplied { held, released, .. } => {
                let holds = writes.iter().any(|w| write_hash(w) == Some(*held));
                if holds && !released.load(Ordering::SeqCst) {
                    return Err(StoreError::Unavailable("held back by the test".into()));
                }
            }
            Fault::Gate { open, entered } => {
                entered.fetch_add(1, Ordering::SeqCst);
                let mut open = open.clone();
                open.wait_for(|open| *open)
                    .await
                    .map_err(|_| StoreError::Unavailable("gate dropped".into()))?;
            }
        }
        let releases = match &self.fault {
            Fault::HoldUntilApplied { releaser, .. } => {
                writes.iter().any(|w| write_hash(w) == Some(*releaser))
            }
            _ => false,
        };
        let outcomes = self.inner.apply(collection, generation, writes).await?;
        self.applies.fetch_add(1, Ordering::SeqCst);
        if let (true, Fault::HoldUntilApplied { released, .. }) = (releases, &self.fault) {
            released.store(true, Ordering::SeqCst);
        }
        if matches!(self.fault, Fault::StallAfterWrite) {
            std::future::pending::<()>().await;
        }
        Ok(outcomes)
    }

    async fn get(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<StoredDoc>, StoreError> {
        self.inner.get(collection, id).await
    }

    async fn versions(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError> {
        self.fault.check_down()?;
        self.inner.versions(collection, ids).await
    }

    async fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        self.inner.scan(collection, after, limit).await
    }

    async fn compact_tombstones(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError> {
        self.inner
            .compact_tombstones(collection, horizon, after, limit)
            .await
    }

    async fn drop_documents(&self, collection: &CollectionName) -> Result<(), StoreError> {
        self.inner.drop_documents(collection).await
    }

    async fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError> {
        self.inner.put_collection(meta).await
    }

    async fn get_collection(
        &self,
        collection: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        self.inner.get_collection(collection).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        self.fault.check_down()?;
        self.inner.list_collections().await
    }

    async fn delete_collection(&self, collection: &CollectionName) -> Result<(), StoreError> {
        self.inner.delete_collection(collection).await
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

// ---------------------------------------------------------------------------------------
// a log (either backend) whose EVENTS appends fail for a while

struct FlakyEventsLog {
    inner: Arc<dyn Log>,
    failing_event_appends: AtomicU32,
}

#[async_trait]
impl Log for FlakyEventsLog {
    async fn append(
        &self,
        stream: StreamKind,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Seq>, LogError> {
        let failing = stream == StreamKind::Events
            && self
                .failing_event_appends
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if failing {
            return Err(LogError::Unavailable("injected outage".into()));
        }
        self.inner.append(stream, messages).await
    }

    async fn consumer(
        &self,
        stream: StreamKind,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, LogError> {
        self.inner.consumer(stream, config).await
    }

    async fn ack_floor(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<Option<Seq>, LogError> {
        self.inner.ack_floor(stream, durable_name).await
    }

    async fn last_seq(&self, stream: StreamKind) -> Result<Seq, LogError> {
        self.inner.last_seq(stream).await
    }

    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: Seq,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError> {
        self.inner.read(stream, filter, from, max).await
    }

    async fn purge(&self, stream: StreamKind, filter: &str) -> Result<u64, LogError> {
        self.inner.purge(stream, filter).await
    }

    async fn delete_message(&self, stream: StreamKind, seq: Seq) -> Result<bool, LogError> {
        self.inner.delete_message(stream, seq).await
    }

    async fn delete_consumer(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<(), LogError> {
        self.inner.delete_consumer(stream, durable_name).await
    }
}

// ---------------------------------------------------------------------------------------
// fixture: one scenario, either log

/// Which log a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// `EmbeddedLog` in a temp dir.
    Embedded,
    /// `JetStreamLog` on a fresh `NatsServer`.
    JetStream,
}

impl Backend {
    /// Suffix of the test's collection, so both runs of a scenario count apart.
    fn tag(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::JetStream => "jetstream",
        }
    }
}

/// Opens a handle on the fixture's log; `Send + 'static`, so another runtime (another
/// "process") can open its own.
#[derive(Clone)]
enum LogOpener {
    /// The embedded log lives in one process: every handle is the same log.
    Embedded(Arc<EmbeddedLog>),
    /// A new connection to this server URL.
    JetStream(String),
}

impl LogOpener {
    async fn open(self) -> Arc<dyn Log> {
        match self {
            LogOpener::Embedded(log) => log,
            LogOpener::JetStream(url) => {
                let config = JetStreamConfig {
                    publish_timeout: Duration::from_secs(2),
                    ..JetStreamConfig::new(url)
                };
                JetStreamLog::connect(config)
                    .await
                    .expect("connect to the test nats-server")
            }
        }
    }
}

/// What the JetStream server itself counts for the `workers` consumer.
#[derive(Debug)]
struct ServerConsumerState {
    /// Deliveries made, redeliveries included.
    deliveries: u64,
    /// Delivered and not yet acked.
    ack_pending: usize,
    /// Not delivered yet.
    pending: u64,
}

struct Fixture {
    /// The fixture's own handle: appends and reads (and the pools' unless told otherwise).
    log: Arc<dyn Log>,
    opener: LogOpener,
    /// Kept so the server lives as long as the test; killed on drop.
    _server: Option<NatsServer>,
    store: Arc<FaultyStore>,
    collection: CollectionName,
    next_msg_id: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A fresh log of `backend` and a fresh store; the collection is `{name}-{backend}`.
    async fn new(backend: Backend, name: &str, fault: Fault) -> Self {
        counters();
        let dir = tempfile::tempdir().unwrap();
        let (opener, server) = match backend {
            Backend::Embedded => {
                let log =
                    EmbeddedLog::open(&dir.path().join("log"), &LogConfig::default()).unwrap();
                (LogOpener::Embedded(log), None)
            }
            Backend::JetStream => {
                let server = NatsServer::start();
                (LogOpener::JetStream(server.url()), Some(server))
            }
        };
        let log = opener.clone().open().await;
        let inner = EmbeddedStore::open(&dir.path().join("store")).unwrap();
        Self {
            log,
            opener,
            _server: server,
            store: Arc::new(FaultyStore {
                inner,
                fault,
                applies: AtomicUsize::new(0),
            }),
            collection: CollectionName::new(format!("{name}-{}", backend.tag())).unwrap(),
            next_msg_id: AtomicU32::new(0),
            _dir: dir,
        }
    }

    /// Another handle on the same log: on JetStream, its own connection.
    async fn connect(&self) -> Arc<dyn Log> {
        self.opener.clone().open().await
    }

    /// A store with `fault` over the same real store (another process's view of it).
    fn store_with(&self, fault: Fault) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner: self.store.inner.clone(),
            fault,
            applies: AtomicUsize::new(0),
        })
    }

    async fn start_pool(&self, config: WorkersConfig, shutdown: &CancellationToken) -> WorkerPool {
        self.start_pool_on(self.log.clone(), config, shutdown).await
    }

    async fn start_pool_on(
        &self,
        log: Arc<dyn Log>,
        config: WorkersConfig,
        shutdown: &CancellationToken,
    ) -> WorkerPool {
        start_pool(log, self.store.clone(), config, ACK_WAIT, shutdown.clone()).await
    }

    /// Appends one DOCS message like ingest does; returns its sequence.
    async fn append(&self, partition: u32, ops: Vec<DocOp>) -> Seq {
        let batch = DocBatch {
            collection: self.collection.clone(),
            partition: Partition(partition),
            generation: Default::default(),
            ops,
        };
        self.append_raw(partition, batch.encode()).await
    }

    async fn append_raw(&self, partition: u32, payload: Bytes) -> Seq {
        let n = self.next_msg_id.fetch_add(1, Ordering::SeqCst);
        let message = OutgoingMessage {
            subject: subjects::docs(&self.collection, Partition(partition)),
            msg_id: format!("test-{}-{n}", self.collection),
            payload,
        };
        self.log
            .append(StreamKind::Docs, vec![message])
            .await
            .unwrap()[0]
    }

    /// Waits until the workers acked every DOCS message up to `seq`.
    async fn wait_acked(&self, seq: Seq) {
        let log = self.log.clone();
        wait_until("DOCS acked", || {
            let log = log.clone();
            async move {
                log.ack_floor(StreamKind::Docs, WORKERS_CONSUMER)
                    .await
                    .unwrap()
                    .is_some_and(|floor| floor >= seq)
            }
        })
        .await;
    }

    async fn events(&self) -> Vec<Event> {
        let messages = self
            .log
            .read(
                StreamKind::Events,
                &subjects::events_of_collection(&self.collection),
                Seq(0),
                100_000,
            )
            .await
            .unwrap();
        messages
            .iter()
            .flat_map(|m| EventBatch::decode(&m.payload).unwrap().events)
            .collect()
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.log
            .read(
                StreamKind::Dlq,
                &subjects::dlq(&self.collection),
                Seq(0),
                10_000,
            )
            .await
            .unwrap()
            .iter()
            .map(|m| DeadLetter::decode(&m.payload).unwrap())
            .collect()
    }

    async fn stored(&self, id: &str) -> Option<StoredDoc> {
        self.store
            .get(&self.collection, &DocId::new(id).unwrap())
            .await
            .unwrap()
    }

    async fn wait_events(&self, count: usize) -> Vec<Event> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.events().await;
            if events.len() >= count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} events, have {}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `workers` consumer as the JetStream server counts it; `None` on the embedded log.
    async fn server_consumer_state(&self) -> Option<ServerConsumerState> {
        let LogOpener::JetStream(url) = &self.opener else {
            return None;
        };
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let info = async_nats::jetstream::new(client)
            .get_stream(StreamKind::Docs.name())
            .await
            .unwrap()
            .consumer_info(WORKERS_CONSUMER)
            .await
            .unwrap();
        Some(ServerConsumerState {
            deliveries: info.delivered.consumer_sequence,
            ack_pending: info.num_ack_pending,
            pending: info.num_pending,
        })
    }
}

async fn start_pool(
    log: Arc<dyn Log>,
    store: Arc<FaultyStore>,
    config: WorkersConfig,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> WorkerPool {
    let breakers = test_breakers();
    // The catalog loads from the store before any fault applies.
    let catalog_store: Arc<dyn Store> = store.inner.clone();
    let catalog = Arc::new(Catalog::load(catalog_store, 1).await.unwrap());
    // Wired as the binary wires a node: log and store behind the node's breakers.
    let store = sluice_store::GuardedStore::new(store, breakers.store.clone());
    let log = sluice_queue::GuardedLog::new(
        log,
        breakers.log_publish.clone(),
        breakers.log_consume.clone(),
    );
    WorkerPool::start(config, ack_wait, log, store, catalog, breakers, shutdown)
        .await
        .unwrap()
}

/// The breakers of one test node: the defaults, with short open delays so a test that
/// trips one recovers quickly.
fn test_breakers() -> Breakers {
    let config = ResilienceConfig {
        breaker_open_initial: Duration::from_millis(100),
        breaker_open_max: Duration::from_millis(500),
        ..ResilienceConfig::default()
    };
    Breakers::new(&config, Duration::from_secs(5))
}

async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(workers: usize) -> WorkersConfig {
    WorkersConfig {
        count: workers,
        fetch_batch: 8,
        max_ack_pending: 64,
        dedup_cache_entries: 10_000,
        max_deliver: 3,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
    }
}

fn upsert(id: &str, body: &str) -> DocOp {
    let source = format!(r#"{{"body":"{body}","id":"{id}"}}"#);
    DocOp::Upsert {
        id: DocId::new(id).unwrap(),
        hash: ContentHash::of(source.as_bytes()),
        source: Bytes::from(source),
    }
}

fn delete(id: &str) -> DocOp {
    DocOp::Delete {
        id: DocId::new(id).unwrap(),
    }
}

async fn stop(shutdown: CancellationToken, pools: Vec<WorkerPool>) {
    shutdown.cancel();
    for pool in pools {
        tokio::time::timeout(Duration::from_secs(10), pool.wait_stopped())
            .await
            .expect("pool stops promptly");
    }
}

// ---------------------------------------------------------------------------------------
// tests

async fn applies_ops_publishes_events_and_skips_unchanged_content(backend: Backend) {
    let fx = Fixture::new(backend, "apply-dedup", Fault::None).await;
    let shutdown = CancellationToken::new();
    let pool = fx.start_pool(config(2), &shutdown).await;

    let first = fx
        .append(
            0,
            vec![upsert("a", "1"), upsert("b", "1"), upsert("c", "1")],
        )
        .await;
    let second = fx.append(1, vec![upsert("d", "1"), delete("e")]).await;
    let events = fx.wait_events(5).await;
    fx.wait_acked(second).await;
    assert_eq!(events.len(), 5, "one event per applied change");
    let a = fx.stored("a").await.expect("a stored");
    assert_eq!(a.seq, first.for_op(0));
    assert_eq!(a.source.as_deref(), Some(&br#"{"body":"1","id":"a"}"#[..]));
    assert_eq!(fx.stored("d").await.unwrap().seq, second.for_op(0));
    assert!(events.contains(&Event::Deleted {
        id: DocId::new("e").unwrap(),
        seq: second.for_op(1),
    }));
    assert_eq!(ops_counter(&fx.collection, "applied"), 5);

    // The same content again: no store write, no event, counted as a dedup skip.
    let applies_before = fx.store.applies.load(Ordering::SeqCst);
    let skips_before = counter(
        WORKER_DEDUP_SKIPS_TOTAL,
        &[("collection", fx.collection.as_str())],
    );
    let again = fx
        .append(
            0,
            vec![upsert("a", "1"), upsert("b", "1"), upsert("c", "1")],
        )
        .await;
    fx.wait_acked(again).await;
    assert_eq!(fx.events().await.len(), 5, "no event for unchanged content");
    assert_eq!(fx.store.applies.load(Ordering::SeqCst), applies_before);
    assert_eq!(fx.stored("a").await.unwrap().seq, first.for_op(0));
    let skips = counter(
        WORKER_DEDUP_SKIPS_TOTAL,
        &[("collection", fx.collection.as_str())],
    );
    assert_eq!(skips - skips_before, 3);
    assert_eq!(ops_counter(&fx.collection, "unchanged"), 3);

    // An update and a repeated id within one message resolve in op order.
    let update = fx
        .append(
            0,
            vec![upsert("a", "2"), upsert("b", "1"), upsert("a", "3")],
        )
        .await;
    let events = fx.wait_events(7).await;
    fx.wait_acked(update).await;
    assert_eq!(events.len(), 7);
    let a = fx.stored("a").await.unwrap();
    assert_eq!(a.seq, update.for_op(2));
    assert_eq!(a.source.as_deref(), Some(&br#"{"body":"3","id":"a"}"#[..]));
    assert!(events.iter().any(|e| e.seq() == update.for_op(0)));
    assert!(events.iter().any(|e| e.seq() == update.for_op(2)));

    stop(shutdown, vec![pool]).await;
}

async fn an_older_op_delivered_after_a_newer_one_is_stale(backend: Backend) {
    let old = upsert("x", "old");
    let new = upsert("x", "new");
    let hash_of = |op: &DocOp| match op {
        DocOp::Upsert { hash, .. } => *hash,
        _ => unreachable!("the test builds upserts"),
    };
    // The older write is held back (transient failures) until the newer one is stored,
    // so the older op reaches the store after the newer one, as after a redelivery.
    let fx = Fixture::new(
        backend,
        "out-of-order",
        Fault::HoldUntilApplied {
            held: hash_of(&old),
            releaser: hash_of(&new),
            released: AtomicBool::new(false),
        },
    )
    .await;
    let shutdown = CancellationToken::new();
    let mut workers = config(2);
    workers.fetch_batch = 1;
    let pool = fx.start_pool(workers, &shutdown).await;

    let older = fx.append(0, vec![old]).await;
    let newer = fx.append(0, vec![new]).await;
    fx.wait_acked(newer).await;
    assert!(older < newer);

    let x = fx.stored("x").await.unwrap();
    assert_eq!(x.seq, newer.for_op(0), "the store keeps the newer version");
    assert_eq!(
        x.source.as_deref(),
        Some(&br#"{"body":"new","id":"x"}"#[..])
    );
    let events = fx.events().await;
    assert_eq!(events.len(), 1, "no event for the stale op: {events:?}");
    assert_eq!(events[0].seq(), newer.for_op(0));
    assert_eq!(ops_counter(&fx.collection, "stale"), 1);
    assert_eq!(ops_counter(&fx.collection, "applied"), 1);

    stop(shutdown, vec![pool]).await;
}

async fn a_poison_op_is_dead_lettered_and_its_batch_mates_are_applied(backend: Backend) {
    let fx = Fixture::new(
        backend,
        "poison",
        Fault::PermanentFor(DocId::new("poison").unwrap()),
    )
    .await;
    let shutdown = CancellationToken::new();
    let workers = config(2);
    let max_deliver = workers.max_deliver;
    let pool = fx.start_pool(workers, &shutdown).await;

    let seq = fx
        .append(
            0,
            vec![upsert("a", "1"), upsert("poison", "1"), upsert("b", "1")],
        )
        .await;
    fx.wait_acked(seq).await;

    let dead = fx.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let record = &dead[0];
    assert_eq!(record.id.as_ref().map(DocId::as_str), Some("poison"));
    assert_eq!(record.seq, seq.for_op(1));
    assert_eq!(record.code, DeadLetterCode::StoreRejected);
    assert_eq!(record.attempts, max_deliver);
    assert_eq!(record.op["body"], "1");
    assert!(record.message.contains("injected permanent failure"));
    assert!(record.first_failure_ms <= record.last_failure_ms);
    assert!(record.first_failure_ms > 0);

    assert!(fx.stored("a").await.is_some());
    assert!(fx.stored("b").await.is_some());
    assert!(fx.stored("poison").await.is_none());
    let events = fx.events().await;
    let mut seqs: Vec<Seq> = events.iter().map(Event::seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        vec![seq.for_op(0), seq.for_op(2)],
        "each batch-mate published once, across redeliveries"
    );
    assert_eq!(
        counter(
            DLQ_MESSAGES_TOTAL,
            &[("collection", fx.collection.as_str())]
        ),
        1
    );
    assert_eq!(ops_counter(&fx.collection, "dead_lettered"), 1);
    assert_eq!(ops_counter(&fx.collection, "applied"), 2);

    stop(shutdown, vec![pool]).await;
}

async fn transient_failures_are_retried_until_applied(backend: Backend) {
    let fx = Fixture::new(
        backend,
        "transient",
        Fault::TransientFirst(AtomicU32::new(4)),
    )
    .await;
    let shutdown = CancellationToken::new();
    let pool = fx.start_pool(config(1), &shutdown).await;

    let seq = fx.append(0, vec![upsert("a", "1"), delete("b")]).await;
    fx.wait_acked(seq).await;
    assert!(fx.stored("a").await.is_some());
    assert_eq!(fx.events().await.len(), 2);
    assert!(fx.dead_letters().await.is_empty());
    assert_eq!(ops_counter(&fx.collection, "applied"), 2);
    assert_eq!(ops_counter(&fx.collection, "dead_lettered"), 0);

    stop(shutdown, vec![pool]).await;
}

/// A store outage longer than `ack_wait × max_deliver`: the pool stops pulling (no busy
/// loop of deliveries or store calls), nothing goes to the DLQ, and once the store is
/// back every op is applied.
async fn a_long_store_outage_pauses_the_pool_and_dead_letters_nothing(backend: Backend) {
    let fault = Fault::Down {
        down: AtomicBool::new(true),
        refused: AtomicUsize::new(0),
    };
    let fx = Fixture::new(backend, "outage", fault).await;
    let shutdown = CancellationToken::new();
    let ack_wait = Duration::from_secs(1);
    let config = WorkersConfig {
        max_deliver: 2,
        ..config(2)
    };
    let pool = start_pool(
        fx.log.clone(),
        fx.store.clone(),
        config,
        ack_wait,
        shutdown.clone(),
    )
    .await;
    let mut last = Seq(0);
    for n in 0..4 {
        last = fx
            .append(n % 2, vec![upsert(&format!("d{n}"), "1"), delete("gone")])
            .await;
    }
    let Fault::Down { down, refused } = &fx.store.fault else {
        unreachable!()
    };
    wait_until("the store refusing calls", || async {
        refused.load(Ordering::SeqCst) > 0
    })
    .await;
    // The outage outlasts every delivery the messages have (with 1 s spare).
    tokio::time::sleep(ack_wait * 3).await;
    let refused_during_outage = refused.load(Ordering::SeqCst);
    assert!(
        refused_during_outage < 200,
        "{refused_during_outage} store calls during a 3 s outage: the pool is not paused"
    );
    down.store(false, Ordering::SeqCst);

    fx.wait_acked(last).await;
    assert!(fx.dead_letters().await.is_empty());
    assert_eq!(ops_counter(&fx.collection, "dead_lettered"), 0);
    for n in 0..4 {
        assert!(fx.stored(&format!("d{n}")).await.is_some(), "d{n}");
    }
    stop(shutdown, vec![pool]).await;
}

/// A batch that takes many ack waits to work through (a slow store): the messages waiting
/// their turn are reported in progress, so none is delivered a second time, none is spent
/// against `max_deliver` and none reaches the DLQ.
async fn a_slow_batch_is_not_redelivered_while_it_is_worked_through(backend: Backend) {
    const MESSAGES: u32 = 6;
    let apply_time = Duration::from_millis(400);
    let fx = Fixture::new(backend, "slowbatch", Fault::Slow(apply_time)).await;
    let shutdown = CancellationToken::new();
    // The last message of the batch waits 5 × 400 ms = 2 s: four ack waits. The second
    // worker fetches meanwhile, and would be handed any message whose ack wait expired.
    let ack_wait = Duration::from_millis(500);
    let config = WorkersConfig {
        max_deliver: 2,
        ..config(2)
    };
    let mut last = Seq(0);
    for n in 0..MESSAGES {
        last = fx.append(0, vec![upsert(&format!("s{n}"), "1")]).await;
    }
    let pool = start_pool(
        fx.log.clone(),
        fx.store.clone(),
        config,
        ack_wait,
        shutdown.clone(),
    )
    .await;
    fx.wait_acked(last).await;
    assert!(fx.dead_letters().await.is_empty(), "nothing dead-lettered");
    assert_eq!(ops_counter(&fx.collection, "applied"), u64::from(MESSAGES));
    for outcome in ["unchanged", "deduplicated"] {
        assert_eq!(
            ops_counter(&fx.collection, outcome),
            0,
            "{outcome}: no message was delivered again and found already applied"
        );
    }
    assert_eq!(
        fx.store.applies.load(Ordering::SeqCst),
        MESSAGES as usize,
        "one store write per message"
    );
    if let Some(state) = fx.server_consumer_state().await {
        assert_eq!(
            state.deliveries,
            u64::from(MESSAGES),
            "each message delivered once: {state:?}"
        );
    }
    stop(shutdown, vec![pool]).await;
}

async fn an_undecodable_message_is_dead_lettered(backend: Backend) {
    let fx = Fixture::new(backend, "malformed", Fault::None).await;
    let shutdown = CancellationToken::new();
    let pool = fx.start_pool(config(1), &shutdown).await;

    let bad = fx.append_raw(0, Bytes::from_static(b"\xff\xff\xff")).await;
    let good = fx.append(0, vec![upsert("a", "1")]).await;
    fx.wait_acked(good).await;
    let dead = fx.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, DeadLetterCode::MalformedMessage);
    assert_eq!(dead[0].seq, bad);
    assert_eq!(dead[0].raw_message_hex.as_deref(), Some("ffffff"));
    assert!(fx.stored("a").await.is_some());

    stop(shutdown, vec![pool]).await;
}

async fn shutdown_finishes_and_acks_the_message_in_hand(backend: Backend) {
    let (open_gate, gate) = watch::channel(false);
    let fx = Fixture::new(
        backend,
        "shutdown",
        Fault::Gate {
            open: gate,
            entered: AtomicUsize::new(0),
        },
    )
    .await;
    let shutdown = CancellationToken::new();
    let pool = fx.start_pool(config(1), &shutdown).await;

    let seq = fx.append(0, vec![upsert("a", "1"), upsert("b", "1")]).await;
    let store = fx.store.clone();
    wait_until("a write in flight", || {
        let store = store.clone();
        async move {
            match &store.fault {
                Fault::Gate { entered, .. } => entered.load(Ordering::SeqCst) > 0,
                _ => false,
            }
        }
    })
    .await;
    shutdown.cancel();
    open_gate.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), pool.wait_stopped())
        .await
        .expect("pool stops once its message is done");

    assert!(fx.stored("a").await.is_some());
    assert!(fx.stored("b").await.is_some());
    assert_eq!(fx.events().await.len(), 2);
    let floor = fx
        .log
        .ack_floor(StreamKind::Docs, WORKERS_CONSUMER)
        .await
        .unwrap();
    assert!(floor.is_some_and(|f| f >= seq), "acked before stopping");
}

async fn two_pools_share_the_consumer_and_apply_every_op_once(backend: Backend) {
    let fx = Fixture::new(backend, "two-pools", Fault::None).await;
    let shutdown = CancellationToken::new();
    // Each pool on its own handle: on JetStream two connections, as two processes.
    let first = fx
        .start_pool_on(fx.connect().await, config(2), &shutdown)
        .await;
    let second = fx
        .start_pool_on(fx.connect().await, config(2), &shutdown)
        .await;

    const MESSAGES: usize = 40;
    const OPS: usize = 5;
    let mut last = Seq(0);
    for m in 0..MESSAGES {
        let ops = (0..OPS)
            .map(|i| upsert(&format!("doc-{m}-{i}"), "v1"))
            .collect();
        last = fx.append((m % 2) as u32, ops).await;
    }
    fx.wait_acked(last).await;
    let events = fx.events().await;
    assert_eq!(events.len(), MESSAGES * OPS, "one event per op, none twice");
    let mut ids: Vec<&str> = events.iter().map(|e| e.id().as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES * OPS);
    assert_eq!(
        ops_counter(&fx.collection, "applied"),
        (MESSAGES * OPS) as u64
    );
    let stored = fx.store.scan(&fx.collection, None, 10_000).await.unwrap();
    assert_eq!(stored.len(), MESSAGES * OPS);

    stop(shutdown, vec![first, second]).await;
}

async fn events_are_not_lost_when_their_append_fails_after_the_write(backend: Backend) {
    for (collection, failing_appends) in [("events-retried", 2), ("events-redelivered", 1_000)] {
        let fx = Fixture::new(backend, collection, Fault::None).await;
        let log = Arc::new(FlakyEventsLog {
            inner: fx.log.clone(),
            failing_event_appends: AtomicU32::new(failing_appends),
        });
        let shutdown = CancellationToken::new();
        let pool = fx.start_pool_on(log.clone(), config(1), &shutdown).await;

        let seq = fx.append(0, vec![upsert("a", "1"), delete("b")]).await;
        if failing_appends > 2 {
            // Outlast the in-place retries so the message is nak'ed and redelivered.
            let collection = fx.collection.clone();
            wait_until("a nak", || {
                let collection = collection.clone();
                async move { ops_counter(&collection, "failed") > 0 }
            })
            .await;
            assert!(fx.stored("a").await.is_some(), "written before the nak");
            log.failing_event_appends.store(0, Ordering::SeqCst);
        }
        fx.wait_acked(seq).await;
        let events = fx.events().await;
        assert_eq!(events.len(), 2, "{collection}: {events:?}");
        assert_eq!(
            fx.store.applies.load(Ordering::SeqCst),
            1,
            "{collection}: the store is written once"
        );
        assert!(fx.dead_letters().await.is_empty());
        stop(shutdown, vec![pool]).await;
    }
}

/// A pool whose process dies holding messages (one written to the store, none acked)
/// leaves them to the surviving pool, which gets them again after ack_wait: every op
/// ends up written exactly once and published, nothing is dead-lettered.
///
/// The dying pool runs in its own runtime on its own log handle (on JetStream its own
/// connection, opened in that runtime); "dying" is shutting that runtime down, which
/// drops its tasks mid-write and, on JetStream, closes its connection — what the server
/// sees of a killed process.
async fn a_dead_pools_messages_are_redelivered_to_another_pool(backend: Backend) {
    const MESSAGES: usize = 5;
    const OPS: usize = 3;
    let fx = Fixture::new(backend, "dead-pool", Fault::None).await;
    // Appended before the dying pool starts, so its first fetch takes all of them.
    let mut seqs = Vec::with_capacity(MESSAGES);
    for m in 0..MESSAGES {
        let ops = (0..OPS)
            .map(|i| upsert(&format!("doc-{m}-{i}"), "v1"))
            .collect();
        seqs.push(fx.append((m % 2) as u32, ops).await);
    }
    let last = seqs[MESSAGES - 1];

    let dying_process = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dying_store = fx.store_with(Fault::StallAfterWrite);
    let mut dying_config = config(1);
    dying_config.fetch_batch = MESSAGES;
    let dying_pool = dying_process
        .spawn({
            let opener = fx.opener.clone();
            let store = dying_store.clone();
            async move {
                let log = opener.open().await;
                start_pool(
                    log,
                    store,
                    dying_config,
                    SHORT_ACK_WAIT,
                    CancellationToken::new(),
                )
                .await
            }
        })
        .await
        .unwrap();
    let store = dying_store.clone();
    wait_until("the dying pool's first write", || {
        let store = store.clone();
        async move { store.applies.load(Ordering::SeqCst) > 0 }
    })
    .await;
    if let Some(state) = fx.server_consumer_state().await {
        assert_eq!(
            (state.ack_pending, state.pending),
            (MESSAGES, 0),
            "the dying pool holds every message: {state:?}"
        );
    }

    // The survivor runs before the death, so it sees nothing until ack_wait expires.
    let shutdown = CancellationToken::new();
    let survivor = start_pool(
        fx.connect().await,
        fx.store.clone(),
        config(2),
        SHORT_ACK_WAIT,
        shutdown.clone(),
    )
    .await;
    drop(dying_pool);
    dying_process.shutdown_background();

    fx.wait_acked(last).await;
    let events = fx.wait_events(MESSAGES * OPS).await;
    stop(shutdown, vec![survivor]).await;

    assert_eq!(
        dying_store.applies.load(Ordering::SeqCst),
        1,
        "the dead pool wrote its first message only"
    );
    assert_eq!(
        fx.store.applies.load(Ordering::SeqCst),
        MESSAGES - 1,
        "the survivor wrote every other message once and did not rewrite the first"
    );
    let stored = fx.store.scan(&fx.collection, None, 10_000).await.unwrap();
    assert_eq!(stored.len(), MESSAGES * OPS);
    for (m, seq) in seqs.iter().enumerate() {
        for i in 0..OPS {
            let doc = fx.stored(&format!("doc-{m}-{i}")).await.expect("stored");
            assert_eq!(doc.seq, seq.for_op(i));
        }
    }
    assert_eq!(events.len(), MESSAGES * OPS, "one event per op: {events:?}");
    let mut ids: Vec<&str> = events.iter().map(|e| e.id().as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), MESSAGES * OPS);
    assert!(fx.dead_letters().await.is_empty());
    assert_eq!(
        ops_counter(&fx.collection, "applied"),
        ((MESSAGES - 1) * OPS) as u64
    );
    assert_eq!(
        ops_counter(&fx.collection, "unchanged"),
        OPS as u64,
        "the first message's ops were found already applied"
    );
    if let Some(state) = fx.server_consumer_state().await {
        assert!(
            state.deliveries >= 2 * MESSAGES as u64,
            "every message was delivered to both pools: {state:?}"
        );
        assert_eq!(state.ack_pending, 0, "{state:?}");
    }
}

// ---------------------------------------------------------------------------------------
// one test per scenario and log

/// For every scenario `s`, `embedded::s` runs it on the embedded log and `jetstream::s`
/// on a real nats-server.
macro_rules! on_both_logs {
    ($($scenario:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Embedded).await;
                }
            )+
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::JetStream).await;
                }
            )+
        }
    };
}

/// Tombstones go once past their retention and acked, live documents stay, and what an
/// old dead letter replayed afterwards does: the README's documented exception. The real
/// periodic pass, with a short retention, on the real embedded store.
async fn tombstones_past_their_retention_are_compacted_and_live_documents_stay(backend: Backend) {
    let fx = Fixture::new(backend, "compaction", Fault::None).await;
    let schema =
        Schema::from_json(br#"{"primary_key":"id","fields":[{"name":"id","type":"string"}]}"#)
            .unwrap();
    fx.store
        .put_collection(&CollectionMeta {
            name: fx.collection.clone(),
            schema,
            dynamic: false,
            schema_version: 1,
            created_at_ms: 0,
            generation: Default::default(),
            state: Default::default(),
        })
        .await
        .unwrap();
    let store: Arc<dyn Store> = fx.store.clone();
    let compaction = StoreConfig {
        tombstone_retention: Duration::from_millis(300),
        tombstone_compaction_interval: Duration::from_millis(25),
    };
    let catalog = Arc::new(Catalog::load(store.clone(), 1).await.unwrap());
    let compactor = TombstoneCompactor::new(store.clone(), catalog, fx.log.clone(), &compaction);

    // A tombstone written before any worker ran: with no workers' consumer on the log,
    // nothing is known to be acked, so not even a pass an hour ahead removes it.
    let early = StoreWrite::Delete {
        id: DocId::new("early").unwrap(),
        seq: Seq(1).for_op(0),
    };
    store
        .apply(&fx.collection, Default::default(), vec![early])
        .await
        .unwrap();
    let an_hour_ahead = SystemTime::now() + Duration::from_secs(3600);
    let report = compactor.pass(an_hour_ahead).await.unwrap();
    assert_eq!(report.removed, 0, "no ack floor, no compaction");
    assert!(fx.stored("early").await.is_some());

    let shutdown = CancellationToken::new();
    let pool = fx.start_pool(config(2), &shutdown).await;
    let before_deletes = SystemTime::now();
    let first = fx
        .append(
            0,
            vec![upsert("a", "1"), upsert("b", "1"), upsert("c", "1")],
        )
        .await;
    let second = fx.append(0, vec![delete("a"), delete("b")]).await;
    fx.wait_acked(second).await;
    // Acked, but deleted after `before_deletes`: a pass dated then keeps them.
    let report = compactor.pass(before_deletes).await.unwrap();
    assert_eq!(
        report.removed, 0,
        "tombstones newer than the retention stay"
    );
    assert_eq!(fx.stored("a").await.unwrap().seq, second.for_op(0));

    let compaction_stop = CancellationToken::new();
    let running = tokio::spawn(compactor.run(compaction_stop.clone()));
    wait_until("the tombstones compacted", || async {
        fx.stored("a").await.is_none()
            && fx.stored("b").await.is_none()
            && fx.stored("early").await.is_none()
    })
    .await;
    let c = fx.stored("c").await.expect("the live document stays");
    assert_eq!(c.seq, first.for_op(2));
    assert_eq!(c.source.as_deref(), Some(&br#"{"body":"1","id":"c"}"#[..]));
    assert_eq!(
        counter(
            STORE_TOMBSTONES_COMPACTED_TOTAL,
            &[("collection", fx.collection.as_str())]
        ),
        3
    );
    compaction_stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the compaction task stops when told")
        .unwrap();

    // The exception: an upsert older than a compacted delete, replayed from the DLQ with
    // its original sequence, finds the id absent and brings the document back. (A pool
    // whose dedup cache still remembers the delete counts it stale; a restarted one, as
    // here, has forgotten.)
    stop(shutdown, vec![pool]).await;
    let shutdown = CancellationToken::new();
    let pool = fx.start_pool(config(2), &shutdown).await;
    let replay = fx
        .append(
            0,
            vec![DocOp::replayed(upsert("a", "old"), first.for_op(0))],
        )
        .await;
    fx.wait_acked(replay).await;
    let a = fx
        .stored("a")
        .await
        .expect("the replayed upsert is applied");
    assert_eq!(a.seq, first.for_op(0));
    assert_eq!(
        a.source.as_deref(),
        Some(&br#"{"body":"old","id":"a"}"#[..])
    );

    stop(shutdown, vec![pool]).await;
}

on_both_logs!(
    tombstones_past_their_retention_are_compacted_and_live_documents_stay,
    applies_ops_publishes_events_and_skips_unchanged_content,
    an_older_op_delivered_after_a_newer_one_is_stale,
    a_poison_op_is_dead_lettered_and_its_batch_mates_are_applied,
    transient_failures_are_retried_until_applied,
    a_long_store_outage_pauses_the_pool_and_dead_letters_nothing,
    a_slow_batch_is_not_redelivered_while_it_is_worked_through,
    an_undecodable_message_is_dead_lettered,
    shutdown_finishes_and_acks_the_message_in_hand,
    two_pools_share_the_consumer_and_apply_every_op_once,
    events_are_not_lost_when_their_append_fails_after_the_write,
    a_dead_pools_messages_are_redelivered_to_another_pool,
);
