//! Reading request bodies: accepted content types, decompression and size limits.
//!
//! Decompression (`Content-Encoding: gzip | zstd | br`) happens in a streaming layer in
//! front of the handler, so the size limit here applies to the *decoded* bytes: a
//! compression bomb is cut off at the limit, with memory bounded by it, instead of being
//! inflated first.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
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
    async fn limit_is_a_413_not_a_400() {
        let err = read_limited(Body::from(vec![b'x'; 100]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        let ok = read_limited(Body::from(vec![b'x'; 10]), 10).await.unwrap();
        assert_eq!(ok.len(), 10);
    }
}
