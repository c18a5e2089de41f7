//! Raw JetStream: how fast a JetStream stream takes the corpus bytes, with no sluice.
//!
//! The corpus is cut into messages of `docs_per_message` documents (the same NDJSON
//! bytes) published to a file-backed stream with up to `in_flight` publish
//! acknowledgements awaited at once (a window, like sluice's appends). The timer runs
//! from the first publish to the last acknowledgement.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::ContextBuilder;

use crate::corpus::Corpus;
use crate::error::BenchError;

/// The result of one raw publish run.
#[derive(Clone, Copy, Debug)]
pub struct RawPublishRun {
    /// Documents published.
    pub docs: usize,
    /// Messages published.
    pub messages: usize,
    /// From the first publish to the last acknowledgement.
    pub elapsed: Duration,
}

impl RawPublishRun {
    /// Documents per second.
    pub fn docs_per_sec(&self) -> f64 {
        self.docs as f64 / self.elapsed.as_secs_f64()
    }
}

fn js_error(what: &str) -> impl FnOnce(String) -> BenchError + '_ {
    move |error| BenchError::JetStream(format!("{what}: {error}"))
}

/// Publishes `corpus` to a fresh `RAW` stream on the server at `url`.
pub async fn publish_corpus(
    url: &str,
    corpus: &Corpus,
    docs_per_message: usize,
    in_flight: usize,
) -> Result<RawPublishRun, BenchError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| js_error("connect")(e.to_string()))?;
    // Our own window is the bound; the context's is wider so it never throttles first.
    let context = ContextBuilder::new()
        .max_ack_inflight(in_flight.saturating_mul(2))
        .backpressure_on_inflight(true)
        .build(client);
    context
        .get_or_create_stream(StreamConfig {
            name: "RAW".to_owned(),
            subjects: vec!["raw.>".to_owned()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error("create stream RAW")(e.to_string()))?;
    let docs_per_message = docs_per_message.max(1);
    let mut pending: VecDeque<PublishAckFuture> = VecDeque::with_capacity(in_flight);
    let mut messages = 0;
    let started = Instant::now();
    let mut start = 0;
    while start < corpus.len() {
        let end = (start + docs_per_message).min(corpus.len());
        if pending.len() >= in_flight {
            if let Some(ack) = pending.pop_front() {
                ack.await
                    .map_err(|e| js_error("publish ack")(e.to_string()))?;
            }
        }
        let ack = context
            .publish(format!("raw.{}", messages % 8), corpus.ndjson(start..end))
            .await
            .map_err(|e| js_error("publish")(e.to_string()))?;
        pending.push_back(ack);
        messages += 1;
        start = end;
    }
    while let Some(ack) = pending.pop_front() {
        ack.await
            .map_err(|e| js_error("publish ack")(e.to_string()))?;
    }
    Ok(RawPublishRun {
        docs: corpus.len(),
        messages,
        elapsed: started.elapsed(),
    })
}
