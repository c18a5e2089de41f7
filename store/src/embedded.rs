//! The embedded document store: [`sluice_core::store::Store`] on fjall, in-process.
//!
//! # Layout on disk
//! One fjall database under the store directory with three keyspaces: `documents`, keyed
//! and encoded as the `record` module describes; `catalog`, collection name to the
//! JSON of its [`CollectionMeta`]; and `definitions`, `{kind}/{name}` (the kind's
//! [`DefinitionKind::as_str`]) to the definition's bytes as given. Definitions are
//! written and removed with a sync, like catalog entries, and take no apply lock: no
//! document write depends on them.
//!
//! # Concurrency model
//! fjall calls block, so every operation runs on tokio's blocking pool; the async
//! methods only hand work over and wait. Reads need no lock (fjall reads are snapshot
//! reads). `apply` must read the stored sequence, compare and write without another
//! applier slipping in between, so it holds a mutex for that read-compare-commit. The
//! mutex is picked by collection hash from a small fixed set of stripes: a batch only
//! ever touches one collection, so one lock per call suffices (no lock ordering, no
//! deadlock), and appliers of different collections mostly run in parallel. Striping by
//! document key instead would buy nothing here: a batch of a hundred ids would need
//! most stripes anyway.
//!
//! # Incarnation fence
//! `apply` takes the generation its writes were accepted for and, under the collection's
//! apply lock, checks it against the catalog entry (cached per collection in
//! [`Inner::fences`]); catalog writes take the same lock and update that cache, so a
//! batch either lands before a deletion begins or is discarded. A collection with no
//! catalog entry takes writes of any generation.
//!
//! # Durability
//! Under the lock the batch is committed to fjall's journal and memtables (flushed to
//! the OS, not yet synced), which is enough for the next applier to see it. The fsync
//! (`PersistMode::SyncData`) happens after the lock is released, so concurrent appliers
//! overlap their syncs instead of queueing behind each other; `apply` returns only once
//! its sync is done. Because the journal is one sequential file, that sync also covers
//! every batch committed before it, including any this batch's outcomes were decided
//! against, so an `Ok` never rests on a write that is not durable. A call whose future
//! is dropped still runs to completion on the blocking pool: batches are atomic.
//!
//! # Tombstone compaction
//! A tombstone records the wall-clock time its delete was applied.
//! `compact_tombstones` walks a bounded stretch of one collection's keys on a snapshot,
//! without any lock, and picks the tombstones past the horizon. Then, under the
//! collection's apply lock, it reads each of them again and removes it only if it is
//! still the very record it picked (same sequence, same time): an `apply` that replaced
//! it in between wins, so a live document is never removed and a newer tombstone never
//! goes early. The lock is held for one fjall batch of at most `limit` removals, so
//! writers wait at most that long. Removals are committed without a sync of their own
//! (the next apply's sync covers them, the journal being one sequential file): one lost
//! in a crash only leaves a dead tombstone behind for the next pass. A tombstone of
//! record format 1 (time unknown) is rewritten with the time of the pass instead of being
//! removed, so it goes one retention after it was first seen.
//!
//! # Invariants
//! - A stored record's sequence only grows: a write at or below it is `Stale` and
//!   changes nothing; deletes leave tombstones carrying their sequence, until compaction
//!   removes them (after which the id is absent, and any write to it applies).
//! - Each `apply` batch is committed atomically (one fjall batch) with at most one
//!   record per key: the last write to win for that key within the batch.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use foldhash::{HashMap, HashMapExt};
use sluice_core::metrics::STORE_WRITES_TOTAL;
use sluice_core::store::{
    CollectionMeta, CompactionPage, DefinitionKind, DocVersion, Store, StoreError, StoreWrite,
    StoredDoc, TombstoneHorizon, WriteOutcome,
};
use sluice_core::{CollectionName, DocId, Generation, Seq};

use crate::record::{collection_end, collection_prefix, doc_key, id_from_key, Record};

