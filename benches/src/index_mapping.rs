//! A collection schema mapped onto Tantivy exactly as `sluice-indexer` maps it.
//!
//! The indexer keeps its mapping private (`index_schema`), so this module mirrors it:
//! the same reserved fields (`_id` raw + fast + stored, `_seq` indexed + fast, `_source`
//! stored bytes, `_tombstone`, `_dynamic` JSON text), the same options per sluice type,
//! and the same document building from canonical JSON (parse, then one value per
//! declared field, undeclared fields into `_dynamic`). Raw Tantivy runs built on it index
//! the same Tantivy documents sluice does, so their rate is the fair ceiling for sluice's.
//! If the indexer's mapping changes, change this one with it.

use serde_json::{Map, Value};
use sluice_core::document::datetime_to_unix_nanos;
use sluice_core::schema::{FieldType, Schema};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, OwnedValue,
    TextFieldIndexing, TextOptions, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{DateTime, TantivyDocument};

/// A collection's Tantivy schema and field handles.
#[derive(Debug, Clone)]
pub struct IndexMapping {
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
    declared: Vec<(String, Field, FieldType)>,
}

impl IndexMapping {
    /// The mapping of a validated collection schema.
    pub fn new(collection: &Schema) -> IndexMapping {
        let mut builder = tantivy::schema::Schema::builder();
        let id = builder.add_text_field("_id", STRING | FAST | STORED);
        let seq = builder.add_u64_field("_seq", INDEXED | FAST);
        let source = builder.add_bytes_field("_source", STORED);
        let tombstone = builder.add_u64_field("_tombstone", INDEXED);
        let dynamic = builder.add_json_field("_dynamic", TEXT);
        let mut declared = Vec::new();
        for def in &collection.fields {
            if !tantivy::schema::is_valid_field_name(&def.name) {
                continue;
            }
            let name = def.name.as_str();
            let field = match def.field_type {
                FieldType::Text => {
                    let indexing = TextFieldIndexing::default()
                        .set_tokenizer(def.tokenizer())
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
                    builder
                        .add_text_field(name, TextOptions::default().set_indexing_options(indexing))
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
            declared.push((def.name.clone(), field, def.field_type));
        }
        IndexMapping {
            schema: builder.build(),
            id,
            seq,
            source,
            tombstone,
            dynamic,
            declared,
        }
    }

    /// Text fields then `_dynamic`: the default fields of a free-text query.
    pub fn default_query_fields(&self) -> Vec<Field> {
        self.declared
            .iter()
            .filter(|(_, _, field_type)| *field_type == FieldType::Text)
            .map(|(_, field, _)| *field)
            .chain(std::iter::once(self.dynamic))
            .collect()
    }

    /// The Tantivy document of version `seq` of `id` with canonical JSON `source`;
    /// `None` when `source` is not a JSON object.
    pub fn document(&self, id: &str, seq: u64, source: &[u8]) -> Option<TantivyDocument> {
        let mut doc = TantivyDocument::new();
        doc.add_text(self.id, id);
        doc.add_u64(self.seq, seq);
        doc.add_bytes(self.source, source);
        let fields: Map<String, Value> = serde_json::from_slice(source).ok()?;
        let mut undeclared = Map::new();
        for (name, value) in fields {
            if value.is_null() {
                continue;
            }
            match self
                .declared
                .iter()
                .find(|(declared, _, _)| *declared == name)
            {
                Some((_, field, FieldType::Json)) => {
                    doc.add_field_value(*field, &OwnedValue::from(value));
                }
                Some((_, field, field_type)) => match &value {
                    Value::Array(items) => {
                        for item in items {
                            add_scalar(&mut doc, *field, *field_type, item);
                        }
                    }
                    scalar => add_scalar(&mut doc, *field, *field_type, scalar),
                },
                None => {
                    undeclared.insert(name, value);
                }
            }
        }
        if !undeclared.is_empty() {
            doc.add_field_value(self.dynamic, &OwnedValue::from(undeclared));
        }
        Some(doc)
    }

    /// The id of a corpus line (its `id` field), for raw runs that start from NDJSON.
    pub fn id_of(line: &[u8]) -> Option<String> {
        const ID: &[u8] = b"{\"id\":\"";
        let rest = line.strip_prefix(ID)?;
        let end = rest.iter().position(|&b| b == b'"')?;
        std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
    }
}

fn add_scalar(doc: &mut TantivyDocument, field: Field, field_type: FieldType, value: &Value) {
    match (field_type, value) {
        (FieldType::Text | FieldType::String | FieldType::Keyword, Value::String(s)) => {
            doc.add_text(field, s);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::Document as _;

    #[test]
    fn maps_declared_and_undeclared_fields() {
        let schema = Schema::from_json(
            br#"{"primary_key":"id","fields":[{"name":"id","type":"string"},
                {"name":"body","type":"text"},{"name":"price","type":"i64"},
                {"name":"ts","type":"datetime"}]}"#,
        )
        .unwrap();
        let mapping = IndexMapping::new(&schema);
        let source =
            br#"{"id":"a","body":"hello world","price":3,"ts":"2026-01-01T00:00:00Z","extra":"x"}"#;
        let doc = mapping.document("a", 7, source).unwrap();
        let json = doc.to_json(&mapping.schema);
        assert!(json.contains("\"_id\":[\"a\"]"), "{json}");
        assert!(mapping.document("a", 7, b"[1]").is_none());
        assert_eq!(IndexMapping::id_of(source).as_deref(), Some("a"));
        assert_eq!(mapping.default_query_fields().len(), 2);
    }
}
