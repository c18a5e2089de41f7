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
//! the write lock, so concurrent creations cannot overshoot it. Updates of existing
//! collections are never refused.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::{broadcast, Mutex};

use crate::error::ErrorCode;
use crate::ids::CollectionName;
use crate::schema::{Schema, SchemaError};
use crate::store::{CollectionMeta, Store, StoreError};

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
}

impl CatalogError {
    /// The code users see.
    pub fn code(&self) -> ErrorCode {
        match self {
            CatalogError::Schema(e) => e.code,
            CatalogError::Store(e) if e.is_transient() => ErrorCode::Unavailable,
            CatalogError::Store(_) => ErrorCode::Internal,
            CatalogError::TooManyCollections(_) => ErrorCode::TooManyCollections,
        }
    }
}

/// A change to the catalog, broadcast to subscribers.
#[derive(Clone, Debug)]
pub enum CatalogChange {
    /// A collection was created or its schema changed.
    Upserted(Arc<CollectionMeta>),
    /// A collection was deleted.
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
    cache: RwLock<BTreeMap<CollectionName, Arc<CollectionMeta>>>,
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
        let cache = store
            .list_collections()
            .await?
            .into_iter()
            .map(|meta| (meta.name.clone(), Arc::new(meta)))
            .collect();
        let (changes, _) = broadcast::channel(256);
        Ok(Self {
            store,
            default_shards,
            limits: CollectionLimits::default(),
            cache: RwLock::new(cache),
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
        let limits = self.limits;
        if cache.len() >= limits.max_collections {
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
                };
                (meta, PutOutcome::Updated)
            }
            None => {
                self.check_room_for_one_more(false)?;
                schema.shards = Some(schema.shards.unwrap_or(self.default_shards));
                let meta = CollectionMeta {
                    name: name.clone(),
                    schema,
                    dynamic: false,
                    schema_version: 1,
                    created_at_ms: now_ms(),
                };
                (meta, PutOutcome::Created)
            }
        };
        Ok((self.publish(meta).await?, outcome))
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
        };
        Ok(self.publish(meta).await?)
    }

    /// Deletes a collection from the catalog; `false` when it did not exist. Its
    /// documents and indexes are dropped by the roles that own them.
    pub async fn delete(&self, name: &CollectionName) -> Result<bool, CatalogError> {
        let _guard = self.write_lock.lock().await;
        if self.get(name).is_none() {
            return Ok(false);
        }
        self.store.delete_collection(name).await?;
        self.cache.write().expect("catalog lock").remove(name);
        let _ = self.changes.send(CatalogChange::Deleted(name.clone()));
        Ok(true)
    }

    async fn publish(&self, meta: CollectionMeta) -> Result<Arc<CollectionMeta>, StoreError> {
        self.store.put_collection(&meta).await?;
        let meta = Arc::new(meta);
        self.cache
            .write()
            .expect("catalog lock")
            .insert(meta.name.clone(), meta.clone());
        let _ = self.changes.send(CatalogChange::Upserted(meta.clone()));
        Ok(meta)
    }
}
