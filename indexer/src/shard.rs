//! One index shard: a Tantivy index on disk, its single writer and its searcher.
//!
//! Resources: the writer (one indexing thread, a segment-updater thread, a merge thread,
//! and a memory arena of up to `writer_memory`) exists only while the shard writes. It is
//! opened by the first apply that adds a document and closed by
//! [`ShardIndex::close_writer_if_idle`] once everything is committed and nothing was
//! applied for a while, so idle collections cost no threads and no arena; the reader has
//! no thread of its own (manual reloads).
//!
//! Concurrency: the writer side ([`ShardIndex::apply`], [`ShardIndex::commit`]) is driven
//! by exactly one consume loop (or one rebuild), from blocking threads, behind a mutex
//! that is therefore never contended; searches only take a [`Searcher`] snapshot from the
//! reader, lock-free, and never see uncommitted changes.
//!
//! Invariants:
//! - An id's indexed version never goes back: an event is applied only if its sequence is
//!   above the id's current one, looked up in the uncommitted map first, else in the
//!   committed index (`_id` term → `_seq` fast field). Redelivered events are therefore
//!   no-ops, and a late older upsert cannot overwrite a newer version or a delete.
//! - Each id has at most one live Tantivy document: every apply is one add (the document,
//!   or a tombstone for a delete), preceded by `delete_term(_id)` when the id has an
//!   indexed version, committed or pending (an id with none has nothing to delete).
//! - The generation changes after the reader has been reloaded on a commit, so a search
//!   keyed by generation never caches an older searcher's results under a newer number.
//!   Generations come from one process-wide counter: a rebuilt shard never reuses one.
//!
//! Tombstones are compacted by the consume loop (see [`crate::tombstones`] for when a
//! delete may be forgotten): [`ShardIndex::compact_tombstones`] removes those below a
//! sequence bound, and a rebuild from the store has none (its scan skips tombstones).

use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::metrics::{
    INDEXER_COMMITS_TOTAL, INDEXER_COMMIT_DURATION_SECONDS, INDEXER_DOCUMENTS,
    INDEXER_EVENTS_TOTAL, INDEXER_TOMBSTONES_COMPACTED_TOTAL,
};
use sluice_core::op::Event;
use sluice_core::{CollectionName, DocId, Partition, Seq};
use tantivy::collector::Count;
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::{BooleanQuery, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, Term, TERMINATED};

use crate::error::ShardError;
use crate::index_schema::{ensure_tokenizers, IndexSchema, SEQ_FIELD};

/// Smallest writer memory budget Tantivy accepts for one indexing thread.
const MIN_WRITER_MEMORY: u64 = 15_000_000;
/// Largest budget we hand Tantivy (it refuses budgets close to 4 GiB per thread).
const MAX_WRITER_MEMORY: u64 = 3 << 30;
/// Merge threads of one shard's writer. Tantivy's default is 4 per writer; merges of one
/// shard run one after the other here (shards are the unit of parallelism, and the
/// merge policy only merges a handful of segments at a time), so a busy node's merge
/// threads follow its busy shards, not four times them.
const MERGE_THREADS: usize = 1;

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// What applying a batch of events did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ApplyOutcome {
    /// Upserts applied.
    pub indexed: usize,
    /// Deletes applied.
    pub deleted: usize,
    /// Events skipped: superseded in the batch or not newer than the indexed version.
    pub stale: usize,
}

impl ApplyOutcome {
    /// Documents changed (what the commit policy counts).
    pub fn changed(&self) -> usize {
        self.indexed + self.deleted
    }
}

struct WriterState {
    /// Open while the shard writes (see the module docs).
    writer: Option<IndexWriter>,
    /// Sequences of ids changed since the last commit: the committed searcher does not
    /// see them yet.
    pending: HashMap<DocId, Seq>,
    /// When the last apply that changed something happened.
    last_write: Instant,
    /// A tombstone compaction is staged and not committed yet (the committed searcher
    /// still shows what it removes).
    compaction_staged: bool,
}

