//! Applying a collection drop: the worker's part of deleting a collection.
//!
//! A deletion is a [`CollectionDrop`] message in the DOCS log, appended once the catalog
//! entry is `Deleting` (see `sluice_core::catalog`, "Incarnations and deletion"). A
//! worker applies it in three steps, each safe to repeat, so a crash at any point is
//! repaired by applying it again:
//! 1. drop the collection's documents from the store (the store's fence already
//!    discards every write of that generation, so none lands behind this step);
//! 2. purge the collection's DOCS, EVENTS and DLQ messages from the log, the drop
//!    message itself included (the messages of the deleted incarnation are dead; a
//!    later incarnation's cannot exist yet, as none can be created before step 3), and
//!    delete its index shards' EVENTS consumers (the indexers delete them too when they
//!    drop the shards, but a node that stopped first leaves them behind, and a stale
//!    consumer would tell the next incarnation's readers its shards were ready);
//! 3. retire the catalog entry, which frees the name.
//!
//! The drop is acked after step 3. A drop of an incarnation that is not `Deleting` (it
//! finished already, or a later one replaced it) changes nothing. Because step 2 removes
//! the message, a crash between steps 2 and 3 leaves no message to redeliver:
//! [`resume`] appends the drop again for every `Deleting` entry when the pool starts.

use sluice_core::catalog::{Catalog, CatalogError};
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::log::{Log, LogError};
use sluice_core::op::CollectionDrop;
use sluice_core::store::{CollectionState, Store};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::Partition;
use tracing::info;

use crate::retry::Failure;

/// Applies `drop`; `false` when there was nothing to do.
pub(crate) async fn apply(
    catalog: &Catalog,
    store: &dyn Store,
    log: &dyn Log,
    drop: &CollectionDrop,
) -> Result<bool, Failure> {
    let collection = &drop.collection;
    let Some(entry) = store.get_collection(collection).await?.filter(|entry| {
        entry.generation == drop.generation && entry.state == CollectionState::Deleting
    }) else {
        return Ok(false);
    };
    store.drop_documents(collection).await?;
    crash_point::reached(CrashPoint::DropDocuments);
    for (stream, filter) in [
        (StreamKind::Docs, subjects::docs_of_collection(collection)),
        (
            StreamKind::Events,
            subjects::events_of_collection(collection),
        ),
        (StreamKind::Dlq, subjects::dlq(collection)),
    ] {
        log.purge(stream, &filter).await?;
    }
    for shard in 0..entry.shards() {
        let consumer = subjects::indexer_consumer(collection, Partition(shard));
        match log.delete_consumer(StreamKind::Events, &consumer).await {
            Ok(()) | Err(LogError::ConsumerNotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    crash_point::reached(CrashPoint::DropPurged);
    catalog
        .finish_delete(collection, drop.generation)
        .await
        .map_err(CatalogError::into_store_error)?;
    crash_point::reached(CrashPoint::DropRetired);
    info!(%collection, generation = %drop.generation, "collection deleted");
    Ok(true)
}

/// Appends the drop of every collection whose deletion began and did not finish (the
/// process stopped before, or the message was purged before the entry was retired).
/// Applying a drop twice is harmless.
pub async fn resume(catalog: &Catalog, log: &dyn Log) -> Result<usize, LogError> {
    let deleting = catalog.deleting();
    for entry in &deleting {
        let drop = CollectionDrop {
            collection: entry.name.clone(),
            generation: entry.generation,
        };
        log.append(StreamKind::Docs, vec![drop.to_outgoing()])
            .await?;
        info!(collection = %entry.name, "resuming the deletion of a collection");
    }
    Ok(deleting.len())
}
