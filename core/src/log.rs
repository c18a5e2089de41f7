//! The durable log port: append, shared durable consumers, acks and redelivery.
//!
//! Modeled on JetStream so that both adapters (the embedded log and JetStream) give the
//! same guarantees, checked by one conformance suite:
//! - [`Log::append`] returns only once every message is durable, with the sequences the
//!   log assigned, in order. Sequences grow per stream, across all its subjects. A
//!   message whose `msg_id` was already appended recently is not stored twice; its
//!   original sequence is returned.
//! - A durable consumer is shared: every [`Consumer`] handle opened with the same
//!   `durable_name` (in this process or another) draws from the same position, and each
//!   message goes to one of them. A message not acked within `ack_wait` (or nak'ed, or
//!   left behind by a crash) is delivered again, with a higher `delivery_count`.
//! - Consumer positions are durable; acked messages are eventually truncated.
//! - [`Log::ack_floor`] tells how far a consumer has acked without gaps, which is how
//!   ingest waits for "searchable" and reads wait for "read-your-writes".

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::ids::Seq;
use crate::subjects::StreamKind;

/// A failure of the log: each variant names what happened, and [`LogError::kind`] says
/// what that means for retries and breakers (decided once, in [`crate::resilience`]).
/// Adapters pick the variant from the driver's own error kind or API error code, never
/// from its text; the text is kept for the log line.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The log cannot be reached or cannot serve for now (no responders, connection
    /// lost, no cluster quorum, an open breaker); retry later. Unavailable.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// The operation did not complete in time; it may or may not have taken effect.
    /// Transient.
    #[error("log operation timed out")]
    Timeout,
    /// The server failed the request (a 5xx answer other than unavailability); the next
    /// attempt may succeed. Transient.
    #[error("log server error {status} (code {code}): {description}")]
    Server {
        /// The answer's HTTP-like status.
        status: u16,
        /// The server's own error code (JetStream's `err_code`).
        code: u64,
        /// The server's description.
        description: String,
    },
    /// The log's storage failed (disk full, I/O error) or is set up against what this
    /// log needs (another stream claims its subjects). Unavailable.
    #[error("log storage failure: {0}")]
    Storage(String),
    /// The stream does not exist (JetStream 10059). Rejected.
    #[error("stream not found: {0}")]
    StreamNotFound(String),
    /// The request named a last sequence the stream is not at (JetStream 10071).
    /// Rejected.
    #[error("wrong last sequence: {0}")]
    WrongLastSequence(String),
    /// No message at (or after) the requested sequence (JetStream 10037, 10043).
    /// Rejected.
    #[error("no such message: {0}")]
    MessageNotFound(String),
    /// The server answered and refused the request as made (any other 4xx answer);
    /// retrying it unchanged fails the same way. Rejected.
    #[error("log refused the request ({status}, code {code}): {description}")]
    Rejected {
        /// The answer's HTTP-like status.
        status: u16,
        /// The server's own error code (JetStream's `err_code`; 0 when it gave none).
        code: u64,
        /// The server's description.
        description: String,
    },
    /// Stored bytes could not be decoded. Rejected.
    #[error("corrupt log record: {0}")]
    Corrupt(String),
    /// The request is malformed (JetStream 10003 bad request, 10025 invalid JSON) or was
    /// refused before it was sent (a subject outside the stream, a bad setting). Caller.
    #[error("invalid log request: {0}")]
    InvalidRequest(String),
    /// No such durable consumer (JetStream 10014). Caller.
    #[error("no consumer named {0:?}")]
    ConsumerNotFound(String),
    /// The log is shutting down. Caller.
    #[error("log is closed")]
    Closed,
}

impl LogError {
    /// What kind of failure this is (see [`crate::resilience::ErrorKind`]).
    pub fn kind(&self) -> crate::resilience::ErrorKind {
        crate::resilience::Classify::kind(self)
    }

    /// Whether retrying the same operation later may succeed (see
    /// [`crate::resilience::Classify`], where this is decided).
    pub fn is_transient(&self) -> bool {
        crate::resilience::Classify::is_transient(self)
    }
}

