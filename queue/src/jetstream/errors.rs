//! Classification of async-nats failures into [`LogError`], done once, here.
//!
//! The rule: anything that a later retry may cure — no responders (the server is
//! restarting or JetStream is not ready yet), timeouts, a broken or closed connection,
//! a JetStream API error with a 5xx code — is transient (`Unavailable` / `Timeout`);
//! a JetStream API error with a 4xx code is the server refusing the request as asked
//! and is reported as permanent (`Storage`). Every message keeps the driver's error
//! kind and text, so the cause can be read from the log line alone.

use std::fmt::Display;

use async_nats::jetstream::context::{PublishErrorKind, RequestError, RequestErrorKind};
use async_nats::jetstream::ErrorCode;
use sluice_core::log::LogError;

/// A failed JetStream API call: the server answered with an API error (kept whole, so
/// callers can match its code), or the call failed otherwise (already classified).
#[derive(Debug)]
pub(crate) enum ApiFailure {
    /// The server answered with an error.
    JetStream(async_nats::jetstream::Error),
    /// No usable answer: no responders, timeout, connection.
    Other(LogError),
}

impl ApiFailure {
    /// The server's error code, when the server answered with an error.
    pub(crate) fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ApiFailure::JetStream(error) => Some(error.error_code()),
            ApiFailure::Other(_) => None,
        }
    }

    /// Classifies the failure of the operation `what`.
    pub(crate) fn into_log_error(self, what: &str) -> LogError {
        match self {
            ApiFailure::JetStream(error) => jetstream_error(what, &error),
            ApiFailure::Other(error) => error,
        }
    }
}

/// Classifies a JetStream API request that got no usable answer.
pub(crate) fn request_error(what: &str, error: &RequestError) -> LogError {
    match error.kind() {
        RequestErrorKind::TimedOut => LogError::Timeout,
        RequestErrorKind::NoResponders => LogError::Unavailable(format!(
            "{what}: no responders (JetStream not ready): {error}"
        )),
        RequestErrorKind::Other => LogError::Unavailable(format!("{what}: {error}")),
    }
}

/// Classifies an error answer of the JetStream API by its HTTP-like code.
pub(crate) fn jetstream_error(what: &str, error: &async_nats::jetstream::Error) -> LogError {
    if (400..500).contains(&error.code()) {
        LogError::Storage(format!("{what}: refused by JetStream: {error}"))
    } else {
        LogError::Unavailable(format!("{what}: JetStream error: {error}"))
    }
}

/// Classifies a failed publish or publish acknowledgement.
pub(crate) fn publish_error(error: &async_nats::jetstream::context::PublishError) -> LogError {
    match error.kind() {
        PublishErrorKind::TimedOut => LogError::Timeout,
        PublishErrorKind::StreamNotFound => LogError::Unavailable(format!(
            "publish: no responders (stream not ready or server restarting): {error}"
        )),
        PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            LogError::Unavailable(format!("publish: {error}"))
        }
        _ => {
            // An API error answer travels as the source of `Other`.
            let api_error = std::error::Error::source(error)
                .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>());
            match api_error {
                Some(api_error) => jetstream_error("publish", api_error),
                None => LogError::Unavailable(format!("publish: {error}")),
            }
        }
    }
}

/// Classifies a failed core-NATS request (acks, naks), keeping the driver's kind.
pub(crate) fn core_request_error(what: &str, error: &async_nats::RequestError) -> LogError {
    match error.kind() {
        async_nats::RequestErrorKind::TimedOut => LogError::Timeout,
        async_nats::RequestErrorKind::NoResponders => LogError::Unavailable(format!(
            "{what}: no responders (consumer gone or server restarting): {error}"
        )),
        async_nats::RequestErrorKind::Other => LogError::Unavailable(format!("{what}: {error}")),
    }
}

/// Classifies a failure to hand something to the connection (publish, subscribe).
pub(crate) fn connection_error(what: &str, error: impl Display) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}
