//! The collection catalog: schemas kept durably in the store, cached in memory, with a
//! change feed for the roles that follow collections (index shards).
//!
//! Writes are serialized by one lock so that two concurrent creations of the same
//! collection (two first ingests, or an ingest racing a `PUT`) cannot both win.
//! Reads are lock-free clones of an `Arc`.
//!
//! Limits ([`CollectionLimits`]): a creation that would take the catalog past
//! `max_collections`, or the collections created on first ingest past
//! `max_auto_created`, is refused with `too_many_collections`; the count is taken under
//! the write lock, so concurrent creations cannot overshoot it. Collections being
//! deleted still count (their data is still there). Updates of existing collections are
//! never refused.
//!
//! # Incarnations and deletion
//! Every creation starts a new incarnation with its own [`Generation`]. Deleting is a
//! sequence of steps, each durable in the store's catalog entry and each safe to repeat:
//! 1. [`Catalog::begin_delete`]: the entry becomes `Deleting`. From then on readers and
//!    writers see no collection, the store discards writes of that generation, and a
//!    creation under the name is refused with `collection_being_deleted`.
//! 2. The caller appends a [`crate::op::CollectionDrop`] to the DOCS log; a worker
//!    applies it (drops the documents, purges the collection's log messages).
//! 3. [`Catalog::finish_delete`]: the entry becomes `Retired`; the name is free again,
//!    and the next incarnation gets a greater generation.
//!
//! A crash between any two steps leaves a `Deleting` entry, and
//! [`Catalog::deleting`] names it at the next start so the drop is appended again.
//! `Retired` entries are removed by [`Catalog::remove_retired`] once they are older than
//! every write that could still carry their generation.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::{broadcast, Mutex};

use crate::error::ErrorCode;
use crate::ids::{CollectionName, Generation};
use crate::schema::{Schema, SchemaError};
use crate::store::{CollectionMeta, CollectionState, Store, StoreError};

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The schema was refused (`invalid_schema` or `incompatible_schema`).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The store holding the catalog failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Creating the collection would exceed a configured limit (`too_many_collections`);
    /// delete collections, or raise `ingest.max_collections` /
    /// `ingest.max_auto_created_collections`.
    #[error("{0}")]
    TooManyCollections(String),
    /// A collection of that name is being deleted (`collection_being_deleted`); it can
    /// be created again once the deletion has finished.
    #[error("collection {0} is being deleted; create it again once that has finished")]
    BeingDeleted(CollectionName),
}

impl CatalogError {
    /// The error in the store's terms, for callers whose errors speak of the store: a
    /// store failure stays what it was, anything else is a refusal.
    pub fn into_store_error(self) -> StoreError {
        match self {
            CatalogError::Store(error) => error,
            other => StoreError::Rejected(other.to_string()),
        }
    }

    /// The code users see.
    pub fn code(&self) -> ErrorCode {
        match self {
            CatalogError::Schema(e) => e.code,
            CatalogError::Store(e) if e.is_transient() => ErrorCode::Unavailable,
            CatalogError::Store(_) => ErrorCode::Internal,
            CatalogError::TooManyCollections(_) => ErrorCode::TooManyCollections,
            CatalogError::BeingDeleted(_) => ErrorCode::CollectionBeingDeleted,
        }
    }
}

/// A change to the catalog, broadcast to subscribers.
#[derive(Clone, Debug)]
pub enum CatalogChange {
    /// A collection was created or its schema changed.
    Upserted(Arc<CollectionMeta>),
    /// A collection is gone for readers and writers: its deletion began (and, again,
    /// when it finished).
    Deleted(CollectionName),
}

/// Whether [`Catalog::put_schema`] created the collection or updated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// It did not exist.
    Created,
    /// It existed; the schema was replaced by a compatible one.
    Updated,
}

/// How many collections the catalog may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollectionLimits {
    /// Most collections in all.
    pub max_collections: usize,
    /// Most collections created on first ingest (`dynamic`); 0: creation on first ingest
    /// is off.
    pub max_auto_created: usize,
}

