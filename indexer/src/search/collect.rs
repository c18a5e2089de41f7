//! Per-shard collection: the count of matches, the `top_k` best candidates in the total
//! order (score or sort field, then id), and the merge of the shards' candidates.

use std::cmp::Ordering;

use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::collector::sort_key::{SortBySimilarityScore, SortByString};
use tantivy::collector::{Count, SegmentSortKeyComputer, SortKeyComputer, TopDocs};
use tantivy::columnar::{Column, ColumnType};
use tantivy::{DocAddress, Order, Score, Searcher, SegmentReader};

use sluice_core::search::SearchError;

use crate::error::internal;
use crate::index_schema::{SortKind, ID_FIELD};
use crate::shard::ShardIndex;

use super::aggs::agg_error;
use super::plan::QueryPlan;

/// The sort key of one candidate hit.
#[derive(Clone, Debug)]
pub(super) enum MergeKey {
    Score(Score),
    /// Monotonic u64 image of a numeric or date value; `None` when the doc has none.
    Numeric(Option<u64>),
    Keyword(Option<String>),
}

/// A hit before loading: where it is and how it sorts.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(super) key: MergeKey,
    pub(super) id: String,
    pub(super) shard: usize,
    pub(super) address: DocAddress,
}

/// What one shard found.
pub(crate) struct ShardTop {
    pub(super) searcher: Searcher,
    pub(super) total: u64,
    pub(super) candidates: Vec<Candidate>,
    /// The shard's share of the request's aggregations, before the merge.
    pub(super) aggregations: Option<IntermediateAggregationResults>,
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
        // No hits wanted: the count and the aggregations in one pass over the matches.
        let (total, aggregations) = match &plan.aggs {
            Some(aggs) => {
                let (total, aggregations) = searcher
                    .search(query, &(Count, aggs.collector()))
                    .map_err(agg_error)?;
                (total, Some(aggregations))
            }
            None => (searcher.search(query, &Count).map_err(internal)?, None),
        };
        return Ok(ShardTop {
            searcher,
            total: total as u64,
            candidates: Vec::new(),
            aggregations,
        });
    }
    let aggregations = plan
        .aggs
        .as_ref()
        .map(|aggs| searcher.search(query, &aggs.collector()).map_err(agg_error))
        .transpose()?;
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
        aggregations,
    })
}

/// Missing values sort last whatever the direction (as Tantivy's collectors do).
pub(super) fn compare_optional<T: Ord>(a: &Option<T>, b: &Option<T>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) if descending => b.cmp(a),
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

pub(super) fn compare_candidates(a: &Candidate, b: &Candidate, descending: bool) -> Ordering {
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

/// The request's aggregations over every shard that answered, merged; `None` when it
/// asked for none. Takes the shards' intermediate results out of `tops`.
pub(crate) fn merge_aggregations(
    tops: &mut [Option<ShardTop>],
    plan: &QueryPlan,
) -> Result<Option<serde_json::Value>, SearchError> {
    let Some(aggs) = &plan.aggs else {
        return Ok(None);
    };
    let shards = tops
        .iter_mut()
        .flatten()
        .filter_map(|top| top.aggregations.take());
    aggs.finish(shards).map(Some)
}

/// Sorts by a numeric or date fast column through its monotonic u64 image. Unlike
/// Tantivy's typed sort, a segment where no document has the field (one holding only
/// tombstones, say) yields `None` keys instead of failing the search.
#[derive(Clone, Debug)]
pub(super) struct NumericSortKey {
    pub(super) field: String,
}

impl NumericSortKey {
    fn for_field(field: &str) -> Self {
        Self {
            field: field.to_owned(),
        }
    }
}

pub(super) const NUMERIC_COLUMNS: [ColumnType; 5] = [
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

pub(super) struct NumericSegmentSortKey {
    pub(super) column: Option<Column<u64>>,
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
