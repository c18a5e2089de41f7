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
//! appended; `ids[i]` answers the `i`-th document line (a blank line carries no document:
//! it is skipped, takes no entry and counts as neither accepted nor rejected, while
//! error `line` numbers count every line of the body); when the append fails, no id is
//! reported durable.
//!
//! Memory: what a request holds besides its body and its accepted ops is bounded by
//! configuration, not by the number of lines. A rejected line costs a counter (only the
//! first `ingest.max_reported_errors` keep an error entry, the rest are counted in
//! `errors_omitted`), a blank line nothing, and the answer is written out as it streams
//! (`ids` last), never built whole in memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{json, Map, Value};
use sluice_core::document::{
    check_field_count, parse_line, validate_document, LineError, LineLimits,
};
use sluice_core::faults::{FaultKind, FaultPoint};
use sluice_core::log::{LogError, OutgoingMessage};
use sluice_core::metrics as m;
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::schema::Schema;
use sluice_core::store::CollectionMeta;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{CollectionName, DocId, ErrorCode, Generation, Partition, Seq};
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
    /// Lines rejected (exact, reported or not).
    pub rejected: usize,
    /// The first rejected lines (at most `ingest.max_reported_errors`), in line order.
    pub errors: Vec<LineRejection>,
    /// Rejected lines past the reported ones (absent when none).
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_omitted: usize,
    /// One entry per document line: the id, or `null` for a rejected line.
    pub ids: LineIds,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl IngestResponse {
    fn new() -> Self {
        Self {
            accepted: 0,
            rejected: 0,
            errors: Vec::new(),
            errors_omitted: 0,
            ids: LineIds::default(),
        }
    }

    /// Records a rejected line: an entry while fewer than `max_reported` are listed, a
    /// count past that.
    fn reject(&mut self, rejection: LineRejection, max_reported: usize) {
        self.rejected += 1;
        self.ids.push_rejected();
        if self.errors.len() < max_reported {
            self.errors.push(rejection);
        } else {
            self.errors_omitted += 1;
        }
    }
}

/// The `ids` of an answer, compact: one entry per document line, but only accepted lines
/// cost memory (their id, in one shared buffer); a rejected line is a gap.
#[derive(Debug, Default)]
pub struct LineIds {
    /// Document lines answered.
    lines: usize,
    /// Accepted lines in order: (index in `ids`, end of its id in `text`).
    accepted: Vec<(usize, usize)>,
    /// The accepted ids, concatenated.
    text: String,
}

impl LineIds {
    fn push_accepted(&mut self, id: &str) {
        self.text.push_str(id);
        self.accepted.push((self.lines, self.text.len()));
        self.lines += 1;
    }

    fn push_rejected(&mut self) {
        self.lines += 1;
    }

    /// Entries answered.
    pub fn len(&self) -> usize {
        self.lines
    }

    /// Whether no document line was answered.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Turns the entries at `indexes` into `null` (their lines turned out not durable).
    fn forget(&mut self, indexes: &std::collections::HashSet<usize>) {
        let mut kept = String::new();
        let mut start = 0;
        let mut accepted = Vec::new();
        for &(index, end) in &self.accepted {
            if !indexes.contains(&index) {
                kept.push_str(&self.text[start..end]);
                accepted.push((index, kept.len()));
            }
            start = end;
        }
        self.text = kept;
        self.accepted = accepted;
    }

    /// Every entry in order: the id, or `None` for a rejected line.
    pub fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        let mut accepted = self.accepted.iter().peekable();
        let mut start = 0;
        (0..self.lines).map(move |index| match accepted.peek() {
            Some(&&(at, end)) if at == index => {
                accepted.next();
                let id = &self.text[start..end];
                start = end;
                Some(id)
            }
            _ => None,
        })
    }
}

impl Serialize for LineIds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.lines))?;
        for id in self.iter() {
            seq.serialize_element(&id)?;
        }
        seq.end()
    }
}

/// Bytes of the answer written per chunk of the streamed body.
const ANSWER_CHUNK_BYTES: usize = 64 * 1024;

