//! Operational routes: health, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};
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

/// `GET|POST /{index}/_count` (or `/_count`, every index, without `index`).
fn es_count_operation(index: Option<&Value>, with_errors: &dyn Fn(Value) -> Value) -> Value {
    let mut parameters: Vec<Value> = index.into_iter().cloned().collect();
    parameters
        .push(json!({"name": "q", "in": "query", "schema": {"type": "string", "example": "*"}}));
    json!({"summary": "Elasticsearch count: documents matching the body's query (query DSL) and q (query_string), or all; over an index, a comma list or * patterns",
           "parameters": parameters,
           "requestBody": {"required": false, "content": {"application/json": {"schema": {
               "type": "object", "additionalProperties": false,
               "properties": {"query": {"type": "object", "example": {"match_all": {}}}},
               "example": {"query": {"match_all": {}}}}}}},
           "responses": with_errors(json!({
               "200": json_response("Count", json!({"type": "object", "properties": {"count": {"type": "integer"}}}))}))})
}

/// `GET|POST /{index}/_search` (or `/_search`, every index, without `index`).
fn es_search_operation(index: Option<&Value>, with_errors: &dyn Fn(Value) -> Value) -> Value {
    let count = json!({"type": "integer", "minimum": 0, "example": 10});
    let mut parameters: Vec<Value> = index.into_iter().cloned().collect();
    parameters.extend([
               json!({"name": "q", "in": "query", "schema": {"type": "string", "example": "*"}, "description": "a query_string clause ANDed with the body's query"}),
               json!({"name": "size", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "overrides the body's size"}),
               json!({"name": "from", "in": "query", "schema": {"type": "integer", "minimum": 0}, "description": "overrides the body's from"})]);
    json!({"summary": "Elasticsearch search: the query DSL subset, from/size, one sort field, _source filtering, highlight and aggregations, answered in Elasticsearch's shape, over an index, a comma list or * patterns (see the README's Elasticsearch table)",
           "parameters": parameters,
           "requestBody": {"required": false, "content": {"application/json": {"schema": {
               "type": "object", "additionalProperties": false,
               "properties": {
                   "query": {"type": "object", "example": {"match_all": {}}},
                   "aggs": {"type": "object", "example": {}},
                   "aggregations": {"type": "object", "example": {}},
                   "from": {"type": "integer", "minimum": 0, "example": 0},
                   "size": count,
                   "sort": {"type": "array", "example": ["_score"]},
                   "_source": {"example": true},
                   "highlight": {"type": "object", "example": {"fields": {"*": {}}}},
                   "track_total_hits": {"example": true, "description": "accepted; totals are always exact"}},
               "example": {"query": {"match_all": {}}, "size": 10}}}}},
           "responses": with_errors(json!({
               "200": json_response("Hits and aggregations, Elasticsearch-shaped", json!({"type": "object", "properties": {
                   "took": {"type": "integer"}, "hits": {"type": "object"}, "aggregations": {"type": "object"}}}))}))})
}

