//! Runs one stage: the load models and the connection tasks.
//!
//! A stage spawns `connections` tasks, each owning one keep-alive connection and one
//! [`Recorder`]. Tasks take request numbers (tickets) from one shared atomic counter, in
//! order, one at a time:
//! - **closed loop**: a task sends its next request as soon as its previous one is answered;
//!   latency is measured from the send.
//! - **open loop**: ticket `i` has a scheduled start time on the stage's arrival curve
//!   (constant rate, or a linear ramp); the task that takes it sleeps until then and sends.
//!   When every connection is busy, a due ticket waits for a free one, and its latency still
//!   runs from the scheduled time, as wrk2 does, so a stalled server cannot hide its stall
//!   by slowing the load generator down (no coordinated omission).
//!
//! A stage ends when its ticket bound is reached or its schedule (open) or deadline (closed)
//! runs past its duration, or when `stop` is raised; in-flight requests finish (bounded by
//! the request timeout), so a stage always ends by itself. No channel, no lock on the path
//! of a request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde::Deserialize;
use tokio::time::Instant;

use crate::http::{Answer, Connection, Target};
use crate::plan::Stage;
use crate::record::{LiveCounters, OpKind, Outcome, Recorder, Sample};
use crate::workload::{Operation, Workload};

const NDJSON: &str = "application/x-ndjson";

/// When requests start.
#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// Each connection sends as soon as it is free.
    Closed,
    /// Requests start on an arrival curve: `from` per second at the start, `to` per second
    /// at `ramp` (linear in between), constant afterwards.
    Open {
        /// Rate at the stage start.
        from: f64,
        /// Rate at the end of the ramp.
        to: f64,
        /// Length of the ramp (zero: constant `from`).
        ramp: Duration,
    },
}

impl Schedule {
    /// The schedule of `stage`.
    pub fn of(stage: &Stage) -> Self {
        match (stage.rate, stage.ramp_to, stage.duration) {
            (Some(from), Some(to), Some(ramp)) => Self::Open { from, to, ramp },
            (Some(rate), _, _) => Self::Open {
                from: rate,
                to: rate,
                ramp: Duration::ZERO,
            },
            _ => Self::Closed,
        }
    }

    /// Scheduled start of request `ticket` after the stage start (open loop only): the time
    /// at which the arrival curve's integral reaches `ticket`.
    pub fn start_offset(&self, ticket: u64) -> Option<Duration> {
        let Self::Open { from, to, ramp } = *self else {
            return None;
        };
        let n = ticket as f64;
        let ramp_secs = ramp.as_secs_f64();
        let seconds = if ramp_secs == 0.0 || (to - from).abs() < f64::EPSILON {
            n / from
        } else {
            let slope = (to - from) / ramp_secs;
            // N(t) = from * t + slope * t² / 2 during the ramp.
            let in_ramp = from * ramp_secs + slope * ramp_secs * ramp_secs / 2.0;
            if n <= in_ramp {
                let a = slope / 2.0;
                (-from + (from * from + 4.0 * a * n).max(0.0).sqrt()) / (2.0 * a)
            } else if to > 0.0 {
                ramp_secs + (n - in_ramp) / to
            } else {
                f64::INFINITY
            }
        };
        (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
    }
}

/// Settings the connection tasks share.
struct Shared {
    workload: Arc<Workload>,
    target: Target,
    schedule: Schedule,
    tickets: AtomicU64,
    max_requests: Option<u64>,
    stage_start: Instant,
    deadline: Option<Instant>,
    run_start: Instant,
    request_timeout: Duration,
    poll_interval: Duration,
    visibility_timeout: Duration,
    live: Arc<LiveCounters>,
    stop: Arc<AtomicBool>,
}

/// Runs `stage` to its end and returns the merged measurements.
#[allow(clippy::too_many_arguments)]
pub async fn run_stage(
    stage: &Stage,
    workload: Arc<Workload>,
    target: &Target,
    request_timeout: Duration,
    run_start: Instant,
    live: Arc<LiveCounters>,
    stop: Arc<AtomicBool>,
) -> Recorder {
    let stage_start = Instant::now();
    let shared = Arc::new(Shared {
        workload,
        target: target.clone(),
        schedule: Schedule::of(stage),
        tickets: AtomicU64::new(0),
        max_requests: stage.requests,
        stage_start,
        deadline: stage.duration.map(|d| stage_start + d),
        run_start,
        request_timeout,
        poll_interval: stage.poll_interval,
        visibility_timeout: stage.visibility_timeout,
        live,
        stop,
    });
    let tasks: Vec<_> = (0..stage.connections)
        .map(|_| tokio::spawn(connection_task(shared.clone())))
        .collect();
    let mut merged = Recorder::new();
    for task in tasks {
        // A panicking task loses its own samples only; the stage still reports the rest.
        if let Ok(recorder) = task.await {
            merged.merge(&recorder);
        }
    }
    merged
}

async fn connection_task(shared: Arc<Shared>) -> Recorder {
    let mut recorder = Recorder::new();
    let mut connection = Connection::new(&shared.target);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let ticket = shared.tickets.fetch_add(1, Ordering::Relaxed);
        if shared.max_requests.is_some_and(|max| ticket >= max) {
            break;
        }
        let intended = match shared.schedule {
            Schedule::Closed => {
                let now = Instant::now();
                if shared.deadline.is_some_and(|deadline| now >= deadline) {
                    break;
                }
                now
            }
            Schedule::Open { .. } => {
                let Some(offset) = shared.schedule.start_offset(ticket) else {
                    break;
                };
                let scheduled = shared.stage_start + offset;
                if shared
                    .deadline
                    .is_some_and(|deadline| scheduled >= deadline)
                {
                    break;
                }
                if !sleep_until_or_stop(scheduled, &shared.stop).await {
                    break;
                }
                scheduled
            }
        };
        let operation = shared.workload.operation(ticket);
        execute(&shared, &mut connection, &mut recorder, operation, intended).await;
    }
    recorder.flush_live(&shared.live);
    recorder
}

