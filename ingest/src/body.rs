//! Reading request bodies: accepted content types, decompression, size limits and the
//! body read deadline.
//!
//! Decompression (`Content-Encoding: gzip | zstd | br`) happens in a streaming layer in
//! front of the handler, so the size limit here applies to the *decoded* bytes: a
//! compression bomb is cut off at the limit, with memory bounded by it, instead of being
//! inflated first.
//!
//! The deadline is one instant per request (not an idle timeout between chunks, which a
//! client trickling a byte at a time would never trip): [`enforce_body_deadline`] wraps
//! every request body so that a read past it fails, and turns whatever the handler then
//! answers into a 408 that closes the connection. A minimum average rate
//! ([`MinBodyRate`], after a grace period) cuts a trickling body much earlier: a client
//! sending a byte at a time holds its connection and ingest permit for the grace period,
//! not for the whole body read timeout.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sluice_core::ErrorCode;

use crate::error::ApiError;

/// Content types accepted for NDJSON bodies (parameters such as `charset` are ignored).
/// `application/x-www-form-urlencoded` is what `curl --data-binary` sends unless told
/// otherwise; its body is taken as NDJSON all the same. The `vnd.elasticsearch` types are
/// what the Elasticsearch clients send (with a `compatible-with` parameter).
const NDJSON_TYPES: [&str; 9] = [
    "application/x-ndjson",
    "application/vnd.elasticsearch+x-ndjson",
    "application/vnd.elasticsearch+json",
    "application/ndjson",
    "application/jsonl",
    "application/json",
    "text/plain",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
];

/// Refuses a body whose declared content type is not NDJSON-like; a missing one is
/// taken as NDJSON.
pub fn check_ndjson_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media_type = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type {
        Some(t) if NDJSON_TYPES.contains(&t.as_str()) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send NDJSON as application/x-ndjson (one JSON document per line)",
        )),
    }
}

/// Reads the whole (decoded) body, refusing it past `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_length_limit(&*e) => Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body exceeds the limit of {limit} bytes (after decompression)"),
        )),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "the request body could not be read or decoded: {}",
                root_cause(&*e)
            ),
        )),
    }
}

/// Why a body read was cut off.
#[derive(Debug, thiserror::Error)]
enum BodyTooSlow {
    #[error("the request body did not arrive within the body read timeout")]
    DeadlinePassed,
    #[error("the request body arrives slower than the minimum body rate")]
    BelowMinimumRate,
}

/// The minimum rate a body must keep once its grace period is over
/// (`server.min_body_rate`, `server.body_rate_grace`). [`crate::serve`] puts it in every
/// request's extensions; a request without one has only the deadline.
#[derive(Clone, Copy, Debug)]
pub struct MinBodyRate {
    /// Bytes per second, averaged from the end of the request head (0: no minimum).
    pub bytes_per_sec: u64,
    /// How long the body may arrive at any rate first.
    pub grace: Duration,
}

impl MinBodyRate {
    /// When a body started at `started` with `received` bytes so far falls below the rate:
    /// the grace period, or as long as the bytes received pay for, whichever is later.
    fn deadline(
        &self,
        started: tokio::time::Instant,
        received: u64,
    ) -> Option<tokio::time::Instant> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let paid_for = Duration::from_secs_f64(received as f64 / self.bytes_per_sec as f64);
        Some(started + self.grace.max(paid_for))
    }
}

const NOT_CUT: u8 = 0;
const CUT_AT_DEADLINE: u8 = 1;
const CUT_BELOW_RATE: u8 = 2;

