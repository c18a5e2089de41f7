//! Elasticsearch search: `GET|POST /{index}/_search` and `/_search`, `GET|POST /_msearch`
//! and `/{index}/_msearch`, and the query DSL on `GET|POST /{index}/_count` and `/_count`.
//!
//! A request is translated into the native [`SearchRequest`] and run by the same search
//! service as the native API: `query` and `aggs` pass through unchanged (the indexer
//! compiles the DSL and runs the aggregations), `from`/`size` become the page, `sort` the
//! sort field, `highlight` turns highlights on. The answer comes back in Elasticsearch's
//! shape: `took`, `timed_out`, `_shards` (failed shards counted), `hits.total`
//! (`{"value", "relation": "eq"}`: totals are always exact, so `track_total_hits` is
//! accepted and needs nothing), `hits.max_score`, `hits.hits[]` with `_index`, `_id`,
//! `_score`, `_source` (filtered by `_source`), `highlight` and `sort`, and
//! `aggregations`.
//!
//! `{index}` is a name, a comma list or `*` patterns (`_all` and `/_search`: every index):
//! a list or pattern runs as one search over those collections
//! ([`SearchService::search_many`](sluice_core::search::SearchService::search_many)),
//! each hit with its own `_index`.
//!
//! The URL `q` (with `df` and `default_operator`) is a `query_string` clause ANDed with
//! the body's query. Members and parameters that change nothing in sluice's answer
//! (`timeout`, `track_total_hits`, `request_cache`, `preference`, ...) are accepted and
//! ignored; those it cannot honour (`search_after`, `post_filter`, `collapse`, several
//! sort keys, ...) are refused with 400 naming them, never answered differently.
//! Errors come in Elasticsearch's shape (`error.type`, `error.reason`, `status`).

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sluice_core::search::{SearchRequest, SearchResponse};
use sluice_core::{CollectionName, ErrorCode};

use crate::error::ApiError;
use crate::es_error::EsError;
use crate::es_mapping::glob_matches;
use crate::state::AppState;

/// Body members of `_search` that sluice reads.
const READ_MEMBERS: &[&str] = &[
    "query",
    "aggs",
    "aggregations",
    "from",
    "size",
    "sort",
    "_source",
    "highlight",
];

/// Body members accepted and ignored: they change nothing in the answer sluice gives.
const IGNORED_MEMBERS: &[&str] = &[
    "track_total_hits",
    "timeout",
    "track_scores",
    "explain",
    "profile",
    "stats",
    "version",
    "seq_no_primary_term",
];

/// URL parameters accepted and ignored.
const IGNORED_PARAMS: &[&str] = &[
    "track_total_hits",
    "timeout",
    "request_cache",
    "preference",
    "routing",
    "search_type",
    "ignore_unavailable",
    "allow_no_indices",
    "expand_wildcards",
    "ignore_throttled",
    "batched_reduce_size",
    "ccs_minimize_roundtrips",
    "pre_filter_shard_size",
    "max_concurrent_shard_requests",
    "allow_partial_search_results",
    "typed_keys",
    "error_trace",
    "filter_path",
    "human",
    "pretty",
    "lenient",
    "analyze_wildcard",
    "track_scores",
    "version",
    "seq_no_primary_term",
];

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

/// What the answer needs besides the search response.
#[derive(Debug, Default)]
struct Shaping {
    source: SourceFilter,
    /// Highlighted fields (`*` for all), and the tags that replace `<em>`/`</em>`.
    highlight: Option<(Vec<String>, String, String)>,
    /// The sort field, when sorted by a field: each hit carries its value in `sort`.
    sort_field: Option<String>,
    /// `rest_total_hits_as_int=true`: `hits.total` as a bare number.
    total_as_int: bool,
}

/// `_source` filtering: `false`, includes and excludes (`*` globs, dotted paths).
#[derive(Debug, Default)]
struct SourceFilter {
    disabled: bool,
    includes: Vec<String>,
    excludes: Vec<String>,
}

/// A translated `_search`: the native request and how to shape its answer.
#[derive(Debug)]
struct Translated {
    request: SearchRequest,
    shaping: Shaping,
}

