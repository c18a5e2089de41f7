//! Configuration: one TOML file, a section per role, `SLUICE_` environment overrides.
//!
//! Every field has a default (a function beside it) and a doc line; durations and sizes
//! are human-readable (`"250ms"`, `"64MiB"`). Unknown keys are refused so a typo is an
//! error, not a silently ignored setting. [`Config::validate`] runs at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the node listens and keeps its data.
    pub server: ServerConfig,
    /// The HTTP front door.
    pub ingest: IngestConfig,
    /// The embedded log.
    pub log: LogConfig,
    /// The store-writer pool.
    pub workers: WorkersConfig,
    /// The document store.
    pub store: StoreConfig,
    /// Index shards and search.
    pub indexer: IndexerConfig,
    /// Timeouts and circuit breakers around the log, the store and the index.
    pub resilience: ResilienceConfig,
    /// Fault injection, for tests of failure paths only.
    pub faults: FaultsConfig,
    /// The local spill buffer of ingest when the log (JetStream) is unavailable.
    pub spill: SpillConfig,
}

/// `[spill]`: in distributed mode (JetStream log), batches that cannot be appended to
/// the log (breaker open, transient failure) are made durable in a local buffer under
/// `data_dir/spill` and forwarded in order once the log is back. Embedded mode never
/// spills: its log is local.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpillConfig {
    /// Spill when the log is unavailable (false: answer 503 instead).
    pub enabled: bool,
    /// Disk quota: most bytes of batches waiting in the buffer; past it, 503 with `Retry-After`.
    pub max_size: ByteSize,
}

impl Default for SpillConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_size: ByteSize::gib(1),
        }
    }
}

/// `[faults]`: test configuration only. When enabled, `PUT /_internal_/faults/{point}`
/// injects errors and latency into the store or index shards (see `sluice_core::faults`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsConfig {
    /// Accept fault plans at run time. Never enable in production.
    pub enabled: bool,
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (`SLUICE_LISTEN`).
    pub listen: SocketAddr,
    /// Directory for the embedded log, store and indexes (`SLUICE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Longest a client may take to send a request's head (line and headers), counted
    /// from when the server starts waiting for it (connection opened, or the previous
    /// response sent): so also how long an idle keep-alive connection stays open. Past
    /// it the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a whole request body, counted from the end of
    /// its head; past it the request answers 408 `request_timeout` and the connection is
    /// closed. Raise it for very large bodies on slow links.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Slowest average rate, in bytes per second, at which a request body may arrive once
    /// `body_rate_grace` has passed; a slower body answers 408 `request_timeout` and the
    /// connection is closed (0: no minimum, only `body_read_timeout`).
    pub min_body_rate: ByteSize,
    /// How long a request body may arrive at any rate before `min_body_rate` applies.
    #[serde(with = "humantime_serde")]
    pub body_rate_grace: Duration,
    /// Most connections one client address may hold open; further ones are closed as
    /// soon as they are accepted.
    pub max_connections_per_client: usize,
    /// Most requests of one client address handled at once; more answer 429
    /// `overloaded` with `Retry-After`.
    pub max_in_flight_per_client: usize,
    /// Longest request target (path and query string), in bytes; longer ones answer 414
    /// `uri_too_long`.
    pub max_uri_length: usize,
    /// Most threads of the blocking pool (index commits, searches, log and store I/O),
    /// shared by every collection, so the thread count does not grow with them.
    pub max_blocking_threads: usize,
    /// How long a metric series nobody updates stays in `/metrics`. Live series are kept
    /// fresh by the node; a deleted collection's series are gone this long after it.
    #[serde(with = "humantime_serde")]
    pub metrics_idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7171)),
            data_dir: PathBuf::from("./data"),
            shutdown_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            min_body_rate: ByteSize::kib(1),
            body_rate_grace: Duration::from_secs(5),
            max_connections_per_client: 256,
            max_in_flight_per_client: 32,
            max_uri_length: 32 * 1024,
            max_blocking_threads: 64,
            metrics_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Longest request target `server.max_uri_length` may allow: hyper refuses longer ones
