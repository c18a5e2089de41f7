//! What Elasticsearch clients and shippers check before they send anything: the product
//! header, the versioned media types, and the handshake routes.
//!
//! - Every response carries `X-Elastic-Product: Elasticsearch`: the official clients (8
//!   and later) refuse an answer without it, even a 2xx one, after the request took
//!   effect ([`elastic_product`], the outermost layer of [`crate::server::serve`]).
//! - Requests may send `application/vnd.elasticsearch+json; compatible-with=N` (and
//!   `+x-ndjson` for bulk bodies). Their JSON answers come back in the same media type
//!   with the same `compatible-with`, as Elasticsearch echoes it; bodies of that type are
//!   read like plain JSON and NDJSON ([`crate::body`]).
//! - `GET /` (and `HEAD /`) answers the node's info in Elasticsearch's shape, with the
//!   version of Elasticsearch whose API sluice follows ([`COMPATIBLE_VERSION`]);
//!   `GET /_cluster/health` answers a single green node; `HEAD /{index}` tells whether a
//!   collection exists.
//! - `GET|HEAD /{index}/_doc/{id}` answers a document in Elasticsearch's shape (with
//!   `found`; read-your-writes, like the native `GET`). Searches and counts are
//!   [`crate::es_search`]'s.

use axum::extract::{Path, Request, State};
use axum::http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};
use sluice_core::CollectionName;

use crate::documents::{collection_meta, document_id, read_document};
use crate::error::ApiError;
use crate::state::AppState;

/// The header the official clients look for on every answer.
pub const PRODUCT_HEADER: &str = "x-elastic-product";

/// The Elasticsearch release whose REST API sluice follows, as `GET /` reports it.
pub const COMPATIBLE_VERSION: &str = "8.17.0";

/// The versioned JSON media type the clients send and expect back.
const VENDOR_JSON: &str = "application/vnd.elasticsearch+json";

/// Adds the product header to every response, and answers in the versioned media type
/// a request asked for.
pub async fn elastic_product(request: Request, next: Next) -> Response {
    let compatible_with = requested_compatibility(request.headers());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(PRODUCT_HEADER, HeaderValue::from_static("Elasticsearch"));
    if let Some(version) = compatible_with {
        let json_answer = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        if json_answer {
            let media_type = format!("{VENDOR_JSON};compatible-with={version}");
            if let Ok(value) = HeaderValue::from_str(&media_type) {
                headers.insert(CONTENT_TYPE, value);
            }
        }
    }
    response
}

/// The `compatible-with` version of a versioned media type in `Accept` or
/// `Content-Type`, if the request sent one (digits only).
fn requested_compatibility(headers: &HeaderMap) -> Option<u32> {
    [ACCEPT, CONTENT_TYPE]
        .iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .find_map(|value| {
            let (media_type, parameters) = value.split_once(';')?;
            if !media_type
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/vnd.elasticsearch+")
            {
                return None;
            }
            parameters.split(';').find_map(|parameter| {
                let (name, version) = parameter.split_once('=')?;
                (name.trim().eq_ignore_ascii_case("compatible-with"))
                    .then(|| version.trim().parse().ok())
                    .flatten()
            })
        })
}

/// `GET /`: the node, in the shape of Elasticsearch's root answer.
pub async fn info() -> Json<Value> {
    Json(json!({
        "name": "sluice",
        "cluster_name": "sluice",
        "cluster_uuid": "sluice",
        "version": {
            "number": COMPATIBLE_VERSION,
            "build_flavor": "default",
            "build_type": "sluice",
            "build_hash": env!("CARGO_PKG_VERSION"),
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }))
}

/// `GET /_cluster/health`: one node, green.
pub async fn cluster_health(State(state): State<AppState>) -> Json<Value> {
    let collections = state.inner.catalog.list().len();
    Json(json!({
        "cluster_name": "sluice",
        "status": "green",
        "timed_out": false,
        "number_of_nodes": 1,
        "number_of_data_nodes": 1,
        "active_primary_shards": collections,
        "active_shards": collections,
        "relocating_shards": 0,
        "initializing_shards": 0,
        "unassigned_shards": 0,
        "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0,
        "active_shards_percent_as_number": 100.0,
    }))
}

/// `HEAD /{index}`: 200 when the collection exists, else 404 (no body, as for any HEAD).
pub async fn index_exists(State(state): State<AppState>, Path(index): Path<String>) -> StatusCode {
    let exists = CollectionName::new(&index)
        .ok()
        .is_some_and(|name| state.inner.catalog.get(&name).is_some());
    if exists {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// `GET|HEAD /{index}/_doc/{id}`: `{"_index", "_id", "found", "_source", ...}`, 404 with
/// `found: false` when there is no such document.
pub async fn get_doc(
    State(state): State<AppState>,
    Path((index, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (name, _) = collection_meta(&state, index)?;
    let id = document_id(id)?;
    let read = read_document(&state, &name, &id).await?;
    Ok(match read.found {
        Some((source, _)) => {
            let source: Value = serde_json::from_slice(&source).map_err(ApiError::internal)?;
            (
                StatusCode::OK,
                Json(json!({
                    "_index": name, "_id": id.as_str(), "_version": 1,
                    "_seq_no": read.seq.map_or(0, |seq| seq.0),
                    "_primary_term": crate::es_bulk::PRIMARY_TERM, "found": true, "_source": source,
                })),
            )
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"_index": name, "_id": id.as_str(), "found": false})),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: axum::http::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_compatibility_version_is_read_from_either_header() {
        assert_eq!(
            requested_compatibility(&headers(
                ACCEPT,
                "application/vnd.elasticsearch+json; compatible-with=9"
            )),
            Some(9)
        );
        assert_eq!(
            requested_compatibility(&headers(
                CONTENT_TYPE,
                "application/vnd.elasticsearch+x-ndjson;compatible-with=8"
            )),
            Some(8)
        );
        assert_eq!(
            requested_compatibility(&headers(ACCEPT, "application/json")),
            None
        );
        assert_eq!(
            requested_compatibility(&headers(
                ACCEPT,
                "application/vnd.elasticsearch+json; compatible-with=nine"
            )),
            None
        );
    }
}
