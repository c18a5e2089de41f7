//! The OpenAPI document and the server hold each other to account: for every operation
//! of `/openapi.json`, requests are generated from its parameters and request body
//! schemas and sent to a real `sluice serve`. A valid request (the document's examples,
//! and each bounded number at its bounds, each enum value) must not be refused as
//! invalid (400 or 422); a request that violates one constraint (a missing required
//! member, an extra member where `additionalProperties` is false, a too-short or too-long
//! string, a pattern or enum miss, a number past its bound, a null where not nullable, a
//! wrong type, a missing required body) must be refused with 400 in the documented shape.
//!
//! The generator walks the subset of JSON Schema the document uses: `type`, `required`,
//! `properties`, `additionalProperties: false`, `minProperties`, `items`, `minItems`,
//! `maxItems`, `minLength`, `maxLength`, `pattern`, `enum`, `minimum`, `maximum`,
//! `nullable`, `$ref` to `#/components/schemas`.

mod support;

use serde_json::{json, Map, Value};
use support::Server;

/// The probe collection the document's examples name.
const PROBE: &str = "openapi_probe";

/// A schema, with a `$ref` followed.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

fn number(schema: &Value, key: &str) -> Option<i64> {
    schema.get(key).and_then(Value::as_i64)
}

/// A value valid for `schema` to start from: its example, its default, or the least
/// value of its type.
fn base_value(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    if let Some(example) = schema.get("example").or_else(|| schema.get("default")) {
        return example.clone();
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    match type_of(schema) {
        "integer" | "number" => json!(number(schema, "minimum").unwrap_or(0)),
        "string" => json!("a".repeat(number(schema, "minLength").unwrap_or(0) as usize)),
        "boolean" => json!(true),
        "array" => json!([]),
        _ => json!({}),
    }
}

/// Values that violate exactly one constraint of `schema`, each with what it violates,
/// derived from the valid `value`.
fn invalid_values(doc: &Value, schema: &Value, value: &Value) -> Vec<(String, Value)> {
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    let kind = type_of(schema);
    if kind.is_empty() {
        return out;
    }
    if schema.get("nullable") != Some(&json!(true)) {
        out.push(("null where not nullable".to_owned(), Value::Null));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        let outside = if kind == "boolean" {
            json!(allowed.contains(&json!(false)))
        } else {
            json!("not_in_the_enum")
        };
        out.push(("a value outside the enum".to_owned(), outside));
    }
    match kind {
        "integer" | "number" => {
            out.push(("a string for a number".to_owned(), json!("1")));
            if let Some(max) = number(schema, "maximum") {
                out.push((format!("past the maximum {max}"), json!(max + 1)));
            }
            if let Some(min) = number(schema, "minimum") {
                out.push((format!("below the minimum {min}"), json!(min - 1)));
            }
        }
        "string" => {
            out.push(("a number for a string".to_owned(), json!(1)));
            if number(schema, "minLength").unwrap_or(0) > 0 {
                out.push(("shorter than minLength".to_owned(), json!("")));
            }
            if let Some(max) = number(schema, "maxLength") {
                out.push((
                    "longer than maxLength".to_owned(),
                    json!("a".repeat(max as usize + 1)),
                ));
            }
            if schema.get("pattern").is_some() {
                out.push(("a pattern miss".to_owned(), json!("Not Valid!")));
            }
        }
        "boolean" => out.push(("a string for a boolean".to_owned(), json!("true"))),
        "array" => {
            out.push(("an object for an array".to_owned(), json!({})));
            if number(schema, "minItems").unwrap_or(0) > 0 {
                out.push(("fewer items than minItems".to_owned(), json!([])));
            }
            if let Some(items) = schema.get("items") {
                let first = value
                    .get(0)
                    .cloned()
                    .unwrap_or_else(|| base_value(doc, items));
                for (what, bad) in invalid_values(doc, items, &first) {
                    let mut array = value.as_array().cloned().unwrap_or_default();
                    if array.is_empty() {
                        array.push(bad);
                    } else {
                        array[0] = bad;
                    }
                    out.push((format!("item 0: {what}"), Value::Array(array)));
                }
            }
        }
        "object" => {
            out.push(("an array for an object".to_owned(), json!([])));
            let members = value.as_object().cloned().unwrap_or_default();
            for required in schema["required"].as_array().into_iter().flatten() {
                let name = required.as_str().unwrap();
                let mut without = members.clone();
                without.remove(name);
                out.push((format!("{name} missing (required)"), Value::Object(without)));
            }
            if schema.get("additionalProperties") == Some(&json!(false)) {
                let mut extra = members.clone();
                extra.insert("unexpected_member".to_owned(), json!(1));
                out.push(("an extra member".to_owned(), Value::Object(extra)));
            }
            if number(schema, "minProperties").unwrap_or(0) > 0 {
                out.push(("fewer members than minProperties".to_owned(), json!({})));
            }
            for (name, member) in schema["properties"].as_object().into_iter().flatten() {
                let current = members
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| base_value(doc, member));
                for (what, bad) in invalid_values(doc, member, &current) {
                    let mut changed = members.clone();
                    changed.insert(name.clone(), bad);
                    out.push((format!("{name}: {what}"), Value::Object(changed)));
                }
            }
        }
        _ => {}
    }
    out
}