/// itself, before a request reaches the service.
pub const MAX_URI_LENGTH: usize = 65_534;

/// Room kept in a log message for what travels with a document's source (its id, the
/// batch and event envelopes, a dead letter's error): a log with a message limit takes
/// documents of at most that limit less this.
pub const LOG_MESSAGE_RESERVE: usize = 64 * 1024;

/// Environment variable overriding `ingest.max_line_size`.
pub const MAX_LINE_SIZE_ENV: &str = "SLUICE_INGEST_MAX_LINE_SIZE";

/// Deepest nesting `ingest.max_depth` may allow: the JSON parser refuses deeper input on
/// its own.
pub const MAX_NESTING_DEPTH: usize = 127;

/// `[ingest]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body, after decompression.
    pub max_body_size: ByteSize,
    /// Largest document: one NDJSON line, or one `_bulk` source line; a larger one is
    /// refused alone (`line_too_large`) while the rest of its request goes through, and so
    /// is one whose stored (canonical) form is larger. With the JetStream log the limit is
    /// also at most the server's `max_payload` less [`LOG_MESSAGE_RESERVE`]. Override:
    /// `SLUICE_INGEST_MAX_LINE_SIZE` (e.g. `16MiB`).
    pub max_line_size: ByteSize,
    /// Deepest nesting of arrays and objects in a document (at most
    /// [`MAX_NESTING_DEPTH`]).
    pub max_depth: usize,
    /// Most ops in one log message.
    pub max_batch_docs: usize,
    /// Most bytes in one log message (keep under NATS's `max_payload`, 1 MiB by default).
    pub max_batch_size: ByteSize,
    /// Shards of a collection whose schema does not say.
    pub default_shards: u32,
    /// Most ingest requests processed at once; more wait, then get 429.
    pub max_in_flight_requests: usize,
    /// Longest a `wait=searchable` request, a read-your-writes `GET` or a collection
    /// `DELETE` waits.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Most documents this node appended and the pipeline has not yet made searchable;
    /// past it, ingest answers 429 `overloaded` with `Retry-After` (0: no limit).
    pub max_backlog_docs: u64,
    /// Most collections the catalog holds; creating one more answers 409
    /// `too_many_collections`.
    pub max_collections: usize,
    /// Most collections created by a first ingest to a new name (schema inferred), within
    /// `max_collections`; 0 turns creation on first ingest off.
    pub max_auto_created_collections: usize,
    /// Most error entries one ingest answer lists (the rest are only counted, as
    /// `errors_omitted`); at least 1.
    pub max_reported_errors: usize,
    /// Most fields a collection's documents may carry, nested paths counted as
    /// Elasticsearch counts them; a wider document is refused (`too_many_fields`).
    pub max_fields_per_collection: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_size: ByteSize::mib(64),
            // Large log events (stack traces, request dumps) fit; Filebeat's own cap on
            // one event is 10 MiB, and NATS advises max_payload of at most 8 MB.
            max_line_size: ByteSize::mib(8),
            max_depth: 64,
            max_batch_docs: 500,
            max_batch_size: ByteSize::kib(768),
            default_shards: 2,
            max_in_flight_requests: 64,
            visibility_timeout: Duration::from_secs(30),
            max_backlog_docs: 1_000_000,
            max_collections: 1_000,
            max_auto_created_collections: 1_000,
            max_reported_errors: 1_000,
            max_fields_per_collection: 1_000,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// NATS server URL(s), comma-separated; when set the log runs on JetStream instead of
    /// the embedded log (`SLUICE_NATS_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// JetStream stream replicas (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// How long EVENTS are kept on JetStream for replay by other subscribers.
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    /// Longest a JetStream publish or API call may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a delivered message may stay unacked before it is delivered again.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Most appends waiting for one group commit; further appenders wait.
    pub max_pending_appends: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            request_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_pending_appends: 1024,
        }
    }
}

