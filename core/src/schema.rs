//! Collection schemas: the document users PUT, its validation, dynamic inference, and
//! the rules for changing a schema without breaking stored data.
//!
//! A schema names the primary key and declares fields with a type. Fields a document
//! carries that the schema does not declare are kept in the document and indexed as
//! dynamic JSON, unless the schema is `strict`, in which case they are refused.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;

/// Annotation marking a field whose values must never appear in logs, metrics or errors.
pub const PERSONAL_DATA: &str = "personal_data";
/// Tokenizers a `text` field may name.
pub const TOKENIZERS: [&str; 4] = ["default", "raw", "en_stem", "whitespace"];
/// Most shards one collection may have.
pub const MAX_SHARDS: u32 = 256;

/// A field's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// An exact, id-like string: indexed untokenized.
    String,
    /// Tokenized full text.
    Text,
    /// An exact string, filterable and sortable.
    Keyword,
    /// A signed 64-bit integer.
    I64,
    /// An unsigned 64-bit integer.
    U64,
    /// A 64-bit float.
    F64,
    /// `true` or `false`.
    Bool,
    /// RFC 3339 string or integer seconds since the Unix epoch.
    Datetime,
    /// Any JSON value, indexed as dynamic JSON.
    Json,
}

impl FieldType {
    /// The type's name in schema documents.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Text => "text",
            FieldType::Keyword => "keyword",
            FieldType::I64 => "i64",
            FieldType::U64 => "u64",
            FieldType::F64 => "f64",
            FieldType::Bool => "bool",
            FieldType::Datetime => "datetime",
            FieldType::Json => "json",
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_primary_key() -> String {
    "id".to_owned()
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// One declared field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// The field's name in documents.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Whether the value is an array of `type` (a single value is accepted too).
    #[serde(default, skip_serializing_if = "is_false")]
    pub array: bool,
    /// Whether a document must carry the field (non-null). Defaults to true; a field with
    /// a `default` is filled in instead of refused.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub required: bool,
    /// Value used when the document does not carry the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Free-form markers; `personal_data` keeps values out of logs, metrics and errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Tokenizer for `text` fields (`default` unless named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

impl FieldDef {
    /// A field of `field_type`, required, with no default.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        Self {
            name: name.into(),
            field_type,
            array: false,
            required: true,
            default: None,
            annotations: Vec::new(),
            tokenizer: None,
        }
    }

    /// Whether the field is annotated `personal_data`.
    pub fn is_personal_data(&self) -> bool {
        self.annotations.iter().any(|a| a == PERSONAL_DATA)
    }

    /// The tokenizer a `text` field uses.
    pub fn tokenizer(&self) -> &str {
        self.tokenizer.as_deref().unwrap_or("default")
    }
}

/// A collection schema document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// What the collection holds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The field whose value is the document id.
    #[serde(default = "default_primary_key")]
    pub primary_key: String,
    /// Declared fields.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// Refuse documents with fields the schema does not declare.
    #[serde(default, skip_serializing_if = "is_false")]
    pub strict: bool,
    /// Index shards (and log partitions); fixed when the collection is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
}

/// Why a schema document or a schema change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaError {
    /// `invalid_schema` or `incompatible_schema`.
    pub code: ErrorCode,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl SchemaError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidSchema,
            message: message.into(),
        }
    }

    fn incompatible(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::IncompatibleSchema,
            message: message.into(),
        }
    }
}