/// Valid variants of the object `value`: each bounded integer member at its bounds,
/// each enum member at each value.
fn boundary_values(doc: &Value, schema: &Value, value: &Value) -> Vec<(String, Value)> {
    let schema = resolve(doc, schema);
    let mut out = vec![("the example".to_owned(), value.clone())];
    let Some(members) = value.as_object() else {
        return out;
    };
    for (name, member) in schema["properties"].as_object().into_iter().flatten() {
        let member = resolve(doc, member);
        let mut values: Vec<Value> = ["minimum", "maximum"]
            .iter()
            .filter_map(|bound| number(member, bound).map(Value::from))
            .collect();
        values.extend(member["enum"].as_array().cloned().unwrap_or_default());
        for bound in values {
            let mut changed = members.clone();
            // A member at its maximum, the other bounded members at their minimum: some
            // bounds are on a sum (`limit + offset` at most the result window).
            if number(member, "maximum").map(Value::from).as_ref() == Some(&bound) {
                for (other, other_schema) in schema["properties"].as_object().into_iter().flatten()
                {
                    let other_schema = resolve(doc, other_schema);
                    if other != name && changed.contains_key(other) {
                        if let (Some(_), Some(min)) = (
                            number(other_schema, "maximum"),
                            number(other_schema, "minimum"),
                        ) {
                            changed.insert(other.clone(), Value::from(min));
                        }
                    }
                }
            }
            changed.insert(name.clone(), bound.clone());
            out.push((format!("{name} = {bound}"), Value::Object(changed)));
        }
    }
    out
}

/// A query or path parameter's value as it is sent.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One request generated for an operation.
struct Probe {
    what: String,
    path: Map<String, Value>,
    query: Map<String, Value>,
    body: Option<Vec<u8>>,
    content_type: &'static str,
}

/// The requests for one operation: the valid ones, then the invalid ones.
fn probes(doc: &Value, operation: &Value) -> (Vec<Probe>, Vec<Probe>) {
    let parameters: Vec<&Value> = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut path = Map::new();
    let mut query = Map::new();
    for parameter in &parameters {
        let schema = &parameter["schema"];
        let name = parameter["name"].as_str().unwrap().to_owned();
        if parameter["in"] == "path" {
            path.insert(name, base_value(doc, schema));
        } else if let Some(example) = resolve(doc, schema).get("example") {
            query.insert(name, example.clone());
        }
    }
    let (body, body_schema, content_type) = match operation["requestBody"]["content"].as_object() {
        Some(content) if content.contains_key("application/x-ndjson") => {
            let example = content["application/x-ndjson"]["schema"]["example"].clone();
            (Some(example), None, "application/x-ndjson")
        }
        Some(content) if content.contains_key("application/json") => {
            let schema = &content["application/json"]["schema"];
            (
                Some(base_value(doc, schema)),
                Some(schema.clone()),
                "application/json",
            )
        }
        Some(content) => {
            let example = content["application/x-ndjson"]["schema"]["example"].clone();
            (Some(example), None, "application/x-ndjson")
        }
        None => (None, None, "application/json"),
    };
    let encode = |body: &Value| match body {
        Value::String(text) if content_type == "application/x-ndjson" => text.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap(),
    };
    let probe = |what: String,
                 path: &Map<String, Value>,
                 query: &Map<String, Value>,
                 body: Option<Vec<u8>>| Probe {
        what,
        path: path.clone(),
        query: query.clone(),
        body,
        content_type,
    };
    let base_body = body.as_ref().map(encode);
    let mut valid = Vec::new();
    let mut invalid = Vec::new();

    // Valid: the examples, the body's members at their bounds, each query parameter at
    // its bounds and enum values.
    match (&body_schema, &body) {
        (Some(schema), Some(example)) => {
            for (what, value) in boundary_values(doc, schema, example) {
                valid.push(probe(
                    format!("body: {what}"),
                    &path,
                    &query,
                    Some(encode(&value)),
                ));
            }
        }
        _ => valid.push(probe(
            "the example".to_owned(),
            &path,
            &query,
            base_body.clone(),
        )),
    }
    let query_schema = json!({"type": "object", "properties": Value::Object(
        parameters.iter().filter(|p| p["in"] == "query")
            .map(|p| (p["name"].as_str().unwrap().to_owned(), resolve(doc, &p["schema"]).clone()))
            .collect())});
    for (what, value) in boundary_values(doc, &query_schema, &Value::Object(query.clone()))
        .into_iter()
        .skip(1)
    {
        let changed = value.as_object().unwrap().clone();
        valid.push(probe(
            format!("query: {what}"),
            &path,
            &changed,
            base_body.clone(),
        ));
    }

    // Invalid: each parameter violating one constraint, then the body.
    for parameter in &parameters {
        let name = parameter["name"].as_str().unwrap();
        let schema = resolve(doc, &parameter["schema"]);
        if type_of(schema) == "array" {
            continue;
        }
        let in_path = parameter["in"] == "path";
        let current = if in_path {
            path.get(name)
        } else {
            query.get(name)
        }
        .cloned()
        .unwrap_or_else(|| base_value(doc, schema));
        for (what, bad) in invalid_values(doc, schema, &current) {
            // A parameter is text: null, and text for a string, are not expressible, and
            // an empty path segment is another route.
            let text_type = type_of(schema) == "string";
            // "true" for a boolean parameter is a valid boolean once in a URL.
            let boolean_text = type_of(schema) == "boolean" && bad.is_string();
            if bad.is_null()
                || (text_type && !bad.is_string())
                || (in_path && bad == json!(""))
                || boolean_text
            {
                continue;
            }
            // "1" for an integer parameter is a valid integer once in a URL.
            if !text_type && bad.is_string() && bad.as_str().unwrap().parse::<i64>().is_ok() {
                let what = format!("{name}: a word for a {}", type_of(schema));
                let mut target = if in_path { path.clone() } else { query.clone() };
                target.insert(name.to_owned(), json!("many"));
                let (p, q) = if in_path {
                    (&target, &query)
                } else {
                    (&path, &target)
                };
                invalid.push(probe(what, p, q, base_body.clone()));
                continue;
            }
            let mut target = if in_path { path.clone() } else { query.clone() };
            target.insert(name.to_owned(), bad);
            let (p, q) = if in_path {
                (&target, &query)
            } else {
                (&path, &target)
            };
            invalid.push(probe(format!("{name}: {what}"), p, q, base_body.clone()));
        }
    }
    if operation["requestBody"]["required"] == json!(true) {
        invalid.push(probe("no body (required)".to_owned(), &path, &query, None));
    }
    if let (Some(schema), Some(example)) = (&body_schema, &body) {
        for (what, bad) in invalid_values(doc, schema, example) {
            invalid.push(probe(
                format!("body: {what}"),
                &path,
                &query,
                Some(encode(&bad)),
            ));
        }
    }
    (valid, invalid)
}

