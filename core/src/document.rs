//! One NDJSON line in, one validated document (or one coded error) out.
//!
//! The steps, cheapest first so hostile input costs little: size limit, UTF-8, then one
//! JSON parse that refuses duplicate keys and stops at the first array or object nested
//! past the depth limit (before recursing into it), then the schema: types, required
//! fields, defaults, primary key. The accepted document is
//! re-serialized canonically (object keys sorted, compact) and hashed, so the same
//! content always has the same [`ContentHash`] whatever the key order or spacing it was
//! sent with. Error messages name fields, never values, so `personal_data` cannot leak.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ErrorCode;
use crate::ids::DocId;
use crate::schema::{FieldDef, FieldType, Schema};

/// Per-line limits, from the ingest configuration.
#[derive(Clone, Copy, Debug)]
pub struct LineLimits {
    /// Longest line accepted, in bytes.
    pub max_line_bytes: usize,
    /// Deepest nesting of arrays and objects accepted.
    pub max_depth: usize,
}

impl LineLimits {
    /// Refuses a validated document whose stored (canonical) form is over the line limit:
    /// canonical JSON may be longer than the line it came from (`1E9` is stored as
    /// `1000000000.0`), and an update's merge may grow a document, so the limit that keeps
    /// every document within one log message is checked on what is stored as well.
    pub fn check_stored(&self, doc: &ValidDocument) -> Result<(), LineError> {
        if doc.source.len() > self.max_line_bytes {
            return Err(LineError::new(
                ErrorCode::LineTooLarge,
                format!(
                    "the document is {} bytes as stored; the limit is {} bytes",
                    doc.source.len(),
                    self.max_line_bytes
                ),
            ));
        }
        Ok(())
    }
}

impl Default for LineLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Hash of a document's canonical JSON: equal content, equal hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub u128);

