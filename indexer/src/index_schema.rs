//! The Tantivy schema of a collection, generated from its sluice schema, and the mapping
//! of one canonical JSON document onto a Tantivy document.
//!
//! Reserved fields (sluice field names cannot start with `_`, so these never clash):
//! - `_id`: raw string, indexed + fast + stored: the delete key and the tie-break for sorts.
//! - `_seq`: u64, indexed + fast: the op sequence of the indexed version (last-writer-wins).
//! - `_source`: stored bytes: the canonical JSON returned as a hit's `doc`.
//! - `_tombstone`: u64, indexed: `1` on the marker left by a delete, absent otherwise.
//! - `_dynamic`: JSON, TEXT, not stored: every document field the schema does not declare.
//!
//! Declared fields keep their own name; text fields are not stored because highlights are
//! computed from `_source`. The mapping is pure (no I/O) and deterministic: the same schema
//! always gives the same Tantivy schema, so a shard reopened after a restart matches.
//!
//! The module is public so that whatever must index exactly what a shard indexes (the raw
//! Tantivy benchmarks) uses this one mapping instead of a copy: [`IndexSchema::new`],
//! [`IndexSchema::document`], [`IndexSchema::default_query_fields`], the reserved field
//! handles and [`ensure_tokenizers`]. Everything else stays crate-private.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sluice_core::document::datetime_to_unix_nanos;
use sluice_core::schema::{FieldType, Schema, TOKENIZERS};
use sluice_core::{DocId, Seq};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, OwnedValue,
    TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer,
    WhitespaceTokenizer,
};
use tantivy::{DateTime, Index, TantivyDocument};

/// Name of the reserved id field.
pub(crate) const ID_FIELD: &str = "_id";
/// Name of the reserved sequence field.
pub(crate) const SEQ_FIELD: &str = "_seq";
/// Name of the reserved source field.
pub(crate) const SOURCE_FIELD: &str = "_source";
/// Name of the reserved tombstone marker field.
pub(crate) const TOMBSTONE_FIELD: &str = "_tombstone";
/// Name of the JSON field receiving undeclared document fields.
pub(crate) const DYNAMIC_FIELD: &str = "_dynamic";

/// A field declared in the collection schema, as indexed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeclaredField {
    /// The Tantivy field.
    pub field: Field,
    /// Its sluice type.
    pub field_type: FieldType,
}

impl DeclaredField {
    /// Whether filters may target the field (exact, untokenized values).
    pub fn is_filterable(&self) -> bool {
        matches!(
            self.field_type,
            FieldType::String
                | FieldType::Keyword
                | FieldType::I64
                | FieldType::U64
                | FieldType::F64
                | FieldType::Bool
                | FieldType::Datetime
        )
    }

    /// How a sort on the field reads its fast column, if it can be sorted on.
    pub fn sort_kind(&self) -> Option<SortKind> {
        match self.field_type {
            FieldType::I64 | FieldType::U64 | FieldType::F64 | FieldType::Datetime => {
                Some(SortKind::Numeric)
            }
            FieldType::String | FieldType::Keyword => Some(SortKind::Keyword),
            FieldType::Text | FieldType::Bool | FieldType::Json => None,
        }
    }
}

/// How a sortable field's values are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SortKind {
    /// A numeric or date fast column (monotonic u64 mapping).
    Numeric,
    /// A string fast column (lexicographic).
    Keyword,
}

/// A collection's Tantivy schema with handles on its reserved fields.
///
/// Built once per collection schema version by [`IndexSchema::new`]; immutable afterwards,
/// so it is shared (`Arc`) between a collection's shards and searches without locking.
#[derive(Debug)]
pub struct IndexSchema {
    /// The Tantivy schema.
    pub schema: tantivy::schema::Schema,
    /// `_id`.
    pub id: Field,
    /// `_seq`.
    pub seq: Field,
    /// `_source`.
    pub source: Field,
    /// `_tombstone`.
    pub tombstone: Field,
    /// `_dynamic`.
    pub dynamic: Field,
    declared: HashMap<String, DeclaredField>,
    text_fields: Vec<(String, Field)>,
}

