//! What Elasticsearch shippers call while they set up: `GET /_nodes/http` (and
//! `/_nodes/{node_id}/http`, which sniffing clients send),
//! `GET /_license`, `GET /_xpack`, and the templates and lifecycle policies they install
//! (`/_index_template/{name}`, `/_component_template/{name}`, `/_template/{name}`,
//! `/_ilm/policy/{name}`).
//!
//! The node, license and feature answers are fixed: one node, publishing the address the
//! client reached it at (the `Host` header); an active `basic` license; and every X-Pack
//! feature unavailable and disabled, since sluice has none of them (so shippers that
//! probe for ILM or security do not rely on them).
//!
//! Templates and policies are accepted, checked for the members Elasticsearch requires,
//! and kept durably in the store beside the collection catalog
//! ([`sluice_core::store::Store::put_definition`]), so they are there after a restart and
//! on every node; each carries a version bumped on every put and its modification time.
//! They are returned as they were given. An index created by its first write (`_bulk`,
//! the single-document writes) takes its mappings and settings from the index template
//! of highest `priority` whose `index_patterns` match its name (ties: the first by name),
//! with the `template` of each of its `composed_of` component templates merged in order
//! and its own last ([`template_schema`]); a template whose mappings sluice cannot honour
//! fails the items of that index, naming what it refused. Nothing else applies them:
//! legacy templates shape no index, `PUT /{index}` takes only its own body, no lifecycle
//! runs.
//!
//! Reads take a name, a comma list or `*` patterns; a plain name that matches nothing is
//! a 404 `resource_not_found_exception`, a pattern that matches nothing an empty answer,
//! as in Elasticsearch.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_core::schema::Schema;
use sluice_core::store::{CollectionMeta, DefinitionKind};
use sluice_core::{CollectionName, ErrorCode};
use std::sync::Arc;

use crate::bulk::wait_error;
use crate::collections::catalog_error;
use crate::error::ApiError;
use crate::es_compat::COMPATIBLE_VERSION;
use crate::es_error::EsError;
use crate::es_mapping::{matches_any, schema_from_index};
use crate::state::AppState;

/// The node's id in `_nodes` answers.
const NODE_ID: &str = "sluice";

/// `GET /_nodes/http`: this node, with the address the client used as its publish
/// address.
pub async fn nodes_http(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let address = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1:7171")
        .to_owned();
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(host, _)| host)
        .to_owned();
    Json(json!({
        "_nodes": {"total": 1, "successful": 1, "failed": 0},
        "cluster_name": "sluice",
        "nodes": {NODE_ID: {
            "name": "sluice",
            "transport_address": address,
            "host": host,
            "ip": host,
            "version": COMPATIBLE_VERSION,
            "build_flavor": "default",
            "build_type": "sluice",
            "build_hash": env!("CARGO_PKG_VERSION"),
            "roles": ["data", "ingest", "master"],
            "attributes": {},
            "http": {
                "bound_address": [address],
                "publish_address": address,
                "max_content_length_in_bytes": state.inner.config.max_body_size.as_u64(),
            },
        }},
    }))
}

/// `GET /_nodes/{node_id}/http` (what sniffing clients send, `_nodes/_all/http`): this
/// node for `_all`, `_local`, `_master` or its id, none for any other selector.
pub async fn selected_nodes_http(
    state: State<AppState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
) -> Json<Value> {
    let Json(mut answer) = nodes_http(state, headers).await;
    let selected = node_id.split(',').any(|selector| {
        matches!(
            selector.trim(),
            "_all" | "_local" | "_master" | "*" | NODE_ID
        )
    });
    if !selected {
        answer["_nodes"] = json!({"total": 0, "successful": 0, "failed": 0});
        answer["nodes"] = json!({});
    }
    Json(answer)
}

/// Query parameters of `_license` and `_xpack`, accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfoParams {
    /// Accepted and ignored.
    #[serde(default)]
    pub local: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub accept_enterprise: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub categories: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub human: Option<String>,
}

fn info_params(params: Result<Query<InfoParams>, QueryRejection>) -> Result<(), EsError> {
    params
        .map(drop)
        .map_err(|e| EsError::new(ErrorCode::InvalidRequest, e.body_text()))
}

