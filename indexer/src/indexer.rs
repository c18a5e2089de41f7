//! The indexer role: follows the catalog, owns every collection's shards and their loops,
//! and answers searches through the result cache.
//!
//! Concurrency: one follower task applies catalog changes one at a time (so a collection
//! is never opened, rebuilt and dropped concurrently with itself); searches read the
//! collection map under a short read lock and run on blocking threads, one per shard.
//! A rebuild keeps the old index searchable until the new one is swapped in.
//!
//! Search fallbacks: a shard that fails or does not answer within
//! `shard_search_timeout` is left out, and the response says so (`partial`,
//! `failed_shards`); such a response is never cached. When every shard fails, the last
//! complete response to the same request is served from a second cache (keyed without
//! generations), flagged `stale`; without one the search is unavailable.
//!
//! Both caches are weighed by bytes (an estimate of each key's and response's size) and
//! each holds at most half of `search_cache_size`; a response weighing more is not
//! cached. `sluice_search_cache_bytes` shows their weighed size together.
//!
//! Shutdown: cancelling the token stops the follower, which then stops every
//! collection's loops; each loop commits and acks its last batch. [`Indexer::wait_stopped`]
//! returns once all of that is done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use sluice_core::catalog::{Catalog, CatalogChange};
use sluice_core::config::{IndexerConfig, TombstoneSchedule};
use sluice_core::faults::{FaultPoint, Faults};
use sluice_core::log::Log;
use sluice_core::metrics::{
    SEARCH_CACHE_BYTES, SEARCH_CACHE_LOOKUPS_TOTAL, SEARCH_DURATION_SECONDS, SEARCH_REQUESTS_TOTAL,
};
use sluice_core::resilience::Breakers;
use sluice_core::search::{IndexedCopy, SearchRequest, SearchResponse, SearchService};
use sluice_core::store::{CollectionMeta, Store};
use sluice_core::{CollectionName, DocId};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::collection::{self, CollectionIndex};
use crate::consume::LoopContext;
use crate::error::{IndexerError, SearchError};
use crate::lookup;
use crate::search::{self, NormalizedRequest, SearchSettings, ShardTop};
use crate::shard::ShardIndex;
use crate::writer_slots::WriterSlots;

/// Attempts at opening or rebuilding a collection after a catalog change.
const OPEN_ATTEMPTS: u32 = 5;
/// First delay between those attempts (doubles).
const OPEN_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Identifies a result: any commit on any shard changes `generations`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    collection: CollectionName,
    request: NormalizedRequest,
    generations: Vec<u64>,
}

/// Identifies the last complete result of a request, whatever the generations.
type LastGoodKey = (CollectionName, NormalizedRequest);

impl CacheKey {
    /// A cheap estimate of the memory the key holds, in bytes.
    fn estimated_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.collection.as_str().len()
            + self.request.estimated_size()
            + self.generations.len() * std::mem::size_of::<u64>()
    }
}

/// What a cached response weighs: its key's and its own estimated size, in bytes.
fn cache_weight(key_size: usize, response: &SearchResponse) -> u32 {
    u32::try_from(key_size.saturating_add(response.estimated_size())).unwrap_or(u32::MAX)
}

/// A result cache of at most `budget` weighed bytes.
fn weighed_cache<K>(budget: u64, key_size: fn(&K) -> usize) -> Cache<K, Arc<SearchResponse>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(budget)
        .weigher(move |key: &K, response: &Arc<SearchResponse>| {
            cache_weight(key_size(key), response)
        })
        .build()
}

