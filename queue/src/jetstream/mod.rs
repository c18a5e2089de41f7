//! The NATS JetStream `Log` adapter: the distributed path's durable log.
//!
//! Layout:
//! - [`streams`]: the DOCS, EVENTS and DLQ streams, their retention and idempotent set-up.
//! - [`append`]: pipelined publishing with `Nats-Msg-Id`, bounded in flight.
//! - [`consumer`]: handles on shared durable pull consumers (fetch, double ack, nak).
//! - [`errors`]: classification of driver failures into [`LogError`].
//!
//! Concurrency model: one async-nats connection per [`JetStreamLog`], shared by every
//! append and every consumer handle; the driver reconnects by itself (forever, with a
//! short capped delay) and re-subscribes. Nothing here spawns tasks or threads. Appends
//! from any number of tasks share one publish window of `max_in_flight_publishes`.
//!
//! Invariants:
//! - `append` returns `Ok` only when JetStream acknowledged every message (a duplicate
//!   acknowledgement returns the original sequence); anything else is an error, transient
//!   when a retry may cure it, so a retried append with the same msg ids is safe.
//! - Consumers are durable, explicit-ack pull consumers: every handle with the same name
//!   (in any process) shares one position, each message goes to one handle, and an
//!   unacked message comes back after `ack_wait`. An `ack` that returns was recorded by
//!   the server (double ack).
//! - The log talks to JetStream only through APIs nats-server 2.9 already has (one
//!   `filter_subject` per consumer, no 2.10+ stream or consumer fields).

mod append;
mod consumer;
mod errors;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::RawMessage;
use async_nats::jetstream::{Context, ContextBuilder, ErrorCode};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sluice_core::log::{Consumer, ConsumerConfig, Log, LogError, OutgoingMessage, StoredMessage};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::sync::Semaphore;

use self::consumer::JetStreamConsumer;
use self::errors::{request_error, ApiFailure};

/// How to reach JetStream and how to shape the streams.
#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`); `tls://` for TLS.
    pub url: String,
    /// Replicas of every stream and consumer (1 on a single server, 3 in a cluster).
    pub replicas: usize,
    /// How long EVENTS keeps changes for replay.
    pub events_max_age: Duration,
    /// Most bytes EVENTS keeps (-1: no limit); the oldest changes go first.
    pub events_max_bytes: i64,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a retried publish.
    pub duplicate_window: Duration,
    /// Longest wait for a publish acknowledgement or a JetStream API answer.
    pub publish_timeout: Duration,
    /// Most publish acknowledgements awaited at once, across all appends.
    pub max_in_flight_publishes: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 60 * 60),
            events_max_bytes: -1,
            duplicate_window: Duration::from_secs(2 * 60),
            publish_timeout: Duration::from_secs(5),
            max_in_flight_publishes: 256,
        }
    }
}

