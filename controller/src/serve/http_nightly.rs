//! The daemon's nightly endpoint: `POST /api/v1/nightly` runs the full nightly sweep now (`hearth sweep --now`).
//!
//! The answer is the run's report (every step, ok, duration); it completes no scheduled
//! window. Errors are `{"error": "..."}`.

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::http::State;

/// The nightly route, merged into the endpoint's router.
pub(crate) fn routes() -> Router<State> {
    Router::new().route("/api/v1/nightly", post(run_now))
}

async fn run_now(AxumState(s): AxumState<State>) -> Response {
    match s.nightly.run_once(None, false).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
