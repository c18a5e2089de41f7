//! The embedded log's durable append: one fsync per group commit, so the cost of an
//! append depends on how many appenders share a commit. Each iteration runs
//! `appenders` concurrent appends of one DOCS message (a 50-op batch of corpus
//! documents, ~55 KB) and returns when all are durable.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_core::config::LogConfig;
use sluice_core::log::{Log, OutgoingMessage};
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::subjects::StreamKind;
use sluice_core::{CollectionName, Partition};
use sluice_queue::EmbeddedLog;

const OPS_PER_MESSAGE: usize = 50;

fn log_append(c: &mut Criterion) {
    let (corpus, schema) = common::corpus();
    let docs = common::validated(&corpus, &schema, OPS_PER_MESSAGE);
    let payload = DocBatch {
        collection: CollectionName::new("corpus").expect("valid collection name"),
        partition: Partition(0),
        generation: Default::default(),
        ops: docs
            .into_iter()
            .map(|doc| DocOp::Upsert {
                id: doc.id,
                hash: doc.hash,
                source: Bytes::from(doc.source),
            })
            .collect(),
    }
    .encode();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let log: Arc<dyn Log> =
        EmbeddedLog::open(dir.path(), &LogConfig::default()).expect("opening the embedded log");
    let next_id = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("log_append");
    for appenders in [1usize, 4, 16] {
        group.throughput(Throughput::Elements(appenders as u64));
        group.bench_with_input(
            BenchmarkId::new("concurrent_appenders", appenders),
            &appenders,
            |b, &appenders| {
                b.iter(|| {
                    runtime.block_on(async {
                        let tasks: Vec<_> = (0..appenders)
                            .map(|i| {
                                let (log, payload) = (log.clone(), payload.clone());
                                // Unique msg ids: a repeated one would be deduplicated, not written.
                                let msg_id = next_id.fetch_add(1, Ordering::Relaxed);
                                tokio::spawn(async move {
                                    log.append(
                                        StreamKind::Docs,
                                        vec![OutgoingMessage {
                                            subject: format!("sluice.docs.corpus.{}", i % 2),
                                            msg_id: format!("bench-{msg_id}"),
                                            payload,
                                        }],
                                    )
                                    .await
                                    .expect("append")
                                })
                            })
                            .collect();
                        for task in tasks {
                            task.await.expect("append task");
                        }
                    })
                })
            },
        );
    }
    group.finish();
    drop(log);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = log_append
}
criterion_main!(benches);
