//! `POST /v1/collections/{c}/documents`: NDJSON lines in, durable batches out.
//!
//! One request goes through: admission (a bounded number of ingest requests at once;
//! past it, 429), body read (decoded, size-limited), per-line parse and validation on a
//! blocking thread (CPU work off the async workers), grouping of the accepted lines by
//! partition into [`DocBatch`]es of at most `max_batch_docs` ops, one durable log append
//! for all of them, then optionally a wait until they are searchable.
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
use sluice_core::log::OutgoingMessage;
use sluice_core::metrics as m;
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::schema::Schema;
use sluice_core::store::CollectionMeta;
use sluice_core::subjects::{self, StreamKind};
use sluice_core::{CollectionName, DocId, ErrorCode, Partition, Seq};

use crate::body::{check_ndjson_content_type, read_limited};
use crate::error::ApiError;
use crate::state::AppState;
use crate::visibility::WaitError;

/// How long an ingest request waits for an admission permit before a 429.
const ADMISSION_WAIT: Duration = Duration::from_millis(200);
/// Lines sampled to infer the schema of a collection created on first ingest.
const INFERENCE_SAMPLE_LINES: usize = 100;

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
    /// The answer, as it will be once the batches are durable.
    pub response: IngestResponse,
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
/// batches of at most `max_batch_docs` ops per partition. Ids missing from documents are
/// fresh UUIDv7s, or, under an idempotency key, derived from the key and the line so
/// that every retry of the request assigns the same ones.
pub fn prepare(
    collection: &CollectionName,
    schema: &Schema,
    shards: u32,
    body: &[u8],
    limits: &LineLimits,
    max_batch_docs: usize,
    idempotency_key: Option<&str>,
) -> PreparedIngest {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    let mut by_partition: BTreeMap<Partition, Vec<DocOp>> = BTreeMap::new();
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
            parse_line(line, limits).and_then(|doc| validate_document(schema, doc, assign_id));
        match validated {
            Ok(doc) => {
                accepted += 1;
                ids.push(Some(doc.id.to_string()));
                by_partition
                    .entry(doc.id.partition(shards))
                    .or_default()
                    .push(DocOp::Upsert {
                        id: doc.id,
                        hash: doc.hash,
                        source: Bytes::from(doc.source),
                    });
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
    let batches = by_partition
        .into_iter()
        .flat_map(|(partition, ops)| {
            let chunks: Vec<Vec<DocOp>> =
                ops.chunks(max_batch_docs).map(<[DocOp]>::to_vec).collect();
            chunks.into_iter().map(move |ops| DocBatch {
                collection: collection.clone(),
                partition,
                ops,
            })
        })
        .collect();
    PreparedIngest {
        batches,
        response: IngestResponse {
            accepted,
            rejected: errors.len(),
            ids,
            errors,
        },
    }
}

/// Header making a retried ingest request a no-op (within the log's dedup window).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The request's idempotency key, if it sent a usable one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// Appends `batches` to DOCS durably; returns the highest sequence appended. Message ids
/// derive from `idempotency_key` when given (a retried request appends nothing new), else
/// from a fresh request id.
pub(crate) async fn append_batches(
    state: &AppState,
    batches: &[DocBatch],
    idempotency_key: Option<&str>,
) -> Result<Option<Seq>, ApiError> {
    if batches.is_empty() {
        return Ok(None);
    }
    let request_key = match idempotency_key {
        Some(key) => format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes())),
        None => uuid::Uuid::now_v7().simple().to_string(),
    };
    let messages = batches
        .iter()
        .enumerate()
        .map(|(i, batch)| OutgoingMessage {
            subject: subjects::docs(&batch.collection, batch.partition),
            msg_id: format!("{request_key}-{i}"),
            payload: batch.encode(),
        })
        .collect();
    let started = Instant::now();
    let seqs = state
        .inner
        .log
        .append(StreamKind::Docs, messages)
        .await
        .map_err(|e| ApiError::unavailable("log", e))?;
    metrics::histogram!(m::LOG_APPEND_DURATION_SECONDS, "stream" => "DOCS")
        .record(started.elapsed().as_secs_f64());
    Ok(seqs.into_iter().max())
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
    let meta = state
        .inner
        .catalog
        .get_or_create_dynamic(name, &sample)
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
    let _permit = tokio::time::timeout(
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
    .map_err(ApiError::internal)?;

    let body = read_limited(body, state.inner.config.max_body_size.as_u64() as usize).await?;
    let meta = collection_for_ingest(&state, &collection, &body).await?;
    let limits = state.line_limits();
    let max_batch_docs = state.inner.config.max_batch_docs;
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
            max_batch_docs,
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

    let last_seq = match append_batches(&state, &prepared.batches, idempotency_key.as_deref()).await
    {
        Ok(seq) => seq,
        Err(error) => {
            let nulls = vec![Value::Null; prepared.response.ids.len()];
            return Err(error
                .with("ids", Value::Array(nulls))
                .with("accepted", json!(0)));
        }
    };
    metrics::counter!(m::INGEST_DOCUMENTS_TOTAL, "collection" => label, "outcome" => "accepted")
        .increment(prepared.response.accepted as u64);

    if let (WaitFor::Searchable, Some(seq)) = (params.wait, last_seq) {
        if let Err(e) = state.inner.visibility.wait_searchable(&meta, seq).await {
            let ids = serde_json::to_value(&prepared.response.ids).unwrap_or(Value::Null);
            return Err(wait_error(e).with("ids", ids));
        }
    }
    Ok(Json(prepared.response))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            2,
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
                2,
                key,
            )
            .response
            .ids
        };
        assert_eq!(keyed(Some("retry-1")), keyed(Some("retry-1")));
        assert_ne!(keyed(Some("retry-1")), keyed(Some("retry-2")));
        assert_ne!(keyed(None), keyed(None));
        assert_eq!(ops, 10);
        for batch in &prepared.batches {
            assert!(batch.ops.len() <= 2);
            for op in &batch.ops {
                assert_eq!(op.id().partition(3), batch.partition);
            }
        }
    }
}
