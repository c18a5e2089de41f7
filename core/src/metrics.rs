//! Every metric name sluice exports, and their descriptions.
//!
//! Names follow `sluice_<subsystem>_<name>_<unit>[_total]`. Labels take values from small
//! fixed sets (`route` from the matched route template, `outcome`, `stage`, `stream`) or
//! the collection name; never ids, raw paths, error strings or document values.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// HTTP requests answered. Labels: `route`, `method`, `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "sluice_http_requests_total";
/// HTTP request latency. Labels: `route`, `method`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "sluice_http_request_duration_seconds";

/// Lines received by ingest. Labels: `collection`, `outcome` (`accepted`, `rejected`).
pub const INGEST_DOCUMENTS_TOTAL: &str = "sluice_ingest_documents_total";
/// Decoded request body bytes received by ingest. Labels: `collection`.
pub const INGEST_BYTES_TOTAL: &str = "sluice_ingest_bytes_total";
/// Time from a request's first append until all of its batches were durable (in the log,
/// or in the spill buffer while the log is down). The log's own append latency is
/// [`LOG_APPEND_DURATION_SECONDS`].
pub const INGEST_DURABLE_DURATION_SECONDS: &str = "sluice_ingest_durable_duration_seconds";

/// Messages appended to a log stream. Labels: `stream`.
pub const LOG_APPENDED_MESSAGES_TOTAL: &str = "sluice_log_appended_messages_total";
/// Latency of one durable append (group commit included). Labels: `stream`.
pub const LOG_APPEND_DURATION_SECONDS: &str = "sluice_log_append_duration_seconds";
/// Durable syncs of the embedded log (one per group commit).
pub const LOG_SYNCS_TOTAL: &str = "sluice_log_syncs_total";
/// Messages delivered again after a missed ack or a nak. Labels: `stream`.
pub const LOG_REDELIVERIES_TOTAL: &str = "sluice_log_redeliveries_total";

/// Ops handled by workers. Labels: `collection`, `outcome` (`applied`, `unchanged`,
/// `stale`, `failed`, `dead_lettered`).
pub const WORKER_OPS_TOTAL: &str = "sluice_worker_ops_total";
/// Ops skipped because the stored content hash was unchanged. Labels: `collection`.
pub const WORKER_DEDUP_SKIPS_TOTAL: &str = "sluice_worker_dedup_skips_total";
/// Dedup cache lookups. Labels: `outcome` (`hit`, `miss`).
pub const WORKER_DEDUP_CACHE_LOOKUPS_TOTAL: &str = "sluice_worker_dedup_cache_lookups_total";
/// Time to process one DOCS message (store write, events, ack).
pub const WORKER_BATCH_DURATION_SECONDS: &str = "sluice_worker_batch_duration_seconds";

/// Document writes the store performed. Labels: `collection`.
pub const STORE_WRITES_TOTAL: &str = "sluice_store_writes_total";
/// Tombstones removed by compaction (past `store.tombstone_retention`). Labels:
/// `collection`.
pub const STORE_TOMBSTONES_COMPACTED_TOTAL: &str = "sluice_store_tombstones_compacted_total";

/// Events applied by indexers. Labels: `collection`, `outcome` (`indexed`, `deleted`,
/// `stale`).
pub const INDEXER_EVENTS_TOTAL: &str = "sluice_indexer_events_total";
/// Index commits. Labels: `collection`.
pub const INDEXER_COMMITS_TOTAL: &str = "sluice_indexer_commits_total";
/// Latency of one index commit, searcher reload included.
pub const INDEXER_COMMIT_DURATION_SECONDS: &str = "sluice_indexer_commit_duration_seconds";
/// Searchable documents. Labels: `collection`.
pub const INDEXER_DOCUMENTS: &str = "sluice_indexer_documents";
/// Tombstone documents removed from index shards by compaction (see
/// `sluice_indexer::tombstones`). Labels: `collection`.
pub const INDEXER_TOMBSTONES_COMPACTED_TOTAL: &str = "sluice_indexer_tombstones_compacted_total";
/// Index writers open now, node-wide (at most `indexer.max_open_writers`).
pub const INDEXER_OPEN_WRITERS: &str = "sluice_indexer_open_writers";
/// Times a shard had to wait for a free writer slot (all `max_open_writers` were taken).
pub const INDEXER_WRITER_SLOT_WAITS_TOTAL: &str = "sluice_indexer_writer_slot_waits_total";