/// Index shards of every collection, and search over them.
pub struct Indexer {
    config: IndexerConfig,
    root: PathBuf,
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    breakers: Breakers,
    /// When the shards may compact their tombstones.
    tombstones: TombstoneSchedule,
    /// The node-wide bound on open index writers, shared by every shard's loop.
    writer_slots: Arc<WriterSlots>,
    collections: RwLock<HashMap<CollectionName, Arc<CollectionIndex>>>,
    cache: Cache<CacheKey, Arc<SearchResponse>>,
    /// The last complete response per request, served (flagged stale) when every shard
    /// fails.
    last_good: Cache<LastGoodKey, Arc<SearchResponse>>,
    /// Weighed bytes each of the two caches may hold (half of `search_cache_size`).
    cache_budget: u64,
    /// The configured bounds of a search.
    search_settings: SearchSettings,
    /// Test-planned failures of shard searches ([`FaultPoint::IndexSearch`]).
    faults: Arc<Faults>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Indexer {
    /// Opens the shards of every collection in the catalog under `data_dir/index`, starts one
    /// consume loop per shard, and follows catalog changes (new collections get shards,
    /// deleted ones are dropped, a schema_version change rebuilds the collection's index).
    ///
    /// `breakers` are the node's: the loops gate fetches on `log_consume` and record
    /// commits in `index_commit`; `store` (read by rebuilds) should be behind the store
    /// breaker already. `faults` is what searches consult at `FaultPoint::IndexSearch`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        config: IndexerConfig,
        tombstones: TombstoneSchedule,
        data_dir: &Path,
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        breakers: Breakers,
        faults: Arc<Faults>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Indexer>, IndexerError> {
        let root = data_dir.join("index");
        std::fs::create_dir_all(&root).map_err(|source| IndexerError::Io {
            path: root.clone(),
            source,
        })?;
        // Subscribe before listing so no change falls between the two.
        let changes = catalog.subscribe();
        let cache_budget = config.search_cache_size.as_u64() / 2;
        let indexer = Arc::new(Indexer {
            cache: weighed_cache(cache_budget, CacheKey::estimated_size),
            last_good: weighed_cache(cache_budget, |(collection, request): &LastGoodKey| {
                collection.as_str().len() + request.estimated_size()
            }),
            cache_budget,
            search_settings: SearchSettings::from_config(&config),
            writer_slots: WriterSlots::new(config.max_open_writers),
            config,
            tombstones,
            root,
            log,
            store,
            breakers,
            faults,
            collections: RwLock::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown,
        });
        let metas = catalog.list();
        for meta in &metas {
            let index = indexer.open_collection(meta.clone()).await?;
            indexer.install(index);
        }
        indexer.remove_unknown_collection_dirs(&metas);
        let follower = indexer.clone();
        indexer
            .tasks
            .spawn(async move { follower.follow(catalog, changes).await });
        indexer.tasks.close();
        Ok(indexer)
    }

    /// After `shutdown` is cancelled: waits for the loops to finish their batch, commit and ack.
    pub async fn wait_stopped(&self) {
        self.tasks.wait().await;
    }

    /// The node's fault plans (inert unless `[faults] enabled`).
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// What the index holds for `id` as of its shard's last commit: the fallback of a
    /// document read when the store is down ([`crate::lookup`]). `Ok(None)` when the
    /// index has no copy (never indexed, or not committed yet).
    pub async fn indexed_copy(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<IndexedCopy>, SearchError> {
        let index = self
            .collection(collection)
            .ok_or(SearchError::CollectionNotFound)?;
        let Some(shard) = lookup::shard_of(&index.shards, id).cloned() else {
            return Err(SearchError::Unavailable(
                "the collection has no shards".into(),
            ));
        };
        let id = id.clone();
        tokio::task::spawn_blocking(move || lookup::lookup(&shard, &id))
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))?
    }

    /// Runs a search over every shard of the collection (cached, see below).
    pub async fn search(
        &self,
        collection: &CollectionName,
        request: &SearchRequest,
    ) -> Result<SearchResponse, SearchError> {
        let started = Instant::now();
        let result = self.search_uncounted(collection, request, started).await;
        let outcome = match &result {
            Ok(response) if response.stale => "stale",
            Ok(response) if response.partial => "partial",
            Ok(_) => "ok",
            Err(
                SearchError::InvalidQuery(_)
                | SearchError::QueryTooComplex(_)
                | SearchError::CollectionNotFound,
            ) => "invalid",
            Err(_) => "error",
        };
        metrics::counter!(SEARCH_REQUESTS_TOTAL, "outcome" => outcome).increment(1);
        metrics::histogram!(SEARCH_DURATION_SECONDS).record(started.elapsed().as_secs_f64());
        result
    }

