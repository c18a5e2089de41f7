//! The search port: what a search asks and answers, and the service that answers it.
//!
//! The HTTP layer serves searches and the store-down fallback reads of documents through
//! [`SearchService`]; the indexer role implements it over its Tantivy shards, and the
//! binary wires the two. The request and response types are the wire format of
//! `GET/POST /v1/collections/{c}/search` (query string or JSON body in, JSON out).

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ErrorCode;
use crate::ids::{CollectionName, DocId, Seq};

/// Searches and indexed reads of a node's collections.
#[async_trait]
pub trait SearchService: Send + Sync + 'static {
    /// One page of `request`'s results over every shard of `collection`.
    async fn search(
        &self,
        collection: &CollectionName,
        request: &SearchRequest,
    ) -> Result<SearchResponse, SearchError>;

    /// One page of `request`'s results over every shard of several collections at once
    /// (Elasticsearch's comma lists and `*` patterns of indices): hits merged in one
    /// order and aggregations over all of them; each hit names its collection. Not
    /// cached.
    async fn search_many(
        &self,
        collections: &[CollectionName],
        request: &SearchRequest,
    ) -> Result<SearchResponse, SearchError>;

    /// What the index holds for `id`, as of its shard's last commit (the read served
    /// while the store is down); `None` when the index has never seen the id.
    async fn indexed_copy(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<IndexedCopy>, SearchError>;
}

/// A search request (query string parameters or JSON body).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Tantivy query syntax over the text fields (and undeclared fields); missing, empty
    /// or `*` matches every document.
    pub q: Option<String>,
    /// Filters in Tantivy syntax on keyword, string, numeric, bool or datetime fields,
    /// ANDed together, not scored (`tags:t1`, `price:[10 TO 100]`).
    #[serde(default)]
    pub filter: Vec<String>,
    /// `field:asc` or `field:desc` on a numeric, datetime, keyword or string field;
    /// relevance when absent.
    pub sort: Option<String>,
    /// Hits to return (default 10).
    pub limit: Option<usize>,
    /// Hits to skip (default 0).
    pub offset: Option<usize>,
    /// Whether to compute highlights (default true).
    pub highlight: Option<bool>,
    /// A query in the Elasticsearch query DSL (`{"match": {"title": "fox"}}`), ANDed
    /// with `q` and `filter`; JSON body only.
    pub query: Option<Value>,
    /// Aggregations in Elasticsearch's request shape (`{"by_tag": {"terms": {"field":
    /// "tags"}}}`), computed over every matching document; JSON body only.
    #[serde(alias = "aggregations")]
    pub aggs: Option<Value>,
}

/// A page of results.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchResponse {
    /// Exact number of matching documents (of the shards that answered, when `partial`).
    pub total: u64,
    /// The requested page.
    pub hits: Vec<Hit>,
    /// Time this call took, in milliseconds.
    pub took_ms: u64,
    /// Some shards failed or timed out: the results are those of the others. Present
    /// only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The shards that failed, when `partial`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_shards: Vec<u32>,
    /// Every shard failed: this is the last complete result of the same request, served
    /// from the cache; newer writes may be missing. Present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// The results of the request's `aggs`, in Elasticsearch's response shape, under
    /// the names the request gave them. Present only when the request asked for some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregations: Option<Value>,
}

impl SearchResponse {
    /// A cheap estimate of the memory this response holds, in bytes (what the result
    /// cache weighs it by): the documents' and snippets' text plus a fixed cost per
    /// hit and per snippet.
    pub fn estimated_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.failed_shards.len() * std::mem::size_of::<u32>()
            + self.hits.iter().map(Hit::estimated_size).sum::<usize>()
            + self
                .aggregations
                .as_ref()
                .map_or(0, |aggregations| aggregations.to_string().len())
    }

    /// No hits, no flags.
    pub fn empty() -> Self {
        Self {
            total: 0,
            hits: Vec::new(),
            took_ms: 0,
            partial: false,
            failed_shards: Vec::new(),
            stale: false,
            aggregations: None,
        }
    }
}

/// One matching document.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Hit {
    /// The document id.
    pub id: String,
    /// Relevance; `null` when sorted by a field.
    pub score: Option<f32>,
    /// The stored canonical JSON, as is.
    pub doc: Box<RawValue>,
    /// Text field name → snippets with `<em>` marks around matched terms.
    pub highlights: Map<String, Value>,
    /// The collection of the hit, in a search over several collections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
}

impl Hit {
    pub fn estimated_size(&self) -> usize {
        // A map entry or an array slot costs about a pointer-sized node besides its text.
        const SLOT: usize = 4 * std::mem::size_of::<usize>();
        let snippets: usize = self
            .highlights
            .iter()
            .map(|(field, snippets)| {
                let texts: usize = match snippets {
                    Value::Array(items) => items
                        .iter()
                        .map(|item| SLOT + item.as_str().map_or(0, str::len))
                        .sum(),
                    _ => SLOT,
                };
                SLOT + field.len() + texts
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.id.len()
            + self.doc.get().len()
            + snippets
            + self.collection.as_ref().map_or(0, String::len)
    }
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request cannot be run as asked (bad syntax, unknown or unsortable field, window
    /// too large); the message says what to change.
    #[error("{0}")]
    InvalidQuery(String),
    /// The query text is longer, or a query or filter nested deeper, than the limits
    /// allow (`indexer.max_query_length`, `indexer.max_query_depth`); the message names
    /// the limit.
    #[error("{0}")]
    QueryTooComplex(String),
    /// No such collection.
    #[error("collection not found")]
    CollectionNotFound,
    /// The collection's index is not ready (still building); retry later.
    #[error("index unavailable: {0}")]
    Unavailable(String),
    /// An unexpected failure while searching; details are logged.
    #[error("search failed: {0}")]
    Internal(String),
}

impl SearchError {
    /// The code users see.
    pub fn code(&self) -> ErrorCode {
        match self {
            SearchError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            SearchError::QueryTooComplex(_) => ErrorCode::QueryTooComplex,
            SearchError::CollectionNotFound => ErrorCode::CollectionNotFound,
            SearchError::Unavailable(_) => ErrorCode::Unavailable,
            SearchError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// What the index holds for one id, as of its shard's last commit.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexedCopy {
    /// The document's canonical JSON, written at `seq`.
    Live {
        /// The canonical JSON, as ingested.
        source: Bytes,
        /// The op sequence of this version.
        seq: Seq,
    },
    /// A delete at `seq` is the last indexed change.
    Deleted {
        /// The op sequence of the delete.
        seq: Seq,
    },
}
