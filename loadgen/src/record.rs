//! Measurement: HDR latency histograms, counters and the per-second timeline.
//!
//! Every connection task owns one [`Recorder`] and records into it without any lock or
//! shared write (the hot path is a histogram increment and a few additions); recorders are
//! merged once, when the stage ends. The only shared state is [`LiveCounters`], three
//! relaxed atomics read by the progress display.
//!
//! Latencies are in microseconds, from 1 µs to one hour, at 3 significant digits (0.1 %
//! precision). In an open loop `latency` runs from the request's scheduled start, so a
//! server stall shows up in full (no coordinated omission), while `service` runs from the
//! moment the request was actually written; in a closed loop the two are equal.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency recorded exactly (larger values are clamped): one hour.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// What kind of request a sample belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// A bulk NDJSON POST.
    Ingest,
    /// A search.
    Search,
    /// A plain GET.
    Get,
}

impl OpKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Search => "search",
            Self::Get => "get",
        }
    }

    const ALL: [OpKind; 3] = [OpKind::Ingest, OpKind::Search, OpKind::Get];

    fn index(self) -> usize {
        self as usize
    }
}

/// A latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    histogram_with_precision(3)
}

fn histogram_with_precision(significant_digits: u8) -> Histogram<u64> {
    // Constant, valid bounds (low >= 1, high >= 2 * low, digits <= 5): this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, significant_digits)
        .expect("constant histogram bounds are valid")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_LATENCY_MICROS)
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Success,
    /// A non-2xx answer, with the error code of its body when it had one.
    Status {
        /// HTTP status.
        status: u16,
        /// `error.code` of the body.
        code: Option<String>,
    },
    /// No answer: connect, write or read failure, or timeout (`kind` is a fixed word).
    Transport {
        /// `connect`, `io` or `timeout`.
        kind: &'static str,
    },
}

/// Counters and histograms of one kind of request.
#[derive(Clone)]
pub struct OpRecord {
    /// Latency from the scheduled start.
    pub latency: Histogram<u64>,
    /// Latency from the actual start.
    pub service: Histogram<u64>,
    /// Requests completed (whatever the outcome).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Failures by HTTP status (`"503"`) or transport kind (`"timeout"`).
    pub errors_by_status: BTreeMap<String, u64>,
    /// Failures by `error.code` of the body (`"overloaded"`).
    pub errors_by_code: BTreeMap<String, u64>,
    /// Rejected ingest lines by code (inside 2xx answers).
    pub line_errors_by_code: BTreeMap<String, u64>,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Documents sent in ingest requests.
    pub docs_sent: u64,
    /// Documents the server accepted.
    pub docs_accepted: u64,
    /// Documents the server rejected.
    pub docs_rejected: u64,
}

impl OpRecord {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            service: new_histogram(),
            requests: 0,
            ok: 0,
            errors_by_status: BTreeMap::new(),
            errors_by_code: BTreeMap::new(),
            line_errors_by_code: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            docs_sent: 0,
            docs_accepted: 0,
            docs_rejected: 0,
        }
    }

    /// Failed requests.
    pub fn errors(&self) -> u64 {
        self.requests - self.ok
    }

    fn merge(&mut self, other: &OpRecord) {
        // Both histograms share bounds, so adding cannot fail; ignore the impossible.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.requests += other.requests;
        self.ok += other.ok;
        merge_counts(&mut self.errors_by_status, &other.errors_by_status);
        merge_counts(&mut self.errors_by_code, &other.errors_by_code);
        merge_counts(&mut self.line_errors_by_code, &other.line_errors_by_code);
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.docs_sent += other.docs_sent;
        self.docs_accepted += other.docs_accepted;
        self.docs_rejected += other.docs_rejected;
    }
}

fn merge_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (key, count) in from {
        *into.entry(key.clone()).or_default() += count;
    }
}

/// One second of the run.
#[derive(Clone)]
pub struct SecondBucket {
    /// Requests completed in this second.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Documents sent in requests completed in this second.
    pub docs: u64,
    /// Request bytes sent.
    pub bytes_sent: u64,
    /// Latencies of the requests completed in this second.
    pub latency: Histogram<u64>,
}

