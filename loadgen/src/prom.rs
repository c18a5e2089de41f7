//! Server-side figures: the target's `/metrics` (Prometheus text format) scraped before and
//! after a run, and the `sluice_*` deltas between the two.
//!
//! Counters (and histogram/summary `_count`/`_sum` series) are reported as deltas, gauges
//! as their value after the run. The headline figures (dedup skips, search cache hit ratio,
//! DLQ messages, redeliveries, accepted and rejected documents) are summed over their label
//! sets; series for consumer lag and breaker trips are picked up by name when the node
//! exports them. A scrape happens right after the last stage, so work the node still had
//! queued then (indexing, say) is not in the deltas.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_core::metrics as names;

/// One scrape: series (name with labels, as written) to value, and the declared types.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// `name{labels}` -> value.
    pub series: BTreeMap<String, f64>,
    /// Metric family name -> `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub types: BTreeMap<String, String>,
}

/// Parses the Prometheus text exposition format (the subset every exporter writes: one
/// sample per line, optional labels, optional timestamp).
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                scrape.types.insert(name.to_owned(), kind.to_owned());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Labels may hold spaces inside quotes: split after the closing brace.
        let (series, rest) = match line.find('{') {
            Some(open) => match line.rfind('}') {
                Some(close) if close > open => (&line[..=close], &line[close + 1..]),
                _ => continue,
            },
            None => match line.split_once(char::is_whitespace) {
                Some((name, rest)) => (name, rest),
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => match other.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        scrape.series.insert(series.to_owned(), value);
    }
    scrape
}

fn base_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// The family a series belongs to (`x_bucket`, `x_count`, `x_sum` belong to `x`).
fn family<'a>(scrape: &Scrape, name: &'a str) -> &'a str {
    if scrape.types.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_count", "_sum", "_total"] {
        if let Some(stripped) = name.strip_suffix(suffix) {
            if scrape.types.contains_key(stripped) {
                return stripped;
            }
        }
    }
    name
}

/// What the node did during the run, from its own counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerDeltas {
    /// Ops skipped because their content hash was unchanged.
    pub dedup_skips: f64,
    /// Search cache hits.
    pub search_cache_hits: f64,
    /// Search cache misses.
    pub search_cache_misses: f64,
    /// hits / (hits + misses), when there were lookups.
    pub search_cache_hit_ratio: Option<f64>,
    /// Ops moved to the dead-letter queue.
    pub dlq_messages: f64,
    /// Log messages delivered again.
    pub log_redeliveries: f64,
    /// Lines ingest accepted.
    pub ingest_documents_accepted: f64,
    /// Lines ingest rejected.
    pub ingest_documents_rejected: f64,
    /// Document writes the store performed.
    pub store_writes: f64,
    /// Index commits.
    pub indexer_commits: f64,
    /// Sum of gauges whose name mentions `lag`, after the run (when exported).
    pub consumer_lag: Option<f64>,
    /// Increase of counters whose name mentions `breaker` (when exported).
    pub breaker_trips: Option<f64>,
    /// Every `sluice_*` counter series that changed, with its increase.
    pub counters: BTreeMap<String, f64>,
    /// Every `sluice_*` gauge series, with its value after the run.
    pub gauges: BTreeMap<String, f64>,
}

/// The `sluice_*` changes between two scrapes.
pub fn deltas(before: &Scrape, after: &Scrape) -> ServerDeltas {
    let mut out = ServerDeltas::default();
    for (series, &value) in &after.series {
        let name = base_name(series);
        if !name.starts_with("sluice_") || name.ends_with("_bucket") {
            continue;
        }
        let kind = after
            .types
            .get(family(after, name))
            .map(String::as_str)
            .unwrap_or(if name.ends_with("_total") {
                "counter"
            } else {
                "untyped"
            });
        if kind == "gauge" {
            out.gauges.insert(series.clone(), value);
            if name.contains("lag") {
                *out.consumer_lag.get_or_insert(0.0) += value;
            }
            continue;
        }
        if kind == "untyped" {
            continue;
        }
        let delta = value - before.series.get(series).copied().unwrap_or(0.0);
        if name.contains("breaker") {
            *out.breaker_trips.get_or_insert(0.0) += delta;
        }
        if delta == 0.0 {
            continue;
        }
        out.counters.insert(series.clone(), delta);
        match name {
            names::WORKER_DEDUP_SKIPS_TOTAL => out.dedup_skips += delta,
            names::DLQ_MESSAGES_TOTAL => out.dlq_messages += delta,
            names::LOG_REDELIVERIES_TOTAL => out.log_redeliveries += delta,
            names::STORE_WRITES_TOTAL => out.store_writes += delta,
            names::INDEXER_COMMITS_TOTAL => out.indexer_commits += delta,
            names::SEARCH_CACHE_LOOKUPS_TOTAL => {
                if series.contains("outcome=\"hit\"") {
                    out.search_cache_hits += delta;
                } else if series.contains("outcome=\"miss\"") {
                    out.search_cache_misses += delta;
                }
            }
            names::INGEST_DOCUMENTS_TOTAL => {
                if series.contains("outcome=\"accepted\"") {
                    out.ingest_documents_accepted += delta;
                } else if series.contains("outcome=\"rejected\"") {
                    out.ingest_documents_rejected += delta;
                }
            }
            _ => {}
        }
    }
    let lookups = out.search_cache_hits + out.search_cache_misses;
    if lookups > 0.0 {
        out.search_cache_hit_ratio = Some(out.search_cache_hits / lookups);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_of_counters_and_values_of_gauges() {
        let before = parse(
            "# TYPE sluice_search_cache_lookups_total counter\n\
             sluice_search_cache_lookups_total{outcome=\"hit\"} 10\n\
             sluice_search_cache_lookups_total{outcome=\"miss\"} 5\n\
             sluice_worker_dedup_skips_total{collection=\"c\"} 1\n",
        );
        let after = parse(
            "# HELP sluice_search_cache_lookups_total Search result cache lookups\n\
             # TYPE sluice_search_cache_lookups_total counter\n\
             sluice_search_cache_lookups_total{outcome=\"hit\"} 40\n\
             sluice_search_cache_lookups_total{outcome=\"miss\"} 15\n\
             # TYPE sluice_worker_dedup_skips_total counter\n\
             sluice_worker_dedup_skips_total{collection=\"c\"} 101 1700000000\n\
             # TYPE sluice_indexer_documents gauge\n\
             sluice_indexer_documents{collection=\"c\"} 7\n\
             # TYPE sluice_search_duration_seconds histogram\n\
             sluice_search_duration_seconds_bucket{le=\"+Inf\"} 3\n\
             sluice_search_duration_seconds_count 3\n\
             other_total 9\n",
        );
        let d = deltas(&before, &after);
        assert_eq!(d.search_cache_hits, 30.0);
        assert_eq!(d.search_cache_misses, 10.0);
        assert_eq!(d.search_cache_hit_ratio, Some(0.75));
        assert_eq!(d.dedup_skips, 100.0);
        assert_eq!(
            d.gauges.get("sluice_indexer_documents{collection=\"c\"}"),
            Some(&7.0)
        );
        assert_eq!(
            d.counters.get("sluice_search_duration_seconds_count"),
            Some(&3.0)
        );
        assert!(!d
            .counters
            .keys()
            .any(|k| k.contains("_bucket") || k.starts_with("other")));
        assert_eq!(d.consumer_lag, None);
    }
}