/// A message to append.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    /// Its subject, e.g. `sluice.docs.books.3`.
    pub subject: String,
    /// Deduplication id (`Nats-Msg-Id`): a retried append with the same id is a no-op.
    pub msg_id: String,
    /// The encoded body.
    pub payload: Bytes,
}

/// A message as stored, read back by sequence (DLQ listing, replay).
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// Its sequence in the stream.
    pub seq: Seq,
    /// Its subject.
    pub subject: String,
    /// Its body.
    pub payload: Bytes,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub appended_at_ms: u64,
}

/// How to open a durable consumer.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Shared name: every handle with this name draws from one position.
    pub durable_name: String,
    /// NATS-style subject filter (`*` one token, `>` the rest).
    pub filter_subject: String,
    /// How long a delivered message may stay unacked before it is delivered again.
    pub ack_wait: Duration,
    /// Most messages delivered and not yet acked, across all handles (backpressure).
    pub max_ack_pending: usize,
}

/// Identifies a delivery to the adapter that made it (a reply subject for JetStream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckToken(pub String);

/// A message handed to a consumer.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Its sequence in the stream.
    pub seq: Seq,
    /// Its subject.
    pub subject: String,
    /// Its body.
    pub payload: Bytes,
    /// 1 on the first delivery, then 2, 3, ...
    pub delivery_count: u32,
    /// Adapter-specific handle for [`Consumer::ack`] and [`Consumer::nak`].
    pub ack_token: AckToken,
}

/// The durable log.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends `messages` to `stream`; returns their sequences once all are durable.
    async fn append(
        &self,
        stream: StreamKind,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Seq>, LogError>;

    /// Opens a handle on the durable consumer `config.durable_name`, creating it (from
    /// the start of the stream) when it does not exist.
    async fn consumer(
        &self,
        stream: StreamKind,
        config: ConsumerConfig,
    ) -> Result<Box<dyn Consumer>, LogError>;

    /// The highest sequence such that every message of the consumer's filter at or
    /// below it is acked; `None` when the consumer does not exist.
    async fn ack_floor(
        &self,
        stream: StreamKind,
        durable_name: &str,
    ) -> Result<Option<Seq>, LogError>;

    /// The sequence of the last message appended to `stream` (0 when none ever was).
    async fn last_seq(&self, stream: StreamKind) -> Result<Seq, LogError>;

    /// Up to `max` stored messages of `stream` matching `filter`, from `from` on.
    async fn read(
        &self,
        stream: StreamKind,
        filter: &str,
        from: Seq,
        max: usize,
    ) -> Result<Vec<StoredMessage>, LogError>;

    /// Deletes stored messages of `stream` matching `filter`; returns how many.
    async fn purge(&self, stream: StreamKind, filter: &str) -> Result<u64, LogError>;

    /// Deletes one stored message; `false` when it was not there.
    async fn delete_message(&self, stream: StreamKind, seq: Seq) -> Result<bool, LogError>;

    /// Removes a durable consumer and its position.
    async fn delete_consumer(&self, stream: StreamKind, durable_name: &str)
        -> Result<(), LogError>;

    /// The largest message payload the log takes, when it has a limit of its own
    /// (JetStream: the server's `max_payload`, 1 MiB unless configured); `None` when only
    /// sluice's own limits apply (the embedded log). Ingest keeps every document under it,
    /// so that a document too large for the log is refused alone instead of failing the
    /// append of its whole request.
    fn max_message_bytes(&self) -> Option<usize> {
        None
    }
}

/// One handle on a shared durable consumer.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Up to `max` messages; waits up to `max_wait` when none is ready, returning early
    /// as soon as one is. An empty result is normal.
    async fn fetch(&self, max: usize, max_wait: Duration) -> Result<Vec<Delivery>, LogError>;

    /// Acknowledges processed messages: they are never delivered again.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<(), LogError>;

    /// Asks for a message to be delivered again after `delay`.
    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<(), LogError>;

    /// Says these messages are still being worked on: each one's ack wait starts again,
    /// so a long batch (retries, a slow store) is not delivered a second time meanwhile.
    /// Messages already acked, or no longer pending, are ignored.
    async fn in_progress(&self, deliveries: &[Delivery]) -> Result<(), LogError>;
}
