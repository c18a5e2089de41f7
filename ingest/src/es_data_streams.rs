//! Elasticsearch data streams, mapped onto collections: `PUT|GET|DELETE
//! /_data_stream/{name}` and `GET /_data_stream`.
//!
//! A data stream is one collection of its name (Elasticsearch puts a data stream's
//! documents in hidden backing indices; sluice has no rollover, so there is one, the
//! collection itself). Creating one creates the collection with the schema of the
//! matching index template (as a first write would), or an inferred schema that grows
//! with its documents, and records the stream beside the templates in the store; shippers
//! then write to it with `create` actions (documents without `_id`, an `@timestamp`
//! field), which `_bulk` takes like any other. `index` actions are taken too (Elasticsearch
//! refuses them on a data stream). Deleting the stream deletes the collection and its
//! documents. Reads take names, comma lists and `*` patterns.

use axum::extract::{Path, State};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use sluice_core::store::DefinitionKind;
use sluice_core::{CollectionName, ErrorCode};

use crate::bulk::ensure_collection;
use crate::error::ApiError;
use crate::es_error::EsError;
use crate::es_mapping::matches_any;
use crate::es_setup::{
    check_expression, ensure_from_template, store_error, template_schema, TemplateFailure,
};
use crate::state::AppState;

/// The field Elasticsearch's data streams keep their event time in.
const TIMESTAMP_FIELD: &str = "@timestamp";

/// What the store keeps of a stream.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredStream {
    created_ms: u64,
}

fn not_found(name: &str) -> EsError {
    EsError::new(
        ErrorCode::CollectionNotFound,
        format!("no such data stream [{name}]"),
    )
    .with_detail("index", json!(name))
}

/// `PUT /_data_stream/{name}`: `{"acknowledged": true}`; 400
/// `resource_already_exists_exception` when a stream or index of that name exists.
pub async fn put_data_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    let collection = CollectionName::new(&name).map_err(|e| EsError::new(e.code, e.message))?;
    let store = &state.inner.store;
    let exists = store
        .get_definition(DefinitionKind::DataStream, &name)
        .await
        .map_err(store_error)?
        .is_some()
        || state.inner.catalog.get(&collection).is_some();
    if exists {
        return Err(EsError::new(
            ErrorCode::CollectionExists,
            format!("data stream or index [{name}] already exists"),
        )
        .with_detail("index", json!(name)));
    }
    let meta = match template_schema(&state, &collection).await {
        Ok(Some(schema)) => ensure_from_template(&state, &collection, schema).await?,
        Ok(None) => ensure_collection(&state, &collection, &[]).await?,
        Err(TemplateFailure::Refused(message)) => {
            return Err(EsError::new(ErrorCode::InvalidSchema, message))
        }
        Err(TemplateFailure::Store(error)) => return Err(error.into()),
    };
    let stored = StoredStream {
        created_ms: sluice_core::dlq::now_ms(),
    };
    let bytes = serde_json::to_vec(&stored).map_err(ApiError::internal)?;
    store
        .put_definition(DefinitionKind::DataStream, &name, Bytes::from(bytes))
        .await
        .map_err(store_error)?;
    tracing::info!(data_stream = %meta.name, "data stream created");
    Ok(Json(json!({"acknowledged": true})))
}

/// `GET /_data_stream` and `GET /_data_stream/{name}`: `{"data_streams": [...]}`.
async fn list(state: &AppState, expression: Option<&str>) -> Result<Json<Value>, EsError> {
    if let Some(expression) = expression {
        check_expression(expression)?;
    }
    let all = state
        .inner
        .store
        .list_definitions(DefinitionKind::DataStream)
        .await
        .map_err(store_error)?;
    let mut streams = Vec::new();
    for (name, _) in all {
        if !expression.is_none_or(|e| matches_any(e, &name)) {
            continue;
        }
        let live = CollectionName::new(&name)
            .ok()
            .and_then(|collection| state.inner.catalog.get(&collection));
        let Some(meta) = live else { continue };
        streams.push(json!({
            "name": name,
            "timestamp_field": {"name": TIMESTAMP_FIELD},
            "indices": [{"index_name": name, "index_uuid": format!("{}-{}", name, meta.generation.0)}],
            "generation": 1,
            "status": "GREEN",
            "hidden": false,
            "system": false,
            "allow_custom_routing": false,
            "replicated": false,
        }));
    }
    if let Some(expression) = expression {
        if streams.is_empty() && !expression.contains('*') {
            return Err(not_found(expression));
        }
    }
    Ok(Json(json!({"data_streams": streams})))
}

/// `GET /_data_stream`
pub async fn all_data_streams(State(state): State<AppState>) -> Result<Json<Value>, EsError> {
    list(&state, None).await
}

/// `GET /_data_stream/{name}`
pub async fn get_data_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    list(&state, Some(&name)).await
}

/// `DELETE /_data_stream/{name}`: the stream and its collection with every document.
pub async fn delete_data_stream(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    let collection = CollectionName::new(&name).map_err(|e| EsError::new(e.code, e.message))?;
    let removed = state
        .inner
        .store
        .delete_definition(DefinitionKind::DataStream, &name)
        .await
        .map_err(store_error)?;
    if !removed {
        return Err(not_found(&name));
    }
    crate::collections::delete(&state, &collection).await?;
    Ok(Json(json!({"acknowledged": true})))
}