/// `[workers]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Workers in the pool (0: one per core).
    pub count: usize,
    /// Most DOCS messages one worker fetches at once.
    pub fetch_batch: usize,
    /// Most DOCS messages delivered and unacked across the pool.
    pub max_ack_pending: usize,
    /// Entries of the id → (sequence, hash) dedup cache.
    pub dedup_cache_entries: u64,
    /// Deliveries of a message before its failing ops go to the dead-letter queue.
    pub max_deliver: u32,
    /// First retry delay after a transient failure (doubles, with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            count: 0,
            fetch_batch: 8,
            max_ack_pending: 256,
            dedup_cache_entries: 1_000_000,
            max_deliver: 5,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

impl WorkersConfig {
    /// The pool size, `count` or one per core.
    pub fn effective_count(&self) -> usize {
        if self.count > 0 {
            self.count
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }
}

/// `[store]`: the document store. A delete leaves a tombstone that refuses older ops
/// still on their way; the periodic compaction pass (`sluice_workers::tombstones`)
/// removes tombstones once no older op can arrive any more.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How long a tombstone is kept after its delete was applied, at least
    /// `log.events_max_age`; after it, and once the workers have acked every DOCS
    /// message older than the delete, compaction removes it.
    #[serde(with = "humantime_serde")]
    pub tombstone_retention: Duration,
    /// How often the compaction pass walks the collections for expired tombstones.
    #[serde(with = "humantime_serde")]
    pub tombstone_compaction_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            tombstone_retention: Duration::from_secs(7 * 24 * 3600),
            tombstone_compaction_interval: Duration::from_secs(3600),
        }
    }
}

/// When tombstones may be compacted: one schedule for the store's pass and the index
/// shards' (`sluice_indexer::tombstones`), so both forget a delete after the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TombstoneSchedule {
    /// `store.tombstone_retention`.
    pub retention: Duration,
    /// `store.tombstone_compaction_interval`.
    pub interval: Duration,
}

impl StoreConfig {
    /// The compaction schedule these settings give.
    pub fn tombstone_schedule(&self) -> TombstoneSchedule {
        TombstoneSchedule {
            retention: self.tombstone_retention,
            interval: self.tombstone_compaction_interval,
        }
    }
}

/// Longest `indexer.max_query_length` may allow: the query parser's thread stack is
/// sized for the deepest nesting a query this long could hold (see the indexer's
/// `query_limits`).
pub const MAX_QUERY_LENGTH: usize = 64 * 1024;

/// Deepest `indexer.max_query_depth` may allow: queries nested this deep run with a wide
/// margin on 2 MiB search threads (see the indexer's `query_limits`).
pub const MAX_QUERY_DEPTH: usize = 128;