/// Search requests. Labels: `outcome` (`ok`, `partial`, `stale`, `invalid`, `error`).
pub const SEARCH_REQUESTS_TOTAL: &str = "sluice_search_requests_total";
/// Search latency, cache included.
pub const SEARCH_DURATION_SECONDS: &str = "sluice_search_duration_seconds";
/// Search result cache lookups. Labels: `outcome` (`hit`, `miss`).
pub const SEARCH_CACHE_LOOKUPS_TOTAL: &str = "sluice_search_cache_lookups_total";
/// Weighed size of the search result caches (the fresh one and the stale fallback
/// together): an estimate of the bytes of the keys and responses they hold.
pub const SEARCH_CACHE_BYTES: &str = "sluice_search_cache_bytes";

/// Ops moved to the dead-letter queue. Labels: `collection`.
pub const DLQ_MESSAGES_TOTAL: &str = "sluice_dlq_messages_total";
/// Entries in the dead-letter queue now. Labels: `collection`.
pub const DLQ_DEPTH: &str = "sluice_dlq_depth";
/// Dead-letter entries replayed (re-appended to DOCS and removed). Labels: `collection`.
pub const DLQ_REPLAYED_TOTAL: &str = "sluice_dlq_replayed_total";
/// Dead-letter entries purged. Labels: `collection`.
pub const DLQ_PURGED_TOTAL: &str = "sluice_dlq_purged_total";

/// Documents this node appended that the pipeline has not finished with. Labels:
/// `stage` (`applying`: not yet written by the workers; `indexing`: written, not yet
/// searchable).
pub const INGEST_BACKLOG_DOCUMENTS: &str = "sluice_ingest_backlog_documents";

/// State of a dependency's circuit breaker: 0 closed, 1 half-open, 2 open.
/// Labels: `dependency` (`log_publish`, `log_consume`, `store`, `index_commit`).
pub const BREAKER_STATE: &str = "sluice_breaker_state";
/// Circuit breaker state changes. Labels: `dependency`, `to` (`closed`, `half_open`, `open`).
pub const BREAKER_TRANSITIONS_TOTAL: &str = "sluice_breaker_transitions_total";
/// Calls refused by an open circuit breaker. Labels: `dependency`.
pub const BREAKER_REJECTIONS_TOTAL: &str = "sluice_breaker_rejections_total";

/// Bytes of batches waiting in the ingest spill buffer for the log to come back.
pub const SPILL_PENDING_BYTES: &str = "sluice_spill_pending_bytes";
/// Batches (log messages) waiting in the ingest spill buffer.
pub const SPILL_PENDING_MESSAGES: &str = "sluice_spill_pending_messages";
/// Batches written to the spill buffer because the log was unavailable.
pub const SPILL_APPENDED_MESSAGES_TOTAL: &str = "sluice_spill_appended_messages_total";
/// Spilled batches forwarded to the log (JetStream confirmed them).
pub const SPILL_FORWARDED_MESSAGES_TOTAL: &str = "sluice_spill_forwarded_messages_total";
/// Batches refused because the spill buffer was full (answered 503).
pub const SPILL_REJECTED_MESSAGES_TOTAL: &str = "sluice_spill_rejected_messages_total";

