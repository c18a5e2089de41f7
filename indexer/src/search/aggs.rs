//! Aggregations: a request's `aggs`, in Elasticsearch's request shape, computed by
//! Tantivy's aggregation engine over the same matches as the hits (tombstones excluded),
//! per shard, merged across shards, answered in Elasticsearch's response shape.
//!
//! Both APIs share it: the native search and the Elasticsearch `_search` take the same
//! JSON. Supported: `terms`, `histogram`, `date_histogram`, `range` (on dates with epoch
//! milliseconds), `avg`, `min`, `max`, `sum`, `value_count`, `stats`, `extended_stats`,
//! `cardinality`, `percentiles`, and sub-aggregations (`aggs` inside a bucket
//! aggregation).
//!
//! Checked here before Tantivy sees the request:
//! - every `field` must be a declared field with a fast column (keyword, string,
//!   numeric, bool, datetime); a text, json or undeclared field is refused naming it, as
//!   Elasticsearch refuses aggregating on text;
//! - `date_histogram` takes `fixed_interval`, and `calendar_interval` (or the older
//!   `interval`) in the units that are fixed in UTC: minute, hour, day, week (weeks start
//!   on Monday, as in Elasticsearch). Months, quarters and years are refused. `time_zone`
//!   takes fixed offsets (`+02:00`), which shift the buckets to local boundaries.
//!   `format: epoch_millis` (what Grafana sends) is taken: keys are epoch milliseconds.
//!
//! - `terms` without `shard_size` keeps [`DEFAULT_SEGMENT_SIZE`] terms per segment
//!   (Tantivy's default is ten times `size`), so counts are exact up to that many
//!   distinct values; past it they are approximate, as in Elasticsearch
//!   (`doc_count_error_upper_bound`, `sum_other_doc_count`).
//!
//! Bounded: at most [`MAX_BUCKETS`] buckets and [`MAX_MEMORY`] bytes per request and shard.

use serde_json::{Map, Value};
use sluice_core::schema::FieldType;
use sluice_core::search::SearchError;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::aggregation::{AggContextParams, AggregationLimitsGuard};

use crate::index_schema::IndexSchema;

/// Largest number of buckets one request may produce.
pub const MAX_BUCKETS: u32 = 65_536;
/// Largest memory one request's aggregation may take on a shard, in bytes.
pub const MAX_MEMORY: u64 = 256 * 1024 * 1024;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// A request's aggregations, checked and ready for Tantivy.
#[derive(Clone)]
pub(crate) struct AggregationPlan {
    request: Aggregations,
}

fn invalid(message: impl Into<String>) -> SearchError {
    SearchError::InvalidQuery(message.into())
}

fn limits() -> AggregationLimitsGuard {
    AggregationLimitsGuard::new(Some(MAX_MEMORY), Some(MAX_BUCKETS))
}

impl AggregationPlan {
    /// Checks `aggs` against the schema and translates what Tantivy spells differently.
    pub fn new(aggs: &Value, schema: &IndexSchema) -> Result<Self, SearchError> {
        let mut aggs = aggs.clone();
        rewrite_level(&mut aggs, schema, 0)?;
        let request: Aggregations =
            serde_json::from_value(aggs).map_err(|error| invalid(format!("aggs: {error}")))?;
        Ok(Self { request })
    }

    /// The collector of one shard's intermediate results.
    pub fn collector(&self) -> tantivy::aggregation::DistributedAggregationCollector {
        tantivy::aggregation::DistributedAggregationCollector::from_aggs(
            self.request.clone(),
            AggContextParams {
                limits: limits(),
                ..AggContextParams::default()
            },
        )
    }

    /// Merges the shards' intermediate results into the final answer, as JSON.
    pub fn finish(
        &self,
        shards: impl IntoIterator<Item = IntermediateAggregationResults>,
    ) -> Result<Value, SearchError> {
        let mut merged: Option<IntermediateAggregationResults> = None;
        for shard in shards {
            match &mut merged {
                None => merged = Some(shard),
                Some(merged) => merged.merge_fruits(shard).map_err(agg_error)?,
            }
        }
        let merged = merged.unwrap_or_default();
        let results = merged
            .into_final_result(self.request.clone(), limits())
            .map_err(agg_error)?;
        serde_json::to_value(results).map_err(|error| SearchError::Internal(error.to_string()))
    }
}

