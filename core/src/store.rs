//! The document store port: the source of truth, written last-writer-wins.
//!
//! Documents live by (collection, id) with the op sequence that wrote them and their
//! content hash. A write with a sequence not above the stored one is stale and ignored,
//! whatever order writes arrive in, so redelivered or reordered batches cannot make an
//! older version win. Deletes leave tombstones (with their sequence) for the same reason.
//! ScyllaDB gets this from `USING TIMESTAMP <seq>`; the embedded store compares.
//!
//! A tombstone is only needed while an older op for its id can still arrive, so
//! [`Store::compact_tombstones`] removes the ones past a [`TombstoneHorizon`]: deleted
//! long enough ago, and below every op that may still be delivered. The node's periodic
//! pass (`sluice_workers::tombstones`) chooses the horizon and states why it is safe.
//!
//! The store also keeps the collection catalog (schemas), so a node that restarts or
//! joins finds every collection, and beside it the named definitions clients store for
//! later ([`DefinitionKind`]: the Elasticsearch API's index and component templates and
//! lifecycle policies), so that they survive a restart the same way.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::document::ContentHash;
use crate::ids::{CollectionName, DocId, Generation, Seq};
use crate::schema::Schema;

/// A failure of the store: each variant names what happened, and [`StoreError::kind`]
/// says what that means for retries and breakers (decided once, in
/// [`crate::resilience`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or is overloaded (or its breaker is open); retry
    /// later. Unavailable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation did not complete in time; it may or may not have taken effect.
    /// Transient.
    #[error("store operation timed out")]
    Timeout,
    /// Local storage failed (disk full, I/O error, a failed flush that stops writes).
    /// Unavailable.
    #[error("store storage failure: {0}")]
    Storage(String),
    /// The store answered and refused this operation as made; retrying it unchanged
    /// fails the same way. Rejected.
    #[error("store refused the operation: {0}")]
    Rejected(String),
    /// Stored bytes could not be decoded. Rejected.
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// The store is shutting down. Caller.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// What kind of failure this is (see [`crate::resilience::ErrorKind`]).
    pub fn kind(&self) -> crate::resilience::ErrorKind {
        crate::resilience::Classify::kind(self)
    }

    /// Whether retrying the same operation later may succeed (see
    /// [`crate::resilience::Classify`], where this is decided).
    pub fn is_transient(&self) -> bool {
        crate::resilience::Classify::is_transient(self)
    }
}

/// What the store holds for one id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDoc {
    /// The id.
    pub id: DocId,
    /// Sequence of the op that wrote this version.
    pub seq: Seq,
    /// Content hash (zero for tombstones).
    pub hash: ContentHash,
    /// Canonical JSON; `None` for a tombstone.
    pub source: Option<Bytes>,
}

/// The version facts of a stored document, without its body (for dedup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocVersion {
    /// Sequence of the op that wrote it.
    pub seq: Seq,
    /// Content hash (zero for tombstones).
    pub hash: ContentHash,
    /// Whether it is a tombstone.
    pub deleted: bool,
}

/// One write, applied only if `seq` is above the stored sequence.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreWrite {
    /// Insert or replace.
    Upsert {
        /// The id.
        id: DocId,
        /// The op sequence.
        seq: Seq,
        /// Hash of `source`.
        hash: ContentHash,
        /// Canonical JSON.
        source: Bytes,
    },
    /// Replace with a tombstone.
    Delete {
        /// The id.
        id: DocId,
        /// The op sequence.
        seq: Seq,
    },
}

impl StoreWrite {
    /// The id written.
    pub fn id(&self) -> &DocId {
        match self {
            StoreWrite::Upsert { id, .. } | StoreWrite::Delete { id, .. } => id,
        }
    }

    /// The op sequence.
    pub fn seq(&self) -> Seq {
        match self {
            StoreWrite::Upsert { seq, .. } | StoreWrite::Delete { seq, .. } => *seq,
        }
    }
}

/// What became of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written: this version is now the stored one.
    Applied,
    /// Ignored: the store already holds a version with a sequence at or above it.
    /// Stores that cannot tell (blind last-writer-wins writes) report `Applied`.
    Stale,
    /// Dropped: the write was for an incarnation of the collection that is being or has
    /// been deleted (see [`Store::apply`]).
    Discarded,
}

/// Which tombstones [`Store::compact_tombstones`] may remove: those deleted before
/// `deleted_before_ms` **and** written with a sequence below `seq_below`. Anything newer
/// on either count stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TombstoneHorizon {
    /// Wall-clock time, milliseconds since the Unix epoch: only tombstones the store
    /// recorded as deleted before it may go.
    pub deleted_before_ms: u64,
    /// Only tombstones whose sequence is below it may go: every op at or above it may
    /// still be delivered, so tombstones it could race must stay.
    pub seq_below: Seq,
}

/// What one [`Store::compact_tombstones`] call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionPage {
    /// Tombstones removed.
    pub removed: u64,
    /// Tombstones written before deletion times were recorded, now given the time of
    /// this call as their deletion time (so they go one retention later, never sooner).
    pub stamped: u64,
    /// Where the next call continues (its `after`); `None` once the collection's end was
    /// reached.
    pub next_after: Option<DocId>,
}

/// A collection as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// The collection.
    pub name: CollectionName,
    /// The current schema (`shards` always set).
    pub schema: Schema,
    /// Whether it was created on first ingest, with a schema that grows with its data.
    pub dynamic: bool,
    /// Bumped on every schema change; indexes built from an older version are rebuilt.
    pub schema_version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The incarnation (see [`Generation`]); 0 for collections created before
    /// generations were recorded.
    #[serde(default)]
    pub generation: Generation,
    /// Whether the collection is live, being deleted or deleted.
    #[serde(default)]
    pub state: CollectionState,
}