/// Registers a description and unit for every metric above.
pub fn describe() {
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(BREAKER_TRANSITIONS_TOTAL, "Circuit breaker state changes");
    describe_counter!(
        BREAKER_REJECTIONS_TOTAL,
        "Calls refused at once by an open circuit breaker"
    );
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests answered");
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency"
    );
    describe_counter!(INGEST_DOCUMENTS_TOTAL, "Lines received by ingest");
    describe_counter!(
        INGEST_BYTES_TOTAL,
        Unit::Bytes,
        "Decoded request body bytes received"
    );
    describe_counter!(
        LOG_APPENDED_MESSAGES_TOTAL,
        "Messages appended to a log stream"
    );
    describe_histogram!(
        LOG_APPEND_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of one durable append"
    );
    describe_histogram!(
        INGEST_DURABLE_DURATION_SECONDS,
        Unit::Seconds,
        "Time until all batches of one ingest request were durable"
    );
    describe_counter!(LOG_SYNCS_TOTAL, "Durable syncs of the embedded log");
    describe_counter!(LOG_REDELIVERIES_TOTAL, "Messages delivered again");
    describe_counter!(WORKER_OPS_TOTAL, "Ops handled by workers");
    describe_counter!(
        WORKER_DEDUP_SKIPS_TOTAL,
        "Ops skipped because the content hash was unchanged"
    );
    describe_counter!(WORKER_DEDUP_CACHE_LOOKUPS_TOTAL, "Dedup cache lookups");
    describe_histogram!(
        WORKER_BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Time to process one DOCS message"
    );
    describe_counter!(STORE_WRITES_TOTAL, "Document writes the store performed");
    describe_counter!(
        STORE_TOMBSTONES_COMPACTED_TOTAL,
        "Tombstones removed by compaction once past their retention"
    );
    describe_counter!(INDEXER_EVENTS_TOTAL, "Events applied by indexers");
    describe_counter!(INDEXER_COMMITS_TOTAL, "Index commits");
    describe_histogram!(
        INDEXER_COMMIT_DURATION_SECONDS,
        Unit::Seconds,
        "Latency of one index commit"
    );
    describe_gauge!(INDEXER_DOCUMENTS, "Searchable documents");
    describe_counter!(
        INDEXER_TOMBSTONES_COMPACTED_TOTAL,
        "Tombstone documents removed from index shards by compaction"
    );
    describe_gauge!(INDEXER_OPEN_WRITERS, "Index writers open now");
    describe_counter!(
        INDEXER_WRITER_SLOT_WAITS_TOTAL,
        "Times a shard waited for a free index writer slot"
    );
    describe_counter!(SEARCH_REQUESTS_TOTAL, "Search requests");
    describe_histogram!(SEARCH_DURATION_SECONDS, Unit::Seconds, "Search latency");
    describe_counter!(SEARCH_CACHE_LOOKUPS_TOTAL, "Search result cache lookups");
    describe_gauge!(
        SEARCH_CACHE_BYTES,
        Unit::Bytes,
        "Weighed size of the search result caches"
    );
    describe_counter!(DLQ_MESSAGES_TOTAL, "Ops moved to the dead-letter queue");
    describe_gauge!(DLQ_DEPTH, "Entries in the dead-letter queue");
    describe_counter!(DLQ_REPLAYED_TOTAL, "Dead-letter entries replayed into DOCS");
    describe_counter!(DLQ_PURGED_TOTAL, "Dead-letter entries purged");
    describe_gauge!(
        INGEST_BACKLOG_DOCUMENTS,
        "Documents appended by this node and not yet applied or searchable"
    );
    describe_gauge!(
        SPILL_PENDING_BYTES,
        Unit::Bytes,
        "Bytes of batches waiting in the spill buffer for the log"
    );
    describe_gauge!(
        SPILL_PENDING_MESSAGES,
        "Batches waiting in the spill buffer for the log"
    );
    describe_counter!(
        SPILL_APPENDED_MESSAGES_TOTAL,
        "Batches spilled locally because the log was unavailable"
    );
    describe_counter!(
        SPILL_FORWARDED_MESSAGES_TOTAL,
        "Spilled batches forwarded to the log"
    );
    describe_counter!(
        SPILL_REJECTED_MESSAGES_TOTAL,
        "Batches refused because the spill buffer was full"
    );
}
