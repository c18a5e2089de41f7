//! Loading a page's documents and highlighting its first hits, within the configured
//! highlight bounds.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tantivy::query::Query;
use tantivy::schema::Value as _;
use tantivy::snippet::SnippetGenerator;
use tantivy::{Searcher, TantivyDocument};

use sluice_core::search::{Hit, SearchError};

use crate::error::internal;
use crate::index_schema::IndexSchema;
use crate::shard::ShardIndex;

use super::collect::{Candidate, MergeKey, ShardTop};
use super::plan::QueryPlan;

/// Loads the page's documents and computes the highlights of its first
/// `highlight_max_hits`. `plans[s]` is the plan of shard `s` (shards of one collection
/// share one), and `collections[s]`, when given, the collection its hits are labelled
/// with.
pub(crate) fn load_hits(
    shards: &[std::sync::Arc<ShardIndex>],
    tops: &[Option<ShardTop>],
    plans: &[&QueryPlan],
    collections: Option<&[String]>,
    page: Vec<Candidate>,
) -> Result<Vec<Hit>, SearchError> {
    let mut generators: HashMap<usize, Vec<(String, SnippetGenerator)>> = HashMap::new();
    let mut hits = Vec::with_capacity(page.len());
    for (position, candidate) in page.into_iter().enumerate() {
        let shard = &shards[candidate.shard];
        let plan = plans[candidate.shard];
        let schema = shard.schema();
        let searcher = &tops[candidate.shard]
            .as_ref()
            .ok_or_else(|| SearchError::Internal("a hit of a failed shard".into()))?
            .searcher;
        let doc: TantivyDocument = searcher.doc(candidate.address).map_err(internal)?;
        let source = doc
            .get_first(schema.source)
            .and_then(|v| v.as_bytes())
            .ok_or_else(|| SearchError::Internal("indexed document without source".into()))?;
        let source = String::from_utf8(source.to_vec())
            .map_err(|_| SearchError::Internal("document source is not UTF-8".into()))?;
        let mut highlights = Map::new();
        let highlighted = plan.highlight && position < plan.highlight_max_hits;
        if let (true, Some(text_query)) = (highlighted, &plan.text_query) {
            let generators = match generators.entry(candidate.shard) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(snippet_generators(searcher, schema, text_query.as_ref())?)
                }
            };
            if !generators.is_empty() {
                highlight(
                    &source,
                    generators,
                    plan.highlight_max_analyzed,
                    &mut highlights,
                );
            }
        }
        let doc = RawValue::from_string(source)
            .map_err(|e| SearchError::Internal(format!("document source is not JSON: {e}")))?;
        let score = match candidate.key {
            MergeKey::Score(score) => Some(score),
            _ => None,
        };
        hits.push(Hit {
            collection: collections.map(|names| names[candidate.shard].clone()),
            id: candidate.id,
            score,
            doc,
            highlights,
        });
    }
    Ok(hits)
}

pub(super) fn snippet_generators(
    searcher: &Searcher,
    schema: &IndexSchema,
    query: &dyn Query,
) -> Result<Vec<(String, SnippetGenerator)>, SearchError> {
    let mut touched = Vec::new();
    for (name, field) in schema.text_fields() {
        let mut has_terms = false;
        query.query_terms(&mut |term, _| has_terms |= term.field() == *field);
        if has_terms {
            touched.push((
                name.clone(),
                SnippetGenerator::create(searcher, query, *field).map_err(internal)?,
            ));
        }
    }
    Ok(touched)
}

/// Snippets of the fields `generators` cover, each from at most `max_analyzed` bytes of
/// the field's text (Elasticsearch bounds analysed text the same way).
pub(super) fn highlight(
    source: &str,
    generators: &[(String, SnippetGenerator)],
    max_analyzed: usize,
    out: &mut Map<String, Value>,
) {
    let Ok(fields) = serde_json::from_str::<Map<String, Value>>(source) else {
        return;
    };
    for (name, generator) in generators {
        let texts: Vec<&str> = match fields.get(name) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        let snippets: Vec<Value> = texts
            .into_iter()
            .filter_map(|text| {
                let mut snippet = generator.snippet(analysed_prefix(text, max_analyzed));
                if snippet.is_empty() {
                    return None;
                }
                snippet.set_snippet_prefix_postfix("<em>", "</em>");
                Some(Value::String(snippet.to_html()))
            })
            .collect();
        if !snippets.is_empty() {
            out.insert(name.clone(), Value::Array(snippets));
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(super) fn analysed_prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
