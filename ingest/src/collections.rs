//! The collection catalog routes: create or update from a schema document, list, show,
//! delete.
//!
//! Deleting a collection is an operation in the DOCS log (see `sluice_core::catalog`,
//! "Incarnations and deletion"): this route begins it and waits for a worker to finish
//! it; index shards follow the catalog's change feed and drop themselves.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use sluice_core::catalog::{CatalogError, PutOutcome};
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::op::CollectionDrop;
use sluice_core::schema::Schema;
use sluice_core::store::CollectionMeta;
use sluice_core::subjects::StreamKind;
use sluice_core::{CollectionName, ErrorCode};
use tokio::sync::broadcast::error::RecvError;

use crate::bulk::wait_error;
use crate::documents::collection_meta;
use crate::error::ApiError;
use crate::state::AppState;

fn view(meta: &CollectionMeta) -> Value {
    json!({
        "name": meta.name,
        "schema": meta.schema,
        "shards": meta.shards(),
        "dynamic": meta.dynamic,
        "schema_version": meta.schema_version,
        "created_at_ms": meta.created_at_ms,
        "generation": meta.generation,
    })
}

pub(crate) fn catalog_error(error: CatalogError) -> ApiError {
    match error.code() {
        ErrorCode::Unavailable => ApiError::unavailable("store", error),
        ErrorCode::Internal => ApiError::internal(error),
        code => ApiError::new(code, error.to_string()),
    }
}

/// What the API document states of a schema document beyond what parsing it checks: it
/// declares at least one field, and no member is null (leave a member out for its
/// default) except a field's `default`.
fn check_schema_document(body: &[u8]) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidSchema, message);
    // Not JSON: parsing the schema says what is wrong. JSON but not an object (serde
    // would read an array as the schema's members in order): refused here.
    let document = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(document)) => document,
        Ok(_) => {
            return Err(invalid(
                "the schema document must be a JSON object".to_owned(),
            ))
        }
        Err(_) => return Ok(()),
    };
    let null_member = |members: &serde_json::Map<String, Value>, allowed: &str| {
        members
            .iter()
            .find(|(name, value)| value.is_null() && name.as_str() != allowed)
            .map(|(name, _)| name.clone())
    };
    if let Some(name) = null_member(&document, "") {
        return Err(invalid(format!(
            "{name} is null; leave it out for its default"
        )));
    }
    match document.get("fields") {
        Some(Value::Array(fields)) if fields.is_empty() => {
            return Err(invalid(
                "fields is empty; declare at least the primary key field".to_owned(),
            ))
        }
        Some(Value::Array(fields)) => {
            for (i, field) in fields.iter().enumerate() {
                if let Some(name) = field.as_object().and_then(|f| null_member(f, "default")) {
                    return Err(invalid(format!(
                        "fields[{i}].{name} is null; leave it out for its default"
                    )));
                }
            }
        }
        Some(_) => {}
        None => {
            return Err(invalid(
                "fields is missing; declare at least the primary key field".to_owned(),
            ))
        }
    }
    Ok(())
}

/// `PUT /v1/collections/{c}`: 201 when created, 200 when updated.
pub async fn put_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = CollectionName::new(name).map_err(|e| ApiError::new(e.code, e.message))?;
    check_schema_document(&body)?;
    let schema = Schema::from_json(&body).map_err(|e| ApiError::new(e.code, e.message))?;
    let (meta, outcome) = state
        .inner
        .catalog
        .put_schema(&name, schema)
        .await
        .map_err(catalog_error)?;
    let status = match outcome {
        PutOutcome::Created => {
            state
                .inner
                .visibility
                .wait_index_ready(&meta)
                .await
                .map_err(wait_error)?;
            StatusCode::CREATED
        }
        PutOutcome::Updated => StatusCode::OK,
    };
    Ok((status, Json(view(&meta))))
}

/// `GET /v1/collections`
pub async fn list_collections(State(state): State<AppState>) -> Json<Value> {
    let collections: Vec<Value> = state.inner.catalog.list().iter().map(|m| view(m)).collect();
    Json(json!({ "collections": collections }))
}

/// `GET /v1/collections/{c}`
pub async fn get_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, meta) = collection_meta(&state, name)?;
    Ok(Json(view(&meta)))
}

/// `DELETE /v1/collections/{c}`: marks the collection `Deleting` (from then on it is
/// gone for every reader and writer), appends its drop to the DOCS log, and waits up to
/// `ingest.visibility_timeout` for a worker to apply it: `200 {"result":"deleted"}` once
/// it has, `202 {"result":"deleting"}` if it is still under way (it finishes on its own,
/// after a restart too). A `DELETE` of a collection being deleted appends the drop again
/// and waits the same way, so a client can retry one that failed.
pub async fn delete_collection(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = CollectionName::new(name).map_err(|e| ApiError::new(e.code, e.message))?;
    let Some(finished) = delete(&state, &name).await? else {
        return Err(ApiError::new(
            ErrorCode::CollectionNotFound,
            format!("no collection named \"{name}\""),
        ));
    };
    Ok(if finished {
        (
            StatusCode::OK,
            Json(json!({"name": name, "result": "deleted"})),
        )
    } else {
        (
            StatusCode::ACCEPTED,
            Json(json!({"name": name, "result": "deleting"})),
        )
    })
}

/// Deletes a collection as `DELETE /v1/collections/{c}` does: `None` when there is no
/// such collection, else whether the deletion finished within
/// `ingest.visibility_timeout` (it finishes on its own otherwise).
pub(crate) async fn delete(
    state: &AppState,
    name: &CollectionName,
) -> Result<Option<bool>, ApiError> {
    let catalog = &state.inner.catalog;
    let Some(meta) = catalog.begin_delete(name).await.map_err(catalog_error)? else {
        return Ok(None);
    };
    // Crash tests: the entry is `Deleting`, the drop is not in the log yet.
    crash_point::reached(CrashPoint::DropMarked);
    let mut changes = catalog.subscribe();
    let drop = CollectionDrop {
        collection: name.clone(),
        generation: meta.generation,
    };
    state
        .inner
        .log
        .append(StreamKind::Docs, vec![drop.to_outgoing()])
        .await
        .map_err(|e| ApiError::unavailable("log", e))?;
    let finished = tokio::time::timeout(state.inner.config.visibility_timeout, async {
        while catalog.is_being_deleted(name) {
            if let Err(RecvError::Closed) = changes.recv().await {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    Ok(Some(finished))
}
