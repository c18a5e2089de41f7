//! Elasticsearch single-document writes and multi-get: `PUT|POST /{index}/_doc/{id}`,
//! `POST /{index}/_doc`, `PUT|POST /{index}/_create/{id}`, `DELETE /{index}/_doc/{id}`,
//! `GET|POST /_mget` and `GET|POST /{index}/_mget`.
//!
//! A write is a `_bulk` request of one item: the handler frames the document as an action
//! line and a source line and runs it through [`crate::es_bulk::execute`], so admission,
//! validation, the schema of an index created on first write, the durable append, the
//! `refresh` wait and the failure rules are the bulk API's, item for item. A body may be
//! pretty-printed: whitespace between JSON tokens is removed byte by byte (nothing is
//! parsed or rewritten), so the item is validated exactly as a `_bulk` source line is,
//! duplicate keys and depth limits included.
//!
//! What Elasticsearch answers and `_bulk` does not know:
//! - `index` with an id says `updated` (200) rather than `created` (201) when the document
//!   existed: the handler reads it first, read-your-writes like `GET`.
//! - `DELETE` of a document that does not exist is a 404 with `result: not_found`, and
//!   nothing is appended: the handler reads it first.
//!
//! Those reads only choose the answer's `result`; they are not one atomic step with the
//! append, so two concurrent `index` writers of one id can both be told `created` (the
//! later append wins, as in `_bulk`). `_create` and `if_seq_no`/`if_primary_term`
//! writes are atomic per document ([`crate::id_locks`], through `_bulk`): one of two
//! concurrent creates conflicts, and `if_seq_no` compares with the current version's
//! `_seq_no` (the op's log sequence, which every write answer reports). `_version` is
//! always 1: sluice keeps no version counter, and `version` is refused.
//!
//! `_mget` reads each document like `GET /{index}/_doc/{id}` (read-your-writes, from the
//! store), a bounded number at a time, and answers them in request order; an index that
//! does not exist fails its own documents only, as in Elasticsearch.

use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::{CollectionName, DocId, ErrorCode};

use crate::body::read_limited;
use crate::bulk::{admit, idempotency_key, WaitFor};
use crate::documents::read_document;
use crate::error::ApiError;
use crate::es_bulk::{execute, BulkParams, ItemOutcome};
use crate::es_error::EsError;
use crate::state::AppState;

/// Query parameters of the single-document writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocWriteParams {
    /// `true` or `wait_for` (or empty): answer once searchable; `false` (default): once
    /// durable.
    #[serde(default)]
    pub refresh: Option<String>,
    /// sluice's own `durable` (default) or `searchable`.
    #[serde(default)]
    pub wait: Option<WaitFor>,
    /// `index` (default) or `create` (fail with 409 when the id exists).
    #[serde(default)]
    pub op_type: Option<String>,
    /// Accepted and ignored: sluice places documents by id.
    #[serde(default)]
    pub routing: Option<String>,
    /// Accepted and ignored (the visibility timeout bounds waits).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub wait_for_active_shards: Option<String>,
    /// Accepted and ignored: there are no aliases.
    #[serde(default)]
    pub require_alias: Option<String>,
    /// Refused: no ingest pipelines.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Refused: no per-document versions.
    #[serde(default)]
    pub version: Option<String>,
    /// Refused: no per-document versions.
    #[serde(default)]
    pub version_type: Option<String>,
    /// Optimistic concurrency: write only if the document's current `_seq_no` is this.
    #[serde(default)]
    pub if_seq_no: Option<u64>,
    /// With `if_seq_no`: the primary term, always 1 here.
    #[serde(default)]
    pub if_primary_term: Option<u64>,
}

impl DocWriteParams {
    /// The wait, refusing what sluice cannot honour.
    fn wait(&self) -> Result<WaitFor, EsError> {
        let refused = [
            ("pipeline", &self.pipeline),
            ("version", &self.version),
            ("version_type", &self.version_type),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, value)| value.is_some()) {
            return Err(EsError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is not supported: sluice has no ingest pipelines or version counters (use if_seq_no)"),
            ));
        }
        let bulk = BulkParams {
            wait: self.wait,
            refresh: self.refresh.clone(),
            ..BulkParams::default()
        };
        Ok(bulk.wait()?)
    }

    /// Adds `if_seq_no` and `if_primary_term` to an item's metadata (the bulk reader
    /// checks them).
    fn add_concurrency(&self, meta: &mut Value) {
        if let Some(seq_no) = self.if_seq_no {
            meta["if_seq_no"] = json!(seq_no);
        }
        if let Some(primary_term) = self.if_primary_term {
            meta["if_primary_term"] = json!(primary_term);
        }
    }

    /// Whether the write may only create.
    fn create_only(&self) -> Result<bool, EsError> {
        match self.op_type.as_deref() {
            None | Some("index") => Ok(false),
            Some("create") => Ok(true),
            Some(_) => Err(EsError::new(
                ErrorCode::InvalidRequest,
                "op_type must be index or create",
            )),
        }
    }
}

fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, EsError> {
    params
        .map(|Query(params)| params)
        .map_err(|e| EsError::new(ErrorCode::InvalidRequest, e.body_text()))
}

/// The body as one line: whitespace between JSON tokens removed (never inside strings).
/// A raw line break inside a string is not JSON; it is refused rather than let it split
/// the item.
fn one_line(body: &[u8]) -> Result<Vec<u8>, EsError> {
    let mut out = Vec::with_capacity(body.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in body {
        if in_string {
            if byte == b'\n' || byte == b'\r' {
                return Err(EsError::new(
                    ErrorCode::MalformedJson,
                    "the document is not valid JSON: a raw line break inside a string",
                ));
            }
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            out.push(byte);
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            if byte == b'"' {
                in_string = true;
            }
            out.push(byte);
        }
    }
    if out.is_empty() {
        return Err(EsError::new(
            ErrorCode::InvalidRequest,
            "the request body is missing: send the document as a JSON object",
        ));
    }
    Ok(out)
}

/// The `_shards` member of a write answer: one copy, written.
fn shards() -> Value {
    json!({"total": 1, "successful": 1, "failed": 0})
}

/// A write's answer in Elasticsearch's shape; `seq_no` is the op's log sequence (0 when
/// nothing was appended, or the write was spilled while the log was down).
fn write_answer(
    index: &str,
    id: &str,
    status: u16,
    result: &str,
    seq_no: Option<u64>,
) -> (StatusCode, Json<Value>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(json!({
            "_index": index, "_id": id, "_version": 1, "result": result,
            "_shards": shards(), "_seq_no": seq_no.unwrap_or(0),
            "_primary_term": crate::es_bulk::PRIMARY_TERM,
        })),
    )
}

/// Whether `id` exists in `index` now (read-your-writes); `false` when the index does
/// not exist yet.
async fn exists(state: &AppState, index: &str, id: &str) -> Result<bool, EsError> {
    let Ok(name) = CollectionName::new(index) else {
        // The write itself says what is wrong with the name.
        return Ok(false);
    };
    let Ok(id) = DocId::new(id) else {
        return Ok(false);
    };
    if state.inner.catalog.get(&name).is_none() {
        return Ok(false);
    }
    Ok(read_document(state, &name, &id).await?.found.is_some())
}

/// Runs one item through `_bulk`: its action line (and source), the wait, the outcome.
async fn run_item(
    state: &AppState,
    headers: &HeaderMap,
    action: Value,
    source: Option<Vec<u8>>,
    wait: WaitFor,
) -> Result<ItemOutcome, EsError> {
    let mut body = serde_json::to_vec(&action).map_err(ApiError::internal)?;
    body.push(b'\n');
    if let Some(source) = source {
        body.extend_from_slice(&source);
        body.push(b'\n');
    }
    let key = idempotency_key(headers)?;
    let response = execute(
        state.clone(),
        None,
        wait,
        key,
        Bytes::from(body),
        Instant::now(),
    )
    .await?;
    let outcome = response
        .into_single()
        .ok_or_else(|| ApiError::internal("a bulk request of one item answered no item"))?;
    match &outcome.error {
        Some((kind, reason)) => Err(EsError::from_item(outcome.status, kind, reason.clone())),
        None => Ok(outcome),
    }
}

/// What a document write is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Insert or replace.
    Index,
    /// Insert only.
    Create,
}

async fn write(
    state: AppState,
    index: String,
    id: Option<String>,
    kind: Write,
    params: DocWriteParams,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), EsError> {
    let wait = params.wait()?;
    let kind = if params.create_only()? {
        Write::Create
    } else {
        kind
    };
    let _permit = admit(&state).await?;
    let body = read_limited(body, state.inner.config.max_body_size.as_u64() as usize).await?;
    let source = one_line(&body)?;
    drop(body);
    let existed = match (&id, kind) {
        (Some(id), Write::Index) => exists(&state, &index, id).await?,
        _ => false,
    };
    let action_name = match kind {
        Write::Index => "index",
        Write::Create => "create",
    };
    let mut meta = json!({"_index": index});
    if let Some(id) = &id {
        meta["_id"] = json!(id);
    }
    params.add_concurrency(&mut meta);
    let outcome = run_item(
        &state,
        &headers,
        json!({ action_name: meta }),
        Some(source),
        wait,
    )
    .await?;
    let id = outcome.id.unwrap_or_default();
    Ok(if existed {
        write_answer(&index, &id, 200, "updated", outcome.seq_no)
    } else {
        write_answer(&index, &id, 201, "created", outcome.seq_no)
    })
}

