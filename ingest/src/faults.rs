//! `PUT` and `DELETE /_internal_/faults/{point}`: set or clear a fault plan at run time.
//!
//! Test configuration only: the routes exist only on a node started with
//! `[faults] enabled = true` (a 404 everywhere else) and are left out of the OpenAPI
//! document, which describes the API every node serves. A plan is
//! `sluice_core::faults::FaultPlan` as JSON, e.g.
//! `{"error_rate": 1.0, "error": "unavailable"}` or `{"latency": "2s"}`; it applies to
//! the next call at that point and stays until cleared.
//!
//! `POST /_internal_/panic` (same condition) makes its handler panic, so tests can see
//! that a panic answers 500 `internal`, is logged, and leaves the server serving.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use sluice_core::faults::{FaultPlan, FaultPoint};
use sluice_core::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;

fn fault_point(name: &str) -> Result<FaultPoint, ApiError> {
    FaultPoint::parse(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "no such fault point; use store, index_search or log_append",
        )
    })
}

/// `PUT /_internal_/faults/{point}`
pub async fn set_fault(
    State(state): State<AppState>,
    Path(point): Path<String>,
    plan: Result<Json<FaultPlan>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let point = fault_point(&point)?;
    let Json(plan) = plan.map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.body_text()))?;
    state
        .inner
        .faults
        .set(point, Some(plan.clone()))
        .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?;
    tracing::warn!(?point, ?plan, "fault plan set");
    Ok(Json(json!({"point": point, "plan": plan})))
}

/// `DELETE /_internal_/faults/{point}`
pub async fn clear_fault(
    State(state): State<AppState>,
    Path(point): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let point = fault_point(&point)?;
    state
        .inner
        .faults
        .set(point, None)
        .map_err(|message| ApiError::new(ErrorCode::InvalidRequest, message))?;
    tracing::warn!(?point, "fault plan cleared");
    Ok(Json(json!({"point": point, "cleared": true})))
}

/// `POST /_internal_/panic`: panics, on purpose (tests of the panic path).
pub async fn panic_now() -> Json<Value> {
    panic!("panic requested through /_internal_/panic");
}