/// Keyspace holding every document of every collection.
const DOCUMENTS_KEYSPACE: &str = "documents";
/// Keyspace holding the collection catalog.
const CATALOG_KEYSPACE: &str = "catalog";
/// Keyspace holding named definitions (templates, lifecycle policies).
const DEFINITIONS_KEYSPACE: &str = "definitions";
/// Number of apply locks; collections hash onto them.
const APPLY_LOCK_STRIPES: usize = 16;
/// Most deletions `drop_documents` commits in one fjall batch, so that dropping a huge
/// collection never builds one huge batch in memory.
const DROP_BATCH_KEYS: usize = 1024;

/// Milliseconds since the Unix epoch, by the wall clock (0 for a clock set before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The embedded document store. Cheap to share: open it once, hand out the `Arc`.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// What the blocking jobs work on.
struct Inner {
    dir: PathBuf,
    db: Database,
    documents: Keyspace,
    catalog: Keyspace,
    definitions: Keyspace,
    apply_locks: [Mutex<()>; APPLY_LOCK_STRIPES],
    /// Per collection, what `apply` checks batches against, read from the catalog on
    /// first use and kept current by catalog writes (under the apply lock).
    fences: Mutex<HashMap<CollectionName, Fence>>,
}

/// Which writes a collection takes (see [`Store::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fence {
    /// No catalog entry: writes of any generation.
    Open,
    /// An active incarnation: writes of this generation only.
    Generation(Generation),
    /// Being deleted or deleted: none.
    Closed,
}

impl Fence {
    fn of(meta: Option<&CollectionMeta>) -> Fence {
        match meta {
            None => Fence::Open,
            Some(meta) if meta.is_active() => Fence::Generation(meta.generation),
            Some(_) => Fence::Closed,
        }
    }

    fn admits(self, generation: Generation) -> bool {
        match self {
            Fence::Open => true,
            Fence::Generation(current) => current == generation,
            Fence::Closed => false,
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Names a fjall failure for the port, by fjall's own error variant (the one place the
/// embedded store's errors are mapped; what each means for retries and breakers is
/// decided in `sluice_core::resilience`).
fn storage_error(error: fjall::Error) -> StoreError {
    match error {
        // Another process holds the directory; it may let go (a restart in progress).
        fjall::Error::Locked => {
            StoreError::Unavailable("the store directory is locked by another process".into())
        }
        // What is on disk cannot be read back as written.
        fjall::Error::JournalRecovery(_)
        | fjall::Error::InvalidVersion(_)
        | fjall::Error::Decompress(_)
        | fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::Unrecoverable => StoreError::Corrupt(error.to_string()),
        fjall::Error::Storage(ref inner) if !matches!(inner, fjall::LsmError::Io(_)) => {
            StoreError::Corrupt(error.to_string())
        }
        // The keyspace was dropped under this handle: the store is being torn down.
        fjall::Error::KeyspaceDeleted => StoreError::Closed,
        // I/O errors, the LSM tree's own failures, and a failed flush that stops all
        // further writes (`Poisoned`): the disk under the store is failing.
        other => StoreError::Storage(other.to_string()),
    }
}

impl EmbeddedStore {
    /// Opens (creating) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Arc<EmbeddedStore>, StoreError> {
        let db = Database::builder(dir).open().map_err(storage_error)?;
        let documents = db
            .keyspace(DOCUMENTS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(storage_error)?;
        let catalog = db
            .keyspace(CATALOG_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(storage_error)?;
        let definitions = db
            .keyspace(DEFINITIONS_KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(storage_error)?;
        Ok(Arc::new(EmbeddedStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                documents,
                catalog,
                definitions,
                apply_locks: std::array::from_fn(|_| Mutex::new(())),
                fences: Mutex::new(HashMap::new()),
            }),
        }))
    }

    /// Runs `job` on the blocking pool: fjall calls block on disk I/O.
    async fn run_blocking<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || job(&inner))
            .await
            .map_err(|join_error| {
                if join_error.is_cancelled() {
                    // The runtime is shutting down.
                    StoreError::Closed
                } else {
                    // A bug in this operation, not a failing store: the next call may
                    // well succeed, so it must not count against the breaker.
                    StoreError::Rejected("a store operation panicked".into())
                }
            })?
    }
}