/// Translates the URL parameters and body of one `_search`.
fn translate(params: &str, body: &[u8]) -> Result<Translated, ApiError> {
    let mut body: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("the search body is not a JSON object: {e}"),
            )
        })?
    };
    let mut shaping = Shaping::default();
    let mut request = SearchRequest {
        highlight: Some(false),
        ..SearchRequest::default()
    };
    let mut url_query: Map<String, Value> = Map::new();
    for (key, value) in form_urlencoded::parse(params.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "q" => {
                url_query.insert("query".into(), Value::from(value));
            }
            "df" => {
                url_query.insert("default_field".into(), Value::from(value));
            }
            "default_operator" => {
                url_query.insert("default_operator".into(), Value::from(value));
            }
            "from" => {
                body.insert("from".into(), Value::from(number("from", &value)?));
            }
            "size" => {
                body.insert("size".into(), Value::from(number("size", &value)?));
            }
            "sort" => {
                let keys: Vec<Value> = value.split(',').map(Value::from).collect();
                body.insert("sort".into(), Value::Array(keys));
            }
            "_source" => {
                let source = match value.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    list => Value::Array(list.split(',').map(Value::from).collect()),
                };
                body.insert("_source".into(), source);
            }
            "_source_includes" => {
                shaping.source.includes = value.split(',').map(str::to_owned).collect();
            }
            "_source_excludes" => {
                shaping.source.excludes = value.split(',').map(str::to_owned).collect();
            }
            "rest_total_hits_as_int" => shaping.total_as_int = value == "true",
            key if IGNORED_PARAMS.contains(&key) => {
                if key == "typed_keys" && value == "true" {
                    return Err(invalid("typed_keys=true is not supported"));
                }
            }
            other => return Err(invalid(format!("unsupported search parameter [{other}]"))),
        }
    }
    for (key, value) in &body {
        if !READ_MEMBERS.contains(&key.as_str()) && !IGNORED_MEMBERS.contains(&key.as_str()) {
            return Err(invalid(format!(
                "the search member [{key}] is not supported"
            )));
        }
        if matches!(key.as_str(), "explain" | "profile") && value.as_bool() == Some(true) {
            return Err(invalid(format!("[{key}]: true is not supported")));
        }
    }
    let body_query = body.remove("query");
    // `df` and `default_operator` only qualify a `q`.
    if !url_query.contains_key("query") {
        url_query.clear();
    }
    request.query = match (body_query, url_query.is_empty()) {
        (query, true) => query,
        (None, false) => Some(json!({"query_string": url_query})),
        (Some(query), false) => {
            Some(json!({"bool": {"must": [query, {"query_string": url_query}]}}))
        }
    };
    request.aggs = body.remove("aggs").or_else(|| body.remove("aggregations"));
    if let Some(from) = body.remove("from") {
        request.offset = Some(count_member("from", &from)?);
    }
    if let Some(size) = body.remove("size") {
        request.limit = Some(count_member("size", &size)?);
    }
    if let Some(sort) = body.remove("sort") {
        if let Some((field, descending)) = sort_key(&sort)? {
            request.sort = Some(format!(
                "{field}:{}",
                if descending { "desc" } else { "asc" }
            ));
            shaping.sort_field = Some(field);
        }
    }
    if let Some(source) = body.remove("_source") {
        shaping.source = source_filter(&source, std::mem::take(&mut shaping.source))?;
    }
    if let Some(highlight) = body.remove("highlight") {
        shaping.highlight = Some(highlight_fields(&highlight)?);
        request.highlight = Some(true);
    }
    Ok(Translated { request, shaping })
}

fn number(key: &str, value: &str) -> Result<usize, ApiError> {
    value
        .parse()
        .map_err(|_| invalid(format!("[{key}] must be a non-negative integer")))
}

fn count_member(key: &str, value: &Value) -> Result<usize, ApiError> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid(format!("[{key}] must be a non-negative integer")))
}

