//! `POST /_bulk` and `POST /{index}/_bulk` (and `PUT`, which the official clients send):
//! the Elasticsearch bulk API, on the native ingest path.
//!
//! One request goes through the same stages as `POST /v1/collections/{c}/documents`
//! ([`crate::bulk`]): admission, size-limited body read, per-item validation on a blocking
//! thread, grouping into per-partition batches, one durable append for all of them,
//! optionally a wait until searchable. What differs is the framing ([`reader`]: action
//! lines paired with source lines, several indexes per request) and the answer, which is
//! shaped like Elasticsearch's: `{"took", "errors", "items": [{"<action>": {"_index",
//! "_id", "result", "status", "error": {"type", "reason"}}}]}`.
//!
//! An index that does not exist yet is created with the schema of the index template
//! matching its name (`es_setup::template_schema`), else with one inferred from
//! the request's documents, as native ingest does.
//!
//! Ids: an item's `_id`, when it has one, is the document's id, and its source is stored
//! as sent, as Elasticsearch keeps `_id` apart from `_source`: a source field named like
//! the schema's primary key is an ordinary value (type-checked as that field, never read
//! as the id, never compared with `_id`), and none is added. Dedup and last-writer-wins go
//! by that id, as for any op. An `index` or `create` without `_id` is read as a native
//! line is: the primary key field is its id, or an id is assigned (UUIDv7, or derived
//! from the `Idempotency-Key`) and written into that field. `update` and `delete` always
//! name an `_id`.
//!
//! `index` and `delete` are blind writes, ordered by log sequence like native ones.
//! `create`, `update` and any item with `if_seq_no` depend on the current document: the
//! handler locks their ids ([`crate::id_locks`]), waits until every write appended
//! before it is applied (read-your-writes, as `GET` does), reads the documents they name
//! from the store, applies the request's own earlier items on top, in order, and keeps
//! the locks until its appends are durable. So a concurrent conditional write on the
//! same id reads after this one: one of two `create`s of an id conflicts, `update`s do
//! not lose each other's changes, and `if_seq_no` (with `if_primary_term` 1) compares
//! with the sequence of the version it replaces (`_seq_no`, the op's log sequence).
//!
//! Invariants: as for native ingest, a 2xx means every item answered with a 2xx status
//! is durable and no failed item was appended. When the log fails part-way, the answer
//! is a 200 whose items the log did not take are `429 es_rejected_execution_exception`
//! (shippers retry exactly those, so documents without `_id` are not written twice);
//! when it takes none, a 503 whose `items` say the same. A malformed action line
//! refuses the whole request before anything is appended (the pairing of the lines after
//! it is unknown), as in Elasticsearch.
//!
//! Bounded answers: every action keeps its item (clients pair items with actions), but
//! only the first `ingest.max_reported_errors` failed items carry an error `reason`; later
//! ones keep their `status` and error `type`, and `errors_omitted` counts them. The items
//! are written out as the answer streams, never built whole in memory ([`response`]).

pub mod reader;
mod response;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_core::document::{
    check_field_count, parse_line, validate_document, validate_document_with_id, LineError,
    LineLimits,
};
use sluice_core::metrics as m;
use sluice_core::op::DocOp;
use sluice_core::store::CollectionMeta;
use sluice_core::{CollectionName, DocId, ErrorCode, Generation, Partition, Seq};

use crate::body::{check_ndjson_content_type, read_limited, require_documents};
use crate::bulk::{
    admit, append_batches, ensure_collection, group_into_batches, idempotency_key, wait_error,
    BatchLimits, InferenceSample, RequestLimits, WaitFor, INFERENCE_SAMPLE_LINES,
};
use crate::error::ApiError;
use crate::es_setup::{ensure_from_template, template_schema, TemplateFailure};
use crate::state::AppState;
use crate::visibility::Written;
use reader::{merge, parse_update, Action, BulkItem};
use response::{bound_reasons, ItemError, Outcome};
pub use response::{BulkResponse, ItemOutcome};

/// Query parameters of `_bulk`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkParams {
    /// sluice's own `durable` (default) or `searchable`.
    #[serde(default)]
    pub wait: Option<WaitFor>,
    /// Elasticsearch's: `wait_for` or `true` (or empty) wait until searchable, `false`
    /// does not.
    #[serde(default)]
    pub refresh: Option<String>,
    /// Accepted and ignored (Elasticsearch clients send them; the visibility timeout
    /// bounds waits here).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub wait_for_active_shards: Option<String>,
    /// Accepted and ignored: the whole response is sent.
    #[serde(default)]
    pub filter_path: Option<String>,
}