async fn send(
    server: &Server,
    method: &str,
    template: &str,
    probe: &Probe,
) -> (u16, Value, String) {
    let mut path = template.to_owned();
    for (name, value) in &probe.path {
        let segment: String = form_urlencoded_segment(&as_text(value));
        path = path.replace(&format!("{{{name}}}"), &segment);
    }
    let query: Vec<(String, String)> = probe
        .query
        .iter()
        .map(|(name, value)| (name.clone(), as_text(value)))
        .collect();
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut request = server
        .client
        .request(method, server.url(&path))
        .query(&query);
    if let Some(body) = &probe.body {
        request = request
            .header("content-type", probe.content_type)
            .body(body.clone());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, content_type)
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn form_urlencoded_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_generated_from_the_document_are_answered_as_it_states() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None).await;
    let doc = server.get_json("/openapi.json").await;

    // The probe collection from the document's own schema example, with a document.
    let schema = doc["components"]["schemas"]["Schema"]["example"].clone();
    assert_eq!(server.put_schema(PROBE, &schema).await.status(), 201);
    let (status, body) = server
        .ingest(
            PROBE,
            "{\"id\":\"doc-1\",\"title\":\"red fox\",\"price\":7}\n",
            "searchable",
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Deleting the probe collection goes last: the others need it.
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            operations.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    operations.sort_by_key(|(method, path, _)| method == "delete" && path == "/v1/collections/{c}");

    let mut mismatches = Vec::new();
    let (mut valid_sent, mut invalid_sent) = (0, 0);
    for (method, path, operation) in &operations {
        let (valid, invalid) = probes(&doc, operation);
        // Invalid first: a valid delete removes what the others address.
        for probe in &invalid {
            let (status, body, content_type) = send(&server, method, path, probe).await;
            invalid_sent += 1;
            let shaped = content_type.starts_with("application/json")
                && body["error"]["code"].is_string()
                && body["error"]["message"].is_string()
                && body["error"]["trace_id"].is_string();
            if status != 400 || !shaped {
                mismatches.push(format!(
                    "{method} {path}, {}: expected a 400 in the error shape, got {status} {body}",
                    probe.what
                ));
            }
        }
        for probe in &valid {
            let (status, body, _) = send(&server, method, path, probe).await;
            valid_sent += 1;
            if status == 400 || status == 422 {
                mismatches.push(format!(
                    "{method} {path}, {}: valid by the document, refused with {status} {body}",
                    probe.what
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches between the document and the server:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    // The generator reached every constrained part of the document.
    assert!(
        valid_sent >= 30 && invalid_sent >= 80,
        "{valid_sent} valid, {invalid_sent} invalid"
    );
    assert_eq!(server.get("/_internal_/healthcheck").await.status(), 200);
}