impl ContentHash {
    /// Hashes canonical JSON bytes.
    pub fn of(canonical: &[u8]) -> Self {
        Self(xxhash_rust::xxh3::xxh3_128(canonical))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why a line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LineError {
    /// The stable code.
    pub code: ErrorCode,
    /// What is wrong; names fields, never values.
    pub message: String,
}

impl LineError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A document that passed validation.
#[derive(Clone, Debug)]
pub struct ValidDocument {
    /// Its id, given or assigned.
    pub id: DocId,
    /// Whether sluice assigned the id.
    pub id_assigned: bool,
    /// Canonical JSON of the document as stored and returned (id and defaults filled in).
    pub source: Vec<u8>,
    /// Hash of `source`.
    pub hash: ContentHash,
}

/// Parses one line into a JSON object, enforcing the limits, UTF-8 and unique keys.
pub fn parse_line(line: &[u8], limits: &LineLimits) -> Result<Map<String, Value>, LineError> {
    if line.len() > limits.max_line_bytes {
        return Err(LineError::new(
            ErrorCode::LineTooLarge,
            format!(
                "line is {} bytes; the limit is {} bytes",
                line.len(),
                limits.max_line_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        LineError::new(
            ErrorCode::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = UniqueKeysValue {
        depth_left: limits.max_depth,
    }
    .deserialize(&mut deserializer)
    .and_then(|v| deserializer.end().map(|()| v))
    .map_err(|e| {
        let message = e.to_string();
        if message.starts_with(NESTING_TOO_DEEP) || message.starts_with(RECURSION_LIMIT) {
            LineError::new(
                ErrorCode::NestingTooDeep,
                format!("nesting depth exceeds the limit of {}", limits.max_depth),
            )
        } else if message.starts_with(DUPLICATE_KEY) {
            LineError::new(ErrorCode::DuplicateKey, message)
        } else if message.starts_with(NUMBER_OUT_OF_RANGE) {
            // A literal beyond f64 (`1e400`): well-formed JSON, but no number sluice
            // can store.
            LineError::new(ErrorCode::NumberOutOfRange, message)
        } else {
            LineError::new(ErrorCode::MalformedJson, message)
        }
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(LineError::new(
            ErrorCode::NotAnObject,
            "each line must be a JSON object",
        )),
    }
}

const DUPLICATE_KEY: &str = "duplicate key";
/// How the parse reports a container nested deeper than the limit.
const NESTING_TOO_DEEP: &str = "nesting too deep";
/// How serde_json words its own, fixed recursion limit ([`crate::config::MAX_NESTING_DEPTH`]
/// levels), which a configured limit at that maximum reaches first.
const RECURSION_LIMIT: &str = "recursion limit exceeded";
/// How serde_json words a number literal that does not fit an f64.
const NUMBER_OUT_OF_RANGE: &str = "number out of range";

/// Deserializes a JSON value like `serde_json::Value`, but refuses an object that
/// carries the same key twice (serde_json would silently keep the last one) and
/// containers nested deeper than the limit, in the same single pass.
#[derive(Clone, Copy)]
struct UniqueKeysValue {
    /// Containers that may still open below this point.
    depth_left: usize,
}

impl UniqueKeysValue {
    /// The seed for a container's elements, or an error if no container may open here.
    fn enter<E: de::Error>(self) -> Result<UniqueKeysValue, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(UniqueKeysValue { depth_left }),
            None => Err(E::custom(NESTING_TOO_DEEP)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKeysValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeysValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let element = self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(element)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let member = self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(member)?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom(format_args!(
                    "{DUPLICATE_KEY}: an object carries the same key twice"
                )));
            }
        }
        Ok(Value::Object(object))
    }
}

/// Validates a parsed document against `schema`: fills defaults, checks types and
/// required fields, takes the id or assigns one from `assign_id`, and computes the
/// canonical form and hash.
pub fn validate_document(
    schema: &Schema,
    mut doc: Map<String, Value>,
    assign_id: impl FnOnce() -> DocId,
) -> Result<ValidDocument, LineError> {
    check_fields(schema, &mut doc)?;
    let (id, id_assigned) = match doc.get(&schema.primary_key) {
        Some(Value::String(s)) => (DocId::new(s.as_str()), false),
        Some(Value::Number(n)) => (DocId::new(n.to_string()), false),
        Some(Value::Null) | None => {
            let id = assign_id();
            doc.insert(schema.primary_key.clone(), Value::String(id.to_string()));
            (Ok(id), true)
        }
        Some(_) => unreachable!("the primary key's type was checked above"),
    };
    let id = id.map_err(|e| LineError::new(e.code, e.message))?;
    let (source, hash) = canonical_json(&doc);
    Ok(ValidDocument {
        id,
        id_assigned,
        source,
        hash,
    })
}

/// Validates a document whose id comes from outside it (Elasticsearch's `_id`): the same
/// checks as [`validate_document`], but the document is kept as it is, a field named like
/// the primary key included. That field is an ordinary value here: checked against its
/// declared type like any field, neither read as the id nor required to equal it, and
/// the id is not written into the document when it has no such field.
pub fn validate_document_with_id(
    schema: &Schema,
    mut doc: Map<String, Value>,
    id: DocId,
) -> Result<ValidDocument, LineError> {
    check_fields(schema, &mut doc)?;
    let (source, hash) = canonical_json(&doc);
    Ok(ValidDocument {
        id,
        id_assigned: false,
        source,
        hash,
    })
}

/// Fills defaults, checks types and required fields (the primary key is never required:
/// an id is assigned or given when it is absent) and a strict schema's undeclared fields.
fn check_fields(schema: &Schema, doc: &mut Map<String, Value>) -> Result<(), LineError> {
    for field in &schema.fields {
        let present = doc.get(&field.name).is_some_and(|v| !v.is_null());
        if !present {
            if let Some(default) = &field.default {
                doc.insert(field.name.clone(), default.clone());
            } else if field.required && field.name != schema.primary_key {
                return Err(LineError::new(
                    ErrorCode::MissingField,
                    format!("required field {:?} is missing", field.name),
                ));
            }
            continue;
        }
        check_field_value(field, &doc[&field.name])
            .map_err(|(code, message)| LineError::new(code, message))?;
    }
    // Every declared field present was checked above; a strict schema refuses a document
    // carrying more keys than that (found without scanning the field list per key).
    let declared_present = || {
        schema
            .fields
            .iter()
            .filter(|f| doc.contains_key(&f.name))
            .count()
    };
    if schema.strict && declared_present() < doc.len() {
        let declared: HashSet<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        if let Some(unknown) = doc.keys().find(|k| !declared.contains(k.as_str())) {
            return Err(LineError::new(
                ErrorCode::UnknownField,
                format!("field {unknown:?} is not declared in this strict schema"),
            ));
        }
    }
    Ok(())
}

/// Largest scratch buffer a thread keeps between documents.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// The canonical JSON of `doc` (keys sorted, compact) and its hash. Serialized through a
/// per-thread scratch buffer, so a document costs one exact-size allocation instead of
/// a growing vector's reallocations and copies.
fn canonical_json(doc: &Map<String, Value>) -> (Vec<u8>, ContentHash) {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        write_canonical_object(scratch, doc);
        let canonical = (scratch.to_vec(), ContentHash::of(scratch));
        if scratch.capacity() > SCRATCH_KEPT_BYTES {
            *scratch = Vec::new();
        }
        canonical
    })
}

/// Writes `object` exactly as `serde_json::to_writer` does (compact, keys in the map's
/// sorted order), but copies each string that needs no escaping in one piece; serde_json
/// inspects every byte of every string, which made it most of the cost of validation.
fn write_canonical_object(out: &mut Vec<u8>, object: &Map<String, Value>) {
    out.push(b'{');
    for (index, (key, value)) in object.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_canonical_str(out, key);
        out.push(b':');
        write_canonical(out, value);
    }
    out.push(b'}');
}

/// [`write_canonical_object`] for any value. Recursion is bounded by the nesting limit.
fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            serde_json::to_writer(&mut *out, number).expect("a JSON number always serializes")
        }
        Value::String(string) => write_canonical_str(out, string),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(object) => write_canonical_object(out, object),
    }
}

