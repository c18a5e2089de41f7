//! Errors of the Elasticsearch routes (documents, indexes, setup, search), answered in
//! both shapes at once.
//!
//! The official clients read Elasticsearch's shape, `{"error": {"root_cause": [...],
//! "type", "reason"}, "status"}`, and raise by status (409 `ConflictError`, 404
//! `NotFoundError`, ...); every sluice route promises its own documented shape,
//! `{"error": {"code", "message", "trace_id"}}` (checked by `tests/openapi.rs`). One
//! [`EsError`] carries both in the same `error` object: `type`/`reason` for the clients,
//! `code`/`message`/`trace_id` for everything else. `code` is always one of sluice's
//! stable codes; `type` is the Elasticsearch exception name where one exists
//! (`index_not_found_exception`, `version_conflict_engine_exception`, ...) and the code
//! otherwise.
//!
//! Internal failures keep [`ApiError`]'s rule: the client sees a generic message, the
//! cause was logged once, with the trace id, where the [`ApiError`] was made.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use sluice_core::ErrorCode;

use crate::error::{current_trace_id, ApiError};

/// An error of an Elasticsearch route (boxed: handlers pass it up by value).
#[derive(Debug)]
pub struct EsError(Box<Parts>);

/// What an [`EsError`] says.
#[derive(Debug)]
struct Parts {
    status: u16,
    /// sluice's stable code.
    code: &'static str,
    /// The Elasticsearch exception type.
    kind: Cow<'static, str>,
    reason: String,
    retry_after_secs: Option<u64>,
    /// Members of the `error` object beside `type` and `reason` (`index`, ...).
    detail: Map<String, Value>,
    /// Top-level members beside `error` and `status`.
    extra: Map<String, Value>,
}

/// The Elasticsearch exception a sluice code stands for, where there is one.
fn exception_of(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::CollectionNotFound => "index_not_found_exception",
        ErrorCode::CollectionExists => "resource_already_exists_exception",
        ErrorCode::DocumentExists => "version_conflict_engine_exception",
        ErrorCode::DefinitionNotFound => "resource_not_found_exception",
        ErrorCode::InvalidSchema => "mapper_parsing_exception",
        ErrorCode::InvalidCollectionName => "invalid_index_name_exception",
        ErrorCode::Overloaded => "es_rejected_execution_exception",
        ErrorCode::InvalidRequest => "illegal_argument_exception",
        ErrorCode::InvalidQuery | ErrorCode::QueryTooComplex => "parsing_exception",
        other => other.as_str(),
    }
}

impl EsError {
    /// An error with `code`'s status and its Elasticsearch exception type.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self(Box::new(Parts {
            status: code.http_status(),
            code: code.as_str(),
            kind: Cow::Borrowed(exception_of(code)),
            reason: reason.into(),
            retry_after_secs: None,
            detail: Map::new(),
            extra: Map::new(),
        }))
    }

    /// The failure of an item that went through `_bulk`: its status, and its error type
    /// (sluice's code, or the Elasticsearch exception `_bulk` answered).
    pub fn from_item(status: u16, kind: &'static str, reason: String) -> Self {
        let code = match kind {
            "version_conflict_engine_exception" => ErrorCode::DocumentExists.as_str(),
            "document_missing_exception" => ErrorCode::DocumentNotFound.as_str(),
            other => other,
        };
        Self(Box::new(Parts {
            status,
            code,
            kind: Cow::Borrowed(kind),
            reason,
            retry_after_secs: None,
            detail: Map::new(),
            extra: Map::new(),
        }))
    }

    /// No such index: 404 `index_not_found_exception` naming it, as Elasticsearch says it.
    pub fn index_not_found(index: &str) -> Self {
        Self::new(
            ErrorCode::CollectionNotFound,
            format!("no such index [{index}]"),
        )
        .with_detail("index", json!(index))
    }

    /// Adds a member to the `error` object (and its root cause).
    pub fn with_detail(mut self, key: &str, value: Value) -> Self {
        self.0.detail.insert(key.to_owned(), value);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The `error` object alone, as a per-document error of `_mget` carries it.
    pub fn error_object(&self) -> Value {
        let parts = &self.0;
        let mut cause = Map::new();
        cause.insert("type".to_owned(), json!(parts.kind));
        cause.insert("reason".to_owned(), json!(parts.reason));
        cause.extend(parts.detail.clone());
        let mut error = cause.clone();
        error.insert("root_cause".to_owned(), json!([Value::Object(cause)]));
        error.insert("code".to_owned(), json!(parts.code));
        error.insert("message".to_owned(), json!(parts.reason));
        error.insert("trace_id".to_owned(), json!(current_trace_id()));
        Value::Object(error)
    }
}

impl From<ApiError> for EsError {
    fn from(mut error: ApiError) -> Self {
        let extra = error.take_extra();
        let mut es = EsError::new(error.code(), error.message());
        es.0.retry_after_secs = error.retry_after_secs();
        es.0.extra = extra;
        es
    }
}

impl IntoResponse for EsError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = self.0.extra.clone();
        body.insert("error".to_owned(), self.error_object());
        body.insert("status".to_owned(), json!(self.0.status));
        let mut response = (status, axum::Json(Value::Object(body))).into_response();
        if let Some(secs) = self.0.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn both_shapes_in_one_error() {
        let response = EsError::index_not_found("books").into_response();
        assert_eq!(response.status(), 404);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], 404);
        let error = &body["error"];
        assert_eq!(error["type"], "index_not_found_exception");
        assert_eq!(error["reason"], "no such index [books]");
        assert_eq!(error["index"], "books");
        assert_eq!(error["root_cause"][0]["type"], "index_not_found_exception");
        assert_eq!(error["code"], "collection_not_found");
        assert_eq!(error["message"], "no such index [books]");
        assert!(error["trace_id"].is_string());
    }

    #[test]
    fn item_failures_keep_their_type_and_get_a_code() {
        let conflict = EsError::from_item(
            409,
            "version_conflict_engine_exception",
            "exists".to_owned(),
        );
        assert_eq!(conflict.status(), 409);
        assert_eq!(conflict.error_object()["code"], "document_exists");
        let wrong = EsError::from_item(400, "wrong_type", "no".to_owned());
        assert_eq!(wrong.error_object()["type"], "wrong_type");
        assert_eq!(wrong.error_object()["code"], "wrong_type");
    }
}