impl Inner {
    fn apply_lock(&self, collection: &CollectionName) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        collection.hash(&mut hasher);
        &self.apply_locks[(hasher.finish() % APPLY_LOCK_STRIPES as u64) as usize]
    }

    fn stored_seq(&self, key: &[u8]) -> Result<Option<Seq>, StoreError> {
        match self.documents.get(key).map_err(storage_error)? {
            Some(value) => Ok(Some(Record::decode(&value)?.seq)),
            None => Ok(None),
        }
    }

    /// The collection's fence. Called under its apply lock.
    fn fence(&self, collection: &CollectionName) -> Result<Fence, StoreError> {
        let cached = self
            .fences
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(collection)
            .copied();
        if let Some(fence) = cached {
            return Ok(fence);
        }
        let fence = Fence::of(self.get_collection(collection)?.as_ref());
        self.set_fence(collection, fence);
        Ok(fence)
    }

    fn set_fence(&self, collection: &CollectionName, fence: Fence) {
        self.fences
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(collection.clone(), fence);
    }

    /// Checks the batch's generation against the fence, decides every write against the
    /// stored (or earlier in-batch) sequence, commits the winners as one batch, then
    /// syncs. Returns the outcomes and how many documents were written.
    fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: &[StoreWrite],
    ) -> Result<(Vec<WriteOutcome>, usize), StoreError> {
        let mut outcomes = Vec::with_capacity(writes.len());
        let written = {
            // The guard protects no data, only the read-compare-commit sequence, so a
            // poisoned lock (a panic elsewhere) leaves nothing inconsistent behind.
            let _guard = self
                .apply_lock(collection)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !self.fence(collection)?.admits(generation) {
                return Ok((vec![WriteOutcome::Discarded; writes.len()], 0));
            }
            // Per key: the sequence to beat and the index of the write that wins so far.
            let mut winners: HashMap<Vec<u8>, (Seq, usize)> = HashMap::with_capacity(writes.len());
            for (index, write) in writes.iter().enumerate() {
                let key = doc_key(collection, write.id());
                let outcome = match winners.entry(key) {
                    Entry::Occupied(mut entry) => {
                        if write.seq() > entry.get().0 {
                            entry.insert((write.seq(), index));
                            WriteOutcome::Applied
                        } else {
                            WriteOutcome::Stale
                        }
                    }
                    Entry::Vacant(entry) => match self.stored_seq(entry.key())? {
                        Some(stored) if write.seq() <= stored => WriteOutcome::Stale,
                        _ => {
                            entry.insert((write.seq(), index));
                            WriteOutcome::Applied
                        }
                    },
                };
                outcomes.push(outcome);
            }
            let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
            let deleted_at_ms = now_ms();
            for (key, (_, index)) in &winners {
                let record = match &writes[*index] {
                    StoreWrite::Upsert {
                        seq, hash, source, ..
                    } => Record {
                        seq: *seq,
                        hash: *hash,
                        source: Some(source),
                        deleted_at_ms: None,
                    },
                    StoreWrite::Delete { seq, .. } => Record::tombstone(*seq, deleted_at_ms),
                };
                batch.insert(&self.documents, key.as_slice(), record.encode());
            }
            batch.commit().map_err(storage_error)?;
            winners.len()
        };
        // Even an all-stale batch syncs: its outcomes may rest on another applier's
        // commit that is not synced yet.
        self.db
            .persist(PersistMode::SyncData)
            .map_err(storage_error)?;
        Ok((outcomes, written))
    }

    fn get(&self, collection: &CollectionName, id: DocId) -> Result<Option<StoredDoc>, StoreError> {
        let key = doc_key(collection, &id);
        match self.documents.get(&key).map_err(storage_error)? {
            Some(value) => Ok(Some(Record::decode(&value)?.into_stored(id))),
            None => Ok(None),
        }
    }

    fn versions(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError> {
        // One snapshot, so the answer is one consistent point in time.
        let snapshot = self.db.snapshot();
        ids.iter()
            .map(|id| {
                let key = doc_key(collection, id);
                match snapshot.get(&self.documents, &key).map_err(storage_error)? {
                    Some(value) => Ok(Some(Record::decode(&value)?.version())),
                    None => Ok(None),
                }
            })
            .collect()
    }

    /// Walks the collection's key range from `after`, skipping tombstones; a collection
    /// dense with tombstones costs a walk over them.
    fn scan(
        &self,
        collection: &CollectionName,
        after: Option<DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let mut docs = Vec::new();
        if limit == 0 {
            return Ok(docs);
        }
        let prefix = collection_prefix(collection);
        let start = match &after {
            Some(id) => Bound::Excluded(doc_key(collection, id)),
            None => Bound::Included(prefix.clone()),
        };
        let range = (start, Bound::Excluded(collection_end(collection)));
        for entry in self.documents.range::<Vec<u8>, _>(range) {
            let (key, value) = entry.into_inner().map_err(storage_error)?;
            let record = Record::decode(&value)?;
            if record.source.is_none() {
                continue;
            }
            docs.push(record.into_stored(id_from_key(&key, prefix.len())?));
            if docs.len() >= limit {
                break;
            }
        }
        Ok(docs)
    }

    /// Picks the tombstones past `horizon` among at most `limit` records after `after`
    /// (on a snapshot, lock-free), then removes those still unchanged under the apply
    /// lock (see the module docs).
    fn compact_tombstones(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError> {
        let mut page = CompactionPage::default();
        if limit == 0 {
            page.next_after = after;
            return Ok(page);
        }
        let prefix = collection_prefix(collection);
        let start = match &after {
            Some(id) => Bound::Excluded(doc_key(collection, id)),
            None => Bound::Included(prefix.clone()),
        };
        let range = (start, Bound::Excluded(collection_end(collection)));
        // Each pick: the key and the record's (sequence, deletion time) as seen.
        let mut picked: Vec<(Vec<u8>, Seq, Option<u64>)> = Vec::new();
        let mut examined = 0usize;
        let mut last_key: Option<Vec<u8>> = None;
        for entry in self.documents.range::<Vec<u8>, _>(range) {
            let (key, value) = entry.into_inner().map_err(storage_error)?;
            let record = Record::decode(&value)?;
            if record.source.is_none() && record.seq < horizon.seq_below {
                let expired = record
                    .deleted_at_ms
                    .is_none_or(|deleted_at| deleted_at < horizon.deleted_before_ms);
                if expired {
                    picked.push((key.to_vec(), record.seq, record.deleted_at_ms));
                }
            }
            examined += 1;
            if examined >= limit {
                last_key = Some(key.to_vec());
                break;
            }
        }
        if let Some(key) = last_key {
            page.next_after = Some(id_from_key(&key, prefix.len())?);
        }
        if picked.is_empty() {
            return Ok(page);
        }
        let _guard = self
            .apply_lock(collection)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let stamp_ms = now_ms();
        for (key, seq, deleted_at_ms) in picked {
            let Some(value) = self.documents.get(&key).map_err(storage_error)? else {
                continue;
            };
            let current = Record::decode(&value)?;
            let unchanged = current.source.is_none()
                && current.seq == seq
                && current.deleted_at_ms == deleted_at_ms;
            if !unchanged {
                continue;
            }
            if deleted_at_ms.is_some() {
                batch.remove(&self.documents, key);
                page.removed += 1;
            } else {
                batch.insert(
                    &self.documents,
                    key,
                    Record::tombstone(seq, stamp_ms).encode(),
                );
                page.stamped += 1;
            }
        }
        batch.commit().map_err(storage_error)?;
        Ok(page)
    }

    /// Removes every key of the collection in bounded batches, then syncs once. The
    /// iterator reads a snapshot, so its own deletions do not disturb it. Writes applied
    /// concurrently may survive; a deletion drops documents only once the catalog entry
    /// is `Deleting`, whose fence admits none.
    fn drop_documents(&self, collection: &CollectionName) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for entry in self.documents.prefix(collection_prefix(collection)) {
            let key = entry.key().map_err(storage_error)?;
            batch.remove(&self.documents, key);
            if batch.len() >= DROP_BATCH_KEYS {
                std::mem::replace(&mut batch, self.db.batch())
                    .commit()
                    .map_err(storage_error)?;
            }
        }
        batch.commit().map_err(storage_error)?;
        self.db
            .persist(PersistMode::SyncData)
            .map_err(storage_error)
    }

    /// Writes the entry and moves the collection's fence, under its apply lock (see the
    /// module docs).
    fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError> {
        let json = serde_json::to_vec(meta)
            .map_err(|e| StoreError::Rejected(format!("cannot encode catalog entry: {e}")))?;
        let _guard = self
            .apply_lock(&meta.name)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.catalog
            .insert(meta.name.as_str(), json)
            .map_err(storage_error)?;
        self.db
            .persist(PersistMode::SyncData)
            .map_err(storage_error)?;
        self.set_fence(&meta.name, Fence::of(Some(meta)));
        Ok(())
    }

    fn get_collection(
        &self,
        collection: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        match self
            .catalog
            .get(collection.as_str())
            .map_err(storage_error)?
        {
            Some(json) => decode_catalog_entry(&json).map(Some),
            None => Ok(None),
        }
    }

    fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        self.catalog
            .iter()
            .map(|entry| {
                let json = entry.value().map_err(storage_error)?;
                decode_catalog_entry(&json)
            })
            .collect()
    }

    fn delete_collection(&self, collection: &CollectionName) -> Result<(), StoreError> {
        let _guard = self
            .apply_lock(collection)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.catalog
            .remove(collection.as_str())
            .map_err(storage_error)?;
        self.db
            .persist(PersistMode::SyncData)
            .map_err(storage_error)?;
        self.fences
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(collection);
        Ok(())
    }
}

