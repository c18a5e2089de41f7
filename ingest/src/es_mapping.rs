//! Elasticsearch mappings and index settings, translated to a sluice schema and back.
//!
//! Pure functions, no I/O: [`schema_from_index`] reads the body of `PUT /{index}`,
//! [`mappings_of`], [`settings_of`] and [`field_caps_of`] answer the reads.
//!
//! The rule: an Elasticsearch construct is translated when sluice has the same notion,
//! accepted and ignored only when ignoring it changes no answer Elasticsearch would give,
//! and otherwise refused with a message naming it, never dropped silently.
//!
//! | Elasticsearch | sluice |
//! |---|---|
//! | `text` | `text` (`analyzer`/`search_analyzer` `standard`: the default tokenizer) |
//! | `keyword` | `keyword` |
//! | `long`, `integer`, `short`, `byte` | `i64` |
//! | `unsigned_long` | `u64` |
//! | `double`, `float`, `half_float`, `scaled_float` | `f64` (`scaling_factor` ignored: values are kept exact) |
//! | `boolean` | `bool` |
//! | `date` | `datetime` (no `format`: RFC 3339 strings, integers as epoch seconds) |
//! | `flattened`, `object` without `properties` | `json` |
//!
//! Every translated field is optional and takes a single value or an array, as any
//! Elasticsearch field does; the primary key `id` is added as a `string` unless the
//! mappings declare it. Field options accepted and ignored: `meta`, `store`,
//! `doc_values: true`, `index: true`. Mapping members accepted: `properties`, `dynamic`
//! (`true` or `strict`), `_source: {"enabled": true}`, `_meta` (ignored),
//! `dynamic_templates: []`, `date_detection: false` and `numeric_detection: false` (what
//! sluice does with undeclared fields). Refused: every other type and option (`fields`,
//! `ignore_above`, `copy_to`, `null_value`, `format`, analyzers other than `standard`,
//! `properties` nested in a field, `dynamic: false`, ...).
//!
//! Settings: `number_of_shards` becomes the collection's shards (fixed at creation);
//! every other setting (`number_of_replicas`, `refresh_interval`, `analysis`, ...) is
//! accepted and ignored, nested (`{"index": {...}}`) or dotted (`index.x`) alike.

use serde_json::{json, Map, Value};
use sluice_core::schema::{FieldDef, FieldType, Schema, MAX_SHARDS};
use sluice_core::store::CollectionMeta;

/// The primary key of a collection created through the Elasticsearch API (`_id` fills it).
const PRIMARY_KEY: &str = "id";

/// A schema from the `mappings` and `settings` of `PUT /{index}` (either may be absent).
/// The error names what is not supported.
pub fn schema_from_index(
    mappings: Option<&Value>,
    settings: Option<&Value>,
) -> Result<Schema, String> {
    let mut schema = Schema {
        description: String::new(),
        primary_key: PRIMARY_KEY.to_owned(),
        fields: Vec::new(),
        strict: false,
        shards: None,
    };
    if let Some(mappings) = mappings {
        read_mappings(mappings, &mut schema)?;
    }
    if let Some(settings) = settings {
        schema.shards = shards_setting(settings)?;
    }
    Ok(schema)
}

fn read_mappings(mappings: &Value, schema: &mut Schema) -> Result<(), String> {
    let Value::Object(members) = mappings else {
        return Err("mappings must be an object".to_owned());
    };
    for (key, value) in members {
        match (key.as_str(), value) {
            ("properties", Value::Object(properties)) => {
                for (name, definition) in properties {
                    schema.fields.push(field_from(name, definition)?);
                }
            }
            ("properties", _) => return Err("mappings.properties must be an object".to_owned()),
            ("dynamic", Value::Bool(true)) => schema.strict = false,
            ("dynamic", Value::String(s)) if s == "true" => schema.strict = false,
            ("dynamic", Value::String(s)) if s == "strict" => schema.strict = true,
            ("dynamic", other) => {
                return Err(format!(
                    "mappings.dynamic {other} is not supported: sluice indexes undeclared fields \
                     (dynamic: true) or refuses them (dynamic: strict)"
                ))
            }
            ("_source", Value::Object(source))
                if source
                    .iter()
                    .all(|(k, v)| k == "enabled" && v == &json!(true)) => {}
            ("_source", _) => {
                return Err(
                    "mappings._source is not supported beyond {\"enabled\": true}: sluice keeps \
                     every document's source whole"
                        .to_owned(),
                )
            }
            ("_meta", _) => {}
            ("dynamic_templates", Value::Array(templates)) if templates.is_empty() => {}
            ("date_detection" | "numeric_detection", Value::Bool(false)) => {}
            (other, _) => return Err(format!("mappings.{other} is not supported")),
        }
    }
    Ok(())
}

