//! A `Store` whose every call goes through the store's circuit breaker and timeout
//! ([`sluice_core::resilience::Breaker`]).
//!
//! `sluice::run` hands this wrapper, not the raw adapter, to every role (catalog,
//! workers, indexer rebuilds, document reads), so each store call site is bounded by
//! `resilience.store_timeout` and counted by the one `store` breaker of the node without
//! repeating the wrapping at each site. While the breaker is open a call fails at once
//! with a transient [`StoreError::Unavailable`] instead of waiting on a store that is
//! down; callers that pull work (the worker pool) also ask the breaker before pulling.
//!
//! Concurrency: the breaker is shared by clones and by every task of the node.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sluice_core::ids::{CollectionName, DocId, Generation};
use sluice_core::resilience::Breaker;
use sluice_core::store::{
    CollectionMeta, CompactionPage, DefinitionKind, DocVersion, Store, StoreError, StoreWrite,
    StoredDoc, TombstoneHorizon, WriteOutcome,
};

/// Wraps a store with a breaker.
pub struct GuardedStore {
    inner: Arc<dyn Store>,
    breaker: Breaker,
}

impl GuardedStore {
    /// Every call of `inner` through `breaker` (the node's `store` breaker).
    pub fn new(inner: Arc<dyn Store>, breaker: Breaker) -> Arc<Self> {
        Arc::new(Self { inner, breaker })
    }
}

#[async_trait]
impl Store for GuardedStore {
    async fn apply(
        &self,
        collection: &CollectionName,
        generation: Generation,
        writes: Vec<StoreWrite>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.breaker
            .call(self.inner.apply(collection, generation, writes))
            .await
    }

    async fn get(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<StoredDoc>, StoreError> {
        self.breaker.call(self.inner.get(collection, id)).await
    }

    async fn versions(
        &self,
        collection: &CollectionName,
        ids: &[DocId],
    ) -> Result<Vec<Option<DocVersion>>, StoreError> {
        self.breaker
            .call(self.inner.versions(collection, ids))
            .await
    }

    async fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        self.breaker
            .call(self.inner.scan(collection, after, limit))
            .await
    }

    async fn compact_tombstones(
        &self,
        collection: &CollectionName,
        horizon: TombstoneHorizon,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<CompactionPage, StoreError> {
        self.breaker
            .call(
                self.inner
                    .compact_tombstones(collection, horizon, after, limit),
            )
            .await
    }

    async fn drop_documents(&self, collection: &CollectionName) -> Result<(), StoreError> {
        self.breaker
            .call(self.inner.drop_documents(collection))
            .await
    }

    async fn put_collection(&self, meta: &CollectionMeta) -> Result<(), StoreError> {
        self.breaker.call(self.inner.put_collection(meta)).await
    }

    async fn get_collection(
        &self,
        collection: &CollectionName,
    ) -> Result<Option<CollectionMeta>, StoreError> {
        self.breaker
            .call(self.inner.get_collection(collection))
            .await
    }

    async fn list_collections(&self) -> Result<Vec<CollectionMeta>, StoreError> {
        self.breaker.call(self.inner.list_collections()).await
    }

    async fn delete_collection(&self, collection: &CollectionName) -> Result<(), StoreError> {
        self.breaker
            .call(self.inner.delete_collection(collection))
            .await
    }

    async fn put_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
        value: Bytes,
    ) -> Result<(), StoreError> {
        self.breaker
            .call(self.inner.put_definition(kind, name, value))
            .await
    }

    async fn get_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        self.breaker
            .call(self.inner.get_definition(kind, name))
            .await
    }

    async fn list_definitions(
        &self,
        kind: DefinitionKind,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.breaker.call(self.inner.list_definitions(kind)).await
    }

    async fn delete_definition(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.breaker
            .call(self.inner.delete_definition(kind, name))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sluice_core::config::ResilienceConfig;
    use sluice_core::faults::{FaultPlan, FaultPoint, Faults};
    use sluice_core::resilience::{BreakerState, Dependency};

    use super::*;
    use crate::{EmbeddedStore, FaultInjectingStore};

    #[tokio::test]
    async fn slow_calls_time_out_open_the_breaker_and_a_probe_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = ResilienceConfig {
            breaker_failures: 2,
            breaker_open_initial: Duration::from_millis(20),
            breaker_open_max: Duration::from_millis(40),
            ..ResilienceConfig::default()
        };
        let breaker = Breaker::new(Dependency::Store, Duration::from_millis(30), &config);
        let faults = Faults::enabled();
        let faulty =
            FaultInjectingStore::new(EmbeddedStore::open(dir.path()).unwrap(), faults.clone());
        let store = GuardedStore::new(faulty, breaker.clone());
        let slow = FaultPlan {
            latency: Duration::from_secs(5),
            ..FaultPlan::default()
        };
        faults.set(FaultPoint::Store, Some(slow)).unwrap();
        for _ in 0..2 {
            assert_eq!(store.list_collections().await, Err(StoreError::Timeout));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(matches!(
            store.list_collections().await,
            Err(StoreError::Unavailable(_))
        ));

        faults.set(FaultPoint::Store, None).unwrap();
        let permitted = tokio::time::timeout(
            Duration::from_secs(5),
            breaker.wait_until_permitted(std::future::pending()),
        )
        .await
        .unwrap();
        assert!(permitted);
        assert_eq!(store.list_collections().await.unwrap(), vec![]);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