/// The key of a definition, and the prefix of every key of its kind.
fn definition_key(kind: DefinitionKind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

impl Inner {
    fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.definitions
            .insert(definition_key(kind, name), value)
            .map_err(storage_error)?;
        self.db
            .persist(PersistMode::SyncData)
            .map_err(storage_error)
    }

    fn get_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .definitions
            .get(definition_key(kind, name))
            .map_err(storage_error)?
            .map(|value| Bytes::copy_from_slice(&value)))
    }

    fn list_definitions(&self, kind: DefinitionKind) -> Result<Vec<(String, Bytes)>, StoreError> {
        let prefix = definition_key(kind, "");
        self.definitions
            .prefix(&prefix)
            .map(|entry| {
                let (key, value) = entry.into_inner().map_err(storage_error)?;
                let name = std::str::from_utf8(&key[prefix.len()..])
                    .map_err(|e| StoreError::Corrupt(format!("definition name: {e}")))?;
                Ok((name.to_owned(), Bytes::copy_from_slice(&value)))
            })
            .collect()
    }

    fn delete_definition(&self, kind: DefinitionKind, name: &str) -> Result<bool, StoreError> {
        let key = definition_key(kind, name);
        if self.definitions.get(&key).map_err(storage_error)?.is_none() {
            return Ok(false);
        }
        self.definitions.remove(key).map_err(storage_error)?;
        self.db
            .persist(PersistMode::SyncData)
            .map_err(storage_error)?;
        Ok(true)
    }
}

