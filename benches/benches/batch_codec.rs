//! Encoding and decoding of the log messages: a DOCS batch of 500 ops (ingest's
//! default `max_batch_docs`) and the EVENTS batch a worker publishes for it.

mod common;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::op::{DocBatch, DocOp, Event, EventBatch};
use sluice_core::{CollectionName, Partition, Seq};

const OPS: usize = 500;

fn batch_codec(c: &mut Criterion) {
    let (corpus, schema) = common::corpus();
    let collection = CollectionName::new("corpus").expect("valid collection name");
    let docs = common::validated(&corpus, &schema, OPS);
    let batch = DocBatch {
        collection: collection.clone(),
        partition: Partition(0),
        generation: Default::default(),
        ops: docs
            .iter()
            .map(|doc| DocOp::Upsert {
                id: doc.id.clone(),
                hash: doc.hash,
                source: Bytes::from(doc.source.clone()),
            })
            .collect(),
    };
    let events = EventBatch {
        collection,
        partition: Partition(0),
        generation: Default::default(),
        events: docs
            .iter()
            .enumerate()
            .map(|(i, doc)| Event::Upserted {
                id: doc.id.clone(),
                seq: Seq(1_000 + i as u64),
                hash: doc.hash,
                source: Bytes::from(doc.source.clone()),
            })
            .collect(),
    };
    let encoded = batch.encode();
    let encoded_events = events.encode();

    let mut group = c.benchmark_group("batch_codec");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("doc_batch_encode_500", |b| {
        b.iter(|| black_box(batch.encode()))
    });
    group.bench_function("doc_batch_decode_500", |b| {
        b.iter(|| black_box(DocBatch::decode(&encoded).expect("decodes")))
    });
    group.throughput(Throughput::Bytes(encoded_events.len() as u64));
    group.bench_function("event_batch_encode_500", |b| {
        b.iter(|| black_box(events.encode()))
    });
    group.bench_function("event_batch_decode_500", |b| {
        b.iter(|| black_box(EventBatch::decode(&encoded_events).expect("decodes")))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = batch_codec
}
criterion_main!(benches);
