//! Dedup: decide, per op, whether the store must be written at all.
//!
//! The deciding facts are the version the store holds for the op's id (sequence, content
//! hash, tombstone). They come from a cache of (collection, id) → [`DocVersion`] in front
//! of [`Store::versions`], which is asked once per message for the cache misses. The
//! cache is `quick_cache` (sharded, CLOCK-Pro eviction, synchronous): every op of every
//! message goes through it, and an async cache with per-entry bookkeeping cost several
//! percent of a first ingest's CPU here; looked up with borrowed keys, no allocation.
//! [`resolve`] then walks the ops in order against a working copy of those versions, so
//! several ops on one id in one message resolve exactly as if applied one after another:
//!
//! - known sequence above the op's: [`Decision::Stale`] (last-writer-wins, skip).
//! - known sequence equal to the op's: [`Decision::AlreadyApplied`] — an earlier delivery
//!   of this very message wrote it; no write, but its event is published again (the
//!   earlier delivery may have died between the store write and the event append).
//! - an upsert whose content hash equals the known live version, or a delete of a
//!   tombstone: [`Decision::Unchanged`] (skip, no event).
//! - otherwise [`Decision::Write`].
//!
//! Invariants and concurrency: the pool serializes the lookup → write → cache update of
//! one (collection, partition) (every op on an id travels in its partition), so the cache
//! never lags the store for writes made by this pool. An unchanged op records its own
//! (higher) sequence in the cache though the store keeps the older one: a late,
//! redelivered older op for that id is then recognized as stale instead of overwriting
//! newer content. Writes made by *another* process are not seen by this cache; see the
//! crate documentation for what that means.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use foldhash::HashMapExt;
use metrics::counter;
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{Equivalent, UnitWeighter};
use sluice_core::ids::{CollectionName, DocId, Seq};
use sluice_core::metrics::WORKER_DEDUP_CACHE_LOOKUPS_TOTAL;
use sluice_core::op::DocOp;
use sluice_core::store::{DocVersion, Store, StoreError};

/// What to do with one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write it to the store.
    Write,
    /// Same content as stored (or deleting a tombstone): skip, no event.
    Unchanged,
    /// A newer version is known: skip, no event.
    Stale,
    /// This op's own write is already stored: no write, publish its event again.
    AlreadyApplied,
}

/// The versions known for a message's ids, before its ops are resolved.
pub(crate) type KnownVersions = foldhash::HashMap<DocId, DocVersion>;

/// The version cache: foldhash instead of SipHash, as every op of every message is
/// hashed here.
type VersionCache = Cache<Key, DocVersion, UnitWeighter, foldhash::fast::RandomState>;

/// A cache key: (collection, id).
type Key = (CollectionName, DocId);

/// A borrowed [`Key`], hashing like it, for lookups without cloning.
struct KeyRef<'a>(&'a CollectionName, &'a DocId);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly what the tuple's derived `Hash` feeds the hasher.
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// The shared dedup cache of a pool.
#[derive(Clone)]
pub(crate) struct DedupCache {
    versions: Arc<VersionCache>,
}

impl DedupCache {
    /// A cache of at most `max_entries` ids.
    pub(crate) fn new(max_entries: u64) -> Self {
        let entries = usize::try_from(max_entries).unwrap_or(usize::MAX).max(1);
        Self {
            versions: Arc::new(VersionCache::with(
                entries,
                entries as u64,
                UnitWeighter,
                foldhash::fast::RandomState::default(),
                DefaultLifecycle::default(),
            )),
        }
    }

    /// The known version of every id of `ops`: cache first, then one store multi-get for
    /// the misses (whose answers are cached).
    pub(crate) async fn lookup(
        &self,
        store: &dyn Store,
        collection: &CollectionName,
        ops: &[DocOp],
    ) -> Result<KnownVersions, StoreError> {
        let mut known = KnownVersions::with_capacity(ops.len());
        let mut misses: Vec<DocId> = Vec::new();
        let mut seen: std::collections::HashSet<&DocId> = std::collections::HashSet::new();
        let (mut hits, mut missed) = (0u64, 0u64);
        for op in ops {
            let id = op.id();
            if !seen.insert(id) {
                continue;
            }
            match self.versions.get(&KeyRef(collection, id)) {
                Some(version) => {
                    hits += 1;
                    known.insert(id.clone(), version);
                }
                None => {
                    missed += 1;
                    misses.push(id.clone());
                }
            }
        }
        counter!(WORKER_DEDUP_CACHE_LOOKUPS_TOTAL, "outcome" => "hit").increment(hits);
        counter!(WORKER_DEDUP_CACHE_LOOKUPS_TOTAL, "outcome" => "miss").increment(missed);
        if misses.is_empty() {
            return Ok(known);
        }
        let stored = store.versions(collection, &misses).await?;
        for (id, version) in misses.into_iter().zip(stored) {
            if let Some(version) = version {
                self.versions
                    .insert((collection.clone(), id.clone()), version);
                known.insert(id, version);
            }
        }
        Ok(known)
    }

    /// Records what the store now holds (or is known to be superseded) for `id`.
    pub(crate) fn remember(&self, collection: &CollectionName, id: DocId, version: DocVersion) {
        self.versions.insert((collection.clone(), id), version);
    }

    /// Forgets `id`, so the next lookup asks the store.
    pub(crate) fn forget(&self, collection: &CollectionName, id: DocId) {
        self.versions.remove(&KeyRef(collection, &id));
    }

    /// Forgets every version of `collection`: it was deleted, and a collection created
    /// again under its name starts with nothing stored, so its first documents must not
    /// be taken for unchanged copies of the deleted ones.
    pub(crate) fn forget_collection(&self, collection: &CollectionName) {
        self.versions.retain(|(name, _), _| name != collection);
    }