/// `GET /_license`: an active basic license.
pub async fn license(
    params: Result<Query<InfoParams>, QueryRejection>,
) -> Result<Json<Value>, EsError> {
    info_params(params)?;
    Ok(Json(json!({"license": {
        "status": "active",
        "uid": "sluice",
        "type": "basic",
        "issue_date": "1970-01-01T00:00:00.000Z",
        "issue_date_in_millis": 0,
        "max_nodes": 1000,
        "max_resource_units": null,
        "issued_to": "sluice",
        "issuer": "sluice",
        "start_date_in_millis": -1,
    }})))
}

/// The X-Pack features `_xpack` lists, none of which sluice has.
const XPACK_FEATURES: [&str; 20] = [
    "aggregate_metric",
    "analytics",
    "ccr",
    "data_streams",
    "data_tiers",
    "enrich",
    "eql",
    "frozen_indices",
    "graph",
    "ilm",
    "logstash",
    "ml",
    "monitoring",
    "rollup",
    "searchable_snapshots",
    "security",
    "slm",
    "sql",
    "transform",
    "watcher",
];

/// `GET /_xpack`: the build, the basic license, every feature unavailable.
pub async fn xpack(
    params: Result<Query<InfoParams>, QueryRejection>,
) -> Result<Json<Value>, EsError> {
    info_params(params)?;
    let features: Map<String, Value> = XPACK_FEATURES
        .iter()
        .map(|name| {
            (
                (*name).to_owned(),
                json!({"available": false, "enabled": false}),
            )
        })
        .collect();
    Ok(Json(json!({
        "build": {"hash": env!("CARGO_PKG_VERSION"), "date": "1970-01-01T00:00:00.000Z"},
        "license": {"uid": "sluice", "type": "basic", "mode": "basic", "status": "active"},
        "features": features,
    })))
}

/// A definition as stored: what was given, its version and when it was last put.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    version: u64,
    modified_ms: u64,
    body: Value,
}

/// Longest definition name.
const MAX_NAME_BYTES: usize = 255;

/// Refuses a name Elasticsearch would refuse for a template or policy (and any that a
/// read could take for a pattern or a list).
fn check_name(name: &str) -> Result<(), EsError> {
    let bad_char = name
        .chars()
        .find(|c| c.is_whitespace() || "\\/*?\"<>|,#:".contains(*c));
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.starts_with(['_', '-', '+'])
        || bad_char.is_some()
    {
        return Err(EsError::new(
            ErrorCode::InvalidRequest,
            format!(
                "invalid name [{name}]: 1 to {MAX_NAME_BYTES} bytes, not starting with _, - or +, \
                 without whitespace or any of \\ / * ? \" < > | , # :"
            ),
        ));
    }
    Ok(())
}

/// Refuses a read's name expression that no definition name (comma lists and `*`
/// patterns of them) could be.
pub(crate) fn check_expression(expression: &str) -> Result<(), EsError> {
    expression
        .split(',')
        .map(|part| part.replace('*', "x"))
        .try_for_each(|part| check_name(part.trim()))
}

fn store_api_error(error: sluice_core::store::StoreError) -> ApiError {
    if error.is_transient() {
        ApiError::unavailable("store", error)
    } else {
        ApiError::internal(error)
    }
}

pub(crate) fn store_error(error: sluice_core::store::StoreError) -> EsError {
    store_api_error(error).into()
}

/// The members a definition of `kind` may have, and those it must have.
fn members_of(kind: DefinitionKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        DefinitionKind::IndexTemplate => (
            &[
                "index_patterns",
                "template",
                "composed_of",
                "priority",
                "version",
                "_meta",
                "data_stream",
                "allow_auto_create",
                "ignore_missing_component_templates",
                "deprecated",
            ],
            &["index_patterns"],
        ),
        DefinitionKind::ComponentTemplate => (
            &["template", "version", "_meta", "deprecated"],
            &["template"],
        ),
        DefinitionKind::LegacyTemplate => (
            &[
                "index_patterns",
                "order",
                "version",
                "settings",
                "mappings",
                "aliases",
            ],
            &["index_patterns"],
        ),
        _ => (&["policy"], &["policy"]),
    }
}

