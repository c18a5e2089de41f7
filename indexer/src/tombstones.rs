//! Tombstone compaction in the index shards: when a shard may forget a delete.
//!
//! A delete leaves a small tombstone document in its shard (`_id`, `_seq`, `_tombstone`)
//! so that an older upsert of the id still on its way is refused rather than indexed.
//! Without compaction a collection with heavy delete traffic would keep one per deleted
//! id for ever. The store compacts its own tombstones (`sluice_workers::tombstones`);
//! this module gives each shard's consume loop the same rule, judged from the shard.
//!
//! # Why a tombstone may go
//! A tombstone of sequence `S` may go once no event older than `S` for its id can still
//! reach the shard. Such events come from three places:
//! 1. EVENTS messages the shard has not acked yet (redeliveries);
//! 2. an older op's event appended *after* the delete's: two workers applying the two
//!    ops at once may publish them in either order. A worker appends an op's event
//!    before it acks the op's DOCS message, so once the workers' DOCS ack floor has
//!    passed a message, every event of its ops is in EVENTS;
//! 3. EVENTS handed out again from an earlier position (a consumer created anew), which
//!    the log can do for at most `log.events_max_age`, and a dead-letter replay (see
//!    the exception below).
//!
//! So every `store.tombstone_compaction_interval` the loop takes a checkpoint: at time
//! `T0` it reads the workers' DOCS ack floor `F`, *then* the last EVENTS sequence `E`
//! (in that order: every event of an op in a message up to `F` is then at or below `E`).
//! A checkpoint is ripe once `T0` is more than `store.tombstone_retention` ago (at least
//! `log.events_max_age`, which the configuration enforces: nothing from before `T0` can
//! be handed out again) and the shard's own EVENTS ack floor has reached `E` (every
//! such event was applied). Then every tombstone with a sequence below the first op of
//! message `F + 1` goes: one `delete_query` of `_tombstone = 1 AND _seq < bound`
//! ([`crate::shard::ShardIndex::compact_tombstones`]), committed with the shard's next
//! commit; merges reclaim the space.
//!
//! A live re-upsert of the id carries no `_tombstone`, and a tombstone added after the
//! compaction in the same uncommitted batch has a later opstamp, so neither is touched.
//!
//! # The exception: replaying an old dead letter
//! As in the store: a dead-letter replay appends an op again with the sequence it was
//! first given. An upsert dead-lettered before a delete of its id and replayed after
//! both tombstones were compacted is indexed again. Replaying dead letters older than
//! `store.tombstone_retention` needs care (see the README's "Deletes and tombstones").
//!
//! # Cost
//! Checkpoints live in memory, at most [`MAX_CHECKPOINTS`] per shard (a restart only
//! delays compaction by one retention). A turn that is not due costs one clock read; a
//! due one two or three log reads. A shard with no tombstone at its last commit takes
//! checkpoints but never compacts, so it does not commit for nothing.

use std::collections::VecDeque;
use std::time::Instant;

use sluice_core::config::TombstoneSchedule;
use sluice_core::log::{Log, LogError};
use sluice_core::subjects::{StreamKind, WORKERS_CONSUMER};
use sluice_core::Seq;

/// Most checkpoints a shard keeps: with the default retention of 7 days and interval of
/// an hour, 168 are ever needed; a tighter configuration coalesces instead of growing.
pub(crate) const MAX_CHECKPOINTS: usize = 1024;

/// A moment at which the log was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checkpoint {
    taken: Instant,
    /// Tombstones below this sequence may go when the checkpoint is ripe.
    seq_below: Seq,
    /// The last EVENTS sequence, read after the workers' floor.
    events_last: Seq,
}

/// The compaction state of one shard's loop.
pub(crate) struct TombstoneCompaction {
    schedule: TombstoneSchedule,
    next_turn: Instant,
    checkpoints: VecDeque<Checkpoint>,
}

impl TombstoneCompaction {
    /// No checkpoint yet; the first is taken one interval after `now`.
    pub fn new(schedule: TombstoneSchedule, now: Instant) -> Self {
        Self {
            schedule,
            next_turn: now + schedule.interval,
            checkpoints: VecDeque::new(),
        }
    }

