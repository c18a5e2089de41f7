//! Search over the shards of one collection: request normalization and validation, query
//! planning, per-shard top-k collection, the cross-shard merge, and hit loading with
//! highlights.
//!
//! Query text is bounded before it is parsed, and parsed where no input can overflow a
//! stack ([`crate::query_limits`]); highlights are bounded too: only the first
//! `highlight_max_hits` hits of a page get them, and only the first
//! `highlight_max_analyzed_size` bytes of a field's text are analysed, so a page of
//! 10,000 hits costs no more highlighting than one of a hundred.
//!
//! Concurrency: everything here is synchronous and CPU-bound; the caller plans on the
//! parse thread ([`plan_on_parse_stack`]), runs each shard's collection on a blocking
//! thread and merges. A search works on one
//! [`Searcher`] snapshot per shard, taken once, so the document addresses it collects
//! stay valid while hits are loaded even if the shard commits meanwhile.
//!
//! Ordering is total and identical on every shard and in the merge: by score (desc) or by
//! the sort field (missing values last), then by id ascending. So the same request over
//! the same documents gives the same page whatever the number of shards, and pages of a
//! paged walk neither overlap nor skip.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByString};
use tantivy::collector::{Count, SegmentSortKeyComputer, SortKeyComputer, TopDocs};
use tantivy::columnar::{Column, ColumnType};
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, TermQuery,
};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Order, Score, Searcher, SegmentReader, TantivyDocument, Term};

use sluice_core::config::IndexerConfig;
use tantivy::query::QueryParserError;

use sluice_core::search::{Hit, SearchError, SearchRequest};

use crate::error::internal;
use crate::index_schema::{IndexSchema, SortKind, ID_FIELD};
use crate::query_limits::{self, QueryLimits};
use crate::shard::ShardIndex;

/// Hits per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 10;

/// What the configuration bounds in a search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchSettings {
    /// Largest `limit + offset`.
    pub max_result_window: usize,
    /// Length and depth of the query text.
    pub query: QueryLimits,
    /// Hits of a page that get highlights.
    pub highlight_max_hits: usize,
    /// Bytes of one field's text analysed for highlights.
    pub highlight_max_analyzed: usize,
}

impl SearchSettings {
    /// The settings of `config`'s `[indexer]` section.
    pub fn from_config(config: &IndexerConfig) -> Self {
        Self {
            max_result_window: config.max_result_window,
            query: QueryLimits::from_config(config),
            highlight_max_hits: config.highlight_max_hits,
            highlight_max_analyzed: usize::try_from(config.highlight_max_analyzed_size.as_u64())
                .unwrap_or(usize::MAX),
        }
    }
}

/// How results are ordered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SortSpec {
    field: String,
    kind: SortKind,
    descending: bool,
}

/// A validated request with its defaults filled in: the cache key's request part, so
/// equivalent spellings of a request share one cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NormalizedRequest {
    q: Option<String>,
    filters: Vec<String>,
    sort: Option<SortSpec>,
    limit: usize,
    offset: usize,
    highlight: bool,
}

impl NormalizedRequest {
    /// Validates `request` against the collection's index schema and the configured
    /// limits. The query text's length and nesting are checked here, before anything
    /// parses it.
    pub fn new(
        request: &SearchRequest,
        schema: &IndexSchema,
        settings: &SearchSettings,
    ) -> Result<Self, SearchError> {
        let limits = &settings.query;
        limits.check_length(request.q.iter().chain(&request.filter).map(String::as_str))?;
        if let Some(q) = &request.q {
            limits.check_depth("q", q)?;
        }
        for (n, filter) in request.filter.iter().enumerate() {
            limits.check_depth(&format!("filter {}", n + 1), filter)?;
        }
        let max_result_window = settings.max_result_window;
        let q = request
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty() && *q != "*")
            .map(str::to_owned);
        let mut filters: Vec<String> = request
            .filter
            .iter()
            .map(|f| f.trim())
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        // Filters are ANDed: their order does not matter.
        filters.sort();
        filters.dedup();
        let sort = request
            .sort
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse_sort(s, schema))
            .transpose()?;
        let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
        let offset = request.offset.unwrap_or(0);
        if limit.saturating_add(offset) > max_result_window {
            return Err(SearchError::InvalidQuery(format!(
                "limit + offset must not exceed {max_result_window} (got {limit} + {offset})"
            )));
        }
        Ok(Self {
            q,
            filters,
            sort,
            limit,
            offset,
            highlight: request.highlight.unwrap_or(true),
        })
    }

    /// How many hits each shard must return for the merge to fill the page.
    pub fn top_k(&self) -> usize {
        self.offset + self.limit
    }

    /// Hits to skip.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Hits to return.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A cheap estimate of the memory this request holds as a cache key, in bytes.
    pub fn estimated_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.q.as_ref().map_or(0, String::len)
            + self
                .filters
                .iter()
                .map(|f| std::mem::size_of::<String>() + f.len())
                .sum::<usize>()
            + self.sort.as_ref().map_or(0, |s| s.field.len())
    }
}