/// `PUT|POST /{index}/_doc/{id}`: index (or, with `op_type=create`, create) a document.
pub async fn index_with_id(
    State(state): State<AppState>,
    Path((index, id)): Path<(String, String)>,
    params: Result<Query<DocWriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), EsError> {
    let params = query(params)?;
    write(state, index, Some(id), Write::Index, params, headers, body).await
}

/// `POST /{index}/_doc`: index a document under an assigned id.
pub async fn index_auto_id(
    State(state): State<AppState>,
    Path(index): Path<String>,
    params: Result<Query<DocWriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), EsError> {
    let params = query(params)?;
    write(state, index, None, Write::Index, params, headers, body).await
}

/// `PUT|POST /{index}/_create/{id}`: create a document; 409
/// `version_conflict_engine_exception` when the id exists.
pub async fn create(
    State(state): State<AppState>,
    Path((index, id)): Path<(String, String)>,
    params: Result<Query<DocWriteParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), EsError> {
    let params = query(params)?;
    write(state, index, Some(id), Write::Create, params, headers, body).await
}

/// `DELETE /{index}/_doc/{id}`: 200 `deleted`, or 404 `not_found` (nothing appended).
pub async fn delete(
    State(state): State<AppState>,
    Path((index, id)): Path<(String, String)>,
    params: Result<Query<DocWriteParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Value>), EsError> {
    let params = query(params)?;
    let wait = params.wait()?;
    if params.op_type.is_some() {
        return Err(EsError::new(
            ErrorCode::InvalidRequest,
            "op_type does not apply to a delete",
        ));
    }
    let name = CollectionName::new(&index).map_err(|e| EsError::new(e.code, e.message))?;
    if state.inner.catalog.get(&name).is_none() {
        return Err(EsError::index_not_found(&index));
    }
    let doc_id = DocId::new(&id).map_err(|e| EsError::new(e.code, e.message))?;
    if read_document(&state, &name, &doc_id).await?.found.is_none() {
        return Ok(write_answer(&index, &id, 404, "not_found", None));
    }
    let _permit = admit(&state).await?;
    let mut meta = json!({"_index": index, "_id": id});
    params.add_concurrency(&mut meta);
    let outcome = run_item(&state, &headers, json!({ "delete": meta }), None, wait).await?;
    Ok(write_answer(
        &index,
        outcome.id.as_deref().unwrap_or(&id),
        200,
        "deleted",
        outcome.seq_no,
    ))
}

/// Most documents one `_mget` may name.
pub const MAX_MGET_DOCS: usize = 10_000;
/// Documents read at once by one `_mget`.
const MGET_READS_IN_FLIGHT: usize = 16;

/// Query parameters of `_mget`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MgetParams {
    /// Accepted and ignored: every read is real-time (read-your-writes).
    #[serde(default)]
    pub realtime: Option<String>,
    /// Accepted and ignored: reads come from the store, which needs no refresh.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub routing: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub preference: Option<String>,
}

/// One document of an `_mget` body's `docs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MgetDoc {
    #[serde(rename = "_index", default)]
    index: Option<String>,
    #[serde(rename = "_id")]
    id: String,
    /// Accepted and ignored.
    #[serde(rename = "routing", default)]
    _routing: Option<serde::de::IgnoredAny>,
}

/// An `_mget` body: `docs` or `ids` (with the index from the path).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MgetBody {
    #[serde(default)]
    docs: Option<Vec<MgetDoc>>,
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// The `(index, id)` pairs an `_mget` body names, in order.
fn mget_targets(body: &[u8], path_index: Option<&str>) -> Result<Vec<(String, String)>, EsError> {
    let invalid = |message: String| EsError::new(ErrorCode::InvalidRequest, message);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the _mget body is not JSON: {e}")))?;
    let Value::Object(members) = &value else {
        return Err(invalid("the _mget body must be a JSON object".to_owned()));
    };
    // A null member is refused, not read as absent.
    let docs = members.get("docs").and_then(Value::as_array);
    let nested = docs
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|doc| doc.iter());
    if let Some((name, _)) = members.iter().chain(nested).find(|(_, v)| v.is_null()) {
        return Err(invalid(format!("{name} is null in the _mget body")));
    }
    let parsed: MgetBody =
        serde_json::from_value(value).map_err(|e| invalid(format!("the _mget body: {e}")))?;
    let targets: Vec<(Option<String>, String)> = match (parsed.docs, parsed.ids) {
        (Some(docs), None) => docs.into_iter().map(|d| (d.index, d.id)).collect(),
        (None, Some(ids)) => ids.into_iter().map(|id| (None, id)).collect(),
        _ => {
            return Err(invalid(
                "the _mget body takes exactly one of docs and ids".to_owned(),
            ))
        }
    };
    if targets.is_empty() {
        return Err(invalid("no documents requested".to_owned()));
    }
    if targets.len() > MAX_MGET_DOCS {
        return Err(invalid(format!(
            "at most {MAX_MGET_DOCS} documents per _mget"
        )));
    }
    targets
        .into_iter()
        .enumerate()
        .map(|(i, (index, id))| {
            let index = index
                .or_else(|| path_index.map(str::to_owned))
                .ok_or_else(|| invalid(format!("docs[{i}]: _index is missing")))?;
            Ok((index, id))
        })
        .collect()
}