/// Tantivy's refusals of a request (bad parameter, too many buckets, memory) are the
/// caller's to fix.
pub(crate) fn agg_error(error: tantivy::TantivyError) -> SearchError {
    match error {
        tantivy::TantivyError::AggregationError(error) => {
            SearchError::QueryTooComplex(format!("aggs: {error}"))
        }
        tantivy::TantivyError::InvalidArgument(message) => invalid(format!("aggs: {message}")),
        other => invalid(format!("aggs: {other}")),
    }
}

/// Bucket aggregations nest; so does this check, bounded like queries.
const MAX_NESTING: usize = 16;

fn rewrite_level(level: &mut Value, schema: &IndexSchema, depth: usize) -> Result<(), SearchError> {
    if depth > MAX_NESTING {
        return Err(SearchError::QueryTooComplex(format!(
            "aggs nest deeper than {MAX_NESTING} levels"
        )));
    }
    let level = level
        .as_object_mut()
        .ok_or_else(|| invalid("aggs must be an object of named aggregations"))?;
    for (name, agg) in level.iter_mut() {
        let agg = agg
            .as_object_mut()
            .ok_or_else(|| invalid(format!("aggregation [{name}] must be an object")))?;
        if let Some(sub) = agg.remove("aggregations") {
            agg.insert("aggs".to_owned(), sub);
        }
        agg.remove("meta");
        let kinds: Vec<String> = agg.keys().filter(|key| *key != "aggs").cloned().collect();
        let [kind] = kinds.as_slice() else {
            return Err(invalid(format!(
                "aggregation [{name}] must have exactly one type (terms, date_histogram, avg, ...); got {kinds:?}"
            )));
        };
        let body = agg
            .get_mut(kind.as_str())
            .and_then(Value::as_object_mut)
            .ok_or_else(|| invalid(format!("aggregation [{name}]: [{kind}] takes an object")))?;
        check_field(name, kind, body, schema)?;
        match kind.as_str() {
            "date_histogram" => rewrite_date_histogram(name, body)?,
            "terms" => default_segment_size(body),
            _ => {}
        }
        if let Some(sub) = agg.get_mut("aggs") {
            rewrite_level(sub, schema, depth + 1)?;
        }
    }
    Ok(())
}