impl IntoResponse for IngestResponse {
    /// Streams the answer: the counts and the reported errors first, then `ids` in
    /// chunks, so an answer as long as its request never sits whole in memory.
    fn into_response(self) -> Response {
        let mut head = match serde_json::to_vec(&AnswerHead {
            accepted: self.accepted,
            rejected: self.rejected,
            errors: &self.errors,
            errors_omitted: self.errors_omitted,
        }) {
            Ok(head) => head,
            Err(e) => return ApiError::internal(e).into_response(),
        };
        head.pop(); // the closing brace: `ids` follows
        head.extend_from_slice(b",\"ids\":[");
        let ids = self.ids;
        let chunks = futures_util::stream::unfold(
            (Some(head), 0usize, 0usize, false),
            move |(head, next_line, next_accepted, done)| {
                let chunk = if let Some(head) = head {
                    Some((head, (None, next_line, next_accepted, done)))
                } else if done {
                    None
                } else {
                    let mut out = Vec::with_capacity(ANSWER_CHUNK_BYTES + 256);
                    let (mut line, mut accepted) = (next_line, next_accepted);
                    while line < ids.lines && out.len() < ANSWER_CHUNK_BYTES {
                        if line > 0 {
                            out.push(b',');
                        }
                        match ids.accepted.get(accepted) {
                            Some(&(at, end)) if at == line => {
                                let start = accepted
                                    .checked_sub(1)
                                    .map_or(0, |previous| ids.accepted[previous].1);
                                // Ids have no control characters; quotes and
                                // backslashes still need escaping.
                                let _ = serde_json::to_writer(&mut out, &ids.text[start..end]);
                                accepted += 1;
                            }
                            _ => out.extend_from_slice(b"null"),
                        }
                        line += 1;
                    }
                    let done = line == ids.lines;
                    if done {
                        out.extend_from_slice(b"]}");
                    }
                    Some((out, (None, line, accepted, done)))
                };
                std::future::ready(chunk.map(|(bytes, state)| {
                    (Ok::<_, std::convert::Infallible>(Bytes::from(bytes)), state)
                }))
            },
        );
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from_stream(chunks),
        )
            .into_response()
    }
}

/// Everything of an [`IngestResponse`] but `ids`, serialized ahead of them.
#[derive(Serialize)]
struct AnswerHead<'a> {
    accepted: usize,
    rejected: usize,
    errors: &'a [LineRejection],
    #[serde(skip_serializing_if = "is_zero")]
    errors_omitted: usize,
}

/// A request's lines, validated and grouped into log batches.
#[derive(Debug)]
pub struct PreparedIngest {
    /// Batches to append, by partition then request order.
    pub batches: Vec<DocBatch>,
    /// For each batch, the `ids` entries (document lines, 0-based) its ops came from,
    /// in op order.
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
/// A document that would take the inferred schema past `max_fields` is left out (it is
/// refused with `too_many_fields` when the lines are validated).
pub fn inference_sample(
    body: &[u8],
    limits: &LineLimits,
    max_fields: usize,
) -> Vec<Map<String, Value>> {
    let mut sample = InferenceSample::new(max_fields);
    for line in lines(body)
        .filter(|line| !is_blank(line))
        .take(INFERENCE_SAMPLE_LINES)
    {
        if let Ok(doc) = parse_line(line, limits) {
            sample.offer(doc);
        }
    }
    sample.docs
}

/// The documents a new collection's schema is inferred from, and that schema so far.
pub(crate) struct InferenceSample {
    schema: Schema,
    max_fields: usize,
    /// The documents kept, in order.
    pub(crate) docs: Vec<Map<String, Value>>,
}

impl InferenceSample {
    pub(crate) fn new(max_fields: usize) -> Self {
        Self {
            schema: Schema::dynamic(),
            max_fields,
            docs: Vec::new(),
        }
    }

    /// Keeps `doc` (and infers from it) unless that would take the schema past the
    /// field limit: the catalog infers the same schema from the kept documents.
    pub(crate) fn offer(&mut self, doc: Map<String, Value>) {
        if check_field_count(&self.schema, &doc, self.max_fields).is_ok() {
            self.schema.infer_from(&doc);
            self.docs.push(doc);
        }
    }
}

/// Per-request bounds of [`prepare`], from the ingest configuration.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Size and nesting of one line.
    pub line: LineLimits,
    /// Most error entries in the answer (`ingest.max_reported_errors`).
    pub max_reported_errors: usize,
    /// Most fields per collection (`ingest.max_fields_per_collection`).
    pub max_fields: usize,
}

