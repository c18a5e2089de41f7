//! Operating the dead-letter queue: list, replay, purge, and the depth gauge.
//!
//! Entries are the DLQ stream's messages (one [`DeadLetter`] each); an entry's id is its
//! sequence in the DLQ stream, stable until it is removed.
//!
//! Replay re-appends each op to DOCS as a [`DocOp::Replayed`] carrying the sequence the
//! op was first given, so the workers apply it exactly where last-writer-wins placed it:
//! an op that a newer write of the same id has since superseded stays superseded (the
//! workers count it stale). Only once the append is durable is the entry deleted. Every
//! step is idempotent: the append's message id derives from the entries it carries, and
//! even a second append after the log's dedup window applies nothing twice, because a
//! write at an already stored sequence is recognized as already applied.
//!
//! Memory stays bounded: selections are walked a page at a time.
//!
//! Depth: [`DeadLetterQueue::refresh_depth`] counts the entries appended since it last
//! looked (the first call counts the whole stream); list, replay and purge keep the
//! counts current for what this node removes. Admin operations and refreshes are
//! serialized by one lock, so a removal is never counted against an entry the counts do
//! not include yet. Removals made by another node are only seen after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use metrics::{counter, gauge};
use sluice_core::document::ContentHash;
use sluice_core::ids::{CollectionName, Generation, Partition, Seq};
use sluice_core::log::{Log, LogError, OutgoingMessage, StoredMessage};
use sluice_core::metrics::{DLQ_DEPTH, DLQ_PURGED_TOTAL, DLQ_REPLAYED_TOTAL};
use sluice_core::op::{DocBatch, DocOp};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::ErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use sluice_core::dlq::{
    DeadLetter, DeadLetterAdmin, DeadLetterCode, DlqEntry, DlqPage, DlqSelection, ReplayFailure,
    ReplayLimits, ReplayReport, DELETE_OP, MAX_LIST_LIMIT, UNROUTABLE_COLLECTION,
};

/// Entries read from the log at once while walking a selection. An entry carries its
/// document (at most one log message, ~1 MiB), so this bounds a replay's memory.
const PAGE: usize = 100;
#[derive(Default)]
struct Depth {
    /// Every entry at or below this sequence is in `by_collection` (or was removed).
    counted_through: Seq,
    by_collection: BTreeMap<CollectionName, u64>,
}

impl Depth {
    fn publish(&self) {
        for (collection, depth) in &self.by_collection {
            gauge!(DLQ_DEPTH, "collection" => collection.to_string()).set(*depth as f64);
        }
    }

    /// Counts an entry removed by this node (if it was counted at all).
    fn removed(&mut self, entry: &DlqEntry) {
        if entry.entry_id <= self.counted_through {
            if let Some(depth) = self.by_collection.get_mut(&entry.record.collection) {
                *depth = depth.saturating_sub(1);
            }
        }
    }
}

/// The dead-letter queue's operations over a [`Log`].
pub struct DeadLetterQueue {
    log: Arc<dyn Log>,
    depth: tokio::sync::Mutex<Depth>,
}

impl DeadLetterQueue {
    /// Operates the DLQ stream of `log`.
    pub fn new(log: Arc<dyn Log>) -> Arc<Self> {
        Arc::new(Self {
            log,
            depth: tokio::sync::Mutex::new(Depth::default()),
        })
    }

