//! Elasticsearch index management on the collection catalog: `PUT /{index}`,
//! `GET /{index}`, `DELETE /{index}`, `GET /_mapping` and `GET /{index}/_mapping`,
//! `GET|POST /_field_caps` and `/{index}/_field_caps`, `GET|POST /_refresh` and
//! `/{index}/_refresh`.
//!
//! An index is a collection. `PUT /{index}` translates `mappings` and `settings` into a
//! schema ([`crate::es_mapping`], which states what is translated, ignored and refused)
//! and creates the collection only if none of that name exists (one step in the
//! catalog, so of two racing creations one gets 400 `resource_already_exists_exception`).
//! The reads translate the schema back. `DELETE /{index}` is the native collection
//! deletion (an operation in the DOCS log): `acknowledged: true` once a worker finished
//! it within `ingest.visibility_timeout`, `false` if it is still under way (it finishes
//! on its own); the index is gone for readers and writers as soon as it began.
//! `_refresh` waits until everything accepted before it is searchable: the native
//! visibility floor, per index.
//!
//! Names are single indexes: the comma lists and wildcards Elasticsearch takes in a path
//! are invalid collection names here and answer 400, except `_all` and `*` on the routes
//! that read every index.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sluice_core::store::CollectionMeta;
use sluice_core::{CollectionName, ErrorCode};
use std::sync::Arc;

use crate::bulk::wait_error;
use crate::collections::{catalog_error, delete};
use crate::es_error::EsError;
use crate::es_mapping::{field_caps_of, mappings_of, matches_any, schema_from_index, settings_of};
use crate::state::AppState;

/// The collection `index` names, or 404 `index_not_found_exception`.
fn existing(state: &AppState, index: &str) -> Result<Arc<CollectionMeta>, EsError> {
    let name = CollectionName::new(index).map_err(|e| EsError::new(e.code, e.message))?;
    state
        .inner
        .catalog
        .get(&name)
        .ok_or_else(|| EsError::index_not_found(index))
}

/// The collections an index expression names: all of them for none, `_all` or `*`, else
/// the comma-separated names (patterns with `*` match; a plain name must exist).
pub(crate) fn selected(
    state: &AppState,
    expression: Option<&str>,
) -> Result<Vec<Arc<CollectionMeta>>, EsError> {
    let all = state.inner.catalog.list();
    let Some(expression) = expression.filter(|e| !matches!(*e, "_all" | "*" | "")) else {
        return Ok(all);
    };
    let mut chosen: Vec<Arc<CollectionMeta>> = Vec::new();
    for part in expression.split(',').map(str::trim) {
        if part.contains('*') {
            chosen.extend(
                all.iter()
                    .filter(|meta| matches_any(part, meta.name.as_str()))
                    .cloned(),
            );
        } else {
            chosen.push(existing(state, part)?);
        }
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    chosen.dedup_by(|a, b| a.name == b.name);
    Ok(chosen)
}

/// Query parameters of `PUT /{index}`, accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// Accepted and ignored.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub master_timeout: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub wait_for_active_shards: Option<String>,
}

/// The body of `PUT /{index}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    mappings: Option<Value>,
    #[serde(default)]
    settings: Option<Value>,
    #[serde(default)]
    aliases: Option<Map<String, Value>>,
}

/// Reads the body of `PUT /{index}`: none, or an object of `mappings`, `settings`,
/// `aliases`, none of them null.
fn create_body(body: &[u8]) -> Result<CreateBody, EsError> {
    let invalid = |message: String| EsError::new(ErrorCode::InvalidRequest, message);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CreateBody::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the index body is not JSON: {e}")))?;
    let Value::Object(members) = &value else {
        return Err(invalid(
            "the index body must be a JSON object (mappings, settings, aliases)".to_owned(),
        ));
    };
    if let Some((name, _)) = members.iter().find(|(_, v)| v.is_null()) {
        return Err(invalid(format!("{name} is null; leave it out instead")));
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("the index body: {e}")))
}

/// `PUT /{index}`: `{"acknowledged", "shards_acknowledged", "index"}`.
pub async fn create_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    params: Result<Query<CreateParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    params.map_err(|e| EsError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let name = CollectionName::new(&index).map_err(|e| EsError::new(e.code, e.message))?;
    let body = create_body(&body)?;
    if body
        .aliases
        .as_ref()
        .is_some_and(|aliases| !aliases.is_empty())
    {
        return Err(EsError::new(
            ErrorCode::InvalidRequest,
            "aliases are not supported: sluice has no index aliases",
        ));
    }
    let schema = schema_from_index(body.mappings.as_ref(), body.settings.as_ref())
        .map_err(|message| EsError::new(ErrorCode::InvalidSchema, message))?;
    let created = state
        .inner
        .catalog
        .create(&name, schema)
        .await
        .map_err(catalog_error)?;
    let Some(meta) = created else {
        return Err(EsError::new(
            ErrorCode::CollectionExists,
            format!("index [{index}] already exists"),
        )
        .with_detail("index", json!(index)));
    };
    state
        .inner
        .visibility
        .wait_index_ready(&meta)
        .await
        .map_err(wait_error)?;
    Ok(Json(
        json!({"acknowledged": true, "shards_acknowledged": true, "index": index}),
    ))
}

