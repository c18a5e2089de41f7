//! `POST /v1/collections/{c}/documents`: NDJSON lines in, durable batches out.
//!
//! One request goes through: admission (a bounded number of ingest requests at once,
//! and a bounded backlog of accepted documents not yet searchable ([`crate::admission`]);
//! past either, 429 with `Retry-After`), body read (decoded, size-limited), per-line
//! parse and validation on a blocking thread (CPU work off the async workers), grouping
//! of the accepted lines by partition into [`DocBatch`]es of at most `max_batch_docs` ops
//! and `max_batch_size` bytes, one durable log append for all of them (through the
//! log-publish breaker; spilled locally when the log is down in distributed mode, see
//! [`crate::spill`]), then optionally a wait until they are searchable.
//!
//! Invariants: a 2xx means every accepted line is durable and no rejected line was
//! appended; `ids[i]` answers input line `i + 1` (blank lines answer `null` and count as
//! neither accepted nor rejected); when the append fails, no id is reported durable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_core::document::{parse_line, validate_document, LineError, LineLimits};
use sluice_core::log::{LogError, OutgoingMessage};
use sluice_core::metrics as m;
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::schema::Schema;
use sluice_core::store::CollectionMeta;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{CollectionName, DocId, ErrorCode, Partition, Seq};
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{check_ndjson_content_type, read_limited, require_documents};
use crate::error::ApiError;
use crate::spill::SpillError;
use crate::state::AppState;
use crate::visibility::{WaitError, Written};

/// How long an ingest request waits for an admission permit before a 429.
const ADMISSION_WAIT: Duration = Duration::from_millis(200);
/// Lines sampled to infer the schema of a collection created on first ingest.
pub(crate) const INFERENCE_SAMPLE_LINES: usize = 100;

/// When an ingest or delete request answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// Once the log has made the batches durable.
    #[default]
    Durable,
    /// Once every document of the request is visible to search.
    Searchable,
}

/// Query parameters of write requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// `durable` (default) or `searchable`.
    #[serde(default)]
    pub wait: WaitFor,
}

/// One rejected line.
#[derive(Debug, Serialize, PartialEq)]
pub struct LineRejection {
    /// 1-based line number.
    pub line: usize,
    /// Stable error code.
    pub code: ErrorCode,
    /// What is wrong.
    pub message: String,
}

/// The answer to an ingest request.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Lines accepted (durable).
    pub accepted: usize,
    /// Lines rejected.
    pub rejected: usize,
    /// One entry per input line: the id, or `null` for a rejected or blank line.
    pub ids: Vec<Option<String>>,
    /// The rejected lines, in order.
    pub errors: Vec<LineRejection>,
}

/// A request's lines, validated and grouped into log batches.
#[derive(Debug)]
pub struct PreparedIngest {
    /// Batches to append, by partition then request order.
    pub batches: Vec<DocBatch>,
    /// For each batch, the 0-based input lines its ops came from, in op order.
    pub batch_lines: Vec<Vec<usize>>,
    /// The answer, as it will be once the batches are durable.
    pub response: IngestResponse,
}

/// Bytes counted per op on top of its source (id, hash, framing), for batch sizing.
const OP_OVERHEAD_BYTES: usize = 64;

/// How big one log message may grow.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most ops per message.
    pub max_docs: usize,
    /// Most bytes per message (NATS refuses messages over its `max_payload`, 1 MiB by
    /// default); a single larger op still travels alone.
    pub max_bytes: usize,
}

/// Splits a body into lines: `\n` separated, a trailing `\r` dropped, no empty last line.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let mut split = (!body.is_empty()).then(|| body.split(|&b| b == b'\n'));
    std::iter::from_fn(move || split.as_mut()?.next())
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Parses the first lines that are JSON objects, to infer a new collection's schema.
pub fn inference_sample(body: &[u8], limits: &LineLimits) -> Vec<Map<String, Value>> {
    lines(body)
        .filter(|line| !is_blank(line))
        .take(INFERENCE_SAMPLE_LINES)
        .filter_map(|line| parse_line(line, limits).ok())
        .collect()
}