impl Default for CollectionLimits {
    /// No limit.
    fn default() -> Self {
        Self {
            max_collections: usize::MAX,
            max_auto_created: usize::MAX,
        }
    }
}

/// Collections and their schemas.
pub struct Catalog {
    store: Arc<dyn Store>,
    default_shards: u32,
    limits: CollectionLimits,
    /// Active collections.
    cache: RwLock<BTreeMap<CollectionName, Arc<CollectionMeta>>>,
    /// Entries of collections being deleted or deleted (`Deleting`, `Retired`).
    ended: RwLock<BTreeMap<CollectionName, Arc<CollectionMeta>>>,
    write_lock: Mutex<()>,
    changes: broadcast::Sender<CatalogChange>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Catalog {
    /// Loads every collection from `store`.
    pub async fn load(store: Arc<dyn Store>, default_shards: u32) -> Result<Self, StoreError> {
        let (active, ended): (Vec<_>, Vec<_>) = store
            .list_collections()
            .await?
            .into_iter()
            .partition(CollectionMeta::is_active);
        let by_name = |metas: Vec<CollectionMeta>| -> BTreeMap<_, _> {
            metas
                .into_iter()
                .map(|meta| (meta.name.clone(), Arc::new(meta)))
                .collect()
        };
        let (changes, _) = broadcast::channel(256);
        Ok(Self {
            store,
            default_shards,
            limits: CollectionLimits::default(),
            cache: RwLock::new(by_name(active)),
            ended: RwLock::new(by_name(ended)),
            write_lock: Mutex::new(()),
            changes,
        })
    }

    /// Refuses creations past `limits` from now on (collections already there stay).
    pub fn with_limits(mut self, limits: CollectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Refuses one more collection (`auto_created`: by a first ingest) past the limits.
    /// Called under the write lock.
    fn check_room_for_one_more(&self, auto_created: bool) -> Result<(), CatalogError> {
        let cache = self.cache.read().expect("catalog lock");
        let deleting = self.deleting().len();
        let limits = self.limits;
        if cache.len() + deleting >= limits.max_collections {
            return Err(CatalogError::TooManyCollections(format!(
                "the node holds its maximum of {} collections (ingest.max_collections); delete one first",
                limits.max_collections
            )));
        }
        if auto_created {
            if limits.max_auto_created == 0 {
                return Err(CatalogError::TooManyCollections(
                    "collections are not created on first ingest here \
                     (ingest.max_auto_created_collections = 0); create it with PUT first"
                        .to_owned(),
                ));
            }
            let dynamic = cache.values().filter(|meta| meta.dynamic).count();
            if dynamic >= limits.max_auto_created {
                return Err(CatalogError::TooManyCollections(format!(
                    "the node holds its maximum of {} collections created on first ingest \
                     (ingest.max_auto_created_collections); create it with PUT, or delete one first",
                    limits.max_auto_created
                )));
            }
        }
        Ok(())
    }

    /// The collection, if it exists.
    pub fn get(&self, name: &CollectionName) -> Option<Arc<CollectionMeta>> {
        self.cache.read().expect("catalog lock").get(name).cloned()
    }

    /// Every collection, by name.
    pub fn list(&self) -> Vec<Arc<CollectionMeta>> {
        self.cache
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    /// Follows creations, schema changes and deletions from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<CatalogChange> {
        self.changes.subscribe()
    }

    /// Creates a collection from `schema`, or replaces its schema with a compatible one.
    pub async fn put_schema(
        &self,
        name: &CollectionName,
        mut schema: Schema,
    ) -> Result<(Arc<CollectionMeta>, PutOutcome), CatalogError> {
        schema.normalize_and_validate()?;
        let _guard = self.write_lock.lock().await;
        let (meta, outcome) = match self.get(name) {
            Some(old) => {
                schema.check_compatible_with(&old.schema)?;
                schema.shards = old.schema.shards;
                let meta = CollectionMeta {
                    name: name.clone(),
                    schema,
                    dynamic: old.dynamic,
                    schema_version: old.schema_version + 1,
                    created_at_ms: old.created_at_ms,
                    generation: old.generation,
                    state: CollectionState::Active,
                };
                (meta, PutOutcome::Updated)
            }
            None => (
                self.new_incarnation(name, schema, false)?,
                PutOutcome::Created,
            ),
        };
        Ok((self.publish(meta).await?, outcome))
    }

    /// Creates a collection from `schema`; `None` (and nothing changes) when one of that
    /// name exists. The check and the creation are one step under the write lock, so of
    /// two concurrent creations exactly one wins.
    pub async fn create(
        &self,
        name: &CollectionName,
        mut schema: Schema,
    ) -> Result<Option<Arc<CollectionMeta>>, CatalogError> {
        schema.normalize_and_validate()?;
        let _guard = self.write_lock.lock().await;
        if self.get(name).is_some() {
            return Ok(None);
        }
        let meta = self.new_incarnation(name, schema, false)?;
        Ok(Some(self.publish(meta).await?))
    }

    /// The collection, created from `schema` when it does not exist yet: a first write
    /// whose schema comes from elsewhere than its documents (an index template). It counts
    /// as created on first ingest (`dynamic`), against both limits.
    pub async fn get_or_create_from(
        &self,
        name: &CollectionName,
        mut schema: Schema,
    ) -> Result<Arc<CollectionMeta>, CatalogError> {
        if let Some(meta) = self.get(name) {
            return Ok(meta);
        }
        schema.normalize_and_validate()?;
        let _guard = self.write_lock.lock().await;
        if let Some(meta) = self.get(name) {
            return Ok(meta);
        }
        let meta = self.new_incarnation(name, schema, true)?;
        Ok(self.publish(meta).await?)
    }

    /// The entry of a new incarnation of `name` created from `schema` (not published);
    /// `auto_created`: by a first write. Called under the write lock.
    fn new_incarnation(
        &self,
        name: &CollectionName,
        mut schema: Schema,
        auto_created: bool,
    ) -> Result<CollectionMeta, CatalogError> {
        let generation = self.next_generation(name)?;
        self.check_room_for_one_more(auto_created)?;
        schema.shards = Some(schema.shards.unwrap_or(self.default_shards));
        Ok(CollectionMeta {
            name: name.clone(),
            schema,
            dynamic: auto_created,
            schema_version: 1,
            created_at_ms: now_ms(),
            generation,
            state: CollectionState::Active,
        })
    }

    /// The collection, created with a dynamic schema inferred from `sample` when it does
    /// not exist yet (first ingest).
    pub async fn get_or_create_dynamic<'a>(
        &self,
        name: &CollectionName,
        sample: impl IntoIterator<Item = &'a Map<String, Value>>,
    ) -> Result<Arc<CollectionMeta>, CatalogError> {
        if let Some(meta) = self.get(name) {
            return Ok(meta);
        }
        let _guard = self.write_lock.lock().await;
        if let Some(meta) = self.get(name) {
            return Ok(meta);
        }
        let generation = self.next_generation(name)?;
        self.check_room_for_one_more(true)?;
        let mut schema = Schema::dynamic();
        for doc in sample {
            schema.infer_from(doc);
        }
        schema.shards = Some(self.default_shards);
        schema.normalize_and_validate()?;
        let meta = CollectionMeta {
            name: name.clone(),
            schema,
            dynamic: true,
            schema_version: 1,
            created_at_ms: now_ms(),
            generation,
            state: CollectionState::Active,
        };
        Ok(self.publish(meta).await?)
    }

    /// The generation of a new incarnation of `name`: above the one of any ended
    /// incarnation. Refused while one is being deleted. Called under the write lock.
    fn next_generation(&self, name: &CollectionName) -> Result<Generation, CatalogError> {
        let ended = self.ended.read().expect("catalog lock");
        match ended.get(name) {
            Some(meta) if meta.state == CollectionState::Deleting => {
                Err(CatalogError::BeingDeleted(name.clone()))
            }
            previous => Ok(Generation::next(previous.map(|meta| meta.generation))),
        }
    }

    /// Step 1 of a deletion (see the module docs): marks the collection `Deleting`,
    /// durably, and tells the subscribers it is gone. Returns the entry to drop, also
    /// when an earlier call already marked it (so a repeated `DELETE` resumes the
    /// deletion); `None` when there is no such collection.
    pub async fn begin_delete(
        &self,
        name: &CollectionName,
    ) -> Result<Option<Arc<CollectionMeta>>, CatalogError> {
        let _guard = self.write_lock.lock().await;
        if let Some(meta) = self.ended_entry(name) {
            return Ok((meta.state == CollectionState::Deleting).then_some(meta));
        }
        let Some(active) = self.get(name) else {
            return Ok(None);
        };
        let meta = Arc::new(CollectionMeta {
            state: CollectionState::Deleting,
            ..(*active).clone()
        });
        self.store.put_collection(&meta).await?;
        self.cache.write().expect("catalog lock").remove(name);
        self.ended
            .write()
            .expect("catalog lock")
            .insert(name.clone(), meta.clone());
        let _ = self.changes.send(CatalogChange::Deleted(name.clone()));
        Ok(Some(meta))
    }

    /// Step 3 of a deletion: incarnation `generation` of `name`, once its data is
    /// dropped, becomes `Retired`. `false` (and nothing changes) when the store does not
    /// hold that incarnation as `Deleting`: it finished already, or never began.
    pub async fn finish_delete(
        &self,
        name: &CollectionName,
        generation: Generation,
    ) -> Result<bool, CatalogError> {
        let _guard = self.write_lock.lock().await;
        let Some(stored) = self.store.get_collection(name).await? else {
            return Ok(false);
        };
        if stored.generation != generation || stored.state != CollectionState::Deleting {
            return Ok(false);
        }
        let meta = Arc::new(CollectionMeta {
            state: CollectionState::Retired { at_ms: now_ms() },
            ..stored
        });
        self.store.put_collection(&meta).await?;
        self.ended
            .write()
            .expect("catalog lock")
            .insert(name.clone(), meta);
        let _ = self.changes.send(CatalogChange::Deleted(name.clone()));
        Ok(true)
    }

    /// The collections whose deletion began and has not finished.
    pub fn deleting(&self) -> Vec<Arc<CollectionMeta>> {
        self.ended
            .read()
            .expect("catalog lock")
            .values()
            .filter(|meta| meta.state == CollectionState::Deleting)
            .cloned()
            .collect()
    }

    /// Whether a deletion of `name` began and has not finished.
    pub fn is_being_deleted(&self, name: &CollectionName) -> bool {
        self.ended_entry(name)
            .is_some_and(|meta| meta.state == CollectionState::Deleting)
    }

    /// Removes the entries of collections deleted before `before_ms` (their generation
    /// can no longer arrive from any log); returns how many.
    pub async fn remove_retired(&self, before_ms: u64) -> Result<usize, CatalogError> {
        let _guard = self.write_lock.lock().await;
        let expired: Vec<CollectionName> = self
            .ended
            .read()
            .expect("catalog lock")
            .values()
            .filter(|meta| matches!(meta.state, CollectionState::Retired { at_ms } if at_ms < before_ms))
            .map(|meta| meta.name.clone())
            .collect();
        for name in &expired {
            self.store.delete_collection(name).await?;
            self.ended.write().expect("catalog lock").remove(name);
        }
        Ok(expired.len())
    }

    fn ended_entry(&self, name: &CollectionName) -> Option<Arc<CollectionMeta>> {
        self.ended.read().expect("catalog lock").get(name).cloned()
    }

    async fn publish(&self, meta: CollectionMeta) -> Result<Arc<CollectionMeta>, StoreError> {
        self.store.put_collection(&meta).await?;
        let meta = Arc::new(meta);
        self.ended.write().expect("catalog lock").remove(&meta.name);
        self.cache
            .write()
            .expect("catalog lock")
            .insert(meta.name.clone(), meta.clone());
        let _ = self.changes.send(CatalogChange::Upserted(meta.clone()));
        Ok(meta)
    }
}