impl JetStreamConfig {
    /// The defaults, for the server(s) at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The JetStream log (see the module documentation).
pub struct JetStreamLog {
    client: async_nats::Client,
    context: Context,
    /// The shared publish window: one permit per publish acknowledgement awaited.
    publish_permits: Arc<Semaphore>,
    config: JetStreamConfig,
}

/// Longest pause between two reconnect attempts: short, so a restarted server is
/// found again quickly; every attempt is one TCP connect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

impl JetStreamLog {
    /// Connects, then creates or updates the streams (and the `workers` consumer's
    /// interest on DOCS, see [`streams`]). Fails when the server cannot be reached.
    pub async fn connect(config: JetStreamConfig) -> Result<Arc<JetStreamLog>, LogError> {
        if config.max_in_flight_publishes == 0 || config.publish_timeout.is_zero() {
            return Err(LogError::Storage(
                "invalid JetStream configuration: max_in_flight_publishes and publish_timeout \
                 must be positive"
                    .to_owned(),
            ));
        }
        let client = async_nats::ConnectOptions::new()
            .name("sluice")
            .connection_timeout(config.publish_timeout)
            .request_timeout(Some(config.publish_timeout))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(50)
                    .saturating_mul(u32::try_from(attempts).unwrap_or(u32::MAX))
                    .min(MAX_RECONNECT_DELAY)
            })
            .connect(config.url.as_str())
            .await
            .map_err(|error| {
                LogError::Unavailable(format!(
                    "connect to {}: {error} ({:?})",
                    config.url,
                    error.kind()
                ))
            })?;
        // The context's own publish window is wider than ours, so it never makes an
        // append wait: ours (see `append`) is the bound, and it cannot deadlock.
        let context = ContextBuilder::new()
            .timeout(config.publish_timeout)
            .ack_timeout(config.publish_timeout)
            .max_ack_inflight(config.max_in_flight_publishes.saturating_mul(2))
            .backpressure_on_inflight(true)
            .build(client.clone());
        streams::ensure_streams(&context, &config).await?;
        let log = JetStreamLog {
            client,
            context,
            publish_permits: Arc::new(Semaphore::new(config.max_in_flight_publishes)),
            config,
        };
        streams::ensure_workers_interest(&log).await?;
        Ok(Arc::new(log))
    }

    /// The configuration this log was connected with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    /// One JetStream API call (`$JS.API.<subject>`).
    async fn api<T: DeserializeOwned>(
        &self,
        subject: String,
        payload: &serde_json::Value,
    ) -> Result<T, ApiFailure> {
        let response: Response<T> = self
            .context
            .request(subject.clone(), payload)
            .await
            .map_err(|error| ApiFailure::Other(request_error(&subject, &error)))?;
        match response {
            Response::Ok(value) => Ok(value),
            Response::Err { error } => Err(ApiFailure::JetStream(error)),
        }
    }

    async fn stream_info(
        &self,
        stream: StreamKind,
    ) -> Result<async_nats::jetstream::stream::Info, LogError> {
        self.api(
            format!("STREAM.INFO.{}", stream.name()),
            &serde_json::json!({}),
        )
        .await
        .map_err(|failure| failure.into_log_error("stream info"))
    }

    async fn consumer_info(
        &self,
        stream: StreamKind,
        name: &str,
    ) -> Result<async_nats::jetstream::consumer::Info, ApiFailure> {
        self.api(
            format!("CONSUMER.INFO.{}.{name}", stream.name()),
            &serde_json::json!({}),
        )
        .await
    }

    /// Creates the durable consumer, or updates it when it exists.
    async fn create_consumer(
        &self,
        stream: StreamKind,
        config: pull::Config,
    ) -> Result<async_nats::jetstream::consumer::Info, ApiFailure> {
        use async_nats::jetstream::stream::ConsumerErrorKind;
        self.context
            .create_consumer_on_stream(config, stream.name())
            .await
            .map(|consumer| consumer.cached_info().clone())
            .map_err(|error| match error.kind() {
                ConsumerErrorKind::JetStream(api_error) => ApiFailure::JetStream(api_error),
                ConsumerErrorKind::TimedOut => ApiFailure::Other(LogError::Timeout),
                _ => ApiFailure::Other(LogError::Unavailable(format!(
                    "create consumer on {}: {error}",
                    stream.name()
                ))),
            })
    }
}

/// `$JS.API.STREAM.MSG.GET` answer.
#[derive(Deserialize)]
struct GetMessageResponse {
    message: RawMessage,
}

fn is_code(failure: &ApiFailure, code: ErrorCode) -> bool {
    failure.error_code() == Some(code)
}

