//! The report of a run: what the JSON file holds, what the HTML page draws, what thresholds
//! are checked against, and the text summary printed at the end.
//!
//! Built once from the merged [`Recorder`]s; plain data afterwards. Latencies are in
//! milliseconds (fractional), rates per second of the stage's wall time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::prom::ServerDeltas;
use crate::record::{OpRecord, Recorder};
use crate::threshold::ThresholdResult;

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a microsecond histogram.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// Figures of one kind of request (or all of them).
#[derive(Clone, Debug, Default, Serialize)]
pub struct OpSummary {
    /// Requests completed.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else (non-2xx, connect, I/O, timeout).
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// Completed requests per second.
    pub requests_per_second: f64,
    /// Documents sent.
    pub docs: u64,
    /// Documents sent per second.
    pub docs_per_second: f64,
    /// Documents the server accepted.
    pub docs_accepted: u64,
    /// Documents the server rejected.
    pub docs_rejected: u64,
    /// Request body megabytes (10^6) sent per second.
    pub mb_per_second: f64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Latency from the scheduled start (what a user waits for).
    pub latency_ms: Latency,
    /// Latency from the actual send (the server's service time seen by the client).
    pub service_time_ms: Latency,
    /// Failures by HTTP status or transport kind.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Failures by error code of the body.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Rejected ingest lines by code.
    pub line_errors_by_code: BTreeMap<String, u64>,
}

impl OpSummary {
    fn of(op: &OpRecord, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            requests: op.requests,
            ok: op.ok,
            errors: op.errors(),
            error_rate: if op.requests == 0 {
                0.0
            } else {
                op.errors() as f64 / op.requests as f64
            },
            requests_per_second: op.requests as f64 / seconds,
            docs: op.docs_sent,
            docs_per_second: op.docs_sent as f64 / seconds,
            docs_accepted: op.docs_accepted,
            docs_rejected: op.docs_rejected,
            mb_per_second: op.bytes_sent as f64 / 1e6 / seconds,
            bytes_sent: op.bytes_sent,
            bytes_received: op.bytes_received,
            latency_ms: Latency::of(&op.latency),
            service_time_ms: Latency::of(&op.service),
            errors_by_status: op.errors_by_status.clone(),
            errors_by_code: op.errors_by_code.clone(),
            line_errors_by_code: op.line_errors_by_code.clone(),
        }
    }
}

/// Freshness figures: from an ingest 2xx to the document being found by search.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Freshness {
    /// Markers found.
    pub visible: u64,
    /// Markers not found within the visibility timeout.
    pub timeouts: u64,
    /// Searches issued while polling.
    pub polls: u64,
    /// Time to visible.
    pub lag_ms: Latency,
}

/// Figures of a stage or of the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Wall time, in seconds.
    pub elapsed_seconds: f64,
    /// All requests together.
    #[serde(flatten)]
    pub all: OpSummary,
    /// By kind of request (`ingest`, `search`, `get`).
    pub ops: BTreeMap<String, OpSummary>,
    /// Present when markers were sent.
    pub freshness: Option<Freshness>,
}

impl Summary {
    /// The summary of `recorder` over `elapsed`.
    pub fn of(recorder: &Recorder, elapsed: Duration) -> Self {
        let freshness =
            (recorder.freshness.len() + recorder.freshness_timeouts > 0).then(|| Freshness {
                visible: recorder.freshness.len(),
                timeouts: recorder.freshness_timeouts,
                polls: recorder.freshness_polls,
                lag_ms: Latency::of(&recorder.freshness),
            });
        Self {
            elapsed_seconds: elapsed.as_secs_f64(),
            all: OpSummary::of(&recorder.all_ops(), elapsed),
            ops: recorder
                .used_ops()
                .map(|(kind, op)| (kind.as_str().to_owned(), OpSummary::of(op, elapsed)))
                .collect(),
            freshness,
        }
    }
}

/// One stage's report.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Scenario.
    pub scenario: String,
    /// Load model in words.
    pub load_model: String,
    /// Seconds since the run start when the stage began.
    pub started_at_second: f64,
    /// The figures.
    pub summary: Summary,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the run start.
    pub second: u64,
    /// Requests completed in this second.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Documents sent.
    pub docs: u64,
    /// Request megabytes sent.
    pub mb: f64,
    /// Median latency (ms) of the requests completed in this second.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// A point of the latency distribution (percentile spectrum).