/// Sleeps until `when`, waking regularly to honour `stop`; false when stopped.
async fn sleep_until_or_stop(when: Instant, stop: &AtomicBool) -> bool {
    const STOP_CHECK: Duration = Duration::from_millis(100);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= when {
            return true;
        }
        tokio::time::sleep_until(when.min(now + STOP_CHECK)).await;
    }
}

#[derive(Deserialize)]
struct IngestAnswer {
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    rejected: u64,
    #[serde(default)]
    errors: Vec<LineError>,
}

#[derive(Deserialize)]
struct LineError {
    code: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
}

#[derive(Deserialize)]
struct SearchAnswer {
    total: u64,
}

fn outcome_of(answer: &Answer) -> Outcome {
    if (200..300).contains(&answer.status) {
        Outcome::Success
    } else {
        Outcome::Status {
            status: answer.status,
            code: serde_json::from_slice::<ErrorAnswer>(&answer.body)
                .ok()
                .map(|e| e.error.code),
        }
    }
}

struct Exchange {
    outcome: Outcome,
    answer: Option<Answer>,
    sent_at: Instant,
}

async fn exchange(
    shared: &Shared,
    connection: &mut Connection,
    method: Method,
    path: &str,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Exchange {
    let sent_at = Instant::now();
    let request = match shared.target.request(method, path, content_type, body) {
        Ok(request) => request,
        Err(_) => {
            return Exchange {
                outcome: Outcome::Transport { kind: "request" },
                answer: None,
                sent_at,
            }
        }
    };
    match connection.send(request, shared.request_timeout).await {
        Ok(answer) => Exchange {
            outcome: outcome_of(&answer),
            answer: Some(answer),
            sent_at,
        },
        Err(error) => Exchange {
            outcome: Outcome::Transport { kind: error.kind() },
            answer: None,
            sent_at,
        },
    }
}

async fn execute(
    shared: &Shared,
    connection: &mut Connection,
    recorder: &mut Recorder,
    operation: Operation,
    intended: Instant,
) {
    let (kind, path, body, docs, marker_search) = match operation {
        Operation::Ingest { path, body, docs } => (OpKind::Ingest, path, Some(body), docs, None),
        Operation::Search { path } => (OpKind::Search, path, None, 0, None),
        Operation::Get { path } => (OpKind::Get, path, None, 0, None),
        Operation::Freshness {
            path,
            body,
            search_path,
        } => (OpKind::Ingest, path, Some(body), 1, Some(search_path)),
    };
    let bytes_sent = body.as_ref().map_or(0, |b| b.len() as u64);
    let result = match body {
        Some(body) => exchange(shared, connection, Method::POST, &path, Some(NDJSON), body).await,
        None => exchange(shared, connection, Method::GET, &path, None, Bytes::new()).await,
    };
    let completed = Instant::now();
    let (mut accepted, mut rejected) = (0, 0);
    if let (OpKind::Ingest, Outcome::Success, Some(answer)) =
        (kind, &result.outcome, &result.answer)
    {
        if let Ok(parsed) = serde_json::from_slice::<IngestAnswer>(&answer.body) {
            accepted = parsed.accepted;
            rejected = parsed.rejected;
            recorder.record_line_errors(parsed.errors.iter().map(|e| e.code.as_str()));
        }
    }
    let succeeded = result.outcome == Outcome::Success;
    recorder.record(
        &Sample {
            kind,
            latency: completed.saturating_duration_since(intended),
            service: completed.saturating_duration_since(result.sent_at),
            completed_at: completed.saturating_duration_since(shared.run_start),
            outcome: result.outcome,
            bytes_sent,
            bytes_received: result.answer.as_ref().map_or(0, |a| a.body.len() as u64),
            docs_sent: docs,
            docs_accepted: accepted,
            docs_rejected: rejected,
        },
        &shared.live,
    );
    if let (Some(search_path), true) = (marker_search, succeeded && accepted > 0) {
        let (lag, polls) = wait_visible(shared, connection, &search_path, completed).await;
        recorder.record_freshness(lag, polls);
    }
}

/// Polls `search_path` until it finds a hit; the lag from `acknowledged`, or `None` after the
/// visibility timeout, and the number of polls.
async fn wait_visible(
    shared: &Shared,
    connection: &mut Connection,
    search_path: &str,
    acknowledged: Instant,
) -> (Option<Duration>, u64) {
    let deadline = acknowledged + shared.visibility_timeout;
    let mut polls = 0;
    loop {
        let result = exchange(
            shared,
            connection,
            Method::GET,
            search_path,
            None,
            Bytes::new(),
        )
        .await;
        polls += 1;
        let now = Instant::now();
        let found = result.outcome == Outcome::Success
            && result.answer.as_ref().is_some_and(|answer| {
                serde_json::from_slice::<SearchAnswer>(&answer.body).is_ok_and(|s| s.total > 0)
            });
        if found {
            return (Some(now.saturating_duration_since(acknowledged)), polls);
        }
        if now >= deadline || shared.stop.load(Ordering::Relaxed) {
            return (None, polls);
        }
        tokio::time::sleep(shared.poll_interval.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_spaces_requests_evenly() {
        let schedule = Schedule::Open {
            from: 100.0,
            to: 100.0,
            ramp: Duration::ZERO,
        };
        assert_eq!(schedule.start_offset(0), Some(Duration::ZERO));
        assert_eq!(
            schedule.start_offset(250),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(Schedule::Closed.start_offset(3), None);
    }

    #[test]
    fn ramp_schedule_follows_the_integral_of_the_rate() {
        // 0 -> 100/s over 10 s: 500 requests in the ramp, the 125th at 5 s.
        let schedule = Schedule::Open {
            from: 0.0,
            to: 100.0,
            ramp: Duration::from_secs(10),
        };
        let at = |n| {
            schedule
                .start_offset(n)
                .map(|d| d.as_secs_f64())
                .unwrap_or(f64::NAN)
        };
        assert!((at(125) - 5.0).abs() < 1e-9, "{}", at(125));
        assert!((at(500) - 10.0).abs() < 1e-9);
        assert!((at(600) - 11.0).abs() < 1e-9, "constant after the ramp");
        // 100 -> 0/s: never more than 500 requests.
        let down = Schedule::Open {
            from: 100.0,
            to: 0.0,
            ramp: Duration::from_secs(10),
        };
        assert!(down.start_offset(499).is_some());
        assert_eq!(down.start_offset(501), None);
    }
}
