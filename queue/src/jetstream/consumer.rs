//! Handles on shared durable pull consumers: fetch, double ack, nak.
//!
//! A handle is only a name: the position, the pending acks and the redelivery timers
//! live in the server, so every handle with the same durable name — in this process or
//! another — shares them, and a handle keeps working across reconnects and server
//! restarts (file-backed consumers survive them).
//!
//! Fetch speaks the pull protocol directly (`$JS.API.CONSUMER.MSG.NEXT`, the one raw API
//! request of the adapter): the driver's typed pull consumer (`fetch`, `batch`,
//! `messages`) either waits out the whole `expires` even when a message came early, or
//! keeps a request open in the background with heartbeats; neither can return as soon
//! as messages are there without leaving a request behind, which this does:
//! 1. a `no_wait` request for `max`: the server sends what is ready now, then ends the
//!    request with a status (404 nothing, 408, or 409 when `max_ack_pending` is reached);
//! 2. only when that brought nothing, a request for 1 message that expires after
//!    `max_wait`: the server holds it until a message arrives (the fetch wakes at once)
//!    or answers 408 at expiry — no polling;
//! 3. after that message, another `no_wait` request for up to `max - 1` more.
//!
//! Every request is complete when fetch returns, so no message is sent to an inbox
//! nobody reads. Only a fetch cancelled mid-way (or a server that vanished mid-request)
//! can strand a delivery; it comes back after `ack_wait`, like any unacked message.
//!
//! Acks are double acks: `+ACK` sent as a request, and the server's answer awaited, so
//! an `ack` that returns `Ok` was recorded. Acks of one call travel concurrently.
//! Everything needed to ack is in the delivery's reply subject (its [`AckToken`]).

use std::time::Duration;

use async_nats::jetstream::{AckKind, Context};
use async_nats::StatusCode;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use sluice_core::log::{AckToken, Consumer, Delivery, LogError};
use sluice_core::metrics::LOG_REDELIVERIES_TOTAL;
use sluice_core::subjects::StreamKind;
use sluice_core::Seq;
use tokio::time::Instant;

use super::errors::{connection_error, core_request_error};

/// Acks of one `ack` call awaited at once.
const ACKS_IN_FLIGHT: usize = 64;