/// One shard of one collection.
pub(crate) struct ShardIndex {
    collection: CollectionName,
    partition: Partition,
    schema: Arc<IndexSchema>,
    index: Index,
    reader: IndexReader,
    writer: Mutex<WriterState>,
    /// The writer's memory budget.
    writer_budget: usize,
    generation: AtomicU64,
    /// Searchable (non-tombstone) documents at the last commit, for the gauge.
    live_docs: AtomicU64,
    /// Tombstone documents at the last commit.
    tombstones: AtomicU64,
}

impl ShardIndex {
    /// Opens the shard's index in `dir`, creating it when absent.
    pub fn open(
        dir: &Path,
        collection: CollectionName,
        partition: Partition,
        schema: Arc<IndexSchema>,
        writer_memory: u64,
    ) -> Result<Self, ShardError> {
        std::fs::create_dir_all(dir)?;
        let index = Index::open_or_create(MmapDirectory::open(dir)?, schema.schema.clone())?;
        ensure_tokenizers(&index);
        let writer_budget = writer_memory.clamp(MIN_WRITER_MEMORY, MAX_WRITER_MEMORY) as usize;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let shard = Self {
            collection,
            partition,
            schema,
            index,
            reader,
            writer: Mutex::new(WriterState {
                writer: None,
                pending: HashMap::new(),
                last_write: Instant::now(),
                compaction_staged: false,
            }),
            writer_budget,
            generation: AtomicU64::new(next_generation()),
            live_docs: AtomicU64::new(0),
            tombstones: AtomicU64::new(0),
        };
        shard.update_live_docs()?;
        Ok(shard)
    }

    /// The collection.
    pub fn collection(&self) -> &CollectionName {
        &self.collection
    }

    /// The shard number (= log partition).
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The schema mapping.
    pub fn schema(&self) -> &Arc<IndexSchema> {
        &self.schema
    }

    /// The Tantivy index (for query parsing with its tokenizers).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// A snapshot of the committed index.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// Changes with every commit.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Searchable documents as of the last commit.
    #[cfg(test)]
    pub fn live_docs(&self) -> u64 {
        self.live_docs.load(Ordering::Relaxed)
    }

    /// Tombstone documents as of the last commit.
    pub fn tombstones(&self) -> u64 {
        self.tombstones.load(Ordering::Relaxed)
    }

    /// Removes the tombstones of sequences below `seq_below` (uncommitted until
    /// [`ShardIndex::commit`]). Documents of live versions carry no `_tombstone` and are
    /// never touched; tombstones added after this call neither (later opstamps).
    /// Returns how many committed tombstones that removes.
    pub fn compact_tombstones(&self, seq_below: Seq) -> Result<u64, ShardError> {
        let tombstones: Box<dyn Query> = Box::new(TermQuery::new(
            Term::from_field_u64(self.schema.tombstone, 1),
            IndexRecordOption::Basic,
        ));
        let older: Box<dyn Query> = Box::new(RangeQuery::new(
            Bound::Included(Term::from_field_u64(self.schema.seq, 0)),
            Bound::Excluded(Term::from_field_u64(self.schema.seq, seq_below.0)),
        ));
        let expired = BooleanQuery::intersection(vec![tombstones, older]);
        let mut guard = self.lock_writer();
        let state = &mut *guard;
        if state.compaction_staged {
            // The next commit publishes it first; counting again would count twice.
            return Ok(0);
        }
        let removed = self.searcher().search(&expired, &Count)? as u64;
        if removed == 0 {
            return Ok(0);
        }
        let writer = self.open_writer(&mut state.writer)?;
        writer.delete_query(Box::new(expired))?;
        state.compaction_staged = true;
        state.last_write = Instant::now();
        metrics::counter!(INDEXER_TOMBSTONES_COMPACTED_TOTAL, "collection" => self.collection.to_string())
            .increment(removed);
        Ok(removed)
    }

    fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        // A panic while applying leaves the writer usable; the uncommitted state is
        // rolled back or redelivered anyway, so a poisoned lock is taken over.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the index writer is open (its threads running).
    pub fn writer_is_open(&self) -> bool {
        self.lock_writer().writer.is_some()
    }

    /// Whether the writer is open with nothing pending and nothing applied for `idle`
    /// (what [`ShardIndex::close_writer_if_idle`] closes).
    pub fn writer_is_idle(&self, idle: Duration) -> bool {
        let state = self.lock_writer();
        state.writer.is_some()
            && state.pending.is_empty()
            && !state.compaction_staged
            && state.last_write.elapsed() >= idle
    }

    /// Closes the index writer when nothing is pending and nothing was applied for
    /// `idle`; merges it started finish first. Returns whether it closed.
    pub fn close_writer_if_idle(&self, idle: Duration) -> Result<bool, ShardError> {
        let mut state = self.lock_writer();
        if state.writer.is_none()
            || !state.pending.is_empty()
            || state.compaction_staged
            || state.last_write.elapsed() < idle
        {
            return Ok(false);
        }
        if let Some(writer) = state.writer.take() {
            // Waits for running merges, so their work is published rather than lost.
            writer.wait_merging_threads()?;
        }
        Ok(true)
    }