/// One field of `mappings.properties`.
fn field_from(name: &str, definition: &Value) -> Result<FieldDef, String> {
    let Value::Object(options) = definition else {
        return Err(format!("field [{name}]: its mapping must be an object"));
    };
    if options.contains_key("properties") {
        return Err(format!(
            "field [{name}]: properties inside a field are not supported (sluice field names \
             do not nest); map it as flattened, or declare its leaves as top-level fields"
        ));
    }
    let es_type = match options.get("type") {
        Some(Value::String(es_type)) => es_type.as_str(),
        Some(_) => return Err(format!("field [{name}]: type must be a string")),
        None => return Err(format!("field [{name}]: no type given")),
    };
    let (field_type, extra_options): (FieldType, &[&str]) = match es_type {
        "text" => (FieldType::Text, &["analyzer", "search_analyzer"]),
        "keyword" => (FieldType::Keyword, &[]),
        "long" | "integer" | "short" | "byte" => (FieldType::I64, &[]),
        "unsigned_long" => (FieldType::U64, &[]),
        "double" | "float" | "half_float" => (FieldType::F64, &[]),
        "scaled_float" => (FieldType::F64, &["scaling_factor"]),
        "boolean" => (FieldType::Bool, &[]),
        "date" => (FieldType::Datetime, &[]),
        "flattened" | "object" => (FieldType::Json, &[]),
        other => {
            return Err(format!(
                "field [{name}]: type [{other}] is not supported (supported: text, keyword, \
                 long, integer, short, byte, unsigned_long, double, float, half_float, \
                 scaled_float, boolean, date, flattened, object)"
            ))
        }
    };
    for (option, value) in options {
        let accepted = match option.as_str() {
            "type" | "meta" | "store" => true,
            "doc_values" | "index" => value == &json!(true),
            "analyzer" | "search_analyzer" => {
                extra_options.contains(&option.as_str()) && value == &json!("standard")
            }
            other => extra_options.contains(&other),
        };
        if !accepted {
            return Err(format!(
                "field [{name}]: option [{option}] {value} is not supported on a {es_type} field"
            ));
        }
    }
    let mut field = FieldDef::new(name, field_type);
    if name != PRIMARY_KEY {
        field.required = false;
        field.array = true;
    }
    Ok(field)
}

