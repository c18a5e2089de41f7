//! The index of one collection at one schema version: its shards on disk, their consume
//! loops, and the build from the store when the index is new or rebuilt.
//!
//! Layout: `{root}/{collection}/v{schema_version}/shard-{s}` (`{collection}` is the
//! name's token, [`sluice_core::name_token`]: the name itself unless it holds `.` or
//! characters beyond `a-z 0-9 _ -`), plus
//! `{root}/{collection}/created_at_ms` (so a collection deleted and re-created while the
//! node was down is not served from the old one's files) and `v{n}/.built`, written once
//! the build from the store has committed on every shard: a version directory without it
//! is a build that did not finish and is started over.
//!
//! Why build from the store: the log truncates acked events, so a new index (first start,
//! schema change, lost directory) cannot be rebuilt from EVENTS. The build runs while no
//! loop consumes this collection's events: every event acked before is reflected in the
//! store the scan reads (workers write the store before publishing), and every event
//! after stays in the log for the loops that start next. Overlap is harmless: the shard
//! ignores events not newer than what it holds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_core::config::IndexerConfig;
use sluice_core::log::Log;
use sluice_core::op::Event;
use sluice_core::store::{CollectionMeta, Store};
use sluice_core::subjects::StreamKind;
use sluice_core::{Generation, Partition};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::consume::{self, blocking, LoopContext};
use crate::error::{IndexerError, ShardError};
use crate::index_schema::IndexSchema;
use crate::shard::ShardIndex;

/// Documents read from the store per scan page during a build.
const SCAN_PAGE: usize = 1000;
const BUILT_MARKER: &str = ".built";
const CREATED_MARKER: &str = "created_at_ms";

/// One collection's shards and their loops.
pub(crate) struct CollectionIndex {
    /// The catalog entry the index was built for.
    pub meta: Arc<CollectionMeta>,
    /// Shard `s` at index `s`.
    pub shards: Vec<Arc<ShardIndex>>,
    /// The node's shutdown token: loops run under a child of it.
    shutdown: CancellationToken,
    /// The running loops, if started: stopping takes them out, so they can be restarted
    /// (a failed rebuild gives the previous version its loops back).
    loops: Mutex<Option<RunningLoops>>,
}

struct RunningLoops {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IndexerError + '_ {
    move |source| IndexerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `{root}/{token of the collection}`
pub(crate) fn collection_dir(root: &Path, meta: &CollectionMeta) -> PathBuf {
    root.join(&*meta.name.token())
}

fn version_dir(root: &Path, meta: &CollectionMeta) -> PathBuf {
    collection_dir(root, meta).join(format!("v{}", meta.schema_version))
}

impl CollectionIndex {
    /// Opens the shards of `meta`'s schema version, building them from the store first
    /// when they are missing or unfinished. Loops are not started.
    pub async fn open(
        root: &Path,
        meta: Arc<CollectionMeta>,
        config: &IndexerConfig,
        store: &dyn Store,
        parent_cancel: &CancellationToken,
    ) -> Result<Self, IndexerError> {
        let collection_dir = collection_dir(root, &meta);
        let version_dir = version_dir(root, &meta);
        let built = {
            let meta = meta.clone();
            let collection_dir = collection_dir.clone();
            let version_dir = version_dir.clone();
            tokio::task::spawn_blocking(move || prepare_dirs(&collection_dir, &version_dir, &meta))
                .await
                .map_err(|e| IndexerError::Shard(ShardError::Task(e.to_string())))??
        };
        let schema = Arc::new(IndexSchema::new(&meta.schema));
        let shards = match open_shards(&version_dir, &meta, &schema, config).await {
            Ok(shards) => shards,
            Err(error) if built => {
                // A directory the current code cannot open (corrupt, or written by an
                // incompatible mapping) is rebuilt rather than left unusable.
                tracing::warn!(%error, collection = %meta.name, "index unreadable; rebuilding from the store");
                remove_dir(&version_dir)?;
                return Box::pin(Self::open(root, meta, config, store, parent_cancel)).await;
            }
            Err(error) => return Err(error),
        };
        let index = Self {
            meta,
            shards,
            shutdown: parent_cancel.clone(),
            loops: Mutex::new(None),
        };
        if !built {
            index.build_from_store(store).await?;
            let marker = version_dir.join(BUILT_MARKER);
            std::fs::write(&marker, b"").map_err(io_error(&marker))?;
        }
        Ok(index)
    }

