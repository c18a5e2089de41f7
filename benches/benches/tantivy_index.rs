//! A shard's indexing work per micro-batch, on raw Tantivy with the indexer's own mapping
//! ([`IndexSchema`]) and
//! sluice's shard writer settings (1 indexing thread, 128 MiB): for each of 1,000
//! corpus documents, parse the canonical JSON, build the Tantivy document, delete the
//! id's previous version and add the new one — without and with the commit that makes
//! the batch searchable.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::{DocId, Seq};
use sluice_indexer::index_schema::{ensure_tokenizers, IndexSchema};
use tantivy::{Index, IndexWriter, TantivyDocument, Term};

const BATCH: usize = 1_000;
const SHARD_WRITER_MEMORY: usize = 128 * 1024 * 1024;

fn tantivy_index(c: &mut Criterion) {
    let (corpus, schema) = common::corpus();
    let mapping = IndexSchema::new(&schema);
    let sources: Vec<(DocId, Vec<u8>)> = common::validated(&corpus, &schema, corpus.len())
        .into_iter()
        .map(|doc| (doc.id, doc.source))
        .collect();
    let batches = sources.len() / BATCH;
    let next_batch = AtomicU64::new(0);
    let add_batch = |writer: &IndexWriter<TantivyDocument>| {
        let batch = next_batch.fetch_add(1, Ordering::Relaxed);
        let start = (batch as usize % batches) * BATCH;
        for (offset, (id, source)) in sources[start..start + BATCH].iter().enumerate() {
            writer.delete_term(Term::from_field_text(mapping.id, id.as_str()));
            let seq = Seq(batch * BATCH as u64 + offset as u64 + 1);
            writer
                .add_document(mapping.document(id, seq, source))
                .expect("add_document");
        }
    };

    let mut group = c.benchmark_group("tantivy_shard");
    group.throughput(Throughput::Elements(BATCH as u64));

    let dir = tempfile::tempdir().expect("temporary directory");
    let index = Index::create_in_dir(dir.path(), mapping.schema.clone()).expect("index");
    ensure_tokenizers(&index);
    let writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, SHARD_WRITER_MEMORY)
        .expect("writer");
    group.bench_function("add_1000", |b| b.iter(|| add_batch(&writer)));
    drop(writer);

    let dir = tempfile::tempdir().expect("temporary directory");
    let index = Index::create_in_dir(dir.path(), mapping.schema.clone()).expect("index");
    ensure_tokenizers(&index);
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, SHARD_WRITER_MEMORY)
        .expect("writer");
    group.bench_function("add_1000_and_commit", |b| {
        b.iter(|| {
            add_batch(&writer);
            writer.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = tantivy_index
}
criterion_main!(benches);