/// Checks a definition body: a JSON object with the members its kind requires and no
/// others; `index_patterns` a pattern or a non-empty list of them.
fn check_body(kind: DefinitionKind, body: &[u8]) -> Result<Value, EsError> {
    let invalid = |message: String| EsError::new(ErrorCode::InvalidRequest, message);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    let Value::Object(members) = &value else {
        return Err(invalid("the body must be a JSON object".to_owned()));
    };
    let (allowed, required) = members_of(kind);
    if let Some(unknown) = members.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(format!("unknown member [{unknown}]")));
    }
    if let Some(missing) = required.iter().find(|k| !members.contains_key(**k)) {
        return Err(invalid(format!("[{missing}] is required")));
    }
    match members.get("index_patterns") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(patterns))
            if !patterns.is_empty() && patterns.iter().all(Value::is_string) => {}
        Some(_) => {
            return Err(invalid(
                "index_patterns must be a pattern or a non-empty list of patterns".to_owned(),
            ))
        }
    }
    for object_member in [
        "template", "policy", "settings", "mappings", "aliases", "_meta",
    ] {
        if members
            .get(object_member)
            .is_some_and(|member| !member.is_object())
        {
            return Err(invalid(format!("[{object_member}] must be an object")));
        }
    }
    Ok(value)
}

/// Query parameters of a definition `PUT`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    /// `true`: refuse to replace an existing definition.
    #[serde(default)]
    pub create: Option<bool>,
    /// Accepted and ignored.
    #[serde(default)]
    pub master_timeout: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub cause: Option<String>,
    /// Accepted and ignored (legacy templates).
    #[serde(default)]
    pub order: Option<String>,
}

async fn put(
    state: &AppState,
    kind: DefinitionKind,
    name: &str,
    params: Result<Query<PutParams>, QueryRejection>,
    body: &[u8],
) -> Result<Json<Value>, EsError> {
    let Query(params) =
        params.map_err(|e| EsError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    check_name(name)?;
    let body = check_body(kind, body)?;
    let store = &state.inner.store;
    let previous = store
        .get_definition(kind, name)
        .await
        .map_err(store_error)?;
    if previous.is_some() && params.create == Some(true) {
        return Err(EsError::new(
            ErrorCode::InvalidRequest,
            format!("[{name}] already exists"),
        ));
    }
    let version = match previous {
        Some(bytes) => decode(&bytes)?.version + 1,
        None => 1,
    };
    let stored = Stored {
        version,
        modified_ms: sluice_core::dlq::now_ms(),
        body,
    };
    let bytes = serde_json::to_vec(&stored).map_err(ApiError::internal)?;
    store
        .put_definition(kind, name, Bytes::from(bytes))
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"acknowledged": true})))
}

fn decode_definition(bytes: &[u8]) -> Result<Stored, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("a stored definition does not decode: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Stored, EsError> {
    Ok(decode_definition(bytes)?)
}

/// What the reader wants: every definition, or those matching a name expression.
async fn matching(
    state: &AppState,
    kind: DefinitionKind,
    expression: Option<&str>,
    what: &str,
) -> Result<Vec<(String, Stored)>, EsError> {
    if let Some(expression) = expression {
        check_expression(expression)?;
    }
    let all = state
        .inner
        .store
        .list_definitions(kind)
        .await
        .map_err(store_error)?;
    let mut found = Vec::new();
    for (name, bytes) in all {
        if expression.is_none_or(|e| matches_any(e, &name)) {
            found.push((name, decode(&bytes)?));
        }
    }
    if let Some(expression) = expression {
        if found.is_empty() && !expression.contains('*') {
            return Err(EsError::new(
                ErrorCode::DefinitionNotFound,
                format!("{what} matching [{expression}] not found"),
            ));
        }
    }
    Ok(found)
}

