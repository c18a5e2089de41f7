//! The starting gate: the listener answers from the first moment, before recovery is done.
//!
//! A node binds and serves its listener before it opens the log, the store and the
//! indexes (which may replay a backlog or rebuild an index from the store). Until
//! [`StartupGate::open`] is called, every request gets the starting responder: the
//! healthcheck answers `503 {"status":"starting"}` and every other route
//! `503 {"error":{"code":"starting",..}}` with `Retry-After`, so load balancers and
//! clients see a live, not-yet-ready node rather than a refused connection. Once open,
//! every request goes to the full API.
//!
//! Concurrency: the API router is published once through a [`OnceLock`]; each request
//! reads it with one atomic load, so the gate costs nothing once open. Requests already
//! answered `starting` are not retried by the gate; clients retry after `Retry-After`.

use std::sync::{Arc, OnceLock};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sluice_core::ErrorCode;
use tower::ServiceExt;

use crate::error::{self, ApiError};

/// Seconds a client is asked to wait before retrying a request refused while starting.
const STARTING_RETRY_AFTER_SECS: u64 = 1;

/// Routes requests to the starting responder until the API is installed.
#[derive(Clone, Default)]
pub struct StartupGate {
    api: Arc<OnceLock<Router>>,
}

impl StartupGate {
    /// A closed gate: everything answers `starting`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the full API; from now on every request goes to it. Later calls are
    /// ignored (the first API stays).
    pub fn open(&self, api: Router) {
        let _ = self.api.set(api);
    }

    /// Whether the API is installed.
    pub fn is_open(&self) -> bool {
        self.api.get().is_some()
    }

    /// The router to serve: the API once installed, the starting responder before.
    pub fn router(&self) -> Router {
        let starting = starting_router();
        let api = self.api.clone();
        let dispatch = tower::service_fn(move |request: Request| {
            let target = api.get().cloned().unwrap_or_else(|| starting.clone());
            async move { target.oneshot(request).await }
        });
        Router::new().fallback_service(dispatch)
    }
}

fn starting_router() -> Router {
    Router::new()
        .route("/_internal_/healthcheck", get(starting_health))
        .fallback(starting_refusal)
        .layer(middleware::from_fn(error::trace_requests))
}

async fn starting_health() -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "starting"})),
    )
}

async fn starting_refusal() -> Result<(), ApiError> {
    Err(ApiError::new(
        ErrorCode::Starting,
        "sluice is recovering after a start; retry shortly",
    )
    .retry_after(STARTING_RETRY_AFTER_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn call(router: &Router, path: &str) -> (StatusCode, Option<String>, Value) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn answers_starting_until_opened_then_hands_over() {
        let gate = StartupGate::new();
        let router = gate.router();
        let (status, _, body) = call(&router, "/_internal_/healthcheck").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"status": "starting"}));
        let (status, retry_after, body) = call(&router, "/v1/collections").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "starting");
        assert!(!body["error"]["trace_id"].as_str().unwrap().is_empty());

        assert!(!gate.is_open());
        gate.open(Router::new().route(
            "/_internal_/healthcheck",
            get(|| async { Json(json!({"status": "healthy"})) }),
        ));
        assert!(gate.is_open());
        let (status, _, body) = call(&router, "/_internal_/healthcheck").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "healthy"}));
    }
}
