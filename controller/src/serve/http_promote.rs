//! The daemon's promotion endpoints: `POST /api/v1/warmapps/{name}/promote` and `…/rollback`.
//!
//! Both answer `202 Accepted` with what was submitted (`state`: `started` or `queued`), or
//! `200 OK` when the app already runs that version; the health-gated upgrade then runs in the
//! background and its result lands in the app's `status.promotion` and history. Errors are
//! `{"error": "...", "field": "..."}` (`field` when a request field is at fault).

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use crd::promotion::PromotionSource;
use serde::{Deserialize, Serialize};

use super::http::State;
use super::http_ci::{Body, BODY_LIMIT};
use crate::promote::{self, Request, Submitted};

/// An error answer: status, message and the request field at fault.
#[derive(Debug)]
struct PromoteError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl IntoResponse for PromoteError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(f) = self.field {
            body["field"] = serde_json::Value::from(f);
        }
        (self.status, Json(body)).into_response()
    }
}

fn error(e: &promote::Error) -> PromoteError {
    let (status, field) = match e {
        promote::Error::AppNotFound(_) => (StatusCode::NOT_FOUND, None),
        promote::Error::PromotionRefused(_) => (StatusCode::CONFLICT, Some("to")),
        promote::Error::VersionUnknown { field, .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, Some(*field))
        }
        promote::Error::NothingToRollBack(_) => (StatusCode::CONFLICT, None),
        promote::Error::StoreFailed(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    PromoteError {
        status,
        message: e.to_string(),
        field,
    }
}

/// The promotion routes, merged into the endpoint's router.
pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/v1/warmapps/{name}/promote", post(promote_app))
        .route("/api/v1/warmapps/{name}/rollback", post(rollback_app))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
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
) -> Result<Response, PromoteError> {
    if let Err(e) = crd::version::check_version(&body.to) {
        return Err(PromoteError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("to: {e}"),
            field: Some("to"),
        });
    }
    let submitted = s
        .promoter
        .submit(Request {
            app: name,
            to: body.to,
            source: PromotionSource::Operator,
            run: None,
            allow_downgrade: body.allow_downgrade,
        })
        .await
        .map_err(|e| error(&e))?;
    Ok(answer(submitted))
}

async fn rollback_app(
    AxumState(s): AxumState<State>,
    Path(name): Path<String>,
) -> Result<Response, PromoteError> {
    let submitted = s.promoter.rollback(&name).await.map_err(|e| error(&e))?;
    Ok(answer(submitted))
}