fn parse_sort(sort: &str, schema: &IndexSchema) -> Result<SortSpec, SearchError> {
    let (field, direction) = sort.rsplit_once(':').unwrap_or((sort, "asc"));
    let descending = match direction {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(SearchError::InvalidQuery(format!(
                "sort direction {other:?}: use field:asc or field:desc"
            )))
        }
    };
    let Some(declared) = schema.declared(field) else {
        return Err(SearchError::InvalidQuery(format!(
            "cannot sort by {field:?}: the collection declares no such field"
        )));
    };
    let Some(kind) = declared.sort_kind() else {
        return Err(SearchError::InvalidQuery(format!(
            "cannot sort by {field:?}: it is a {} field; sortable types are i64, u64, f64, datetime, keyword and string",
            declared.field_type.as_str()
        )));
    };
    Ok(SortSpec {
        field: field.to_owned(),
        kind,
        descending,
    })
}

/// The parsed queries of a request, shared by every shard of the collection.
pub(crate) struct QueryPlan {
    /// What is collected: text query AND filters AND NOT tombstones.
    query: Box<dyn Query>,
    /// The scored text query alone, for highlights.
    text_query: Option<Box<dyn Query>>,
    sort: Option<SortSpec>,
    highlight: bool,
    /// Hits of the page that get highlights (the first ones).
    highlight_max_hits: usize,
    /// Bytes of one field's text analysed for highlights.
    highlight_max_analyzed: usize,
}

/// [`plan`] on the parse thread ([`query_limits::on_parse_stack`]): the grammar
/// recurses once per nesting level, and the syntax trees it builds are dropped there.
/// Blocking: call it from a blocking thread.
pub(crate) fn plan_on_parse_stack(
    shard: &ShardIndex,
    request: &NormalizedRequest,
    settings: &SearchSettings,
) -> Result<QueryPlan, SearchError> {
    query_limits::on_parse_stack(&settings.query, || plan(shard, request, settings))
}

/// Parses the request's query and filters with the collection's tokenizers. Recursive in
/// the query's nesting: run it through [`plan_on_parse_stack`].
fn plan(
    shard: &ShardIndex,
    request: &NormalizedRequest,
    settings: &SearchSettings,
) -> Result<QueryPlan, SearchError> {
    let schema = shard.schema();
    let limits = &settings.query;
    let text_query = match &request.q {
        None => None,
        Some(q) => {
            let ast = query_limits::parse_checked(q, "q", limits, || {
                SearchError::InvalidQuery(format!(
                    "invalid query: {}",
                    QueryParserError::SyntaxError(q.clone())
                ))
            })?;
            let parser = QueryParser::for_index(shard.index(), schema.default_query_fields());
            Some(
                parser
                    .build_query_from_user_input_ast(ast)
                    .map_err(|e| SearchError::InvalidQuery(format!("invalid query: {e}")))?,
            )
        }
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(
        Occur::Must,
        text_query
            .as_ref()
            .map_or_else(|| Box::new(AllQuery) as Box<dyn Query>, |q| q.box_clone()),
    )];
    let filter_parser = QueryParser::for_index(shard.index(), Vec::new());
    for filter in &request.filters {
        let ast = query_limits::parse_checked(filter, "a filter", limits, || {
            SearchError::InvalidQuery(format!("filter {filter:?}: invalid query syntax"))
        })?;
        check_filter_fields(&ast, schema, filter)?;
        let query = filter_parser
            .build_query_from_user_input_ast(ast)
            .map_err(|e| SearchError::InvalidQuery(format!("filter {filter:?}: {e}")))?;
        // Filters restrict, they do not rank.
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0))));
    }
    clauses.push((
        Occur::MustNot,
        Box::new(TermQuery::new(
            Term::from_field_u64(schema.tombstone, 1),
            IndexRecordOption::Basic,
        )),
    ));
    Ok(QueryPlan {
        query: Box::new(BooleanQuery::new(clauses)),
        text_query,
        sort: request.sort.clone(),
        highlight: request.highlight,
        highlight_max_hits: settings.highlight_max_hits,
        highlight_max_analyzed: settings.highlight_max_analyzed,
    })
}