#[derive(Clone, Debug, Serialize)]
pub struct PercentilePoint {
    /// Percentile (0 to 100).
    pub percentile: f64,
    /// Latency at that percentile, ms.
    pub latency_ms: f64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `sluice-loadgen`.
    pub tool: String,
    /// Version of the tool.
    pub version: String,
    /// Target base URL.
    pub target: String,
    /// Collection.
    pub collection: String,
    /// When the run began (RFC 3339, UTC).
    pub started_at: String,
    /// Stages in order.
    pub stages: Vec<StageReport>,
    /// Every stage together.
    pub total: Summary,
    /// Per-second timeline of the whole run.
    pub timeline: Vec<TimelinePoint>,
    /// Latency distribution of every request of the run.
    pub latency_distribution: Vec<PercentilePoint>,
    /// Server-side deltas, when `/metrics` could be scraped.
    pub server: Option<ServerDeltas>,
    /// Why the server-side deltas are missing, when they are.
    pub server_note: Option<String>,
    /// Threshold verdicts.
    pub thresholds: Vec<ThresholdResult>,
    /// False when a threshold was breached.
    pub passed: bool,
}

/// The timeline of a merged recorder.
pub fn timeline(recorder: &Recorder) -> Vec<TimelinePoint> {
    recorder
        .timeline
        .iter()
        .enumerate()
        .map(|(second, bucket)| {
            let latency = Latency::of(&bucket.latency);
            TimelinePoint {
                second: second as u64,
                requests: bucket.requests,
                errors: bucket.errors,
                docs: bucket.docs,
                mb: bucket.bytes_sent as f64 / 1e6,
                p50_ms: latency.p50,
                p99_ms: latency.p99,
                max_ms: latency.max,
            }
        })
        .collect()
}

/// The percentile spectrum of `histogram`: 0 to 99.9999 in halving steps of the tail, then
/// the max.
pub fn distribution(histogram: &Histogram<u64>) -> Vec<PercentilePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    let mut percentile = 0.0f64;
    while percentile < 99.9999 {
        points.push(PercentilePoint {
            percentile,
            latency_ms: histogram.value_at_percentile(percentile) as f64 / 1000.0,
        });
        // Ten steps per halving of the remaining tail, like HdrHistogram's percentile output.
        let remaining = 100.0 - percentile;
        percentile += remaining / 2.0 / 5.0;
    }
    points.push(PercentilePoint {
        percentile: 100.0,
        latency_ms: histogram.max() as f64 / 1000.0,
    });
    points
}

impl Report {
    /// A human summary for the terminal.
    pub fn text_summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "target {}  collection {}",
            self.target, self.collection
        );
        for stage in &self.stages {
            let _ = writeln!(
                out,
                "\nstage {} [{}] {} — {:.1}s",
                stage.name, stage.scenario, stage.load_model, stage.summary.elapsed_seconds
            );
            write_summary(&mut out, &stage.summary);
        }
        if self.stages.len() > 1 {
            let _ = writeln!(out, "\ntotal — {:.1}s", self.total.elapsed_seconds);
            write_summary(&mut out, &self.total);
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                out,
                "\nserver: dedup skips {}  cache hit ratio {}  DLQ {}  redeliveries {}  accepted {}  rejected {}",
                server.dedup_skips,
                server
                    .search_cache_hit_ratio
                    .map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                server.dlq_messages,
                server.log_redeliveries,
                server.ingest_documents_accepted,
                server.ingest_documents_rejected,
            );
        } else if let Some(note) = &self.server_note {
            let _ = writeln!(out, "\nserver: {note}");
        }
        for threshold in &self.thresholds {
            let _ = writeln!(
                out,
                "threshold {:<20} {} (actual {})",
                threshold.expression,
                if threshold.passed { "ok" } else { "BREACHED" },
                threshold.actual_display
            );
        }
        out
    }
}

fn write_summary(out: &mut String, summary: &Summary) {
    let all = &summary.all;
    let _ = writeln!(
        out,
        "  requests {} ({:.1}/s)  errors {} ({:.3}%)  docs {} ({:.1}/s)  {:.2} MB/s",
        all.requests,
        all.requests_per_second,
        all.errors,
        all.error_rate * 100.0,
        all.docs,
        all.docs_per_second,
        all.mb_per_second
    );
    for (name, op) in &summary.ops {
        let l = &op.latency_ms;
        let _ = writeln!(
            out,
            "  {name:<7} n={} p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  p99.9 {:.2}ms  max {:.2}ms",
            op.requests, l.p50, l.p90, l.p99, l.p99_9, l.max
        );
        for (status, count) in &op.errors_by_status {
            let _ = writeln!(out, "          error {status}: {count}");
        }
        for (code, count) in &op.errors_by_code {
            let _ = writeln!(out, "          code {code}: {count}");
        }
        for (code, count) in &op.line_errors_by_code {
            let _ = writeln!(out, "          rejected line {code}: {count}");
        }
    }
    if let Some(freshness) = &summary.freshness {
        let l = &freshness.lag_ms;
        let _ = writeln!(
            out,
            "  freshness visible {} timeouts {}  p50 {:.1}ms  p99 {:.1}ms  max {:.1}ms",
            freshness.visible, freshness.timeouts, l.p50, l.p99, l.max
        );
    }
}