/// `HEAD` of a definition: 200 when it exists, else 404 (no body, as for any HEAD).
async fn exists(state: &AppState, kind: DefinitionKind, name: &str) -> Result<StatusCode, EsError> {
    check_name(name)?;
    let found = state
        .inner
        .store
        .get_definition(kind, name)
        .await
        .map_err(store_error)?;
    Ok(if found.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

async fn delete(
    state: &AppState,
    kind: DefinitionKind,
    name: &str,
    what: &str,
) -> Result<Json<Value>, EsError> {
    check_name(name)?;
    let removed = state
        .inner
        .store
        .delete_definition(kind, name)
        .await
        .map_err(store_error)?;
    if removed {
        Ok(Json(json!({"acknowledged": true})))
    } else {
        Err(EsError::new(
            ErrorCode::DefinitionNotFound,
            format!("{what} [{name}] not found"),
        ))
    }
}

/// `PUT|POST /_index_template/{name}`
pub async fn put_index_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<PutParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    put(&state, DefinitionKind::IndexTemplate, &name, params, &body).await
}

fn index_templates(found: Vec<(String, Stored)>) -> Json<Value> {
    let templates: Vec<Value> = found
        .into_iter()
        .map(|(name, stored)| json!({"name": name, "index_template": stored.body}))
        .collect();
    Json(json!({ "index_templates": templates }))
}

/// `GET /_index_template`
pub async fn all_index_templates(State(state): State<AppState>) -> Result<Json<Value>, EsError> {
    let found = matching(
        &state,
        DefinitionKind::IndexTemplate,
        None,
        "index template",
    )
    .await?;
    Ok(index_templates(found))
}

/// `GET /_index_template/{name}`: `{"index_templates": [{"name", "index_template"}]}`.
pub async fn get_index_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    let found = matching(
        &state,
        DefinitionKind::IndexTemplate,
        Some(&name),
        "index template",
    )
    .await?;
    Ok(index_templates(found))
}

/// `HEAD /_index_template/{name}`: 200 or 404.
pub async fn index_template_exists(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, EsError> {
    exists(&state, DefinitionKind::IndexTemplate, &name).await
}

/// `DELETE /_index_template/{name}`
pub async fn delete_index_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    delete(
        &state,
        DefinitionKind::IndexTemplate,
        &name,
        "index template",
    )
    .await
}

/// `PUT|POST /_component_template/{name}`
pub async fn put_component_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<PutParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    put(
        &state,
        DefinitionKind::ComponentTemplate,
        &name,
        params,
        &body,
    )
    .await
}

fn component_templates(found: Vec<(String, Stored)>) -> Json<Value> {
    let templates: Vec<Value> = found
        .into_iter()
        .map(|(name, stored)| json!({"name": name, "component_template": stored.body}))
        .collect();
    Json(json!({ "component_templates": templates }))
}

/// `GET /_component_template`
pub async fn all_component_templates(
    State(state): State<AppState>,
) -> Result<Json<Value>, EsError> {
    let found = matching(
        &state,
        DefinitionKind::ComponentTemplate,
        None,
        "component template",
    )
    .await?;
    Ok(component_templates(found))
}

/// `GET /_component_template/{name}`:
/// `{"component_templates": [{"name", "component_template"}]}`.
pub async fn get_component_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    let found = matching(
        &state,
        DefinitionKind::ComponentTemplate,
        Some(&name),
        "component template",
    )
    .await?;
    Ok(component_templates(found))
}

/// `HEAD /_component_template/{name}`: 200 or 404.
pub async fn component_template_exists(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, EsError> {
    exists(&state, DefinitionKind::ComponentTemplate, &name).await
}

/// `DELETE /_component_template/{name}`
pub async fn delete_component_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    delete(
        &state,
        DefinitionKind::ComponentTemplate,
        &name,
        "component template",
    )
    .await
}

/// `PUT|POST /_template/{name}` (legacy index templates)
pub async fn put_legacy_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<PutParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    put(&state, DefinitionKind::LegacyTemplate, &name, params, &body).await
}

/// The legacy templates matching `expression` (all without one), as `GET /_template`
/// answers them: `{"<name>": {"order", "index_patterns", ...}}`.
async fn legacy_templates(
    state: &AppState,
    expression: Option<&str>,
) -> Result<Json<Value>, EsError> {
    let found = matching(
        state,
        DefinitionKind::LegacyTemplate,
        expression,
        "index template",
    )
    .await?;
    let answer: Map<String, Value> = found
        .into_iter()
        .map(|(name, stored)| {
            let mut body = stored.body;
            for (member, default) in [
                ("order", json!(0)),
                ("settings", json!({})),
                ("mappings", json!({})),
                ("aliases", json!({})),
            ] {
                if body.get(member).is_none() {
                    body[member] = default;
                }
            }
            (name, body)
        })
        .collect();
    Ok(Json(Value::Object(answer)))
}