    /// Forgets every version.
    pub(crate) fn clear(&self) {
        self.versions.clear();
    }
}

/// The version an op leaves behind once applied with sequence `seq`.
pub(crate) fn version_after(op: &DocOp, seq: Seq) -> DocVersion {
    match op {
        DocOp::Upsert { hash, .. } => DocVersion {
            seq,
            hash: *hash,
            deleted: false,
        },
        DocOp::Delete { .. } => DocVersion {
            seq,
            hash: Default::default(),
            deleted: true,
        },
        DocOp::Replayed { op, .. } => version_after(op, seq),
    }
}

/// Decides every op of a message (`ops[i]` has sequence `message_seq.for_op(i)`), in op
/// order. `known` starts as the versions looked up and ends as the versions the message
/// leaves behind once its writes are applied.
pub(crate) fn resolve(ops: &[DocOp], message_seq: Seq, known: &mut KnownVersions) -> Vec<Decision> {
    ops.iter()
        .enumerate()
        .map(|(index, op)| {
            // A replayed op competes with the sequence it was first given.
            let (op, seq) = op.sequenced(message_seq.for_op(index));
            let current = known.get(op.id()).copied();
            let decision = match (current, op) {
                (Some(v), _) if v.seq > seq => Decision::Stale,
                (Some(v), _) if v.seq == seq => Decision::AlreadyApplied,
                (Some(v), DocOp::Upsert { hash, .. }) if !v.deleted && v.hash == *hash => {
                    Decision::Unchanged
                }
                (Some(v), DocOp::Delete { .. }) if v.deleted => Decision::Unchanged,
                _ => Decision::Write,
            };
            match decision {
                // An unchanged op still moves the known sequence forward (see module docs).
                Decision::Write | Decision::Unchanged => {
                    known.insert(op.id().clone(), version_after(op, seq));
                }
                Decision::Stale | Decision::AlreadyApplied => {}
            }
            decision
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_core::document::ContentHash;

    fn id(s: &str) -> DocId {
        DocId::new(s).unwrap()
    }

    fn upsert(doc: &str, hash: u128) -> DocOp {
        DocOp::Upsert {
            id: id(doc),
            hash: ContentHash(hash),
            source: Bytes::from_static(b"{}"),
        }
    }

    fn delete(doc: &str) -> DocOp {
        DocOp::Delete { id: id(doc) }
    }

    fn stored(seq: Seq, hash: u128, deleted: bool) -> DocVersion {
        DocVersion {
            seq,
            hash: ContentHash(hash),
            deleted,
        }
    }

    #[test]
    fn new_ids_are_written_and_same_content_is_unchanged() {
        let mut known = KnownVersions::new();
        known.insert(id("a"), stored(Seq(1).for_op(0), 7, false));
        let decisions = resolve(&[upsert("a", 7), upsert("b", 1)], Seq(5), &mut known);
        assert_eq!(decisions, vec![Decision::Unchanged, Decision::Write]);
        // The unchanged op still advances the known sequence.
        assert_eq!(known[&id("a")].seq, Seq(5).for_op(0));
    }

    #[test]
    fn older_ops_are_stale_and_own_writes_are_recognized() {
        let mut known = KnownVersions::new();
        known.insert(id("a"), stored(Seq(9).for_op(0), 1, false));
        known.insert(id("b"), stored(Seq(5).for_op(1), 2, false));
        let decisions = resolve(&[upsert("a", 3), upsert("b", 2)], Seq(5), &mut known);
        assert_eq!(decisions, vec![Decision::Stale, Decision::AlreadyApplied]);
        assert_eq!(known[&id("a")].seq, Seq(9).for_op(0));
    }

    #[test]
    fn ops_on_one_id_resolve_in_order() {
        let mut known = KnownVersions::new();
        let ops = [
            upsert("a", 1),
            upsert("a", 1),
            delete("a"),
            delete("a"),
            upsert("a", 1),
        ];
        let decisions = resolve(&ops, Seq(3), &mut known);
        assert_eq!(
            decisions,
            vec![
                Decision::Write,
                Decision::Unchanged,
                Decision::Write,
                Decision::Unchanged,
                Decision::Write
            ]
        );
        assert_eq!(known[&id("a")], stored(Seq(3).for_op(4), 1, false));
    }

    #[test]
    fn replayed_ops_resolve_with_their_original_sequence() {
        let mut known = KnownVersions::new();
        // "a" was rewritten after the op being replayed; "b" was not.
        known.insert(id("a"), stored(Seq(9).for_op(0), 5, false));
        known.insert(id("b"), stored(Seq(2).for_op(0), 5, false));
        let ops = [
            DocOp::replayed(upsert("a", 1), Seq(4).for_op(0)),
            DocOp::replayed(upsert("b", 1), Seq(4).for_op(1)),
        ];
        let decisions = resolve(&ops, Seq(20), &mut known);
        assert_eq!(decisions, vec![Decision::Stale, Decision::Write]);
        assert_eq!(known[&id("b")], stored(Seq(4).for_op(1), 1, false));
        // A second delivery of the replay recognizes its own write.
        let again = resolve(&ops[1..], Seq(20), &mut known);
        assert_eq!(again, vec![Decision::AlreadyApplied]);
    }

    #[test]
    fn upsert_over_tombstone_with_same_hash_is_written() {
        let mut known = KnownVersions::new();
        known.insert(id("a"), stored(Seq(1).for_op(0), 0, true));
        let decisions = resolve(&[upsert("a", 0), delete("b")], Seq(2), &mut known);
        assert_eq!(decisions, vec![Decision::Write, Decision::Write]);
    }
}
