//! Test-only fault points: abort the process at a named point of the pipeline.
//!
//! This exists for the crash suite (`tests/crash.rs`), in the spirit of meilisearch's
//! index-scheduler breakpoints: a crash test arms one point with
//! `SLUICE_CRASH_AT=<point>:<n>`, and the n-th time any thread reaches that point the
//! process calls [`std::process::abort`], which is as abrupt as `kill -9` (no destructors,
//! no flushing, no graceful shutdown). The restarted process must then keep every promise
//! sluice made before the crash.
//!
//! The points are compiled into every build and inert unless armed: [`reached`] is one
//! relaxed atomic load when nothing is armed, cheap enough for hot paths. The
//! configuration is read once, by [`arm_from_env`] at start-up (the `sluice` binary calls
//! it); nothing else ever writes it.
//!
//! Concurrency: the countdown is one atomic decrement, so exactly one thread (the n-th
//! arrival) aborts even when many reach the point at once.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The environment variable that arms a crash point: `<point>:<n>` (n ≥ 1).
pub const ENV_VAR: &str = "SLUICE_CRASH_AT";

/// A named place in the pipeline where a crash test may abort the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashPoint {
    /// Embedded log group commit: the group is written and fsynced, no appender has been
    /// answered yet (durable but unacknowledged).
    LogAppend,
    /// A worker between two messages of one fetched batch: the earlier ones are applied
    /// and acked, the later ones not started.
    WorkerBatch,
    /// A worker after the store write of a message, before its event append.
    AfterStoreWrite,
    /// A worker after the event append of a message, before the DOCS ack.
    BeforeDocsAck,
    /// An index shard mid-commit: Tantivy's segments are prepared (written) but the
    /// commit is not yet published.
    IndexCommit,
    /// An index shard after its commit, before the events it covers are acked.
    BeforeEventsAck,
    /// Graceful shutdown: HTTP intake stopped, workers and indexes still draining.
    Shutdown,
    /// Deleting a collection: its catalog entry is marked `Deleting`, the drop is not yet
    /// in the DOCS log.
    DropMarked,
    /// A worker applying a collection drop: the documents are dropped, the collection's
    /// log messages not yet purged.
    DropDocuments,
    /// A worker applying a collection drop: documents and log messages are gone, the
    /// catalog entry is not yet retired.
    DropPurged,
    /// A worker applying a collection drop: the entry is retired, the drop message not
    /// yet acked.
    DropRetired,
}

impl CrashPoint {
    /// Every point, in pipeline order.
    pub const ALL: [CrashPoint; 11] = [
        CrashPoint::LogAppend,
        CrashPoint::WorkerBatch,
        CrashPoint::AfterStoreWrite,
        CrashPoint::BeforeDocsAck,
        CrashPoint::IndexCommit,
        CrashPoint::BeforeEventsAck,
        CrashPoint::Shutdown,
        CrashPoint::DropMarked,
        CrashPoint::DropDocuments,
        CrashPoint::DropPurged,
        CrashPoint::DropRetired,
    ];

    /// The name used in [`ENV_VAR`].
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::LogAppend => "log_append",
            CrashPoint::WorkerBatch => "worker_batch",
            CrashPoint::AfterStoreWrite => "after_store_write",
            CrashPoint::BeforeDocsAck => "before_docs_ack",
            CrashPoint::IndexCommit => "index_commit",
            CrashPoint::BeforeEventsAck => "before_events_ack",
            CrashPoint::Shutdown => "shutdown",
            CrashPoint::DropMarked => "drop_marked",
            CrashPoint::DropDocuments => "drop_documents",
            CrashPoint::DropPurged => "drop_purged",
            CrashPoint::DropRetired => "drop_retired",
        }
    }

    /// Non-zero tag stored in [`ARMED`] (0 means nothing is armed).
    fn tag(self) -> u8 {
        match self {
            CrashPoint::LogAppend => 1,
            CrashPoint::WorkerBatch => 2,
            CrashPoint::AfterStoreWrite => 3,
            CrashPoint::BeforeDocsAck => 4,
            CrashPoint::IndexCommit => 5,
            CrashPoint::BeforeEventsAck => 6,
            CrashPoint::Shutdown => 7,
            CrashPoint::DropMarked => 8,
            CrashPoint::DropDocuments => 9,
            CrashPoint::DropPurged => 10,
            CrashPoint::DropRetired => 11,
        }
    }
}

