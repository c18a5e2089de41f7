//! Group commit: one thread makes every append durable, many at a time.
//!
//! Appenders send an [`AppendRequest`] into a bounded channel (its capacity is
//! `log.max_pending_appends`; when it is full, appenders wait, which is the log's
//! backpressure) and await a oneshot answer. The committer thread takes the first
//! request, then everything else already queued, and for the whole group: assigns
//! sequences, resolves msg-id duplicates, writes one atomic batch (messages, msg-id
//! entries, high-water marks, expired msg-id removals) and fsyncs it once
//! (`PersistMode::SyncData`) before answering them all. While one fsync runs, the next
//! group queues up, so the number of syncs grows with time, not with appenders.
//!
//! Invariants:
//! - The batch is fsynced before it is applied to the memtables, so nothing a reader or
//!   consumer can see was ever lost by a crash; sequences handed out are never reused.
//! - Sequences and the msg-id index only change in memory once the batch is durable; a
//!   failed commit answers its group with the error and assigns nothing.
//! - The committer is the only writer of new messages, so per stream the sequences it
//!   assigns are contiguous and appear in storage in order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::PersistMode;
use sluice_core::crash_point::{self, CrashPoint};
use sluice_core::log::{LogError, OutgoingMessage};
use sluice_core::metrics::{LOG_APPENDED_MESSAGES_TOTAL, LOG_SYNCS_TOTAL};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::sync::{mpsc, oneshot};

use super::codec;
use super::storage::{storage_error, Shared};

/// How long a msg-id is remembered (JetStream's default duplicate window).
pub(crate) const MSG_ID_WINDOW: Duration = Duration::from_secs(120);

/// One appender's messages and where to send their sequences.
pub(crate) struct AppendRequest {
    /// The target stream.
    pub(crate) stream: StreamKind,
    /// The messages, in order.
    pub(crate) messages: Vec<OutgoingMessage>,
    /// Receives the sequences once durable, or the failure.
    pub(crate) reply: oneshot::Sender<Result<Vec<Seq>, LogError>>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

#[derive(Clone, Copy)]
struct DedupEntry {
    seq: u64,
    appended_at_ms: u64,
}

/// The msg-ids appended within the window, per stream, with their sequences.
///
/// Entries are pruned oldest first, so they must be inserted in non-decreasing time
/// order (the committer's clock never goes backwards).
pub(crate) struct DedupIndex {
    window_ms: u64,
    by_id: [HashMap<String, DedupEntry>; 3],
    by_age: VecDeque<(u64, StreamKind, String)>,
}

impl DedupIndex {
    /// An empty index remembering ids for `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            by_id: Default::default(),
            by_age: VecDeque::new(),
        }
    }

    /// Whether an id appended at `appended_at_ms` is still remembered at `now_ms`.
    pub(crate) fn is_live(&self, appended_at_ms: u64, now_ms: u64) -> bool {
        appended_at_ms.saturating_add(self.window_ms) > now_ms
    }

    /// Remembers that `msg_id` got `seq` at `appended_at_ms`.
    pub(crate) fn insert(
        &mut self,
        stream: StreamKind,
        msg_id: String,
        seq: u64,
        appended_at_ms: u64,
    ) {
        self.by_age
            .push_back((appended_at_ms, stream, msg_id.clone()));
        self.by_id[codec::stream_index(stream)].insert(
            msg_id,
            DedupEntry {
                seq,
                appended_at_ms,
            },
        );
    }

    /// The sequence `msg_id` got, if it was appended within the window.
    pub(crate) fn get(&self, stream: StreamKind, msg_id: &str, now_ms: u64) -> Option<u64> {
        self.by_id[codec::stream_index(stream)]
            .get(msg_id)
            .filter(|entry| self.is_live(entry.appended_at_ms, now_ms))
            .map(|entry| entry.seq)
    }

    /// Forgets every id older than the window; returns them so their persisted entries
    /// can be removed.
    pub(crate) fn prune(&mut self, now_ms: u64) -> Vec<(StreamKind, String)> {
        let mut expired = Vec::new();
        while let Some((appended_at_ms, ..)) = self.by_age.front() {
            if self.is_live(*appended_at_ms, now_ms) {
                break;
            }
            let Some((appended_at_ms, stream, msg_id)) = self.by_age.pop_front() else {
                break;
            };
            let ids = &mut self.by_id[codec::stream_index(stream)];
            // Only drop the map entry this queue entry stands for, not a newer one.
            if ids
                .get(&msg_id)
                .is_some_and(|entry| entry.appended_at_ms == appended_at_ms)
            {
                ids.remove(&msg_id);
                expired.push((stream, msg_id));
            }
        }
        expired
    }

    /// How many ids are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.iter().map(HashMap::len).sum()
    }
}

/// The committer thread's state.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<AppendRequest>,
    next_seq: [u64; 3],
    dedup: DedupIndex,
    clock_ms: u64,
}

impl Committer {
    /// A committer continuing every stream from its recovered high-water mark.
    pub(crate) fn new(
        shared: Arc<Shared>,
        requests: mpsc::Receiver<AppendRequest>,
        dedup: DedupIndex,
    ) -> Self {
        let next_seq = shared
            .streams
            .each_ref()
            .map(|store| store.last_seq.load(Ordering::Acquire));
        Self {
            shared,
            requests,
            next_seq,
            dedup,
            clock_ms: 0,
        }
    }