    /// Entries after `after` (0: from the start), of `collection` or all, at most `limit`.
    pub async fn list(
        &self,
        collection: Option<&CollectionName>,
        after: Seq,
        limit: usize,
    ) -> Result<DlqPage, LogError> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let filter =
            collection.map_or_else(|| StreamKind::Dlq.all_subjects().to_owned(), subjects::dlq);
        let mut messages = self
            .log
            .read(
                StreamKind::Dlq,
                &filter,
                Seq(after.0.saturating_add(1)),
                limit + 1,
            )
            .await?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        let entries: Vec<DlqEntry> = messages.iter().map(entry_of).collect();
        let next_after = more.then(|| entries.last().map(|e| e.entry_id)).flatten();
        Ok(DlqPage {
            entries,
            next_after,
        })
    }

    /// Replays the selected entries (see the module docs). `shards_of` names the shard
    /// count of a collection that exists; an entry of a collection that does not is not
    /// replayed.
    pub async fn replay(
        &self,
        selection: &DlqSelection,
        shards_of: &(dyn for<'c> Fn(&'c CollectionName) -> Option<(u32, Generation)> + Send + Sync),
        limits: ReplayLimits,
    ) -> Result<ReplayReport, LogError> {
        let mut depth = self.depth.lock().await;
        self.catch_up(&mut depth).await?;
        let mut report = ReplayReport::default();
        let mut pages = Pages::new(selection);
        while let Some(page) = pages.next(self.log.as_ref(), &mut report.not_found).await? {
            type Group = (CollectionName, Partition, Generation);
            let mut groups: BTreeMap<Group, Vec<(&DlqEntry, DocOp)>> = BTreeMap::new();
            for entry in &page {
                match replayable_op(entry, shards_of) {
                    Ok((partition, generation, op)) => groups
                        .entry((entry.record.collection.clone(), partition, generation))
                        .or_default()
                        .push((entry, op)),
                    Err((code, message)) => {
                        report.failed += 1;
                        if report.failures.len() < MAX_LIST_LIMIT {
                            report.failures.push(ReplayFailure {
                                entry_id: entry.entry_id.0,
                                code,
                                message,
                            });
                        }
                    }
                }
            }
            let mut messages = Vec::new();
            let mut replayed: Vec<&DlqEntry> = Vec::new();
            for ((collection, partition, generation), ops) in groups {
                for chunk in chunks(ops, limits) {
                    let ids: Vec<u8> = chunk
                        .iter()
                        .flat_map(|(entry, _)| entry.entry_id.0.to_le_bytes())
                        .collect();
                    replayed.extend(chunk.iter().map(|(entry, _)| *entry));
                    let batch = DocBatch {
                        collection: collection.clone(),
                        partition,
                        ops: chunk.into_iter().map(|(_, op)| op).collect(),
                        generation,
                    };
                    messages.push(OutgoingMessage {
                        subject: subjects::docs(&collection, partition),
                        msg_id: format!("dlq-replay-{:032x}", xxhash_rust::xxh3::xxh3_128(&ids)),
                        payload: batch.encode(),
                    });
                }
            }
            if !messages.is_empty() {
                self.log.append(StreamKind::Docs, messages).await?;
            }
            // Durable in DOCS: the entries may go. One failing here is replayed again by
            // a retry, which is harmless (see the module docs).
            for entry in replayed {
                self.log
                    .delete_message(StreamKind::Dlq, entry.entry_id)
                    .await?;
                depth.removed(entry);
                report.replayed += 1;
                counter!(DLQ_REPLAYED_TOTAL, "collection" => entry.record.collection.to_string())
                    .increment(1);
            }
            depth.publish();
        }
        Ok(report)
    }

    /// Removes the selected entries; returns how many.
    pub async fn purge(&self, selection: &DlqSelection) -> Result<u64, LogError> {
        let mut depth = self.depth.lock().await;
        self.catch_up(&mut depth).await?;
        let purged = match selection {
            DlqSelection::All => {
                let purged = self
                    .log
                    .purge(StreamKind::Dlq, StreamKind::Dlq.all_subjects())
                    .await?;
                for (collection, depth) in &mut depth.by_collection {
                    counter!(DLQ_PURGED_TOTAL, "collection" => collection.to_string())
                        .increment(*depth);
                    *depth = 0;
                }
                purged
            }
            DlqSelection::Collection(collection) => {
                let purged = self
                    .log
                    .purge(StreamKind::Dlq, &subjects::dlq(collection))
                    .await?;
                if let Some(depth) = depth.by_collection.get_mut(collection) {
                    *depth = 0;
                }
                counter!(DLQ_PURGED_TOTAL, "collection" => collection.to_string())
                    .increment(purged);
                purged
            }
            DlqSelection::Entries(_) => {
                let mut purged = 0;
                let mut not_found = 0;
                let mut pages = Pages::new(selection);
                while let Some(page) = pages.next(self.log.as_ref(), &mut not_found).await? {
                    for entry in &page {
                        if self
                            .log
                            .delete_message(StreamKind::Dlq, entry.entry_id)
                            .await?
                        {
                            purged += 1;
                            depth.removed(entry);
                            counter!(DLQ_PURGED_TOTAL, "collection" => entry.record.collection.to_string())
                                .increment(1);
                        }
                    }
                }
                purged
            }
        };
        depth.publish();
        Ok(purged)
    }

    /// Counts the entries appended since the last refresh and publishes the depth gauge.
    pub async fn refresh_depth(&self) -> Result<(), LogError> {
        let mut depth = self.depth.lock().await;
        self.catch_up(&mut depth).await?;
        depth.publish();
        Ok(())
    }

    /// The depth per collection, as last counted.
    pub async fn depth(&self) -> BTreeMap<CollectionName, u64> {
        self.depth.lock().await.by_collection.clone()
    }

    /// Refreshes the depth now and then every `interval` until `shutdown`.
    pub async fn keep_depth_current(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            if let Err(error) = self.refresh_depth().await {
                warn!(%error, "cannot count the DLQ entries; the depth gauge is stale");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn catch_up(&self, depth: &mut Depth) -> Result<(), LogError> {
        let head = self.log.last_seq(StreamKind::Dlq).await?;
        while depth.counted_through < head {
            let messages = self
                .log
                .read(
                    StreamKind::Dlq,
                    StreamKind::Dlq.all_subjects(),
                    Seq(depth.counted_through.0 + 1),
                    PAGE,
                )
                .await?;
            let Some(last) = messages.last() else {
                break;
            };
            depth.counted_through = last.seq;
            for message in &messages {
                let collection = collection_of_subject(&message.subject);
                *depth.by_collection.entry(collection).or_default() += 1;
            }
        }
        // Entries between the last one read and the head were removed meanwhile.
        depth.counted_through = depth.counted_through.max(head);
        Ok(())
    }
}

#[async_trait]
impl DeadLetterAdmin for DeadLetterQueue {
    async fn list(
        &self,
        collection: Option<&CollectionName>,
        after: Seq,
        limit: usize,
    ) -> Result<DlqPage, LogError> {
        DeadLetterQueue::list(self, collection, after, limit).await
    }

    async fn depth(&self) -> Result<BTreeMap<CollectionName, u64>, LogError> {
        self.refresh_depth().await?;
        Ok(DeadLetterQueue::depth(self).await)
    }

    async fn replay(
        &self,
        selection: &DlqSelection,
        shards_of: &(dyn for<'c> Fn(&'c CollectionName) -> Option<(u32, Generation)> + Send + Sync),
        limits: ReplayLimits,
    ) -> Result<ReplayReport, LogError> {
        DeadLetterQueue::replay(self, selection, shards_of, limits).await
    }

    async fn purge(&self, selection: &DlqSelection) -> Result<u64, LogError> {
        DeadLetterQueue::purge(self, selection).await
    }
}

