//! A `Store` that injects the faults a test planned ([`sluice_core::faults`]) before
//! passing each call to the store it wraps.
//!
//! `sluice::run` installs it only when `[faults] enabled = true` (test configuration), so
//! that dependency-fault tests exercise real processes against a real store that
//! misbehaves on demand: every call first runs [`Faults::inject`] for
//! [`FaultPoint::Store`] (the plan's latency, then its error at its rate), and a failing
//! call never reaches the inner store. With no plan set, a call costs one atomic load.
//!
//! Concurrency: stateless apart from the shared [`Faults`]; calls run concurrently.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sluice_core::faults::{FaultKind, FaultPoint, Faults};
use sluice_core::ids::{CollectionName, DocId, Generation};
use sluice_core::store::{
    CollectionMeta, CompactionPage, DefinitionKind, DocVersion, Store, StoreError, StoreWrite,
    StoredDoc, TombstoneHorizon, WriteOutcome,
};

/// Wraps a store with the node's fault plans.
pub struct FaultInjectingStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

impl FaultInjectingStore {
    /// `inner`, failing and slowing down as `faults` plans for [`FaultPoint::Store`].
    pub fn new(inner: Arc<dyn Store>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(Self { inner, faults })
    }

    async fn inject(&self) -> Result<(), StoreError> {
        self.faults
            .inject(FaultPoint::Store, None)
            .await
            .map_err(store_error)
    }
}

/// The store error an injected fault stands for (same classification as the real one).
fn store_error(kind: FaultKind) -> StoreError {
    match kind {
        FaultKind::Unavailable => StoreError::Unavailable("injected fault".to_owned()),
        FaultKind::Timeout => StoreError::Timeout,
        FaultKind::Storage => StoreError::Storage("injected fault".to_owned()),
    }
}

#[async_trait]
impl Store for FaultInjectingStore {
    async fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: Vec<StoreWrite>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.inject().await?;
        self.inner.apply(collection, generation, writes).await
    }

    async fn get(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<StoredDoc>, StoreError> {
        self.inject().await?;
        self.inner.get(collection, id).await
    }

    async fn versions(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError> {
        self.inject().await?;
        self.inner.versions(collection, ids).await
    }

    async fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        self.inject().await?;
        self.inner.scan(collection, after, limit).await
    }

    async fn compact_tombstones(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError> {
        self.inject().await?;
        self.inner
            .compact_tombstones(collection, horizon, after, limit)
            .await
    }

    async fn drop_documents(&self, collection: &CollectionName) -> Result<(), StoreError> {
        self.inject().await?;
        self.inner.drop_documents(collection).await
    }

    async fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError> {
        self.inject().await?;
        self.inner.put_collection(meta).await
    }

    async fn get_collection(
        &self,
        collection: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        self.inject().await?;
        self.inner.get_collection(collection).await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        self.inject().await?;
        self.inner.list_collections().await
    }

    async fn delete_collection(&self, collection: &CollectionName) -> Result<(), StoreError> {
        self.inject().await?;
        self.inner.delete_collection(collection).await
    }

    async fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        value: Bytes,
    ) -> Result<(), StoreError> {
        self.inject().await?;
        self.inner.put_definition(kind, name, value).await
    }

    async fn get_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        self.inject().await?;
        self.inner.get_definition(kind, name).await
    }

    async fn list_definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.inject().await?;
        self.inner.list_definitions(kind).await
    }

    async fn delete_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.inject().await?;
        self.inner.delete_definition(kind, name).await
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::faults::FaultPlan;

    use super::*;
    use crate::EmbeddedStore;

    #[tokio::test]
    async fn planned_errors_fail_calls_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::enabled();
        let store =
            FaultInjectingStore::new(EmbeddedStore::open(dir.path()).unwrap(), faults.clone());
        assert_eq!(store.list_collections().await.unwrap(), vec![]);
        let plan = FaultPlan {
            error_rate: 1.0,
            error: FaultKind::Timeout,
            ..FaultPlan::default()
        };
        faults.set(FaultPoint::Store, Some(plan)).unwrap();
        assert_eq!(store.list_collections().await, Err(StoreError::Timeout));
        faults.set(FaultPoint::Store, None).unwrap();
        assert_eq!(store.list_collections().await.unwrap(), vec![]);
    }

    #[test]
    fn injected_errors_keep_their_classification() {
        use sluice_core::resilience::Classify;
        assert!(store_error(FaultKind::Unavailable).is_transient());
        assert!(store_error(FaultKind::Timeout).is_transient());
        assert!(store_error(FaultKind::Storage).is_transient());
        assert!(store_error(FaultKind::Storage).is_infrastructure());
    }
}
