//! The on-disk state of the embedded log and the operations that only touch storage.
//!
//! Two fjall databases live under the log directory:
//! - `streams/`: one keyspace per stream (`DOCS`, `EVENTS`, `DLQ`) holding messages by
//!   sequence, `msg_ids` (the dedup index) and `meta` (each stream's high-water mark).
//!   Only the committer thread appends here, each group in one atomic batch that is
//!   fsynced before it becomes visible; truncation, purge and deletes only remove.
//! - `consumers/`: consumer headers and pending deliveries. Kept apart so that the
//!   frequent, unsynced consumer writes (deliveries, acks) never queue behind an append
//!   fsync on the same journal.
//!
//! Concurrency: [`Shared`] is shared by the log, the committer thread and every consumer
//! handle. Blocking storage work runs on the caller's blocking thread (tokio's blocking
//! pool or the committer thread), never on an async worker. Locks are held briefly; the
//! only nestings are stream truncation → registry (reading floors) and registry → a
//! consumer group not yet shared (creation), so no cycle can form.
//!
//! Invariants:
//! - `last_seq` only grows; it is persisted in the same batch as the messages it covers,
//!   so sequences are never reused, even when every message has been truncated.
//! - Messages at or below a stream's `truncated_through` may be gone; nothing above the
//!   minimum ack floor of the stream's consumers is ever removed by truncation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions};
use sluice_core::log::{LogError, StoredMessage};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::Seq;

use super::codec::{self, ConsumerKey};
use super::consumer::ConsumerGroup;
use super::group_commit::DedupIndex;
use super::retention::RetentionWork;

/// Most keys removed in one write batch by truncation and purge, so one removal never
/// builds an unbounded batch in memory.
const REMOVAL_BATCH: usize = 4096;

/// Maps a storage engine failure to the port's error.
pub(crate) fn storage_error(error: impl std::fmt::Display) -> LogError {
    LogError::Storage(error.to_string())
}

/// Locks `mutex`, ignoring poisoning: every critical section leaves its data consistent
/// before anything that can panic, so a panicked holder does not invalidate it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One stream's keyspace and in-memory marks.
pub(crate) struct StreamStore {
    /// Which stream.
    kind: StreamKind,
    /// Messages by sequence.
    pub(crate) messages: Keyspace,
    /// The last sequence made durable (0 when none ever was).
    pub(crate) last_seq: AtomicU64,
    /// Everything at or below it has been truncated (or was never retained).
    truncated_through: AtomicU64,
    /// Serializes truncation runs of this stream.
    truncation: Mutex<()>,
}

/// Everything the log, the committer and the consumer handles share.
pub(crate) struct Shared {
    /// Messages, the dedup index and high-water marks.
    pub(crate) streams_db: Database,
    /// Consumer headers and pending deliveries.
    pub(crate) consumers_db: Database,
    /// Per stream, indexed by [`codec::stream_index`].
    pub(crate) streams: [StreamStore; 3],
    /// The persisted msg-id index.
    pub(crate) msg_ids: Keyspace,
    /// High-water marks.
    pub(crate) meta: Keyspace,
    /// Consumer state.
    pub(crate) consumer_state: Keyspace,
    /// Live consumer groups by (stream, durable name).
    pub(crate) registry: Mutex<HashMap<(StreamKind, String), Arc<ConsumerGroup>>>,
    /// Group commits that reached the disk.
    pub(crate) syncs: AtomicU64,
    /// Requests to the retention thread.
    pub(crate) retention: SyncSender<RetentionWork>,
}

/// What [`Shared::open`] recovered besides the shared state.
pub(crate) struct Recovered {
    /// The shared state, consumers loaded.
    pub(crate) shared: Arc<Shared>,
    /// The msg-id index, expired entries dropped.
    pub(crate) dedup: DedupIndex,
}