/// `number_of_shards` of index settings, nested or dotted; other settings are ignored.
fn shards_setting(settings: &Value) -> Result<Option<u32>, String> {
    let Value::Object(_) = settings else {
        return Err("settings must be an object".to_owned());
    };
    let mut flat = Vec::new();
    flatten("", settings, &mut flat);
    let mut shards = None;
    for (key, value) in flat {
        let key = key.strip_prefix("index.").unwrap_or(&key);
        if key != "number_of_shards" {
            continue;
        }
        let n = match &value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if (1..=u64::from(MAX_SHARDS)).contains(&n) => shards = Some(n as u32),
            _ => {
                return Err(format!(
                    "settings.index.number_of_shards {value}: must be between 1 and {MAX_SHARDS}"
                ))
            }
        }
    }
    Ok(shards)
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(members) => {
            for (key, value) in members {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// The Elasticsearch type a sluice field type reads as.
fn es_type_of(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String | FieldType::Keyword => "keyword",
        FieldType::Text => "text",
        FieldType::I64 => "long",
        FieldType::U64 => "unsigned_long",
        FieldType::F64 => "double",
        FieldType::Bool => "boolean",
        FieldType::Datetime => "date",
        FieldType::Json => "object",
    }
}

/// The `mappings` of a collection: `{"properties": {...}}`, with `dynamic: strict` for
/// a strict schema. What Elasticsearch has no option for (a tokenizer other than the
/// default, annotations) is kept in the field's `meta`.
pub fn mappings_of(schema: &Schema) -> Value {
    let mut properties = Map::new();
    for field in &schema.fields {
        let mut mapping = json!({"type": es_type_of(field.field_type)});
        let mut meta = Map::new();
        if field.field_type == FieldType::Text && field.tokenizer() != "default" {
            meta.insert("tokenizer".to_owned(), json!(field.tokenizer()));
        }
        if !field.annotations.is_empty() {
            meta.insert("annotations".to_owned(), json!(field.annotations.join(",")));
        }
        if !meta.is_empty() {
            mapping["meta"] = Value::Object(meta);
        }
        properties.insert(field.name.clone(), mapping);
    }
    let mut mappings = json!({ "properties": properties });
    if schema.strict {
        mappings["dynamic"] = json!("strict");
    }
    mappings
}

/// The `settings` of a collection, as Elasticsearch reports them (values as strings).
pub fn settings_of(meta: &CollectionMeta) -> Value {
    json!({"index": {
        "number_of_shards": meta.shards().to_string(),
        "number_of_replicas": "0",
        "provided_name": meta.name,
        "creation_date": meta.created_at_ms.to_string(),
        "uuid": format!("{}-{}", meta.name, meta.generation.0),
        "version": {"created": "8170099"},
    }})
}

/// Whether `name` matches the comma-separated `patterns` (`*` matches any run of
/// characters).
pub fn matches_any(patterns: &str, name: &str) -> bool {
    patterns
        .split(',')
        .map(str::trim)
        .any(|pattern| glob_matches(pattern, name))
}

/// Whether `text` matches `pattern`, where `*` matches any run of bytes. Linear in the
/// pattern times the text, however many `*` the pattern has.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_at, tried)) = star {
            p = star_at + 1;
            t = tried + 1;
            star = Some((star_at, tried + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// `_field_caps`' `fields` for `metas`, restricted to the fields matching `patterns`:
/// per field, per type, whether it is searchable and aggregatable (every field is
/// indexed; text and JSON fields have no fast field to aggregate on).
pub fn field_caps_of(metas: &[&CollectionMeta], patterns: &str) -> Value {
    let mut fields: Map<String, Value> = Map::new();
    for meta in metas {
        for field in &meta.schema.fields {
            if !matches_any(patterns, &field.name) {
                continue;
            }
            let es_type = es_type_of(field.field_type);
            let aggregatable = !matches!(field.field_type, FieldType::Text | FieldType::Json);
            let by_type = fields
                .entry(field.name.clone())
                .or_insert_with(|| json!({}));
            let entry = by_type.as_object_mut().expect("an object").entry(es_type);
            let caps = entry.or_insert_with(|| {
                json!({"type": es_type, "metadata_field": false, "searchable": true,
                       "aggregatable": aggregatable, "indices": []})
            });
            if let Some(indices) = caps["indices"].as_array_mut() {
                indices.push(json!(meta.name));
            }
        }
    }
    // Elasticsearch lists `indices` only for a field whose type differs between them.
    for by_type in fields.values_mut() {
        let Some(by_type) = by_type.as_object_mut() else {
            continue;
        };
        if by_type.len() == 1 {
            for caps in by_type.values_mut() {
                if let Some(caps) = caps.as_object_mut() {
                    caps.remove("indices");
                }
            }
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(mappings: Value) -> Result<Schema, String> {
        let mut schema = schema_from_index(Some(&mappings), None)?;
        schema
            .normalize_and_validate()
            .map_err(|e| e.message.clone())?;
        Ok(schema)
    }

    #[test]
    fn every_supported_type_translates_and_reads_back() {
        let types = [
            ("text", FieldType::Text, "text"),
            ("keyword", FieldType::Keyword, "keyword"),
            ("long", FieldType::I64, "long"),
            ("integer", FieldType::I64, "long"),
            ("short", FieldType::I64, "long"),
            ("byte", FieldType::I64, "long"),
            ("unsigned_long", FieldType::U64, "unsigned_long"),
            ("double", FieldType::F64, "double"),
            ("float", FieldType::F64, "double"),
            ("half_float", FieldType::F64, "double"),
            ("scaled_float", FieldType::F64, "double"),
            ("boolean", FieldType::Bool, "boolean"),
            ("date", FieldType::Datetime, "date"),
            ("flattened", FieldType::Json, "object"),
            ("object", FieldType::Json, "object"),
        ];
        let mut properties = Map::new();
        for (i, (es_type, _, _)) in types.iter().enumerate() {
            properties.insert(format!("f{i}"), json!({"type": es_type}));
        }
        let schema = schema(json!({"properties": properties})).unwrap();
        assert_eq!(schema.primary_key_field().field_type, FieldType::String);
        let mappings = mappings_of(&schema);
        for (i, (es_type, field_type, read_back)) in types.iter().enumerate() {
            let field = schema.field(&format!("f{i}")).unwrap();
            assert_eq!(field.field_type, *field_type, "{es_type}");
            assert!(
                !field.required && field.array,
                "{es_type}: optional, any arity"
            );
            assert_eq!(mappings["properties"][format!("f{i}")]["type"], *read_back);
        }
        assert_eq!(mappings["properties"]["id"]["type"], "keyword");
        assert!(mappings.get("dynamic").is_none());
    }

    #[test]
    fn strictness_options_and_the_declared_primary_key() {
        let strict = schema(json!({"dynamic": "strict", "_source": {"enabled": true}, "_meta": {"a": 1},
            "properties": {"id": {"type": "keyword"},
                           "title": {"type": "text", "analyzer": "standard", "store": true},
                           "n": {"type": "scaled_float", "scaling_factor": 100, "doc_values": true}}}))
        .unwrap();
        assert!(strict.strict);
        assert_eq!(strict.primary_key_field().field_type, FieldType::Keyword);
        assert!(strict.primary_key_field().required);
        assert_eq!(mappings_of(&strict)["dynamic"], "strict");
    }

    #[test]
    fn what_sluice_cannot_honour_is_refused_by_name() {
        for (mappings, needle) in [
            (json!({"properties": {"ip": {"type": "ip"}}}), "type [ip]"),
            (
                json!({"properties": {"k": {"type": "keyword", "ignore_above": 256}}}),
                "ignore_above",
            ),
            (
                json!({"properties": {"t": {"type": "text", "fields": {"raw": {"type": "keyword"}}}}}),
                "fields",
            ),
            (
                json!({"properties": {"t": {"type": "text", "analyzer": "english"}}}),
                "analyzer",
            ),
            (
                json!({"properties": {"d": {"type": "date", "format": "epoch_millis"}}}),
                "format",
            ),
            (
                json!({"properties": {"o": {"properties": {"a": {"type": "keyword"}}}}}),
                "[o]",
            ),
            (
                json!({"properties": {"k": {"type": "keyword", "index": false}}}),
                "index",
            ),
            (json!({"properties": {"k": {}}}), "no type"),
            (json!({"dynamic": false}), "dynamic"),
            (json!({"_source": {"enabled": false}}), "_source"),
            (json!({"_routing": {"required": true}}), "_routing"),
            (
                json!({"dynamic_templates": [{"x": {}}]}),
                "dynamic_templates",
            ),
            (json!({"date_detection": true}), "date_detection"),
            (
                json!({"properties": {"id": {"type": "text"}}}),
                "primary key",
            ),
            (json!({"properties": {"a.b": {"type": "keyword"}}}), "a.b"),
            (json!([]), "object"),
        ] {
            let error = schema(mappings.clone()).unwrap_err();
            assert!(error.contains(needle), "{mappings}: {error}");
        }
    }

    #[test]
    fn shards_come_from_settings_nested_or_dotted() {
        let shards =
            |settings: Value| schema_from_index(None, Some(&settings)).map(|schema| schema.shards);
        assert_eq!(shards(json!({"number_of_shards": 3})), Ok(Some(3)));
        assert_eq!(
            shards(json!({"index": {"number_of_shards": "2", "number_of_replicas": 1}})),
            Ok(Some(2))
        );
        assert_eq!(
            shards(json!({"index.number_of_shards": 4, "refresh_interval": "1s"})),
            Ok(Some(4))
        );
        assert_eq!(shards(json!({"analysis": {"analyzer": {}}})), Ok(None));
        assert!(shards(json!({"number_of_shards": 0})).is_err());
        assert!(shards(json!({"number_of_shards": "many"})).is_err());
        assert!(shards(json!("x")).is_err());
    }

    #[test]
    fn field_caps_per_type_and_patterns() {
        let meta = |name: &str, fields: Value| CollectionMeta {
            name: sluice_core::CollectionName::new(name).unwrap(),
            schema: Schema::from_json(json!({ "fields": fields }).to_string().as_bytes()).unwrap(),
            dynamic: false,
            schema_version: 1,
            created_at_ms: 0,
            generation: Default::default(),
            state: Default::default(),
        };
        let a = meta(
            "a",
            json!([{"name": "title", "type": "text"}, {"name": "n", "type": "i64"}]),
        );
        let b = meta("b", json!([{"name": "n", "type": "f64"}]));
        let caps = field_caps_of(&[&a, &b], "title,n*");
        assert_eq!(caps["title"]["text"]["searchable"], true);
        assert_eq!(caps["title"]["text"]["aggregatable"], false);
        assert!(caps["title"]["text"].get("indices").is_none());
        assert_eq!(caps["n"]["long"]["indices"], json!(["a"]));
        assert_eq!(caps["n"]["double"]["indices"], json!(["b"]));
        assert!(caps.get("id").is_none());
        assert!(matches_any("*", "anything") && !matches_any("ti*x", "title"));
    }
}
