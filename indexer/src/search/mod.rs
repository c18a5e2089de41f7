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
//!
//! # Layout
//! - this module: the configured bounds and the normalized request (defaults, window,
//!   sort field checked against the schema);
//! - [`plan`]: parsing the query and filters into one Tantivy query per request;
//! - [`dsl`]: the query DSL (`query`, Elasticsearch's JSON shape) compiled into it;
//! - [`aggs`]: aggregations (`aggs`) over the same matches, merged across shards;
//! - [`collect`]: per-shard top-k collection, the total order and the cross-shard merge;
//! - [`hits`]: loading the page's documents and their highlights.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;
use sluice_core::config::IndexerConfig;

use sluice_core::search::{SearchError, SearchRequest};

use crate::index_schema::{IndexSchema, SortKind};
use crate::query_limits::QueryLimits;

mod aggs;
mod collect;
mod dsl;
mod hits;
mod plan;

pub(crate) use collect::{collect_shard, merge, merge_aggregations, ShardTop};
pub(crate) use hits::load_hits;
pub(crate) use plan::{plan_on_parse_stack, QueryPlan};

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

/// A JSON member of a request (`query`, `aggs`), compared and hashed by its compact text.
#[derive(Clone, Debug)]
pub(crate) struct CanonicalJson {
    text: String,
    value: Arc<Value>,
}

impl CanonicalJson {
    fn new(value: &Value) -> Self {
        Self {
            text: value.to_string(),
            value: Arc::new(value.clone()),
        }
    }

    pub(crate) fn value(&self) -> &Value {
        &self.value
    }
}

impl PartialEq for CanonicalJson {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CanonicalJson {}

impl Hash for CanonicalJson {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

/// A validated request with its defaults filled in: the cache key's request part, so
/// equivalent spellings of a request share one cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NormalizedRequest {
    q: Option<String>,
    filters: Vec<String>,
    query: Option<CanonicalJson>,
    aggs: Option<CanonicalJson>,
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
            refuse_nul("q", q)?;
            limits.check_depth("q", q)?;
        }
        for (n, filter) in request.filter.iter().enumerate() {
            let what = format!("filter {}", n + 1);
            refuse_nul(&what, filter)?;
            limits.check_depth(&what, filter)?;
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
        let query = match &request.query {
            None => None,
            Some(Value::Object(clause)) if clause.is_empty() => None,
            Some(query) => Some(CanonicalJson::new(query)),
        };
        let aggs = match &request.aggs {
            None => None,
            Some(Value::Object(aggs)) if aggs.is_empty() => None,
            Some(aggs) => Some(CanonicalJson::new(aggs)),
        };
        Ok(Self {
            q,
            filters,
            query,
            aggs,
            sort,
            limit,
            offset,
            highlight: request.highlight.unwrap_or(true),
        })
    }

    /// Whether results of `self` and `other` sort in one order (the same sort, or
    /// both by relevance).
    pub fn sorts_like(&self, other: &Self) -> bool {
        self.sort == other.sort
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
            + [&self.query, &self.aggs]
                .iter()
                .filter_map(|json| json.as_ref())
                .map(|json| 2 * json.text.len())
                .sum::<usize>()
    }
}