impl BulkParams {
    pub(crate) fn wait(&self) -> Result<WaitFor, ApiError> {
        let refresh = match self.refresh.as_deref() {
            None | Some("false") => WaitFor::Durable,
            Some("" | "true" | "wait_for") => WaitFor::Searchable,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "refresh must be true, false or wait_for",
                ))
            }
        };
        Ok(
            if refresh == WaitFor::Searchable || self.wait == Some(WaitFor::Searchable) {
                WaitFor::Searchable
            } else {
                WaitFor::Durable
            },
        )
    }
}

/// `POST /_bulk`
pub async fn bulk(
    State(state): State<AppState>,
    params: Result<Query<BulkParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<BulkResponse, ApiError> {
    run(state, None, params, headers, body).await
}

/// `POST /{index}/_bulk`
pub async fn bulk_for_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    params: Result<Query<BulkParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<BulkResponse, ApiError> {
    run(state, Some(index), params, headers, body).await
}

/// The status and error type of an item the log could not take now (Elasticsearch's
/// answer for an item refused by a full write queue): retry that item.
const REJECTED_STATUS: u16 = 429;
const REJECTED_TYPE: &str = "es_rejected_execution_exception";

/// The primary term sluice reports: one primary per shard, never failed over.
pub(crate) const PRIMARY_TERM: u64 = 1;

/// A document as the request sees it: `None` when absent or deleted.
type Current = HashMap<(CollectionName, DocId), Option<Map<String, Value>>>;

/// The sequence of the stored version of each document in [`Current`]; `None` when
/// absent, deleted, or written by an earlier item of the same request (whose sequence
/// is not known before the append).
type Versions = HashMap<(CollectionName, DocId), Option<Seq>>;

/// What the validation pass produced.
struct Prepared {
    outcomes: Vec<Outcome>,
    /// Per collection, the accepted ops by partition, tagged with their item index.
    ops: BTreeMap<CollectionName, BTreeMap<Partition, Vec<(usize, DocOp)>>>,
}

async fn run(
    state: AppState,
    default_index: Option<String>,
    params: Result<Query<BulkParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<BulkResponse, ApiError> {
    let started = Instant::now();
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let wait = params.wait()?;
    check_ndjson_content_type(&headers)?;
    let idempotency_key = idempotency_key(&headers)?;
    let _permit = admit(&state).await?;
    let body = read_limited(body, state.inner.config.max_body_size.as_u64() as usize).await?;
    require_documents(&body)?;
    execute(state, default_index, wait, idempotency_key, body, started).await
}

/// Runs a bulk body already read (and admitted): pairing, validation, one durable append,
/// the wait `wait` asks for. The single-document routes ([`crate::es_documents`]) come
/// here too, with a body of one item.
pub(crate) async fn execute(
    state: AppState,
    default_index: Option<String>,
    wait: WaitFor,
    idempotency_key: Option<String>,
    body: Bytes,
    started: Instant,
) -> Result<BulkResponse, ApiError> {
    let limits = state.line_limits();
    let max_fields = state.inner.config.max_fields_per_collection;
    let max_reported_errors = state.inner.config.max_reported_errors;

    // Pairing, and samples to infer the schemas of indexes that do not exist yet.
    let (items, samples) = {
        let body = body.clone();
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let items = reader::read(&body, default_index.as_deref(), &limits)?;
            let samples = inference_samples(&state, &body, &items, &limits, max_fields);
            Ok::<_, reader::ReadError>((Arc::new(items), samples))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?
    };

    let mut metas: HashMap<String, Result<Arc<CollectionMeta>, LineError>> = HashMap::new();
    for item in items.iter().filter(|i| i.error.is_none()) {
        let Some(index) = &item.index else { continue };
        if metas.contains_key(&**index) {
            continue;
        }
        let meta = match CollectionName::new(&**index) {
            Ok(name) => {
                let sample = samples.get(&**index).map_or(&[][..], Vec::as_slice);
                // A new index takes its schema from a matching index template, if any.
                let ensured = match template_schema(&state, &name).await {
                    Ok(Some(schema)) => ensure_from_template(&state, &name, schema).await,
                    Ok(None) => ensure_collection(&state, &name, sample).await,
                    Err(TemplateFailure::Refused(message)) => {
                        metas.insert(
                            index.to_string(),
                            Err(LineError {
                                code: ErrorCode::InvalidSchema,
                                message,
                            }),
                        );
                        continue;
                    }
                    Err(TemplateFailure::Store(error)) => return Err(error),
                };
                match ensured {
                    Ok(meta) => Ok(meta),
                    // An index the collection limits refuse fails its own items only.
                    Err(error) if error.code() == ErrorCode::TooManyCollections => Err(LineError {
                        code: ErrorCode::TooManyCollections,
                        message: "creating this index would exceed the node's collection \
                                      limits (ingest.max_collections, \
                                      ingest.max_auto_created_collections)"
                            .to_owned(),
                    }),
                    // So does an index whose deletion is under way.
                    Err(error) if error.code() == ErrorCode::CollectionBeingDeleted => {
                        Err(LineError {
                            code: ErrorCode::CollectionBeingDeleted,
                            message: "this index is being deleted; write to it again once \
                                      that has finished"
                                .to_owned(),
                        })
                    }
                    Err(error) => return Err(error),
                }
            }
            Err(e) => Err(LineError {
                code: e.code,
                message: e.message,
            }),
        };
        metas.insert(index.to_string(), meta);
    }

    let wanted = {
        let (body, items, metas) = (body.clone(), items.clone(), metas.clone());
        tokio::task::spawn_blocking(move || wanted_ids(&body, &items, &metas, &limits))
            .await
            .map_err(ApiError::internal)?
    };
    // Held until the appends are durable: conditional writes of these ids wait for it.
    let id_guard = if wanted.is_empty() {
        None
    } else {
        Some(
            state
                .inner
                .id_locks
                .lock(wanted.iter().map(|(c, id)| (c, id)))
                .await,
        )
    };
    let (current, versions) = current_documents(&state, wanted).await?;
    let prepared = {
        let body = body.clone();
        let items = items.clone();
        let key = idempotency_key.clone();
        tokio::task::spawn_blocking(move || {
            prepare(
                &body,
                &items,
                &metas,
                current,
                versions,
                RequestLimits {
                    line: limits,
                    max_fields,
                    max_reported_errors,
                },
                key.as_deref(),
            )
        })
        .await
        .map_err(ApiError::internal)?
    };
    let Prepared {
        mut outcomes,
        ops: ops_by_collection,
    } = prepared;

    let batch_limits = BatchLimits {
        max_docs: state.inner.config.max_batch_docs,
        max_bytes: state.inner.config.max_batch_size.as_u64() as usize,
    };
    let mut batches = Vec::new();
    let mut batch_items = Vec::new();
    let mut collections = HashMap::new();
    for (collection, by_partition) in ops_by_collection {
        let meta = state.inner.catalog.get(&collection);
        // A collection deleted since its items were checked: generation 0 matches no
        // current incarnation, so the store discards the writes.
        let generation = meta.as_ref().map_or(Generation(0), |meta| meta.generation);
        let (b, lines) = group_into_batches(&collection, generation, by_partition, batch_limits);
        batches.extend(b);
        batch_items.extend(lines);
        if let Some(meta) = meta {
            collections.insert(collection, meta);
        }
    }
    let results = append_batches(&state, &batches, idempotency_key.as_deref()).await;
    drop(id_guard);
    let mut written: HashMap<CollectionName, Written> = HashMap::new();
    let mut failure = None;
    for ((result, items_of_batch), batch) in results.into_iter().zip(&batch_items).zip(&batches) {
        match result {
            Ok(durable) => {
                if let crate::bulk::Durable::Log(message) = durable {
                    for (op, &i) in items_of_batch.iter().enumerate() {
                        outcomes[i].seq_no = Some(message.for_op(op).0);
                    }
                }
                written
                    .entry(batch.collection.clone())
                    .or_default()
                    .add(durable)
            }
            Err(error) => {
                // Not durable: the item must not be reported as written. It is rejected
                // as Elasticsearch rejects items on a full write queue, so that clients
                // retry it, and only it.
                for &i in items_of_batch {
                    let outcome = &mut outcomes[i];
                    outcome.status = REJECTED_STATUS;
                    outcome.result = None;
                    outcome.error = Some(ItemError {
                        kind: REJECTED_TYPE,
                        reason: Some(Cow::Borrowed(
                            "the log could not take this item now; retry it",
                        )),
                    });
                }
                failure.get_or_insert(error);
            }
        }
    }
    record_metrics(&items, &outcomes, body.len());
    drop(body);
    let errors_omitted = bound_reasons(&mut outcomes, max_reported_errors);
    let items_json = || BulkResponse::items_value(&items, &outcomes);
    // Nothing was written: the whole request failed, and retrying it whole is safe.
    // Otherwise the answer says which items to retry.
    if let Some(error) = failure.filter(|_| written.is_empty()) {
        return Err(error.into_api_error().with("items", items_json()));
    }
    if wait == WaitFor::Searchable {
        for (collection, written) in &written {
            if let Some(meta) = collections.get(collection) {
                if let Err(e) = state.inner.visibility.wait_searchable(meta, *written).await {
                    return Err(wait_error(e).with("items", items_json()));
                }
            }
        }
    }
    Ok(BulkResponse {
        took_ms: started.elapsed().as_millis() as u64,
        errors_omitted,
        items,
        outcomes,
    })
}

/// Up to [`INFERENCE_SAMPLE_LINES`] parsed sources of `index`/`create` items per index
/// that does not exist yet.
fn inference_samples(
    state: &AppState,
    body: &Bytes,
    items: &[BulkItem],
    limits: &LineLimits,
    max_fields: usize,
) -> HashMap<String, Vec<Map<String, Value>>> {
    let mut samples: HashMap<String, InferenceSample> = HashMap::new();
    for item in items {
        let (Some(index), Some(range), None) = (&item.index, &item.source, &item.error) else {
            continue;
        };
        if !matches!(item.action, Action::Index | Action::Create) {
            continue;
        }
        let exists = CollectionName::new(&**index)
            .map(|name| state.inner.catalog.get(&name).is_some())
            .unwrap_or(true);
        if exists {
            continue;
        }
        if !samples.contains_key(&**index) {
            samples.insert(index.to_string(), InferenceSample::new(max_fields));
        }
        let sample = samples.get_mut(&**index).expect("inserted above");
        if sample.docs.len() < INFERENCE_SAMPLE_LINES {
            if let Ok(doc) = parse_line(&body[range.clone()], limits) {
                sample.offer(doc);
            }
        }
    }
    samples
        .into_iter()
        .map(|(index, sample)| (index, sample.docs))
        .collect()
}

/// The documents `create`, `update` and `if_seq_no` items name: by `_id`, or for a
/// create without one, by its source's primary key (parsed here, so this runs on a
/// blocking thread).
fn wanted_ids(
    body: &[u8],
    items: &[BulkItem],
    metas: &HashMap<String, Result<Arc<CollectionMeta>, LineError>>,
    limits: &LineLimits,
) -> HashSet<(CollectionName, DocId)> {
    let mut wanted = HashSet::new();
    for item in items {
        let conditional =
            matches!(item.action, Action::Create | Action::Update) || item.if_seq_no.is_some();
        if !conditional || item.error.is_some() {
            continue;
        }
        let Some(Ok(meta)) = item.index.as_deref().and_then(|index| metas.get(index)) else {
            continue;
        };
        let id = match (&item.id, &item.source) {
            (Some(id), _) => DocId::new(id.as_str()).ok(),
            (None, Some(range)) => source_primary_key(&body[range.clone()], meta, limits),
            (None, None) => None,
        };
        if let Some(id) = id {
            wanted.insert((meta.name.clone(), id));
        }
    }
    wanted
}

/// Store reads in flight at once while loading the documents of create/update items.
const CURRENT_READS_IN_FLIGHT: usize = 32;

/// Reads the `wanted` documents, and the sequences of their stored versions, from the
/// store after every earlier write is applied. Empty (and no wait) when nothing is
/// wanted.
async fn current_documents(
    state: &AppState,
    wanted: HashSet<(CollectionName, DocId)>,
) -> Result<(Current, Versions), ApiError> {
    if wanted.is_empty() {
        return Ok((Current::new(), Versions::new()));
    }
    state
        .inner
        .visibility
        .wait_all_applied()
        .await
        .map_err(|e| match e {
            crate::visibility::WaitError::Timeout => ApiError::new(
                ErrorCode::Timeout,
                "earlier writes are not applied yet, so create/update cannot read the current documents; retry later",
            )
            .retry_after(1),
            crate::visibility::WaitError::Log(e) => ApiError::unavailable("log", e),
        })?;
    let reads = wanted.into_iter().map(|(collection, id)| async move {
        let stored = state
            .inner
            .store
            .get(&collection, &id)
            .await
            .map_err(|e| ApiError::unavailable("store", e))?;
        let (doc, seq) = match stored {
            Some(stored) => match stored.source {
                Some(source) => (
                    Some(serde_json::from_slice(&source).map_err(ApiError::internal)?),
                    Some(stored.seq),
                ),
                None => (None, None),
            },
            None => (None, None),
        };
        Ok::<_, ApiError>(((collection, id), doc, seq))
    });
    let read: Vec<_> = futures_util::stream::iter(reads)
        .buffer_unordered(CURRENT_READS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut current = Current::with_capacity(read.len());
    let mut versions = Versions::with_capacity(read.len());
    for (key, doc, seq) in read {
        versions.insert(key.clone(), seq);
        current.insert(key, doc);
    }
    Ok((current, versions))
}

/// The id a source line carries in its primary key field, if it parses and has one.
fn source_primary_key(line: &[u8], meta: &CollectionMeta, limits: &LineLimits) -> Option<DocId> {
    let doc = parse_line(line, limits).ok()?;
    match doc.get(&meta.schema.primary_key)? {
        Value::String(s) => DocId::new(s.as_str()).ok(),
        Value::Number(n) => DocId::new(n.to_string()).ok(),
        _ => None,
    }
}

/// Validates every item in order and turns the good ones into ops. `current` holds the
/// documents `create`/`update` items need; it is kept up to date with the request's own
/// writes so that later items see earlier ones.
fn prepare(
    body: &[u8],
    items: &[BulkItem],
    metas: &HashMap<String, Result<Arc<CollectionMeta>, LineError>>,
    mut current: Current,
    mut versions: Versions,
    request: RequestLimits,
    idempotency_key: Option<&str>,
) -> Prepared {
    let RequestLimits {
        line: limits,
        max_fields,
        max_reported_errors,
    } = request;
    let limits = &limits;
    let mut outcomes = Vec::with_capacity(items.len());
    let mut failed = 0;
    // Past the reported failures a reason is dropped at once, not kept to the end.
    let mut bound_last = |outcomes: &mut Vec<Outcome>| {
        if let Some(error) = outcomes.last_mut().and_then(|o| o.error.as_mut()) {
            failed += 1;
            if failed > max_reported_errors {
                error.reason = None;
            }
        }
    };
    let mut ops: BTreeMap<CollectionName, BTreeMap<Partition, Vec<(usize, DocOp)>>> =
        BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        // Each outcome is bounded once, at the start of the next item (or after the last).
        bound_last(&mut outcomes);
        let meta = match (
            &item.error,
            item.index.as_deref().and_then(|x| metas.get(x)),
        ) {
            (Some(e), _) => {
                outcomes.push(Outcome::failed(item.id.clone(), e.code, e.message.clone()));
                continue;
            }
            (None, Some(Ok(meta))) => meta,
            (None, Some(Err(e))) => {
                outcomes.push(Outcome::failed(item.id.clone(), e.code, e.message.clone()));
                continue;
            }
            (None, None) => unreachable!("every item without an error has a resolved index"),
        };
        let source = item.source.clone().map(|r| &body[r]);
        let assign_id = || match idempotency_key {
            Some(key) => DocId::derived(key, item.line),
            None => DocId::generate(),
        };
        let id_and_seq = item.if_seq_no.zip(item.id.as_deref());
        if let Some(((seq_no, primary_term), id)) = id_and_seq {
            if let Err(outcome) = check_seq_no(meta, id, seq_no, primary_term, &versions) {
                outcomes.push(outcome);
                continue;
            }
        }
        match apply(
            item,
            meta,
            source,
            &mut current,
            limits,
            max_fields,
            assign_id,
        ) {
            Ok((outcome, op)) => {
                if let Some(op) = op {
                    // Its sequence is known only once appended.
                    if let Some(version) = versions.get_mut(&(meta.name.clone(), op.id().clone())) {
                        *version = None;
                    }
                    ops.entry(meta.name.clone())
                        .or_default()
                        .entry(op.id().partition(meta.shards()))
                        .or_default()
                        .push((i, op));
                }
                outcomes.push(outcome);
            }
            Err(outcome) => outcomes.push(outcome),
        }
    }
    bound_last(&mut outcomes);
    Prepared { outcomes, ops }
}

/// Refuses an `if_seq_no` item whose document is not at that sequence (absent, another
/// version, or written by an earlier item of the request) or whose primary term is not
/// [`PRIMARY_TERM`], as Elasticsearch does: 409 `version_conflict_engine_exception`.
fn check_seq_no(
    meta: &CollectionMeta,
    id: &str,
    seq_no: u64,
    primary_term: u64,
    versions: &Versions,
) -> Result<(), Outcome> {
    let current = DocId::new(id)
        .ok()
        .and_then(|id| versions.get(&(meta.name.clone(), id)).copied().flatten());
    if primary_term == PRIMARY_TERM && current == Some(Seq(seq_no)) {
        return Ok(());
    }
    let found = match current {
        Some(seq) => {
            format!("current document has seqNo [{seq}] and primary term [{PRIMARY_TERM}]")
        }
        None => "no current document with a known seqNo was found".to_owned(),
    };
    Err(Outcome::failed_as(
        Some(id.to_owned()),
        409,
        "version_conflict_engine_exception",
        format!("required seqNo [{seq_no}], primary term [{primary_term}]; {found}"),
    ))
}

/// One item: its outcome and the op to append (none for a no-op update).
fn apply(
    item: &BulkItem,
    meta: &CollectionMeta,
    source: Option<&[u8]>,
    current: &mut Current,
    limits: &LineLimits,
    max_fields: usize,
    assign_id: impl FnOnce() -> DocId,
) -> Result<(Outcome, Option<DocOp>), Outcome> {
    let given_id = match item.id.as_deref().map(DocId::new).transpose() {
        Ok(id) => id,
        Err(e) => return Err(Outcome::failed(item.id.clone(), e.code, e.message)),
    };
    let fail = |id: Option<&DocId>, e: LineError| {
        Outcome::failed(id.map(|i| i.to_string()), e.code, e.message)
    };
    let ok = |id: &DocId, status: u16, result: &'static str| Outcome {
        id: Some(id.to_string()),
        status,
        result: Some(result),
        error: None,
        seq_no: None,
    };
    let schema = &meta.schema;
    let source = source.unwrap_or_default();
    match item.action {
        Action::Delete => {
            let id = given_id.expect("the reader refuses a delete without _id");
            let key = (meta.name.clone(), id.clone());
            if let Some(doc) = current.get_mut(&key) {
                *doc = None;
            }
            Ok((ok(&id, 200, "deleted"), Some(DocOp::Delete { id })))
        }
        Action::Index | Action::Create => {
            let doc = parse_line(source, limits).map_err(|e| fail(given_id.as_ref(), e))?;
            check_field_count(schema, &doc, max_fields).map_err(|e| fail(given_id.as_ref(), e))?;
            // With an `_id`, the source is kept as sent (see the module docs); without,
            // the item is a native line: its primary key field, or an assigned id.
            let valid = match &given_id {
                Some(id) => validate_document_with_id(schema, doc, id.clone()),
                None => validate_document(schema, doc, assign_id),
            }
            .and_then(|valid| limits.check_stored(&valid).map(|()| valid))
            .map_err(|e| fail(given_id.as_ref(), e))?;
            let key = (meta.name.clone(), valid.id.clone());
            if item.action == Action::Create {
                if let Some(Some(_)) = current.get(&key) {
                    return Err(Outcome::failed_as(
                        Some(valid.id.to_string()),
                        409,
                        "version_conflict_engine_exception",
                        "a document with this _id already exists".to_owned(),
                    ));
                }
            }
            if let Some(slot) = current.get_mut(&key) {
                *slot = serde_json::from_slice(&valid.source).ok();
            }
            Ok((
                ok(&valid.id, 201, "created"),
                Some(DocOp::Upsert {
                    id: valid.id,
                    hash: valid.hash,
                    source: Bytes::from(valid.source),
                }),
            ))
        }
        Action::Update => {
            let id = given_id.expect("the reader refuses an update without _id");
            let spec = parse_update(source, limits).map_err(|e| fail(Some(&id), e))?;
            let key = (meta.name.clone(), id.clone());
            let existing = current.get(&key).cloned().flatten();
            let patch = spec.doc.unwrap_or_default();
            let (doc, status, result) = match existing {
                Some(existing) => {
                    let mut merged = existing.clone();
                    merge(&mut merged, patch);
                    if spec.detect_noop && merged == existing {
                        return Ok((ok(&id, 200, "noop"), None));
                    }
                    (merged, 200, "updated")
                }
                None if spec.doc_as_upsert => (patch, 201, "created"),
                None => match spec.upsert {
                    Some(upsert) => (upsert, 201, "created"),
                    None => {
                        return Err(Outcome::failed_as(
                            Some(id.to_string()),
                            404,
                            "document_missing_exception",
                            "no document with this _id".to_owned(),
                        ))
                    }
                },
            };
            check_field_count(schema, &doc, max_fields).map_err(|e| fail(Some(&id), e))?;
            let valid = validate_document_with_id(schema, doc, id.clone())
                .and_then(|valid| limits.check_stored(&valid).map(|()| valid))
                .map_err(|e| fail(Some(&id), e))?;
            if let Some(slot) = current.get_mut(&key) {
                *slot = serde_json::from_slice(&valid.source).ok();
            }
            Ok((
                ok(&id, status, result),
                Some(DocOp::Upsert {
                    id: valid.id,
                    hash: valid.hash,
                    source: Bytes::from(valid.source),
                }),
            ))
        }
    }
}

fn record_metrics(items: &[BulkItem], outcomes: &[Outcome], body_len: usize) {
    metrics::counter!(m::INGEST_BYTES_TOTAL, "collection" => "_bulk").increment(body_len as u64);
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (item, outcome) in items.iter().zip(outcomes) {
        // Only names of collections that exist label metrics (bounded cardinality).
        let collection = match (&item.index, &outcome.error) {
            (Some(index), None) => &**index,
            _ => "_bulk",
        };
        let kind = if outcome.is_error() {
            "rejected"
        } else {
            "accepted"
        };
        *counts.entry((collection, kind)).or_default() += 1;
    }
    for ((collection, outcome), n) in counts {
        metrics::counter!(m::INGEST_DOCUMENTS_TOTAL, "collection" => collection.to_owned(), "outcome" => outcome)
            .increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use response::ItemJson;
    use serde_json::json;
    use sluice_core::schema::Schema;

    fn meta() -> Arc<CollectionMeta> {
        Arc::new(CollectionMeta {
            name: CollectionName::new("books").unwrap(),
            schema: Schema::from_json(
                br#"{"fields":[{"name":"id","type":"string"},{"name":"n","type":"i64"},{"name":"tags","type":"keyword","array":true,"required":false}]}"#,
            )
            .unwrap(),
            dynamic: false,
            schema_version: 1,
            created_at_ms: 0,
            generation: Default::default(),
            state: Default::default(),
        })
    }

    fn run_prepare(body: &str, existing: &[(&str, Option<Value>)]) -> Prepared {
        let limits = LineLimits::default();
        let items = reader::read(body.as_bytes(), Some("books"), &limits).unwrap();
        let meta = meta();
        let mut metas = HashMap::new();
        metas.insert("books".to_owned(), Ok(meta.clone()));
        metas.insert(
            "Bad.Name".to_owned(),
            Err(LineError {
                code: ErrorCode::InvalidCollectionName,
                message: "bad".into(),
            }),
        );
        let current: Current = existing
            .iter()
            .map(|(id, doc)| {
                (
                    (meta.name.clone(), DocId::new(*id).unwrap()),
                    doc.as_ref().and_then(|d| d.as_object().cloned()),
                )
            })
            .collect();
        // Each existing document is at sequence 7.
        let versions: Versions = current
            .iter()
            .map(|(key, doc)| (key.clone(), doc.as_ref().map(|_| Seq(7))))
            .collect();
        prepare(
            body.as_bytes(),
            &items,
            &metas,
            current,
            versions,
            RequestLimits {
                line: limits,
                max_fields: 1_000,
                max_reported_errors: 1_000,
            },
            None,
        )
    }

    fn summary(prepared: &Prepared) -> Vec<(u16, Option<&str>, Option<&str>)> {
        prepared
            .outcomes
            .iter()
            .map(|o| (o.status, o.result, o.error.as_ref().map(|e| e.kind)))
            .collect()
    }

    #[test]
    fn items_fail_alone_and_good_ones_become_ops() {
        let body = concat!(
            "{\"index\":{\"_id\":\"1\"}}\n{\"n\":1}\n",
            "{\"index\":{}}\n{\"n\":\"x\"}\n",
            "{\"index\":{\"_index\":\"Bad.Name\"}}\n{\"n\":1}\n",
            "{\"index\":{\"_id\":\"2\"}}\n{\"id\":\"3\",\"n\":1}\n",
            "{\"index\":{}}\n{\"n\":2}\n",
            "{\"delete\":{\"_id\":\"1\"}}\n",
            "{\"create\":{\"_id\":\"4\",\"pipeline\":\"p\"}}\n{\"n\":1}\n",
        );
        let prepared = run_prepare(body, &[]);
        assert_eq!(
            summary(&prepared),
            vec![
                (201, Some("created"), None),
                (400, None, Some("wrong_type")),
                (400, None, Some("invalid_collection_name")),
                (201, Some("created"), None),
                (201, Some("created"), None),
                (200, Some("deleted"), None),
                (400, None, Some("invalid_request")),
            ]
        );
        let ops: Vec<(usize, &DocOp)> = prepared.ops[&meta().name]
            .values()
            .flatten()
            .map(|(i, op)| (*i, op))
            .collect();
        assert_eq!(ops.len(), 4);
        // `_id` is the id; the source keeps its own primary-key-named field, and a source
        // without one gets none added.
        let source_of = |item: usize| {
            ops.iter()
                .find(|(i, _)| *i == item)
                .map(|(_, op)| match op {
                    DocOp::Upsert { id, source, .. } => (
                        id.to_string(),
                        serde_json::from_slice::<Value>(source).unwrap(),
                    ),
                    other => panic!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(source_of(3), ("2".to_owned(), json!({"id": "3", "n": 1})));
        assert_eq!(source_of(0), ("1".to_owned(), json!({"n": 1})));
        let assigned = source_of(4);
        assert_eq!(
            assigned.1["id"],
            assigned.0.as_str(),
            "an assigned id fills the field"
        );
        let items = reader::read(body.as_bytes(), Some("books"), &LineLimits::default()).unwrap();
        let json = serde_json::to_value(ItemJson(&items[0], &prepared.outcomes[0])).unwrap();
        assert_eq!(
            json,
            json!({"index": {"_index": "books", "_id": "1", "result": "created", "status": 201}})
        );
        let assigned = prepared.outcomes[4].id.as_deref().unwrap();
        assert_eq!(
            uuid::Uuid::parse_str(assigned).unwrap().get_version_num(),
            7
        );
    }

    #[test]
    fn create_and_update_see_the_store_and_earlier_items() {
        let body = concat!(
            "{\"create\":{\"_id\":\"old\"}}\n{\"n\":1}\n",
            "{\"create\":{}}\n{\"id\":\"old\",\"n\":1}\n",
            "{\"create\":{\"_id\":\"new\"}}\n{\"n\":1}\n",
            "{\"create\":{\"_id\":\"new\"}}\n{\"n\":2}\n",
            "{\"update\":{\"_id\":\"new\"}}\n{\"doc\":{\"n\":5}}\n",
            "{\"update\":{\"_id\":\"new\"}}\n{\"doc\":{\"n\":5}}\n",
            "{\"update\":{\"_id\":\"old\"}}\n{\"doc\":{\"tags\":[\"a\"]}}\n",
            "{\"update\":{\"_id\":\"none\"}}\n{\"doc\":{\"n\":5}}\n",
            "{\"update\":{\"_id\":\"none\"}}\n{\"doc\":{\"n\":5},\"doc_as_upsert\":true}\n",
            "{\"delete\":{\"_id\":\"old\"}}\n",
            "{\"update\":{\"_id\":\"old\"}}\n{\"doc\":{\"n\":7},\"upsert\":{\"n\":8}}\n",
            "{\"update\":{\"_id\":\"bad\"}}\n{\"doc\":{\"n\":\"x\"},\"doc_as_upsert\":true}\n",
        );
        let prepared = run_prepare(
            body,
            &[
                ("old", Some(json!({"id": "old", "n": 0}))),
                ("new", None),
                ("none", None),
                ("bad", None),
            ],
        );
        assert_eq!(
            summary(&prepared),
            vec![
                (409, None, Some("version_conflict_engine_exception")),
                (409, None, Some("version_conflict_engine_exception")),
                (201, Some("created"), None),
                (409, None, Some("version_conflict_engine_exception")),
                (200, Some("updated"), None),
                (200, Some("noop"), None),
                (200, Some("updated"), None),
                (404, None, Some("document_missing_exception")),
                (201, Some("created"), None),
                (200, Some("deleted"), None),
                (201, Some("created"), None),
                (400, None, Some("wrong_type")),
            ]
        );
        let sources: Vec<Value> = prepared.ops[&meta().name]
            .values()
            .flatten()
            .filter(|(_, op)| op.id().as_str() == "old")
            .map(|(_, op)| match op {
                DocOp::Upsert { source, .. } => serde_json::from_slice(source).unwrap(),
                DocOp::Delete { .. } => Value::Null,
                DocOp::Replayed { .. } => panic!("the bulk API never produces a replay"),
            })
            .collect();
        assert_eq!(
            sources,
            vec![
                json!({"id": "old", "n": 0, "tags": ["a"]}),
                Value::Null,
                // The upsert as sent: an `_id` is not written into the source.
                json!({"n": 8})
            ]
        );
    }

    #[test]
    fn if_seq_no_applies_only_to_the_version_it_names() {
        let body = concat!(
            "{\"index\":{\"_id\":\"a\",\"if_seq_no\":7,\"if_primary_term\":1}}\n{\"n\":1}\n",
            "{\"index\":{\"_id\":\"a\",\"if_seq_no\":7,\"if_primary_term\":1}}\n{\"n\":2}\n",
            "{\"index\":{\"_id\":\"b\",\"if_seq_no\":7,\"if_primary_term\":1}}\n{\"n\":1}\n",
            "{\"delete\":{\"_id\":\"c\",\"if_seq_no\":6,\"if_primary_term\":1}}\n",
            "{\"update\":{\"_id\":\"c\",\"if_seq_no\":7,\"if_primary_term\":2}}\n{\"doc\":{\"n\":3}}\n",
            "{\"update\":{\"_id\":\"c\",\"if_seq_no\":7,\"if_primary_term\":1}}\n{\"doc\":{\"n\":3}}\n",
            "{\"create\":{\"_id\":\"d\",\"if_seq_no\":7,\"if_primary_term\":1}}\n{\"n\":1}\n",
            "{\"index\":{\"_id\":\"e\",\"if_seq_no\":7}}\n{\"n\":1}\n",
        );
        let prepared = run_prepare(
            body,
            &[
                ("a", Some(json!({"id": "a", "n": 0}))),
                ("b", None),
                ("c", Some(json!({"id": "c", "n": 0}))),
            ],
        );
        assert_eq!(
            summary(&prepared),
            vec![
                (201, Some("created"), None),
                (409, None, Some("version_conflict_engine_exception")),
                (409, None, Some("version_conflict_engine_exception")),
                (409, None, Some("version_conflict_engine_exception")),
                (409, None, Some("version_conflict_engine_exception")),
                (200, Some("updated"), None),
                (400, None, Some("invalid_request")),
                (400, None, Some("invalid_request")),
            ]
        );
    }

    #[test]
    fn refresh_maps_to_wait() {
        let params = |refresh: Option<&str>, wait: Option<WaitFor>| BulkParams {
            refresh: refresh.map(str::to_owned),
            wait,
            ..BulkParams::default()
        };
        assert_eq!(params(None, None).wait().unwrap(), WaitFor::Durable);
        assert_eq!(
            params(Some("false"), None).wait().unwrap(),
            WaitFor::Durable
        );
        for r in ["", "true", "wait_for"] {
            assert_eq!(params(Some(r), None).wait().unwrap(), WaitFor::Searchable);
        }
        assert_eq!(
            params(None, Some(WaitFor::Searchable)).wait().unwrap(),
            WaitFor::Searchable
        );
        assert!(params(Some("soon"), None).wait().is_err());
    }
}
