//! The end-to-end driver: sluice through its real HTTP API, timed from the outside.
//!
//! - [`Driver::ingest`]: the corpus in `request_docs`-document POSTs from `producers`
//!   concurrent tasks, every request `wait=durable` except the last, which is sent once
//!   all others have answered and asks `wait=searchable`. Sequences grow with appends and
//!   the visibility wait is answered from ack floors, so the last request being
//!   searchable means every earlier one is too: the timer (first POST to that answer)
//!   covers the whole corpus becoming searchable.
//! - [`Driver::search_latency`]: single-term queries one at a time; cold = each query
//!   sent once (the result cache misses), warm = a few of them repeated (it hits).
//! - [`Driver::freshness`]: new documents POSTed at a paced rate, each request carrying
//!   one marker document; a task per request polls search for its marker and records
//!   the time from the request's 2xx to the marker being visible.
//!
//! 429 and 503 answers are retried after their `Retry-After` (that is sluice's
//! backpressure working, counted, not an error). Latencies go to hdrhistogram in
//! microseconds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::corpus::{Corpus, COLLECTION};
use crate::error::BenchError;

/// Longest a marker may take to become visible before the run fails.
const VISIBILITY_PATIENCE: Duration = Duration::from_secs(60);
/// Interval between searches polling for a marker: the freshness figures' resolution.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest pause honoured from a `Retry-After`.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// Freshness requests awaiting their 2xx or their marker at once; when sluice falls
/// further behind than this, pacing slips and the achieved rate says so.
const FRESHNESS_IN_FLIGHT: usize = 32;

/// p50/p99 of a latency distribution.
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: histogram.len(),
            p50: Duration::from_micros(histogram.value_at_quantile(0.50)),
            p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
            max: Duration::from_micros(histogram.max()),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits; bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// One ingest pass over a corpus.
#[derive(Clone, Copy, Debug)]
pub struct IngestRun {
    /// Documents sent (and accepted).
    pub docs: usize,
    /// Requests sent (retries not counted).
    pub requests: usize,
    /// 429/503 answers retried.
    pub retries: usize,
    /// First POST to the last (searchable) answer.
    pub elapsed: Duration,
}