/// A JSON string as serde_json writes it: verbatim between quotes unless some byte needs
/// an escape, in which case serde_json writes it.
fn write_canonical_str(out: &mut Vec<u8>, string: &str) {
    if needs_escaping(string.as_bytes()) {
        serde_json::to_writer(&mut *out, string).expect("a string always serializes");
    } else {
        out.reserve(string.len() + 2);
        out.push(b'"');
        out.extend_from_slice(string.as_bytes());
        out.push(b'"');
    }
}

/// Whether serde_json would escape any of `bytes`: control characters, `"` and `\`.
/// Branch-free within 32-byte chunks, so the usual case (nothing to escape) vectorizes.
fn needs_escaping(bytes: &[u8]) -> bool {
    let escaped = |byte: &u8| (*byte < 0x20) | (*byte == b'"') | (*byte == b'\\');
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, byte| any | escaped(byte)) {
            return true;
        }
    }
    chunks.remainder().iter().any(escaped)
}

/// Checks one non-null value against its field definition. The error names the field
/// and the expected type, never the value.
pub fn check_field_value(field: &FieldDef, value: &Value) -> Result<(), (ErrorCode, String)> {
    match value {
        Value::Array(items) if field.array => {
            items.iter().try_for_each(|item| check_scalar(field, item))
        }
        Value::Array(_) if field.field_type != FieldType::Json => Err((
            ErrorCode::WrongType,
            format!(
                "field {:?}: expected a single {}, got an array",
                field.name,
                field.field_type.as_str()
            ),
        )),
        scalar => check_scalar(field, scalar),
    }
}

fn check_scalar(field: &FieldDef, value: &Value) -> Result<(), (ErrorCode, String)> {
    let wrong_type = || {
        Err((
            ErrorCode::WrongType,
            format!(
                "field {:?}: expected {}",
                field.name,
                describe_type(field.field_type)
            ),
        ))
    };
    let out_of_range = || {
        Err((
            ErrorCode::NumberOutOfRange,
            format!(
                "field {:?}: number does not fit {}",
                field.name,
                field.field_type.as_str()
            ),
        ))
    };
    match (field.field_type, value) {
        (FieldType::Json, _) => Ok(()),
        (FieldType::String | FieldType::Text | FieldType::Keyword, Value::String(_)) => Ok(()),
        (FieldType::Bool, Value::Bool(_)) => Ok(()),
        (FieldType::F64, Value::Number(_)) => Ok(()),
        (FieldType::I64, Value::Number(n)) => {
            if n.is_i64() {
                Ok(())
            } else if n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                out_of_range()
            } else {
                wrong_type()
            }
        }
        (FieldType::U64, Value::Number(n)) => {
            if n.is_u64() {
                Ok(())
            } else if n.is_i64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                out_of_range()
            } else {
                wrong_type()
            }
        }
        (FieldType::Datetime, Value::String(s)) => {
            match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
                Ok(_) => Ok(()),
                Err(_) => wrong_type(),
            }
        }
        (FieldType::Datetime, Value::Number(n)) => {
            if n.is_i64() {
                Ok(())
            } else {
                wrong_type()
            }
        }
        _ => wrong_type(),
    }
}

fn describe_type(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String | FieldType::Text | FieldType::Keyword => "a string",
        FieldType::I64 => "an integer (i64)",
        FieldType::U64 => "a non-negative integer (u64)",
        FieldType::F64 => "a number",
        FieldType::Bool => "true or false",
        FieldType::Datetime => "an RFC 3339 date-time string or integer epoch seconds",
        FieldType::Json => "any JSON value",
    }
}