/// Refuses query text with a NUL character: no field name or term has one, and Tantivy
/// separates JSON paths from values with it, so its parser trips over one inside a path.
fn refuse_nul(what: &str, text: &str) -> Result<(), SearchError> {
    if text.contains('\0') {
        return Err(SearchError::InvalidQuery(format!(
            "{what} contains a NUL character, which no field name or term can hold"
        )));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use sluice_core::search::SearchResponse;
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Arc;

    use sluice_core::DocId;

    use serde_json::Value;
    use sluice_core::search::Hit;

    use super::hits::analysed_prefix;
    use super::*;
    use crate::shard::tests::{delete, open_shard, upsert};
    use crate::shard::ShardIndex;

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
        let mut tops = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| collect_shard(i, shard, &plan, normalized.top_k()).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let (total, page) = merge(&tops, &plan, normalized.offset(), normalized.limit());
        let aggregations = merge_aggregations(&mut tops, &plan)?;
        let plans = vec![&plan; shards.len()];
        let hits = load_hits(shards, &tops, &plans, None, page)?;
        Ok(SearchResponse {
            total,
            hits,
            aggregations,
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

    fn dsl(query: Value) -> SearchRequest {
        SearchRequest {
            query: Some(query),
            limit: Some(100),
            ..SearchRequest::default()
        }
    }

    fn dsl_total(shards: &[Arc<ShardIndex>], query: Value) -> u64 {
        run(shards, dsl(query.clone()))
            .unwrap_or_else(|error| panic!("{query}: {error}"))
            .total
    }

    /// Hours past the first `ts` of the test corpus (`1_700_000_000` seconds).
    fn ts_hours(i: usize) -> i64 {
        i as i64 % 7
    }

    fn price(i: usize) -> Option<i64> {
        (i % 10 != 9).then_some((i as i64 % 13) * 10)
    }

    #[test]
    fn the_query_dsl_counts_what_the_corpus_holds() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 2);
        let base = 1_700_000_000_i64 * 1000;
        let cases: Vec<(Value, u64)> = vec![
            (json!({"match_all": {}}), DOCS as u64),
            (json!({"match_none": {}}), 0),
            (json!({"match": {"title": "red"}}), expected(|i| i % 3 == 0)),
            (
                json!({"match": {"title": "Red Green"}}),
                expected(|i| i % 3 != 2),
            ),
            (
                json!({"match": {"title": {"query": "red book", "operator": "and"}}}),
                expected(|i| i % 3 == 0),
            ),
            (
                json!({"match": {"title": {"query": "red green number", "minimum_should_match": 2}}}),
                expected(|i| i % 3 != 2),
            ),
            (
                json!({"match_phrase": {"body": "quick brown"}}),
                expected(|i| i % 2 == 0),
            ),
            (json!({"match_phrase": {"body": "brown quick"}}), 0),
            (
                json!({"match_phrase": {"body": {"query": "quick fox", "slop": 1}}}),
                expected(|i| i % 2 == 0),
            ),
            (
                json!({"multi_match": {"query": "lazy red", "fields": ["title", "body^2"]}}),
                expected(|i| i % 3 == 0 || i % 2 == 1),
            ),
            (
                json!({"multi_match": {"query": "quick brown", "type": "phrase"}}),
                expected(|i| i % 2 == 0),
            ),
            (
                json!({"query_string": {"query": "red AND body:lazy"}}),
                expected(|i| i % 3 == 0 && i % 2 == 1),
            ),
            (
                json!({"query_string": {"query": "red lazy", "default_operator": "AND"}}),
                expected(|i| i % 3 == 0 && i % 2 == 1),
            ),
            (
                json!({"simple_query_string": {"query": "red -lazy", "default_operator": "and"}}),
                expected(|i| i % 3 == 0 && i % 2 == 0),
            ),
            (
                json!({"simple_query_string": {"query": "red \"quick brown\""}}),
                expected(|i| i % 3 == 0 || i % 2 == 0),
            ),
            (json!({"term": {"tags": "tag1"}}), expected(|i| i % 4 == 1)),
            (json!({"term": {"tags": {"value": "TAG1"}}}), 0),
            (
                json!({"term": {"price": 30}}),
                expected(|i| price(i) == Some(30)),
            ),
            (json!({"term": {"_id": "doc-07"}}), 1),
            (
                json!({"terms": {"tags": ["tag1", "tag2"]}}),
                expected(|i| i % 4 == 1 || i % 4 == 2),
            ),
            (json!({"ids": {"values": ["doc-01", "doc-02", "nope"]}}), 2),
            (
                json!({"range": {"price": {"gte": 30, "lt": 70}}}),
                expected(|i| price(i).is_some_and(|p| (30..70).contains(&p))),
            ),
            (
                json!({"range": {"price": {"gt": 30}}}),
                expected(|i| price(i).is_some_and(|p| p > 30)),
            ),
            (
                json!({"range": {"score": {"lte": 1.0}}}),
                expected(|i| (i % 5) as f64 / 2.0 <= 1.0),
            ),
            (
                json!({"range": {"ts": {"gte": base + 2 * 3_600_000, "lt": base + 5 * 3_600_000}}}),
                expected(|i| (2..5).contains(&ts_hours(i))),
            ),
            (
                json!({"range": {"ts": {"gte": "2023-11-14T22:13:20Z||+2h", "lte": "2023-11-14T22:13:20Z||+4h"}}}),
                expected(|i| (2..=4).contains(&ts_hours(i))),
            ),
            (
                json!({"range": {"ts": {"gte": "2023-11-14T23:13:20+01:00"}}}),
                DOCS as u64,
            ),
            (
                json!({"range": {"ts": {"lt": "2023-11-15", "time_zone": "+01:00"}}}),
                expected(|i| ts_hours(i) < 1),
            ),
            (json!({"range": {"ts": {"gte": "now-1h"}}}), 0),
            (
                json!({"range": {"ts": {"gte": (base + 3_600_000).to_string(), "format": "epoch_millis"}}}),
                expected(|i| ts_hours(i) >= 1),
            ),
            (
                json!({"range": {"ts": {"lt": base / 1000 + 7_200, "format": "strict_date_optional_time||epoch_second"}}}),
                expected(|i| ts_hours(i) < 2),
            ),
            (json!({"range": {"ts": {"lte": "now/d"}}}), DOCS as u64),
            (
                json!({"exists": {"field": "price"}}),
                expected(|i| price(i).is_some()),
            ),
            (json!({"exists": {"field": "body"}}), DOCS as u64),
            (json!({"prefix": {"tags": "tag"}}), DOCS as u64),
            (json!({"prefix": {"_id": "doc-1"}}), 10),
            (json!({"prefix": {"title": "gr"}}), expected(|i| i % 3 == 1)),
            (
                json!({"bool": {
                    "must": [{"match": {"title": "red"}}],
                    "filter": {"range": {"price": {"gte": 20}}},
                    "must_not": [{"term": {"tags": "tag0"}}]
                }}),
                expected(|i| i % 3 == 0 && price(i).is_some_and(|p| p >= 20) && i % 4 != 0),
            ),
            (
                json!({"bool": {"should": [{"term": {"tags": "tag1"}}, {"match": {"body": "lazy"}}]}}),
                expected(|i| i % 4 == 1 || i % 2 == 1),
            ),
            (
                json!({"bool": {
                    "should": [{"term": {"tags": "tag1"}}, {"match": {"body": "lazy"}}, {"match": {"title": "red"}}],
                    "minimum_should_match": 2
                }}),
                expected(|i| {
                    [i % 4 == 1, i % 2 == 1, i % 3 == 0]
                        .iter()
                        .filter(|b| **b)
                        .count()
                        >= 2
                }),
            ),
            (
                json!({"bool": {"should": [{"term": {"tags": "tag1"}}, {"match": {"title": "red"}}], "minimum_should_match": 3}}),
                0,
            ),
            (
                json!({"match": {"title": {"query": "red book", "minimum_should_match": 3}}}),
                0,
            ),
            (
                json!({"bool": {"must": {"match": {"title": "red"}}, "should": {"term": {"tags": "tag1"}}}}),
                expected(|i| i % 3 == 0),
            ),
            (
                json!({"bool": {"must_not": {"match": {"title": "red"}}}}),
                expected(|i| i % 3 != 0),
            ),
            (
                json!({"constant_score": {"filter": {"term": {"tags": "tag3"}}}}),
                expected(|i| i % 4 == 3),
            ),
            (json!({"match": {"color_code": "xyz"}}), 1),
        ];
        for (query, want) in cases {
            assert_eq!(dsl_total(&shards, query.clone()), want, "{query}");
        }
        // The DSL query ANDs with q and filters.
        let mut request = dsl(json!({"term": {"tags": "tag1"}}));
        request.q = Some("red".into());
        request.filter = vec!["price:[0 TO 60]".into()];
        assert_eq!(
            total(&shards, request),
            expected(|i| i % 4 == 1 && i % 3 == 0 && price(i).is_some_and(|p| p <= 60))
        );
    }

    #[test]
    fn the_query_dsl_refuses_what_it_cannot_honour_by_name() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 1);
        for (query, named) in [
            (json!({"wildcard": {"tags": "t*"}}), "[wildcard]"),
            (
                json!({"match": {"title": {"query": "x", "fuzziness": 2}}}),
                "[fuzziness]",
            ),
            (
                json!({"match": {"title": "x"}, "term": {"tags": "y"}}),
                "exactly one key",
            ),
            (json!({"term": {"price": "cheap"}}), "i64"),
            (
                json!({"range": {"ts": {"gte": "last tuesday"}}}),
                "not a date",
            ),
            (
                json!({"range": {"ts": {"gte": "now", "time_zone": "Europe/Paris"}}}),
                "time_zone",
            ),
            (
                json!({"range": {"nope": {"gte": 1}}}),
                "declares no such field",
            ),
            (json!({"simple_query_string": {"query": "a | b"}}), "'|'"),
            (
                json!({"simple_query_string": {"query": "a -b"}}),
                "-exclusion",
            ),
            (json!({"bool": {"must": {"bogus": {}}}}), "[bogus]"),
            (
                json!({"terms": {"tags": {"index": "other", "id": "1", "path": "tags"}}}),
                "terms lookup",
            ),
        ] {
            let error = run(&shards, dsl(query.clone())).unwrap_err();
            assert!(
                matches!(&error, SearchError::InvalidQuery(message) if message.contains(named)),
                "{query}: {error}"
            );
        }
        let mut deep = json!({"match_all": {}});
        for _ in 0..100 {
            deep = json!({"bool": {"must": deep}});
        }
        assert!(matches!(
            run(&shards, dsl(deep)),
            Err(SearchError::QueryTooComplex(_))
        ));
        let many: Vec<String> = (0..=dsl::MAX_TERMS).map(|n| format!("t{n}")).collect();
        let long = "word ".repeat(10_000);
        for query in [
            json!({"terms": {"tags": many}}),
            json!({"match": {"title": long}}),
            json!({"prefix": {"tags": long}}),
        ] {
            assert!(
                matches!(
                    run(&shards, dsl(query)),
                    Err(SearchError::QueryTooComplex(_))
                ),
                "an oversized clause is refused"
            );
        }
    }

    #[test]
    fn aggregations_merge_across_shards_into_the_corpus_counts() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 3);
        // A deleted document is in no bucket.
        shards[DocId::new("doc-00").unwrap().partition(3).0 as usize]
            .apply(vec![delete("doc-00", 1_000)])
            .unwrap();
        for shard in &shards {
            shard.commit().unwrap();
        }
        let live = |i: usize| i != 0;
        let request = SearchRequest {
            limit: Some(0),
            aggs: Some(json!({
                "by_tag": {"terms": {"field": "tags"}, "aggs": {"avg_price": {"avg": {"field": "price"}}}},
                "prices": {"stats": {"field": "price"}},
                "per_hour": {"date_histogram": {"field": "ts", "fixed_interval": "1h"}},
                "cheap": {"range": {"field": "price", "ranges": [{"to": 50}, {"from": 50}]}},
                "authors": {"cardinality": {"field": "tags"}},
                "p": {"percentiles": {"field": "price", "percents": [50]}},
                "per_day": {"date_histogram": {"field": "ts", "calendar_interval": "day"}},
            })),
            ..SearchRequest::default()
        };
        let response = run(&shards, request).unwrap();
        assert_eq!(response.total, expected(live));
        let aggs = response.aggregations.expect("aggregations");
        for bucket in aggs["by_tag"]["buckets"].as_array().unwrap() {
            let tag = bucket["key"].as_str().unwrap();
            let n: usize = tag.trim_start_matches("tag").parse().unwrap();
            let members: Vec<usize> = (0..DOCS).filter(|i| live(*i) && i % 4 == n).collect();
            assert_eq!(bucket["doc_count"], members.len() as u64, "{tag}");
            let prices: Vec<i64> = members.iter().filter_map(|i| price(*i)).collect();
            let avg = prices.iter().sum::<i64>() as f64 / prices.len() as f64;
            let got = bucket["avg_price"]["value"].as_f64().unwrap();
            assert!((got - avg).abs() < 1e-9, "{tag}: {got} vs {avg}");
        }
        assert_eq!(aggs["by_tag"]["buckets"].as_array().unwrap().len(), 4);
        let prices: Vec<i64> = (0..DOCS).filter(|i| live(*i)).filter_map(price).collect();
        assert_eq!(aggs["prices"]["count"], prices.len() as u64);
        assert_eq!(
            aggs["prices"]["sum"].as_f64().unwrap(),
            prices.iter().sum::<i64>() as f64
        );
        assert_eq!(
            aggs["prices"]["max"].as_f64().unwrap(),
            *prices.iter().max().unwrap() as f64
        );
        let hours = aggs["per_hour"]["buckets"].as_array().unwrap();
        assert_eq!(hours.len(), 7);
        let histogram_total: u64 = hours.iter().map(|b| b["doc_count"].as_u64().unwrap()).sum();
        assert_eq!(histogram_total, expected(live));
        let days = aggs["per_day"]["buckets"].as_array().unwrap();
        let day_total: u64 = days.iter().map(|b| b["doc_count"].as_u64().unwrap()).sum();
        assert_eq!(day_total, expected(live));
        let ranges = aggs["cheap"]["buckets"].as_array().unwrap();
        assert_eq!(
            ranges[0]["doc_count"],
            prices.iter().filter(|p| **p < 50).count() as u64
        );
        assert_eq!(
            ranges[1]["doc_count"],
            prices.iter().filter(|p| **p >= 50).count() as u64
        );
        assert_eq!(aggs["authors"]["value"], 4.0);
        assert!(
            aggs["p"]["values"]["50.0"].as_f64().is_some(),
            "{}",
            aggs["p"]
        );

        // Only the matches are aggregated.
        let request = SearchRequest {
            query: Some(json!({"match": {"title": "red"}})),
            aggs: Some(json!({"by_tag": {"terms": {"field": "tags"}}})),
            ..SearchRequest::default()
        };
        let aggs = run(&shards, request).unwrap().aggregations.unwrap();
        for bucket in aggs["by_tag"]["buckets"].as_array().unwrap() {
            let n: usize = bucket["key"].as_str().unwrap()[3..].parse().unwrap();
            let want = expected(|i| live(i) && i % 3 == 0 && i % 4 == n);
            assert_eq!(bucket["doc_count"], want, "{bucket}");
        }

        for (aggs, named) in [
            (json!({"t": {"terms": {"field": "title"}}}), "text field"),
            (
                json!({"t": {"terms": {"field": "nope"}}}),
                "declares no such field",
            ),
            (
                json!({"t": {"date_histogram": {"field": "ts", "calendar_interval": "month"}}}),
                "month",
            ),
            (
                json!({"t": {"terms": {"field": "tags"}, "avg": {"field": "price"}}}),
                "exactly one type",
            ),
        ] {
            let request = SearchRequest {
                aggs: Some(aggs.clone()),
                ..SearchRequest::default()
            };
            let error = run(&shards, request).unwrap_err();
            assert!(error.to_string().contains(named), "{aggs}: {error}");
        }
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

    /// Found by the generator below: a NUL before a field name tripped an assertion in
    /// Tantivy's JSON path handling (a 500 instead of a 400).
    #[test]
    fn a_nul_in_query_text_is_an_invalid_query() {
        let dir = tempfile::tempdir().unwrap();
        let shards = shards_with_corpus(dir.path(), 1);
        for (q, filter) in [
            (Some("\0title:~1"), vec![]),
            (None, vec!["\0tags:red".to_owned()]),
        ] {
            let request = SearchRequest {
                q: q.map(str::to_owned),
                filter,
                ..SearchRequest::default()
            };
            match run(&shards, request) {
                Err(SearchError::InvalidQuery(message)) => {
                    assert!(message.contains("NUL"), "{message}")
                }
                other => panic!("{q:?}: {other:?}"),
            }
        }
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
                    ..SearchRequest::default()
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
