//! `GET` and `DELETE /v1/collections/{c}/documents/{id}`.
//!
//! `GET` is read-your-writes: it first waits (bounded) until every DOCS message appended
//! before it arrived is applied, then reads the store, the source of truth. It answers
//! the document exactly as stored (canonical JSON) with its content hash as `ETag`.
//! `DELETE` appends a delete op like ingest appends upserts, so deletes are ordered with
//! writes by sequence and leave a tombstone.
//!
//! When the store is unavailable (its breaker open, or the read failing on the store's
//! side), `GET` answers from the index instead: the `_source` the shard stored at its last
//! commit, flagged with `Sluice-Degraded: store_unavailable` (the body stays the document
//! itself). Such a read is not read-your-writes: it skips the wait for the workers (paused
//! while the store is down) and is as fresh as the index. Without an indexed copy it is a
//! 503 `unavailable` with `Retry-After`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;
use sluice_core::document::ContentHash;
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::resilience::{Breaker, BreakerState, Classify};
use sluice_core::search::IndexedCopy;
use sluice_core::store::{CollectionMeta, StoreError};
use sluice_core::{CollectionName, DocId, ErrorCode, Seq};

use crate::bulk::{all_appended, append_batches, wait_error, WaitFor, WriteParams};
use crate::error::ApiError;
use crate::state::AppState;
use crate::visibility::WaitError;

pub(crate) fn collection_meta(
    state: &AppState,
    name: String,
) -> Result<(CollectionName, std::sync::Arc<CollectionMeta>), ApiError> {
    let name = CollectionName::new(name).map_err(|e| ApiError::new(e.code, e.message))?;
    let meta = state.inner.catalog.get(&name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::CollectionNotFound,
            format!("no collection named \"{name}\""),
        )
    })?;
    Ok((name, meta))
}

pub(crate) fn document_id(id: String) -> Result<DocId, ApiError> {
    DocId::new(id).map_err(|e| ApiError::new(e.code, e.message))
}

/// Flags a response answered without the store (value: [`STORE_UNAVAILABLE`]).
pub const DEGRADED_HEADER: HeaderName = HeaderName::from_static("sluice-degraded");
/// The [`DEGRADED_HEADER`] value of a document read from the index.
pub const STORE_UNAVAILABLE: &str = "store_unavailable";

/// The document as `GET` answers it: its canonical JSON, its content hash as `ETag`.
fn document_response(source: Bytes, hash: ContentHash) -> Response {
    let mut response = source.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        headers.insert(header::ETAG, etag);
    }
    response
}

fn flagged(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(DEGRADED_HEADER, HeaderValue::from_static(STORE_UNAVAILABLE));
    response
}

/// Returns once `breaker` is open (checked a few times a second; an atomic load each).
async fn until_open(breaker: &Breaker) {
    const POLL: std::time::Duration = std::time::Duration::from_millis(100);
    while breaker.state() != BreakerState::Open {
        tokio::time::sleep(POLL).await;
    }
}

/// A document as a read finds it: its source and content hash, or `None` when absent or
/// deleted; `from_index` when the store could not answer and the index's copy was used.
pub(crate) struct DocumentRead {
    pub(crate) found: Option<(Bytes, ContentHash)>,
    /// The op sequence of the version found.
    pub(crate) seq: Option<Seq>,
    pub(crate) from_index: bool,
}

/// The store could not answer (`cause`): the index's copy, or a 503.
async fn read_from_index(
    state: &AppState,
    name: &CollectionName,
    id: &DocId,
    cause: StoreError,
) -> Result<DocumentRead, ApiError> {
    let (found, seq) = match state.inner.search.indexed_copy(name, id).await {
        Ok(Some(IndexedCopy::Live { source, seq })) => {
            tracing::debug!(error = %cause, "store unavailable; document read from the index");
            let hash = ContentHash::of(&source);
            (Some((source, hash)), Some(seq))
        }
        Ok(Some(IndexedCopy::Deleted { .. })) => (None, None),
        Ok(None) => return Err(ApiError::unavailable("store", cause)),
        Err(error) => {
            return Err(ApiError::unavailable(
                "store",
                format!("{cause}; index fallback: {error}"),
            ))
        }
    };
    Ok(DocumentRead {
        found,
        seq,
        from_index: true,
    })
}

/// Reads one document after every earlier write is applied (read-your-writes), from the
/// store, or from the index while the store is down.
pub(crate) async fn read_document(
    state: &AppState,
    name: &CollectionName,
    id: &DocId,
) -> Result<DocumentRead, ApiError> {
    // While the store's breaker is open the workers are paused: waiting for them would
    // only time out, so the read goes to the index as soon as the breaker is open.
    let applied = tokio::select! {
        applied = state.inner.visibility.wait_all_applied() => applied,
        () = until_open(&state.inner.breakers.store) => {
            let cause = StoreError::Unavailable("its circuit breaker is open".into());
            return read_from_index(state, name, id, cause).await;
        }
    };
    match applied {
        Ok(()) => {}
        Err(WaitError::Timeout) => {
            return Err(ApiError::new(
                ErrorCode::Timeout,
                "earlier writes are not applied yet; retry later",
            )
            .retry_after(1))
        }
        Err(WaitError::Log(e)) => return Err(ApiError::unavailable("log", e)),
    }
    let stored = match state.inner.store.get(name, id).await {
        Ok(stored) => stored,
        Err(error) if error.is_infrastructure() => {
            return read_from_index(state, name, id, error).await
        }
        Err(error) => return Err(ApiError::unavailable("store", error)),
    };
    let seq = stored
        .as_ref()
        .filter(|doc| doc.source.is_some())
        .map(|doc| doc.seq);
    Ok(DocumentRead {
        found: stored.and_then(|doc| doc.source.map(|source| (source, doc.hash))),
        seq,
        from_index: false,
    })
}

/// `GET /v1/collections/{c}/documents/{id}`
pub async fn get_document(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, _) = collection_meta(&state, collection)?;
    let id = document_id(id)?;
    let read = read_document(&state, &name, &id).await?;
    let response = match read.found {
        Some((source, hash)) => document_response(source, hash),
        None => {
            let missing = ApiError::new(
                ErrorCode::DocumentNotFound,
                format!("no document with this id in \"{name}\""),
            );
            if !read.from_index {
                return Err(missing);
            }
            missing.into_response()
        }
    };
    Ok(if read.from_index {
        flagged(response)
    } else {
        response
    })
}

/// `DELETE /v1/collections/{c}/documents/{id}`
pub async fn delete_document(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    params: Result<Query<WriteParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (name, meta) = collection_meta(&state, collection)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let id = document_id(id)?;
    state.inner.backlog.admit()?;
    let batch = DocBatch {
        collection: name,
        partition: id.partition(meta.shards()),
        ops: vec![DocOp::Delete { id: id.clone() }],
        generation: meta.generation,
    };
    let written = all_appended(append_batches(&state, std::slice::from_ref(&batch), None).await)?;
    if params.wait == WaitFor::Searchable && !written.is_empty() {
        state
            .inner
            .visibility
            .wait_searchable(&meta, written)
            .await
            .map_err(wait_error)?;
    }
    Ok(Json(json!({"id": id.as_str(), "result": "deleted"})))
}