    async fn search_uncounted(
        &self,
        collection: &CollectionName,
        request: &SearchRequest,
        started: Instant,
    ) -> Result<SearchResponse, SearchError> {
        let index = self
            .collection(collection)
            .ok_or(SearchError::CollectionNotFound)?;
        let key = self.cache_key(&index, request)?;
        if let Some(cached) = self.cache.get(&key) {
            metrics::counter!(SEARCH_CACHE_LOOKUPS_TOTAL, "outcome" => "hit").increment(1);
            let mut response = SearchResponse::clone(&cached);
            response.took_ms = started.elapsed().as_millis() as u64;
            return Ok(response);
        }
        metrics::counter!(SEARCH_CACHE_LOOKUPS_TOTAL, "outcome" => "miss").increment(1);
        let last_good_key = (key.collection.clone(), key.request.clone());
        let mut response = match self.run_search(index, key.request.clone()).await {
            Ok(response) if response.partial => response,
            Ok(response) => {
                let response = Arc::new(response);
                self.cache_response(key, last_good_key, &response);
                SearchResponse::clone(&response)
            }
            Err(SearchError::Unavailable(cause)) => match self.last_good.get(&last_good_key) {
                Some(last) => {
                    tracing::warn!(collection = %collection, %cause, "serving a stale cached result");
                    let mut response = SearchResponse::clone(&last);
                    response.stale = true;
                    response
                }
                None => return Err(SearchError::Unavailable(cause)),
            },
            Err(other) => return Err(other),
        };
        response.took_ms = started.elapsed().as_millis() as u64;
        Ok(response)
    }

    /// Keeps a complete response in both caches, unless it weighs more than a cache may
    /// hold; evicts what the budget no longer has room for at once (not at moka's next
    /// maintenance) and publishes the caches' weighed size.
    fn cache_response(
        &self,
        key: CacheKey,
        last_good_key: LastGoodKey,
        response: &Arc<SearchResponse>,
    ) {
        let weight = cache_weight(key.estimated_size(), response);
        if u64::from(weight) > self.cache_budget {
            return;
        }
        self.cache.insert(key, response.clone());
        self.last_good.insert(last_good_key, response.clone());
        self.cache.run_pending_tasks();
        self.last_good.run_pending_tasks();
        metrics::gauge!(SEARCH_CACHE_BYTES)
            .set((self.cache.weighted_size() + self.last_good.weighted_size()) as f64);
    }

    /// Validates `request` and keys it with the shards' current generations.
    ///
    /// Generations are read before searching: a commit racing the search can only make
    /// the cached result fresher than its key, never staler.
    fn cache_key(
        &self,
        index: &CollectionIndex,
        request: &SearchRequest,
    ) -> Result<CacheKey, SearchError> {
        let first = index
            .shards
            .first()
            .ok_or_else(|| SearchError::Unavailable("the collection has no shards".into()))?;
        Ok(CacheKey {
            collection: index.meta.name.clone(),
            request: NormalizedRequest::new(request, first.schema(), &self.search_settings)?,
            generations: index.shards.iter().map(|s| s.generation()).collect(),
        })
    }

    /// Tombstone documents the collection's shards held at their last commits (deletes
    /// not compacted yet, [`crate::tombstones`]); `None` for an unknown collection.
    pub fn tombstones(&self, name: &CollectionName) -> Option<u64> {
        self.collection(name)
            .map(|index| index.shards.iter().map(|shard| shard.tombstones()).sum())
    }

    /// What the shard loops this indexer starts share.
    fn loop_context(&self) -> LoopContext {
        LoopContext {
            log: self.log.clone(),
            config: self.config.clone(),
            tombstones: self.tombstones,
            breakers: self.breakers.clone(),
            slots: self.writer_slots.clone(),
        }
    }

    fn collection(&self, name: &CollectionName) -> Option<Arc<CollectionIndex>> {
        self.collections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }

    /// Makes `index` the served one and starts its loops; returns the one it replaces.
    fn install(&self, index: CollectionIndex) -> Option<Arc<CollectionIndex>> {
        index.start_loops(&self.loop_context());
        let index = Arc::new(index);
        self.collections
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(index.meta.name.clone(), index)
    }

    fn uninstall(&self, name: &CollectionName) -> Option<Arc<CollectionIndex>> {
        self.collections
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
    }

    async fn open_collection(
        &self,
        meta: Arc<CollectionMeta>,
    ) -> Result<CollectionIndex, IndexerError> {
        let index = CollectionIndex::open(
            &self.root,
            meta.clone(),
            &self.config,
            self.store.as_ref(),
            &self.shutdown,
        )
        .await?;
        collection::remove_other_versions(&self.root, &meta)?;
        Ok(index)
    }