/// Validates every line of `body` against `schema` and groups the accepted ones into
/// batches within `limits` per partition. Ids missing from documents are
/// fresh UUIDv7s, or, under an idempotency key, derived from the key and the line so
/// that every retry of the request assigns the same ones.
pub fn prepare(
    meta: &CollectionMeta,
    body: &[u8],
    limits: BatchLimits,
    request: RequestLimits,
    idempotency_key: Option<&str>,
) -> PreparedIngest {
    let (schema, shards) = (&meta.schema, meta.shards());
    let mut response = IngestResponse::new();
    let mut by_partition: BTreeMap<Partition, Vec<(usize, DocOp)>> = BTreeMap::new();
    for (index, line) in lines(body).enumerate() {
        if is_blank(line) {
            continue;
        }
        let entry = response.ids.len();
        let assign_id = || match idempotency_key {
            Some(key) => DocId::derived(key, index + 1),
            None => DocId::generate(),
        };
        let validated = parse_line(line, &request.line).and_then(|doc| {
            check_field_count(schema, &doc, request.max_fields)?;
            let valid = validate_document(schema, doc, assign_id)?;
            request.line.check_stored(&valid)?;
            Ok(valid)
        });
        match validated {
            Ok(doc) => {
                response.accepted += 1;
                response.ids.push_accepted(doc.id.as_str());
                by_partition
                    .entry(doc.id.partition(shards))
                    .or_default()
                    .push((
                        entry,
                        DocOp::Upsert {
                            id: doc.id,
                            hash: doc.hash,
                            source: Bytes::from(doc.source),
                        },
                    ));
            }
            Err(LineError { code, message }) => response.reject(
                LineRejection {
                    line: index + 1,
                    code,
                    message,
                },
                request.max_reported_errors,
            ),
        }
    }
    let (batches, batch_lines) =
        group_into_batches(&meta.name, meta.generation, by_partition, limits);
    PreparedIngest {
        batches,
        batch_lines,
        response,
    }
}