    /// Feeds every live document of the store into its shard, then commits every shard.
    async fn build_from_store(&self, store: &dyn Store) -> Result<(), IndexerError> {
        let shard_count = self.shards.len() as u32;
        let mut after = None;
        let mut documents = 0usize;
        loop {
            let page = store
                .scan(&self.meta.name, after.as_ref(), SCAN_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let full_page = page.len() == SCAN_PAGE;
            let mut per_shard: Vec<Vec<Event>> = vec![Vec::new(); self.shards.len()];
            for stored in page {
                let Some(source) = stored.source else {
                    continue;
                };
                let Partition(shard) = stored.id.partition(shard_count);
                per_shard[shard as usize].push(Event::Upserted {
                    id: stored.id,
                    seq: stored.seq,
                    hash: stored.hash,
                    source,
                });
            }
            for (shard, events) in self.shards.iter().zip(per_shard) {
                if events.is_empty() {
                    continue;
                }
                documents += events.len();
                let shard = shard.clone();
                blocking(move || shard.apply(events)).await?;
            }
            if !full_page {
                break;
            }
        }
        for shard in &self.shards {
            let shard = shard.clone();
            // Committed, the build's writers close: the consume loops open theirs within
            // the node's writer slots.
            blocking(move || {
                shard.commit()?;
                shard.close_writer_if_idle(Duration::ZERO)
            })
            .await?;
        }
        tracing::info!(collection = %self.meta.name, version = self.meta.schema_version, documents, "index built from the store");
        Ok(())
    }

    fn lock_loops(&self) -> MutexGuard<'_, Option<RunningLoops>> {
        self.loops
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts one consume loop per shard (no-op when they run already).
    pub fn start_loops(&self, context: &LoopContext) {
        let mut loops = self.lock_loops();
        if loops.is_some() {
            return;
        }
        let running = RunningLoops {
            cancel: self.shutdown.child_token(),
            tasks: TaskTracker::new(),
        };
        for shard in &self.shards {
            let span = tracing::info_span!("indexer_shard", collection = %shard.collection(), shard = shard.partition().0);
            running.tasks.spawn(
                consume::run(
                    shard.clone(),
                    self.meta.generation,
                    context.clone(),
                    running.cancel.clone(),
                )
                .instrument(span),
            );
        }
        running.tasks.close();
        *loops = Some(running);
    }

    /// Stops the loops and waits until each has committed and acked its last batch.
    pub async fn stop_loops(&self) {
        let running = self.lock_loops().take();
        if let Some(running) = running {
            running.cancel.cancel();
            running.tasks.wait().await;
        }
    }

    /// Deletes every shard's durable consumer (the collection is gone).
    pub async fn delete_consumers(&self, log: &dyn Log) {
        for shard in &self.shards {
            let name = consume::consumer_name(shard);
            if let Err(error) = log.delete_consumer(StreamKind::Events, &name).await {
                tracing::warn!(%error, consumer = name, "deleting an indexer consumer failed");
            }
        }
    }

    /// Removes the shards' contribution to the metrics (the index is being dropped).
    pub fn retire_metrics(&self) {
        for shard in &self.shards {
            shard.retire_metrics();
        }
    }
}

/// What the collection directory's marker file holds: the creation time of a
/// collection created before generations were recorded, else its generation.
fn incarnation_marker(meta: &CollectionMeta) -> String {
    if meta.generation == Generation(0) {
        meta.created_at_ms.to_string()
    } else {
        format!("generation {}", meta.generation)
    }
}

/// Resets directories that do not belong to this collection incarnation, and tells
/// whether the version directory holds a finished build.
fn prepare_dirs(
    collection_dir: &Path,
    version_dir: &Path,
    meta: &CollectionMeta,
) -> Result<bool, IndexerError> {
    let created_marker = collection_dir.join(CREATED_MARKER);
    let created = incarnation_marker(meta);
    match std::fs::read_to_string(&created_marker) {
        Ok(found) if found == created => {}
        Ok(_) => remove_dir(collection_dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&created_marker)(e)),
    }
    std::fs::create_dir_all(collection_dir).map_err(io_error(collection_dir))?;
    std::fs::write(&created_marker, created).map_err(io_error(&created_marker))?;
    if version_dir.join(BUILT_MARKER).exists() {
        return Ok(true);
    }
    remove_dir(version_dir)?;
    std::fs::create_dir_all(version_dir).map_err(io_error(version_dir))?;
    Ok(false)
}

async fn open_shards(
    version_dir: &Path,
    meta: &Arc<CollectionMeta>,
    schema: &Arc<IndexSchema>,
    config: &IndexerConfig,
) -> Result<Vec<Arc<ShardIndex>>, IndexerError> {
    let mut shards = Vec::new();
    for s in 0..meta.shards() {
        let dir = version_dir.join(format!("shard-{s}"));
        let collection = meta.name.clone();
        let schema = schema.clone();
        let memory = config.writer_memory.as_u64();
        let shard =
            blocking(move || ShardIndex::open(&dir, collection, Partition(s), schema, memory))
                .await?;
        shards.push(Arc::new(shard));
    }
    Ok(shards)
}

/// Removes a directory tree; absent is fine.
pub(crate) fn remove_dir(dir: &Path) -> Result<(), IndexerError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(dir)(e)),
    }
}

/// Removes every version directory of the collection but `keep`'s.
pub(crate) fn remove_other_versions(
    root: &Path,
    keep: &CollectionMeta,
) -> Result<(), IndexerError> {
    let dir = collection_dir(root, keep);
    let keep_name = format!("v{}", keep.schema_version);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error(&dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('v') && name != keep_name.as_str() {
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}