/// Whether `name` may name a field: 1-128 characters of letters, digits, `_` and `-`, not
/// starting with `_` (reserved for sluice's own index fields).
pub fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Schema {
    /// A schema declaring only the primary key, for collections created on first ingest.
    pub fn dynamic() -> Self {
        Self {
            description: String::new(),
            primary_key: default_primary_key(),
            fields: vec![FieldDef::new("id", FieldType::String)],
            strict: false,
            shards: None,
        }
    }

    /// Parses and validates a schema document.
    pub fn from_json(body: &[u8]) -> Result<Self, SchemaError> {
        let mut schema: Schema = serde_json::from_slice(body)
            .map_err(|e| SchemaError::invalid(format!("schema document: {e}")))?;
        schema.normalize_and_validate()?;
        Ok(schema)
    }

    /// Adds the primary key field when it is not declared, then checks every rule.
    pub fn normalize_and_validate(&mut self) -> Result<(), SchemaError> {
        if !is_valid_field_name(&self.primary_key) {
            return Err(SchemaError::invalid(format!(
                "primary_key {:?} is not a valid field name",
                self.primary_key
            )));
        }
        if self.field(&self.primary_key).is_none() {
            self.fields.insert(
                0,
                FieldDef::new(self.primary_key.clone(), FieldType::String),
            );
        }
        let mut seen = HashSet::new();
        for field in &self.fields {
            if !is_valid_field_name(&field.name) {
                return Err(SchemaError::invalid(format!(
                    "field name {:?}: use 1-128 letters, digits, '_' or '-', not starting with '_'",
                    field.name
                )));
            }
            if !seen.insert(field.name.as_str()) {
                return Err(SchemaError::invalid(format!(
                    "field {:?} is declared twice",
                    field.name
                )));
            }
            if let Some(tokenizer) = &field.tokenizer {
                if field.field_type != FieldType::Text {
                    return Err(SchemaError::invalid(format!(
                        "field {:?}: only text fields take a tokenizer",
                        field.name
                    )));
                }
                if !TOKENIZERS.contains(&tokenizer.as_str()) {
                    return Err(SchemaError::invalid(format!(
                        "field {:?}: unknown tokenizer {tokenizer:?} (known: {})",
                        field.name,
                        TOKENIZERS.join(", ")
                    )));
                }
            }
            if let Some(annotation) = field.annotations.iter().find(|a| *a != PERSONAL_DATA) {
                return Err(SchemaError::invalid(format!(
                    "field {:?}: unknown annotation {annotation:?} (known: {PERSONAL_DATA})",
                    field.name
                )));
            }
            if let Some(default) = &field.default {
                if let Err(message) = crate::document::check_field_value(field, default) {
                    return Err(SchemaError::invalid(format!(
                        "field {:?}: default does not match its type: {}",
                        field.name, message.1
                    )));
                }
            }
        }
        let pk = self.primary_key_field();
        if pk.array
            || !matches!(
                pk.field_type,
                FieldType::String | FieldType::Keyword | FieldType::I64 | FieldType::U64
            )
        {
            return Err(SchemaError::invalid(format!(
                "primary key {:?} must be a single string, keyword, i64 or u64",
                pk.name
            )));
        }
        if let Some(shards) = self.shards {
            if shards == 0 || shards > MAX_SHARDS {
                return Err(SchemaError::invalid(format!(
                    "shards must be between 1 and {MAX_SHARDS}"
                )));
            }
        }
        Ok(())
    }

    /// The declared field `name`.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The primary key's field definition.
    ///
    /// # Panics
    /// On a schema that did not go through [`Schema::normalize_and_validate`].
    pub fn primary_key_field(&self) -> &FieldDef {
        self.field(&self.primary_key)
            .expect("validated schemas declare their primary key")
    }

    /// Checks that `self` can replace `old` without breaking documents already stored
    /// or indexed: same primary key and shards, no field removed or retyped, no field
    /// made required without a default, strictness only relaxed.
    pub fn check_compatible_with(&self, old: &Schema) -> Result<(), SchemaError> {
        if self.primary_key != old.primary_key {
            return Err(SchemaError::incompatible(format!(
                "the primary key cannot change (it is {:?})",
                old.primary_key
            )));
        }
        if self.shards.is_some() && self.shards != old.shards {
            return Err(SchemaError::incompatible(
                "the number of shards is fixed when a collection is created",
            ));
        }
        if self.strict && !old.strict {
            return Err(SchemaError::incompatible(
                "a schema cannot become strict: stored documents may carry undeclared fields",
            ));
        }
        let new_fields: std::collections::HashMap<&str, &FieldDef> =
            self.fields.iter().map(|f| (f.name.as_str(), f)).collect();
        let old_names: HashSet<&str> = old.fields.iter().map(|f| f.name.as_str()).collect();
        for old_field in &old.fields {
            let Some(&new_field) = new_fields.get(old_field.name.as_str()) else {
                return Err(SchemaError::incompatible(format!(
                    "field {:?} cannot be removed",
                    old_field.name
                )));
            };
            if new_field.field_type != old_field.field_type
                || new_field.array != old_field.array
                || new_field.tokenizer() != old_field.tokenizer()
            {
                return Err(SchemaError::incompatible(format!(
                    "field {:?} cannot change its type, array-ness or tokenizer",
                    old_field.name
                )));
            }
            if new_field.required && !old_field.required && new_field.default.is_none() {
                return Err(SchemaError::incompatible(format!(
                    "field {:?} cannot become required without a default",
                    old_field.name
                )));
            }
        }
        for new_field in &self.fields {
            if !old_names.contains(new_field.name.as_str())
                && new_field.required
                && new_field.default.is_none()
            {
                return Err(SchemaError::incompatible(format!(
                    "new field {:?} must be optional or have a default: stored documents lack it",
                    new_field.name
                )));
            }
        }
        Ok(())
    }

    /// Extends a dynamic schema with the fields of `doc` it does not declare, inferring
    /// their types. Returns whether anything was added. Inferred fields are optional.
    ///
    /// Linear in the document's and the schema's size: declared names are looked up in a
    /// set, not by scanning the field list once per document field.
    pub fn infer_from(&mut self, doc: &serde_json::Map<String, Value>) -> bool {
        let mut added = false;
        let mut declared: HashSet<String> = self.fields.iter().map(|f| f.name.clone()).collect();
        for (name, value) in doc {
            if declared.contains(name) || !is_valid_field_name(name) {
                continue;
            }
            let (field_type, array) = match value {
                Value::Array(items) => match items.iter().find(|v| !v.is_null()) {
                    Some(first) => (infer_scalar(first), true),
                    None => continue,
                },
                Value::Null => continue,
                scalar => (infer_scalar(scalar), false),
            };
            let mut field = FieldDef::new(name.clone(), field_type);
            field.array = array;
            field.required = false;
            self.fields.push(field);
            declared.insert(name.clone());
            added = true;
        }
        added
    }
}