/// `GET /_template`
pub async fn all_legacy_templates(State(state): State<AppState>) -> Result<Json<Value>, EsError> {
    legacy_templates(&state, None).await
}

/// `GET /_template/{name}`: `{"<name>": {"order", "index_patterns", ...}}`.
pub async fn get_legacy_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    legacy_templates(&state, Some(&name)).await
}

/// `HEAD /_template/{name}`: 200 or 404.
pub async fn legacy_template_exists(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, EsError> {
    exists(&state, DefinitionKind::LegacyTemplate, &name).await
}

/// `DELETE /_template/{name}`
pub async fn delete_legacy_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    delete(
        &state,
        DefinitionKind::LegacyTemplate,
        &name,
        "index template",
    )
    .await
}

/// `PUT /_ilm/policy/{name}` with `{"policy": {...}}`.
pub async fn put_lifecycle_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Result<Query<PutParams>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, EsError> {
    put(
        &state,
        DefinitionKind::LifecyclePolicy,
        &name,
        params,
        &body,
    )
    .await
}

/// RFC 3339 of milliseconds since the epoch (`modified_date`).
fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn lifecycle_policies(found: Vec<(String, Stored)>) -> Json<Value> {
    let answer: Map<String, Value> = found
        .into_iter()
        .map(|(name, stored)| {
            let policy = stored.body.get("policy").cloned().unwrap_or(json!({}));
            (
                name,
                json!({"version": stored.version, "modified_date": rfc3339(stored.modified_ms),
                       "policy": policy,
                       "in_use_by": {"indices": [], "data_streams": [], "composable_templates": []}}),
            )
        })
        .collect();
    Json(Value::Object(answer))
}

/// `GET /_ilm/policy`
pub async fn all_lifecycle_policies(State(state): State<AppState>) -> Result<Json<Value>, EsError> {
    let found = matching(
        &state,
        DefinitionKind::LifecyclePolicy,
        None,
        "lifecycle policy",
    )
    .await?;
    Ok(lifecycle_policies(found))
}

/// `GET /_ilm/policy/{name}`: `{"<name>": {"version", "modified_date", "policy"}}`.
pub async fn get_lifecycle_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    let found = matching(
        &state,
        DefinitionKind::LifecyclePolicy,
        Some(&name),
        "lifecycle policy",
    )
    .await?;
    Ok(lifecycle_policies(found))
}

/// `DELETE /_ilm/policy/{name}`
pub async fn delete_lifecycle_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, EsError> {
    delete(
        &state,
        DefinitionKind::LifecyclePolicy,
        &name,
        "lifecycle policy",
    )
    .await
}

/// Why no schema came from the index templates.
#[derive(Debug)]
pub(crate) enum TemplateFailure {
    /// The store could not list them: the request fails.
    Store(ApiError),
    /// The matching template cannot be honoured (the reason names what): the index's
    /// items fail.
    Refused(String),
}

/// Merges `patch` into `target`, objects member by member, anything else replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Whether an index template's `index_patterns` match `index`.
fn patterns_match(template: &Value, index: &str) -> bool {
    match template.get("index_patterns") {
        Some(Value::String(pattern)) => matches_any(pattern, index),
        Some(Value::Array(patterns)) => patterns
            .iter()
            .filter_map(Value::as_str)
            .any(|pattern| matches_any(pattern, index)),
        _ => false,
    }
}

