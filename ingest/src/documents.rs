//! `GET` and `DELETE /v1/collections/{c}/documents/{id}`.
//!
//! `GET` is read-your-writes: it first waits (bounded) until every DOCS message appended
//! before it arrived is applied, then reads the store, the source of truth. It answers
//! the document exactly as stored (canonical JSON) with its content hash as `ETag`.
//! `DELETE` appends a delete op like ingest appends upserts, so deletes are ordered with
//! writes by sequence and leave a tombstone.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::store::CollectionMeta;
use sluice_core::{CollectionName, DocId, ErrorCode};

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
            format!("no collection named {name:?}"),
        )
    })?;
    Ok((name, meta))
}

fn document_id(id: String) -> Result<DocId, ApiError> {
    DocId::new(id).map_err(|e| ApiError::new(e.code, e.message))
}

/// `GET /v1/collections/{c}/documents/{id}`
pub async fn get_document(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (name, _) = collection_meta(&state, collection)?;
    let id = document_id(id)?;
    match state.inner.visibility.wait_all_applied().await {
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
    let stored = state
        .inner
        .store
        .get(&name, &id)
        .await
        .map_err(|e| ApiError::unavailable("store", e))?;
    let Some((source, hash)) = stored.and_then(|doc| doc.source.map(|s| (s, doc.hash))) else {
        return Err(ApiError::new(
            ErrorCode::DocumentNotFound,
            format!("no document with this id in {name:?}"),
        ));
    };
    let mut response = source.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
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
    let batch = DocBatch {
        collection: name,
        partition: id.partition(meta.shards()),
        ops: vec![DocOp::Delete { id: id.clone() }],
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