/// Walks a selection a page at a time. For [`DlqSelection::Entries`], ids not found are
/// counted, not returned.
struct Pages<'a> {
    selection: &'a DlqSelection,
    /// Next entry id to look at (`All`, `Collection`) or next index into the ids.
    cursor: u64,
}

impl<'a> Pages<'a> {
    fn new(selection: &'a DlqSelection) -> Self {
        Self {
            selection,
            cursor: 1,
        }
    }

    async fn next(
        &mut self,
        log: &dyn Log,
        not_found: &mut u64,
    ) -> Result<Option<Vec<DlqEntry>>, LogError> {
        let filter = match self.selection {
            DlqSelection::All => StreamKind::Dlq.all_subjects().to_owned(),
            DlqSelection::Collection(collection) => subjects::dlq(collection),
            DlqSelection::Entries(ids) => {
                let start = usize::try_from(self.cursor - 1).unwrap_or(usize::MAX);
                let Some(ids) = ids.get(start..).filter(|ids| !ids.is_empty()) else {
                    return Ok(None);
                };
                let ids = &ids[..ids.len().min(PAGE)];
                self.cursor += ids.len() as u64;
                let mut page = Vec::with_capacity(ids.len());
                for &id in ids {
                    let found = log
                        .read(StreamKind::Dlq, StreamKind::Dlq.all_subjects(), id, 1)
                        .await?;
                    match found.first() {
                        Some(message) if message.seq == id && id.0 > 0 => {
                            page.push(entry_of(message));
                        }
                        _ => *not_found += 1,
                    }
                }
                return Ok(Some(page));
            }
        };
        let messages = log
            .read(StreamKind::Dlq, &filter, Seq(self.cursor), PAGE)
            .await?;
        let Some(last) = messages.last() else {
            return Ok(None);
        };
        self.cursor = last.seq.0 + 1;
        Ok(Some(messages.iter().map(entry_of).collect()))
    }
}

