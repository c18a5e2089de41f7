//! The one error type every handler returns, and the trace id that ties a response to
//! the server log.
//!
//! A [`TraceId`] is assigned per request by [`trace_requests`] and kept in a task-local,
//! so an [`ApiError`] renders `{"error":{"code","message","trace_id"}}` without each
//! handler threading it through. Client errors keep their message and are not logged;
//! internal errors answer a generic message and are logged once, here, with the trace id
//! and the real cause (which never reaches the client).

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// Middleware: assigns a trace id (or keeps a well-formed incoming `x-trace-id`), runs
/// the request inside a span carrying it, and echoes it in the response headers.
pub async fn trace_requests(request: Request, next: Next) -> Response {
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