    /// Index directories of collections the catalog no longer has (deleted while down).
    fn remove_unknown_collection_dirs(&self, known: &[Arc<CollectionMeta>]) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !known.iter().any(|meta| meta.name.token() == name) {
                if let Err(error) = collection::remove_dir(&entry.path()) {
                    tracing::warn!(%error, "removing the index of a deleted collection failed");
                }
            }
        }
    }

    async fn follow(
        self: Arc<Self>,
        catalog: Arc<Catalog>,
        mut changes: tokio::sync::broadcast::Receiver<CatalogChange>,
    ) {
        loop {
            let change = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                change = changes.recv() => change,
            };
            match change {
                Ok(CatalogChange::Upserted(meta)) => self.on_upserted(meta).await,
                Ok(CatalogChange::Deleted(name)) => self.on_deleted(&name).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "catalog changes missed; reconciling with the catalog"
                    );
                    self.reconcile(&catalog).await;
                }
                Err(RecvError::Closed) => {
                    self.shutdown.cancelled().await;
                    break;
                }
            }
        }
        let all: Vec<Arc<CollectionIndex>> = self
            .collections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        for index in all {
            index.stop_loops().await;
        }
    }

    async fn on_upserted(&self, meta: Arc<CollectionMeta>) {
        let current = self.collection(&meta.name);
        if let Some(current) = &current {
            if current.meta.schema_version >= meta.schema_version
                && current.meta.created_at_ms == meta.created_at_ms
                && current.meta.generation == meta.generation
            {
                return;
            }
            // The new index is built while nobody consumes the events (see
            // `collection`); the old one keeps answering searches meanwhile.
            current.stop_loops().await;
        }
        let mut delay = OPEN_RETRY_DELAY;
        for attempt in 1..=OPEN_ATTEMPTS {
            if self.shutdown.is_cancelled() {
                return;
            }
            match self.open_collection(meta.clone()).await {
                Ok(index) => {
                    if let Some(old) = self.install(index) {
                        old.retire_metrics();
                    }
                    tracing::info!(collection = %meta.name, version = meta.schema_version, "collection index ready");
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, collection = %meta.name, attempt, "opening the collection index failed");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay *= 2;
                }
            }
        }
        // Give the previous version its loops back rather than leave it frozen.
        if let Some(current) = current {
            tracing::error!(collection = %meta.name, "keeping the previous index version");
            current.start_loops(&self.loop_context());
        }
    }

    async fn on_deleted(&self, name: &CollectionName) {
        let Some(index) = self.uninstall(name) else {
            return;
        };
        index.stop_loops().await;
        index.delete_consumers(self.log.as_ref()).await;
        index.retire_metrics();
        let dir = collection::collection_dir(&self.root, &index.meta);
        drop(index);
        if let Err(error) = collection::remove_dir(&dir) {
            tracing::warn!(%error, collection = %name, "removing the index directory failed");
        }
        tracing::info!(collection = %name, "collection index dropped");
    }

    /// Brings the served collections in line with the catalog after missed changes.
    async fn reconcile(&self, catalog: &Catalog) {
        let metas = catalog.list();
        let served: Vec<CollectionName> = self
            .collections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect();
        for name in served {
            if !metas.iter().any(|meta| meta.name == name) {
                self.on_deleted(&name).await;
            }
        }
        for meta in metas {
            self.on_upserted(meta).await;
        }
    }
}

#[async_trait]
impl SearchService for Indexer {
    async fn search(
        &self,
        collection: &CollectionName,
        request: &SearchRequest,
    ) -> Result<SearchResponse, SearchError> {
        Indexer::search(self, collection, request).await
    }

    async fn search_many(
        &self,
        collections: &[CollectionName],
        request: &SearchRequest,
    ) -> Result<SearchResponse, SearchError> {
        Indexer::search_many(self, collections, request).await
    }

    async fn indexed_copy(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<IndexedCopy>, SearchError> {
        Indexer::indexed_copy(self, collection, id).await
    }
}

impl Indexer {
    /// Fans the search out to every shard on blocking threads, merges, loads the page.
    /// Shards that fail or time out are left out and listed; every shard failing is
    /// [`SearchError::Unavailable`].
    async fn run_search(
        &self,
        index: Arc<CollectionIndex>,
        request: NormalizedRequest,
    ) -> Result<SearchResponse, SearchError> {
        self.run_search_over(vec![(index, request)], false).await
    }

