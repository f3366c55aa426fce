//! The daemon's workers endpoint: `GET /api/v1/workers` lists every background worker's status (`hearth get workers`).
//!
//! The answer is a JSON array of [`crate::runtime::workers::Status`], by name: what it is
//! doing, its last run, its last error, its next run, runs and errors so far. A read: it needs
//! a `read` token where reads are not open.

use axum::extract::State as AxumState;
use axum::Json;

use super::{Routes, State};
use crate::runtime::workers::Status;

/// The workers route, merged into the API's routes.
pub(crate) fn routes() -> Routes {
    Routes::new().get("/api/v1/workers", list)
}

async fn list(AxumState(s): AxumState<State>) -> Json<Vec<Status>> {
    Json(s.workers.list())
}