/// The schema a new index `index` gets from the index templates (see the module docs);
/// `None` when the index exists or no template matches.
pub(crate) async fn template_schema(
    state: &AppState,
    index: &CollectionName,
) -> Result<Option<Schema>, TemplateFailure> {
    if state.inner.catalog.get(index).is_some() {
        return Ok(None);
    }
    let store = &state.inner.store;
    let failed = |error| TemplateFailure::Store(store_api_error(error));
    let templates = store
        .list_definitions(DefinitionKind::IndexTemplate)
        .await
        .map_err(failed)?;
    let mut best: Option<(i64, String, Value)> = None;
    for (name, bytes) in templates {
        let stored = decode_definition(&bytes).map_err(TemplateFailure::Store)?;
        if !patterns_match(&stored.body, index.as_str()) {
            continue;
        }
        let priority = stored
            .body
            .get("priority")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        // Listed by name: on equal priority the first name stays.
        if best.as_ref().is_none_or(|(top, _, _)| priority > *top) {
            best = Some((priority, name, stored.body));
        }
    }
    let Some((_, name, template)) = best else {
        return Ok(None);
    };
    let mut merged = json!({});
    for component in template
        .get("composed_of")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let bytes = store
            .get_definition(DefinitionKind::ComponentTemplate, component)
            .await
            .map_err(failed)?
            .ok_or_else(|| {
                TemplateFailure::Refused(format!(
                    "index template [{name}] is composed of component template [{component}], \
                     which does not exist"
                ))
            })?;
        let stored = decode_definition(&bytes).map_err(TemplateFailure::Store)?;
        merge(
            &mut merged,
            stored.body.get("template").unwrap_or(&Value::Null),
        );
    }
    if let Some(own) = template.get("template") {
        merge(&mut merged, own);
    }
    schema_from_index(merged.get("mappings"), merged.get("settings"))
        .map(Some)
        .map_err(|reason| TemplateFailure::Refused(format!("index template [{name}]: {reason}")))
}

/// Creates `index` from a template's `schema` (unless a concurrent write created it
/// first), as a first write creates it.
pub(crate) async fn ensure_from_template(
    state: &AppState,
    index: &CollectionName,
    schema: Schema,
) -> Result<Arc<CollectionMeta>, ApiError> {
    let meta = state
        .inner
        .catalog
        .get_or_create_from(index, schema)
        .await
        .map_err(catalog_error)?;
    state
        .inner
        .visibility
        .wait_index_ready(&meta)
        .await
        .map_err(wait_error)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_need_what_elasticsearch_requires() {
        let check = |kind, body: Value| check_body(kind, body.to_string().as_bytes()).is_ok();
        use DefinitionKind::*;
        assert!(check(
            IndexTemplate,
            json!({"index_patterns": ["logs-*"], "template": {"mappings": {}}, "priority": 5})
        ));
        assert!(check(IndexTemplate, json!({"index_patterns": "logs-*"})));
        assert!(!check(IndexTemplate, json!({"template": {}})));
        assert!(!check(IndexTemplate, json!({"index_patterns": []})));
        assert!(!check(
            IndexTemplate,
            json!({"index_patterns": ["a"], "bogus": 1})
        ));
        assert!(!check(
            IndexTemplate,
            json!({"index_patterns": ["a"], "template": []})
        ));
        assert!(check(
            ComponentTemplate,
            json!({"template": {"settings": {}}})
        ));
        assert!(!check(ComponentTemplate, json!({})));
        assert!(check(LifecyclePolicy, json!({"policy": {"phases": {}}})));
        assert!(!check(LifecyclePolicy, json!({"phases": {}})));
        assert!(check(
            LegacyTemplate,
            json!({"index_patterns": ["a"], "order": 1})
        ));
        assert!(check_body(IndexTemplate, b"[]").is_err());
    }

    #[test]
    fn names_are_checked() {
        for ok in ["logs", "logs-template", "a.b", "x_1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_x", "-x", "a b", "a*", "a,b", "a/b", &"n".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_match_by_pattern_and_merge_objects() {
        let template = json!({"index_patterns": ["logs-*", "metrics"]});
        assert!(patterns_match(&template, "logs-app"));
        assert!(patterns_match(&template, "metrics"));
        assert!(!patterns_match(&template, "metrics-1"));
        assert!(patterns_match(&json!({"index_patterns": "a*"}), "ab"));
        let mut merged =
            json!({"mappings": {"properties": {"a": {"type": "text"}}}, "settings": {"x": 1}});
        merge(
            &mut merged,
            &json!({"mappings": {"properties": {"b": {"type": "long"}, "a": {"type": "keyword"}}}}),
        );
        assert_eq!(
            merged,
            json!({"mappings": {"properties": {"a": {"type": "keyword"}, "b": {"type": "long"}}}, "settings": {"x": 1}})
        );
    }

    #[test]
    fn modified_dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