impl IndexSchema {
    /// Generates the Tantivy schema of a (validated) collection schema: the reserved
    /// fields, then every declared field whose name Tantivy accepts, in schema order.
    pub fn new(collection: &Schema) -> Self {
        let mut builder = tantivy::schema::Schema::builder();
        let id = builder.add_text_field(ID_FIELD, STRING | FAST | STORED);
        let seq = builder.add_u64_field(SEQ_FIELD, INDEXED | FAST);
        let source = builder.add_bytes_field(SOURCE_FIELD, STORED);
        let tombstone = builder.add_u64_field(TOMBSTONE_FIELD, INDEXED);
        let dynamic = builder.add_json_field(DYNAMIC_FIELD, TEXT);
        let mut declared = HashMap::new();
        let mut text_fields = Vec::new();
        for def in &collection.fields {
            // Tantivy refuses names starting with '-', which sluice accepts: such fields
            // are indexed as dynamic JSON instead, still searchable through `_dynamic`.
            if !tantivy::schema::is_valid_field_name(&def.name) {
                continue;
            }
            let name = def.name.as_str();
            let field = match def.field_type {
                FieldType::Text => {
                    let indexing = TextFieldIndexing::default()
                        .set_tokenizer(def.tokenizer())
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
                    let field = builder.add_text_field(
                        name,
                        TextOptions::default().set_indexing_options(indexing),
                    );
                    text_fields.push((def.name.clone(), field));
                    field
                }
                FieldType::String | FieldType::Keyword => {
                    builder.add_text_field(name, STRING | FAST)
                }
                FieldType::I64 => builder.add_i64_field(name, INDEXED | FAST),
                FieldType::U64 => builder.add_u64_field(name, INDEXED | FAST),
                FieldType::F64 => builder.add_f64_field(name, INDEXED | FAST),
                FieldType::Bool => builder.add_bool_field(name, INDEXED | FAST),
                FieldType::Datetime => builder.add_date_field(
                    name,
                    DateOptions::default()
                        .set_indexed()
                        .set_fast()
                        .set_precision(DateTimePrecision::Milliseconds),
                ),
                FieldType::Json => builder.add_json_field(name, JsonObjectOptions::from(TEXT)),
            };
            declared.insert(
                def.name.clone(),
                DeclaredField {
                    field,
                    field_type: def.field_type,
                },
            );
        }
        Self {
            schema: builder.build(),
            id,
            seq,
            source,
            tombstone,
            dynamic,
            declared,
            text_fields,
        }
    }

    /// The declared field `name`, if the index has it.
    pub(crate) fn declared(&self, name: &str) -> Option<&DeclaredField> {
        self.declared.get(name)
    }

    /// Declared text fields, in schema order.
    pub(crate) fn text_fields(&self) -> &[(String, Field)] {
        &self.text_fields
    }

    /// Default fields of a free-text query: every text field, then `_dynamic` (which also
    /// makes `undeclared:term` resolve into the JSON field).
    pub fn default_query_fields(&self) -> Vec<Field> {
        self.text_fields
            .iter()
            .map(|(_, field)| *field)
            .chain(std::iter::once(self.dynamic))
            .collect()
    }

    /// The Tantivy document for version `seq` of document `id` with canonical JSON `source`.
    ///
    /// A `source` that is not a JSON object (never the case for validated documents) is
    /// indexed by `_id`, `_seq` and `_source` only, with a warning. Values of the wrong type for their declared field (possible only if the schema
    /// changed under stored data) are left out of that field rather than failing the
    /// document: it stays retrievable and searchable through its other fields.
    pub fn document(&self, id: &DocId, seq: Seq, source: &[u8]) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.id, id.as_str());
        doc.add_u64(self.seq, seq.0);
        doc.add_bytes(self.source, source);
        let fields: Map<String, Value> = match serde_json::from_slice(source) {
            Ok(fields) => fields,
            Err(error) => {
                tracing::warn!(%error, "document source is not a JSON object; indexed by id only");
                return doc;
            }
        };
        let mut undeclared = Map::new();
        for (name, value) in fields {
            if value.is_null() {
                continue;
            }
            match self.declared.get(&name) {
                Some(declared) if declared.field_type == FieldType::Json => {
                    doc.add_field_value(declared.field, &OwnedValue::from(value));
                }
                Some(declared) => match &value {
                    Value::Array(items) => {
                        for item in items {
                            add_scalar(&mut doc, declared, item);
                        }
                    }
                    scalar => add_scalar(&mut doc, declared, scalar),
                },
                None => {
                    undeclared.insert(name, value);
                }
            }
        }
        if !undeclared.is_empty() {
            doc.add_field_value(self.dynamic, &OwnedValue::from(undeclared));
        }
        doc
    }

    /// The marker left by a delete: it carries the delete's sequence so that an older
    /// upsert arriving later is recognised as stale and cannot resurrect the document.
    pub(crate) fn tombstone(&self, id: &DocId, seq: Seq) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.id, id.as_str());
        doc.add_u64(self.seq, seq.0);
        doc.add_u64(self.tombstone, 1);
        doc
    }
}