/// Refuses filter clauses on anything but declared exact-value fields.
fn check_filter_fields(
    ast: &UserInputAst,
    schema: &IndexSchema,
    filter: &str,
) -> Result<(), SearchError> {
    let check = |field: Option<&str>| -> Result<(), SearchError> {
        let Some(field) = field else {
            return Err(SearchError::InvalidQuery(format!(
                "filter {filter:?}: every term must name a field, e.g. tags:foo"
            )));
        };
        match schema.declared(field) {
            Some(declared) if declared.is_filterable() => Ok(()),
            Some(declared) => Err(SearchError::InvalidQuery(format!(
                "filter {filter:?}: field {field:?} is a {} field; filters apply to keyword, string, numeric, bool and datetime fields (use q for text)",
                declared.field_type.as_str()
            ))),
            None => Err(SearchError::InvalidQuery(format!(
                "filter {filter:?}: the collection declares no field {field:?}"
            ))),
        }
    };
    match ast {
        UserInputAst::Clause(clauses) => clauses
            .iter()
            .try_for_each(|(_, sub)| check_filter_fields(sub, schema, filter)),
        UserInputAst::Boost(sub, _) => check_filter_fields(sub, schema, filter),
        UserInputAst::Leaf(leaf) => match leaf.as_ref() {
            UserInputLeaf::All => Ok(()),
            UserInputLeaf::Literal(literal) => check(literal.field_name.as_deref()),
            UserInputLeaf::Range { field, .. }
            | UserInputLeaf::Set { field, .. }
            | UserInputLeaf::Regex { field, .. } => check(field.as_deref()),
            UserInputLeaf::Exists { field } => check(Some(field)),
        },
    }
}

/// The sort key of one candidate hit.
#[derive(Clone, Debug)]
enum MergeKey {
    Score(Score),
    /// Monotonic u64 image of a numeric or date value; `None` when the doc has none.
    Numeric(Option<u64>),
    Keyword(Option<String>),
}

/// A hit before loading: where it is and how it sorts.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    key: MergeKey,
    id: String,
    shard: usize,
    address: DocAddress,
}

/// What one shard found.
pub(crate) struct ShardTop {
    searcher: Searcher,
    total: u64,
    candidates: Vec<Candidate>,
}

/// Counts the matches of one shard and collects its `top_k` best.
pub(crate) fn collect_shard(
    shard_no: usize,
    shard: &ShardIndex,
    plan: &QueryPlan,
    top_k: usize,
) -> Result<ShardTop, SearchError> {
    let searcher = shard.searcher();
    let query = plan.query.as_ref();
    if top_k == 0 {
        let total = searcher.search(query, &Count).map_err(internal)? as u64;
        return Ok(ShardTop {
            searcher,
            total,
            candidates: Vec::new(),
        });
    }
    let top = TopDocs::with_limit(top_k);
    let by_id = (SortByString::for_field(ID_FIELD), Order::Asc);
    let candidate = |key: MergeKey, id: Option<String>, address: DocAddress| Candidate {
        key,
        id: id.unwrap_or_default(),
        shard: shard_no,
        address,
    };
    let (total, candidates) = match &plan.sort {
        None => {
            let collector = top.order_by(((SortBySimilarityScore, Order::Desc), by_id));
            let (total, hits) = searcher
                .search(query, &(Count, collector))
                .map_err(internal)?;
            let candidates = hits
                .into_iter()
                .map(|((score, id), address)| candidate(MergeKey::Score(score), id, address))
                .collect();
            (total, candidates)
        }
        Some(sort) => {
            let order = if sort.descending {
                Order::Desc
            } else {
                Order::Asc
            };
            match sort.kind {
                SortKind::Numeric => {
                    let by_field = (NumericSortKey::for_field(&sort.field), order);
                    let (total, hits) = searcher
                        .search(query, &(Count, top.order_by((by_field, by_id))))
                        .map_err(internal)?;
                    let candidates = hits
                        .into_iter()
                        .map(|((value, id), address)| {
                            candidate(MergeKey::Numeric(value), id, address)
                        })
                        .collect();
                    (total, candidates)
                }
                SortKind::Keyword => {
                    let by_field = (SortByString::for_field(&sort.field), order);
                    let (total, hits) = searcher
                        .search(query, &(Count, top.order_by((by_field, by_id))))
                        .map_err(internal)?;
                    let candidates = hits
                        .into_iter()
                        .map(|((value, id), address)| {
                            candidate(MergeKey::Keyword(value), id, address)
                        })
                        .collect();
                    (total, candidates)
                }
            }
        }
    };
    Ok(ShardTop {
        searcher,
        total: total as u64,
        candidates,
    })
}

/// Missing values sort last whatever the direction (as Tantivy's collectors do).
fn compare_optional<T: Ord>(a: &Option<T>, b: &Option<T>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) if descending => b.cmp(a),
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn compare_candidates(a: &Candidate, b: &Candidate, descending: bool) -> Ordering {
    let by_key = match (&a.key, &b.key) {
        (MergeKey::Score(a), MergeKey::Score(b)) => b.total_cmp(a),
        (MergeKey::Numeric(a), MergeKey::Numeric(b)) => compare_optional(a, b, descending),
        (MergeKey::Keyword(a), MergeKey::Keyword(b)) => compare_optional(a, b, descending),
        // One plan yields one key kind; keep the order total regardless.
        _ => Ordering::Equal,
    };
    by_key.then_with(|| a.id.cmp(&b.id))
}