/// The one sort field of an Elasticsearch `sort` (and whether descending); `None` for
/// relevance. `_score` may follow a field, and `_doc` (index order) anywhere, since
/// sluice breaks ties by id; any other second key is refused.
fn sort_key(sort: &Value) -> Result<Option<(String, bool)>, ApiError> {
    let keys: Vec<&Value> = match sort {
        Value::Array(keys) => keys.iter().collect(),
        key => vec![key],
    };
    let mut field_key = None;
    for key in keys {
        let (field, order) = match key {
            Value::String(spec) => match spec.split_once(':') {
                Some((field, order)) => (field.to_owned(), Some(order.to_owned())),
                None => (spec.clone(), None),
            },
            Value::Object(object) if object.len() == 1 => {
                let (field, spec) = object.iter().next().expect("one key");
                let order = match spec {
                    Value::String(order) => Some(order.clone()),
                    Value::Object(options) => {
                        if let Some(other) = options.keys().find(|k| *k != "order") {
                            return Err(invalid(format!(
                                "sort option [{other}] on [{field}] is not supported"
                            )));
                        }
                        options
                            .get("order")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    }
                    _ => return Err(invalid(format!("sort on [{field}]: bad order {spec}"))),
                };
                (field.clone(), order)
            }
            other => return Err(invalid(format!("sort key {other} is not supported"))),
        };
        let descending = match order.as_deref() {
            None => field == "_score",
            Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(invalid(format!("sort order [{other}]: use asc or desc"))),
        };
        match field.as_str() {
            "_doc" => continue,
            "_score" if field_key.is_none() && descending => return Ok(None),
            "_score" if descending => continue,
            "_score" => return Err(invalid("sort by _score ascending is not supported")),
            _ if field_key.is_some() => {
                return Err(invalid(
                    "sorting by more than one field is not supported; sort by one field (ties break by _id)",
                ))
            }
            _ => field_key = Some((field, descending)),
        }
    }
    Ok(field_key)
}

fn source_filter(source: &Value, from_params: SourceFilter) -> Result<SourceFilter, ApiError> {
    let strings = |value: &Value| -> Result<Vec<String>, ApiError> {
        match value {
            Value::String(one) => Ok(vec![one.clone()]),
            Value::Array(many) => many
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid("[_source] patterns must be strings"))
                })
                .collect(),
            _ => Err(invalid("[_source] patterns must be strings")),
        }
    };
    let mut filter = from_params;
    match source {
        Value::Bool(enabled) => filter.disabled = !enabled,
        Value::Object(object) => {
            for (key, value) in object {
                match key.as_str() {
                    "includes" | "include" => filter.includes = strings(value)?,
                    "excludes" | "exclude" => filter.excludes = strings(value)?,
                    other => {
                        return Err(invalid(format!(
                            "[_source] option [{other}] is not supported"
                        )))
                    }
                }
            }
        }
        other => filter.includes = strings(other)?,
    }
    Ok(filter)
}

/// The fields named in `highlight.fields` and the pre/post tags.
fn highlight_fields(highlight: &Value) -> Result<(Vec<String>, String, String), ApiError> {
    let object = highlight
        .as_object()
        .ok_or_else(|| invalid("[highlight] must be an object"))?;
    let mut fields = Vec::new();
    let mut tags = ("<em>".to_owned(), "</em>".to_owned());
    for (key, value) in object {
        match key.as_str() {
            "fields" => match value {
                Value::Object(named) => fields.extend(named.keys().cloned()),
                Value::Array(list) => {
                    for item in list {
                        let named = item
                            .as_object()
                            .ok_or_else(|| invalid("[highlight] fields must be objects"))?;
                        fields.extend(named.keys().cloned());
                    }
                }
                _ => return Err(invalid("[highlight] fields must be an object")),
            },
            "pre_tags" | "post_tags" => {
                let tag = value
                    .as_array()
                    .and_then(|tags| match tags.as_slice() {
                        [one] => one.as_str(),
                        _ => None,
                    })
                    .ok_or_else(|| invalid(format!("[highlight] {key} must be one tag")))?
                    .to_owned();
                if key == "pre_tags" {
                    tags.0 = tag;
                } else {
                    tags.1 = tag;
                }
            }
            "require_field_match"
            | "fragment_size"
            | "number_of_fragments"
            | "type"
            | "encoder"
            | "order" => {}
            other => {
                return Err(invalid(format!(
                    "[highlight] option [{other}] is not supported"
                )))
            }
        }
    }
    Ok((fields, tags.0, tags.1))
}

impl SourceFilter {
    fn apply(&self, source: Value) -> Option<Value> {
        if self.disabled {
            return None;
        }
        if self.includes.is_empty() && self.excludes.is_empty() {
            return Some(source);
        }
        Some(self.filter_object(source, ""))
    }