/// The number of distinct field paths in `doc`, counted as Elasticsearch counts mapped
/// fields: every object key at every depth is one (`{"a": {"b": 1}}` has `a` and `a.b`),
/// arrays add none of their own and the objects inside one array share their paths
/// (`{"a": [{"b": 1}, {"b": 2}]}` has two). Counting stops once it passes `stop_above`,
/// so the cost is linear in the document and bounded by the limit checked.
pub fn field_paths(doc: &Map<String, Value>, stop_above: usize) -> usize {
    let mut counter = PathCounter {
        count: 0,
        stop_above,
        seen_in_arrays: HashSet::new(),
    };
    counter.object(doc, 0, true);
    counter.count.min(stop_above.saturating_add(1))
}

/// Counts paths by a hash chained from parent to child. Outside arrays every path is
/// unique (keys of one object are, and duplicate keys are refused at parse), so only
/// paths below an array go through the set.
struct PathCounter {
    count: usize,
    stop_above: usize,
    seen_in_arrays: HashSet<u64>,
}

impl PathCounter {
    fn object(&mut self, object: &Map<String, Value>, parent: u64, unique: bool) {
        for (key, value) in object {
            if self.count > self.stop_above {
                return;
            }
            let path = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), parent);
            if unique || self.seen_in_arrays.insert(path) {
                self.count += 1;
            }
            self.value(value, path, unique);
        }
    }

    fn value(&mut self, value: &Value, path: u64, unique: bool) {
        match value {
            Value::Object(object) => self.object(object, path, unique),
            Value::Array(items) => {
                for item in items {
                    self.value(item, path, false);
                }
            }
            _ => {}
        }
    }
}

/// Refuses (`too_many_fields`) a document that would take its collection past
/// `max_fields`: the schema's declared fields plus every path of the document that is
/// not a declared field (an undeclared top-level key, and any nested path, a declared
/// `json` field's included). Dynamic fields are counted per document: they do not grow
/// the schema, so one document's undeclared fields never count against another's.
pub fn check_field_count(
    schema: &Schema,
    doc: &Map<String, Value>,
    max_fields: usize,
) -> Result<(), LineError> {
    let declared = schema.fields.len();
    let paths = field_paths(doc, max_fields.saturating_add(declared));
    // Cheap common case: within the limit even if no path were a declared field.
    if declared.saturating_add(paths) <= max_fields {
        return Ok(());
    }
    let carried_declared = schema
        .fields
        .iter()
        .filter(|f| doc.contains_key(&f.name))
        .count();
    if declared + paths - carried_declared > max_fields {
        return Err(LineError::new(
            ErrorCode::TooManyFields,
            format!(
                "the document's fields (nested paths counted) and the {declared} fields the \
                 schema declares come to more than {max_fields}, the most a collection may have"
            ),
        ));
    }
    Ok(())
}