    /// [`Indexer::run_search`] over the shards of every target (a collection and the
    /// request validated against its schema), merged in one order; `label` names each
    /// hit's collection. `failed_shards` are shard numbers within their collections.
    async fn run_search_over(
        &self,
        targets: Vec<(Arc<CollectionIndex>, NormalizedRequest)>,
        label: bool,
    ) -> Result<SearchResponse, SearchError> {
        let Some((_, first_request)) = targets.first() else {
            return Ok(SearchResponse::empty());
        };
        let (offset, limit, top_k) = (
            first_request.offset(),
            first_request.limit(),
            first_request.top_k(),
        );
        let mut plans = Vec::with_capacity(targets.len());
        for (index, request) in &targets {
            let (index, request) = (index.clone(), request.clone());
            let settings = self.search_settings;
            let plan = tokio::task::spawn_blocking(move || {
                search::plan_on_parse_stack(&index.shards[0], &request, &settings)
            })
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))??;
            plans.push(Arc::new(plan));
        }
        // Every shard of every target, with its target and its number in its collection.
        let shards: Vec<(usize, u32, Arc<ShardIndex>)> = targets
            .iter()
            .enumerate()
            .flat_map(|(target, (index, _))| {
                index
                    .shards
                    .iter()
                    .enumerate()
                    .map(move |(shard_no, shard)| (target, shard_no as u32, shard.clone()))
            })
            .collect();
        let searches = shards
            .iter()
            .enumerate()
            .map(|(position, (target, shard_no, shard))| {
                let shard = shard.clone();
                let plan = plans[*target].clone();
                let faults = self.faults.clone();
                let shard_no = *shard_no;
                let search = async move {
                    faults
                        .inject(FaultPoint::IndexSearch, Some(shard_no))
                        .await
                        .map_err(|kind| SearchError::Unavailable(format!("injected {kind:?}")))?;
                    tokio::task::spawn_blocking(move || {
                        search::collect_shard(position, &shard, &plan, top_k)
                    })
                    .await
                    .map_err(|e| SearchError::Internal(e.to_string()))?
                };
                // A shard that does not answer in time is left out; its blocking search
                // finishes in the background and is dropped.
                let timeout = self.config.shard_search_timeout;
                async move {
                    match tokio::time::timeout(timeout, search).await {
                        Ok(result) => result,
                        Err(_) => Err(SearchError::Unavailable("shard search timed out".into())),
                    }
                }
            });
        let results = futures_util::future::join_all(searches).await;
        let mut tops: Vec<Option<ShardTop>> = Vec::with_capacity(results.len());
        let mut failed_shards = Vec::new();
        for (result, (target, shard_no, _)) in results.into_iter().zip(&shards) {
            match result {
                Ok(top) => tops.push(Some(top)),
                Err(error) => {
                    let collection = &targets[*target].0.meta.name;
                    tracing::warn!(%collection, shard = shard_no, %error, "shard search failed");
                    failed_shards.push(*shard_no);
                    tops.push(None);
                }
            }
        }
        if failed_shards.len() == tops.len() {
            return Err(SearchError::Unavailable(
                "every shard of the collection failed to search".into(),
            ));
        }
        let labels: Option<Vec<String>> = label.then(|| {
            shards
                .iter()
                .map(|(target, _, _)| targets[*target].0.meta.name.to_string())
                .collect()
        });
        tokio::task::spawn_blocking(move || {
            let mut tops = tops;
            let (total, page) = search::merge(&tops, &plans[0], offset, limit);
            let aggregations = search::merge_aggregations(&mut tops, &plans[0])?;
            let shard_plans: Vec<&search::QueryPlan> = shards
                .iter()
                .map(|(target, _, _)| plans[*target].as_ref())
                .collect();
            let shard_indexes: Vec<Arc<ShardIndex>> =
                shards.iter().map(|(_, _, shard)| shard.clone()).collect();
            let hits =
                search::load_hits(&shard_indexes, &tops, &shard_plans, labels.as_deref(), page)?;
            Ok(SearchResponse {
                total,
                hits,
                aggregations,
                partial: !failed_shards.is_empty(),
                failed_shards,
                ..SearchResponse::empty()
            })
        })
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))?
    }

    /// A search over several collections ([`SearchService::search_many`]): each
    /// validated against its own schema; a sort field must sort the same way in all.
    pub async fn search_many(
        &self,
        collections: &[CollectionName],
        request: &SearchRequest,
    ) -> Result<SearchResponse, SearchError> {
        let started = Instant::now();
        let mut targets = Vec::with_capacity(collections.len());
        for name in collections {
            let index = self
                .collection(name)
                .ok_or(SearchError::CollectionNotFound)?;
            let first = index
                .shards
                .first()
                .ok_or_else(|| SearchError::Unavailable("a collection has no shards".into()))?;
            let normalized =
                NormalizedRequest::new(request, first.schema(), &self.search_settings)?;
            targets.push((index, normalized));
        }
        if let Some((_, first)) = targets.first() {
            if targets.iter().any(|(_, other)| !other.sorts_like(first)) {
                return Err(SearchError::InvalidQuery(
                    "the sort field has different types in these collections".into(),
                ));
            }
        }
        let mut response = self.run_search_over(targets, true).await?;
        response.took_ms = started.elapsed().as_millis() as u64;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_core::config::{Config, LogConfig};
    use sluice_core::document::ContentHash;
    use sluice_core::log::OutgoingMessage;
    use sluice_core::op::{Event, EventBatch};
    use sluice_core::schema::Schema;
    use sluice_core::store::StoreWrite;
    use sluice_core::subjects::{self, StreamKind};
    use sluice_core::{DocId, Seq};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_are_cached_until_a_commit_changes_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> =
            sluice_queue::EmbeddedLog::open(&dir.path().join("log"), &LogConfig::default())
                .unwrap();
        let store: Arc<dyn Store> =
            sluice_store::EmbeddedStore::open(&dir.path().join("store")).unwrap();
        let catalog = Arc::new(Catalog::load(store.clone(), 2).await.unwrap());
        let books = CollectionName::new("books").unwrap();
        let schema = Schema::from_json(br#"{"fields":[{"name":"title","type":"text"}]}"#).unwrap();
        let (meta, _) = catalog.put_schema(&books, schema).await.unwrap();
        let doc = |id: &str, seq: u64| {
            let source = serde_json::json!({"id": id, "title": "cached words"}).to_string();
            (
                DocId::new(id).unwrap(),
                Seq(seq),
                ContentHash::of(source.as_bytes()),
                Bytes::from(source),
            )
        };
        let (id, seq, hash, source) = doc("a", 1);
        store
            .apply(
                &books,
                meta.generation,
                vec![StoreWrite::Upsert {
                    id,
                    seq,
                    hash,
                    source,
                }],
            )
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let config = Config::for_test(dir.path());
        let indexer = Indexer::start(
            config.indexer,
            config.store.tombstone_schedule(),
            dir.path(),
            log.clone(),
            store,
            catalog,
            Breakers::new(&Default::default(), Duration::from_secs(5)),
            Faults::disabled(),
            shutdown.clone(),
        )
        .await
        .unwrap();

        let request = SearchRequest {
            q: Some("cached".into()),
            ..SearchRequest::default()
        };
        let key = |indexer: &Indexer| {
            let index = indexer.collection(&books).unwrap();
            indexer.cache_key(&index, &request).unwrap()
        };
        let first_key = key(&indexer);
        assert!(!indexer.cache.contains_key(&first_key));
        let first = indexer.search(&books, &request).await.unwrap();
        assert_eq!(first.total, 1);
        assert!(indexer.cache.contains_key(&first_key), "stored on a miss");
        // Equivalent spellings share the entry.
        let respelled = SearchRequest {
            q: Some("  cached ".into()),
            limit: Some(10),
            ..SearchRequest::default()
        };
        let index = indexer.collection(&books).unwrap();
        assert_eq!(indexer.cache_key(&index, &respelled).unwrap(), first_key);
        let again = indexer.search(&books, &respelled).await.unwrap();
        assert_eq!(again.total, 1);

        // A committed change moves a generation: the old entry is no longer used.
        let (id, seq, hash, source) = doc("b", 2);
        let partition = id.partition(2);
        let batch = EventBatch {
            collection: books.clone(),
            partition,
            generation: meta.generation,
            events: vec![Event::Upserted {
                id,
                seq,
                hash,
                source,
            }],
        };
        log.append(
            StreamKind::Events,
            vec![OutgoingMessage {
                subject: subjects::events(&books, partition),
                msg_id: "b".into(),
                payload: batch.encode(),
            }],
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while key(&indexer) == first_key {
            assert!(Instant::now() < deadline, "no commit happened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = indexer.search(&books, &request).await.unwrap();
        assert_eq!(after.total, 2, "the cache did not serve the stale result");
        shutdown.cancel();
        indexer.wait_stopped().await;
    }
}