    fn filter_object(&self, value: Value, prefix: &str) -> Value {
        let Value::Object(object) = value else {
            return value;
        };
        let mut kept = Map::new();
        for (key, value) in object {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if self.excludes.iter().any(|p| glob_matches(p, &path)) {
                continue;
            }
            let whole =
                self.includes.is_empty() || self.includes.iter().any(|p| glob_matches(p, &path));
            let below = format!("{path}.");
            let partial = value.is_object()
                && self
                    .includes
                    .iter()
                    .any(|p| p.starts_with(&below) || p.starts_with('*'));
            if whole {
                kept.insert(key, self.filter_object(value, &path));
            } else if partial {
                let inner = self.filter_object(value, &path);
                if inner.as_object().is_some_and(|o| !o.is_empty()) {
                    kept.insert(key, inner);
                }
            }
        }
        Value::Object(kept)
    }
}

/// The Elasticsearch answer of one search.
fn shape(index: &str, shards: u32, response: SearchResponse, shaping: &Shaping) -> Value {
    let max_score = response
        .hits
        .iter()
        .filter_map(|hit| hit.score)
        .fold(None, |max: Option<f32>, score| {
            Some(max.map_or(score, |m| m.max(score)))
        });
    let hits: Vec<Value> = response
        .hits
        .into_iter()
        .map(|hit| {
            let source: Value = serde_json::from_str(hit.doc.get()).unwrap_or(Value::Null);
            let mut shaped = Map::new();
            let hit_index = hit.collection.as_deref().unwrap_or(index);
            shaped.insert("_index".into(), Value::from(hit_index));
            shaped.insert("_id".into(), Value::from(hit.id));
            shaped.insert("_score".into(), hit.score.map_or(Value::Null, Value::from));
            if let Some(field) = &shaping.sort_field {
                let value = source.get(field).cloned().unwrap_or(Value::Null);
                shaped.insert("sort".into(), Value::Array(vec![value]));
            }
            if let Some(source) = shaping.source.apply(source) {
                shaped.insert("_source".into(), source);
            }
            if let Some((fields, pre, post)) = &shaping.highlight {
                let highlight: Map<String, Value> = hit
                    .highlights
                    .into_iter()
                    .filter(|(field, _)| fields.iter().any(|p| glob_matches(p, field)))
                    .map(|(field, snippets)| {
                        let snippets = match snippets {
                            Value::Array(items) => Value::Array(
                                items
                                    .into_iter()
                                    .map(|s| match s {
                                        Value::String(s) => Value::from(
                                            s.replace("<em>", pre).replace("</em>", post),
                                        ),
                                        other => other,
                                    })
                                    .collect(),
                            ),
                            other => other,
                        };
                        (field, snippets)
                    })
                    .collect();
                if !highlight.is_empty() {
                    shaped.insert("highlight".into(), Value::Object(highlight));
                }
            }
            Value::Object(shaped)
        })
        .collect();
    let failed = response.failed_shards.len() as u32;
    let total = if shaping.total_as_int {
        Value::from(response.total)
    } else {
        json!({"value": response.total, "relation": "eq"})
    };
    let mut answer = json!({
        "took": response.took_ms,
        "timed_out": false,
        "_shards": {
            "total": shards,
            "successful": shards.saturating_sub(failed),
            "skipped": 0,
            "failed": failed,
        },
        "hits": {"total": total, "max_score": max_score, "hits": hits},
    });
    if let Some(aggregations) = response.aggregations {
        answer["aggregations"] = aggregations;
    }
    answer
}