    /// On a due turn: takes a checkpoint, then returns the bound below which the shard's
    /// tombstones may go when a checkpoint has ripened; `None` otherwise (or when the log
    /// cannot be read: the next turn tries again).
    pub async fn turn(&mut self, log: &dyn Log, shard_consumer: &str, now: Instant) -> Option<Seq> {
        if now < self.next_turn {
            return None;
        }
        self.next_turn = now + self.schedule.interval;
        match read_checkpoint(log, now).await {
            Ok(Some(checkpoint)) => self.push(checkpoint),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, "reading a tombstone checkpoint failed");
                return None;
            }
        }
        if !self
            .checkpoints
            .front()
            .is_some_and(|oldest| self.is_old_enough(oldest, now))
        {
            return None;
        }
        let own_floor = match log.ack_floor(StreamKind::Events, shard_consumer).await {
            Ok(floor) => floor.unwrap_or_default(),
            Err(error) => {
                tracing::debug!(%error, "reading the shard's ack floor failed");
                return None;
            }
        };
        self.take_ripe(own_floor, now)
    }

    fn is_old_enough(&self, checkpoint: &Checkpoint, now: Instant) -> bool {
        now.saturating_duration_since(checkpoint.taken) >= self.schedule.retention
    }

    fn push(&mut self, checkpoint: Checkpoint) {
        if self.checkpoints.len() >= MAX_CHECKPOINTS {
            // Coalesce into the newest: its bound and floor are the highest, so keeping
            // only the later reading delays compaction and never hastens it.
            self.checkpoints.pop_back();
        }
        self.checkpoints.push_back(checkpoint);
    }

    /// Pops the ripe checkpoints the shard has caught up with; the highest bound of them.
    fn take_ripe(&mut self, own_events_floor: Seq, now: Instant) -> Option<Seq> {
        let mut bound = None;
        while let Some(oldest) = self.checkpoints.front().copied() {
            if !self.is_old_enough(&oldest, now) || own_events_floor < oldest.events_last {
                break;
            }
            bound = Some(oldest.seq_below);
            self.checkpoints.pop_front();
        }
        bound
    }
}

/// The workers' DOCS floor, then the last EVENTS sequence; `None` while the workers'
/// consumer does not exist (nothing was applied through it yet).
async fn read_checkpoint(log: &dyn Log, now: Instant) -> Result<Option<Checkpoint>, LogError> {
    let Some(docs_floor) = log.ack_floor(StreamKind::Docs, WORKERS_CONSUMER).await? else {
        return Ok(None);
    };
    let events_last = log.last_seq(StreamKind::Events).await?;
    Ok(Some(Checkpoint {
        taken: now,
        seq_below: docs_floor.ops_below_next_message(),
        events_last,
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SCHEDULE: TombstoneSchedule = TombstoneSchedule {
        retention: Duration::from_secs(10),
        interval: Duration::from_secs(1),
    };

    fn checkpoint(taken: Instant, seq_below: u64, events_last: u64) -> Checkpoint {
        Checkpoint {
            taken,
            seq_below: Seq(seq_below),
            events_last: Seq(events_last),
        }
    }

    #[test]
    fn a_checkpoint_ripens_after_the_retention_and_once_the_shard_caught_up() {
        let start = Instant::now();
        let mut compaction = TombstoneCompaction::new(SCHEDULE, start);
        compaction.push(checkpoint(start, 100, 7));
        compaction.push(checkpoint(start + Duration::from_secs(1), 200, 9));
        let later = start + Duration::from_secs(9);
        assert_eq!(compaction.take_ripe(Seq(50), later), None, "too young");
        let ripe = start + Duration::from_secs(10);
        assert_eq!(
            compaction.take_ripe(Seq(6), ripe),
            None,
            "the shard has not applied every event read at the checkpoint"
        );
        assert_eq!(compaction.take_ripe(Seq(7), ripe), Some(Seq(100)));
        assert_eq!(compaction.checkpoints.len(), 1);
        let both = start + Duration::from_secs(11);
        assert_eq!(compaction.take_ripe(Seq(9), both), Some(Seq(200)));
        assert!(compaction.checkpoints.is_empty());
    }

    #[test]
    fn several_ripe_checkpoints_give_the_highest_bound() {
        let start = Instant::now();
        let mut compaction = TombstoneCompaction::new(SCHEDULE, start);
        for i in 0..5 {
            compaction.push(checkpoint(start + Duration::from_secs(i), 100 * (i + 1), i));
        }
        let now = start + Duration::from_secs(13);
        assert_eq!(compaction.take_ripe(Seq(100), now), Some(Seq(400)));
        assert_eq!(compaction.checkpoints.len(), 1);
    }

    #[test]
    fn a_full_list_keeps_the_newest_reading() {
        let start = Instant::now();
        let mut compaction = TombstoneCompaction::new(SCHEDULE, start);
        for i in 0..MAX_CHECKPOINTS as u64 + 10 {
            compaction.push(checkpoint(start, i, i));
        }
        assert_eq!(compaction.checkpoints.len(), MAX_CHECKPOINTS);
        let newest = compaction.checkpoints.back().unwrap();
        assert_eq!(newest.seq_below, Seq(MAX_CHECKPOINTS as u64 + 9));
        assert_eq!(compaction.checkpoints.front().unwrap().seq_below, Seq(0));
    }
}