/// Merges the candidates of the shards that answered (`None`: failed) and keeps the
/// requested page.
pub(crate) fn merge(
    tops: &[Option<ShardTop>],
    plan: &QueryPlan,
    offset: usize,
    limit: usize,
) -> (u64, Vec<Candidate>) {
    let total = tops.iter().flatten().map(|top| top.total).sum();
    let descending = plan.sort.as_ref().is_some_and(|s| s.descending);
    let mut all: Vec<Candidate> = tops
        .iter()
        .flatten()
        .flat_map(|top| top.candidates.iter().cloned())
        .collect();
    all.sort_by(|a, b| compare_candidates(a, b, descending));
    let page = all.into_iter().skip(offset).take(limit).collect();
    (total, page)
}

/// Loads the page's documents and computes the highlights of its first
/// `highlight_max_hits`.
pub(crate) fn load_hits(
    shards: &[std::sync::Arc<ShardIndex>],
    tops: &[Option<ShardTop>],
    plan: &QueryPlan,
    page: Vec<Candidate>,
) -> Result<Vec<Hit>, SearchError> {
    let mut generators: HashMap<usize, Vec<(String, SnippetGenerator)>> = HashMap::new();
    let mut hits = Vec::with_capacity(page.len());
    for (position, candidate) in page.into_iter().enumerate() {
        let shard = &shards[candidate.shard];
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
            id: candidate.id,
            score,
            doc,
            highlights,
        });
    }
    Ok(hits)
}