#[async_trait]
impl Log for JetStreamLog {
    async fn append(
        &self,
        stream: StreamKind,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Seq>, LogError> {
        append::append(self, stream, messages).await
    }

    async fn consumer(
        &self,
        stream: StreamKind,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, LogError> {
        let max_ack_pending = i64::try_from(config.max_ack_pending.max(1)).unwrap_or(i64::MAX);
        let info = self
            .create_consumer(
                stream,
                streams::durable_config(
                    &config.durable_name,
                    &config.filter_subject,
                    config.ack_wait,
                    max_ack_pending,
                ),
            )
            .await
            .map_err(|failure| {
                failure.into_log_error(&format!("open consumer {:?}", config.durable_name))
            })?;
        Ok(Box::new(JetStreamConsumer::new(
            self.client.clone(),
            self.context.clone(),
            stream,
            info.name,
            self.config.publish_timeout,
        )))
    }

    async fn ack_floor(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<Option<Seq>, LogError> {
        // Stream first: if the consumer then shows nothing pending, everything up to this
        // last sequence is acked (or outside its filter). The other order could report a
        // message appended in between as acked.
        let last = self.stream_info(stream).await?.state.last_sequence;
        let info = match self.consumer_info(stream, durable_name).await {
            Ok(info) => info,
            Err(failure) if is_code(&failure, ErrorCode::CONSUMER_NOT_FOUND) => return Ok(None),
            Err(failure) => return Err(failure.into_log_error("consumer info")),
        };
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            Ok(Some(Seq(last)))
        } else {
            Ok(Some(Seq(info.ack_floor.stream_sequence)))
        }
    }

    async fn last_seq(&self, stream: StreamKind) -> Result<Seq, LogError> {
        Ok(Seq(self.stream_info(stream).await?.state.last_sequence))
    }

    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: Seq,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError> {
        // One `next_by_subj` get per message: plain stream API (no direct get, which the
        // stream would have to allow), fine for DLQ listings and bounded replays.
        let subject = format!("STREAM.MSG.GET.{}", stream.name());
        let mut next = from.0.max(1);
        let mut stored = Vec::new();
        while stored.len() < max {
            let request = serde_json::json!({ "seq": next, "next_by_subj": filter });
            let raw = match self
                .api::<GetMessageResponse>(subject.clone(), &request)
                .await
            {
                Ok(response) => response.message,
                Err(failure) if is_code(&failure, ErrorCode::NO_MESSAGE_FOUND) => break,
                Err(failure) => return Err(failure.into_log_error("read")),
            };
            let message =
                async_nats::jetstream::message::StreamMessage::try_from(raw).map_err(|error| {
                    LogError::Storage(format!("read: undecodable message: {error}"))
                })?;
            next = message.sequence.saturating_add(1);
            let appended_at_ms = message.time.unix_timestamp_nanos() / 1_000_000;
            stored.push(StoredMessage {
                seq: Seq(message.sequence),
                subject: message.subject.to_string(),
                payload: message.payload,
                appended_at_ms: u64::try_from(appended_at_ms).unwrap_or(0),
            });
        }
        Ok(stored)
    }

    async fn purge(&self, stream: StreamKind, filter: &str) -> Result<u64, LogError> {
        #[derive(Deserialize)]
        struct PurgeResponse {
            purged: u64,
        }
        let response: PurgeResponse = self
            .api(
                format!("STREAM.PURGE.{}", stream.name()),
                &serde_json::json!({ "filter": filter }),
            )
            .await
            .map_err(|failure| failure.into_log_error("purge"))?;
        Ok(response.purged)
    }

    async fn delete_message(&self, stream: StreamKind, seq: Seq) -> Result<bool, LogError> {
        #[derive(Deserialize)]
        struct DeleteResponse {
            success: bool,
        }
        let result: Result<DeleteResponse, _> = self
            .api(
                format!("STREAM.MSG.DELETE.{}", stream.name()),
                &serde_json::json!({ "seq": seq.0 }),
            )
            .await;
        match result {
            Ok(response) => Ok(response.success),
            Err(failure)
                if is_code(&failure, ErrorCode::SEQUENCE_NOT_FOUND)
                    || is_code(&failure, ErrorCode::NO_MESSAGE_FOUND) =>
            {
                Ok(false)
            }
            Err(failure) => Err(failure.into_log_error("delete message")),
        }
    }

    async fn delete_consumer(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<(), LogError> {
        #[derive(Deserialize)]
        struct DeleteResponse {
            #[allow(dead_code)]
            success: bool,
        }
        let result: Result<DeleteResponse, _> = self
            .api(
                format!("CONSUMER.DELETE.{}.{durable_name}", stream.name()),
                &serde_json::json!({}),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(failure) if is_code(&failure, ErrorCode::CONSUMER_NOT_FOUND) => {
                Err(LogError::ConsumerNotFound(durable_name.to_owned()))
            }
            Err(failure) => Err(failure.into_log_error("delete consumer")),
        }
    }
}