fn entry_of(message: &StoredMessage) -> DlqEntry {
    let record = DeadLetter::decode(&message.payload).unwrap_or_else(|error| {
        // Not written by sluice's workers; listed (and purgeable) rather than hidden.
        let collection = collection_of_subject(&message.subject);
        DeadLetter {
            collection,
            id: None,
            op: serde_json::Value::Null,
            seq: Seq(0),
            docs_seq: Seq(0),
            code: DeadLetterCode::MalformedMessage,
            message: format!("undecodable DLQ entry: {error}"),
            attempts: 0,
            first_failure_ms: message.appended_at_ms,
            last_failure_ms: message.appended_at_ms,
            raw_message_hex: None,
        }
    });
    DlqEntry {
        entry_id: message.seq,
        appended_at_ms: message.appended_at_ms,
        record,
    }
}

/// The op to replay, its partition and generation, or why the entry cannot be replayed.
fn replayable_op(
    entry: &DlqEntry,
    shards_of: &dyn Fn(&CollectionName) -> Option<(u32, Generation)>,
) -> Result<(Partition, Generation, DocOp), (ErrorCode, String)> {
    let record = &entry.record;
    let not_replayable = |message: &str| (ErrorCode::NotReplayable, message.to_owned());
    let Some(id) = record.id.clone() else {
        return Err(not_replayable(
            "the entry is an undecodable message, not an op; purge it",
        ));
    };
    let Some((shards, generation)) = shards_of(&record.collection) else {
        return Err(not_replayable(
            "its collection does not exist (any more); recreate it or purge the entry",
        ));
    };
    let op = match &record.op {
        serde_json::Value::Object(_) => {
            // The record holds the canonical JSON parsed; serializing it again gives the
            // same bytes (keys sorted, compact), hence the same content hash.
            let source =
                serde_json::to_vec(&record.op).map_err(|e| not_replayable(&e.to_string()))?;
            DocOp::Upsert {
                id: id.clone(),
                hash: ContentHash::of(&source),
                source: Bytes::from(source),
            }
        }
        serde_json::Value::String(s) if s == DELETE_OP => DocOp::Delete { id: id.clone() },
        _ => return Err(not_replayable("the entry carries no replayable op")),
    };
    Ok((
        id.partition(shards),
        generation,
        DocOp::replayed(op, record.seq),
    ))
}

/// Splits ops into DOCS messages within `limits`.
fn chunks<T>(ops: Vec<(T, DocOp)>, limits: ReplayLimits) -> Vec<Vec<(T, DocOp)>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (item, op) in ops {
        let op_bytes = match op.sequenced(Seq(0)).0 {
            DocOp::Upsert { source, .. } => source.len(),
            _ => 0,
        } + 64;
        if !current.is_empty()
            && (current.len() >= limits.max_docs.max(1) || bytes + op_bytes > limits.max_bytes)
        {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += op_bytes;
        current.push((item, op));
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The collection of `sluice.dlq.{c}` (a placeholder name when the subject names none).
fn collection_of_subject(subject: &str) -> CollectionName {
    subjects::collection_of(subject)
        .filter(|_| subject.starts_with("sluice.dlq."))
        .unwrap_or_else(|| {
            CollectionName::new(UNROUTABLE_COLLECTION).expect("the fallback name is valid")
        })
}