/// One handle on a durable pull consumer.
pub(crate) struct JetStreamConsumer {
    client: async_nats::Client,
    context: Context,
    stream: StreamKind,
    name: String,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`
    next_subject: String,
    /// How long past a request's own expiry an answer may take before it is given up.
    grace: Duration,
}

/// How a pull request waits.
#[derive(Clone, Copy)]
enum Pull {
    /// Whatever is ready now, up to `batch`.
    Ready { batch: usize },
    /// Up to `batch`, waiting at most `expires` for them.
    Waiting { batch: usize, expires: Duration },
}

impl JetStreamConsumer {
    pub(crate) fn new(
        client: async_nats::Client,
        context: Context,
        stream: StreamKind,
        name: String,
        grace: Duration,
    ) -> Self {
        let next_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{name}", stream.name());
        Self {
            client,
            context,
            stream,
            name,
            next_subject,
            grace,
        }
    }

    /// Sends one pull request and collects what it brings until the server ends it.
    async fn pull(&self, pull: Pull) -> Result<Vec<Delivery>, LogError> {
        let (batch, request, expires) = match pull {
            Pull::Ready { batch } => (
                batch,
                serde_json::json!({ "batch": batch, "no_wait": true }),
                Duration::ZERO,
            ),
            Pull::Waiting { batch, expires } => (
                batch,
                serde_json::json!({
                    "batch": batch,
                    "expires": u64::try_from(expires.as_nanos()).unwrap_or(u64::MAX),
                }),
                expires,
            ),
        };
        let request_expiry = Instant::now() + expires;
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| connection_error("fetch: subscribe", error))?;
        self.client
            .publish_with_reply(
                self.next_subject.clone(),
                inbox,
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|error| connection_error("fetch: pull request", error))?;
        // The server ends every request itself; this only guards against one that went
        // away with the request.
        let give_up = request_expiry + self.grace;
        let mut deliveries = Vec::new();
        while deliveries.len() < batch {
            let message = match tokio::time::timeout_at(give_up, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) | Err(_) => break,
            };
            match message.status {
                None | Some(StatusCode::OK) => deliveries.push(self.delivery(message)?),
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // Nothing (more) ready, or the request expired.
                Some(StatusCode::NOT_FOUND) | Some(StatusCode::TIMEOUT) => break,
                Some(StatusCode::REQUEST_TERMINATED) => {
                    let reason = message.description.unwrap_or_default();
                    if reason.to_ascii_lowercase().contains("consumer deleted") {
                        return Err(LogError::ConsumerNotFound(self.name.clone()));
                    }
                    // `max_ack_pending` reached (or a leadership change): a waiting
                    // request ended early still honours its wait, so callers that loop
                    // on fetch do not spin while the consumer is saturated.
                    if matches!(pull, Pull::Waiting { .. }) && deliveries.is_empty() {
                        tokio::time::sleep_until(request_expiry).await;
                    }
                    break;
                }
                Some(StatusCode::NO_RESPONDERS) => {
                    return Err(LogError::Unavailable(format!(
                        "fetch from {}: no responders (consumer missing or JetStream not ready)",
                        self.name
                    )))
                }
                // Another 4xx: the server refused the pull request as made (e.g. a
                // batch over the consumer's limit). Anything else: it could not serve.
                Some(status) if (400..500).contains(&status.as_u16()) => {
                    return Err(LogError::Rejected {
                        status: status.as_u16(),
                        code: 0,
                        description: format!(
                            "fetch from {}: {}",
                            self.name,
                            message.description.unwrap_or_default()
                        ),
                    })
                }
                Some(status) => {
                    return Err(LogError::Unavailable(format!(
                        "fetch from {}: status {status} {}",
                        self.name,
                        message.description.unwrap_or_default()
                    )))
                }
            }
        }
        // Dropping the subscription unsubscribes: the request is complete by now.
        drop(answers);
        Ok(deliveries)
    }

    fn delivery(&self, message: async_nats::Message) -> Result<Delivery, LogError> {
        let message = async_nats::jetstream::Message {
            message,
            context: self.context.clone(),
        };
        let info = message.info().map_err(|error| {
            LogError::Unavailable(format!("fetch: not a JetStream delivery: {error}"))
        })?;
        let seq = Seq(info.stream_sequence);
        let delivery_count = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
        let Some(reply) = message.message.reply.as_ref() else {
            return Err(LogError::Unavailable(
                "fetch: a delivery without a reply subject".to_owned(),
            ));
        };
        if delivery_count > 1 {
            metrics::counter!(LOG_REDELIVERIES_TOTAL, "stream" => self.stream.name()).increment(1);
        }
        Ok(Delivery {
            seq,
            subject: message.message.subject.to_string(),
            ack_token: AckToken(reply.to_string()),
            payload: message.message.payload.clone(),
            delivery_count,
        })
    }

    /// Sends `kind` for one delivery and waits for the server's confirmation.
    async fn acknowledge(
        &self,
        token: &AckToken,
        kind: AckKind,
        what: &str,
    ) -> Result<(), LogError> {
        self.client
            .request(token.0.clone(), Bytes::from(kind))
            .await
            .map(|_| ())
            .map_err(|error| core_request_error(what, &error))
    }
}

#[async_trait]
impl Consumer for JetStreamConsumer {
    async fn fetch(&self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let ready = self.pull(Pull::Ready { batch: max }).await?;
        if !ready.is_empty() || max_wait.is_zero() {
            return Ok(ready);
        }
        let mut first = self
            .pull(Pull::Waiting {
                batch: 1,
                expires: max_wait,
            })
            .await?;
        if first.is_empty() || max == 1 {
            return Ok(first);
        }
        first.extend(self.pull(Pull::Ready { batch: max - 1 }).await?);
        Ok(first)
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), LogError> {
        futures_util::stream::iter(deliveries.iter().map(Ok))
            .try_for_each_concurrent(ACKS_IN_FLIGHT, |delivery| {
                self.acknowledge(&delivery.ack_token, AckKind::Ack, "ack")
            })
            .await
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<(), LogError> {
        let kind = AckKind::Nak((!delay.is_zero()).then_some(delay));
        self.acknowledge(&delivery.ack_token, kind, "nak").await
    }

    async fn in_progress(&self, deliveries: &[Delivery]) -> Result<(), LogError> {
        futures_util::stream::iter(deliveries.iter().map(Ok))
            .try_for_each_concurrent(ACKS_IN_FLIGHT, |delivery| {
                self.acknowledge(&delivery.ack_token, AckKind::Progress, "in progress")
            })
            .await
    }
}
