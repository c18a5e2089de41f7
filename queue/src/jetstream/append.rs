//! Pipelined publishing: many publish acknowledgements in flight, awaited in order.
//!
//! Every message is published with `Nats-Msg-Id` (when it has one), so a retried
//! append is stored once: JetStream answers a duplicate with the original sequence.
//!
//! Concurrency model: all appends share one window of `max_in_flight_publishes`
//! permits; a permit is held from the publish until its acknowledgement was read. An
//! append that finds the window full first awaits its own oldest acknowledgement (which
//! frees a permit) and waits on the window only when it holds none: an append never
//! waits for a permit while holding one, so appends cannot starve each other into a
//! deadlock. Acknowledgements are read in publish order, so sequences come back in
//! message order.
//!
//! Failure: the first failed publish or acknowledgement ends the append with an error;
//! the messages already published may or may not be stored, which is why callers retry
//! with the same msg ids.

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use sluice_core::log::{LogError, OutgoingMessage};
use sluice_core::metrics::{LOG_APPENDED_MESSAGES_TOTAL, LOG_APPEND_DURATION_SECONDS};
use sluice_core::subjects::{self, StreamKind};
use sluice_core::Seq;
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError};

use super::errors::publish_error;
use super::JetStreamLog;

/// A publish whose acknowledgement is still to be read, with its window permit.
struct InFlight {
    ack: PublishAckFuture,
    _permit: OwnedSemaphorePermit,
}

/// Publishes `messages` to `stream` and returns their sequences once all are acked.
pub(crate) async fn append(
    log: &JetStreamLog,
    stream: StreamKind,
    messages: Vec<OutgoingMessage>,
) -> Result<Vec<Seq>, LogError> {
    if let Some(stray) = messages
        .iter()
        .find(|message| !subjects::matches(stream.all_subjects(), &message.subject))
    {
        // JetStream routes by subject: this message would land in another stream.
        return Err(LogError::InvalidRequest(format!(
            "subject {:?} does not belong to stream {}",
            stray.subject,
            stream.name()
        )));
    }
    let started = Instant::now();
    let count = messages.len();
    let mut seqs = Vec::with_capacity(count);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    for message in messages {
        let permit = loop {
            match log.publish_permits.clone().try_acquire_owned() {
                Ok(permit) => break permit,
                Err(TryAcquireError::Closed) => return Err(LogError::Closed),
                Err(TryAcquireError::NoPermits) => match in_flight.pop_front() {
                    Some(oldest) => seqs.push(acknowledged(stream, oldest).await?),
                    None => {
                        break log
                            .publish_permits
                            .clone()
                            .acquire_owned()
                            .await
                            .map_err(|_| LogError::Closed)?
                    }
                },
            }
        };
        let mut publish = PublishMessage::build().payload(message.payload);
        if !message.msg_id.is_empty() {
            publish = publish.message_id(&message.msg_id);
        }
        let ack = log
            .context
            .send_publish(message.subject, publish)
            .await
            .map_err(|error| publish_error(&error))?;
        in_flight.push_back(InFlight {
            ack,
            _permit: permit,
        });
    }
    while let Some(oldest) = in_flight.pop_front() {
        seqs.push(acknowledged(stream, oldest).await?);
    }
    metrics::counter!(LOG_APPENDED_MESSAGES_TOTAL, "stream" => stream.name())
        .increment(count as u64);
    metrics::histogram!(LOG_APPEND_DURATION_SECONDS, "stream" => stream.name())
        .record(started.elapsed().as_secs_f64());
    Ok(seqs)
}

/// Awaits one acknowledgement; its permit is released when this returns.
async fn acknowledged(stream: StreamKind, in_flight: InFlight) -> Result<Seq, LogError> {
    let ack = in_flight.ack.await.map_err(|error| publish_error(&error))?;
    if ack.stream != stream.name() {
        return Err(LogError::Storage(format!(
            "stored in stream {} instead of {}: another stream claims the subject",
            ack.stream,
            stream.name()
        )));
    }
    Ok(Seq(ack.sequence))
}