/// Cuts each partition's ops (with the 0-based input line or item each came from) into
/// batches within `limits`, keeping request order inside a partition so that later ops
/// on an id get later sequences. Returns the batches and, for each, its ops' lines.
pub(crate) fn group_into_batches(
    collection: &CollectionName,
    generation: Generation,
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
                    generation,
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
                generation,
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
    metrics::histogram!(m::INGEST_DURABLE_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    results
}

async fn append_one(state: &AppState, message: OutgoingMessage) -> Result<Durable, AppendError> {
    let spill = state.inner.spill.as_ref();
    if let Some(spill) = spill.filter(|s| s.has_pending()) {
        return Ok(Durable::Spilled(spill.append(message).await?));
    }
    let log = state.inner.log.clone();
    let direct = message.clone();
    let appended = match state.inner.faults.inject(FaultPoint::LogAppend, None).await {
        Ok(()) => log.append(StreamKind::Docs, vec![direct]).await,
        Err(FaultKind::Timeout) => Err(LogError::Timeout),
        Err(kind) => Err(LogError::Unavailable(format!("injected {kind:?}"))),
    };
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
    let max_fields = state.inner.config.max_fields_per_collection;
    let sample_body = body.clone();
    let sample =
        tokio::task::spawn_blocking(move || inference_sample(&sample_body, &limits, max_fields))
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
) -> Result<IngestResponse, ApiError> {
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
    let request_limits = RequestLimits {
        line: limits,
        max_reported_errors: state.inner.config.max_reported_errors,
        max_fields: state.inner.config.max_fields_per_collection,
    };
    let body_len = body.len();
    let prepare_meta = meta.clone();
    let prepare_key = idempotency_key.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        prepare(
            &prepare_meta,
            &body,
            batch_limits,
            request_limits,
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
    let mut not_durable = std::collections::HashSet::new();
    for (result, lines) in results.into_iter().zip(&batch_lines) {
        match result {
            Ok(durable) => written.add(durable),
            Err(error) => {
                // Not durable: the line must not be reported as accepted.
                not_durable.extend(lines.iter().copied());
                response.accepted -= lines.len();
                failure.get_or_insert(error);
            }
        }
    }
    if !not_durable.is_empty() {
        response.ids.forget(&not_durable);
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
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::from_json(br#"{"fields":[{"name":"n","type":"i64"}]}"#).unwrap()
    }

    fn meta_of(collection: &CollectionName, shards: u32) -> CollectionMeta {
        let mut schema = schema();
        schema.shards = Some(shards);
        CollectionMeta {
            name: collection.clone(),
            schema,
            dynamic: false,
            schema_version: 1,
            created_at_ms: 0,
            generation: Generation(1),
            state: sluice_core::store::CollectionState::Active,
        }
    }

    const REQUEST: RequestLimits = RequestLimits {
        line: LineLimits {
            max_line_bytes: 1 << 20,
            max_depth: 64,
        },
        max_reported_errors: 1_000,
        max_fields: 1_000,
    };

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
            &meta_of(&c, 3),
            body.as_bytes(),
            BatchLimits {
                max_docs: 2,
                max_bytes: 1 << 20,
            },
            REQUEST,
            None,
        );
        let r = &prepared.response;
        assert_eq!((r.accepted, r.rejected), (10, 2));
        // The blank line takes no entry; error lines still count it.
        let ids: Vec<Option<&str>> = r.ids.iter().collect();
        assert_eq!(ids.len(), 12);
        assert_eq!(ids[0], Some("d0"));
        assert_eq!(ids[10], None);
        assert_eq!(ids[11], None);
        let codes: Vec<_> = r.errors.iter().map(|e| (e.line, e.code)).collect();
        assert_eq!(
            codes,
            vec![(11, ErrorCode::WrongType), (13, ErrorCode::MalformedJson)]
        );
        let ops: usize = prepared.batches.iter().map(|b| b.ops.len()).sum();
        let keyed = |key| {
            prepare(
                &meta_of(&c, 3),
                b"{\"n\":1}\n{\"n\":2}\n",
                BatchLimits {
                    max_docs: 2,
                    max_bytes: 1 << 20,
                },
                REQUEST,
                key,
            )
            .response
            .ids
            .iter()
            .map(|id| id.map(str::to_owned))
            .collect::<Vec<_>>()
        };
        assert_eq!(keyed(Some("retry-1")), keyed(Some("retry-1")));
        assert_ne!(keyed(Some("retry-1")), keyed(Some("retry-2")));
        assert_ne!(keyed(None), keyed(None));
        assert_eq!(ops, 10);
        let lines: Vec<usize> = prepared.batch_lines.iter().flatten().copied().collect();
        assert_eq!(lines.len(), 10);
        for (batch, lines) in prepared.batches.iter().zip(&prepared.batch_lines) {
            for (op, line) in batch.ops.iter().zip(lines) {
                assert_eq!(ids[*line], Some(op.id().as_str()));
            }
        }
        let small = prepare(
            &meta_of(&c, 1),
            body.as_bytes(),
            BatchLimits {
                max_docs: 100,
                max_bytes: 100,
            },
            REQUEST,
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

    /// One hostile NDJSON line (no `\n` inside): garbage bytes, good documents, blank
    /// and CRLF lines, deep nesting, wide objects, huge and duplicate keys, invalid UTF-8,
    /// control bytes, and any of those cut short.
    fn hostile_line() -> impl Strategy<Value = Vec<u8>> {
        let good =
            || "\\{\"n\":-?[0-9]{1,20}(,\"id\":\"[a-z]{0,3}\")?\\}".prop_map(String::into_bytes);
        let raw = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            good(),
            prop_oneof![Just(""), Just("  \r"), Just("\t"), Just("\r")]
                .prop_map(|b| b.as_bytes().to_vec()),
            (0usize..200, any::<bool>()).prop_map(|(depth, arrays)| {
                let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
                format!(
                    "{{\"n\":1,\"d\":{}1{}}}",
                    open.repeat(depth),
                    close.repeat(depth)
                )
                .into_bytes()
            }),
            (0usize..300, 1usize..4).prop_map(|(keys, depth)| {
                let inner: Vec<String> = (0..keys).map(|k| format!("\"k{k}\":{k}")).collect();
                let mut object = format!("{{{}}}", inner.join(","));
                for _ in 1..depth {
                    object = format!("{{\"o\":{object},\"p\":[{object},{object}]}}");
                }
                format!("{{\"n\":1,\"w\":{object}}}").into_bytes()
            }),
            (0usize..6000)
                .prop_map(|len| format!("{{\"n\":1,\"{}\":1}}", "k".repeat(len)).into_bytes()),
            Just(b"{\"n\":1,\"n\":2}".to_vec()),
            Just(b"{\"n\":1,\"o\":{\"x\":1,\"x\":2}}".to_vec()),
            (good(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut line, at, byte)| {
                // Invalid UTF-8 or a control byte somewhere in a good line.
                let byte = if byte < 0x80 { byte % 0x20 } else { 0xff };
                line.insert(at.index(line.len() + 1), byte);
                line
            }),
            good().prop_map(|mut line| {
                line.extend_from_slice(b"\r");
                line
            }),
        ];
        (raw, any::<bool>(), any::<prop::sample::Index>()).prop_map(|(line, cut, at)| {
            let mut line: Vec<u8> = line.into_iter().filter(|b| *b != b'\n').collect();
            if cut {
                line.truncate(at.index(line.len() + 1));
            }
            line
        })
    }

    /// Codes a line may be rejected with.
    const LINE_CODES: [ErrorCode; 12] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidUtf8,
        ErrorCode::NotAnObject,
        ErrorCode::WrongType,
        ErrorCode::MissingField,
        ErrorCode::UnknownField,
        ErrorCode::InvalidId,
        ErrorCode::NumberOutOfRange,
        ErrorCode::LineTooLarge,
        ErrorCode::NestingTooDeep,
        ErrorCode::DuplicateKey,
        ErrorCode::TooManyFields,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the body, nothing panics and every line is answered once, in order:
        /// an id for an accepted line (and exactly one op in the batches), `null` and a
        /// stable per-line code for a rejected one, nothing for a blank one; at most
        /// `max_reported_errors` error entries, the first ones in line order, the rest
        /// counted; and the streamed answer is the same JSON as the serialized one.
        #[test]
        fn every_line_of_any_hostile_body_is_answered_once(
            lines in prop::collection::vec(hostile_line(), 0..30),
            trailing_newline in any::<bool>(),
        ) {
            let mut body = lines.join(&b'\n');
            if trailing_newline {
                body.push(b'\n');
            }
            // Blank bodies are refused before this point (`require_documents`).
            prop_assume!(!body.iter().all(u8::is_ascii_whitespace));
            let c = CollectionName::new("c").unwrap();
            let limits = BatchLimits { max_docs: 3, max_bytes: 200 };
            let request = RequestLimits {
                line: LineLimits { max_line_bytes: 4096, max_depth: 16 },
                max_reported_errors: 3,
                max_fields: 50,
            };
            let prepared = prepare(&meta_of(&c, 4), &body, limits, request, None);
            let r = &prepared.response;
            // A body without a trailing newline still ends its last line; an empty last
            // line after a final newline is no line.
            let lines: Vec<&Vec<u8>> = lines.iter().collect();
            let lines = if !trailing_newline && lines.last().is_some_and(|l| l.is_empty()) {
                &lines[..lines.len() - 1]
            } else {
                &lines[..]
            };
            let blank = lines.iter().filter(|l| l.iter().all(u8::is_ascii_whitespace)).count();
            prop_assert_eq!(r.ids.len(), lines.len() - blank);
            prop_assert_eq!(r.accepted + r.rejected, lines.len() - blank);
            let ids: Vec<Option<&str>> = r.ids.iter().collect();
            prop_assert_eq!(ids.iter().filter(|id| id.is_some()).count(), r.accepted);
            prop_assert_eq!(r.errors.len(), r.rejected.min(3));
            prop_assert_eq!(r.errors_omitted, r.rejected - r.errors.len());
            let mut previous = 0;
            for error in &r.errors {
                prop_assert!(error.line > previous && error.line <= lines.len());
                prop_assert!(LINE_CODES.contains(&error.code), "{:?}", error.code);
                prop_assert!(!lines[error.line - 1].iter().all(u8::is_ascii_whitespace));
                previous = error.line;
            }
            let ops: usize = prepared.batches.iter().map(|b| b.ops.len()).sum();
            prop_assert_eq!(ops, r.accepted);
            for batch in &prepared.batches {
                prop_assert!(batch.ops.len() <= 3);
            }
            let serialized = serde_json::to_value(r).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let streamed = runtime.block_on(async {
                let body = prepared.response.into_response().into_body();
                axum::body::to_bytes(body, usize::MAX).await.unwrap()
            });
            let streamed: Value = serde_json::from_slice(&streamed).unwrap();
            prop_assert_eq!(streamed, serialized);
        }
    }
}