/// `[indexer]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexerConfig {
    /// Memory budget of one shard's index writer.
    pub writer_memory: ByteSize,
    /// Once a shard has caught up with its events, commit this long after the first
    /// change pending (bounds freshness while ingest does not outpace indexing).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// While a shard works through a backlog, commit at least this often (fewer, larger
    /// segments during bursts). Capped at half of `ack_wait` (see
    /// [`IndexerConfig::backlog_commit_interval`]).
    #[serde(with = "humantime_serde")]
    pub commit_max_interval: Duration,
    /// Commit as soon as this many changes are pending. A cap on what one backlog
    /// commit covers (the pending-id map, the work redelivered after a crash); set high
    /// by default so that during a burst `commit_max_interval` decides: every backlog
    /// commit closes a segment that merges must fold in again later.
    pub commit_max_docs: usize,
    /// Most EVENTS messages a shard fetches at once.
    pub fetch_batch: usize,
    /// Memory budget of the search result caches, weighed by an estimate of each
    /// response's size: the result cache and the stale fallback (see the indexer) take
    /// half each, and a response weighing more than half is not cached (0: no caching,
    /// and no stale fallback).
    pub search_cache_size: ByteSize,
    /// Largest `limit + offset` a search may ask for.
    pub max_result_window: usize,
    /// Longest query text of one search, in bytes: `q` and every `filter` together (at
    /// most [`MAX_QUERY_LENGTH`]). Longer is refused with `query_too_complex`.
    pub max_query_length: usize,
    /// Deepest nesting of `q` or of one filter: each parenthesis (a `field:(...)` group
    /// too) and each prefix operator `NOT`, `+` or `-` before its operand is a level;
    /// quoted phrases are none (at most [`MAX_QUERY_DEPTH`]). Deeper is refused with
    /// `query_too_complex`.
    pub max_query_depth: usize,
    /// Hits of a page that get highlights (the first ones); later hits of the page carry
    /// an empty `highlights`.
    pub highlight_max_hits: usize,
    /// Text of one field of one hit analysed for highlights; matches past it are not
    /// marked.
    pub highlight_max_analyzed_size: ByteSize,
    /// Longest one shard may take to answer a search; a slower shard is left out and the
    /// response is flagged `partial`.
    #[serde(with = "humantime_serde")]
    pub shard_search_timeout: Duration,
    /// How long a shard may hold an EVENTS message unacked before it is delivered again
    /// (after a crash, this is how long a shared log waits before redelivering).
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// A shard whose changes are committed and that has applied nothing for this long
    /// closes its index writer (its threads and memory arena); its next event opens it
    /// again.
    #[serde(with = "humantime_serde")]
    pub writer_idle_timeout: Duration,
    /// Index writers open at once on this node, over all collections and shards. A shard
    /// that needs one while all are taken waits (its events stay in the log), and the
    /// others close theirs as soon as their changes are committed.
    pub max_open_writers: usize,
}

impl IndexerConfig {
    /// How long a shard working through a backlog may leave changes uncommitted:
    /// `commit_max_interval`, but at most half of `ack_wait`, so its unacked events are
    /// never redelivered while it is merely busy. Never below `commit_interval`.
    pub fn backlog_commit_interval(&self) -> Duration {
        self.commit_max_interval
            .min(self.ack_wait / 2)
            .max(self.commit_interval)
    }
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            writer_memory: ByteSize::mib(128),
            commit_interval: Duration::from_millis(500),
            commit_max_interval: Duration::from_secs(10),
            commit_max_docs: 500_000,
            fetch_batch: 64,
            search_cache_size: ByteSize::mib(64),
            max_result_window: 10_000,
            max_query_length: 16 * 1024,
            max_query_depth: 32,
            highlight_max_hits: 100,
            highlight_max_analyzed_size: ByteSize::kib(64),
            shard_search_timeout: Duration::from_secs(10),
            ack_wait: Duration::from_secs(60),
            writer_idle_timeout: Duration::from_secs(30),
            max_open_writers: 64,
        }
    }
}