/// Validates every line of `body` against `schema` and groups the accepted ones into
/// batches within `limits` per partition. Ids missing from documents are
/// fresh UUIDv7s, or, under an idempotency key, derived from the key and the line so
/// that every retry of the request assigns the same ones.
pub fn prepare(
    collection: &CollectionName,
    schema: &Schema,
    shards: u32,
    body: &[u8],
    line_limits: &LineLimits,
    limits: BatchLimits,
    idempotency_key: Option<&str>,
) -> PreparedIngest {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    let mut by_partition: BTreeMap<Partition, Vec<(usize, DocOp)>> = BTreeMap::new();
    let mut accepted = 0;
    for (index, line) in lines(body).enumerate() {
        if is_blank(line) {
            ids.push(None);
            continue;
        }
        let assign_id = || match idempotency_key {
            Some(key) => DocId::derived(key, index + 1),
            None => DocId::generate(),
        };
        let validated =
            parse_line(line, line_limits).and_then(|doc| validate_document(schema, doc, assign_id));
        match validated {
            Ok(doc) => {
                accepted += 1;
                ids.push(Some(doc.id.to_string()));
                by_partition
                    .entry(doc.id.partition(shards))
                    .or_default()
                    .push((
                        index,
                        DocOp::Upsert {
                            id: doc.id,
                            hash: doc.hash,
                            source: Bytes::from(doc.source),
                        },
                    ));
            }
            Err(LineError { code, message }) => {
                ids.push(None);
                errors.push(LineRejection {
                    line: index + 1,
                    code,
                    message,
                });
            }
        }
    }
    let (batches, batch_lines) = group_into_batches(collection, by_partition, limits);
    PreparedIngest {
        batches,
        batch_lines,
        response: IngestResponse {
            accepted,
            rejected: errors.len(),
            ids,
            errors,
        },
    }
}

/// Cuts each partition's ops (with the 0-based input line or item each came from) into
/// batches within `limits`, keeping request order inside a partition so that later ops
/// on an id get later sequences. Returns the batches and, for each, its ops' lines.
pub(crate) fn group_into_batches(
    collection: &CollectionName,
    by_partition: BTreeMap<Partition, Vec<(usize, DocOp)>>,
    limits: BatchLimits,
) -> (Vec<DocBatch>, Vec<Vec<usize>>) {
    let mut batches = Vec::new();
    let mut batch_lines = Vec::new();
    for (partition, ops) in by_partition {
        let mut lines_of_batch = Vec::new();
        let mut ops_of_batch = Vec::new();
        let mut bytes_of_batch = 0;
        for (line, op) in ops {
            let op_bytes = match &op {
                DocOp::Upsert { source, .. } => source.len(),
                _ => 0,
            } + OP_OVERHEAD_BYTES;
            let full = ops_of_batch.len() >= limits.max_docs
                || bytes_of_batch + op_bytes > limits.max_bytes;
            if full && !ops_of_batch.is_empty() {
                batch_lines.push(std::mem::take(&mut lines_of_batch));
                batches.push(DocBatch {
                    collection: collection.clone(),
                    partition,
                    ops: std::mem::take(&mut ops_of_batch),
                });
                bytes_of_batch = 0;
            }
            lines_of_batch.push(line);
            ops_of_batch.push(op);
            bytes_of_batch += op_bytes;
        }
        if !ops_of_batch.is_empty() {
            batch_lines.push(lines_of_batch);
            batches.push(DocBatch {
                collection: collection.clone(),
                partition,
                ops: ops_of_batch,
            });
        }
    }
    (batches, batch_lines)
}

/// Header making a retried ingest request a no-op (within the log's dedup window).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The request's idempotency key, if it sent a usable one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 256 => Ok(Some(key.to_owned())),
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "Idempotency-Key must be 1 to 256 visible ASCII characters",
        )),
    }
}

/// Where one batch was made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durable {
    /// Appended to the log at this sequence.
    Log(Seq),
    /// Appended to the spill buffer at this sequence; forwarded to the log later.
    Spilled(Seq),
}

/// Why a batch is not durable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppendError {
    /// The log failed and there is no spill buffer (or the failure is not transient).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log failed and the spill buffer could not take the batch.
    #[error("the log is unavailable and spilling failed: {0}")]
    Spill(#[from] SpillError),
}

impl AppendError {
    /// The error response (503 with `Retry-After`: every cause here is worth a retry).
    pub(crate) fn into_api_error(self) -> ApiError {
        match self {
            AppendError::Spill(SpillError::Full) => {
                tracing::warn!(trace_id = %crate::error::current_trace_id(), "spill buffer full");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the log is unavailable and the local spill buffer is full; retry later",
                )
                .retry_after(5)
            }
            other => ApiError::unavailable("log", other),
        }
    }
}