/// Runs one translated search; the answer in Elasticsearch's shape.
async fn run(state: &AppState, index: String, translated: Translated) -> Result<Value, EsError> {
    let started = Instant::now();
    if !index.contains([',', '*']) && index != "_all" {
        let (_, meta) = crate::documents::collection_meta(state, index.clone())?;
        let shards = meta.schema.shards.unwrap_or(1);
        let Json(mut response) =
            crate::search::run(state, index.clone(), translated.request).await?;
        response.took_ms = started.elapsed().as_millis() as u64;
        return Ok(shape(&index, shards, response, &translated.shaping));
    }
    let metas = crate::es_indices::selected(state, Some(&index))?;
    let shards = metas
        .iter()
        .map(|meta| meta.schema.shards.unwrap_or(1))
        .sum();
    let names: Vec<CollectionName> = metas.iter().map(|meta| meta.name.clone()).collect();
    let mut response = if names.is_empty() {
        SearchResponse::empty()
    } else {
        let result = state
            .inner
            .search
            .search_many(&names, &translated.request)
            .await;
        result.map_err(|error| crate::search::search_error(error, &index))?
    };
    response.took_ms = started.elapsed().as_millis() as u64;
    Ok(shape(&index, shards, response, &translated.shaping))
}

/// An error in Elasticsearch's shape (and sluice's).
fn es_error(error: ApiError) -> Response {
    EsError::from(error).into_response()
}

/// `GET|POST /{index}/_search`: `{index}` a name, a comma list or `*` patterns.
pub async fn search(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(params): RawQuery,
    body: Bytes,
) -> Response {
    answer(search_in(&state, index, params, &body).await)
}

/// `GET|POST /_search`: every index.
pub async fn search_all(
    State(state): State<AppState>,
    RawQuery(params): RawQuery,
    body: Bytes,
) -> Response {
    answer(search_in(&state, "_all".to_owned(), params, &body).await)
}

/// `GET|POST /{index}/_count`: the query DSL and the URL `q`, as in `_search`.
pub async fn count(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(params): RawQuery,
    body: Bytes,
) -> Response {
    answer(count_in(&state, index, params, &body).await)
}

/// `GET|POST /_count`: every index.
pub async fn count_all(
    State(state): State<AppState>,
    RawQuery(params): RawQuery,
    body: Bytes,
) -> Response {
    answer(count_in(&state, "_all".to_owned(), params, &body).await)
}

fn answer(result: Result<Value, EsError>) -> Response {
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn search_in(
    state: &AppState,
    index: String,
    params: Option<String>,
    body: &[u8],
) -> Result<Value, EsError> {
    let translated = translate(params.as_deref().unwrap_or(""), body)?;
    run(state, index, translated).await
}

async fn count_in(
    state: &AppState,
    index: String,
    params: Option<String>,
    body: &[u8],
) -> Result<Value, EsError> {
    let body = count_body(body)?;
    let mut translated = translate(params.as_deref().unwrap_or(""), &body)?;
    translated.request.limit = Some(0);
    let answer = run(state, index, translated).await?;
    Ok(json!({
        "count": answer["hits"]["total"]["value"],
        "_shards": answer["_shards"],
    }))
}

/// A `_count` body holds `query` only.
fn count_body(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let object: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("the _count body is not a JSON object: {e}"),
        )
    })?;
    if let Some(other) = object.keys().find(|key| *key != "query") {
        return Err(invalid(format!(
            "the _count member [{other}] is not supported"
        )));
    }
    Ok(body.to_vec())
}

/// `GET|POST /_msearch` and `/{index}/_msearch`: NDJSON pairs of a header
/// (`{"index": "name"}`, or `{}` for the path's index) and a search body; one answer
/// per pair in `responses`, each with its `status`, failures included.
pub async fn msearch_default(
    State(state): State<AppState>,
    RawQuery(params): RawQuery,
    body: Bytes,
) -> Response {
    msearch(state, None, params, body).await
}

/// `GET|POST /{index}/_msearch`
pub async fn msearch_for_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    RawQuery(params): RawQuery,
    body: Bytes,
) -> Response {
    msearch(state, Some(index), params, body).await
}

