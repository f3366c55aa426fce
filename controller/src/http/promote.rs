//! The daemon's promotion endpoints: `POST /api/v1/warmapps/{name}/promote` and `…/rollback`.
//!
//! Both answer `202 Accepted` with what was submitted (`state`: `started` or `queued`), or
//! `200 OK` when the app already runs that version; the health-gated upgrade then runs in the
//! background and its result lands in the app's `status.promotion` and history. Errors are the
//! API's `{"error": {"code", "message", "field"?}}` (`field` when a request field is at fault).

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crd::promotion::PromotionSource;
use serde::{Deserialize, Serialize};

use super::Body;
use super::{ApiError, Routes, State};
use crate::access::Scope;
use crate::promote::{self, Request, Submitted};

fn error(e: &promote::Error) -> ApiError {
    let (status, field) = match e {
        promote::Error::AppNotFound(_) => (StatusCode::NOT_FOUND, None),
        promote::Error::PromotionRefused(_) => (StatusCode::CONFLICT, Some("to")),
        promote::Error::VersionUnknown { field, .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, Some(*field))
        }
        promote::Error::NothingToRollBack(_) => (StatusCode::CONFLICT, None),
        promote::Error::StoreFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        promote::Error::Raced(_) => (StatusCode::CONFLICT, None),
    };
    let error = ApiError::new(status, e.to_string());
    match field {
        Some(f) => error.with_field(f),
        None => error,
    }
}

/// The promotion routes, merged into the API's routes.
pub(crate) fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/warmapps/{name}/promote", Scope::Admin, promote_app)
        .post(
            "/api/v1/warmapps/{name}/rollback",
            Scope::Admin,
            rollback_app,
        )
}

/// `POST /api/v1/warmapps/{name}/promote` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteBody {
    /// The version to promote to (a recipe version the recipe publishes).
    pub to: String,
    /// Allow going backwards in version order for this request.
    #[serde(default)]
    pub allow_downgrade: bool,
}

fn answer(s: Submitted) -> Response {
    let status = if s.state == "alreadyCurrent" {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(s)).into_response()
}

async fn promote_app(
    AxumState(s): AxumState<State>,
    Path(name): Path<String>,
    Body(body): Body<PromoteBody>,
) -> Result<Response, ApiError> {
    if let Err(e) = crd::version::check_version(&body.to) {
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("to: {e}")).with_field("to"),
        );
    }
    let submitted = s
        .promoter
        .submit(Request {
            app: name,
            to: body.to,
            source: PromotionSource::Operator,
            run: None,
            allow_downgrade: body.allow_downgrade,
            content: None,
        })
        .await
        .map_err(|e| error(&e))?;
    Ok(answer(submitted))
}

async fn rollback_app(
    AxumState(s): AxumState<State>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let submitted = s.promoter.rollback(&name).await.map_err(|e| error(&e))?;
    Ok(answer(submitted))
}
