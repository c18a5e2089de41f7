//! `GET|POST /v1/collections/{c}/search`.
//!
//! `GET` takes `q`, `filter` (repeatable), `sort`, `limit`, `offset` and `highlight` as
//! query parameters; `POST` takes the same as a JSON object. Both run the same search on
//! the collection's index shards (merged, cached by the indexer).

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use bytes::Bytes;
use sluice_core::metrics as m;
use sluice_core::search::{SearchError, SearchRequest, SearchResponse};
use sluice_core::ErrorCode;

use crate::documents::collection_meta;
use crate::error::ApiError;
use crate::state::AppState;

/// Builds a search request from a URL query string.
pub fn request_from_query(query: &str) -> Result<SearchRequest, ApiError> {
    let mut request = SearchRequest::default();
    let number = |key: &str, value: &str| {
        value.parse::<usize>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{key} must be a non-negative integer"),
            )
        })
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "q" => request.q = Some(value.into_owned()),
            "filter" => request.filter.push(value.into_owned()),
            "sort" => request.sort = Some(value.into_owned()),
            "limit" => request.limit = Some(number("limit", &value)?),
            "offset" => request.offset = Some(number("offset", &value)?),
            "highlight" => {
                request.highlight = Some(match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::new(
                            ErrorCode::InvalidRequest,
                            "highlight must be true or false",
                        ))
                    }
                })
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "unknown search parameter {other:?} (known: q, filter, sort, limit, offset, highlight)"
                    ),
                ))
            }
        }
    }
    Ok(request)
}

/// Runs one search on `collection` (a name from the path) and times it.
pub(crate) async fn run(
    state: &AppState,
    collection: String,
    request: SearchRequest,
) -> Result<Json<SearchResponse>, ApiError> {
    let (name, _) = collection_meta(state, collection)?;
    let started = Instant::now();
    let result = state.inner.search.search(&name, &request).await;
    metrics::histogram!(m::SEARCH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
    result.map(Json).map_err(|e| search_error(e, name.as_str()))
}

/// The answer to a failed search of `what` (a collection or an index expression).
pub(crate) fn search_error(error: SearchError, what: &str) -> ApiError {
    match error {
        SearchError::InvalidQuery(message) => ApiError::new(ErrorCode::InvalidQuery, message),
        SearchError::QueryTooComplex(message) => ApiError::new(ErrorCode::QueryTooComplex, message),
        SearchError::CollectionNotFound => ApiError::new(
            ErrorCode::CollectionNotFound,
            format!("no collection named \"{what}\""),
        ),
        SearchError::Unavailable(cause) => ApiError::unavailable("index", cause),
        other => ApiError::internal(other),
    }
}

/// `GET /v1/collections/{c}/search`
pub async fn search_get(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<SearchResponse>, ApiError> {
    let request = request_from_query(query.as_deref().unwrap_or(""))?;
    run(&state, collection, request).await
}

/// Builds a search request from a `POST` body: a JSON object (`{}` for the defaults) of
/// known members, none of them null (leave a member out for its default).
pub fn request_from_body(body: &[u8]) -> Result<SearchRequest, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidRequest, message);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "the search body is empty; send a JSON object ({} for the defaults) or use GET"
                .to_owned(),
        ));
    }
    let members: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the search body must be a JSON object: {e}")))?;
    if let Some((name, _)) = members.iter().find(|(_, value)| value.is_null()) {
        return Err(invalid(format!(
            "search body: {name} is null; leave it out for its default"
        )));
    }
    serde_json::from_value(serde_json::Value::Object(members))
        .map_err(|e| invalid(format!("search body: {e}")))
}

/// `POST /v1/collections/{c}/search`
pub async fn search_post(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    body: Bytes,
) -> Result<Json<SearchResponse>, ApiError> {
    let request = request_from_body(&body)?;
    run(&state, collection, request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_map_to_a_request() {
        let r = request_from_query("q=body%3Afoo&filter=tags:a&filter=price:%5B1+TO+5%5D&sort=price:asc&limit=5&offset=10&highlight=false").unwrap();
        assert_eq!(r.q.as_deref(), Some("body:foo"));
        assert_eq!(
            r.filter,
            vec!["tags:a".to_owned(), "price:[1 TO 5]".to_owned()]
        );
        assert_eq!(r.sort.as_deref(), Some("price:asc"));
        assert_eq!(
            (r.limit, r.offset, r.highlight),
            (Some(5), Some(10), Some(false))
        );
        assert_eq!(
            request_from_query("limit=-1").unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            request_from_query("bogus=1").unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn a_body_is_an_object_of_known_non_null_members() {
        let r = request_from_body(br#"{"q": "body:foo", "limit": 3}"#).unwrap();
        assert_eq!((r.q.as_deref(), r.limit), (Some("body:foo"), Some(3)));
        assert!(request_from_body(b"{}").is_ok());
        let refused: [&[u8]; 6] = [
            b"",
            b"  \n",
            b"[]",
            br#"{"q": null}"#,
            br#"{"limit": "5"}"#,
            br#"{"bogus": 1}"#,
        ];
        for refused in refused {
            let error = request_from_body(refused).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{refused:?}");
        }
    }
}
