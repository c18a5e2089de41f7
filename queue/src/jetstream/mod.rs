//! The NATS JetStream `Log` adapter: the distributed path's durable log.
//!
//! Layout:
//! - [`streams`]: the DOCS, EVENTS and DLQ streams, their retention and idempotent set-up.
//! - [`append`]: pipelined publishing with `Nats-Msg-Id`, bounded in flight.
//! - [`consumer`]: handles on shared durable pull consumers (fetch, double ack, nak).
//! - [`errors`]: driver failures named as [`LogError`] variants, by kind and API code.
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
//!   `filter_subject` per consumer, no 2.10+ stream or consumer fields), through the
//!   driver's typed JetStream methods; the one hand-written `$JS.API` request left is
//!   the pull request of [`consumer`], which says why.

mod append;
mod consumer;
mod errors;
mod streams;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{Context, ContextBuilder};
use async_trait::async_trait;
use sluice_core::log::{Consumer, ConsumerConfig, Log, LogError, OutgoingMessage, StoredMessage};
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::sync::Semaphore;

use self::consumer::JetStreamConsumer;
use self::errors::{api_error, driver_error, request_error};

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
            return Err(LogError::InvalidRequest(
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

    /// A handle on `stream` for the driver's typed stream methods; getting it makes no
    /// request (it only checks the name, which is one of ours).
    async fn stream(&self, stream: StreamKind) -> Result<Stream<()>, LogError> {
        self.context
            .get_stream_no_info(stream.name())
            .await
            .map_err(|error| LogError::InvalidRequest(format!("stream {}: {error}", stream.name())))
    }

    async fn stream_info(
        &self,
        stream: StreamKind,
    ) -> Result<async_nats::jetstream::stream::Info, LogError> {
        self.stream(stream)
            .await?
            .get_info()
            .await
            .map_err(|error| request_error(&format!("stream info {}", stream.name()), &error))
    }

    async fn consumer_info(
        &self,
        stream: StreamKind,
        name: &str,
    ) -> Result<async_nats::jetstream::consumer::Info, LogError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let what = format!("consumer info {name:?} on {}", stream.name());
        self.stream(stream)
            .await?
            .consumer_info(name)
            .await
            .map_err(|error| match error.kind() {
                Kind::TimedOut => LogError::Timeout,
                Kind::NotFound => LogError::ConsumerNotFound(name.to_owned()),
                Kind::StreamNotFound => LogError::StreamNotFound(what),
                Kind::Offline | Kind::NoResponders => {
                    LogError::Unavailable(format!("{what}: {error}"))
                }
                Kind::InvalidName => LogError::InvalidRequest(format!("{what}: {error}")),
                Kind::JetStream(api) => api_error(&what, &api),
                _ => driver_error(&what, &error),
            })
    }

    /// Creates the durable consumer, or updates it when it exists.
    async fn create_consumer(
        &self,
        stream: StreamKind,
        config: pull::Config,
    ) -> Result<async_nats::jetstream::consumer::Info, LogError> {
        use async_nats::jetstream::stream::ConsumerErrorKind as Kind;
        let what = format!("create consumer on {}", stream.name());
        self.context
            .create_consumer_on_stream(config, stream.name())
            .await
            .map(|consumer| consumer.cached_info().clone())
            .map_err(|error| match error.kind() {
                Kind::TimedOut => LogError::Timeout,
                Kind::InvalidName | Kind::InvalidConsumerType => {
                    LogError::InvalidRequest(format!("{what}: {error}"))
                }
                Kind::JetStream(api) => api_error(&what, &api),
                _ => driver_error(&what, &error),
            })
    }
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
            .await?;
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
            Err(LogError::ConsumerNotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
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

    /// The `max_payload` the server announced on connecting (0, never sent by a real
    /// server, reads as no limit).
    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.client.server_info().max_payload).filter(|&max| max > 0)
    }

    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: Seq,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
        // One `next_by_subj` get per message: plain stream API (no direct get, which the
        // stream would have to allow), fine for DLQ listings and bounded replays.
        let handle = self.stream(stream).await?;
        let mut next = from.0.max(1);
        let mut stored = Vec::new();
        while stored.len() < max {
            let result = handle
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(filter)
                .send()
                .await;
            let message = match result {
                Ok(message) => message,
                Err(error) => match error.kind() {
                    Kind::NoMessageFound => break,
                    Kind::InvalidSubject => {
                        return Err(LogError::InvalidRequest(format!(
                            "read {filter:?}: {error}"
                        )))
                    }
                    Kind::JetStream(api) => return Err(api_error("read", &api)),
                    // `Other` is a failed request (its kind is in the source) or a
                    // message that does not decode.
                    _ => {
                        return Err(match error.source() {
                            Some(source)
                                if source
                                    .is::<async_nats::jetstream::message::StreamMessageError>() =>
                            {
                                LogError::Corrupt(format!("read: undecodable message: {error}"))
                            }
                            _ => driver_error("read", &error),
                        })
                    }
                },
            };
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
        use async_nats::jetstream::stream::PurgeErrorKind as Kind;
        let response = self
            .stream(stream)
            .await?
            .purge()
            .filter(filter)
            .await
            .map_err(|error| match error.kind() {
                Kind::TimedOut => LogError::Timeout,
                Kind::JetStream(api) => api_error("purge", &api),
                Kind::Request => driver_error("purge", &error),
            })?;
        Ok(response.purged)
    }

    async fn delete_message(&self, stream: StreamKind, seq: Seq) -> Result<bool, LogError> {
        use async_nats::jetstream::stream::DeleteMessageErrorKind as Kind;
        let result = self.stream(stream).await?.delete_message(seq.0).await;
        let error = match result {
            Ok(deleted) => return Ok(deleted),
            Err(error) => match error.kind() {
                Kind::TimedOut => LogError::Timeout,
                Kind::JetStream(api) => api_error("delete message", &api),
                Kind::Request => driver_error("delete message", &error),
            },
        };
        match error {
            LogError::MessageNotFound(_) => Ok(false),
            error => Err(error),
        }
    }

    async fn delete_consumer(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<(), LogError> {
        use async_nats::jetstream::stream::ConsumerErrorKind as Kind;
        let what = format!("delete consumer {durable_name:?}");
        let result = self
            .stream(stream)
            .await?
            .delete_consumer(durable_name)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => Err(match error.kind() {
                Kind::TimedOut => LogError::Timeout,
                Kind::InvalidName => LogError::InvalidRequest(format!("{what}: {error}")),
                Kind::JetStream(api) => match api_error(&what, &api) {
                    LogError::ConsumerNotFound(_) => {
                        LogError::ConsumerNotFound(durable_name.to_owned())
                    }
                    other => other,
                },
                _ => driver_error(&what, &error),
            }),
        }
    }
}
