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
//! answers into a 408 that closes the connection.

use std::sync::atomic::{AtomicBool, Ordering};
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
/// otherwise; its body is taken as NDJSON all the same.
const NDJSON_TYPES: [&str; 7] = [
    "application/x-ndjson",
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

/// Why a body read failed: the body read deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
struct BodyDeadlinePassed;

/// Middleware: the request body must arrive whole within `timeout` of the request head.
/// A read past the deadline fails, and the response becomes a 408 `request_timeout`
/// with `Connection: close` (the rest of the body is never read).
pub async fn enforce_body_deadline(timeout: Duration, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let request = request.map(|body| {
        let chunks = futures_util::stream::unfold(Some(body.into_data_stream()), move |chunks| {
            let flag = flag.clone();
            async move {
                let mut chunks = chunks?;
                match tokio::time::timeout_at(deadline, chunks.next()).await {
                    Ok(Some(chunk)) => Some((chunk, Some(chunks))),
                    Ok(None) => None,
                    Err(_) => {
                        flag.store(true, Ordering::Release);
                        Some((Err(axum::Error::new(BodyDeadlinePassed)), None))
                    }
                }
            }
        });
        // Fused: decoders poll again after the end, which an unfold does not allow.
        Body::from_stream(chunks.fuse())
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    let mut response = ApiError::new(
        ErrorCode::RequestTimeout,
        format!("the request body did not arrive within {timeout:?}; send it faster or in smaller requests"),
    )
    .into_response();
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
    async fn limit_is_a_413_not_a_400() {
        let err = read_limited(Body::from(vec![b'x'; 100]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        let ok = read_limited(Body::from(vec![b'x'; 10]), 10).await.unwrap();
        assert_eq!(ok.len(), 10);
    }
}