impl IngestRun {
    /// Documents per second.
    pub fn docs_per_sec(&self) -> f64 {
        self.docs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Search latencies.
#[derive(Clone, Copy, Debug)]
pub struct SearchLatency {
    /// Each query once.
    pub cold: Percentiles,
    /// Repeated queries.
    pub warm: Percentiles,
}

/// Freshness at a paced ingest rate.
#[derive(Clone, Copy, Debug)]
pub struct Freshness {
    /// The rate asked for, documents per second.
    pub target_docs_per_sec: f64,
    /// The rate achieved.
    pub achieved_docs_per_sec: f64,
    /// 2xx to visible, one sample per marker.
    pub latency: Percentiles,
    /// 429/503 answers retried.
    pub retries: usize,
}

/// Talks to one sluice over HTTP.
#[derive(Clone)]
pub struct Driver {
    client: reqwest::Client,
    base_url: String,
}

impl Driver {
    /// A driver for the sluice at `base_url` (`http://ADDR`).
    pub fn new(base_url: &str) -> Driver {
        Driver {
            client: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    fn documents_url(&self) -> String {
        format!("{}/v1/collections/{COLLECTION}/documents", self.base_url)
    }

    fn search_url(&self) -> String {
        format!("{}/v1/collections/{COLLECTION}/search", self.base_url)
    }

    /// Creates (or updates) the benchmark collection from a schema document.
    pub async fn put_schema(&self, schema_json: Vec<u8>) -> Result<(), BenchError> {
        let response = self
            .client
            .put(format!("{}/v1/collections/{COLLECTION}", self.base_url))
            .header("content-type", "application/json")
            .body(schema_json)
            .send()
            .await?;
        expect_success(response, "PUT schema").await.map(drop)
    }

    /// POSTs one NDJSON body; retries 429/503. Returns (accepted, retries).
    pub async fn post(&self, body: Bytes, searchable: bool) -> Result<(usize, usize), BenchError> {
        let wait = if searchable { "searchable" } else { "durable" };
        let mut retries = 0;
        loop {
            let response = self
                .client
                .post(self.documents_url())
                .query(&[("wait", wait)])
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let pause = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_millis(100), Duration::from_secs)
                    .min(MAX_RETRY_PAUSE);
                retries += 1;
                tokio::time::sleep(pause).await;
                continue;
            }
            let answer = expect_success(response, "POST documents").await?;
            let rejected = answer["rejected"].as_u64().unwrap_or(0);
            if rejected > 0 {
                return Err(BenchError::Sluice(format!(
                    "{rejected} lines rejected; first error: {}",
                    answer["errors"][0]
                )));
            }
            let accepted = answer["accepted"].as_u64().unwrap_or(0) as usize;
            return Ok((accepted, retries));
        }
    }

    /// Ingests the whole corpus (see the module documentation).
    pub async fn ingest(
        &self,
        corpus: &Corpus,
        request_docs: usize,
        producers: usize,
    ) -> Result<IngestRun, BenchError> {
        let request_docs = request_docs.max(1);
        let chunks: Vec<(usize, usize)> = (0..corpus.len())
            .step_by(request_docs)
            .map(|start| (start, (start + request_docs).min(corpus.len())))
            .collect();
        let Some((&last, rest)) = chunks.split_last() else {
            return Err(BenchError::Sluice("empty corpus".to_owned()));
        };
        let rest: Arc<Vec<Bytes>> =
            Arc::new(rest.iter().map(|&(s, e)| corpus.ndjson(s..e)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..producers.max(1) {
            let (driver, rest, next) = (self.clone(), rest.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let (mut accepted, mut retries) = (0, 0);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = rest.get(index) else { break };
                    let (a, r) = driver.post(body.clone(), false).await?;
                    accepted += a;
                    retries += r;
                }
                Ok::<_, BenchError>((accepted, retries))
            }));
        }
        let (mut accepted, mut retries) = (0, 0);
        for task in tasks {
            let (a, r) = task
                .await
                .map_err(|e| BenchError::Sluice(format!("producer task: {e}")))??;
            accepted += a;
            retries += r;
        }
        let (a, r) = self.post(corpus.ndjson(last.0..last.1), true).await?;
        let elapsed = started.elapsed();
        accepted += a;
        retries += r;
        if accepted != corpus.len() {
            return Err(BenchError::Sluice(format!(
                "{accepted} of {} documents accepted",
                corpus.len()
            )));
        }
        Ok(IngestRun {
            docs: corpus.len(),
            requests: chunks.len(),
            retries,
            elapsed,
        })
    }

    /// The `total` of a search (`q` absent: every document).
    pub async fn search_total(&self, q: Option<&str>) -> Result<u64, BenchError> {
        let answer = self.search(q).await?;
        answer["total"]
            .as_u64()
            .ok_or_else(|| BenchError::Sluice(format!("search answer without total: {answer}")))
    }

    async fn search(&self, q: Option<&str>) -> Result<Value, BenchError> {
        let mut request = self.client.get(self.search_url());
        if let Some(q) = q {
            request = request.query(&[("q", q)]);
        }
        expect_success(request.send().await?, "search").await
    }

    /// Cold: each of `queries` once; warm: the first `warm_queries` of them (already
    /// cached by the cold pass) repeated `warm_rounds` times.
    pub async fn search_latency(
        &self,
        queries: &[String],
        warm_queries: usize,
        warm_rounds: usize,
    ) -> Result<SearchLatency, BenchError> {
        let mut cold = new_histogram();
        for q in queries {
            let started = Instant::now();
            self.search(Some(q)).await?;
            record(&mut cold, started.elapsed());
        }
        let mut warm = new_histogram();
        for _ in 0..warm_rounds {
            for q in queries.iter().take(warm_queries) {
                let started = Instant::now();
                self.search(Some(q)).await?;
                record(&mut warm, started.elapsed());
            }
        }
        Ok(SearchLatency {
            cold: Percentiles::of(&cold),
            warm: Percentiles::of(&warm),
        })
    }

    /// Freshness while ingesting new documents at `docs_per_sec` for `duration`, in
    /// requests of `request_docs` (see the module documentation).
    pub async fn freshness(
        &self,
        corpus: &Corpus,
        docs_per_sec: f64,
        duration: Duration,
        request_docs: usize,
    ) -> Result<Freshness, BenchError> {
        let request_docs = request_docs.clamp(1, corpus.len().max(1));
        let interval = Duration::from_secs_f64(request_docs as f64 / docs_per_sec.max(1.0));
        let permits = Arc::new(Semaphore::new(FRESHNESS_IN_FLIGHT));
        let started = Instant::now();
        let mut tasks = Vec::new();
        let mut sent_docs = 0;
        let mut request = 0usize;
        while started.elapsed() < duration {
            let due = started + interval.mul_f64(request as f64);
            tokio::time::sleep_until(due.into()).await;
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| BenchError::Sluice(format!("freshness permits: {e}")))?;
            let body = fresh_request(corpus, request, request_docs);
            sent_docs += request_docs + 1;
            let driver = self.clone();
            let marker = request;
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let (_, retries) = driver.post(body, false).await?;
                let acked = Instant::now();
                let query = format!("title:freshmarker{marker}");
                loop {
                    if driver.search_total(Some(&query)).await? >= 1 {
                        return Ok::<_, BenchError>((acked.elapsed(), retries));
                    }
                    if acked.elapsed() > VISIBILITY_PATIENCE {
                        return Err(BenchError::Sluice(format!(
                            "marker {marker} not visible after {VISIBILITY_PATIENCE:?}"
                        )));
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }));
            request += 1;
        }
        let mut latency = new_histogram();
        let mut retries = 0;
        for task in tasks {
            let (visible_after, r) = task
                .await
                .map_err(|e| BenchError::Sluice(format!("freshness task: {e}")))??;
            record(&mut latency, visible_after);
            retries += r;
        }
        Ok(Freshness {
            target_docs_per_sec: docs_per_sec,
            achieved_docs_per_sec: sent_docs as f64 / started.elapsed().as_secs_f64(),
            latency: Percentiles::of(&latency),
            retries,
        })
    }
}