/// Where a collection is in its life. Deleting is an operation in the DOCS log
/// (`sluice_core::op::CollectionDrop`), applied by a worker in steps that can each be
/// repeated after a crash; the catalog entry records how far it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectionState {
    /// Live: ingest, search and reads see it.
    #[default]
    Active,
    /// A deletion was accepted: the collection is gone for every reader and writer,
    /// writes of its generation are discarded, and a worker is dropping its documents
    /// and log messages. A new incarnation cannot be created until it is `Retired`.
    Deleting,
    /// Deleted: nothing of it is left but this entry, which keeps later writes of its
    /// generation from landing. A new incarnation replaces it; the tombstone pass removes
    /// it once it is older than the tombstone retention.
    Retired {
        /// When the deletion finished, milliseconds since the Unix epoch.
        at_ms: u64,
    },
}

impl CollectionMeta {
    /// Whether readers and writers see the collection (it is not being or been deleted).
    pub fn is_active(&self) -> bool {
        self.state == CollectionState::Active
    }

    /// Number of shards (= log partitions) of the collection.
    pub fn shards(&self) -> u32 {
        self.schema.shards.unwrap_or(1)
    }
}

/// What a named definition kept beside the catalog is ([`Store::put_definition`]). Each
/// kind is its own namespace: an index template and a lifecycle policy may share a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DefinitionKind {
    /// A composable index template (`/_index_template/{name}`).
    IndexTemplate,
    /// A component template (`/_component_template/{name}`).
    ComponentTemplate,
    /// A legacy index template (`/_template/{name}`).
    LegacyTemplate,
    /// An index lifecycle policy (`/_ilm/policy/{name}`).
    LifecyclePolicy,
    /// A data stream (`/_data_stream/{name}`): the collection of its name.
    DataStream,
}

impl DefinitionKind {
    /// Every kind.
    pub const ALL: [DefinitionKind; 5] = [
        DefinitionKind::IndexTemplate,
        DefinitionKind::ComponentTemplate,
        DefinitionKind::LegacyTemplate,
        DefinitionKind::LifecyclePolicy,
        DefinitionKind::DataStream,
    ];

    /// A stable name for the kind (stores key definitions by it).
    pub fn as_str(self) -> &'static str {
        match self {
            DefinitionKind::IndexTemplate => "index_template",
            DefinitionKind::ComponentTemplate => "component_template",
            DefinitionKind::LegacyTemplate => "legacy_template",
            DefinitionKind::LifecyclePolicy => "lifecycle_policy",
            DefinitionKind::DataStream => "data_stream",
        }
    }
}

/// The document store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies writes last-writer-wins, one outcome per write, in order. The batch is
    /// durable when this returns `Ok`. Several writes to one id in a batch are allowed.
    ///
    /// The writes are for incarnation `generation` of the collection. When the catalog
    /// holds the collection with another generation, or in a state other than
    /// [`CollectionState::Active`], every write is [`WriteOutcome::Discarded`]; that
    /// check and the writes are atomic with respect to catalog updates
    /// ([`Store::put_collection`]), so no write of a deleted incarnation lands after its
    /// deletion began. A collection the catalog does not hold at all takes writes of any
    /// generation (stores used without a catalog).
    async fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: Vec<StoreWrite>,
    ) -> Result<Vec<WriteOutcome>, StoreError>;

    /// The stored version of `id`, tombstones included.
    async fn get(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<StoredDoc>, StoreError>;

    /// The stored versions of `ids`, in order, without bodies.
    async fn versions(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError>;

    /// Live documents (no tombstones) of a collection in id order, after `after`.
    async fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError>;

    /// Removes the tombstones of a collection past `horizon`, looking at no more than
    /// `limit` stored records (live or not) after `after` in id order, so that one call
    /// stays short; page on with [`CompactionPage::next_after`]. Live documents are never
    /// removed, nor a tombstone that a concurrent `apply` replaced. A tombstone whose
    /// deletion time the store does not know is not removed: it is given the current time
    /// instead ([`CompactionPage::stamped`]). Removals need not be durable when this
    /// returns (a lost one leaves a dead tombstone for the next pass).
    async fn compact_tombstones(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError>;

    /// Deletes every document of a collection.
    async fn drop_documents(&self, collection: &CollectionName) -> Result<(), StoreError>;

    /// Creates or replaces a catalog entry.
    async fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError>;

    /// The catalog entry of a collection.
    async fn get_collection(
        &self,
        collection: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError>;

    /// Every catalog entry, by name.
    async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError>;

    /// Removes a catalog entry.
    async fn delete_collection(&self, collection: &CollectionName) -> Result<(), StoreError>;

    /// Creates or replaces the definition `name` of `kind` with `value` (opaque bytes,
    /// durable when this returns `Ok`).
    async fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        value: Bytes,
    ) -> Result<(), StoreError>;

    /// The definition `name` of `kind`, if there is one.
    async fn get_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError>;

    /// Every definition of `kind`, by name.
    async fn list_definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<(String, Bytes)>, StoreError>;

    /// Removes the definition `name` of `kind`; whether there was one.
    async fn delete_definition(&self, kind: DefinitionKind, name: &str)
        -> Result<bool, StoreError>;
}