impl Shared {
    /// Opens (creating) both databases under `dir` and recovers every mark, consumer and
    /// msg-id entry.
    pub(crate) fn open(
        dir: &Path,
        default_ack_wait: std::time::Duration,
        dedup: DedupIndex,
        now_ms: u64,
        retention: SyncSender<RetentionWork>,
    ) -> Result<Recovered, LogError> {
        std::fs::create_dir_all(dir).map_err(storage_error)?;
        // Messages live until every consumer acked them, seconds usually: compressing
        // them in the journal only costs the committer thread time on every append.
        let streams_db = Database::builder(dir.join("streams"))
            .journal_compression(CompressionType::None)
            .open()
            .map_err(storage_error)?;
        // Consumer state is small and write-mostly: one maintenance thread is plenty.
        let consumers_db = Database::builder(dir.join("consumers"))
            .worker_threads(1)
            .open()
            .map_err(storage_error)?;
        let keyspace = |db: &Database, name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(storage_error)
        };
        // Messages are large (whole batches) and short-lived: kept apart from the keys in
        // blob files, a flush or compaction moves only keys and pointers, and a message's
        // bytes are written once after the journal instead of once per LSM level.
        let message_keyspace = |db: &Database, name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().with_kv_separation(Some(
                    KvSeparationOptions::default().compression(CompressionType::None),
                ))
            })
            .map_err(storage_error)
        };
        let meta = keyspace(&streams_db, "meta")?;
        let msg_ids = keyspace(&streams_db, "msg_ids")?;
        let consumer_state = keyspace(&consumers_db, "consumers")?;
        let open_stream = |kind: StreamKind| -> Result<StreamStore, LogError> {
            let messages = message_keyspace(&streams_db, kind.name())?;
            let recorded = match meta.get(codec::last_seq_key(kind)).map_err(storage_error)? {
                Some(value) => codec::decode_u64(&value, "last_seq")?,
                None => 0,
            };
            let last_stored = match messages.last_key_value() {
                Some(guard) => codec::decode_seq_key(&guard.key().map_err(storage_error)?)?,
                None => 0,
            };
            let last_seq = recorded.max(last_stored);
            let first_stored = match messages.first_key_value() {
                Some(guard) => Some(codec::decode_seq_key(&guard.key().map_err(storage_error)?)?),
                None => None,
            };
            let truncated_through = first_stored.map_or(last_seq, |first| first.saturating_sub(1));
            Ok(StreamStore {
                kind,
                messages,
                last_seq: AtomicU64::new(last_seq),
                truncated_through: AtomicU64::new(truncated_through),
                truncation: Mutex::new(()),
            })
        };
        let streams = [
            open_stream(StreamKind::Docs)?,
            open_stream(StreamKind::Events)?,
            open_stream(StreamKind::Dlq)?,
        ];
        let shared = Arc::new(Shared {
            streams_db,
            consumers_db,
            streams,
            msg_ids,
            meta,
            consumer_state,
            registry: Mutex::new(HashMap::new()),
            syncs: AtomicU64::new(0),
            retention,
        });
        shared.recover_consumers(default_ack_wait)?;
        let dedup = shared.recover_msg_ids(dedup, now_ms)?;
        Ok(Recovered { shared, dedup })
    }

    /// Loads every persisted consumer; its pending deliveries become due at once, since
    /// the handles they were delivered to died with the previous process.
    fn recover_consumers(&self, default_ack_wait: std::time::Duration) -> Result<(), LogError> {
        type Parts = (Option<codec::ConsumerHeader>, BTreeMap<u64, u32>);
        let mut found: BTreeMap<(StreamKind, String), Parts> = BTreeMap::new();
        for entry in self.consumer_state.iter() {
            let (key, value) = entry.into_inner().map_err(storage_error)?;
            match codec::decode_consumer_key(&key)? {
                ConsumerKey::Header { stream, name } => {
                    found.entry((stream, name)).or_default().0 =
                        Some(codec::decode_consumer_header(&value)?);
                }
                ConsumerKey::Pending { stream, name, seq } => {
                    found
                        .entry((stream, name))
                        .or_default()
                        .1
                        .insert(seq, codec::decode_delivery_count(&value)?);
                }
            }
        }
        let now = Instant::now();
        let mut registry = lock(&self.registry);
        for ((stream, name), (header, pending)) in found {
            // Pending records without a header belong to a consumer whose deletion was
            // interrupted; they are unreachable and harmless.
            let Some(header) = header else { continue };
            let group = ConsumerGroup::recovered(
                stream,
                name.clone(),
                header,
                pending,
                default_ack_wait,
                now,
            );
            registry.insert((stream, name), group);
        }
        Ok(())
    }

    /// Loads the msg-id index, removing entries older than the dedup window.
    fn recover_msg_ids(&self, mut dedup: DedupIndex, now_ms: u64) -> Result<DedupIndex, LogError> {
        let mut entries = Vec::new();
        let mut expired = self.streams_db.batch();
        for entry in self.msg_ids.iter() {
            let (key, value) = entry.into_inner().map_err(storage_error)?;
            let (stream, msg_id) = codec::decode_msg_id_key(&key)?;
            let (seq, appended_at_ms) = codec::decode_msg_id_entry(&value)?;
            if dedup.is_live(appended_at_ms, now_ms) {
                entries.push((appended_at_ms, stream, msg_id, seq));
            } else {
                expired.remove(&self.msg_ids, key);
            }
        }
        expired.commit().map_err(storage_error)?;
        // The index prunes from the oldest end, so it must be filled oldest first.
        entries.sort_by_key(|(appended_at_ms, ..)| *appended_at_ms);
        for (appended_at_ms, stream, msg_id, seq) in entries {
            dedup.insert(stream, msg_id, seq, appended_at_ms);
        }
        Ok(dedup)
    }

    /// The stream's storage.
    pub(crate) fn stream(&self, stream: StreamKind) -> &StreamStore {
        &self.streams[codec::stream_index(stream)]
    }

    /// Every live consumer group of `stream`.
    pub(crate) fn groups_of(&self, stream: StreamKind) -> Vec<Arc<ConsumerGroup>> {
        lock(&self.registry)
            .iter()
            .filter(|((kind, _), _)| *kind == stream)
            .map(|(_, group)| Arc::clone(group))
            .collect()
    }

    /// Tells `stream`'s consumers that `appended` (sequence, subject) became durable.
    pub(crate) fn on_appended(&self, stream: StreamKind, appended: &[(u64, String)]) {
        for group in self.groups_of(stream) {
            group.on_appended(appended);
        }
    }

    /// The lowest ack floor among `stream`'s consumers; `None` without consumers.
    fn min_ack_floor(&self, stream: StreamKind) -> Option<u64> {
        lock(&self.registry)
            .iter()
            .filter(|((kind, _), _)| *kind == stream)
            .map(|(_, group)| group.ack_floor())
            .min()
    }

    /// Asks the retention thread for a truncation run (acks and deletions call this).
    pub(crate) fn request_truncation(&self) {
        // Full means a run is already queued; it will read the floors as they are then.
        let _ = self.retention.try_send(RetentionWork::Truncate);
    }

    /// Removes every message of `stream` at or below its consumers' minimum ack floor.
    /// A stream without consumers is left alone.
    pub(crate) fn truncate(&self, stream: StreamKind) -> Result<(), LogError> {
        let store = self.stream(stream);
        let _running = lock(&store.truncation);
        let Some(floor) = self.min_ack_floor(stream) else {
            return Ok(());
        };
        let mut through = store.truncated_through.load(Ordering::Acquire);
        while through < floor {
            let mut keys = Vec::with_capacity(REMOVAL_BATCH.min(64));
            for entry in store
                .messages
                .range(codec::seq_key(through + 1)..=codec::seq_key(floor))
                .take(REMOVAL_BATCH)
            {
                keys.push(entry.key().map_err(storage_error)?);
            }
            let reached = match keys.last() {
                Some(last) if keys.len() == REMOVAL_BATCH => codec::decode_seq_key(last)?,
                _ => floor,
            };
            let mut batch = self.streams_db.batch();
            for key in keys {
                batch.remove(&store.messages, key);
            }
            batch.commit().map_err(storage_error)?;
            through = reached;
            store.truncated_through.store(through, Ordering::Release);
        }
        Ok(())
    }

    /// Up to `max` stored messages of `stream` matching `filter`, from `from` on.
    pub(crate) fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        for entry in self.stream(stream).messages.range(codec::seq_key(from)..) {
            let (key, value) = entry.into_inner().map_err(storage_error)?;
            let record = codec::decode_message(&value)?;
            if !subjects::matches(filter, record.subject) {
                continue;
            }
            out.push(StoredMessage {
                seq: Seq(codec::decode_seq_key(&key)?),
                subject: record.subject.to_owned(),
                payload: Bytes::copy_from_slice(record.payload),
                appended_at_ms: record.appended_at_ms,
            });
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes the stored messages of `stream` matching `filter`; returns how many.
    pub(crate) fn purge(&self, stream: StreamKind, filter: &str) -> Result<u64, LogError> {
        let store = self.stream(stream);
        let mut removed = 0u64;
        let mut batch = self.streams_db.batch();
        for entry in store.messages.iter() {
            let (key, value) = entry.into_inner().map_err(storage_error)?;
            if !subjects::matches(filter, codec::decode_message(&value)?.subject) {
                continue;
            }
            batch.remove(&store.messages, key);
            removed += 1;
            if batch.len() >= REMOVAL_BATCH {
                std::mem::replace(&mut batch, self.streams_db.batch())
                    .commit()
                    .map_err(storage_error)?;
            }
        }
        batch.commit().map_err(storage_error)?;
        Ok(removed)
    }

    /// Deletes one stored message; `false` when it was not there.
    pub(crate) fn delete_message(&self, stream: StreamKind, seq: u64) -> Result<bool, LogError> {
        let store = self.stream(stream);
        let key = codec::seq_key(seq);
        if !store.messages.contains_key(key).map_err(storage_error)? {
            return Ok(false);
        }
        store.messages.remove(key).map_err(storage_error)?;
        Ok(true)
    }
}

impl StreamStore {
    /// The sequence just before the first retained message: where a new consumer starts.
    pub(crate) fn start_cursor(&self) -> Result<u64, LogError> {
        match self.messages.first_key_value() {
            Some(guard) => {
                Ok(codec::decode_seq_key(&guard.key().map_err(storage_error)?)?.saturating_sub(1))
            }
            None => Ok(self.last_seq.load(Ordering::Acquire)),
        }
    }

    /// Which stream this is.
    pub(crate) fn kind(&self) -> StreamKind {
        self.kind
    }
}
