//! When a shard commits: as soon as `commit_max_docs` changes are pending, or once
//! `commit_interval` has passed since the first message received after the last commit.
//!
//! The clock starts at the first *message*, not the first document change, so that
//! messages carrying only stale events are still acked within one interval. Pure state,
//! owned by one consume loop; the caller passes `now` so tests need no clock.

use std::time::{Duration, Instant};

/// Pending work of one shard since its last commit.
#[derive(Debug)]
pub(crate) struct CommitPolicy {
    max_docs: usize,
    interval: Duration,
    pending_docs: usize,
    first_pending_at: Option<Instant>,
}

impl CommitPolicy {
    /// A policy committing at `max_docs` pending changes or after `interval`.
    pub fn new(max_docs: usize, interval: Duration) -> Self {
        Self {
            max_docs: max_docs.max(1),
            interval,
            pending_docs: 0,
            first_pending_at: None,
        }
    }

    /// Records a processed message that changed `changed_docs` documents.
    pub fn record(&mut self, changed_docs: usize, now: Instant) {
        self.pending_docs += changed_docs;
        self.first_pending_at.get_or_insert(now);
    }

    /// Whether anything awaits a commit (or an ack).
    pub fn has_pending(&self) -> bool {
        self.first_pending_at.is_some()
    }

    /// Document changes awaiting a commit.
    pub fn pending_docs(&self) -> usize {
        self.pending_docs
    }

    /// Whether the shard should commit now.
    pub fn is_due(&self, now: Instant) -> bool {
        match self.first_pending_at {
            None => false,
            Some(first) => {
                self.pending_docs >= self.max_docs || now.duration_since(first) >= self.interval
            }
        }
    }

    /// How long until the interval forces a commit; `None` when nothing is pending.
    pub fn time_until_due(&self, now: Instant) -> Option<Duration> {
        self.first_pending_at
            .map(|first| (first + self.interval).saturating_duration_since(now))
    }

    /// Forgets everything pending: called after a commit (or a rollback).
    pub fn reset(&mut self) {
        self.pending_docs = 0;
        self.first_pending_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_on_count_or_interval_whichever_first() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(10, Duration::from_secs(1));
        assert!(!policy.is_due(start) && !policy.has_pending());
        assert_eq!(policy.time_until_due(start), None);

        policy.record(4, start);
        assert!(!policy.is_due(start + Duration::from_millis(999)));
        assert_eq!(
            policy.time_until_due(start + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
        assert!(policy.is_due(start + Duration::from_secs(1)));

        policy.record(6, start + Duration::from_millis(10));
        assert_eq!(policy.pending_docs(), 10);
        assert!(
            policy.is_due(start + Duration::from_millis(10)),
            "count reached"
        );

        policy.reset();
        assert!(!policy.is_due(start + Duration::from_secs(5)));
    }

    #[test]
    fn a_message_without_changes_still_starts_the_clock() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(10, Duration::from_millis(200));
        policy.record(0, start);
        assert!(policy.has_pending());
        assert!(policy.is_due(start + Duration::from_millis(200)));
    }
}