impl SecondBucket {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            docs: 0,
            bytes_sent: 0,
            // Two significant digits keep hour-long timelines small; 1 % is plenty for a chart.
            latency: histogram_with_precision(2),
        }
    }
}

/// Counters the progress display reads while a stage runs.
#[derive(Default)]
pub struct LiveCounters {
    /// Requests completed.
    pub requests: AtomicU64,
    /// Requests failed.
    pub errors: AtomicU64,
    /// Documents sent.
    pub docs: AtomicU64,
}

/// One task's (or, merged, one stage's) measurements.
#[derive(Clone)]
pub struct Recorder {
    ops: [OpRecord; 3],
    /// Time from an ingest 2xx to the marker being visible in search.
    pub freshness: Histogram<u64>,
    /// Markers not visible within the visibility timeout.
    pub freshness_timeouts: u64,
    /// Searches issued while polling for markers.
    pub freshness_polls: u64,
    /// Per-second buckets, index = whole seconds since the run started.
    pub timeline: Vec<SecondBucket>,
    unflushed: Unflushed,
}

/// Progress not yet added to [`LiveCounters`].
#[derive(Clone, Default)]
struct Unflushed {
    requests: u64,
    errors: u64,
    docs: u64,
    since: Duration,
}

/// Requests between two updates of the progress counters.
const LIVE_FLUSH_REQUESTS: u64 = 32;
/// Longest time between two updates of the progress counters.
const LIVE_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// A completed request, as the connection task saw it.
pub struct Sample {
    /// What kind of request.
    pub kind: OpKind,
    /// Time from the scheduled start.
    pub latency: Duration,
    /// Time from the actual start.
    pub service: Duration,
    /// When it completed, since the run started.
    pub completed_at: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// Request body bytes.
    pub bytes_sent: u64,
    /// Response body bytes.
    pub bytes_received: u64,
    /// Documents in the request.
    pub docs_sent: u64,
    /// Documents the answer accepted.
    pub docs_accepted: u64,
    /// Documents the answer rejected.
    pub docs_rejected: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            ops: [OpRecord::new(), OpRecord::new(), OpRecord::new()],
            freshness: new_histogram(),
            freshness_timeouts: 0,
            freshness_polls: 0,
            timeline: Vec::new(),
            unflushed: Unflushed::default(),
        }
    }

    /// Records one completed request.
    pub fn record(&mut self, sample: &Sample, live: &LiveCounters) {
        let op = &mut self.ops[sample.kind.index()];
        op.latency.saturating_record(micros(sample.latency));
        op.service.saturating_record(micros(sample.service));
        op.requests += 1;
        op.bytes_sent += sample.bytes_sent;
        op.bytes_received += sample.bytes_received;
        op.docs_sent += sample.docs_sent;
        op.docs_accepted += sample.docs_accepted;
        op.docs_rejected += sample.docs_rejected;
        let failed = match &sample.outcome {
            Outcome::Success => {
                op.ok += 1;
                false
            }
            Outcome::Status { status, code } => {
                *op.errors_by_status.entry(status.to_string()).or_default() += 1;
                if let Some(code) = code {
                    *op.errors_by_code.entry(code.clone()).or_default() += 1;
                }
                true
            }
            Outcome::Transport { kind } => {
                *op.errors_by_status.entry((*kind).to_owned()).or_default() += 1;
                true
            }
        };
        let second = sample.completed_at.as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize_with(second + 1, SecondBucket::new);
        }
        let bucket = &mut self.timeline[second];
        bucket.requests += 1;
        bucket.errors += u64::from(failed);
        bucket.docs += sample.docs_sent;
        bucket.bytes_sent += sample.bytes_sent;
        bucket.latency.saturating_record(micros(sample.latency));
        // The progress counters are shared between tasks: update them in small batches so
        // a fast run does not bounce their cache line between cores on every request.
        self.unflushed.requests += 1;
        self.unflushed.errors += u64::from(failed);
        self.unflushed.docs += sample.docs_sent;
        if self.unflushed.requests >= LIVE_FLUSH_REQUESTS
            || sample.completed_at >= self.unflushed.since + LIVE_FLUSH_INTERVAL
        {
            self.unflushed.since = sample.completed_at;
            self.flush_live(live);
        }
    }

    /// Adds what the progress counters have not seen yet.
    pub fn flush_live(&mut self, live: &LiveCounters) {
        let pending = std::mem::take(&mut self.unflushed);
        live.requests.fetch_add(pending.requests, Ordering::Relaxed);
        if pending.errors > 0 {
            live.errors.fetch_add(pending.errors, Ordering::Relaxed);
        }
        if pending.docs > 0 {
            live.docs.fetch_add(pending.docs, Ordering::Relaxed);
        }
        self.unflushed.since = pending.since;
    }

    /// Counts the per-line errors of an ingest answer.
    pub fn record_line_errors<'a>(&mut self, codes: impl Iterator<Item = &'a str>) {
        let op = &mut self.ops[OpKind::Ingest.index()];
        for code in codes {
            *op.line_errors_by_code.entry(code.to_owned()).or_default() += 1;
        }
    }

    /// Records the visibility lag of one marker.
    pub fn record_freshness(&mut self, lag: Option<Duration>, polls: u64) {
        self.freshness_polls += polls;
        match lag {
            Some(lag) => {
                self.freshness.saturating_record(micros(lag));
            }
            None => self.freshness_timeouts += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.ops.iter_mut().zip(other.ops.iter()) {
            mine.merge(theirs);
        }
        let _ = self.freshness.add(&other.freshness);
        self.freshness_timeouts += other.freshness_timeouts;
        self.freshness_polls += other.freshness_polls;
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize_with(other.timeline.len(), SecondBucket::new);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(other.timeline.iter()) {
            mine.requests += theirs.requests;
            mine.errors += theirs.errors;
            mine.docs += theirs.docs;
            mine.bytes_sent += theirs.bytes_sent;
            let _ = mine.latency.add(&theirs.latency);
        }
    }

    /// The record of one kind of request.
    pub fn op(&self, kind: OpKind) -> &OpRecord {
        &self.ops[kind.index()]
    }

    /// The kinds that saw at least one request, with their records.
    pub fn used_ops(&self) -> impl Iterator<Item = (OpKind, &OpRecord)> {
        OpKind::ALL
            .into_iter()
            .map(|kind| (kind, &self.ops[kind.index()]))
            .filter(|(_, op)| op.requests > 0)
    }

    /// All kinds merged into one record.
    pub fn all_ops(&self) -> OpRecord {
        let mut total = OpRecord::new();
        for op in &self.ops {
            total.merge(op);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: OpKind, millis: u64, at_secs: u64, outcome: Outcome) -> Sample {
        Sample {
            kind,
            latency: Duration::from_millis(millis),
            service: Duration::from_millis(millis / 2),
            completed_at: Duration::from_secs(at_secs),
            outcome,
            bytes_sent: 100,
            bytes_received: 10,
            docs_sent: 2,
            docs_accepted: 2,
            docs_rejected: 0,
        }
    }

    #[test]
    fn merging_keeps_counts_errors_and_timeline() {
        let live = LiveCounters::default();
        let mut a = Recorder::new();
        a.record(&sample(OpKind::Ingest, 10, 0, Outcome::Success), &live);
        let mut b = Recorder::new();
        b.record(
            &sample(
                OpKind::Ingest,
                1000,
                2,
                Outcome::Status {
                    status: 429,
                    code: Some("overloaded".into()),
                },
            ),
            &live,
        );
        b.record(
            &sample(OpKind::Search, 5, 2, Outcome::Transport { kind: "timeout" }),
            &live,
        );
        a.merge(&b);
        let ingest = a.op(OpKind::Ingest);
        assert_eq!(ingest.requests, 2);
        assert_eq!(ingest.errors(), 1);
        assert_eq!(ingest.errors_by_code.get("overloaded"), Some(&1));
        assert_eq!(
            a.op(OpKind::Search).errors_by_status.get("timeout"),
            Some(&1)
        );
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.timeline[2].requests, 2);
        assert_eq!(a.timeline[1].requests, 0);
        assert!(ingest.latency.max() >= 999_000);
        assert_eq!(a.all_ops().requests, 3);
        a.flush_live(&live);
        b.flush_live(&live);
        assert_eq!(live.requests.load(Ordering::Relaxed), 3);
        assert_eq!(live.errors.load(Ordering::Relaxed), 2);
    }
}