/// Appends each of `batches` to DOCS durably, concurrently, one message each, so that a
/// log failing part-way still tells which batches are durable. Returns each batch's
/// outcome, in order. Message ids derive from `idempotency_key` when given (a retried
/// request appends nothing new), else from a fresh request id.
///
/// Appends go through the log-publish breaker. With a spill buffer (distributed mode), a
/// batch the log cannot take now (breaker open, transient failure) is spilled instead, and
/// while anything waits in the buffer every batch is spilled, to keep write order.
pub(crate) async fn append_batches(
    state: &AppState,
    batches: &[DocBatch],
    idempotency_key: Option<&str>,
) -> Vec<Result<Durable, AppendError>> {
    let request_key = match idempotency_key {
        Some(key) => format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes())),
        None => uuid::Uuid::now_v7().simple().to_string(),
    };
    let started = Instant::now();
    let appends = batches.iter().enumerate().map(|(i, batch)| {
        let message = OutgoingMessage {
            subject: subjects::docs(&batch.collection, batch.partition),
            msg_id: format!("{request_key}-{i}"),
            payload: batch.encode(),
        };
        let ops = batch.ops.len() as u64;
        let collection = batch.collection.clone();
        async move {
            let durable = append_one(state, message).await?;
            if let Durable::Log(seq) = durable {
                state.inner.backlog.appended(&collection, seq, ops);
            }
            Ok(durable)
        }
    });
    let results = futures_util::future::join_all(appends).await;
    metrics::histogram!(m::LOG_APPEND_DURATION_SECONDS, "stream" => "DOCS")
        .record(started.elapsed().as_secs_f64());
    results
}

async fn append_one(state: &AppState, message: OutgoingMessage) -> Result<Durable, AppendError> {
    let spill = state.inner.spill.as_ref();
    if let Some(spill) = spill.filter(|s| s.has_pending()) {
        return Ok(Durable::Spilled(spill.append(message).await?));
    }
    let log = state.inner.log.clone();
    let direct = message.clone();
    let appended = state
        .inner
        .breakers
        .log_publish
        .call(async move { log.append(StreamKind::Docs, vec![direct]).await })
        .await;
    match appended {
        Ok(seqs) => seqs
            .into_iter()
            .next()
            .map(Durable::Log)
            .ok_or_else(|| LogError::Storage("the log returned no sequence".to_owned()).into()),
        // Same msg id: if the failed append did take effect, the forward is deduplicated.
        Err(error) if error.is_transient() => match spill {
            Some(spill) => {
                tracing::debug!(%error, "log append failed; spilling the batch");
                Ok(Durable::Spilled(spill.append(message).await?))
            }
            None => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    }
}

/// Where all batches went, or the first failure as a 503.
pub(crate) fn all_appended(
    results: Vec<Result<Durable, AppendError>>,
) -> Result<Written, ApiError> {
    let mut written = Written::default();
    for result in results {
        written.add(result.map_err(AppendError::into_api_error)?);
    }
    Ok(written)
}

/// The collection, created with a dynamic schema inferred from `body` if missing.
async fn collection_for_ingest(
    state: &AppState,
    name: &CollectionName,
    body: &Bytes,
) -> Result<std::sync::Arc<CollectionMeta>, ApiError> {
    if let Some(meta) = state.inner.catalog.get(name) {
        return Ok(meta);
    }
    let limits = state.line_limits();
    let sample_body = body.clone();
    let sample = tokio::task::spawn_blocking(move || inference_sample(&sample_body, &limits))
        .await
        .map_err(ApiError::internal)?;
    ensure_collection(state, name, &sample).await
}

/// The collection, created with a dynamic schema inferred from `sample` if missing, once
/// its index shards are ready to consume.
pub(crate) async fn ensure_collection(
    state: &AppState,
    name: &CollectionName,
    sample: &[Map<String, Value>],
) -> Result<std::sync::Arc<CollectionMeta>, ApiError> {
    if let Some(meta) = state.inner.catalog.get(name) {
        return Ok(meta);
    }
    let meta = state
        .inner
        .catalog
        .get_or_create_dynamic(name, sample)
        .await
        .map_err(crate::collections::catalog_error)?;
    state
        .inner
        .visibility
        .wait_index_ready(&meta)
        .await
        .map_err(wait_error)?;
    Ok(meta)
}

/// Maps a failed visibility wait to its error response.
pub(crate) fn wait_error(error: WaitError) -> ApiError {
    match error {
        WaitError::Timeout => ApiError::new(
            ErrorCode::Timeout,
            "the documents are durable but did not become visible within the visibility timeout",
        ),
        WaitError::Log(e) => ApiError::unavailable("log", e),
    }
}

/// Waits (briefly) for one of the bounded ingest permits, then checks the backlog bound
/// ([`crate::admission`]); past either, 429. The permit is held for the whole request,
/// body read included, so it bounds the memory of bodies in flight.
pub(crate) async fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    tokio::time::timeout(
        ADMISSION_WAIT,
        state.inner.ingest_permits.clone().acquire_owned(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::Overloaded,
            "too many ingest requests in flight; retry later",
        )
        .retry_after(1)
    })?
    .map_err(ApiError::internal)
    .and_then(|permit| {
        // Before the body is read: an overloaded node spends nothing on the request.
        state.inner.backlog.admit()?;
        Ok(permit)
    })
}