fn check_field(
    name: &str,
    kind: &str,
    body: &Map<String, Value>,
    schema: &IndexSchema,
) -> Result<(), SearchError> {
    let Some(field) = body.get("field") else {
        return Ok(());
    };
    let field = field
        .as_str()
        .ok_or_else(|| invalid(format!("aggregation [{name}]: field must be a string")))?;
    if field == "_id" {
        return Ok(());
    }
    match schema.declared(field) {
        None => Err(invalid(format!(
            "aggregation [{name}] ({kind}) on {field:?}: the collection declares no such field; aggregations need a declared keyword, string, numeric, bool or datetime field"
        ))),
        Some(declared) if matches!(declared.field_type, FieldType::Text | FieldType::Json) => {
            Err(invalid(format!(
                "aggregation [{name}] ({kind}) on {field:?}: it is a {} field; aggregations need keyword, string, numeric, bool or datetime fields",
                declared.field_type.as_str()
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Terms kept per segment when the request does not say (`shard_size`): each segment
/// of each shard cuts its terms off there before the merge, so the default is large
/// enough that collections with up to this many distinct values get exact counts.
pub const DEFAULT_SEGMENT_SIZE: u64 = 5_000;

fn default_segment_size(body: &mut Map<String, Value>) {
    if body.contains_key("segment_size") || body.contains_key("shard_size") {
        return;
    }
    let size = body.get("size").and_then(Value::as_u64).unwrap_or(10);
    let segment_size = size.saturating_mul(10).max(DEFAULT_SEGMENT_SIZE);
    body.insert("segment_size".to_owned(), Value::from(segment_size));
}

fn rewrite_date_histogram(name: &str, body: &mut Map<String, Value>) -> Result<(), SearchError> {
    // Bucket keys are epoch milliseconds already; `key_as_string` stays RFC 3339.
    if body.get("format").and_then(Value::as_str) == Some("epoch_millis") {
        body.remove("format");
    }
    let calendar = match (body.remove("calendar_interval"), body.remove("interval")) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "aggregation [{name}]: give calendar_interval or interval, not both"
            )))
        }
        (Some(interval), None) | (None, Some(interval)) => Some(interval),
        (None, None) => None,
    };
    let mut align_ms = 0;
    if let Some(calendar) = calendar {
        if body.contains_key("fixed_interval") {
            return Err(invalid(format!(
                "aggregation [{name}]: give calendar_interval or fixed_interval, not both"
            )));
        }
        let unit = calendar.as_str().unwrap_or_default();
        let (fixed, align) = match unit {
            "minute" | "1m" => ("1m", 0),
            "hour" | "1h" => ("1h", 0),
            "day" | "1d" => ("1d", 0),
            // 1970-01-01 was a Thursday: weeks start four days later, on a Monday.
            "week" | "1w" => ("7d", 4 * DAY_MS),
            _ => {
                return Err(invalid(format!(
                    "aggregation [{name}]: calendar_interval {calendar} is not supported (minute, hour, day, week; or fixed_interval)"
                )))
            }
        };
        body.insert("fixed_interval".to_owned(), Value::from(fixed));
        align_ms = align;
    }
    let zone_ms = match body.remove("time_zone") {
        None => 0,
        Some(zone) => zone_offset_ms(name, &zone)?,
    };
    if align_ms != 0 || zone_ms != 0 {
        if body.contains_key("offset") {
            return Err(invalid(format!(
                "aggregation [{name}]: offset together with time_zone or a week interval is not supported"
            )));
        }
        let interval = body
            .get("fixed_interval")
            .and_then(Value::as_str)
            .and_then(interval_ms)
            .ok_or_else(|| {
                invalid(format!(
                    "aggregation [{name}]: fixed_interval is missing or invalid"
                ))
            })?;
        // A bucket starting at local midnight starts `zone` earlier in UTC.
        let offset = (align_ms - zone_ms).rem_euclid(interval);
        body.insert("offset".to_owned(), Value::from(format!("{offset}ms")));
    }
    Ok(())
}

/// Milliseconds of a fixed interval such as `30m` or `7d`.
fn interval_ms(interval: &str) -> Option<i64> {
    let digits = interval.bytes().take_while(u8::is_ascii_digit).count();
    let amount: i64 = interval[..digits].parse().ok()?;
    let unit = match &interval[digits..] {
        "ms" => 1,
        "s" => 1_000,
        "m" => MINUTE_MS,
        "h" => 60 * MINUTE_MS,
        "d" => DAY_MS,
        _ => return None,
    };
    amount.checked_mul(unit).filter(|ms| *ms > 0)
}

/// A fixed `time_zone` offset in milliseconds (`+02:00` is 7,200,000).
fn zone_offset_ms(name: &str, zone: &Value) -> Result<i64, SearchError> {
    let offset = super::dsl::parse_zone(zone).map_err(|_| {
        invalid(format!(
            "aggregation [{name}]: time_zone {zone} is not supported; use a fixed offset such as \"+02:00\""
        ))
    })?;
    Ok(i64::from(offset.whole_seconds()) * 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: Value) -> Result<Value, SearchError> {
        let mut body = body.as_object().unwrap().clone();
        rewrite_date_histogram("h", &mut body)?;
        Ok(Value::Object(body))
    }

    #[test]
    fn calendar_intervals_and_fixed_zones_become_fixed_intervals_with_offsets() {
        let day =
            rewritten(serde_json::json!({"field": "ts", "calendar_interval": "day"})).unwrap();
        assert_eq!(
            day,
            serde_json::json!({"field": "ts", "fixed_interval": "1d"})
        );
        let week =
            rewritten(serde_json::json!({"field": "ts", "calendar_interval": "1w"})).unwrap();
        assert_eq!(week["offset"], format!("{}ms", 4 * DAY_MS));
        let zoned = rewritten(
            serde_json::json!({"field": "ts", "fixed_interval": "1d", "time_zone": "+02:00"}),
        )
        .unwrap();
        assert_eq!(zoned["offset"], format!("{}ms", DAY_MS - 2 * 3_600_000));
        let refused = [
            serde_json::json!({"field": "ts", "calendar_interval": "month"}),
            serde_json::json!({"field": "ts", "fixed_interval": "1d", "time_zone": "Europe/Paris"}),
            serde_json::json!({"field": "ts", "calendar_interval": "1d", "fixed_interval": "1d"}),
        ];
        for body in refused {
            assert!(rewritten(body.clone()).is_err(), "{body}");
        }
    }
}
