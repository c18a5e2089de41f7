//! Operational routes: health, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use sluice_core::dlq::{MAX_LIST_LIMIT, MAX_SELECTED_IDS};
use sluice_core::ids::{MAX_COLLECTION_NAME_BYTES, MAX_DOC_ID_BYTES};
use sluice_core::resilience::BreakerState;
use sluice_core::schema::{MAX_SHARDS, TOKENIZERS};

use crate::state::AppState;

/// `GET /_internal_/healthcheck`: 200 once recovery is done and writes are accepted.
/// While a dependency's breaker is not closed the node still answers healthy (it serves,
/// degraded) and names that dependency: `{"status":"healthy","degraded":["store"]}`.
pub async fn healthcheck(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.is_ready() {
        let breakers = &state.inner.breakers;
        let degraded: Vec<&str> = [
            &breakers.log_publish,
            &breakers.log_consume,
            &breakers.store,
            &breakers.index_commit,
        ]
        .into_iter()
        .filter(|breaker| breaker.state() != BreakerState::Closed)
        .map(|breaker| breaker.dependency().as_str())
        .collect();
        let body = if degraded.is_empty() {
            json!({"status": "healthy"})
        } else {
            json!({"status": "healthy", "degraded": degraded})
        };
        (StatusCode::OK, Json(body))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = state
        .inner
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// `GET /openapi.json`
pub async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(openapi_document(state.max_result_window()))
}

/// Error answers every operation may give: invalid input, no such thing, a request
/// target too long, too many requests of this client in flight, a handler failure, a
/// dependency down.
fn error_responses() -> Value {
    json!({
        "400": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
        "414": {"$ref": "#/components/responses/Error"},
        "429": {"$ref": "#/components/responses/Error"},
        "500": {"$ref": "#/components/responses/Error"},
        "503": {"$ref": "#/components/responses/Error"}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// `GET|POST /{index}/_count`.
fn es_count_operation(index: &Value, with_errors: &dyn Fn(Value) -> Value) -> Value {
    json!({"summary": "Elasticsearch count: documents matching q (Tantivy syntax), or all; a body may only be a match_all query",
           "parameters": [index, {"name": "q", "in": "query", "schema": {"type": "string"}}],
           "responses": with_errors(json!({
               "200": json_response("Count", json!({"type": "object", "properties": {"count": {"type": "integer"}}}))}))})
}

/// `POST|PUT /_bulk` or `POST|PUT /{index}/_bulk`.
fn es_bulk_operation(index: Option<&Value>, with_errors: &dyn Fn(Value) -> Value) -> Value {
    let mut parameters: Vec<Value> = index.into_iter().cloned().collect();
    parameters.extend([
        json!({"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["true", "false", "wait_for", ""], "example": "false"},
               "description": "true or wait_for: answer once searchable (as wait=searchable)"}),
        json!({"name": "wait", "in": "query", "schema": {"type": "string", "enum": ["durable", "searchable"], "default": "durable"}}),
        json!({"name": "timeout", "in": "query", "schema": {"type": "string"}, "description": "accepted, ignored"}),
        json!({"name": "wait_for_active_shards", "in": "query", "schema": {"type": "string"}, "description": "accepted, ignored"}),
        json!({"name": "filter_path", "in": "query", "schema": {"type": "string"}, "description": "accepted, ignored"}),
    ]);
    json!({"summary": "Elasticsearch bulk API: index, create, update (doc, doc_as_upsert, upsert) and delete actions (gzip, zstd or br encoded bodies accepted)",
           "parameters": parameters,
           "requestBody": {"required": true, "content": {
               "application/x-ndjson": {"schema": {"type": "string", "example": "{\"index\":{\"_id\":\"es-1\"}}\n{\"title\":\"red fox\"}\n"}},
               "application/vnd.elasticsearch+x-ndjson": {"schema": {"type": "string"}},
               "application/json": {"schema": {"type": "string"}}}},
           "responses": with_errors(json!({
               "200": json_response("Per-item outcome, Elasticsearch-shaped", json!({"$ref": "#/components/schemas/BulkResponse"})),
               "408": {"$ref": "#/components/responses/Error"},
               "413": {"$ref": "#/components/responses/Error"},
               "415": {"$ref": "#/components/responses/Error"},
               "429": {"$ref": "#/components/responses/Error"}}))})
}

/// The API document, with `max_result_window` (`indexer.max_result_window`) as the
/// largest search `limit` and `offset`. Every path and method here is served, and every
/// constraint stated here (required, `additionalProperties: false`, lengths, patterns,
/// bounds, enums, no null unless `nullable`) is the one the server enforces: tests check
/// both against a running server (`tests/api.rs`, `tests/openapi.rs`). Each request
/// schema and parameter carries a valid `example`, from which those tests derive their
/// requests. The test-only fault routes (`crate::faults`) are left out: they exist only
/// on nodes started with `[faults] enabled`.
pub fn openapi_document(max_result_window: usize) -> Value {
    let collection_name = json!({"type": "string", "minLength": 1, "maxLength": MAX_COLLECTION_NAME_BYTES,
        // Elasticsearch's index-name rules, as far as a pattern states them (the server
        // also refuses uppercase beyond ASCII, and names too long once encoded).
        "pattern": r#"^[^-_+.A-Z\\/*?"<>|,#:\s\x00-\x1f][^A-Z\\/*?"<>|,#:\s\x00-\x1f]*$"#,
        "example": "openapi_probe"});
    // A selector among others (`DELETE /v1/dlq`): no example, since only one may be given.
    let mut collection_selector = collection_name.clone();
    collection_selector
        .as_object_mut()
        .expect("an object")
        .remove("example");
    let collection =
        json!({"name": "c", "in": "path", "required": true, "schema": collection_name});
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": MAX_DOC_ID_BYTES, "example": "doc-1"}});
    // An Elasticsearch index path parameter that names a collection (`_doc`, `_count`).
    let es_index =
        json!({"name": "index", "in": "path", "required": true, "schema": collection_name});
    let wait = json!({"name": "wait", "in": "query", "schema": {"type": "string", "enum": ["durable", "searchable"], "default": "durable", "example": "durable"}});
    let window = json!(max_result_window);
    let window_note = format!("limit + offset must not exceed {max_result_window}");
    let search_params = json!([
        collection,
        {"name": "q", "in": "query", "schema": {"type": "string", "example": "*"}, "description": "Tantivy query syntax"},
        {"name": "filter", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}, "style": "form", "explode": true},
        {"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "field:asc or field:desc"},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": window, "default": 10, "example": 5}, "description": window_note},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": window, "default": 0}, "description": window_note},
        {"name": "highlight", "in": "query", "schema": {"type": "boolean", "default": true, "example": false}}
    ]);
    let field_name = json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9-][A-Za-z0-9_-]*$"});
    let mut primary_key = field_name.clone();
    primary_key["default"] = json!("id");
    let schema_example = json!({"description": "probe", "primary_key": "id", "strict": false, "shards": 2,
        "fields": [{"name": "id", "type": "string"},
                   {"name": "title", "type": "text", "tokenizer": "en_stem", "annotations": ["personal_data"]},
                   {"name": "tags", "type": "keyword", "array": true, "required": false},
                   {"name": "price", "type": "i64", "required": false, "default": 0}]});
    let index = json!({"name": "index", "in": "path", "required": true, "schema": {"type": "string"}, "description": "the collection of actions without _index"});
    let with_errors = |ok: Value| {
        let mut responses = error_responses();
        if let (Value::Object(map), Value::Object(extra)) = (&mut responses, ok) {
            map.extend(extra);
        }
        responses
    };
    json!({
        "openapi": "3.0.3",
        "info": {"title": "sluice", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Durable bulk ingestion and full-text search"},
        "paths": {
            "/v1/collections": {
                "get": {"summary": "List collections", "responses": with_errors(json!({"200": json_response("Collections", json!({"type": "object"}))}))}
            },
            "/v1/collections/{c}": {
                "put": {"summary": "Create or update a collection from a schema document",
                        "parameters": [collection],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Schema"}}}},
                        "responses": with_errors(json!({"200": json_response("Updated", json!({"type": "object"})), "201": json_response("Created", json!({"type": "object"})), "409": {"$ref": "#/components/responses/Error"}}))},
                "get": {"summary": "Show a collection", "parameters": [collection],
                        "responses": with_errors(json!({"200": json_response("Collection", json!({"type": "object"}))}))},
                "delete": {"summary": "Delete a collection and its documents", "parameters": [collection],
                           "responses": with_errors(json!({"200": json_response("Deleted", json!({"type": "object"}))}))}
            },
            "/v1/collections/{c}/documents": {
                "post": {"summary": "Ingest NDJSON documents (gzip, zstd or br encoded bodies accepted)",
                         "parameters": [collection, wait],
                         "requestBody": {"required": true, "content": {"application/x-ndjson": {"schema": {"type": "string", "example": "{\"id\":\"doc-1\",\"title\":\"red fox\"}\n"}}}},
                         "responses": with_errors(json!({"200": json_response("Per-line outcome", json!({"$ref": "#/components/schemas/IngestResponse"})), "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"}, "429": {"$ref": "#/components/responses/Error"}}))}
            },
            "/v1/collections/{c}/documents/{id}": {
                "get": {"summary": "Get a document (read-your-writes)", "parameters": [collection, id],
                        "responses": with_errors(json!({"200": {
                            "description": "The document as accepted; ETag is its content hash. With `Sluice-Degraded: store_unavailable` it was read from the index because the store is unavailable, and is as fresh as the last index commit",
                            "headers": {"Sluice-Degraded": {"schema": {"type": "string", "enum": ["store_unavailable"]}}},
                            "content": {"application/json": {"schema": {"type": "object"}}}}}))},
                "delete": {"summary": "Delete a document", "parameters": [collection, id, wait],
                           "responses": with_errors(json!({"200": json_response("Deleted", json!({"type": "object"})), "429": {"$ref": "#/components/responses/Error"}}))}
            },
            "/v1/collections/{c}/search": {
                "get": {"summary": "Search", "parameters": search_params,
                        "responses": with_errors(json!({"200": json_response("Hits", json!({"$ref": "#/components/schemas/SearchResponse"}))}))},
                "post": {"summary": "Search with a JSON body", "parameters": [collection],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}}}},
                         "responses": with_errors(json!({"200": json_response("Hits", json!({"$ref": "#/components/schemas/SearchResponse"}))}))}
            },
            "/v1/dlq": {
                "get": {"summary": "List dead-letter entries (no document values)",
                        "parameters": [
                            {"name": "collection", "in": "query", "schema": collection_name},
                            {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0, "example": 0}, "description": "only entries with a higher entry_id (paging: pass next_after)"},
                            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": 100, "example": 100}}],
                        "responses": with_errors(json!({"200": json_response("Entries", json!({"$ref": "#/components/schemas/DlqPage"}))}))},
                "delete": {"summary": "Purge dead-letter entries: all=true, one collection, or ids",
                           "description": "exactly one of all=true, collection, ids",
                           "parameters": [
                               {"name": "all", "in": "query", "schema": {"type": "boolean", "enum": [true], "example": true}},
                               {"name": "collection", "in": "query", "schema": collection_selector},
                               {"name": "ids", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}, "description": "comma-separated entry ids"}],
                           "responses": with_errors(json!({"200": json_response("Purged", json!({"type": "object", "properties": {"purged": {"type": "integer"}}}))}))}
            },
            "/v1/dlq/replay": {
                "post": {"summary": "Replay dead-letter entries into the pipeline (last-writer-wins order kept)",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DlqSelection"}}}},
                         "responses": with_errors(json!({"200": json_response("Outcome", json!({"$ref": "#/components/schemas/ReplayReport"}))}))}
            },
            "/": {
                "get": {"summary": "Elasticsearch-style node info (what clients check first: version, tagline)",
                        "responses": {"200": json_response("Node info", json!({"type": "object", "properties": {
                            "name": {"type": "string"}, "cluster_name": {"type": "string"},
                            "version": {"type": "object", "properties": {"number": {"type": "string"}}},
                            "tagline": {"type": "string"}}}))}}
            },
            "/_cluster/health": {
                "get": {"summary": "Elasticsearch-style cluster health: one node, green",
                        "responses": {"200": json_response("Health", json!({"type": "object", "properties": {"status": {"type": "string"}}}))}}
            },
            "/{index}": {
                "head": {"summary": "Whether a collection exists (Elasticsearch indices.exists): 200 or 404, no body",
                         "parameters": [index.clone()],
                         "responses": {"200": {"description": "It exists"}, "404": {"description": "It does not"}}}
            },
            "/{index}/_doc/{id}": {
                "get": {"summary": "One document, Elasticsearch-shaped (`found`, `_source`); read-your-writes",
                        "parameters": [es_index.clone(), id.clone()],
                        "responses": with_errors(json!({
                            "200": json_response("Found", json!({"type": "object", "properties": {"found": {"type": "boolean"}, "_source": {"type": "object"}}})),
                            "404": json_response("Not found", json!({"type": "object", "properties": {"found": {"type": "boolean"}}}))}))}
            },
            "/{index}/_count": {
                "get": es_count_operation(&es_index, &with_errors),
                "post": es_count_operation(&es_index, &with_errors)
            },
            "/_bulk": {
                "post": es_bulk_operation(None, &with_errors),
                "put": es_bulk_operation(None, &with_errors)
            },
            "/{index}/_bulk": {
                "post": es_bulk_operation(Some(&index), &with_errors),
                "put": es_bulk_operation(Some(&index), &with_errors)
            },
            "/_internal_/healthcheck": {
                "get": {"summary": "Health", "responses": {
                    "200": json_response("Healthy; `degraded` lists the dependencies whose circuit breaker is open or probing", json!({"type": "object", "properties": {"status": {"type": "string"}, "degraded": {"type": "array", "items": {"type": "string", "enum": ["log_publish", "log_consume", "store", "index_commit"]}}}})),
                    "503": json_response("Starting", json!({"type": "object"}))}}
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": json_response("OpenAPI 3", json!({"type": "object"}))}}
            }
        },
        "components": {
            "responses": {
                "Error": json_response("An error", json!({"$ref": "#/components/schemas/Error"}))
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message", "trace_id"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "trace_id": {"type": "string"}}}}},
                "Schema": {"type": "object", "additionalProperties": false, "required": ["fields"], "example": schema_example,
                    "description": "the primary key field is declared as a string when fields do not name it",
                    "properties": {
                    "description": {"type": "string"}, "primary_key": primary_key,
                    "strict": {"type": "boolean"}, "shards": {"type": "integer", "minimum": 1, "maximum": MAX_SHARDS, "description": "fixed at creation"},
                    "fields": {"type": "array", "minItems": 1, "items": {"type": "object", "additionalProperties": false, "required": ["name", "type"], "properties": {
                        "name": field_name,
                        "type": {"type": "string", "enum": ["string", "text", "keyword", "i64", "u64", "f64", "bool", "datetime", "json"]},
                        "array": {"type": "boolean"}, "required": {"type": "boolean"},
                        "default": {"description": "any JSON value of the field's type"},
                        "annotations": {"type": "array", "items": {"type": "string"}},
                        "tokenizer": {"type": "string", "enum": TOKENIZERS, "description": "text fields only"}}}}}},
                "IngestResponse": {"type": "object", "required": ["accepted", "rejected", "ids", "errors"], "properties": {
                    "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
                    "ids": {"type": "array", "items": {"type": "string", "nullable": true}},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {
                        "line": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}}}}}},
                "DlqPage": {"type": "object", "required": ["entries", "next_after", "depth"], "properties": {
                    "entries": {"type": "array", "items": {"type": "object", "properties": {
                        "entry_id": {"type": "integer"}, "collection": {"type": "string"},
                        "id": {"type": "string", "nullable": true},
                        "op": {"type": "string", "enum": ["upsert", "delete"], "nullable": true},
                        "seq": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"},
                        "attempts": {"type": "integer"},
                        "first_failure": {"type": "string", "format": "date-time"},
                        "last_failure": {"type": "string", "format": "date-time"},
                        "dead_lettered_at": {"type": "string", "format": "date-time"}}}},
                    "next_after": {"type": "integer", "nullable": true},
                    "depth": {"type": "object", "additionalProperties": {"type": "integer"}}}},
                "DlqSelection": {"type": "object", "description": "exactly one of all, collection, ids",
                    "additionalProperties": false, "minProperties": 1, "maxProperties": 1, "example": {"all": true},
                    "properties": {
                    "all": {"type": "boolean", "enum": [true]}, "collection": collection_name,
                    "ids": {"type": "array", "minItems": 1, "maxItems": MAX_SELECTED_IDS, "items": {"type": "integer", "minimum": 0}}}},
                "ReplayReport": {"type": "object", "required": ["replayed", "failed", "not_found", "failures"], "properties": {
                    "replayed": {"type": "integer"}, "failed": {"type": "integer"}, "not_found": {"type": "integer"},
                    "failures": {"type": "array", "items": {"type": "object", "properties": {
                        "entry_id": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}}}}}},
                "BulkResponse": {"type": "object", "required": ["took", "errors", "items"], "properties": {
                    "took": {"type": "integer"}, "errors": {"type": "boolean"},
                    "items": {"type": "array", "items": {"type": "object",
                        "description": "one key, the action (index, create, update, delete)",
                        "additionalProperties": {"type": "object", "required": ["_index", "_id", "status"], "properties": {
                            "_index": {"type": "string", "nullable": true}, "_id": {"type": "string", "nullable": true},
                            "result": {"type": "string", "enum": ["created", "updated", "deleted", "noop"]},
                            "status": {"type": "integer"},
                            "error": {"type": "object", "properties": {"type": {"type": "string"}, "reason": {"type": "string"}}}}}}}}},
                "SearchRequest": {"type": "object", "additionalProperties": false, "description": window_note,
                    "example": {"q": "*", "filter": ["price:[0 TO 100]"], "sort": "price:asc", "limit": 5, "highlight": false},
                    "properties": {
                    "q": {"type": "string", "description": "Tantivy query syntax"}, "filter": {"type": "array", "items": {"type": "string"}},
                    "sort": {"type": "string", "description": "field:asc or field:desc"},
                    "limit": {"type": "integer", "minimum": 0, "maximum": window, "default": 10},
                    "offset": {"type": "integer", "minimum": 0, "maximum": window, "default": 0},
                    "highlight": {"type": "boolean", "default": true}}},
                "SearchResponse": {"type": "object", "required": ["total", "hits", "took_ms"], "properties": {
                    "total": {"type": "integer"}, "took_ms": {"type": "integer"},
                    "hits": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "score": {"type": "number", "nullable": true},
                        "doc": {"type": "object"}, "highlights": {"type": "object"}}}},
                    "partial": {"type": "boolean", "description": "present (true) when some shards failed or timed out; the results are those of the others"},
                    "failed_shards": {"type": "array", "items": {"type": "integer"}, "description": "the shards left out of a partial result"},
                    "stale": {"type": "boolean", "description": "present (true) when every shard failed and this is the last complete result of the same request, from the cache"}}}
            }
        }
    })
}