    /// Applies a micro-batch of events (uncommitted until [`ShardIndex::commit`]).
    pub fn apply(&self, events: Vec<Event>) -> Result<ApplyOutcome, ShardError> {
        let mut outcome = ApplyOutcome::default();
        // Collapse by id, highest sequence wins: one delete+add per id per batch.
        let mut latest: HashMap<DocId, Event> = HashMap::with_capacity(events.len());
        for event in events {
            match latest.entry(event.id().clone()) {
                Entry::Occupied(mut slot) => {
                    outcome.stale += 1;
                    if event.seq() > slot.get().seq() {
                        slot.insert(event);
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(event);
                }
            }
        }
        let mut guard = self.lock_writer();
        let state = &mut *guard;
        let committed = CommittedSeqs::new(&self.searcher(), &self.schema)?;
        for (id, event) in latest {
            let seq = event.seq();
            let current = match state.pending.get(&id) {
                Some(seq) => Some(*seq),
                None => committed.seq_of(&id)?,
            };
            match current {
                Some(current) if current >= seq => {
                    outcome.stale += 1;
                    continue;
                }
                // An id with an indexed version, committed or pending: replace it.
                Some(_) => {
                    self.open_writer(&mut state.writer)?
                        .delete_term(Term::from_field_text(self.schema.id, id.as_str()));
                }
                // No version anywhere (neither in the committed searcher nor since the
                // last commit, where every add is recorded in `pending`): nothing to
                // delete. Skipping it spares the commit a term lookup per new id in
                // every segment, which is most of a first ingest's deletes.
                None => {}
            }
            let writer = self.open_writer(&mut state.writer)?;
            match &event {
                Event::Upserted { source, .. } => {
                    writer.add_document(self.schema.document(&id, seq, source))?;
                    outcome.indexed += 1;
                }
                Event::Deleted { .. } => {
                    writer.add_document(self.schema.tombstone(&id, seq))?;
                    outcome.deleted += 1;
                }
            }
            state.pending.insert(id, seq);
            state.last_write = Instant::now();
        }
        drop(guard);
        let collection = self.collection.to_string();
        for (outcome_label, count) in [
            ("indexed", outcome.indexed),
            ("deleted", outcome.deleted),
            ("stale", outcome.stale),
        ] {
            if count > 0 {
                metrics::counter!(INDEXER_EVENTS_TOTAL, "collection" => collection.clone(), "outcome" => outcome_label)
                    .increment(count as u64);
            }
        }
        Ok(outcome)
    }

    /// The open writer, opened first if closed.
    fn open_writer<'w>(
        &self,
        slot: &'w mut Option<IndexWriter>,
    ) -> Result<&'w mut IndexWriter, ShardError> {
        if slot.is_none() {
            let options = IndexWriterOptions::builder()
                .memory_budget_per_thread(self.writer_budget)
                // One indexing thread per shard: shards are the unit of parallelism.
                .num_worker_threads(1)
                .num_merge_threads(MERGE_THREADS)
                .build();
            *slot = Some(self.index.writer_with_options(options)?);
        }
        Ok(slot.as_mut().expect("the writer was just opened"))
    }

    /// Document changes applied and not yet committed.
    #[cfg(test)]
    pub fn pending_changes(&self) -> usize {
        self.lock_writer().pending.len()
    }

    /// Commits pending changes, reloads the searcher, then bumps the generation.
    /// Returns once the changes are durable and searchable.
    pub fn commit(&self) -> Result<(), ShardError> {
        let started = Instant::now();
        let mut state = self.lock_writer();
        let Some(writer) = state.writer.as_mut() else {
            // Closed: nothing was applied since the last commit.
            return Ok(());
        };
        // Two steps (what `IndexWriter::commit` does in one) so a crash test can stop
        // between them: segments written, commit not yet published.
        let prepared = writer.prepare_commit()?;
        crash_point::reached(CrashPoint::IndexCommit);
        prepared.commit()?;
        self.reader.reload()?;
        // Only now may the pending map go: lookups fall back to the reloaded searcher.
        state.pending.clear();
        state.compaction_staged = false;
        drop(state);
        self.generation.store(next_generation(), Ordering::Release);
        self.update_live_docs()?;
        metrics::counter!(INDEXER_COMMITS_TOTAL, "collection" => self.collection.to_string())
            .increment(1);
        metrics::histogram!(INDEXER_COMMIT_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Drops uncommitted changes (after a failed commit): the unacked events that carried
    /// them are delivered again.
    pub fn rollback(&self) -> Result<(), ShardError> {
        let mut state = self.lock_writer();
        if let Some(writer) = state.writer.as_mut() {
            writer.rollback()?;
        }
        state.pending.clear();
        state.compaction_staged = false;
        Ok(())
    }

    /// Recounts searchable documents and moves the collection gauge by the difference.
    fn update_live_docs(&self) -> Result<(), ShardError> {
        let searcher = self.searcher();
        let tombstones = searcher.search(
            &TermQuery::new(
                Term::from_field_u64(self.schema.tombstone, 1),
                IndexRecordOption::Basic,
            ),
            &Count,
        )? as u64;
        self.tombstones.store(tombstones, Ordering::Relaxed);
        let live = searcher.num_docs().saturating_sub(tombstones);
        let previous = self.live_docs.swap(live, Ordering::Relaxed);
        metrics::gauge!(INDEXER_DOCUMENTS, "collection" => self.collection.to_string())
            .increment(live as f64 - previous as f64);
        Ok(())
    }

    /// Removes the shard's share of the collection gauge (the shard is being dropped).
    pub fn retire_metrics(&self) {
        let previous = self.live_docs.swap(0, Ordering::Relaxed);
        metrics::gauge!(INDEXER_DOCUMENTS, "collection" => self.collection.to_string())
            .decrement(previous as f64);
    }
}

/// Per-segment handles to look up the committed sequence of ids, opened once per batch.
struct CommittedSeqs {
    id_field: tantivy::schema::Field,
    segments: Vec<SegmentSeqs>,
}

struct SegmentSeqs {
    postings: Arc<tantivy::InvertedIndexReader>,
    seqs: Column<u64>,
    alive: Option<tantivy::fastfield::AliveBitSet>,
}

impl CommittedSeqs {
    fn new(searcher: &Searcher, schema: &IndexSchema) -> Result<Self, ShardError> {
        let mut segments = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            if segment.num_docs() == 0 {
                continue;
            }
            segments.push(SegmentSeqs {
                postings: segment.inverted_index(schema.id)?,
                seqs: segment.fast_fields().u64(SEQ_FIELD)?,
                alive: segment.alive_bitset().cloned(),
            });
        }
        Ok(Self {
            id_field: schema.id,
            segments,
        })
    }

    /// The sequence of the live indexed version of `id` (a tombstone included).
    fn seq_of(&self, id: &DocId) -> Result<Option<Seq>, ShardError> {
        let term = Term::from_field_text(self.id_field, id.as_str());
        let mut best: Option<u64> = None;
        for segment in &self.segments {
            let Some(mut postings) = segment
                .postings
                .read_postings(&term, IndexRecordOption::Basic)?
            else {
                continue;
            };
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if segment
                    .alive
                    .as_ref()
                    .is_none_or(|alive| alive.is_alive(doc))
                {
                    if let Some(seq) = segment.seqs.first(doc) {
                        best = Some(best.map_or(seq, |b| b.max(seq)));
                    }
                }
                doc = postings.advance();
            }
        }
        Ok(best.map(Seq))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_core::document::ContentHash;
    use sluice_core::schema::Schema;

    pub(crate) fn test_schema() -> Schema {
        Schema::from_json(
            br#"{"fields":[{"name":"id","type":"string"},{"name":"title","type":"text"},
            {"name":"body","type":"text","required":false},
            {"name":"tags","type":"keyword","array":true,"required":false},
            {"name":"price","type":"i64","required":false},
            {"name":"score","type":"f64","required":false},
            {"name":"ts","type":"datetime","required":false}]}"#,
        )
        .unwrap()
    }

    pub(crate) fn upsert(id: &str, seq: u64, source: &str) -> Event {
        Event::Upserted {
            id: DocId::new(id).unwrap(),
            seq: Seq(seq),
            hash: ContentHash::of(source.as_bytes()),
            source: Bytes::copy_from_slice(source.as_bytes()),
        }
    }

    pub(crate) fn delete(id: &str, seq: u64) -> Event {
        Event::Deleted {
            id: DocId::new(id).unwrap(),
            seq: Seq(seq),
        }
    }

    pub(crate) fn open_shard(dir: &Path, partition: u32) -> ShardIndex {
        ShardIndex::open(
            dir,
            CollectionName::new("books").unwrap(),
            Partition(partition),
            Arc::new(IndexSchema::new(&test_schema())),
            32 << 20,
        )
        .unwrap()
    }

    fn indexed_seq(shard: &ShardIndex, id: &str) -> Option<u64> {
        CommittedSeqs::new(&shard.searcher(), shard.schema())
            .unwrap()
            .seq_of(&DocId::new(id).unwrap())
            .unwrap()
            .map(|s| s.0)
    }

    #[test]
    fn older_sequences_never_overwrite_newer_ones_in_either_order() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        // Newer first, then older: in one batch and across batches/commits.
        let outcome = shard
            .apply(vec![
                upsert("a", 20, r#"{"id":"a","title":"new"}"#),
                upsert("a", 10, r#"{"id":"a","title":"old"}"#),
            ])
            .unwrap();
        assert_eq!(
            outcome,
            ApplyOutcome {
                indexed: 1,
                deleted: 0,
                stale: 1
            }
        );
        assert_eq!(shard.pending_changes(), 1);
        // Uncommitted guard: the pending map refuses the older one.
        let outcome = shard
            .apply(vec![upsert("a", 15, r#"{"id":"a","title":"old"}"#)])
            .unwrap();
        assert_eq!(outcome.stale, 1);
        shard.commit().unwrap();
        assert_eq!(indexed_seq(&shard, "a"), Some(20));
        // Committed guard: the searcher lookup refuses the older one.
        let outcome = shard
            .apply(vec![upsert("a", 11, r#"{"id":"a","title":"old"}"#)])
            .unwrap();
        assert_eq!(outcome.stale, 1);
        // Older first, then newer: the newer one wins.
        shard
            .apply(vec![upsert("b", 5, r#"{"id":"b","title":"old"}"#)])
            .unwrap();
        shard
            .apply(vec![upsert("b", 6, r#"{"id":"b","title":"new"}"#)])
            .unwrap();
        shard.commit().unwrap();
        assert_eq!(indexed_seq(&shard, "a"), Some(20));
        assert_eq!(indexed_seq(&shard, "b"), Some(6));
        assert_eq!(shard.searcher().num_docs(), 2, "one live document per id");
        // Redelivery of the same event is a no-op.
        let outcome = shard
            .apply(vec![upsert("b", 6, r#"{"id":"b","title":"new"}"#)])
            .unwrap();
        assert_eq!(outcome.changed(), 0);
    }

    #[test]
    fn new_ids_and_replaced_ids_keep_one_document_each() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        // New ids (nothing to delete), then the same ids replaced before any commit
        // (pending versions), then across a commit (committed versions).
        shard
            .apply(vec![
                upsert("a", 1, r#"{"id":"a","title":"one"}"#),
                upsert("b", 2, r#"{"id":"b","title":"one"}"#),
                upsert("c", 3, r#"{"id":"c","title":"one"}"#),
            ])
            .unwrap();
        shard
            .apply(vec![
                upsert("a", 4, r#"{"id":"a","title":"two"}"#),
                delete("b", 5),
            ])
            .unwrap();
        shard.commit().unwrap();
        assert_eq!(shard.searcher().num_docs(), 3, "a, b's tombstone, c");
        assert_eq!(shard.live_docs(), 2);
        shard
            .apply(vec![
                upsert("a", 6, r#"{"id":"a","title":"three"}"#),
                upsert("b", 7, r#"{"id":"b","title":"back"}"#),
                upsert("d", 8, r#"{"id":"d","title":"one"}"#),
            ])
            .unwrap();
        shard.commit().unwrap();
        assert_eq!(shard.searcher().num_docs(), 4, "one document per id");
        assert_eq!(shard.live_docs(), 4);
        for (id, seq) in [("a", 6), ("b", 7), ("c", 3), ("d", 8)] {
            assert_eq!(indexed_seq(&shard, id), Some(seq), "{id}");
        }
    }

    #[test]
    fn compaction_removes_only_tombstones_below_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        shard
            .apply(vec![
                upsert("live", 1, r#"{"id":"live","title":"x"}"#),
                delete("old", 10),
                delete("recent", 30),
            ])
            .unwrap();
        shard.commit().unwrap();
        assert_eq!(shard.tombstones(), 2);
        // A tombstone added in the same uncommitted batch after the compaction is kept
        // even below the bound (later opstamp); so is a live document below it.
        assert_eq!(shard.compact_tombstones(Seq(20)).unwrap(), 1);
        assert_eq!(
            shard.compact_tombstones(Seq(20)).unwrap(),
            0,
            "staged once until the commit"
        );
        shard.apply(vec![delete("same-batch", 15)]).unwrap();
        shard.commit().unwrap();
        assert_eq!(shard.tombstones(), 2, "recent and same-batch");
        assert_eq!(shard.live_docs(), 1);
        assert_eq!(indexed_seq(&shard, "old"), None, "forgotten");
        assert_eq!(indexed_seq(&shard, "recent"), Some(30));
        assert_eq!(indexed_seq(&shard, "same-batch"), Some(15));
        assert_eq!(indexed_seq(&shard, "live"), Some(1));
        // With the tombstone gone, an older upsert of the id is indexed again.
        let outcome = shard
            .apply(vec![upsert("old", 5, r#"{"id":"old","title":"x"}"#)])
            .unwrap();
        assert_eq!(outcome.indexed, 1);
    }

    #[test]
    fn a_delete_is_not_undone_by_an_older_upsert() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        shard
            .apply(vec![upsert("a", 1, r#"{"id":"a","title":"x"}"#)])
            .unwrap();
        shard.commit().unwrap();
        assert_eq!(shard.live_docs(), 1);
        let outcome = shard.apply(vec![delete("a", 3)]).unwrap();
        assert_eq!(outcome.deleted, 1);
        shard.commit().unwrap();
        let outcome = shard
            .apply(vec![upsert("a", 2, r#"{"id":"a","title":"x"}"#)])
            .unwrap();
        assert_eq!(outcome.stale, 1);
        shard.commit().unwrap();
        assert_eq!(indexed_seq(&shard, "a"), Some(3), "the tombstone holds");
        assert_eq!(shard.live_docs(), 0);
        // A newer upsert does bring it back.
        shard
            .apply(vec![upsert("a", 4, r#"{"id":"a","title":"x"}"#)])
            .unwrap();
        shard.commit().unwrap();
        assert_eq!(shard.live_docs(), 1);
    }

    #[test]
    fn generation_moves_on_commit_and_reopen_keeps_committed_documents() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        let before = shard.generation();
        shard
            .apply(vec![upsert("a", 1, r#"{"id":"a","title":"x"}"#)])
            .unwrap();
        shard
            .apply(vec![upsert("b", 2, r#"{"id":"b","title":"y"}"#)])
            .unwrap();
        assert_eq!(
            shard.searcher().num_docs(),
            0,
            "uncommitted changes are invisible"
        );
        shard.commit().unwrap();
        assert!(shard.generation() > before);
        // Uncommitted work is lost on close; committed work survives.
        shard
            .apply(vec![upsert("c", 3, r#"{"id":"c","title":"z"}"#)])
            .unwrap();
        drop(shard);
        let reopened = open_shard(dir.path(), 0);
        assert_eq!(reopened.searcher().num_docs(), 2);
        assert_eq!(reopened.live_docs(), 2);
        assert_eq!(indexed_seq(&reopened, "b"), Some(2));
    }

    #[test]
    fn an_idle_writer_closes_only_when_committed_and_reopens_on_the_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 0);
        assert!(!shard.writer_is_open(), "opening a shard starts no writer");
        shard
            .apply(vec![upsert("a", 1, r#"{"id":"a","title":"x"}"#)])
            .unwrap();
        assert!(shard.writer_is_open());
        // Pending changes keep it open, however long ago they were applied.
        assert!(!shard.writer_is_idle(Duration::ZERO));
        assert!(!shard.close_writer_if_idle(Duration::ZERO).unwrap());
        assert!(shard.writer_is_open());
        shard.commit().unwrap();
        // Committed, but changed more recently than the idle timeout.
        assert!(!shard
            .close_writer_if_idle(Duration::from_secs(3600))
            .unwrap());
        assert!(shard.writer_is_open());
        assert!(shard.writer_is_idle(Duration::ZERO));
        assert!(shard.close_writer_if_idle(Duration::ZERO).unwrap());
        assert!(!shard.writer_is_open());
        // Closed: a commit or a rollback has nothing to do, searches still see everything.
        shard.commit().unwrap();
        shard.rollback().unwrap();
        assert_eq!(shard.live_docs(), 1);
        // The next change opens it again, and the sequence guard still holds.
        let outcome = shard
            .apply(vec![
                upsert("a", 1, r#"{"id":"a","title":"x"}"#),
                upsert("b", 2, r#"{"id":"b","title":"y"}"#),
            ])
            .unwrap();
        assert_eq!(outcome.indexed, 1);
        assert_eq!(outcome.stale, 1);
        assert!(shard.writer_is_open());
        shard.commit().unwrap();
        assert_eq!(shard.live_docs(), 2);
        assert_eq!(shard.searcher().num_docs(), 2, "one document per id");
    }
}