/// `GET /{index}`: `{"<index>": {"aliases", "mappings", "settings"}}`.
pub async fn get_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<Value>, EsError> {
    let mut answer = Map::new();
    for meta in selected(&state, Some(&index))? {
        answer.insert(
            meta.name.to_string(),
            json!({"aliases": {}, "mappings": mappings_of(&meta.schema), "settings": settings_of(&meta)}),
        );
    }
    Ok(Json(Value::Object(answer)))
}

/// `DELETE /{index}`: `{"acknowledged"}`; 404 `index_not_found_exception`.
pub async fn delete_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<Value>, EsError> {
    let name = CollectionName::new(&index).map_err(|e| EsError::new(e.code, e.message))?;
    match delete(&state, &name).await? {
        Some(finished) => Ok(Json(json!({"acknowledged": finished}))),
        None => Err(EsError::index_not_found(&index)),
    }
}

fn mappings_answer(metas: &[Arc<CollectionMeta>]) -> Json<Value> {
    let answer: Map<String, Value> = metas
        .iter()
        .map(|meta| {
            (
                meta.name.to_string(),
                json!({"mappings": mappings_of(&meta.schema)}),
            )
        })
        .collect();
    Json(Value::Object(answer))
}

/// `GET /_mapping`: every index's mappings.
pub async fn all_mappings(State(state): State<AppState>) -> Result<Json<Value>, EsError> {
    Ok(mappings_answer(&selected(&state, None)?))
}

/// `GET /{index}/_mapping`: `{"<index>": {"mappings": {"properties": ...}}}`.
pub async fn index_mappings(
    State(state): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<Value>, EsError> {
    Ok(mappings_answer(&selected(&state, Some(&index))?))
}

/// Query parameters of `_field_caps`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCapsParams {
    /// Comma-separated field names or `*` patterns.
    #[serde(default)]
    pub fields: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub ignore_unavailable: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub allow_no_indices: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub expand_wildcards: Option<String>,
    /// Accepted and ignored: every field is mapped.
    #[serde(default)]
    pub include_unmapped: Option<String>,
}

/// The `fields` of a `_field_caps` request: from the query, else from a JSON body's
/// `fields` (a list or a comma-separated string).
fn field_patterns(params: &FieldCapsParams, body: &[u8]) -> Result<String, EsError> {
    let invalid = |message: &str| EsError::new(ErrorCode::InvalidRequest, message);
    if let Some(fields) = &params.fields {
        return Ok(fields.clone());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("fields is missing: name the fields, or *"));
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|_| invalid("the _field_caps body is not JSON"))?;
    if let Some(other) = body
        .as_object()
        .and_then(|members| members.keys().find(|key| key.as_str() != "fields"))
    {
        return Err(invalid(&format!(
            "{other} is not supported in a _field_caps body (only fields)"
        )));
    }
    match body.get("fields") {
        Some(Value::String(fields)) => Ok(fields.clone()),
        Some(Value::Array(fields)) if fields.iter().all(Value::is_string) => Ok(fields
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")),
        _ => Err(invalid(
            "fields must be a list of field names or * patterns",
        )),
    }
}

async fn field_caps_run(
    state: AppState,
    index: Option<String>,
    params: Result<Query<FieldCapsParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    let Query(params) =
        params.map_err(|e| EsError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let patterns = field_patterns(&params, &body)?;
    let metas = selected(&state, index.as_deref())?;
    let refs: Vec<&CollectionMeta> = metas.iter().map(|meta| meta.as_ref()).collect();
    let indices: Vec<&str> = refs.iter().map(|meta| meta.name.as_str()).collect();
    Ok(Json(
        json!({"indices": indices, "fields": field_caps_of(&refs, &patterns)}),
    ))
}

/// `GET|POST /_field_caps?fields=...`
pub async fn all_field_caps(
    State(state): State<AppState>,
    params: Result<Query<FieldCapsParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    field_caps_run(state, None, params, body).await
}

/// `GET|POST /{index}/_field_caps?fields=...`
pub async fn index_field_caps(
    State(state): State<AppState>,
    Path(index): Path<String>,
    params: Result<Query<FieldCapsParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    field_caps_run(state, Some(index), params, body).await
}

async fn refresh_run(state: AppState, index: Option<String>) -> Result<Json<Value>, EsError> {
    let metas = selected(&state, index.as_deref())?;
    let mut shards = 0;
    for meta in &metas {
        state
            .inner
            .visibility
            .wait_all_searchable(meta)
            .await
            .map_err(wait_error)?;
        shards += meta.shards();
    }
    Ok(Json(
        json!({"_shards": {"total": shards, "successful": shards, "failed": 0}}),
    ))
}

/// `GET|POST /_refresh`: every index.
pub async fn refresh_all(State(state): State<AppState>) -> Result<Json<Value>, EsError> {
    refresh_run(state, None).await
}

/// `GET|POST /{index}/_refresh`
pub async fn refresh_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<Value>, EsError> {
    refresh_run(state, Some(index)).await
}
