//! When a shard commits. A commit is what makes changes searchable, but each one costs a
//! segment finalization (and later merges), so a shard commits:
//! - once it has **caught up** with its events (the last fetch found no more waiting) and
//!   `commit_interval` has passed since the first message received after the last commit:
//!   freshness while the shard keeps up, at most one commit per interval;
//! - while it consumes a **backlog** (fetches keep coming back full), only when
//!   `commit_max_docs` changes are pending or `commit_max_interval` has passed since that
//!   first message: a burst is indexed into few large segments, and the uncommitted (so
//!   unacked) stretch stays bounded well under the consumer's `ack_wait`.
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
    max_interval: Duration,
    pending_docs: usize,
    first_pending_at: Option<Instant>,
}

impl CommitPolicy {
    /// A policy committing `interval` after the first pending message once caught up,
    /// and in any case at `max_docs` pending changes or after `max_interval`.
    pub fn new(max_docs: usize, interval: Duration, max_interval: Duration) -> Self {
        Self {
            max_docs: max_docs.max(1),
            interval,
            max_interval: max_interval.max(interval),
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

    /// Whether the shard should commit now; `caught_up` tells whether its last fetch
    /// found no further message waiting.
    pub fn is_due(&self, now: Instant, caught_up: bool) -> bool {
        match self.first_pending_at {
            None => false,
            Some(first) => {
                let age = now.duration_since(first);
                self.pending_docs >= self.max_docs
                    || age >= self.max_interval
                    || (caught_up && age >= self.interval)
            }
        }
    }

    /// How long a caught-up shard may wait for more messages before its commit is due;
    /// `None` when nothing is pending.
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

    const INTERVAL: Duration = Duration::from_secs(1);
    const MAX_INTERVAL: Duration = Duration::from_secs(10);

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_caught_up_shard_commits_on_count_or_interval_whichever_first() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(10, INTERVAL, MAX_INTERVAL);
        assert!(!policy.is_due(start, true) && !policy.has_pending());
        assert_eq!(policy.time_until_due(start), None);

        policy.record(4, start);
        assert!(!policy.is_due(start + ms(999), true));
        assert_eq!(policy.time_until_due(start + ms(400)), Some(ms(600)));
        assert_eq!(policy.time_until_due(start + ms(1400)), Some(ms(0)));
        assert!(policy.is_due(start + INTERVAL, true));

        policy.record(6, start + ms(10));
        assert_eq!(policy.pending_docs(), 10);
        assert!(policy.is_due(start + ms(10), true), "count reached");

        policy.reset();
        assert!(!policy.is_due(start + ms(5000), true));
    }

    #[test]
    fn a_shard_behind_its_events_commits_only_at_the_bounds() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(10, INTERVAL, MAX_INTERVAL);
        policy.record(4, start);
        assert!(
            !policy.is_due(start + ms(9999), false),
            "a backlog defers the commit past the interval"
        );
        assert!(
            policy.is_due(start + ms(9999), true),
            "until the shard catches up"
        );
        assert!(
            policy.is_due(start + MAX_INTERVAL, false),
            "the uncommitted stretch is bounded in time"
        );
        policy.record(6, start + ms(20));
        assert!(
            policy.is_due(start + ms(20), false),
            "and in pending changes"
        );
    }

    #[test]
    fn a_message_without_changes_still_starts_the_clock() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(10, ms(200), MAX_INTERVAL);
        policy.record(0, start);
        assert!(policy.has_pending());
        assert!(!policy.is_due(start + ms(199), true));
        assert!(policy.is_due(start + ms(200), true));
    }

    #[test]
    fn the_bound_is_never_below_the_interval() {
        let start = Instant::now();
        let mut policy = CommitPolicy::new(10, INTERVAL, ms(10));
        policy.record(1, start);
        assert!(!policy.is_due(start + ms(500), false));
        assert!(policy.is_due(start + INTERVAL, false));
    }
}
