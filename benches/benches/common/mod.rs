//! What every criterion bench shares: a short measurement profile (the whole suite
//! must finish in a few minutes on 2 cores) and corpus documents validated the way
//! ingest validates them.

#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use sluice_benches::corpus::Corpus;
use sluice_benches::raw_tantivy::corpus_schema;
use sluice_core::document::{parse_line, validate_document, LineLimits, ValidDocument};
use sluice_core::schema::Schema;
use sluice_core::DocId;

/// Documents of the cached corpus the micro-benches draw from.
pub const BENCH_CORPUS_DOCS: usize = 10_000;

/// Short warm-up and measurement: enough samples for stable medians, not more.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args()
}

/// The cached benchmark corpus and its schema; panics with the reason when the
/// generator cannot run (a bench without data must not pretend to measure).
pub fn corpus() -> (Corpus, Schema) {
    let corpus = Corpus::cached(BENCH_CORPUS_DOCS)
        .unwrap_or_else(|e| panic!("cannot load the benchmark corpus: {e}"));
    let schema = corpus_schema().unwrap_or_else(|e| panic!("cannot load the corpus schema: {e}"));
    (corpus, schema)
}

/// The first `n` corpus documents, validated and hashed as ingest does.
pub fn validated(corpus: &Corpus, schema: &Schema, n: usize) -> Vec<ValidDocument> {
    let limits = LineLimits::default();
    corpus
        .lines()
        .take(n)
        .map(|line| {
            let doc = parse_line(line, &limits).unwrap_or_else(|e| panic!("corpus line: {e}"));
            validate_document(schema, doc, DocId::generate)
                .unwrap_or_else(|e| panic!("corpus document: {e}"))
        })
        .collect()
}