async fn msearch(
    state: AppState,
    index: Option<String>,
    params: Option<String>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let params = params.unwrap_or_default();
    if let Some(index) = &index {
        if let Err(error) = sluice_core::CollectionName::new(index) {
            return es_error(ApiError::new(error.code, error.message));
        }
    }
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect();
    if lines.is_empty() {
        return es_error(invalid(
            "the _msearch body is empty: send pairs of lines, a header then a search body",
        ));
    }
    if !lines.len().is_multiple_of(2) {
        return es_error(invalid(
            "an _msearch body is pairs of lines: a header, then a search body",
        ));
    }
    let mut responses = Vec::with_capacity(lines.len() / 2);
    for pair in lines.chunks(2) {
        let answer = async {
            let header: Map<String, Value> = serde_json::from_slice(pair[0]).map_err(|e| {
                ApiError::new(
                    ErrorCode::MalformedJson,
                    format!("an _msearch header is not a JSON object: {e}"),
                )
            })?;
            let target = match header.get("index") {
                Some(Value::String(name)) => name.clone(),
                Some(Value::Array(names)) if names.len() == 1 => names[0]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("an _msearch header's index must be a string"))?,
                Some(other) => {
                    return Err(
                        invalid(format!("an _msearch header names one index, got {other}")).into(),
                    )
                }
                None => index.clone().ok_or_else(|| {
                    invalid("the _msearch header names no index, and the path has none")
                })?,
            };
            let translated = translate(&params, pair[1])?;
            run(&state, target, translated).await
        };
        responses.push(match answer.await {
            Ok(mut answer) => {
                answer["status"] = Value::from(200);
                answer
            }
            Err(error) => json!({"error": error.error_object(), "status": error.status()}),
        });
    }
    Json(json!({"took": started.elapsed().as_millis() as u64, "responses": responses}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(params: &str, body: Value) -> Result<Translated, ApiError> {
        translate(params, body.to_string().as_bytes())
    }

    #[test]
    fn a_search_body_becomes_a_native_request() {
        let t = translated(
            "",
            json!({"query": {"match": {"title": "fox"}}, "from": 5, "size": 20,
                   "sort": [{"price": {"order": "desc"}}, "_score"],
                   "aggs": {"tags": {"terms": {"field": "tags"}}},
                   "_source": ["title"], "track_total_hits": true}),
        )
        .unwrap();
        assert_eq!(t.request.query, Some(json!({"match": {"title": "fox"}})));
        assert_eq!((t.request.offset, t.request.limit), (Some(5), Some(20)));
        assert_eq!(t.request.sort.as_deref(), Some("price:desc"));
        assert!(t.request.aggs.is_some());
        assert_eq!(t.shaping.source.includes, vec!["title".to_owned()]);
        let url = translated("q=title:fox&size=3&default_operator=AND", json!({})).unwrap();
        assert_eq!(
            url.request.query,
            Some(json!({"query_string": {"query": "title:fox", "default_operator": "AND"}}))
        );
        assert_eq!(url.request.limit, Some(3));
    }

    #[test]
    fn what_sluice_cannot_honour_is_refused_by_name() {
        for (params, body, named) in [
            ("", json!({"search_after": [1]}), "search_after"),
            ("", json!({"post_filter": {"match_all": {}}}), "post_filter"),
            ("", json!({"sort": ["price", "ts"]}), "more than one field"),
            ("", json!({"explain": true}), "explain"),
            ("scroll=1m", json!({}), "scroll"),
        ] {
            let error = EsError::from(translated(params, body.clone()).unwrap_err());
            assert_eq!(error.status(), 400, "{body}");
            let shaped = error.error_object();
            assert!(
                shaped["reason"].as_str().unwrap().contains(named),
                "{body}: {shaped}"
            );
        }
    }

    #[test]
    fn source_filters_keep_and_drop_paths() {
        let doc = json!({"title": "t", "user": {"name": "n", "age": 3}, "tags": ["a"]});
        let filter = |includes: &[&str], excludes: &[&str]| SourceFilter {
            disabled: false,
            includes: includes.iter().map(|s| s.to_string()).collect(),
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            filter(&["title"], &[]).apply(doc.clone()),
            Some(json!({"title": "t"}))
        );
        assert_eq!(
            filter(&["user.name"], &[]).apply(doc.clone()),
            Some(json!({"user": {"name": "n"}}))
        );
        assert_eq!(
            filter(&[], &["user*"]).apply(doc.clone()),
            Some(json!({"title": "t", "tags": ["a"]}))
        );
        assert_eq!(
            filter(&["t*"], &["tags"]).apply(doc.clone()),
            Some(json!({"title": "t"}))
        );
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("a*b", "axxc"));
        let stars = "*a".repeat(40);
        assert!(!glob_matches(&stars, &"a".repeat(39)));
        let off = SourceFilter {
            disabled: true,
            ..SourceFilter::default()
        };
        assert_eq!(off.apply(doc), None);
    }
}