fn infer_scalar(value: &Value) -> FieldType {
    match value {
        Value::Bool(_) => FieldType::Bool,
        Value::Number(n) if n.is_i64() => FieldType::I64,
        Value::Number(n) if n.is_u64() => FieldType::U64,
        Value::Number(_) => FieldType::F64,
        Value::String(_) => FieldType::Text,
        _ => FieldType::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"description": "...", "primary_key": "id",
 "fields": [{"name": "id", "type": "string"},
            {"name": "title", "type": "text"},
            {"name": "tags", "type": "keyword", "array": true, "required": false},
            {"name": "ts", "type": "datetime"},
            {"name": "price", "type": "i64", "required": false, "default": 0},
            {"name": "email", "type": "keyword", "annotations": ["personal_data"]}]}"#;

    #[test]
    fn parses_the_design_example() {
        let schema = Schema::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(schema.fields.len(), 6);
        assert!(schema.field("email").unwrap().is_personal_data());
        assert!(!schema.field("tags").unwrap().required);
        assert!(schema.field("title").unwrap().required);
    }

    #[test]
    fn refuses_bad_schemas_with_clear_messages() {
        for (body, needle) in [
            (
                r#"{"fields":[{"name":"a","type":"nope"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"fields":[{"name":"a","type":"text"},{"name":"a","type":"text"}]}"#,
                "twice",
            ),
            (r#"{"fields":[{"name":"_a","type":"text"}]}"#, "field name"),
            (
                r#"{"fields":[{"name":"n","type":"i64","default":"x"}]}"#,
                "default",
            ),
            (
                r#"{"fields":[{"name":"k","type":"keyword","tokenizer":"raw"}]}"#,
                "tokenizer",
            ),
            (
                r#"{"primary_key":"id","fields":[{"name":"id","type":"f64"}]}"#,
                "primary key",
            ),
            (r#"{"fields":[],"bogus":1}"#, "unknown field"),
            (r#"{"fields":[],"shards":0}"#, "shards"),
        ] {
            let err = Schema::from_json(body.as_bytes()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidSchema);
            assert!(err.message.contains(needle), "{body}: {}", err.message);
        }
    }

    #[test]
    fn compatible_changes_pass_and_breaking_ones_are_refused() {
        let old = Schema::from_json(EXAMPLE.as_bytes()).unwrap();
        let mut added = old.clone();
        let mut extra = FieldDef::new("extra", FieldType::Keyword);
        extra.required = false;
        added.fields.push(extra);
        added.description = "changed".into();
        assert!(added.check_compatible_with(&old).is_ok());

        let mut retyped = old.clone();
        retyped.fields[1].field_type = FieldType::Keyword;
        assert_eq!(
            retyped.check_compatible_with(&old).unwrap_err().code,
            ErrorCode::IncompatibleSchema
        );

        let mut removed = old.clone();
        removed.fields.pop();
        assert!(removed.check_compatible_with(&old).is_err());

        let mut required_new = old.clone();
        required_new
            .fields
            .push(FieldDef::new("must", FieldType::Text));
        assert!(required_new.check_compatible_with(&old).is_err());
    }

    #[test]
    fn infers_types_of_new_fields() {
        let mut schema = Schema::dynamic();
        let doc: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"id":"1","title":"hi","n":3,"f":1.5,"ok":true,"tags":["a"],"o":{"x":1},"z":null}"#,
        )
        .unwrap();
        assert!(schema.infer_from(&doc));
        let ty = |n: &str| schema.field(n).map(|f| (f.field_type, f.array));
        assert_eq!(ty("title"), Some((FieldType::Text, false)));
        assert_eq!(ty("n"), Some((FieldType::I64, false)));
        assert_eq!(ty("f"), Some((FieldType::F64, false)));
        assert_eq!(ty("ok"), Some((FieldType::Bool, false)));
        assert_eq!(ty("tags"), Some((FieldType::Text, true)));
        assert_eq!(ty("o"), Some((FieldType::Json, false)));
        assert_eq!(ty("z"), None);
        assert!(!schema.infer_from(&doc));
    }
}

#[cfg(test)]
mod properties {
    //! Property tests: no schema document panics the parser; every valid one survives a
    //! round trip and is compatible with itself; inference only ever adds compatibly.

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const TYPES: [&str; 9] = [
        "string", "text", "keyword", "i64", "u64", "f64", "bool", "datetime", "json",
    ];

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-100i32..100).prop_map(|n| Value::from(f64::from(n) / 2.0)),
            "[a-z0-9:-]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop::collection::vec(inner, 0..3).prop_map(Value::Array)
        })
    }

    /// Field definitions drawn from pools of good and bad names, types and options.
    fn field() -> impl Strategy<Value = Value> {
        (
            prop::sample::select(vec!["id", "title", "n", "_x", "", "a b", "tags", "x-1"]),
            prop::sample::select(
                TYPES
                    .iter()
                    .copied()
                    .chain(["float", ""])
                    .collect::<Vec<_>>(),
            ),
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            prop::option::of(any_json()),
            prop::option::of(prop::sample::select(vec!["personal_data", "secret"])),
            prop::option::of(prop::sample::select(vec!["default", "en_stem", "klingon"])),
        )
            .prop_map(
                |(name, ty, array, required, default, annotation, tokenizer)| {
                    let mut field = json!({"name": name, "type": ty});
                    let object = field.as_object_mut().unwrap();
                    if let Some(array) = array {
                        object.insert("array".into(), array.into());
                    }
                    if let Some(required) = required {
                        object.insert("required".into(), required.into());
                    }
                    if let Some(default) = default {
                        object.insert("default".into(), default);
                    }
                    if let Some(annotation) = annotation {
                        object.insert("annotations".into(), json!([annotation]));
                    }
                    if let Some(tokenizer) = tokenizer {
                        object.insert("tokenizer".into(), tokenizer.into());
                    }
                    field
                },
            )
    }

    fn schema_document() -> impl Strategy<Value = Value> {
        (
            prop::collection::vec(field(), 0..6),
            prop::option::of(prop::sample::select(vec!["id", "n", "title", "_id"])),
            any::<bool>(),
            prop::option::of(0u32..300),
        )
            .prop_map(|(fields, primary_key, strict, shards)| {
                let mut doc = json!({"fields": fields, "strict": strict});
                if let Some(pk) = primary_key {
                    doc["primary_key"] = pk.into();
                }
                if let Some(shards) = shards {
                    doc["shards"] = shards.into();
                }
                doc
            })
    }

    /// Schemas valid by construction: unique valid names, defaults of the right type.
    fn valid_schema_document() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(
            "[a-z][a-z0-9_-]{0,15}",
            (0..TYPES.len(), any::<bool>(), any::<bool>(), any::<bool>()),
            0..10,
        )
        .prop_map(|fields| {
            let fields: Vec<Value> = fields
                .into_iter()
                .filter(|(name, _)| name != "id")
                .map(|(name, (ty, array, required, with_default))| {
                    let default = match TYPES[ty] {
                        "string" | "text" | "keyword" => json!("x"),
                        "i64" | "u64" | "datetime" => json!(7),
                        "f64" => json!(0.5),
                        "bool" => json!(true),
                        _ => json!({"any": [1]}),
                    };
                    let mut field = json!({"name": name, "type": TYPES[ty], "array": array, "required": required});
                    if with_default {
                        field["default"] = default;
                    }
                    field
                })
                .collect();
            json!({"primary_key": "id", "fields": fields, "shards": 3})
        })
    }

    fn check_valid(schema: &Schema) -> Result<(), TestCaseError> {
        prop_assert!(schema.check_compatible_with(schema).is_ok());
        let text = serde_json::to_vec(schema).unwrap();
        prop_assert_eq!(&Schema::from_json(&text).unwrap(), schema);
        prop_assert!(schema.field(&schema.primary_key).is_some());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_are_an_invalid_schema_never_a_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            if let Err(e) = Schema::from_json(&bytes) {
                prop_assert_eq!(e.code, ErrorCode::InvalidSchema);
            }
        }

        #[test]
        fn schema_documents_validate_or_are_refused_cleanly(doc in schema_document()) {
            match Schema::from_json(doc.to_string().as_bytes()) {
                Ok(schema) => check_valid(&schema)?,
                Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidSchema),
            }
        }

        #[test]
        fn generated_valid_schemas_validate(doc in valid_schema_document()) {
            let schema = Schema::from_json(doc.to_string().as_bytes());
            prop_assert!(schema.is_ok(), "{}: {:?}", doc, schema);
            check_valid(&schema.unwrap())?;
        }

        #[test]
        fn inference_only_adds_compatible_optional_fields(
            docs in prop::collection::vec(
                prop::collection::btree_map("[a-z_]{1,6}", any_json(), 0..6), 0..4)
        ) {
            let mut schema = Schema::dynamic();
            for doc in docs {
                let before = schema.clone();
                schema.infer_from(&doc.into_iter().collect());
                prop_assert!(schema.normalize_and_validate().is_ok());
                prop_assert!(schema.check_compatible_with(&before).is_ok());
            }
        }
    }
}