fn decode_catalog_entry(json: &[u8]) -> Result<CollectionMeta, StoreError> {
    serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(format!("catalog entry: {e}")))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: Vec<StoreWrite>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let owned_collection = collection.clone();
        let (outcomes, written) = self
            .run_blocking(move |inner| inner.apply(&owned_collection, generation, &writes))
            .await?;
        metrics::counter!(STORE_WRITES_TOTAL, "collection" => collection.to_string())
            .increment(written as u64);
        Ok(outcomes)
    }

    async fn get(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<StoredDoc>, StoreError> {
        let (collection, id) = (collection.clone(), id.clone());
        self.run_blocking(move |inner| inner.get(&collection, id))
            .await
    }

    async fn versions(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (collection, ids) = (collection.clone(), ids.to_vec());
        self.run_blocking(move |inner| inner.versions(&collection, &ids))
            .await
    }

    async fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let (collection, after) = (collection.clone(), after.cloned());
        self.run_blocking(move |inner| inner.scan(&collection, after, limit))
            .await
    }

    async fn compact_tombstones(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError> {
        let (collection, after) = (collection.clone(), after.cloned());
        self.run_blocking(move |inner| inner.compact_tombstones(&collection, horizon, after, limit))
            .await
    }

    async fn drop_documents(&self, collection: &CollectionName) -> Result<(), StoreError> {
        let collection = collection.clone();
        self.run_blocking(move |inner| inner.drop_documents(&collection))
            .await
    }

    async fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError> {
        let meta = meta.clone();
        self.run_blocking(move |inner| inner.put_collection(&meta))
            .await
    }

    async fn get_collection(
        &self,
        collection: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        let collection = collection.clone();
        self.run_blocking(move |inner| inner.get_collection(&collection))
            .await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        self.run_blocking(|inner| inner.list_collections()).await
    }

    async fn delete_collection(&self, collection: &CollectionName) -> Result<(), StoreError> {
        let collection = collection.clone();
        self.run_blocking(move |inner| inner.delete_collection(&collection))
            .await
    }

    async fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        value: Bytes,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run_blocking(move |inner| inner.put_definition(kind, &name, &value))
            .await
    }

    async fn get_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        let name = name.to_owned();
        self.run_blocking(move |inner| inner.get_definition(kind, &name))
            .await
    }

    async fn list_definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.run_blocking(move |inner| inner.list_definitions(kind))
            .await
    }

    async fn delete_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.run_blocking(move |inner| inner.delete_definition(kind, &name))
            .await
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::document::ContentHash;
    use sluice_core::resilience::ErrorKind;

    use super::*;

    /// A tombstone written before deletion times were recorded (record format 1) is not
    /// removed by the first pass that sees it, however old the horizon says tombstones
    /// may be: it is given that pass's time, and goes once the horizon passes that.
    #[tokio::test]
    async fn tombstones_of_unknown_time_are_stamped_then_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let c = CollectionName::new("legacy").unwrap();
        let id = DocId::new("gone").unwrap();
        let format_1 = Record {
            seq: Seq(7),
            hash: ContentHash(0),
            source: None,
            deleted_at_ms: None,
        };
        store
            .inner
            .documents
            .insert(doc_key(&c, &id), format_1.encode())
            .unwrap();
        let everything = TombstoneHorizon {
            deleted_before_ms: u64::MAX,
            seq_below: Seq(u64::MAX),
        };
        let before_stamp = now_ms();
        let first = store
            .compact_tombstones(&c, everything, None, 100)
            .await
            .unwrap();
        assert_eq!((first.removed, first.stamped), (0, 1));
        let stored = store.get(&c, &id).await.unwrap().expect("still there");
        assert_eq!((stored.seq, stored.source), (Seq(7), None));
        let raw = store
            .inner
            .documents
            .get(doc_key(&c, &id))
            .unwrap()
            .unwrap();
        let stamped_at = Record::decode(&raw)
            .unwrap()
            .deleted_at_ms
            .expect("stamped");
        assert!(stamped_at >= before_stamp, "stamped with the pass's time");

        let up_to_the_stamp = TombstoneHorizon {
            deleted_before_ms: stamped_at,
            ..everything
        };
        let second = store
            .compact_tombstones(&c, up_to_the_stamp, None, 100)
            .await
            .unwrap();
        assert_eq!(
            (second.removed, second.stamped),
            (0, 0),
            "not before its time"
        );
        let past_the_stamp = TombstoneHorizon {
            deleted_before_ms: stamped_at + 1,
            ..everything
        };
        let third = store
            .compact_tombstones(&c, past_the_stamp, None, 100)
            .await
            .unwrap();
        assert_eq!((third.removed, third.stamped), (1, 0));
        assert_eq!(store.get(&c, &id).await.unwrap(), None);
    }

    #[test]
    fn each_fjall_failure_has_its_kind() {
        let io = || std::io::Error::other("disk gone");
        let cases = [
            (fjall::Error::Io(io()), ErrorKind::Unavailable),
            (
                fjall::Error::Storage(fjall::LsmError::Io(io())),
                ErrorKind::Unavailable,
            ),
            (fjall::Error::Poisoned, ErrorKind::Unavailable),
            (fjall::Error::Locked, ErrorKind::Unavailable),
            (fjall::Error::InvalidTrailer, ErrorKind::Rejected),
            (fjall::Error::Unrecoverable, ErrorKind::Rejected),
            (
                fjall::Error::Storage(fjall::LsmError::InvalidTrailer),
                ErrorKind::Rejected,
            ),
            (fjall::Error::KeyspaceDeleted, ErrorKind::Caller),
        ];
        for (error, kind) in cases {
            let described = format!("{error:?}");
            assert_eq!(storage_error(error).kind(), kind, "{described}");
        }
    }
}
