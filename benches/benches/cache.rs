//! The search result cache: moka's sync cache as the indexer uses it, keyed by
//! (collection, normalized request, shard generations) and holding shared responses.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moka::sync::Cache;

/// Shaped like the indexer's key: the collection, the normalized request, a generation
/// per shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    collection: String,
    request: String,
    generations: Vec<u64>,
}

const ENTRIES: u64 = 10_000;
const KEYS: usize = 1_000;

fn key(i: usize) -> Key {
    Key {
        collection: "corpus".to_owned(),
        request: format!("q=body:word{i}&limit=10&offset=0"),
        generations: vec![17, 23],
    }
}

fn cache(c: &mut Criterion) {
    // A response of ten ~1 KB hits, shared, as the indexer caches it.
    let response: Arc<Vec<u8>> = Arc::new(vec![b'x'; 10 * 1024]);
    let cache: Cache<Key, Arc<Vec<u8>>> = Cache::builder().max_capacity(ENTRIES).build();
    let keys: Vec<Key> = (0..KEYS).map(key).collect();
    for k in &keys {
        cache.insert(k.clone(), response.clone());
    }
    let misses: Vec<Key> = (KEYS..2 * KEYS).map(key).collect();

    let mut group = c.benchmark_group("search_cache");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("get_hit_1000", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(cache.get(k));
            }
        })
    });
    group.bench_function("get_miss_1000", |b| {
        b.iter(|| {
            for k in &misses {
                black_box(cache.get(k));
            }
        })
    });
    let fresh = Cache::<Key, Arc<Vec<u8>>>::builder()
        .max_capacity(ENTRIES)
        .build();
    let mut round = 0u64;
    group.bench_function("insert_1000", |b| {
        b.iter(|| {
            // New generations each round: what a commit does to every key.
            round += 1;
            for k in &keys {
                let mut k = k.clone();
                k.generations[0] = round;
                fresh.insert(k, response.clone());
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = cache
}
criterion_main!(benches);
