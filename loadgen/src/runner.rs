//! A whole run: corpus, setup, the stages in order, the scrapes, the report.
//!
//! Sequence: validate the plan; load or generate the corpus (on a blocking thread); resolve
//! the target and wait (bounded) for its healthcheck; create the collection and preload
//! documents when asked (not measured); scrape `/metrics`; run each stage with a fresh set
//! of connections, a live progress line on a terminal; scrape again; build the report and
//! evaluate the thresholds. Setup failures are errors; request failures during stages are
//! measurements.

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Method;
use tokio::time::Instant;

use crate::corpus::{Corpus, STANDARD_SCHEMA};
use crate::driver::run_stage;
use crate::error::LoadgenError;
use crate::http::{Answer, Connection, Target, TransportError};
use crate::plan::{Plan, ScenarioKind};
use crate::prom;
use crate::record::{LiveCounters, OpKind, Recorder};
use crate::report::{distribution, timeline, Report, StageReport, Summary};
use crate::threshold::Threshold;
use crate::workload::Workload;

/// How the run talks to the person running it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A progress line on stdout, refreshed every second (use on a terminal).
    Live,
    /// Nothing until the end.
    Quiet,
}

impl Progress {
    /// Live on a terminal, quiet on a pipe or a file.
    pub fn auto() -> Self {
        if std::io::stdout().is_terminal() {
            Self::Live
        } else {
            Self::Quiet
        }
    }
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const PRELOAD_BATCH: usize = 1000;

/// Runs `plan` to its end. `stop` ends the current stage early (Ctrl-C) and skips the rest.
pub async fn run(
    plan: &Plan,
    progress: Progress,
    stop: Arc<AtomicBool>,
) -> Result<Report, LoadgenError> {
    plan.validate()?;
    let thresholds = plan
        .thresholds
        .iter()
        .map(|t| Threshold::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let source = plan.corpus.source();
    let corpus = tokio::task::spawn_blocking(move || Corpus::load(&source))
        .await
        .map_err(|e| LoadgenError::Invalid(format!("corpus generation failed: {e}")))??;
    let corpus = Arc::new(corpus);
    let target =
        Target::resolve(&plan.target, plan.api_key.as_deref(), plan.token.as_deref()).await?;
    let mut setup = Connection::new(&target);
    wait_healthy(&target, &mut setup).await?;

    let touches_collection = plan.stages.iter().any(|s| s.scenario != ScenarioKind::Get);
    if touches_collection && plan.create_collection && corpus.is_standard {
        create_collection(&target, &mut setup, &plan.collection).await?;
    }
    if plan.preload > 0 {
        preload(&target, &mut setup, &plan.collection, &corpus, plan.preload).await?;
    }

    let before = if plan.scrape_metrics {
        scrape(&target, &mut setup).await
    } else {
        Err("metrics scraping disabled".to_owned())
    };

    let started_at = rfc3339_now();
    let run_tag = run_tag();
    let run_start = Instant::now();
    let mut total = Recorder::new();
    let mut stages = Vec::with_capacity(plan.stages.len());
    for (index, stage) in plan.stages.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let workload = Arc::new(Workload::new(
            stage,
            corpus.clone(),
            &plan.collection,
            &run_tag,
        ));
        let live = Arc::new(LiveCounters::default());
        let stage_start = Instant::now();
        let label = format!(
            "stage {}/{} {}",
            index + 1,
            plan.stages.len(),
            stage.display_name()
        );
        let display = (progress == Progress::Live)
            .then(|| tokio::spawn(show_progress(label, live.clone(), stage_start)));
        let recorder = run_stage(
            stage,
            workload,
            &target,
            plan.request_timeout,
            run_start,
            live,
            stop.clone(),
        )
        .await;
        let elapsed = stage_start.elapsed();
        if let Some(display) = display {
            display.abort();
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
        }
        stages.push(StageReport {
            name: stage.display_name(),
            scenario: stage.scenario.as_str().to_owned(),
            load_model: stage.load_model(),
            started_at_second: stage_start
                .saturating_duration_since(run_start)
                .as_secs_f64(),
            summary: Summary::of(&recorder, elapsed),
        });
        total.merge(&recorder);
    }
    let run_elapsed = run_start.elapsed();

    let (server, server_note) = match before {
        Ok(before) => match scrape(&target, &mut setup).await {
            Ok(after) => (Some(prom::deltas(&before, &after)), None),
            Err(note) => (None, Some(note)),
        },
        Err(note) => (None, Some(note)),
    };

    let total_summary = Summary::of(&total, run_elapsed);
    let mut all_latency = total.op(OpKind::Ingest).latency.clone();
    for kind in [OpKind::Search, OpKind::Get] {
        let _ = all_latency.add(&total.op(kind).latency);
    }
    let results: Vec<_> = thresholds
        .iter()
        .map(|t| t.evaluate(&total_summary))
        .collect();
    let passed = results.iter().all(|r| r.passed);
    Ok(Report {
        tool: "sluice-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        target: plan.target.clone(),
        collection: plan.collection.clone(),
        started_at,
        stages,
        timeline: timeline(&total),
        latency_distribution: distribution(&all_latency),
        total: total_summary,
        server,
        server_note,
        thresholds: results,
        passed,
    })
}

async fn show_progress(label: String, live: Arc<LiveCounters>, start: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut last = 0u64;
    loop {
        ticker.tick().await;
        let requests = live.requests.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let docs = live.docs.load(Ordering::Relaxed);
        print!(
            "\r\x1b[2K{label}  {:>4.0}s  requests {requests} ({}/s)  errors {errors}  docs {docs}",
            start.elapsed().as_secs_f64(),
            requests - last
        );
        let _ = std::io::stdout().flush();
        last = requests;
    }
}

async fn call(
    target: &Target,
    connection: &mut Connection,
    method: Method,
    path: &str,
    content_type: Option<&'static str>,
    body: Bytes,
) -> Result<Answer, LoadgenError> {
    let mut retried = false;
    loop {
        let request = target.request(method.clone(), path, content_type, body.clone())?;
        match connection.send(request, SETUP_TIMEOUT).await {
            Ok(answer) => return Ok(answer),
            // The server may close an idle keep-alive connection between setup calls; one
            // retry on a fresh connection tells that apart from a real failure.
            Err(TransportError::Io(_)) if !retried => retried = true,
            Err(error) => {
                return Err(LoadgenError::Target {
                    target: target.base.clone(),
                    message: format!("{path}: {error}"),
                })
            }
        }
    }
}

async fn wait_healthy(target: &Target, connection: &mut Connection) -> Result<(), LoadgenError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = call(
            target,
            connection,
            Method::GET,
            "/_internal_/healthcheck",
            None,
            Bytes::new(),
        )
        .await;
        match last {
            Ok(answer) if answer.status == 200 => return Ok(()),
            other if Instant::now() >= deadline => {
                let message = match other {
                    Ok(answer) => format!("healthcheck answers {}", answer.status),
                    Err(error) => error.to_string(),
                };
                return Err(LoadgenError::Target {
                    target: target.base.clone(),
                    message: format!("not healthy after 30s: {message}"),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn create_collection(
    target: &Target,
    connection: &mut Connection,
    collection: &str,
) -> Result<(), LoadgenError> {
    let path = format!("/v1/collections/{collection}");
    let answer = call(
        target,
        connection,
        Method::PUT,
        &path,
        Some("application/json"),
        Bytes::from_static(STANDARD_SCHEMA.as_bytes()),
    )
    .await?;
    match answer.status {
        200 | 201 => Ok(()),
        // An existing collection with another schema: use it as it is.
        409 => Ok(()),
        status => Err(LoadgenError::Target {
            target: target.base.clone(),
            message: format!(
                "creating collection {collection}: {status} {}",
                String::from_utf8_lossy(&answer.body)
            ),
        }),
    }
}

async fn preload(
    target: &Target,
    connection: &mut Connection,
    collection: &str,
    corpus: &Corpus,
    docs: usize,
) -> Result<(), LoadgenError> {
    let path = format!("/v1/collections/{collection}/documents?wait=searchable");
    let mut sent = 0;
    while sent < docs {
        let count = PRELOAD_BATCH.min(docs - sent);
        let mut body = Vec::with_capacity(count * 1100);
        for number in sent..sent + count {
            body.extend_from_slice(&corpus.lines[number % corpus.lines.len()]);
            body.push(b'\n');
        }
        let answer = call(
            target,
            connection,
            Method::POST,
            &path,
            Some("application/x-ndjson"),
            Bytes::from(body),
        )
        .await?;
        if !(200..300).contains(&answer.status) {
            return Err(LoadgenError::Target {
                target: target.base.clone(),
                message: format!(
                    "preloading: {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                ),
            });
        }
        sent += count;
    }
    Ok(())
}

async fn scrape(target: &Target, connection: &mut Connection) -> Result<prom::Scrape, String> {
    match call(
        target,
        connection,
        Method::GET,
        "/metrics",
        None,
        Bytes::new(),
    )
    .await
    {
        Ok(answer) if answer.status == 200 => {
            Ok(prom::parse(&String::from_utf8_lossy(&answer.body)))
        }
        Ok(answer) => Err(format!("/metrics answered {}", answer.status)),
        Err(error) => Err(error.to_string()),
    }
}

fn rfc3339_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// A short lowercase tag unique to this run (fresh ids and freshness markers use it).
fn run_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut value = nanos ^ u64::from(std::process::id()).rotate_left(40);
    let mut tag = String::new();
    for _ in 0..8 {
        let digit = (value % 36) as u32;
        tag.push(char::from_digit(digit, 36).unwrap_or('0'));
        value /= 36;
    }
    tag
}
