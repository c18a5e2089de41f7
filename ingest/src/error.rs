//! The one error type every handler returns, and the trace id that ties a response to
//! the server log.
//!
//! A [`TraceId`] is assigned per request by [`trace_requests`] and kept in a task-local,
//! so an [`ApiError`] renders `{"error":{"code","message","trace_id"}}` without each
//! handler threading it through. Client errors keep their message and are not logged;
//! internal errors answer a generic message and are logged once, here, with the trace id
//! and the real cause (which never reaches the client).
//!
//! [`uniform_errors`] is the one place that turns every other error answer into that
//! shape: the framework's extractor rejections (path, query, JSON, body limit: plain
//! text), the decompression layer's empty 415, anything a layer answers on its own. Its
//! invariant: every response with a 4xx or 5xx status has the documented shape or is JSON
//! its route documents otherwise (the healthcheck's `{"status":"starting"}`).
//! [`panic_response`] answers a handler panic as 500 `internal`.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use sluice_core::ErrorCode;

tokio::task_local! {
    static TRACE_ID: String;
}

/// Response header carrying the request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The current request's trace id (empty outside a request).
pub fn current_trace_id() -> String {
    TRACE_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Marks a request whose trace id is already assigned (by an outer [`trace_requests`]).
#[derive(Clone, Copy)]
struct Traced;

/// Marks a response already in the documented error shape.
#[derive(Clone, Copy)]
struct Shaped;

/// Middleware: assigns a trace id (or keeps a well-formed incoming `x-trace-id`), runs
/// the request inside a span carrying it, and echoes it in the response headers. Nested
/// (the server's stack and the router's each have one), the outermost one does the work.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    if request.extensions().get::<Traced>().is_some() {
        return next.run(request).await;
    }
    request.extensions_mut().insert(Traced);
    let trace_id = request
        .headers()
        .get(TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let span = tracing::info_span!("request", trace_id = %trace_id, method = %request.method(), path = %request.uri().path());
    let header_value = HeaderValue::from_str(&trace_id).ok();
    let mut response = TRACE_ID
        .scope(
            trace_id,
            tracing::Instrument::instrument(next.run(request), span),
        )
        .await;
    if let Some(value) = header_value {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u64>,
    /// Extra top-level members of the body (e.g. `ids` of a partly durable ingest).
    extra: Map<String, Value>,
}

impl ApiError {
    /// A client-facing error with its message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
            extra: Map::new(),
        }
    }

    /// An internal failure: the client gets a generic message; `cause` is logged with
    /// the trace id.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(trace_id = %current_trace_id(), error = %cause, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the server log has details under this trace_id",
        )
    }

    /// A dependency is down: 503 with `Retry-After`. The cause is logged, not shown.
    pub fn unavailable(what: &str, cause: impl std::fmt::Display) -> Self {
        tracing::warn!(trace_id = %current_trace_id(), error = %cause, "{what} unavailable");
        Self::new(
            ErrorCode::Unavailable,
            format!("the {what} is unavailable; retry later"),
        )
        .retry_after(1)
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// Adds a top-level member to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message the client sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `Retry-After` seconds, if any.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }

    /// Takes the extra top-level members out of the error.
    pub(crate) fn take_extra(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.extra)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = self.extra;
        body.insert(
            "error".to_owned(),
            json!({"code": self.code.as_str(), "message": self.message, "trace_id": current_trace_id()}),
        );
        let mut response = (status, axum::Json(Value::Object(body))).into_response();
        response.extensions_mut().insert(Shaped);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /openapi.json")
}

/// Fallback for known routes called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept that method; see /openapi.json",
    )
}

/// Longest error text of a framework rejection kept as the message.
const MAX_REJECTION_TEXT: usize = 1024;

/// The code of an error status a layer or extractor answered on its own.
fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 => ErrorCode::RequestTimeout,
        413 => ErrorCode::PayloadTooLarge,
        414 => ErrorCode::UriTooLong,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::Overloaded,
        503 => ErrorCode::Unavailable,
        // 422 (a JSON body of the wrong shape) is a 400 like every invalid request.
        400..=499 => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Middleware: rewrites an error answer that is not JSON (an extractor rejection, a
/// layer's empty 415) into the documented shape with its stable code, keeping its status
/// (422 becomes 400) and `Retry-After`, and its text as the message.
pub async fn uniform_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<Shaped>().is_some()
        || is_json(&response)
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let code = code_for_status(status);
    let text = match http_body_util::Limited::new(body, MAX_REJECTION_TEXT)
        .collect()
        .await
    {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() || code == ErrorCode::Internal {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    let mut error = ApiError::new(code, message);
    if let Some(secs) = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        error = error.retry_after(secs);
    }
    let mut shaped = error.into_response();
    if let Some(connection) = parts.headers.get(header::CONNECTION) {
        shaped
            .headers_mut()
            .insert(header::CONNECTION, connection.clone());
    }
    shaped
}

/// Answers a handler that panicked: 500 `internal` in the documented shape. The panic
/// hook of the binary has already logged the message and location; this adds the trace id.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned());
    ApiError::internal(format_args!("the handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn plain_text_rejections_get_the_documented_shape() {
        async fn typed(axum::extract::Path(n): axum::extract::Path<u32>) -> String {
            n.to_string()
        }
        async fn already_shaped() -> ApiError {
            ApiError::new(ErrorCode::InvalidQuery, "kept as it is")
        }
        let app = axum::Router::new()
            .route("/n/{n}", get(typed))
            .route("/shaped", get(already_shaped))
            .layer(axum::middleware::from_fn(uniform_errors))
            .layer(axum::middleware::from_fn(trace_requests));
        let call = |uri: &'static str| {
            let app = app.clone();
            async move {
                let response = app
                    .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                assert!(is_json(&response), "{uri}: JSON");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&body).unwrap())
            }
        };
        let (status, body) = call("/n/abc").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        assert!(!body["error"]["trace_id"].as_str().unwrap().is_empty());
        let (status, body) = call("/shaped").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_query");
        assert_eq!(body["error"]["message"], "kept as it is");
    }
}