/// `GET|POST /_msearch` or `/{index}/_msearch`.
fn es_msearch_operation(index: Option<&Value>, with_errors: &dyn Fn(Value) -> Value) -> Value {
    let parameters: Vec<Value> = index.into_iter().cloned().collect();
    json!({"summary": "Elasticsearch multi-search: NDJSON pairs of a header ({\"index\": name}, or {} for the path's) and a _search body; one answer per pair, each with its status",
           "parameters": parameters,
           "requestBody": {"required": true, "content": {
               "application/x-ndjson": {"schema": {"type": "string", "example": "{\"index\":\"openapi_probe\"}\n{\"query\":{\"match_all\":{}}}\n"}}}},
           "responses": with_errors(json!({
               "200": json_response("One answer per search", json!({"type": "object", "properties": {"responses": {"type": "array"}}}))}))})
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

/// The Elasticsearch document, index and setup operations ([`crate::es_documents`],
/// [`crate::es_indices`], [`crate::es_setup`]), by path; merged into the document's
/// paths (two of them, `/{index}` and `/{index}/_doc/{id}`, already have operations).
fn es_paths(
    es_index: &Value,
    id: &Value,
    with_errors: &dyn Fn(Value) -> Value,
) -> Map<String, Value> {
    let ok = |description: &str| json_response(description, json!({"type": "object"}));
    // A collection no other operation relies on: created by PUT /{index}, deleted by
    // DELETE /{index}.
    let mut own_index = es_index.clone();
    own_index["schema"]["example"] = json!("openapi_es_index");
    // A data stream (a collection name) no other operation relies on.
    let mut stream = es_index.clone();
    stream["name"] = json!("name");
    stream["schema"]["example"] = json!("openapi_stream");
    let refresh = json!({"name": "refresh", "in": "query", "schema": {"type": "string", "enum": ["true", "false", "wait_for"], "example": "false"},
        "description": "true or wait_for: answer once searchable (as wait=searchable)"});
    let wait = json!({"name": "wait", "in": "query", "schema": {"type": "string", "enum": ["durable", "searchable"], "default": "durable"}});
    let op_type = json!({"name": "op_type", "in": "query", "schema": {"type": "string", "enum": ["index", "create"]},
        "description": "create: 409 when the id exists"});
    let source = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "example": {"title": "red fox"},
        "description": "the document (pretty-printed is fine)"}}}});
    let written = |extra: Value| {
        let mut responses = json!({
            "200": ok("Updated (result: updated), Elasticsearch-shaped"),
            "201": ok("Created (result: created), Elasticsearch-shaped"),
            "409": {"$ref": "#/components/responses/Error"},
            "413": {"$ref": "#/components/responses/Error"}});
        if let (Some(map), Value::Object(extra)) = (responses.as_object_mut(), extra) {
            map.extend(extra);
        }
        with_errors(responses)
    };
    let index_doc = |summary: &str| {
        json!({"summary": summary,
        "parameters": [es_index, id, refresh, wait, op_type], "requestBody": source, "responses": written(json!({}))})
    };
    let auto_id = json!({"summary": "Elasticsearch index API: a document under an assigned id",
        "parameters": [es_index, refresh, wait], "requestBody": source, "responses": written(json!({}))});
    let create = |summary: &str| {
        json!({"summary": summary,
        "parameters": [es_index, id, refresh, wait], "requestBody": source, "responses": written(json!({}))})
    };
    let mget_doc = json!({"type": "object", "additionalProperties": false, "required": ["_id"], "properties": {
        "_index": {"type": "string"}, "_id": {"type": "string"}}});
    let mget_body = |example: Value| {
        json!({"required": true, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": false, "example": example,
        "description": "exactly one of docs and ids (ids take the index from the path)",
        "properties": {"docs": {"type": "array", "items": mget_doc}, "ids": {"type": "array", "items": {"type": "string"}}}}}}})
    };
    let mget = |parameters: Value, example: Value| {
        json!({"summary": "Elasticsearch multi-get: docs with found per document, read-your-writes",
        "parameters": parameters, "requestBody": mget_body(example),
        "responses": with_errors(json!({"200": ok("docs, in request order")}))})
    };
    let fields = json!({"name": "fields", "in": "query", "schema": {"type": "string", "example": "*"}, "description": "comma-separated names or * patterns"});
    let field_caps = |parameters: Value| {
        json!({"summary": "Elasticsearch field capabilities from the schema: searchable and aggregatable per field and type",
        "parameters": parameters, "responses": with_errors(json!({"200": ok("indices and fields")}))})
    };
    let refresh_op = |parameters: Value| {
        json!({"summary": "Elasticsearch refresh: answers once everything accepted before is searchable",
        "parameters": parameters, "responses": with_errors(json!({"200": ok("_shards"), "504": {"$ref": "#/components/responses/Error"}}))})
    };
    let name = |example: &str| json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 255, "example": example}});
    let acknowledged = || {
        with_errors(
            json!({"200": json_response("Acknowledged", json!({"type": "object", "properties": {"acknowledged": {"type": "boolean"}}}))}),
        )
    };
    let definition_put = |summary: &str, example_name: &str, body: Value| {
        json!({"summary": summary,
        "parameters": [name(example_name)], "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
        "responses": acknowledged()})
    };
    let read = |summary: &str, parameters: Value| {
        json!({"summary": summary, "parameters": parameters,
        "responses": with_errors(json!({"200": ok("Found")}))})
    };
    // HEAD answers carry no body, so its name states no constraint a 400 would report.
    let head_name = |example: &str| json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "example": example}});
    let exists = |summary: &str, example_name: &str| {
        json!({"summary": summary, "parameters": [head_name(example_name)],
        "responses": {"200": {"description": "It exists"}, "404": {"description": "It does not"}}})
    };
    let patterns = json!({"type": "array", "minItems": 1, "items": {"type": "string"}});
    let index_template = json!({"type": "object", "required": ["index_patterns"],
        "example": {"index_patterns": ["openapi-*"], "template": {"settings": {"number_of_shards": 1}}, "priority": 1},
        "description": "kept as given; composed_of, priority, version, _meta, data_stream, allow_auto_create also accepted; shapes an index its first write creates",
        "properties": {"index_patterns": patterns, "template": {"type": "object"}}});
    let legacy_template = json!({"type": "object", "required": ["index_patterns"],
        "example": {"index_patterns": ["openapi-*"], "order": 0},
        "description": "kept as given; order, version, settings, mappings, aliases also accepted; kept only",
        "properties": {"index_patterns": patterns, "settings": {"type": "object"}, "mappings": {"type": "object"}}});
    let component_template = json!({"type": "object", "required": ["template"],
        "example": {"template": {"mappings": {"properties": {"title": {"type": "text"}}}}},
        "description": "kept as given; version, _meta also accepted",
        "properties": {"template": {"type": "object"}}});
    let policy = json!({"type": "object", "required": ["policy"], "additionalProperties": false,
        "example": {"policy": {"phases": {"hot": {"actions": {}}}}},
        "description": "kept as given; no lifecycle runs",
        "properties": {"policy": {"type": "object"}}});
    let create_index_body = json!({"required": false, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": false,
        "example": {"mappings": {"properties": {"title": {"type": "text"}, "tags": {"type": "keyword"}, "n": {"type": "long"}}},
                    "settings": {"number_of_shards": 1}},
        "description": "mappings translated into a schema (unsupported types and options are refused by name), settings.number_of_shards kept, other settings ignored",
        "properties": {"mappings": {"type": "object"}, "settings": {"type": "object"}, "aliases": {"type": "object", "description": "only {} (no aliases)"}}}}}});
    let paths = json!({
        "/{index}": {
            "get": read("Elasticsearch get index: mappings and settings from the schema", json!([es_index])),
            "put": {"summary": "Elasticsearch create index: a collection from mappings and settings; 400 resource_already_exists_exception when it exists",
                    "parameters": [own_index], "requestBody": create_index_body,
                    "responses": with_errors(json!({"200": ok("acknowledged, shards_acknowledged, index")}))},
            "delete": {"summary": "Elasticsearch delete index: the collection deletion (acknowledged false while it is still under way)",
                       "parameters": [own_index], "responses": acknowledged()}
        },
        "/{index}/_doc/{id}": {
            "put": index_doc("Elasticsearch index API: insert or replace a document (op_type=create: only insert)"),
            "post": index_doc("Elasticsearch index API: insert or replace a document (op_type=create: only insert)"),
            "delete": {"summary": "Elasticsearch delete API: 200 deleted, 404 not_found",
                       "parameters": [es_index, id, refresh, wait],
                       "responses": with_errors(json!({"200": ok("Deleted")}))}
        },
        "/{index}/_doc": {"post": auto_id},
        "/{index}/_create/{id}": {
            "put": create("Elasticsearch create API: insert a document; 409 version_conflict_engine_exception when the id exists"),
            "post": create("Elasticsearch create API: insert a document; 409 version_conflict_engine_exception when the id exists")
        },
        "/_mget": {
            "get": mget(json!([]), json!({"docs": [{"_index": "openapi_probe", "_id": "doc-1"}]})),
            "post": mget(json!([]), json!({"docs": [{"_index": "openapi_probe", "_id": "doc-1"}]}))
        },
        "/{index}/_mget": {
            "get": mget(json!([es_index]), json!({"ids": ["doc-1"]})),
            "post": mget(json!([es_index]), json!({"ids": ["doc-1"]}))
        },
        "/_mapping": {"get": read("Elasticsearch mappings of every index", json!([]))},
        "/{index}/_mapping": {"get": read("Elasticsearch mappings of an index, from its schema", json!([es_index]))},
        "/_field_caps": {"get": field_caps(json!([fields])), "post": field_caps(json!([fields]))},
        "/{index}/_field_caps": {"get": field_caps(json!([es_index, fields])), "post": field_caps(json!([es_index, fields]))},
        "/_refresh": {"get": refresh_op(json!([])), "post": refresh_op(json!([]))},
        "/{index}/_refresh": {"get": refresh_op(json!([es_index])), "post": refresh_op(json!([es_index]))},
        "/_nodes/http": {"get": read("Elasticsearch nodes info (http): this node and its publish address", json!([]))},
        "/_nodes/{node_id}/http": {"get": read("Elasticsearch nodes info (http) of a node selector (_all, _local, _master, sluice): this node, or none",
            json!([{"name": "node_id", "in": "path", "required": true, "schema": {"type": "string", "example": "_all"}}]))},
        "/_license": {"get": read("Elasticsearch license: an active basic license", json!([]))},
        "/_xpack": {"get": read("Elasticsearch X-Pack info: every feature unavailable", json!([]))},
        "/_index_template": {"get": read("Elasticsearch index templates, all", json!([]))},
        "/_index_template/{name}": {
            "put": definition_put("Elasticsearch put index template: stored durably, returned as given", "openapi_template", index_template.clone()),
            "post": definition_put("Elasticsearch put index template: stored durably, returned as given", "openapi_template", index_template),
            "get": read("Elasticsearch get index template (a name, a comma list or * patterns)", json!([name("openapi_template")])),
            "head": exists("Whether an index template exists", "openapi_template"),
            "delete": {"summary": "Elasticsearch delete index template", "parameters": [name("openapi_template_gone")], "responses": acknowledged()}
        },
        "/_component_template": {"get": read("Elasticsearch component templates, all", json!([]))},
        "/_component_template/{name}": {
            "put": definition_put("Elasticsearch put component template: stored durably, returned as given", "openapi_component", component_template.clone()),
            "post": definition_put("Elasticsearch put component template: stored durably, returned as given", "openapi_component", component_template),
            "get": read("Elasticsearch get component template", json!([name("openapi_component")])),
            "head": exists("Whether a component template exists", "openapi_component"),
            "delete": {"summary": "Elasticsearch delete component template", "parameters": [name("openapi_component_gone")], "responses": acknowledged()}
        },
        "/_template/{name}": {
            "put": definition_put("Elasticsearch put legacy index template: stored durably, returned as given", "openapi_legacy", legacy_template.clone()),
            "post": definition_put("Elasticsearch put legacy index template: stored durably, returned as given", "openapi_legacy", legacy_template),
            "get": read("Elasticsearch get legacy index template", json!([name("openapi_legacy")])),
            "head": exists("Whether a legacy index template exists", "openapi_legacy"),
            "delete": {"summary": "Elasticsearch delete legacy index template", "parameters": [name("openapi_legacy_gone")], "responses": acknowledged()}
        },
        "/_template": {"get": read("Elasticsearch legacy index templates, all", json!([]))},
        "/_data_stream": {"get": read("Elasticsearch data streams, all", json!([]))},
        "/_data_stream/{name}": {
            "put": {"summary": "Elasticsearch create data stream: a collection of that name (schema from a matching index template, else inferred), recorded as a stream; 400 resource_already_exists_exception when it exists",
                    "parameters": [stream],
                    "responses": with_errors(json!({"200": ok("acknowledged")}))},
            "get": read("Elasticsearch get data stream: names, comma lists, * patterns", json!([name("openapi_stream")])),
            "delete": {"summary": "Elasticsearch delete data stream: the stream and its collection", "parameters": [name("openapi_stream_gone")], "responses": acknowledged()}
        },
        "/_ilm/policy": {"get": read("Elasticsearch lifecycle policies, all", json!([]))},
        "/_ilm/policy/{name}": {
            "put": definition_put("Elasticsearch put lifecycle policy: stored durably, returned with version and modified_date; never run", "openapi_policy", policy),
            "get": read("Elasticsearch get lifecycle policy", json!([name("openapi_policy")])),
            "delete": {"summary": "Elasticsearch delete lifecycle policy", "parameters": [name("openapi_policy_gone")], "responses": acknowledged()}
        }
    });
    match paths {
        Value::Object(paths) => paths,
        _ => Map::new(),
    }
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
    let es_paths = es_paths(&es_index, &id, &with_errors);
    let mut document = json!({
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
                "get": es_count_operation(Some(&es_index), &with_errors),
                "post": es_count_operation(Some(&es_index), &with_errors)
            },
            "/_count": {
                "get": es_count_operation(None, &with_errors),
                "post": es_count_operation(None, &with_errors)
            },
            "/{index}/_search": {
                "get": es_search_operation(Some(&es_index), &with_errors),
                "post": es_search_operation(Some(&es_index), &with_errors)
            },
            "/_search": {
                "get": es_search_operation(None, &with_errors),
                "post": es_search_operation(None, &with_errors)
            },
            "/_msearch": {
                "get": es_msearch_operation(None, &with_errors),
                "post": es_msearch_operation(None, &with_errors)
            },
            "/{index}/_msearch": {
                "get": es_msearch_operation(Some(&es_index), &with_errors),
                "post": es_msearch_operation(Some(&es_index), &with_errors)
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
                    "highlight": {"type": "boolean", "default": true},
                    "query": {"type": "object", "description": "the query DSL (Elasticsearch's JSON shape), ANDed with q and filter", "example": {"match": {"title": "fox"}}},
                    "aggs": {"type": "object", "description": "aggregations in Elasticsearch's request shape", "example": {"by_tag": {"terms": {"field": "tags"}}}},
                    "aggregations": {"type": "object", "description": "the same as aggs", "example": {}}}},
                "SearchResponse": {"type": "object", "required": ["total", "hits", "took_ms"], "properties": {
                    "total": {"type": "integer"}, "took_ms": {"type": "integer"},
                    "hits": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "score": {"type": "number", "nullable": true},
                        "doc": {"type": "object"}, "highlights": {"type": "object"}}}},
                    "partial": {"type": "boolean", "description": "present (true) when some shards failed or timed out; the results are those of the others"},
                    "failed_shards": {"type": "array", "items": {"type": "integer"}, "description": "the shards left out of a partial result"},
                    "stale": {"type": "boolean", "description": "present (true) when every shard failed and this is the last complete result of the same request, from the cache"},
                    "aggregations": {"type": "object", "description": "present when the request asked for aggs: their results in Elasticsearch's response shape"}}}
            }
        }
    });
    if let Some(paths) = document["paths"].as_object_mut() {
        for (path, operations) in es_paths {
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            if let (Some(entry), Value::Object(operations)) = (entry.as_object_mut(), operations) {
                entry.extend(operations);
            }
        }
    }
    document
}
