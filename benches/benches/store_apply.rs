//! The embedded store's `apply` (read stored sequence, compare, write, fsync) for a
//! 500-write batch, and the `versions` lookup workers do for dedup.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::store::{Store, StoreWrite};
use sluice_core::{CollectionName, DocId, Seq};
use sluice_store::EmbeddedStore;

const WRITES: usize = 500;

fn store_apply(c: &mut Criterion) {
    let (corpus, schema) = common::corpus();
    let docs = common::validated(&corpus, &schema, WRITES);
    let ids: Vec<DocId> = docs.iter().map(|doc| doc.id.clone()).collect();
    let collection = CollectionName::new("corpus").expect("valid collection name");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open(dir.path()).expect("opening the embedded store");
    // Sequences only grow, so every iteration's writes are applied, never stale.
    let next_seq = AtomicU64::new(1);
    let batch = |first_seq: u64| -> Vec<StoreWrite> {
        docs.iter()
            .enumerate()
            .map(|(i, doc)| StoreWrite::Upsert {
                id: doc.id.clone(),
                seq: Seq(first_seq + i as u64),
                hash: doc.hash,
                source: Bytes::from(doc.source.clone()),
            })
            .collect()
    };

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(WRITES as u64));
    group.bench_function("apply_500_upserts", |b| {
        b.iter_batched(
            || batch(next_seq.fetch_add(WRITES as u64, Ordering::Relaxed)),
            |writes| {
                runtime
                    .block_on(store.apply(&collection, Default::default(), writes))
                    .expect("apply")
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("versions_500", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(store.versions(&collection, &ids))
                    .expect("versions"),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = store_apply
}
criterion_main!(benches);