/// `[resilience]`: how calls to a dependency (log, store, index) are bounded and when
/// a failing dependency is left alone for a while.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// Consecutive infrastructure failures of one dependency that open its breaker.
    pub breaker_failures: u32,
    /// How long an opened breaker refuses calls at first (jittered).
    #[serde(with = "humantime_serde")]
    pub breaker_open_initial: Duration,
    /// The longest an opened breaker refuses calls, after repeated failed probes.
    #[serde(with = "humantime_serde")]
    pub breaker_open_max: Duration,
    /// Longest one store read or write may take.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// Longest one index commit may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub index_commit_timeout: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            breaker_failures: 5,
            breaker_open_initial: Duration::from_secs(1),
            breaker_open_max: Duration::from_secs(30),
            store_timeout: Duration::from_secs(10),
            index_commit_timeout: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Parses a TOML configuration file's contents.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(e.to_string()))
    }

    /// A configuration for tests: data under `data_dir`, short timers, small budgets.
    pub fn for_test(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::default();
        config.server.data_dir = data_dir.into();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.shutdown_timeout = Duration::from_secs(10);
        config.indexer.writer_memory = ByteSize::mib(32);
        config.indexer.commit_interval = Duration::from_millis(200);
        config.log.ack_wait = Duration::from_secs(5);
        config.workers.retry_initial = Duration::from_millis(10);
        config.workers.retry_max = Duration::from_millis(200);
        config
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError(what.to_owned()))
            }
        };
        check(
            !self.server.header_read_timeout.is_zero() && !self.server.body_read_timeout.is_zero(),
            "server.header_read_timeout and server.body_read_timeout must be above zero",
        )?;
        check(
            self.server.max_connections_per_client >= 1
                && self.server.max_in_flight_per_client >= 1,
            "server.max_connections_per_client and server.max_in_flight_per_client must be at least 1",
        )?;
        check(
            self.server.max_blocking_threads >= 4,
            "server.max_blocking_threads must be at least 4",
        )?;
        check(
            (1024..=MAX_URI_LENGTH).contains(&self.server.max_uri_length),
            &format!("server.max_uri_length must be 1024..={MAX_URI_LENGTH} (hyper's own limit)"),
        )?;
        check(
            self.ingest.max_line_size <= self.ingest.max_body_size,
            "ingest.max_line_size exceeds ingest.max_body_size",
        )?;
        check(
            (1..=MAX_NESTING_DEPTH).contains(&self.ingest.max_depth),
            &format!(
                "ingest.max_depth must be 1..={MAX_NESTING_DEPTH} (the JSON parser's own recursion limit)"
            ),
        )?;
        check(
            self.ingest.max_batch_docs >= 1
                && self.ingest.max_batch_docs <= crate::ids::MAX_OPS_PER_BATCH,
            "ingest.max_batch_docs must be 1..=1048576",
        )?;
        check(
            self.ingest.default_shards >= 1
                && self.ingest.default_shards <= crate::schema::MAX_SHARDS,
            "ingest.default_shards must be 1..=256",
        )?;
        check(
            self.ingest.max_in_flight_requests >= 1,
            "ingest.max_in_flight_requests must be at least 1",
        )?;
        check(
            self.ingest.max_reported_errors >= 1,
            "ingest.max_reported_errors must be at least 1",
        )?;
        check(
            self.ingest.max_fields_per_collection >= 1,
            "ingest.max_fields_per_collection must be at least 1",
        )?;
        check(
            (1..=5).contains(&self.log.replicas),
            "log.replicas must be 1..=5",
        )?;
        check(
            self.log.max_pending_appends >= 1,
            "log.max_pending_appends must be at least 1",
        )?;
        check(
            self.store.tombstone_retention >= self.log.events_max_age,
            "store.tombstone_retention must be at least log.events_max_age",
        )?;
        check(
            !self.store.tombstone_compaction_interval.is_zero(),
            "store.tombstone_compaction_interval must be above zero",
        )?;
        check(
            self.workers.fetch_batch >= 1,
            "workers.fetch_batch must be at least 1",
        )?;
        check(
            self.workers.max_deliver >= 1,
            "workers.max_deliver must be at least 1",
        )?;
        check(
            self.indexer.writer_memory >= ByteSize::mib(16),
            "indexer.writer_memory must be at least 16MiB",
        )?;
        check(
            self.indexer.commit_max_docs >= 1,
            "indexer.commit_max_docs must be at least 1",
        )?;
        check(
            self.indexer.commit_max_interval >= self.indexer.commit_interval,
            "indexer.commit_max_interval must be at least indexer.commit_interval",
        )?;
        check(
            self.indexer.fetch_batch >= 1,
            "indexer.fetch_batch must be at least 1",
        )?;
        check(
            self.ingest.max_collections >= 1,
            "ingest.max_collections must be at least 1",
        )?;
        check(
            self.ingest.max_auto_created_collections <= self.ingest.max_collections,
            "ingest.max_auto_created_collections exceeds ingest.max_collections",
        )?;
        check(
            self.indexer.max_open_writers >= 1,
            "indexer.max_open_writers must be at least 1",
        )?;
        check(
            !self.indexer.writer_idle_timeout.is_zero(),
            "indexer.writer_idle_timeout must be above zero",
        )?;
        check(
            !self.server.metrics_idle_timeout.is_zero(),
            "server.metrics_idle_timeout must be above zero",
        )?;
        check(
            (1..=MAX_QUERY_LENGTH).contains(&self.indexer.max_query_length),
            &format!("indexer.max_query_length must be 1..={MAX_QUERY_LENGTH}"),
        )?;
        check(
            (1..=MAX_QUERY_DEPTH).contains(&self.indexer.max_query_depth),
            &format!("indexer.max_query_depth must be 1..={MAX_QUERY_DEPTH}"),
        )?;
        check(
            self.resilience.breaker_failures >= 1,
            "resilience.breaker_failures must be at least 1",
        )?;
        check(
            self.resilience.breaker_open_initial <= self.resilience.breaker_open_max,
            "resilience.breaker_open_initial exceeds resilience.breaker_open_max",
        )?;
        check(
            !self.spill.enabled
                || (self.spill.max_size >= self.ingest.max_batch_size
                    && self.spill.max_size >= self.ingest.max_line_size),
            "spill.max_size must hold at least one batch (ingest.max_batch_size) and one \
             document (ingest.max_line_size)",
        )?;
        Ok(())
    }

    /// Applies the environment overrides of configuration fields that have one (each is
    /// named on its field), reading variables through `var`: [`MAX_LINE_SIZE_ENV`]. An
    /// empty variable is ignored; one that does not parse is an error naming it.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(value) = var(MAX_LINE_SIZE_ENV).filter(|v| !v.trim().is_empty()) {
            self.ingest.max_line_size = value.trim().parse().map_err(|e| {
                ConfigError(format!(
                    "{MAX_LINE_SIZE_ENV}={value:?} is not a size such as \"16MiB\": {e}"
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_units_and_refuses_unknown_keys() {
        let config = Config::from_toml(
            "[ingest]\nmax_body_size = \"8MiB\"\n[indexer]\ncommit_interval = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(config.ingest.max_body_size, ByteSize::mib(8));
        assert_eq!(config.indexer.commit_interval, Duration::from_millis(250));
        assert!(Config::from_toml("[ingest]\nmax_body_sise = \"8MiB\"\n").is_err());
        config.validate().unwrap();
    }

    #[test]
    fn the_line_size_has_an_environment_override() {
        let mut config = Config::default();
        assert_eq!(config.ingest.max_line_size, ByteSize::mib(8));
        config
            .apply_env(|name| (name == MAX_LINE_SIZE_ENV).then(|| "16MiB".to_owned()))
            .unwrap();
        assert_eq!(config.ingest.max_line_size, ByteSize::mib(16));
        config.apply_env(|_| Some(String::new())).unwrap();
        assert_eq!(
            config.ingest.max_line_size,
            ByteSize::mib(16),
            "empty: ignored"
        );
        let error = config.apply_env(|_| Some("lots".to_owned())).unwrap_err();
        assert!(error.0.contains(MAX_LINE_SIZE_ENV), "{error}");
        config.apply_env(|_| None).unwrap();
        assert_eq!(config.ingest.max_line_size, ByteSize::mib(16));
    }

    #[test]
    fn validate_refuses_unworkable_values() {
        let mut config = Config::default();
        config.ingest.max_line_size = ByteSize::gib(1);
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.server.body_read_timeout = Duration::ZERO;
        assert!(config.validate().is_err());
        for (max_uri_length, valid) in [(1023, false), (1024, true), (MAX_URI_LENGTH, true)] {
            let mut config = Config::default();
            config.server.max_uri_length = max_uri_length;
            assert_eq!(
                config.validate().is_ok(),
                valid,
                "max_uri_length {max_uri_length}"
            );
        }
        let mut config = Config::default();
        config.server.max_uri_length = MAX_URI_LENGTH + 1;
        assert!(config.validate().is_err());
        let mut config = Config::default();
        config.server.max_in_flight_per_client = 0;
        assert!(config.validate().is_err());

        // The uncommitted stretch of a shard stays well under its redelivery delay.
        let mut config = Config::default();
        config.indexer.ack_wait = Duration::from_secs(3);
        config.validate().unwrap();
        assert_eq!(
            config.indexer.backlog_commit_interval(),
            Duration::from_millis(1500)
        );
        config.indexer.ack_wait = Duration::from_secs(60);
        assert_eq!(
            config.indexer.backlog_commit_interval(),
            config.indexer.commit_max_interval
        );
        config.indexer.commit_interval = Duration::from_secs(11);
        assert!(config.validate().is_err());

        // The nesting limit stays within what the JSON parser can check itself.
        let mut config = Config::default();
        for (max_depth, valid) in [(0, false), (1, true), (MAX_NESTING_DEPTH, true)] {
            config.ingest.max_depth = max_depth;
            assert_eq!(config.validate().is_ok(), valid, "max_depth {max_depth}");
        }
        config.ingest.max_depth = MAX_NESTING_DEPTH + 1;
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("ingest.max_depth"), "{refused}");

        // The query limits stay within what the parser's stack is sized for.
        let mut config = Config::default();
        for (max_query_depth, valid) in [(0, false), (1, true), (MAX_QUERY_DEPTH, true)] {
            config.indexer.max_query_depth = max_query_depth;
            assert_eq!(
                config.validate().is_ok(),
                valid,
                "max_query_depth {max_query_depth}"
            );
        }
        config.indexer.max_query_depth = MAX_QUERY_DEPTH + 1;
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("indexer.max_query_depth"), "{refused}");
        let mut config = Config::default();
        for (max_query_length, valid) in [(0, false), (1, true), (MAX_QUERY_LENGTH, true)] {
            config.indexer.max_query_length = max_query_length;
            assert_eq!(
                config.validate().is_ok(),
                valid,
                "max_query_length {max_query_length}"
            );
        }
        config.indexer.max_query_length = MAX_QUERY_LENGTH + 1;
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("indexer.max_query_length"), "{refused}");

        // Tombstones outlive what the log keeps; compaction runs at some interval.
        let mut config = Config::default();
        assert!(config.store.tombstone_retention >= config.log.events_max_age);
        config.store.tombstone_retention = config.log.events_max_age - Duration::from_secs(1);
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("store.tombstone_retention"), "{refused}");
        config.log.events_max_age = Duration::from_secs(60);
        config.validate().unwrap();
        config.store.tombstone_compaction_interval = Duration::ZERO;
        let refused = config.validate().unwrap_err().to_string();
        assert!(
            refused.contains("store.tombstone_compaction_interval"),
            "{refused}"
        );
    }

    #[test]
    fn store_section_parses_human_durations() {
        let config = Config::from_toml(
            "[log]\nevents_max_age = \"1h\"\n[store]\ntombstone_retention = \"2h\"\ntombstone_compaction_interval = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(config.store.tombstone_retention, Duration::from_secs(7200));
        assert_eq!(
            config.store.tombstone_compaction_interval,
            Duration::from_secs(300)
        );
        config.validate().unwrap();
        assert!(Config::from_toml("[store]\ntombstone_retension = \"2h\"\n").is_err());
    }
}