    /// Commits groups until every sender is gone, then returns.
    pub(crate) fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut group = vec![first];
            while let Ok(request) = self.requests.try_recv() {
                group.push(request);
            }
            self.commit(group);
        }
    }

    /// The wall clock, never going backwards, so append times and dedup ages stay ordered.
    fn tick(&mut self) -> u64 {
        self.clock_ms = self.clock_ms.max(wall_clock_ms());
        self.clock_ms
    }

    fn commit(&mut self, group: Vec<AppendRequest>) {
        let now_ms = self.tick();
        let shared = Arc::clone(&self.shared);
        let mut batch = shared
            .streams_db
            .batch()
            .durability(Some(PersistMode::SyncData));
        // Expired ids are forgotten in memory right away; if this commit fails their
        // persisted entries stay, which is harmless: they are expired on reload too.
        for (stream, msg_id) in self.dedup.prune(now_ms) {
            batch.remove(&shared.msg_ids, codec::msg_id_key(stream, &msg_id));
        }

        let mut next_seq = self.next_seq;
        let mut fresh_ids: [HashMap<&str, u64>; 3] = Default::default();
        let mut appended: [Vec<(u64, String)>; 3] = Default::default();
        let mut answers = Vec::with_capacity(group.len());
        for request in &group {
            let index = codec::stream_index(request.stream);
            let store = &shared.streams[index];
            let mut seqs = Vec::with_capacity(request.messages.len());
            for message in &request.messages {
                let id = message.msg_id.as_str();
                if !id.is_empty() {
                    let original = fresh_ids[index]
                        .get(id)
                        .copied()
                        .or_else(|| self.dedup.get(request.stream, id, now_ms));
                    if let Some(seq) = original {
                        seqs.push(Seq(seq));
                        continue;
                    }
                }
                next_seq[index] += 1;
                let seq = next_seq[index];
                batch.insert(
                    &store.messages,
                    codec::seq_key(seq),
                    codec::encode_message(now_ms, &message.subject, &message.payload),
                );
                if !id.is_empty() {
                    batch.insert(
                        &shared.msg_ids,
                        codec::msg_id_key(request.stream, id),
                        codec::encode_msg_id_entry(seq, now_ms).to_vec(),
                    );
                    fresh_ids[index].insert(id, seq);
                }
                appended[index].push((seq, message.subject.clone()));
                seqs.push(Seq(seq));
            }
            answers.push(seqs);
        }
        for (store, (next, previous)) in shared
            .streams
            .iter()
            .zip(next_seq.iter().zip(self.next_seq.iter()))
        {
            if next != previous {
                batch.insert(
                    &shared.meta,
                    codec::last_seq_key(store.kind()),
                    next.to_be_bytes().to_vec(),
                );
            }
        }

        let wrote = !batch.is_empty();
        if let Err(error) = batch.commit() {
            let error = storage_error(error);
            for request in group {
                let _ = request
                    .reply
                    .send(Err(LogError::Storage(error.to_string())));
            }
            return;
        }
        if wrote {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(LOG_SYNCS_TOTAL).increment(1);
            // Crash tests: the group is durable, no appender knows it yet.
            crash_point::reached(CrashPoint::LogAppend);
        }
        for (stream, ids) in StreamKind::ALL.into_iter().zip(fresh_ids) {
            for (id, seq) in ids {
                self.dedup.insert(stream, id.to_owned(), seq, now_ms);
            }
        }
        self.next_seq = next_seq;
        for (store, new) in shared.streams.iter().zip(&appended) {
            if let Some((last, _)) = new.last() {
                store.last_seq.store(*last, Ordering::Release);
                metrics::counter!(LOG_APPENDED_MESSAGES_TOTAL, "stream" => store.kind().name())
                    .increment(new.len() as u64);
            }
        }
        for (request, seqs) in group.into_iter().zip(answers) {
            // An appender that gave up waiting no longer needs its answer.
            let _ = request.reply.send(Ok(seqs));
        }
        for (stream, new) in StreamKind::ALL.into_iter().zip(&appended) {
            if !new.is_empty() {
                shared.on_appended(stream, new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_remembers_within_the_window_and_prunes_by_age() {
        let mut index = DedupIndex::new(Duration::from_millis(100));
        index.insert(StreamKind::Docs, "a".to_owned(), 1, 1_000);
        index.insert(StreamKind::Docs, "b".to_owned(), 2, 1_050);
        index.insert(StreamKind::Events, "a".to_owned(), 7, 1_050);
        assert_eq!(index.get(StreamKind::Docs, "a", 1_099), Some(1));
        assert_eq!(index.get(StreamKind::Events, "a", 1_099), Some(7));
        assert_eq!(index.get(StreamKind::Dlq, "a", 1_099), None);
        assert_eq!(index.get(StreamKind::Docs, "a", 1_100), None, "expired");

        let expired = index.prune(1_100);
        assert_eq!(expired, vec![(StreamKind::Docs, "a".to_owned())]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(StreamKind::Docs, "b", 1_100), Some(2));
        assert_eq!(index.prune(1_150).len(), 2);
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn pruning_an_old_entry_keeps_a_newer_one_for_the_same_id() {
        let mut index = DedupIndex::new(Duration::from_millis(100));
        index.insert(StreamKind::Docs, "a".to_owned(), 1, 1_000);
        // Expired, then appended again later under the same id.
        index.insert(StreamKind::Docs, "a".to_owned(), 9, 1_200);
        assert!(index.prune(1_250).is_empty());
        assert_eq!(index.get(StreamKind::Docs, "a", 1_250), Some(9));
    }
}