/// One document of the answer: found, not found, or its own error.
async fn mget_one(state: &AppState, index: String, id: String) -> Result<Value, ApiError> {
    let failed =
        |error: EsError| json!({"_index": index, "_id": id, "error": error.error_object()});
    let name = match CollectionName::new(&index) {
        Ok(name) => name,
        Err(e) => return Ok(failed(EsError::new(e.code, e.message))),
    };
    if state.inner.catalog.get(&name).is_none() {
        return Ok(failed(EsError::index_not_found(&index)));
    }
    let doc_id = match DocId::new(&id) {
        Ok(doc_id) => doc_id,
        Err(e) => return Ok(failed(EsError::new(e.code, e.message))),
    };
    let read = read_document(state, &name, &doc_id).await?;
    Ok(match read.found {
        Some((source, _)) => {
            let source: Value = serde_json::from_slice(&source).map_err(ApiError::internal)?;
            json!({"_index": index, "_id": id, "_version": 1,
                   "_seq_no": read.seq.map_or(0, |seq| seq.0),
                   "_primary_term": crate::es_bulk::PRIMARY_TERM, "found": true, "_source": source})
        }
        None => json!({"_index": index, "_id": id, "found": false}),
    })
}

async fn mget_run(
    state: AppState,
    path_index: Option<String>,
    params: Result<Query<MgetParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    query(params)?;
    if let Some(index) = &path_index {
        // A name that cannot be an index refuses the request; one that is not there
        // fails its documents only.
        CollectionName::new(index).map_err(|e| EsError::new(e.code, e.message))?;
    }
    let targets = mget_targets(&body, path_index.as_deref())?;
    let docs: Vec<Value> = futures_util::stream::iter(targets)
        .map(|(index, id)| mget_one(&state, index, id))
        .buffered(MGET_READS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({ "docs": docs })))
}

/// `GET|POST /_mget`
pub async fn mget(
    State(state): State<AppState>,
    params: Result<Query<MgetParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    mget_run(state, None, params, body).await
}

/// `GET|POST /{index}/_mget`
pub async fn mget_for_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    params: Result<Query<MgetParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    mget_run(state, Some(index), params, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pretty_printed_document_becomes_one_line_with_strings_untouched() {
        let body = b"{\n  \"title\" : \"red  fox\\n\\\"x\\\" \",\n\t\"n\": [1, 2]\r\n}\n";
        assert_eq!(
            one_line(body).unwrap(),
            b"{\"title\":\"red  fox\\n\\\"x\\\" \",\"n\":[1,2]}".to_vec()
        );
        assert!(one_line(b"{\"a\":\"line\nbreak\"}").is_err());
        assert!(one_line(b" \n ").is_err());
    }

    #[test]
    fn mget_bodies_name_their_documents() {
        let targets = mget_targets(br#"{"ids":["1","2"]}"#, Some("books")).unwrap();
        assert_eq!(
            targets,
            vec![
                ("books".to_owned(), "1".to_owned()),
                ("books".to_owned(), "2".to_owned())
            ]
        );
        let targets = mget_targets(
            br#"{"docs":[{"_index":"a","_id":"1"},{"_id":"2"}]}"#,
            Some("books"),
        )
        .unwrap();
        assert_eq!(targets[0].0, "a");
        assert_eq!(targets[1].0, "books");
        for refused in [
            &br#"{"docs":[{"_id":"1"}]}"#[..],
            br#"{"ids":[]}"#,
            br#"{"ids":["1"],"docs":[]}"#,
            br#"{"docs":[{"_index":"a","_id":"1","_source":false}]}"#,
            br#"{"idz":["1"]}"#,
            br#"{"docs":[{"_index":null,"_id":"1"}]}"#,
            br#"{"ids":["1"],"docs":null}"#,
            b"[]",
            b"null",
        ] {
            assert!(
                mget_targets(refused, None).is_err(),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
    }
}
