//! The daemon's nightly endpoint: `POST /api/v1/nightly` runs the full nightly sweep now (`hearth sweep --now`).
//!
//! The answer is the run's report (every step, ok, duration); it completes no scheduled
//! window. Errors are the API's `{"error": {"code", "message"}}`.

use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, Routes, State};
use crate::access::Scope;

/// The nightly route, merged into the API's routes.
pub(crate) fn routes() -> Routes {
    Routes::new().post("/api/v1/nightly", Scope::Admin, run_now)
}

async fn run_now(AxumState(s): AxumState<State>) -> Response {
    match s.nightly.run_once(None, false).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => ApiError::internal(crate::errors::chain(&e)).into_response(),
    }
}
