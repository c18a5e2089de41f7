//! Naming async-nats failures as [`LogError`] variants, done once, here.
//!
//! Each driver error is read by its own kind (`Error<Kind>::kind()`) and, for an answer
//! of the JetStream API, by the server's error code (`err_code`), never by its text;
//! what each variant means for retries and breakers is decided in
//! `sluice_core::resilience`. The mapping:
//! - no answer: a timeout is [`LogError::Timeout`]; no responders (the server is
//!   restarting, JetStream is not ready, or no stream listens on the subject) and a
//!   broken or closed connection are [`LogError::Unavailable`];
//! - an API error answer, by code ([`api_error`]): 10059 stream not found, 10071 wrong
//!   last sequence, 10037/10043 no such message, 10014 consumer not found, 10003 bad
//!   request and 10025 invalid JSON have variants of their own; a 503 answer or a
//!   cluster code (no quorum, no leader) is [`LogError::Unavailable`]; any other 5xx is
//!   [`LogError::Server`]; any other 4xx is [`LogError::Rejected`], with its code.
//!
//! Every message keeps the driver's text, so the cause can be read from the log line.

use std::error::Error as StdError;

use async_nats::jetstream::context::{
    PublishError, PublishErrorKind, RequestError, RequestErrorKind,
};
use async_nats::jetstream::ErrorCode;
use sluice_core::log::LogError;

/// An answer of the JetStream API that is an error, by its code.
pub(crate) fn api_error(what: &str, error: &async_nats::jetstream::Error) -> LogError {
    let status = u16::try_from(error.code()).unwrap_or(u16::MAX);
    let code = error.error_code();
    let detail = format!("{what}: {error}");
    match code {
        ErrorCode::STREAM_NOT_FOUND => LogError::StreamNotFound(detail),
        ErrorCode::CONSUMER_NOT_FOUND => LogError::ConsumerNotFound(detail),
        ErrorCode::STREAM_WRONG_LAST_SEQUENCE => LogError::WrongLastSequence(detail),
        ErrorCode::NO_MESSAGE_FOUND | ErrorCode::SEQUENCE_NOT_FOUND => {
            LogError::MessageNotFound(detail)
        }
        ErrorCode::BAD_REQUEST | ErrorCode::INVALID_JSON => LogError::InvalidRequest(detail),
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::CLUSTER_NOT_ACTIVE
        | ErrorCode::CLUSTER_NOT_LEADER
        | ErrorCode::CLUSTER_INCOMPLETE
        | ErrorCode::JETSTREAM_NOT_ENABLED
        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => LogError::Unavailable(detail),
        _ if status == 503 => LogError::Unavailable(detail),
        _ if (500..600).contains(&status) => LogError::Server {
            status,
            code: code.0,
            description: detail,
        },
        _ => LogError::Rejected {
            status,
            code: code.0,
            description: detail,
        },
    }
}

/// The first JetStream API error answer among the causes of `error`: typed methods of
/// the driver that have no `JetStream` kind carry it as a source.
fn api_error_in<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a async_nats::jetstream::Error> {
    let mut cause: Option<&'a (dyn StdError + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(api) = current.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(api);
        }
        cause = current.source();
    }
    None
}

/// The kind of request failure among the causes of `error`, when there is one.
fn request_failure_in(what: &str, error: &(dyn StdError + 'static)) -> Option<LogError> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(request) = current.downcast_ref::<RequestError>() {
            return Some(request_error(what, request));
        }
        if let Some(request) = current.downcast_ref::<async_nats::RequestError>() {
            return Some(core_request_error(what, request));
        }
        cause = current.source();
    }
    None
}

/// Any driver error whose kind did not say enough: an API answer among its causes is
/// named by its code, a request failure by its kind, anything else (a connection
/// failure) is unavailability.
pub(crate) fn driver_error(what: &str, error: &(dyn StdError + 'static)) -> LogError {
    if let Some(api) = api_error_in(error) {
        return api_error(what, api);
    }
    request_failure_in(what, error)
        .unwrap_or_else(|| LogError::Unavailable(format!("{what}: {error}")))
}

/// A JetStream API request that failed (no answer, or an error answer as its source).
pub(crate) fn request_error(what: &str, error: &RequestError) -> LogError {
    if let Some(api) = error.source().and_then(api_error_in) {
        return api_error(what, api);
    }
    match error.kind() {
        RequestErrorKind::TimedOut => LogError::Timeout,
        RequestErrorKind::NoResponders => LogError::Unavailable(format!(
            "{what}: no responders (JetStream not ready): {error}"
        )),
        RequestErrorKind::Other => LogError::Unavailable(format!("{what}: {error}")),
    }
}

/// A failed publish or publish acknowledgement.
pub(crate) fn publish_error(error: &PublishError) -> LogError {
    match error.kind() {
        PublishErrorKind::TimedOut => LogError::Timeout,
        // The driver's name for "no responders": on a subject sluice set up, that is a
        // server restarting or a stream not created yet, so it is unavailability.
        PublishErrorKind::StreamNotFound => LogError::Unavailable(format!(
            "publish: no responders (stream not ready or server restarting): {error}"
        )),
        PublishErrorKind::WrongLastSequence => {
            LogError::WrongLastSequence(format!("publish: {error}"))
        }
        PublishErrorKind::WrongLastMessageId => LogError::Rejected {
            status: 400,
            code: ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID.0,
            description: format!("publish: {error}"),
        },
        PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            LogError::Unavailable(format!("publish: {error}"))
        }
        // An API error answer travels as the source of `Other`.
        _ => driver_error("publish", error),
    }
}