fn add_scalar(doc: &mut TantivyDocument, declared: &DeclaredField, value: &Value) {
    let field = declared.field;
    match (declared.field_type, value) {
        (FieldType::Text | FieldType::String | FieldType::Keyword, Value::String(s)) => {
            doc.add_text(field, s);
        }
        // A numeric primary key declared as a string type is indexed by its text.
        (FieldType::String | FieldType::Keyword, Value::Number(n)) => {
            doc.add_text(field, n.to_string());
        }
        (FieldType::I64, Value::Number(n)) => {
            if let Some(v) = n.as_i64() {
                doc.add_i64(field, v);
            }
        }
        (FieldType::U64, Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                doc.add_u64(field, v);
            }
        }
        (FieldType::F64, Value::Number(n)) => {
            if let Some(v) = n.as_f64() {
                doc.add_f64(field, v);
            }
        }
        (FieldType::Bool, Value::Bool(b)) => doc.add_bool(field, *b),
        (FieldType::Datetime, _) => {
            if let Some(nanos) = datetime_to_unix_nanos(value) {
                let nanos =
                    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX });
                doc.add_date(field, DateTime::from_timestamp_nanos(nanos));
            }
        }
        _ => {}
    }
}

/// Registers every tokenizer a schema may name that the index does not know yet.
///
/// Tantivy ships all of them today; registering the missing ones keeps a schema naming
/// one from failing at indexing time should that default set ever shrink. Call it on every
/// index opened or created with an [`IndexSchema`]'s schema, before writing to it.
pub fn ensure_tokenizers(index: &Index) {
    let manager = index.tokenizers();
    for name in TOKENIZERS {
        if manager.get(name).is_some() {
            continue;
        }
        let analyzer = match name {
            "raw" => TextAnalyzer::from(RawTokenizer::default()),
            "whitespace" => TextAnalyzer::from(WhitespaceTokenizer::default()),
            "en_stem" => TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .filter(Stemmer::new(Language::English))
                .build(),
            _ => TextAnalyzer::builder(SimpleTokenizer::default())
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .build(),
        };
        manager.register(name, analyzer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::schema::{FieldType as TantivyType, Value as _};

    fn schema() -> Schema {
        Schema::from_json(
            br#"{"fields":[{"name":"id","type":"string"},
            {"name":"title","type":"text"},
            {"name":"body","type":"text","tokenizer":"en_stem"},
            {"name":"tags","type":"keyword","array":true,"required":false},
            {"name":"n","type":"i64"},{"name":"u","type":"u64"},{"name":"f","type":"f64"},
            {"name":"ok","type":"bool"},{"name":"ts","type":"datetime"},
            {"name":"meta","type":"json"},{"name":"-odd","type":"keyword","required":false}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn maps_every_field_type() {
        let index_schema = IndexSchema::new(&schema());
        let entry = |name: &str| {
            let field = index_schema.schema.get_field(name).unwrap();
            index_schema.schema.get_field_entry(field).clone()
        };
        // Reserved fields.
        let id = entry(ID_FIELD);
        assert!(id.is_indexed() && id.is_fast() && id.is_stored());
        let seq = entry(SEQ_FIELD);
        assert!(
            matches!(seq.field_type(), TantivyType::U64(_)) && seq.is_fast() && seq.is_indexed()
        );
        let source = entry(SOURCE_FIELD);
        assert!(matches!(source.field_type(), TantivyType::Bytes(_)) && source.is_stored());
        assert!(entry(TOMBSTONE_FIELD).is_indexed());
        let dynamic = entry(DYNAMIC_FIELD);
        assert!(matches!(dynamic.field_type(), TantivyType::JsonObject(_)));
        assert!(dynamic.is_indexed() && !dynamic.is_stored());
        // Text: tokenized with its tokenizer, not stored.
        let body = entry("body");
        match body.field_type() {
            TantivyType::Str(options) => {
                let indexing = options.get_indexing_options().unwrap();
                assert_eq!(indexing.tokenizer(), "en_stem");
                assert_eq!(
                    indexing.index_option(),
                    IndexRecordOption::WithFreqsAndPositions
                );
            }
            other => panic!("body mapped to {other:?}"),
        }
        assert!(!body.is_stored() && !body.is_fast());
        // Keyword / string: raw, fast.
        for name in ["id", "tags"] {
            match entry(name).field_type() {
                TantivyType::Str(options) => {
                    assert_eq!(options.get_indexing_options().unwrap().tokenizer(), "raw");
                    assert!(options.is_fast());
                }
                other => panic!("{name} mapped to {other:?}"),
            }
        }
        assert!(matches!(entry("n").field_type(), TantivyType::I64(_)));
        assert!(matches!(entry("u").field_type(), TantivyType::U64(_)));
        assert!(matches!(entry("f").field_type(), TantivyType::F64(_)));
        assert!(matches!(entry("ok").field_type(), TantivyType::Bool(_)));
        assert!(matches!(entry("ts").field_type(), TantivyType::Date(_)));
        for name in ["n", "u", "f", "ok", "ts"] {
            assert!(entry(name).is_fast() && entry(name).is_indexed(), "{name}");
        }
        assert!(matches!(
            entry("meta").field_type(),
            TantivyType::JsonObject(_)
        ));
        // A name Tantivy refuses falls back to `_dynamic`.
        assert!(index_schema.schema.get_field("-odd").is_err());
        assert_eq!(
            index_schema
                .text_fields()
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["title", "body"]
        );
        assert_eq!(index_schema.default_query_fields().len(), 3);
    }

    #[test]
    fn documents_carry_every_value_and_route_undeclared_fields() {
        let index_schema = IndexSchema::new(&schema());
        let source = br#"{"extra":{"k":"v"},"f":1.5,"id":"a","meta":{"x":1},"n":-3,"ok":true,"tags":["t1","t2"],"title":"Hello","ts":"2026-01-01T00:00:00Z","u":7}"#;
        let doc = index_schema.document(&DocId::new("a").unwrap(), Seq(9), source);
        let field = |name: &str| index_schema.schema.get_field(name).unwrap();
        assert_eq!(doc.get_all(field("tags")).count(), 2);
        assert_eq!(doc.get_first(field("n")).and_then(|v| v.as_i64()), Some(-3));
        assert_eq!(doc.get_first(field("u")).and_then(|v| v.as_u64()), Some(7));
        assert_eq!(
            doc.get_first(field("ok")).and_then(|v| v.as_bool()),
            Some(true)
        );
        let ts = doc
            .get_first(field("ts"))
            .and_then(|v| v.as_datetime())
            .unwrap();
        assert_eq!(ts.into_timestamp_secs(), 1_767_225_600);
        assert!(doc.get_first(field("meta")).is_some());
        assert!(doc.get_first(index_schema.dynamic).is_some());
        assert_eq!(
            doc.get_first(index_schema.seq).and_then(|v| v.as_u64()),
            Some(9)
        );
        assert_eq!(
            doc.get_first(index_schema.source)
                .and_then(|v| v.as_bytes()),
            Some(&source[..])
        );
        assert!(doc.get_first(index_schema.tombstone).is_none());
        let tombstone = index_schema.tombstone(&DocId::new("a").unwrap(), Seq(10));
        assert_eq!(
            tombstone
                .get_first(index_schema.tombstone)
                .and_then(|v| v.as_u64()),
            Some(1)
        );
        assert!(tombstone.get_first(index_schema.source).is_none());
    }
}
