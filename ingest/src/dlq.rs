//! The dead-letter queue routes: `GET /v1/dlq`, `POST /v1/dlq/replay`, `DELETE /v1/dlq`.
//!
//! Thin wrappers over [`sluice_core::dlq::DeadLetterAdmin`] (the workers' dead-letter queue,
//! wired by the binary), which holds the semantics
//! (replay keeps last-writer-wins order, idempotence, depth counting). Listings carry what
//! an operator needs to decide (collection, id, op kind, error code and message, attempts,
//! failure times) but never document values: a document may hold `personal_data`.
//! Purging everything must be asked for explicitly (`all=true`).

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_core::dlq::{
    DlqEntry, DlqSelection, ReplayLimits, DELETE_OP, MAX_LIST_LIMIT, MAX_SELECTED_IDS,
};
use sluice_core::{CollectionName, ErrorCode, Seq};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;

/// Entries listed when the request does not say.
const DEFAULT_LIST_LIMIT: usize = 100;

/// Query of `GET /v1/dlq`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only this collection's entries.
    collection: Option<String>,
    /// Only entries with an id above this one (paging).
    #[serde(default)]
    after: u64,
    /// Most entries returned (1 to 500).
    limit: Option<usize>,
}

/// Body of `POST /v1/dlq/replay`: exactly one of the selectors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Every entry.
    #[serde(default)]
    all: bool,
    /// One collection's entries.
    collection: Option<String>,
    /// These entry ids.
    ids: Option<Vec<u64>>,
}

/// Query of `DELETE /v1/dlq`: exactly one of the selectors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeParams {
    /// Every entry.
    #[serde(default)]
    all: bool,
    /// One collection's entries.
    collection: Option<String>,
    /// Comma-separated entry ids.
    ids: Option<String>,
}

fn collection_name(name: String) -> Result<CollectionName, ApiError> {
    CollectionName::new(name).map_err(|e| ApiError::new(e.code, e.message))
}

fn selection(
    all: bool,
    collection: Option<String>,
    ids: Option<Vec<u64>>,
) -> Result<DlqSelection, ApiError> {
    let chosen = usize::from(all) + usize::from(collection.is_some()) + usize::from(ids.is_some());
    if chosen != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "select the entries with exactly one of: all, collection, ids",
        ));
    }
    if let Some(name) = collection {
        return Ok(DlqSelection::Collection(collection_name(name)?));
    }
    if let Some(mut ids) = ids {
        // An id named twice is one entry, replayed or purged once.
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() || ids.len() > MAX_SELECTED_IDS {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("ids must name 1 to {MAX_SELECTED_IDS} entries"),
            ));
        }
        return Ok(DlqSelection::Entries(ids.into_iter().map(Seq).collect()));
    }
    Ok(DlqSelection::All)
}

fn rfc3339(ms: u64) -> Value {
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn entry_json(entry: &DlqEntry) -> Value {
    let record = &entry.record;
    let op = match &record.op {
        Value::Object(_) => json!("upsert"),
        Value::String(s) if s == DELETE_OP => json!("delete"),
        _ => Value::Null,
    };
    json!({
        "entry_id": entry.entry_id.0,
        "collection": record.collection,
        "id": record.id,
        "op": op,
        "seq": record.seq.0,
        "code": record.code,
        "message": record.message,
        "attempts": record.attempts,
        "first_failure": rfc3339(record.first_failure_ms),
        "last_failure": rfc3339(record.last_failure_ms),
        "dead_lettered_at": rfc3339(entry.appended_at_ms),
    })
}

/// `GET /v1/dlq`
pub async fn list_dlq(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit must be 1 to {MAX_LIST_LIMIT}"),
        ));
    }
    let collection = params.collection.map(collection_name).transpose()?;
    let dlq = &state.inner.dlq;
    let page = dlq
        .list(collection.as_ref(), Seq(params.after), limit)
        .await
        .map_err(|e| ApiError::unavailable("log", e))?;
    let depth: serde_json::Map<String, Value> = dlq
        .depth()
        .await
        .map_err(|e| ApiError::unavailable("log", e))?
        .into_iter()
        .filter(|(c, _)| collection.as_ref().is_none_or(|wanted| wanted == c))
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect();
    Ok(Json(json!({
        "entries": page.entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_after": page.next_after.map(|s| s.0),
        "depth": depth,
    })))
}

/// `POST /v1/dlq/replay`
pub async fn replay_dlq(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // A selector given as null is not left out: refused, like any malformed selection.
    if let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(&body) {
        if let Some((name, _)) = members.iter().find(|(_, value)| value.is_null()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is null; give exactly one of all, collection, ids"),
            ));
        }
    }
    let request: ReplayRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the body must be a JSON object with one of all, collection, ids: {e}"),
        )
    })?;
    let selection = selection(request.all, request.collection, request.ids)?;
    let config = &state.inner.config;
    let limits = ReplayLimits {
        max_docs: config.max_batch_docs,
        max_bytes: config.max_batch_size.as_u64() as usize,
    };
    let catalog = state.inner.catalog.clone();
    let report = state
        .inner
        .dlq
        .replay(
            &selection,
            &|c| catalog.get(c).map(|meta| (meta.shards(), meta.generation)),
            limits,
        )
        .await
        .map_err(|e| ApiError::unavailable("log", e))?;
    Ok(Json(json!(report)))
}

/// `DELETE /v1/dlq`
pub async fn purge_dlq(
    State(state): State<AppState>,
    params: Result<Query<PurgeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    let ids = params
        .ids
        .map(|ids| {
            ids.split(',')
                .map(|id| id.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidRequest,
                        "ids must be comma-separated entry ids",
                    )
                })
        })
        .transpose()?;
    let selection = selection(params.all, params.collection, ids)?;
    let purged = state
        .inner
        .dlq
        .purge(&selection)
        .await
        .map_err(|e| ApiError::unavailable("log", e))?;
    Ok(Json(json!({ "purged": purged })))
}