/// A failed core-NATS request (acks, naks), by the driver's kind.
pub(crate) fn core_request_error(what: &str, error: &async_nats::RequestError) -> LogError {
    match error.kind() {
        async_nats::RequestErrorKind::TimedOut => LogError::Timeout,
        async_nats::RequestErrorKind::NoResponders => LogError::Unavailable(format!(
            "{what}: no responders (consumer gone or server restarting): {error}"
        )),
        async_nats::RequestErrorKind::Other => LogError::Unavailable(format!("{what}: {error}")),
    }
}

/// A failure to hand something to the connection (publish, subscribe).
pub(crate) fn connection_error(what: &str, error: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(format!("{what}: {error}"))
}

#[cfg(test)]
mod tests {
    use sluice_core::resilience::ErrorKind;

    use super::*;

    /// An API error answer as the server sends it.
    fn answer(status: u16, code: u64, description: &str) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": status,
            "err_code": code,
            "description": description,
        }))
        .unwrap()
    }

    #[test]
    fn each_jetstream_api_error_code_has_its_kind() {
        let cases = [
            (404, 10059, "stream not found", ErrorKind::Rejected),
            (400, 10071, "wrong last sequence: 7", ErrorKind::Rejected),
            (404, 10037, "no message found", ErrorKind::Rejected),
            (400, 10043, "sequence not found", ErrorKind::Rejected),
            (
                400,
                10052,
                "stream configuration invalid",
                ErrorKind::Rejected,
            ),
            (404, 10014, "consumer not found", ErrorKind::Caller),
            (400, 10003, "bad request", ErrorKind::Caller),
            (400, 10025, "invalid JSON", ErrorKind::Caller),
            (
                503,
                10008,
                "JetStream system temporarily unavailable",
                ErrorKind::Unavailable,
            ),
            (500, 10009, "not the cluster leader", ErrorKind::Unavailable),
            (503, 10076, "JetStream not enabled", ErrorKind::Unavailable),
            (503, 0, "unnamed unavailability", ErrorKind::Unavailable),
            (500, 10077, "stream store failed", ErrorKind::Transient),
        ];
        for (status, code, description, kind) in cases {
            let error = api_error("test", &answer(status, code, description));
            assert_eq!(error.kind(), kind, "{status} {code}: {error:?}");
        }
    }

    #[test]
    fn named_api_errors_keep_their_variant_and_the_rest_their_code() {
        assert!(matches!(
            api_error("info", &answer(404, 10059, "stream not found")),
            LogError::StreamNotFound(_)
        ));
        assert!(matches!(
            api_error("info", &answer(404, 10014, "consumer not found")),
            LogError::ConsumerNotFound(_)
        ));
        assert!(matches!(
            api_error("update", &answer(400, 10052, "invalid config")),
            LogError::Rejected {
                status: 400,
                code: 10052,
                ..
            }
        ));
    }

    #[test]
    fn an_api_error_carried_as_a_source_is_found() {
        let wrapped = RequestError::with_source(
            RequestErrorKind::Other,
            answer(404, 10059, "stream not found"),
        );
        assert!(matches!(
            request_error("stream info", &wrapped),
            LogError::StreamNotFound(_)
        ));
        let publish =
            PublishError::with_source(PublishErrorKind::Other, answer(400, 10003, "bad request"));
        assert_eq!(publish_error(&publish).kind(), ErrorKind::Caller);
    }

    #[test]
    fn failures_without_an_answer_are_timeouts_or_unavailability() {
        assert_eq!(
            request_error("info", &RequestError::new(RequestErrorKind::TimedOut)),
            LogError::Timeout
        );
        assert_eq!(
            request_error("info", &RequestError::new(RequestErrorKind::NoResponders)).kind(),
            ErrorKind::Unavailable
        );
        for kind in [
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::BrokenPipe,
            PublishErrorKind::MaxAckPending,
        ] {
            let error = publish_error(&PublishError::new(kind));
            assert_eq!(error.kind(), ErrorKind::Unavailable, "{kind:?}");
        }
        assert_eq!(
            publish_error(&PublishError::new(PublishErrorKind::TimedOut)),
            LogError::Timeout
        );
        assert_eq!(
            publish_error(&PublishError::new(PublishErrorKind::WrongLastSequence)).kind(),
            ErrorKind::Rejected
        );
        // A closed connection: the driver's connection error, with no answer behind it.
        let closed = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "closed");
        assert_eq!(
            driver_error("subscribe", &closed).kind(),
            ErrorKind::Unavailable
        );
    }
}