/// The armed point's tag, 0 when none is armed.
static ARMED: AtomicU8 = AtomicU8::new(0);
/// Arrivals left at the armed point before the abort.
static REMAINING: AtomicU64 = AtomicU64::new(0);

/// A `SLUICE_CRASH_AT` value that does not name a point and a count.
#[derive(Debug, thiserror::Error)]
#[error("{ENV_VAR} must be <point>:<n> with n >= 1 and point one of {points}; got {value:?}")]
pub struct InvalidCrashSpec {
    value: String,
    points: String,
}

/// Parses `<point>:<n>`.
pub fn parse(spec: &str) -> Result<(CrashPoint, u64), InvalidCrashSpec> {
    let invalid = || InvalidCrashSpec {
        value: spec.to_owned(),
        points: CrashPoint::ALL.map(CrashPoint::name).join(", "),
    };
    let (name, count) = spec.split_once(':').ok_or_else(invalid)?;
    let point = CrashPoint::ALL
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(invalid)?;
    let count: u64 = count.parse().map_err(|_| invalid())?;
    if count == 0 {
        return Err(invalid());
    }
    Ok((point, count))
}

/// Arms the point named by `SLUICE_CRASH_AT`, if set; returns it. Call once at start-up.
pub fn arm_from_env() -> Result<Option<(CrashPoint, u64)>, InvalidCrashSpec> {
    let Some(spec) = std::env::var(ENV_VAR).ok().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let (point, count) = parse(&spec)?;
    REMAINING.store(count, Ordering::SeqCst);
    ARMED.store(point.tag(), Ordering::SeqCst);
    Ok(Some((point, count)))
}

/// Marks that `point` was reached; aborts the process if this is the armed arrival.
#[inline]
pub fn reached(point: CrashPoint) {
    if ARMED.load(Ordering::Relaxed) == point.tag() {
        countdown(point);
    }
}

#[cold]
fn countdown(point: CrashPoint) {
    if REMAINING.fetch_sub(1, Ordering::SeqCst) == 1 {
        // stderr is unbuffered: the line is out before the abort. Tests read it to tell
        // an armed crash from an accidental one.
        eprintln!("sluice: crash point {} reached, aborting", point.name());
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        assert_eq!(parse("log_append:3").unwrap(), (CrashPoint::LogAppend, 3));
        assert_eq!(parse("shutdown:1").unwrap(), (CrashPoint::Shutdown, 1));
        for bad in ["log_append", "log_append:0", "nowhere:2", "shutdown:x", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for point in CrashPoint::ALL {
            assert_eq!(parse(&format!("{}:1", point.name())).unwrap().0, point);
        }
    }

    #[test]
    fn only_the_armed_point_counts_arrivals() {
        // The only test that arms a point; the count is far from the abort. Nothing else
        // in this crate reaches a point, so the globals are this test's alone.
        const COUNT: u64 = 1_000_000;
        let tags: std::collections::BTreeSet<u8> =
            CrashPoint::ALL.into_iter().map(CrashPoint::tag).collect();
        assert_eq!(tags.len(), CrashPoint::ALL.len(), "one tag per point");
        assert!(!tags.contains(&0), "0 means nothing is armed");
        assert_eq!(ARMED.load(Ordering::SeqCst), 0, "nothing armed at start");
        REMAINING.store(COUNT, Ordering::SeqCst);
        for point in CrashPoint::ALL {
            reached(point);
        }
        assert_eq!(
            REMAINING.load(Ordering::SeqCst),
            COUNT,
            "with nothing armed, no point counts down"
        );

        ARMED.store(CrashPoint::IndexCommit.tag(), Ordering::SeqCst);
        for point in CrashPoint::ALL {
            if point != CrashPoint::IndexCommit {
                reached(point);
                reached(point);
            }
        }
        let after_others = REMAINING.load(Ordering::SeqCst);
        reached(CrashPoint::IndexCommit);
        reached(CrashPoint::IndexCommit);
        let after_armed = REMAINING.load(Ordering::SeqCst);
        ARMED.store(0, Ordering::SeqCst);
        REMAINING.store(0, Ordering::SeqCst);
        assert_eq!(
            after_others, COUNT,
            "points other than the armed one are inert"
        );
        assert_eq!(
            after_armed,
            COUNT - 2,
            "each arrival at the armed point counts once"
        );
    }
}
