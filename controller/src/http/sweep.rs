//! `POST /api/v1/sweep`: the orphan sweep now (or only its plan), admin only.

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, Body, Routes, State};
use crate::access::Scope;
use crate::errors::chain;
use crate::sweeper;

/// The sweep route.
pub(crate) fn routes() -> Routes {
    Routes::new().post("/api/v1/sweep", Scope::Admin, sweep)
}

/// `POST /api/v1/sweep` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepBody {
    /// Only plan.
    #[serde(default)]
    pub dry_run: bool,
}

async fn sweep(
    AxumState(s): AxumState<State>,
    Body(body): Body<SweepBody>,
) -> Result<Response, ApiError> {
    let failed = |e: sweeper::Error| ApiError::new(StatusCode::BAD_GATEWAY, chain(&e));
    if body.dry_run {
        let plan = s.sweeper.plan().await.map_err(failed)?;
        Ok(Json(plan).into_response())
    } else {
        let report = s.sweeper.sweep().await.map_err(failed)?;
        Ok(Json(report).into_response())
    }
}