fn snippet_generators(
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
fn highlight(
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
fn analysed_prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sorts by a numeric or date fast column through its monotonic u64 image. Unlike
/// Tantivy's typed sort, a segment where no document has the field (one holding only
/// tombstones, say) yields `None` keys instead of failing the search.
#[derive(Clone, Debug)]
struct NumericSortKey {
    field: String,
}

impl NumericSortKey {
    fn for_field(field: &str) -> Self {
        Self {
            field: field.to_owned(),
        }
    }
}

const NUMERIC_COLUMNS: [ColumnType; 5] = [
    ColumnType::I64,
    ColumnType::U64,
    ColumnType::F64,
    ColumnType::DateTime,
    ColumnType::Bool,
];

impl SortKeyComputer for NumericSortKey {
    type SortKey = Option<u64>;
    type Child = NumericSegmentSortKey;
    type Comparator = tantivy::collector::sort_key::NaturalComparator;

    fn segment_sort_key_computer(&self, segment: &SegmentReader) -> tantivy::Result<Self::Child> {
        let column = segment
            .fast_fields()
            .u64_lenient_for_type(Some(&NUMERIC_COLUMNS), &self.field)?
            .map(|(column, _)| column);
        Ok(NumericSegmentSortKey { column })
    }
}

struct NumericSegmentSortKey {
    column: Option<Column<u64>>,
}

impl SegmentSortKeyComputer for NumericSegmentSortKey {
    type SortKey = Option<u64>;
    type SegmentSortKey = Option<u64>;
    type SegmentComparator = tantivy::collector::sort_key::NaturalComparator;

    fn segment_sort_key(&mut self, doc: tantivy::DocId, _score: Score) -> Option<u64> {
        self.column.as_ref()?.first(doc)
    }

    fn convert_segment_sort_key(&self, sort_key: Option<u64>) -> Option<u64> {
        sort_key
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::search::SearchResponse;
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Arc;

    use sluice_core::DocId;

    use super::*;
    use crate::shard::tests::{delete, open_shard, upsert};

    const COLORS: [&str; 3] = ["red", "green", "blue"];
    const DOCS: usize = 40;

    fn source(i: usize) -> String {
        let mut doc = serde_json::json!({
            "id": format!("doc-{i:02}"),
            "title": format!("{} book number {i}", COLORS[i % 3]),
            "body": if i.is_multiple_of(2) { "the quick brown fox" } else { "lazy dogs sleep all day" },
            "tags": [format!("tag{}", i % 4)],
            "ts": 1_700_000_000 + (i as i64 % 7) * 3600,
            "score": (i % 5) as f64 / 2.0,
        });
        if i % 10 != 9 {
            doc["price"] = serde_json::json!((i as i64 % 13) * 10);
        }
        if i == 7 {
            doc["color_code"] = serde_json::json!("xyz");
        }
        serde_json::to_string(&doc).unwrap()
    }

    fn shards_with_corpus(dir: &Path, count: u32) -> Vec<Arc<ShardIndex>> {
        let shards: Vec<Arc<ShardIndex>> = (0..count)
            .map(|s| Arc::new(open_shard(&dir.join(format!("shard-{s}")), s)))
            .collect();
        let mut per_shard = vec![Vec::new(); count as usize];
        for i in 0..DOCS {
            let id = format!("doc-{i:02}");
            let shard = DocId::new(id.as_str()).unwrap().partition(count).0 as usize;
            per_shard[shard].push(upsert(&id, i as u64 + 1, &source(i)));
        }
        for (shard, events) in shards.iter().zip(per_shard) {
            shard.apply(events).unwrap();
            shard.commit().unwrap();
        }
        shards
    }

    fn run(
        shards: &[Arc<ShardIndex>],
        request: SearchRequest,
    ) -> Result<SearchResponse, SearchError> {
        run_with(shards, request, &test_settings())
    }

    /// The defaults, with a result window of 1,000.
    fn test_settings() -> SearchSettings {
        SearchSettings {
            max_result_window: 1000,
            ..SearchSettings::from_config(&IndexerConfig::default())
        }
    }

    fn run_with(
        shards: &[Arc<ShardIndex>],
        request: SearchRequest,
        settings: &SearchSettings,
    ) -> Result<SearchResponse, SearchError> {
        let normalized = NormalizedRequest::new(&request, shards[0].schema(), settings)?;
        let plan = plan_on_parse_stack(&shards[0], &normalized, settings)?;
        let tops = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| collect_shard(i, shard, &plan, normalized.top_k()).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let (total, page) = merge(&tops, &plan, normalized.offset(), normalized.limit());
        let hits = load_hits(shards, &tops, &plan, page)?;
        Ok(SearchResponse {
            total,
            hits,
            took_ms: 0,
            ..SearchResponse::empty()
        })
    }

    fn q(q: &str) -> SearchRequest {
        SearchRequest {
            q: Some(q.to_owned()),
            limit: Some(100),
            ..SearchRequest::default()
        }
    }

    fn total(shards: &[Arc<ShardIndex>], request: SearchRequest) -> u64 {
        run(shards, request).unwrap().total
    }

    fn ids(response: &SearchResponse) -> Vec<String> {
        response.hits.iter().map(|h| h.id.clone()).collect()
    }

    fn field(hit: &Hit, name: &str) -> Value {
        let doc: Value = serde_json::from_str(hit.doc.get()).unwrap();
        doc[name].clone()
    }

    fn expected(predicate: impl Fn(usize) -> bool) -> u64 {
        (0..DOCS).filter(|i| predicate(*i)).count() as u64
    }

    #[test]
    fn term_phrase_boolean_and_filters_count_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 2);
        assert_eq!(total(&shards, SearchRequest::default()), DOCS as u64);
        assert_eq!(total(&shards, q("*")), DOCS as u64);
        assert_eq!(total(&shards, q("red")), expected(|i| i % 3 == 0));
        assert_eq!(total(&shards, q("title:red")), expected(|i| i % 3 == 0));
        assert_eq!(
            total(&shards, q("\"quick brown\"")),
            expected(|i| i % 2 == 0)
        );
        assert_eq!(total(&shards, q("\"brown quick\"")), 0);
        assert_eq!(
            total(&shards, q("red AND body:lazy")),
            expected(|i| i % 3 == 0 && i % 2 == 1)
        );
        assert_eq!(
            total(&shards, q("red -body:lazy")),
            expected(|i| i % 3 == 0 && i % 2 == 0)
        );
        assert_eq!(total(&shards, q("red OR green")), expected(|i| i % 3 != 2));
        // Undeclared fields are searchable through the dynamic JSON field.
        let found = run(&shards, q("color_code:xyz")).unwrap();
        assert_eq!(ids(&found), ["doc-07"]);

        let filtered = |q: Option<&str>, filter: &[&str]| {
            total(
                &shards,
                SearchRequest {
                    q: q.map(str::to_owned),
                    filter: filter.iter().map(|f| f.to_string()).collect(),
                    ..SearchRequest::default()
                },
            )
        };
        assert_eq!(filtered(None, &["tags:tag1"]), expected(|i| i % 4 == 1));
        let price = |i: usize| (i % 10 != 9).then_some((i % 13) * 10);
        assert_eq!(
            filtered(None, &["price:[30 TO 60]"]),
            expected(|i| price(i).is_some_and(|p| (30..=60).contains(&p)))
        );
        assert_eq!(
            filtered(Some("red"), &["tags:tag0", "price:[0 TO 1000]"]),
            expected(|i| i % 3 == 0 && i % 4 == 0 && price(i).is_some())
        );
        assert_eq!(
            filtered(None, &["tags:tag0 OR tags:tag1"]),
            expected(|i| i % 4 < 2)
        );
        // Filters do not score: the scores of a filtered query equal the unfiltered ones.
        let plain = run(&shards, q("red")).unwrap();
        let with_filter = run(
            &shards,
            SearchRequest {
                filter: vec!["tags:tag0".into()],
                ..q("red")
            },
        )
        .unwrap();
        for hit in &with_filter.hits {
            let same = plain.hits.iter().find(|h| h.id == hit.id).unwrap();
            assert_eq!(same.score, hit.score);
        }
    }

    #[test]
    fn sorts_by_fields_in_both_directions_with_missing_values_last() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 3);
        for (sort, descending) in [("price:asc", false), ("price:desc", true)] {
            let response = run(
                &shards,
                SearchRequest {
                    sort: Some(sort.into()),
                    limit: Some(DOCS),
                    ..SearchRequest::default()
                },
            )
            .unwrap();
            assert_eq!(response.hits.len(), DOCS);
            assert!(response.hits.iter().all(|h| h.score.is_none()));
            let prices: Vec<Option<i64>> = response
                .hits
                .iter()
                .map(|h| field(h, "price").as_i64())
                .collect();
            let present = prices.iter().take_while(|p| p.is_some()).count();
            assert_eq!(present, DOCS - 4, "missing prices come last: {prices:?}");
            assert!(prices[present..].iter().all(Option::is_none));
            let values: Vec<i64> = prices[..present].iter().map(|p| p.unwrap()).collect();
            let mut sorted = values.clone();
            sorted.sort();
            if descending {
                sorted.reverse();
            }
            assert_eq!(values, sorted, "{sort}");
            // Ties are broken by id, ascending.
            for pair in response.hits[..present].windows(2) {
                if field(&pair[0], "price") == field(&pair[1], "price") {
                    assert!(pair[0].id < pair[1].id);
                }
            }
        }
        for sort in ["score:desc", "ts:asc", "tags:asc", "id:desc"] {
            let response = run(
                &shards,
                SearchRequest {
                    sort: Some(sort.into()),
                    limit: Some(DOCS),
                    ..SearchRequest::default()
                },
            )
            .unwrap();
            assert_eq!(response.hits.len(), DOCS, "{sort}");
        }
        let by_id = run(
            &shards,
            SearchRequest {
                sort: Some("id:desc".into()),
                limit: Some(3),
                ..SearchRequest::default()
            },
        )
        .unwrap();
        assert_eq!(ids(&by_id), ["doc-39", "doc-38", "doc-37"]);
    }

    #[test]
    fn pages_neither_overlap_nor_skip() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 2);
        for sort in [None, Some("price:desc"), Some("tags:asc")] {
            let mut seen = Vec::new();
            for page in 0..6 {
                let response = run(
                    &shards,
                    SearchRequest {
                        q: Some("book".into()),
                        sort: sort.map(str::to_owned),
                        limit: Some(7),
                        offset: Some(page * 7),
                        ..SearchRequest::default()
                    },
                )
                .unwrap();
                assert_eq!(response.total, DOCS as u64);
                seen.extend(ids(&response));
            }
            let distinct: HashSet<&String> = seen.iter().collect();
            assert_eq!(seen.len(), DOCS, "{sort:?}");
            assert_eq!(distinct.len(), DOCS, "{sort:?}: pages overlap");
        }
    }

    #[test]
    fn highlights_mark_matched_terms_from_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 2);
        let response = run(&shards, q("red fox")).unwrap();
        assert!(!response.hits.is_empty());
        for hit in &response.hits {
            let title = field(hit, "title");
            if title.as_str().unwrap().starts_with("red") {
                let snippet = hit.highlights["title"][0].as_str().unwrap();
                assert!(snippet.contains("<em>red</em>"), "{snippet}");
            }
            if field(hit, "body").as_str().unwrap().contains("fox") {
                let snippet = hit.highlights["body"][0].as_str().unwrap();
                assert!(snippet.contains("<em>fox</em>"), "{snippet}");
            }
        }
        // Only fields the query touches are highlighted, and highlight=false turns it off.
        let title_only = run(&shards, q("title:green")).unwrap();
        assert!(title_only
            .hits
            .iter()
            .all(|h| h.highlights.keys().eq(["title"])));
        let off = run(
            &shards,
            SearchRequest {
                highlight: Some(false),
                ..q("red")
            },
        )
        .unwrap();
        assert!(off.hits.iter().all(|h| h.highlights.is_empty()));
        let all = run(&shards, SearchRequest::default()).unwrap();
        assert!(all.hits.iter().all(|h| h.highlights.is_empty()));
    }

    #[test]
    fn invalid_requests_are_invalid_query_with_clear_messages() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 1);
        let cases = [
            (q("title:(red"), "invalid query"),
            (q("price:[1 TO"), "invalid query"),
            (
                SearchRequest {
                    sort: Some("title:asc".into()),
                    ..Default::default()
                },
                "text field",
            ),
            (
                SearchRequest {
                    sort: Some("nope:desc".into()),
                    ..Default::default()
                },
                "no such field",
            ),
            (
                SearchRequest {
                    sort: Some("price:up".into()),
                    ..Default::default()
                },
                "direction",
            ),
            (
                SearchRequest {
                    filter: vec!["title:red".into()],
                    ..Default::default()
                },
                "text field",
            ),
            (
                SearchRequest {
                    filter: vec!["tag0".into()],
                    ..Default::default()
                },
                "name a field",
            ),
            (
                SearchRequest {
                    filter: vec!["nope:1".into()],
                    ..Default::default()
                },
                "no field",
            ),
            (
                SearchRequest {
                    filter: vec!["price:abc".into()],
                    ..Default::default()
                },
                "price",
            ),
            (
                SearchRequest {
                    limit: Some(900),
                    offset: Some(101),
                    ..Default::default()
                },
                "1000",
            ),
        ];
        for (request, needle) in cases {
            match run(&shards, request.clone()) {
                Err(SearchError::InvalidQuery(message)) => {
                    assert!(message.contains(needle), "{request:?}: {message}")
                }
                other => panic!("{request:?}: {other:?}"),
            }
        }
        assert_eq!(
            SearchError::InvalidQuery(String::new()).code(),
            sluice_core::ErrorCode::InvalidQuery
        );
    }

    #[test]
    fn many_shards_give_the_same_results_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let one = shards_with_corpus(&dir.path().join("one"), 1);
        let four = shards_with_corpus(&dir.path().join("four"), 4);
        assert!(
            four.iter().all(|s| s.searcher().num_docs() > 0),
            "corpus spread over shards"
        );
        let requests = [
            SearchRequest::default(),
            q("red"),
            q("book"),
            SearchRequest {
                sort: Some("price:asc".into()),
                limit: Some(15),
                offset: Some(5),
                ..q("book")
            },
            SearchRequest {
                filter: vec!["tags:tag2".into()],
                sort: Some("ts:desc".into()),
                ..Default::default()
            },
        ];
        for request in requests {
            let a = run(&one, request.clone()).unwrap();
            let b = run(&four, request.clone()).unwrap();
            assert_eq!(a.total, b.total, "{request:?}");
            if request.sort.is_some() || request.q.is_none() {
                // Field sorts (and match-all) are fully determined; scores differ across
                // shard counts because term statistics are per shard.
                assert_eq!(ids(&a), ids(&b), "{request:?}");
            }
        }
    }

    #[test]
    fn deleted_documents_leave_totals_and_hits() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 1);
        shards[0]
            .apply(vec![delete("doc-00", 100), delete("doc-03", 101)])
            .unwrap();
        assert_eq!(
            total(&shards, q("red")),
            expected(|i| i % 3 == 0),
            "uncommitted"
        );
        shards[0].commit().unwrap();
        assert_eq!(total(&shards, q("red")), expected(|i| i % 3 == 0) - 2);
        assert_eq!(total(&shards, SearchRequest::default()), DOCS as u64 - 2);
        let response = run(
            &shards,
            SearchRequest {
                limit: Some(DOCS),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!ids(&response).contains(&"doc-00".to_owned()));
    }

    /// Query text near Tantivy's grammar: fields, operators, brackets, quotes, ranges,
    /// regexes, boosts, escapes, and a little of everything else.
    fn query_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let token = prop::sample::select(vec![
            "title:",
            "body:",
            "price:",
            "tags:",
            "ts:",
            "score:",
            "color_code:",
            "id:",
            "nope:",
            "AND",
            "OR",
            "NOT",
            "IN",
            "TO",
            "(",
            ")",
            "\"",
            "[",
            "]",
            "{",
            "}",
            "*",
            "^2",
            "^",
            "~1",
            "+",
            "-",
            ":",
            "\\",
            "/re.*d/",
            "red",
            "book",
            "tag1",
            "1",
            "-3",
            "1.5",
            "1e400",
            "2024-01-01T00:00:00Z",
            "doc-01",
            "\u{0}",
            "é",
            " ",
            " ",
            ">",
            "<=",
            "!",
            "?",
            "'",
        ]);
        prop_oneof![
            prop::collection::vec(token.clone(), 0..12).prop_map(|t| t.concat()),
            prop::collection::vec(token, 0..8).prop_map(|t| t.join(" ")),
            any::<String>(),
        ]
    }

    /// Deep, wide and malformed query text: nesting far past the limit, operator chains,
    /// unmatched brackets and quotes, huge lengths, and soup of all of it.
    fn hostile_query_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "(", ")", "NOT ", "-", "+", "\"", "'", "[", "]", "{", "}", "title:(", "body:", "tags:",
            "price:>", " TO ", "AND ", "OR ", "IN [", "/", "red", "*", "^3", "\\", " ",
        ]);
        prop_oneof![
            (1usize..6000, query_text()).prop_map(|(n, inner)| format!(
                "{}{inner}{}",
                "(".repeat(n),
                ")".repeat(n)
            )),
            (1usize..6000).prop_map(|n| format!("{}red", "NOT ".repeat(n))),
            (1usize..6000).prop_map(|n| format!("{}red)", "title:(".repeat(n))),
            (1usize..6000).prop_map(|n| format!("{}red", "-(".repeat(n))),
            (
                prop::sample::select(vec!["(", "[", "{", "\"", "'", "NOT ", ")", "/"]),
                1usize..200_000
            )
                .prop_map(|(unit, n)| unit.repeat(n)),
            prop::collection::vec(piece.clone(), 0..400).prop_map(|p| p.concat()),
            (prop::collection::vec(piece, 0..40), 1usize..500)
                .prop_map(|(p, n)| p.concat().repeat(n)),
        ]
    }

    /// The parse entry point (validation, then planning on the parse thread) answers
    /// every such input with a plan or a typed refusal, and never panics or aborts.
    #[test]
    fn hostile_queries_and_filters_are_planned_or_refused_never_fatal() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestCaseError, TestRunner};

        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 1);
        let settings = test_settings();
        let strategy = (
            prop::option::of(hostile_query_text()),
            prop::collection::vec(hostile_query_text(), 0..3),
        );
        let mut runner = TestRunner::new(Config::with_cases(192));
        runner
            .run(&strategy, |(q, filter)| {
                let request = SearchRequest {
                    q,
                    filter,
                    limit: Some(5),
                    ..SearchRequest::default()
                };
                let normalized =
                    match NormalizedRequest::new(&request, shards[0].schema(), &settings) {
                        Ok(normalized) => normalized,
                        Err(SearchError::InvalidQuery(_) | SearchError::QueryTooComplex(_)) => {
                            return Ok(())
                        }
                        Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                    };
                match plan_on_parse_stack(&shards[0], &normalized, &settings) {
                    Ok(plan) => {
                        let top = collect_shard(0, &shards[0], &plan, 5)
                            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                        prop_assert!(top.total <= DOCS as u64);
                        Ok(())
                    }
                    Err(SearchError::InvalidQuery(_) | SearchError::QueryTooComplex(_)) => Ok(()),
                    Err(other) => Err(TestCaseError::fail(format!("{other:?}"))),
                }
            })
            .unwrap();
    }

    /// The deepest query the largest `max_query_depth` lets through is planned,
    /// collected, highlighted and dropped with a 2 MiB stack, the stack of tokio's
    /// blocking threads (which run every step but the parse).
    #[test]
    fn the_deepest_allowed_query_runs_on_a_blocking_thread_stack() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 1);
        let max_depth = sluice_core::config::MAX_QUERY_DEPTH;
        let settings = SearchSettings {
            query: QueryLimits {
                max_length: sluice_core::config::MAX_QUERY_LENGTH,
                max_depth,
            },
            ..test_settings()
        };
        let levels = max_depth / 2;
        let text = format!(
            "{}red{}",
            "red OR NOT (red OR ".repeat(levels),
            ")".repeat(levels)
        );
        assert!(settings.query.check_depth("q", &text).is_ok());
        let answered = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || run_with(&shards, q(&text), &settings).map(|r| r.total))
            .unwrap()
            .join()
            .unwrap();
        assert!(answered.is_ok(), "{answered:?}");
    }

    #[test]
    fn highlights_cover_the_first_hits_and_the_first_bytes_of_a_field_only() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 2);
        let settings = SearchSettings {
            highlight_max_hits: 3,
            ..test_settings()
        };
        let response = run_with(&shards, q("book"), &settings).unwrap();
        assert_eq!(response.hits.len(), DOCS);
        for (position, hit) in response.hits.iter().enumerate() {
            assert_eq!(
                hit.highlights.is_empty(),
                position >= 3,
                "hit {position}: {:?}",
                hit.highlights
            );
        }
        // "book" is the second word of every title: within 12 bytes ("red book", "blue
        // book", "green book"), not within 5.
        for (max_analyzed, marked) in [(12, true), (5, false)] {
            let settings = SearchSettings {
                highlight_max_analyzed: max_analyzed,
                ..test_settings()
            };
            let response = run_with(&shards, q("title:book"), &settings).unwrap();
            for hit in &response.hits {
                assert_eq!(
                    hit.highlights.contains_key("title"),
                    marked,
                    "{max_analyzed}: {:?}",
                    hit.highlights
                );
            }
        }
        assert_eq!(analysed_prefix("héllo", 2), "h");
        assert_eq!(analysed_prefix("héllo", 3), "hé");
        assert_eq!(analysed_prefix("héllo", 64), "héllo");
    }

    #[test]
    fn arbitrary_queries_filters_and_sorts_answer_or_are_invalid_query() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestCaseError, TestRunner};

        // One index for every case: building one per case would dominate the run.
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 2);
        let strategy = (
            prop::option::of(query_text()),
            prop::collection::vec(query_text(), 0..3),
            prop::option::of(prop_oneof![
                "(title|price|ts|tags|score|id|nope|body)(:(asc|desc|up))?",
                any::<String>(),
            ]),
            0usize..30,
            0usize..30,
        );
        let mut runner = TestRunner::new(Config::with_cases(256));
        runner
            .run(&strategy, |(q, filter, sort, limit, offset)| {
                let request = SearchRequest {
                    q,
                    filter,
                    sort,
                    limit: Some(limit),
                    offset: Some(offset),
                    highlight: Some(true),
                };
                match run(&shards, request) {
                    Ok(response) => {
                        prop_assert!(response.total <= DOCS as u64);
                        prop_assert!(response.hits.len() <= limit);
                        Ok(())
                    }
                    Err(SearchError::InvalidQuery(_) | SearchError::QueryTooComplex(_)) => Ok(()),
                    Err(other) => Err(TestCaseError::fail(format!("{other:?}"))),
                }
            })
            .unwrap();
    }
}