/// Parses a `datetime` field value into seconds and nanoseconds since the Unix epoch.
pub fn datetime_to_unix_nanos(value: &Value) -> Option<i128> {
    match value {
        Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp_nanos())
        }
        Value::Number(n) => n.as_i64().map(|secs| i128::from(secs) * 1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_longer_once_stored_than_allowed_is_too_large() {
        let limits = LineLimits {
            max_line_bytes: 40,
            max_depth: 8,
        };
        let schema = Schema::dynamic();
        let line = br#"{"id":"a","n":[1E9,1E9,1E9]}"#;
        let doc = parse_line(line, &limits).unwrap();
        let valid = validate_document(&schema, doc, DocId::generate).unwrap();
        assert!(line.len() <= 40 && valid.source.len() > 40);
        assert_eq!(
            limits.check_stored(&valid).unwrap_err().code,
            ErrorCode::LineTooLarge
        );
        let small = validate_document(
            &schema,
            parse_line(br#"{"id":"b"}"#, &limits).unwrap(),
            DocId::generate,
        )
        .unwrap();
        assert!(limits.check_stored(&small).is_ok());
    }

    #[test]
    fn a_given_id_leaves_the_document_as_sent() {
        let schema = Schema::dynamic();
        let limits = LineLimits::default();
        let id = DocId::new("from-outside").unwrap();
        let doc = parse_line(br#"{"id":"own","x":1}"#, &limits).unwrap();
        let valid = validate_document_with_id(&schema, doc, id.clone()).unwrap();
        assert_eq!(valid.id, id);
        assert_eq!(valid.source, br#"{"id":"own","x":1}"#);
        let doc = parse_line(br#"{"x":1}"#, &limits).unwrap();
        let valid = validate_document_with_id(&schema, doc, id.clone()).unwrap();
        assert_eq!(valid.source, br#"{"x":1}"#, "no id added");
        // A primary-key-named value that is no valid id is an ordinary value here...
        let long = format!(
            r#"{{"id":"{}"}}"#,
            "x".repeat(crate::ids::MAX_DOC_ID_BYTES + 1)
        );
        let doc = parse_line(long.as_bytes(), &limits).unwrap();
        assert!(validate_document_with_id(&schema, doc.clone(), id.clone()).is_ok());
        assert!(validate_document(&schema, doc, DocId::generate).is_err());
        // ...but still checked against the field's declared type.
        let doc = parse_line(br#"{"id":{"nested":true}}"#, &limits).unwrap();
        assert_eq!(
            validate_document_with_id(&schema, doc, id)
                .unwrap_err()
                .code,
            ErrorCode::WrongType
        );
    }

    fn corpus_schema() -> Schema {
        Schema::from_json(
            br#"{"primary_key":"id","fields":[
            {"name":"id","type":"string"},{"name":"title","type":"text"},
            {"name":"body","type":"text"},
            {"name":"tags","type":"keyword","array":true,"required":false},
            {"name":"author","type":"keyword"},{"name":"ts","type":"datetime"},
            {"name":"price","type":"i64","required":false,"default":0},
            {"name":"email","type":"keyword","required":false,"annotations":["personal_data"]}]}"#,
        )
        .unwrap()
    }

    fn check(line: &str) -> Result<ValidDocument, LineError> {
        let map = parse_line(line.as_bytes(), &LineLimits::default())?;
        validate_document(&corpus_schema(), map, DocId::generate)
    }

    const GOOD: &str = r#"{"id":"doc-1","title":"a b","body":"c d","tags":["t1"],"author":"x","ts":"2026-01-01T00:00:00Z","price":5}"#;

    #[test]
    fn accepts_a_corpus_document() {
        let doc = check(GOOD).unwrap();
        assert_eq!(doc.id.as_str(), "doc-1");
        assert!(!doc.id_assigned);
    }

    #[test]
    fn hash_ignores_key_order_and_spacing() {
        let a = check(GOOD).unwrap();
        let b = check(r#"{ "price":5, "ts":"2026-01-01T00:00:00Z","author":"x","tags":["t1"],"body":"c d","title":"a b","id":"doc-1"}"#).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.source, b.source);
        assert!(
            a.source.starts_with(br#"{"author":"x","body""#),
            "keys sorted"
        );
        let c = check(&GOOD.replace("c d", "c e")).unwrap();
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn assigns_uuid_v7_ids_and_fills_defaults() {
        let doc = check(r#"{"title":"a","body":"b","author":"x","ts":0}"#).unwrap();
        assert!(doc.id_assigned);
        let stored: Value = serde_json::from_slice(&doc.source).unwrap();
        assert_eq!(stored["id"], doc.id.as_str());
        assert_eq!(stored["price"], 0);
        assert_eq!(
            uuid::Uuid::parse_str(doc.id.as_str())
                .unwrap()
                .get_version_num(),
            7
        );
    }

    #[test]
    fn each_kind_of_bad_line_has_its_code() {
        let cases = [
            (r#"{"id":"1","title":"#.to_owned(), ErrorCode::MalformedJson),
            ("[1,2]".to_owned(), ErrorCode::NotAnObject),
            (
                GOOD.replace(r#""price":5"#, r#""price":"5""#),
                ErrorCode::WrongType,
            ),
            (
                GOOD.replace(r#""price":5"#, r#""price":1.5"#),
                ErrorCode::WrongType,
            ),
            (
                GOOD.replace(r#""price":5"#, r#""price":9223372036854775808"#),
                ErrorCode::NumberOutOfRange,
            ),
            (
                GOOD.replace(r#""price":5"#, r#""price":1e300"#),
                ErrorCode::NumberOutOfRange,
            ),
            (
                GOOD.replace(r#""price":5"#, r#""price":5,"extra":-1e400"#),
                ErrorCode::NumberOutOfRange,
            ),
            (
                GOOD.replace(r#""author":"x","#, ""),
                ErrorCode::MissingField,
            ),
            (
                GOOD.replace(r#""author":"x""#, r#""author":null"#),
                ErrorCode::MissingField,
            ),
            (
                GOOD.replace(r#""ts":"2026-01-01T00:00:00Z""#, r#""ts":"yesterday""#),
                ErrorCode::WrongType,
            ),
            (
                GOOD.replace(r#""price":5"#, r#""price":5,"price":6"#),
                ErrorCode::DuplicateKey,
            ),
            (GOOD.replace(r#""doc-1""#, r#""""#), ErrorCode::InvalidId),
            (GOOD.replace(r#""doc-1""#, r#"true"#), ErrorCode::WrongType),
            (
                GOOD.replace(r#""author":"x""#, r#""author":["x"]"#),
                ErrorCode::WrongType,
            ),
        ];
        for (line, code) in cases {
            assert_eq!(check(&line).unwrap_err().code, code, "{line}");
        }
        let err = parse_line(b"{\"a\":\"\xff\"}", &LineLimits::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidUtf8);
    }

    #[test]
    fn line_size_and_nesting_limits_are_enforced() {
        let limits = LineLimits {
            max_line_bytes: 64,
            max_depth: 8,
        };
        let long = format!(r#"{{"a":"{}"}}"#, "x".repeat(100));
        assert_eq!(
            parse_line(long.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::LineTooLarge
        );
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let limits = LineLimits {
            max_line_bytes: 1 << 20,
            max_depth: 8,
        };
        assert_eq!(
            parse_line(deep.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::NestingTooDeep
        );
        let braces_in_string = r#"{"a":"[[[[[[[[[[[[[[[[[[["}"#;
        assert!(parse_line(braces_in_string.as_bytes(), &limits).is_ok());
        let at_limit = format!("{}{}", "[".repeat(7), "]".repeat(7));
        let object_at_limit = format!(r#"{{"a":{at_limit}}}"#);
        assert!(parse_line(object_at_limit.as_bytes(), &limits).is_ok());
        let past_limit = format!(r#"{{"a":[{at_limit}]}}"#);
        assert_eq!(
            parse_line(past_limit.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::NestingTooDeep
        );
    }

    #[test]
    fn the_deepest_configurable_nesting_parses() {
        let limits = LineLimits {
            max_line_bytes: 1 << 20,
            max_depth: crate::config::MAX_NESTING_DEPTH,
        };
        let inner = crate::config::MAX_NESTING_DEPTH - 1;
        let deepest = format!(r#"{{"a":{}{}}}"#, "[".repeat(inner), "]".repeat(inner));
        assert!(parse_line(deepest.as_bytes(), &limits).is_ok());
        let deeper = format!(
            r#"{{"a":{}{}}}"#,
            "[".repeat(inner + 1),
            "]".repeat(inner + 1)
        );
        assert_eq!(
            parse_line(deeper.as_bytes(), &limits).unwrap_err().code,
            ErrorCode::NestingTooDeep
        );
    }

    #[test]
    fn errors_never_echo_values() {
        let line = GOOD.replace(r#""author":"x""#, r#""author":"x","email":42"#);
        let err = check(&line).unwrap_err();
        assert_eq!(err.code, ErrorCode::WrongType);
        assert!(err.message.contains("email") && !err.message.contains("42"));
    }

    #[test]
    fn field_paths_count_nested_keys_once_and_arrays_share_theirs() {
        let paths = |text: &str| {
            field_paths(
                &parse_line(text.as_bytes(), &LineLimits::default()).unwrap(),
                100,
            )
        };
        assert_eq!(paths(r#"{}"#), 0);
        assert_eq!(paths(r#"{"a":1,"b":[1,2,3]}"#), 2);
        assert_eq!(paths(r#"{"a":{"b":1,"c":{"d":null}}}"#), 4);
        assert_eq!(paths(r#"{"a":[{"b":1},{"b":2,"c":3},[{"b":4}]]}"#), 3);
        // The same key under different parents is a different path.
        assert_eq!(paths(r#"{"a":{"x":1},"b":{"x":1},"x":1}"#), 5);
        let wide: Map<String, Value> = (0..1_000).map(|k| (format!("k{k}"), Value::Null)).collect();
        assert_eq!(field_paths(&wide, 10), 11, "counting stops past the bound");
    }

    #[test]
    fn documents_past_the_field_limit_are_refused_with_their_code() {
        let schema = corpus_schema();
        let declared = schema.fields.len();
        let doc = |extra: usize| -> Map<String, Value> {
            let mut doc = parse_line(br#"{"id":"d","title":"t"}"#, &LineLimits::default()).unwrap();
            for k in 0..extra {
                doc.insert(format!("x{k}"), Value::from(k));
            }
            doc
        };
        // Declared fields the document carries are counted once.
        assert!(check_field_count(&schema, &doc(10 - declared), 10).is_ok());
        let refused = check_field_count(&schema, &doc(11 - declared), 10).unwrap_err();
        assert_eq!(refused.code, ErrorCode::TooManyFields);
        assert!(!refused.message.contains("x0"), "{}", refused.message);
        // Nested paths of an undeclared object count too.
        let mut nested = doc(0);
        let inner: Map<String, Value> = (0..10).map(|k| (format!("k{k}"), Value::Null)).collect();
        nested.insert("o".into(), Value::Object(inner));
        assert!(check_field_count(&schema, &nested, declared + 10).is_err());
        assert!(check_field_count(&schema, &nested, declared + 11).is_ok());
    }

    #[test]
    fn strict_schemas_refuse_unknown_fields() {
        let mut schema = corpus_schema();
        let doc = parse_line(
            GOOD.replace(r#""price":5"#, r#""price":5,"extra":1"#)
                .as_bytes(),
            &LineLimits::default(),
        )
        .unwrap();
        assert!(validate_document(&schema, doc.clone(), DocId::generate).is_ok());
        schema.strict = true;
        assert_eq!(
            validate_document(&schema, doc, DocId::generate)
                .unwrap_err()
                .code,
            ErrorCode::UnknownField
        );
    }
}

#[cfg(test)]
mod properties {
    //! Property tests: hostile bytes never panic the line parser and always get a parse
    //! code; generated valid documents round-trip; broken ones get the right code.

    use proptest::prelude::*;

    use super::*;

    /// The codes [`parse_line`] may answer (schema codes come later, from validation).
    const PARSE_CODES: [ErrorCode; 7] = [
        ErrorCode::LineTooLarge,
        ErrorCode::InvalidUtf8,
        ErrorCode::NestingTooDeep,
        ErrorCode::MalformedJson,
        ErrorCode::DuplicateKey,
        ErrorCode::NumberOutOfRange,
        ErrorCode::NotAnObject,
    ];

    fn limits() -> LineLimits {
        LineLimits {
            max_line_bytes: 4096,
            max_depth: 8,
        }
    }

    /// Token soup close enough to JSON to reach deep into the parser.
    fn json_ish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"",
            "\"a\"",
            "\"id\"",
            "1",
            "-0",
            "1e400",
            "-1e-400",
            "18446744073709551616",
            "0.5",
            "true",
            "null",
            "\\",
            "\\u0000",
            "\\ud800",
            " ",
            "\0",
            "\u{ff}",
            "é",
        ]);
        prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat().into_bytes())
    }

    /// Any JSON value whose numbers survive a text round trip exactly.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1_000_000i32..1_000_000).prop_map(|n| Value::from(f64::from(n) / 8.0)),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn corpus_schema() -> Schema {
        Schema::from_json(
            br#"{"primary_key":"id","fields":[
            {"name":"id","type":"string"},{"name":"title","type":"text"},
            {"name":"tags","type":"keyword","array":true,"required":false},
            {"name":"ts","type":"datetime"},
            {"name":"price","type":"i64","required":false,"default":0},
            {"name":"size","type":"u64","required":false},
            {"name":"ratio","type":"f64","required":false},
            {"name":"ok","type":"bool","required":false},
            {"name":"extra","type":"json","required":false}]}"#,
        )
        .unwrap()
    }

    /// Documents valid under [`corpus_schema`].
    fn valid_doc() -> impl Strategy<Value = Map<String, Value>> {
        (
            "[a-zA-Z0-9._-]{1,40}",
            any::<String>(),
            prop::option::of(prop::collection::vec(any::<String>(), 0..4)),
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                (0i64..4_000_000_000).prop_map(|secs| {
                    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
                    Value::from(
                        t.format(&time::format_description::well_known::Rfc3339)
                            .unwrap(),
                    )
                }),
            ],
            prop::option::of(any::<i64>()),
            prop::option::of(any::<u64>()),
            prop::option::of(-1_000_000i32..1_000_000),
            prop::option::of(any::<bool>()),
            prop::option::of(json_value()),
        )
            .prop_map(|(id, title, tags, ts, price, size, ratio, ok, extra)| {
                let mut doc = Map::new();
                doc.insert("id".into(), id.into());
                doc.insert("title".into(), title.into());
                doc.insert("ts".into(), ts);
                if let Some(tags) = tags {
                    doc.insert("tags".into(), tags.into());
                }
                if let Some(price) = price {
                    doc.insert("price".into(), price.into());
                }
                if let Some(size) = size {
                    doc.insert("size".into(), size.into());
                }
                if let Some(ratio) = ratio {
                    doc.insert("ratio".into(), (f64::from(ratio) / 4.0).into());
                }
                if let Some(ok) = ok {
                    doc.insert("ok".into(), ok.into());
                }
                if let Some(extra) = extra {
                    doc.insert("extra".into(), extra);
                }
                doc
            })
    }

    /// A value of the wrong type for each typed field of [`corpus_schema`].
    fn wrong_value(field: &str) -> Value {
        match field {
            "title" => Value::from(7),
            "tags" => serde_json::json!([1]),
            "ts" => Value::from("not a date"),
            "price" => Value::from(1.5),
            "size" => Value::from("12"),
            "ratio" => Value::from(true),
            _ => Value::from("yes"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_and_get_a_parse_code(
            bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), json_ish()]
        ) {
            if let Err(e) = parse_line(&bytes, &limits()) {
                prop_assert!(PARSE_CODES.contains(&e.code), "{:?}", e);
            }
        }

        #[test]
        fn canonical_json_is_byte_for_byte_what_serde_json_writes(
            object in prop::collection::btree_map(
                prop_oneof![any::<String>(), "[a-z\"\\\\\\x00-\\x1f\\x7f\u{e9}]{0,70}"],
                prop_oneof![
                    json_value(),
                    "[a-z \"\\\\\\x00-\\x1f\\x7f\u{e9}\u{1F600}]{0,100}".prop_map(Value::from),
                ],
                0..8,
            )
        ) {
            let object: Map<String, Value> = object.into_iter().collect();
            let mut written = Vec::new();
            write_canonical_object(&mut written, &object);
            prop_assert_eq!(written, serde_json::to_vec(&object).unwrap());
        }

        #[test]
        fn any_object_within_the_limits_parses_to_itself(
            object in prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..8)
        ) {
            let value = Value::Object(object.into_iter().collect());
            let line = serde_json::to_vec(&value).unwrap();
            let limits = LineLimits { max_line_bytes: 1 << 20, max_depth: 64 };
            let parsed = parse_line(&line, &limits).unwrap();
            prop_assert_eq!(Value::Object(parsed.clone()), value);
            // Under a dynamic schema every such object is a document, with its id assigned
            // unless it brought a usable one.
            let valid = validate_document(&Schema::dynamic(), parsed.clone(), DocId::generate);
            match parsed.get("id") {
                None | Some(Value::Null) => prop_assert!(valid.unwrap().id_assigned),
                Some(Value::String(s)) if DocId::new(s.as_str()).is_ok() => {
                    let valid = valid.unwrap();
                    prop_assert_eq!(valid.id.as_str(), s.as_str());
                }
                Some(_) => prop_assert!(valid.is_err()),
            }
        }

        #[test]
        fn valid_documents_round_trip_whatever_the_key_order(doc in valid_doc()) {
            let schema = corpus_schema();
            let line = serde_json::to_vec(&doc).unwrap();
            let parsed = parse_line(&line, &LineLimits::default()).unwrap();
            let valid = validate_document(&schema, parsed, DocId::generate).unwrap();
            prop_assert!(!valid.id_assigned);
            prop_assert_eq!(valid.id.as_str(), doc["id"].as_str().unwrap());
            let mut expected = doc.clone();
            expected.entry("price").or_insert(Value::from(0));
            let stored: Map<String, Value> = serde_json::from_slice(&valid.source).unwrap();
            prop_assert_eq!(&stored, &expected);
            prop_assert_eq!(ContentHash::of(&valid.source), valid.hash);
            // Reversed key order and extra spacing: the same canonical bytes and hash.
            let reversed: Vec<String> = doc
                .iter()
                .rev()
                .map(|(k, v)| format!("{} : {}", Value::from(k.as_str()), v))
                .collect();
            let line = format!("{{ {} }}", reversed.join(" ,\t"));
            let again = validate_document(
                &schema,
                parse_line(line.as_bytes(), &LineLimits::default()).unwrap(),
                DocId::generate,
            )
            .unwrap();
            prop_assert_eq!(again.source, valid.source);
            prop_assert_eq!(again.hash, valid.hash);
        }

        #[test]
        fn broken_documents_get_the_right_code(
            doc in valid_doc(),
            field in prop::sample::select(vec!["title", "tags", "ts", "price", "size", "ratio", "ok"]),
            drop_it in any::<bool>(),
        ) {
            let schema = corpus_schema();
            let mut broken = doc;
            let expected = if drop_it && matches!(field, "title" | "ts") {
                broken.remove(field);
                ErrorCode::MissingField
            } else {
                broken.insert(field.to_owned(), wrong_value(field));
                ErrorCode::WrongType
            };
            let line = serde_json::to_vec(&broken).unwrap();
            let parsed = parse_line(&line, &LineLimits::default()).unwrap();
            let err = validate_document(&schema, parsed, DocId::generate).unwrap_err();
            prop_assert_eq!(err.code, expected, "{}", err.message);
        }
    }
}
