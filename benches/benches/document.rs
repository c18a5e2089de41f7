//! Per-document cost of ingest's validation: NDJSON line parse (limits, UTF-8, depth,
//! unique keys), schema validation, canonical re-serialization and content hash.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::document::{parse_line, validate_document, ContentHash, LineLimits};
use sluice_core::DocId;

const DOCS: usize = 1_000;

fn document(c: &mut Criterion) {
    let (corpus, schema) = common::corpus();
    let limits = LineLimits::default();
    let lines: Vec<&[u8]> = corpus.lines().take(DOCS).collect();
    let canonical: Vec<Vec<u8>> = common::validated(&corpus, &schema, DOCS)
        .into_iter()
        .map(|doc| doc.source)
        .collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();

    let mut group = c.benchmark_group("document");
    group.throughput(Throughput::Elements(DOCS as u64));
    group.bench_function("parse_validate_hash", |b| {
        b.iter(|| {
            for line in &lines {
                let doc = parse_line(line, &limits).expect("corpus line parses");
                black_box(validate_document(&schema, doc, DocId::generate).expect("valid"));
            }
        })
    });
    group.bench_function("parse_only", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(parse_line(line, &limits).expect("corpus line parses"));
            }
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("content_hash", |b| {
        b.iter(|| {
            for source in &canonical {
                black_box(ContentHash::of(source));
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = document
}
criterion_main!(benches);