/// `POST /v1/collections/{c}/documents`
pub async fn ingest_documents(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    params: Result<Query<WriteParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let collection =
        CollectionName::new(collection).map_err(|e| ApiError::new(e.code, e.message))?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    check_ndjson_content_type(&headers)?;
    let idempotency_key = idempotency_key(&headers)?;
    let _permit = admit(&state).await?;

    let body = read_limited(body, state.inner.config.max_body_size.as_u64() as usize).await?;
    require_documents(&body)?;
    let meta = collection_for_ingest(&state, &collection, &body).await?;
    let limits = state.line_limits();
    let batch_limits = BatchLimits {
        max_docs: state.inner.config.max_batch_docs,
        max_bytes: state.inner.config.max_batch_size.as_u64() as usize,
    };
    let body_len = body.len();
    let prepare_meta = meta.clone();
    let prepare_key = idempotency_key.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        prepare(
            &prepare_meta.name,
            &prepare_meta.schema,
            prepare_meta.shards(),
            &body,
            &limits,
            batch_limits,
            prepare_key.as_deref(),
        )
    })
    .await
    .map_err(ApiError::internal)?;

    let label = collection.to_string();
    metrics::counter!(m::INGEST_BYTES_TOTAL, "collection" => label.clone())
        .increment(body_len as u64);
    metrics::counter!(m::INGEST_DOCUMENTS_TOTAL, "collection" => label.clone(), "outcome" => "rejected")
        .increment(prepared.response.rejected as u64);

    let results = append_batches(&state, &prepared.batches, idempotency_key.as_deref()).await;
    let PreparedIngest {
        batch_lines,
        mut response,
        ..
    } = prepared;
    let mut written = Written::default();
    let mut failure = None;
    for (result, lines) in results.into_iter().zip(&batch_lines) {
        match result {
            Ok(durable) => written.add(durable),
            Err(error) => {
                // Not durable: the line must not be reported as accepted.
                for &line in lines {
                    response.ids[line] = None;
                }
                response.accepted -= lines.len();
                failure.get_or_insert(error);
            }
        }
    }
    metrics::counter!(m::INGEST_DOCUMENTS_TOTAL, "collection" => label, "outcome" => "accepted")
        .increment(response.accepted as u64);
    if let Some(error) = failure {
        return Err(error
            .into_api_error()
            .with("accepted", json!(response.accepted))
            .with(
                "ids",
                serde_json::to_value(&response.ids).unwrap_or(Value::Null),
            ));
    }

    if params.wait == WaitFor::Searchable && !written.is_empty() {
        if let Err(e) = state.inner.visibility.wait_searchable(&meta, written).await {
            let ids = serde_json::to_value(&response.ids).unwrap_or(Value::Null);
            return Err(wait_error(e).with("ids", ids));
        }
    }
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::from_json(br#"{"fields":[{"name":"n","type":"i64"}]}"#).unwrap()
    }

    #[test]
    fn lines_split_on_newlines_without_an_empty_tail() {
        let collected: Vec<&[u8]> = lines(b"a\r\nb\n\nc\n").collect();
        assert_eq!(collected, vec![&b"a"[..], b"b", b"", b"c"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"x").count(), 1);
    }

    #[test]
    fn prepare_reports_each_line_and_batches_by_partition() {
        let c = CollectionName::new("c").unwrap();
        let mut body = String::new();
        for i in 0..10 {
            body.push_str(&format!("{{\"id\":\"d{i}\",\"n\":{i}}}\n"));
        }
        body.push_str("{\"id\":\"bad\",\"n\":\"x\"}\n\nnot json\n");
        let prepared = prepare(
            &c,
            &schema(),
            3,
            body.as_bytes(),
            &LineLimits::default(),
            BatchLimits {
                max_docs: 2,
                max_bytes: 1 << 20,
            },
            None,
        );
        let r = &prepared.response;
        assert_eq!((r.accepted, r.rejected), (10, 2));
        assert_eq!(r.ids.len(), 13);
        assert_eq!(r.ids[0].as_deref(), Some("d0"));
        assert_eq!(r.ids[10], None);
        assert_eq!(r.ids[11], None);
        let codes: Vec<_> = r.errors.iter().map(|e| (e.line, e.code)).collect();
        assert_eq!(
            codes,
            vec![(11, ErrorCode::WrongType), (13, ErrorCode::MalformedJson)]
        );
        let ops: usize = prepared.batches.iter().map(|b| b.ops.len()).sum();
        let keyed = |key| {
            prepare(
                &c,
                &schema(),
                3,
                b"{\"n\":1}\n{\"n\":2}\n",
                &LineLimits::default(),
                BatchLimits {
                    max_docs: 2,
                    max_bytes: 1 << 20,
                },
                key,
            )
            .response
            .ids
        };
        assert_eq!(keyed(Some("retry-1")), keyed(Some("retry-1")));
        assert_ne!(keyed(Some("retry-1")), keyed(Some("retry-2")));
        assert_ne!(keyed(None), keyed(None));
        assert_eq!(ops, 10);
        let lines: Vec<usize> = prepared.batch_lines.iter().flatten().copied().collect();
        assert_eq!(lines.len(), 10);
        for (batch, lines) in prepared.batches.iter().zip(&prepared.batch_lines) {
            for (op, line) in batch.ops.iter().zip(lines) {
                assert_eq!(r.ids[*line].as_deref(), Some(op.id().as_str()));
            }
        }
        let small = prepare(
            &c,
            &schema(),
            1,
            body.as_bytes(),
            &LineLimits::default(),
            BatchLimits {
                max_docs: 100,
                max_bytes: 100,
            },
            None,
        );
        assert!(small.batches.len() >= 4, "byte limit splits batches");
        assert_eq!(small.batch_lines.iter().flatten().count(), 10);
        for batch in &prepared.batches {
            assert!(batch.ops.len() <= 2);
            for op in &batch.ops {
                assert_eq!(op.id().partition(3), batch.partition);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the body, every line is answered once, in order: an id for an
        /// accepted line (and exactly one op in the batches), `null` and one coded
        /// error for a rejected one, `null` alone for a blank one.
        #[test]
        fn every_line_of_any_body_is_answered_once(
            lines in prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..40),
                    "\\{\"n\":-?[0-9]{1,20}(,\"id\":\"[a-z]{0,3}\")?\\}".prop_map(String::into_bytes),
                    Just(b"  \r".to_vec()),
                ],
                0..30,
            )
        ) {
            let body: Vec<u8> = lines
                .iter()
                .flat_map(|l| l.iter().copied().filter(|b| *b != b'\n').chain([b'\n']))
                .collect();
            // Blank bodies are refused before this point (`require_documents`).
            prop_assume!(!body.iter().all(u8::is_ascii_whitespace));
            let c = CollectionName::new("c").unwrap();
            let limits = BatchLimits { max_docs: 3, max_bytes: 200 };
            let prepared = prepare(&c, &schema(), 4, &body, &LineLimits::default(), limits, None);
            let r = &prepared.response;
            prop_assert_eq!(r.ids.len(), lines.len());
            let blank = lines
                .iter()
                .filter(|l| l.iter().filter(|b| **b != b'\n').all(u8::is_ascii_whitespace))
                .count();
            prop_assert_eq!(r.accepted + r.rejected + blank, lines.len());
            prop_assert_eq!(r.ids.iter().filter(|id| id.is_some()).count(), r.accepted);
            for error in &r.errors {
                prop_assert!(error.line >= 1 && error.line <= lines.len());
                prop_assert!(r.ids[error.line - 1].is_none());
            }
            let ops: usize = prepared.batches.iter().map(|b| b.ops.len()).sum();
            prop_assert_eq!(ops, r.accepted);
            for batch in &prepared.batches {
                prop_assert!(batch.ops.len() <= 3);
            }
        }
    }
}