/// Middleware: the request body must arrive whole within `timeout` of the request head,
/// and (with a [`MinBodyRate`] extension) no slower on average than the minimum rate once
/// its grace period is over. A read past either fails, and the response becomes a 408
/// `request_timeout` with `Connection: close` (the rest of the body is never read).
pub async fn enforce_body_deadline(timeout: Duration, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let min_rate = request.extensions().get::<MinBodyRate>().copied();
    let cut = Arc::new(AtomicU8::new(NOT_CUT));
    let flag = cut.clone();
    let request = request.map(|body| {
        let chunks =
            futures_util::stream::unfold(Some((body.into_data_stream(), 0u64)), move |reading| {
                let flag = flag.clone();
                async move {
                    let (mut chunks, received) = reading?;
                    let rate_deadline = min_rate.and_then(|rate| rate.deadline(started, received));
                    let wake = rate_deadline.map_or(deadline, |at| at.min(deadline));
                    match tokio::time::timeout_at(wake, chunks.next()).await {
                        Ok(Some(chunk)) => {
                            let received =
                                received + chunk.as_ref().map_or(0, |bytes| bytes.len() as u64);
                            Some((chunk, Some((chunks, received))))
                        }
                        Ok(None) => None,
                        Err(_) => {
                            let reason = if wake < deadline {
                                flag.store(CUT_BELOW_RATE, Ordering::Release);
                                BodyTooSlow::BelowMinimumRate
                            } else {
                                flag.store(CUT_AT_DEADLINE, Ordering::Release);
                                BodyTooSlow::DeadlinePassed
                            };
                            Some((Err(axum::Error::new(reason)), None))
                        }
                    }
                }
            });
        // Fused: decoders poll again after the end, which an unfold does not allow.
        Body::from_stream(chunks.fuse())
    });
    let response = next.run(request).await;
    let message = match cut.load(Ordering::Acquire) {
        NOT_CUT => return response,
        CUT_BELOW_RATE => {
            let rate = min_rate.map_or(0, |rate| rate.bytes_per_sec);
            format!("the request body arrived slower than {rate} bytes/s; send it faster")
        }
        _ => format!(
            "the request body did not arrive within {timeout:?}; send it faster or in smaller requests"
        ),
    };
    let mut response = ApiError::new(ErrorCode::RequestTimeout, message).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Refuses a body with no document in it (empty or only whitespace): almost always a
/// client bug (a file not found, a stream already consumed), better told than accepted
/// as zero documents.
pub fn require_documents(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the request body is empty; send one JSON document per line",
        ));
    }
    Ok(())
}

fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(check_ndjson_content_type(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
        );
        assert!(check_ndjson_content_type(&headers).is_ok());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        let err = check_ndjson_content_type(&headers).unwrap_err();
        let mut vendor = HeaderMap::new();
        vendor.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.elasticsearch+x-ndjson; compatible-with=9"),
        );
        assert!(check_ndjson_content_type(&vendor).is_ok());
        assert_eq!(err.code(), ErrorCode::UnsupportedMediaType);
    }

    #[tokio::test]
    async fn a_body_past_its_deadline_is_a_408_that_closes_the_connection() {
        use axum::routing::post;
        use tower::ServiceExt;

        async fn echo_len(body: Body) -> Result<String, ApiError> {
            Ok(read_limited(body, 1 << 20).await?.len().to_string())
        }
        let app = axum::Router::new()
            .route("/", post(echo_len))
            .layer(axum::middleware::from_fn(|request, next| {
                enforce_body_deadline(Duration::from_millis(200), request, next)
            }));
        // One chunk, then nothing more: a client that stalls mid-body.
        let stalled = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("ab"))])
            .chain(futures_util::stream::pending());
        let request = Request::post("/").body(Body::from_stream(stalled)).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(20), app.clone().oneshot(request))
            .await
            .expect("the deadline ends the request")
            .unwrap();
        assert_eq!(response.status(), 408);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let request = Request::post("/").body(Body::from("abc")).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn a_body_below_the_minimum_rate_is_cut_after_the_grace_period() {
        use axum::routing::post;
        use tower::ServiceExt;

        async fn echo_len(body: Body) -> Result<String, ApiError> {
            Ok(read_limited(body, 1 << 20).await?.len().to_string())
        }
        let rate = MinBodyRate {
            bytes_per_sec: 1000,
            grace: Duration::from_millis(300),
        };
        let app = axum::Router::new()
            .route("/", post(echo_len))
            .layer(axum::middleware::from_fn(|request, next| {
                // A deadline far away: only the rate can end the trickle in time.
                enforce_body_deadline(Duration::from_secs(600), request, next)
            }));
        let send = |chunks: Vec<Bytes>, pause: Duration| {
            let stream = futures_util::stream::iter(chunks).then(move |chunk| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, std::io::Error>(chunk)
            });
            let mut request = Request::post("/").body(Body::from_stream(stream)).unwrap();
            request.extensions_mut().insert(rate);
            app.clone().oneshot(request)
        };
        // A byte every 50 ms (20 bytes/s): cut once the grace period is over.
        let trickle = vec![Bytes::from_static(b"x"); 1000];
        let response = tokio::time::timeout(
            Duration::from_secs(20),
            send(trickle, Duration::from_millis(50)),
        )
        .await
        .expect("the rate ends the request")
        .unwrap();
        assert_eq!(response.status(), 408);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        // Chunks of 400 bytes every 100 ms (4000 bytes/s) keep above it past the grace.
        let fast = vec![Bytes::from(vec![b'x'; 400]); 8];
        let response = send(fast, Duration::from_millis(100)).await.unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn limit_is_a_413_not_a_400() {
        let err = read_limited(Body::from(vec![b'x'; 100]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        let ok = read_limited(Body::from(vec![b'x'; 10]), 10).await.unwrap();
        assert_eq!(ok.len(), 10);
    }
}