/// Request `request`'s body: `docs` corpus documents under new ids (`fresh-{request}-…`,
/// so none is deduplicated away), then marker document `freshmarker{request}`.
pub fn fresh_request(corpus: &Corpus, request: usize, docs: usize) -> Bytes {
    const ID_PREFIX: &[u8] = b"{\"id\":\"doc-";
    let mut body = BytesMut::with_capacity(docs * 1100 + 200);
    let start = (request * docs) % corpus.len().max(1);
    for offset in 0..docs {
        let line = corpus.line((start + offset) % corpus.len());
        match line.strip_prefix(ID_PREFIX) {
            Some(rest) => {
                body.extend_from_slice(format!("{{\"id\":\"fresh-{request}-").as_bytes());
                body.extend_from_slice(rest);
            }
            None => body.extend_from_slice(line),
        }
        body.extend_from_slice(b"\n");
    }
    body.extend_from_slice(
        format!(
            "{{\"id\":\"marker-{request}\",\"title\":\"freshmarker{request}\",\"body\":\"marker\",\
             \"author\":\"author0000\",\"ts\":\"2026-01-01T00:00:00Z\"}}\n"
        )
        .as_bytes(),
    );
    body.freeze()
}

async fn expect_success(response: reqwest::Response, what: &str) -> Result<Value, BenchError> {
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        return Err(BenchError::Sluice(format!("{what}: {status}: {text}")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| BenchError::Sluice(format!("{what}: answer is not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_requests_rename_ids_and_end_with_a_marker() {
        let corpus = Corpus::from_bytes(Bytes::from_static(
            b"{\"id\":\"doc-0\",\"title\":\"a\"}\n{\"id\":\"doc-1\",\"title\":\"b\"}\n",
        ));
        let body = fresh_request(&corpus, 3, 3);
        let lines: Vec<Value> = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["id"], "fresh-3-1");
        assert_eq!(lines[1]["id"], "fresh-3-0");
        assert_eq!(lines[3]["title"], "freshmarker3");
    }

    #[test]
    fn percentiles_come_from_the_samples() {
        let mut histogram = new_histogram();
        for ms in 1..=100 {
            record(&mut histogram, Duration::from_millis(ms));
        }
        let p = Percentiles::of(&histogram);
        assert_eq!(p.count, 100);
        assert!(p.p50 >= Duration::from_millis(49) && p.p50 <= Duration::from_millis(51));
        assert!(p.p99 >= Duration::from_millis(98));
    }
}
