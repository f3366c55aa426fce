//! The daemon's CI endpoints: runs (start, heartbeat, report, finish, read), slot pools (acquire, heartbeat, release, read) and the orphan sweep.
//!
//! Bodies are JSON, limited to [`BODY_LIMIT`] bytes; errors are `{"error": "..."}` with a
//! fitting status. Mutations are not yet authenticated: the endpoint binds to 127.0.0.1 by
//! default, and bearer tokens read from a file are issue 6's work.

use std::time::Duration;

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crd::{Owner, Run, SlotPool};
use serde::{Deserialize, Serialize};

use super::http::State;
use crate::runs::{self, StartRequest, Started};
use crate::slots::{self, Grant, SlotRequest};
use crate::sweeper;

/// The largest accepted request body.
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// An error answer: status and message.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// A JSON body whose rejections (malformed, wrong fields, too large) are JSON errors too.
pub(crate) struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(ApiError(r.status(), r.body_text())),
        }
    }
}

/// The error's message with its sources, `: `-joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn slot_error(e: &slots::Error) -> ApiError {
    let code = match e {
        slots::Error::PoolNotFound { .. } => StatusCode::NOT_FOUND,
        slots::Error::WaitTimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
        slots::Error::LeaseNotHeld { .. } => StatusCode::CONFLICT,
        slots::Error::ContentionPersisted { .. } => StatusCode::SERVICE_UNAVAILABLE,
        slots::Error::NamespaceInvalid(_) => StatusCode::BAD_REQUEST,
        slots::Error::StoreFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // Client-side variants (the CLI's view of a daemon); the daemon itself never meets them.
        slots::Error::DaemonUnreachable { .. } | slots::Error::DaemonFailed { .. } => {
            StatusCode::BAD_GATEWAY
        }
    };
    ApiError(code, chain(e))
}

fn run_error(e: &runs::Error) -> ApiError {
    let code = match e {
        runs::Error::RequestRejected(_) | runs::Error::NameInvalid(_) => StatusCode::BAD_REQUEST,
        runs::Error::RunNotFound(_) => StatusCode::NOT_FOUND,
        runs::Error::RunStillActive { .. } | runs::Error::RunAlreadyOver { .. } => {
            StatusCode::CONFLICT
        }
        runs::Error::SlotFailed(s) => return slot_error(s),
        runs::Error::DepUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(code, chain(e))
}

fn store_error(e: &state::Error) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, chain(e))
}

/// Parses a humantime duration field.
fn duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    text.map(|t| {
        humantime::parse_duration(t).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{field}: invalid duration {t:?}: {e}"),
            )
        })
    })
    .transpose()
}

/// The CI routes, merged into the endpoint's router.
pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/api/v1/runs", get(list_runs).post(start_run))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/heartbeat", post(heartbeat_run))
        .route("/api/v1/runs/{id}/report", post(report_run))
        .route("/api/v1/runs/{id}/finish", post(finish_run))
        .route("/api/v1/slotpools", get(list_pools))
        .route("/api/v1/slotpools/{pool}/acquire", post(acquire))
        .route("/api/v1/slotpools/{pool}/heartbeat", post(heartbeat_slot))
        .route("/api/v1/slotpools/{pool}/release", post(release))
        .route("/api/v1/sweep", post(sweep))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// `POST /api/v1/runs` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartBody {
    /// The recipe.
    pub recipe: String,
    /// Its version.
    pub version: String,
    /// The git ref under test.
    #[serde(default)]
    pub git_ref: Option<String>,
    /// Dependency providers.
    #[serde(default)]
    pub deps: Vec<String>,
    /// The slot pool.
    #[serde(default)]
    pub pool: Option<String>,
    /// Lease TTL (humantime).
    #[serde(default)]
    pub ttl: Option<String>,
    /// The owning process.
    pub owner: Owner,
    /// Whether hearth deploys the run's stack.
    #[serde(default)]
    pub deploy: bool,
    /// Tiers that must pass.
    #[serde(default)]
    pub required_tiers: Vec<String>,
}

async fn start_run(
    AxumState(s): AxumState<State>,
    Body(body): Body<StartBody>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let req = StartRequest {
        ttl: duration("ttl", body.ttl.as_deref())?,
        recipe: body.recipe,
        version: body.version,
        git_ref: body.git_ref,
        deps: body.deps,
        pool: body.pool,
        owner: body.owner,
        deploy: body.deploy,
        required_tiers: body.required_tiers,
        nonce: rand::random::<[u8; 16]>().to_vec(),
    };
    let started = s.runs.start(&req).await.map_err(|e| run_error(&e))?;
    Ok((StatusCode::CREATED, Json(started)))
}

async fn list_runs(AxumState(s): AxumState<State>) -> Result<Json<Vec<Run>>, ApiError> {
    let list = s.store.list::<Run>().map_err(|e| store_error(&e))?;
    Ok(Json(list.items))
}

async fn get_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    match s.store.get_opt::<Run>(&id) {
        Ok(Some(run)) => Ok(Json(run)),
        Ok(None) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("run {id} was not found"),
        )),
        Err(e) => Err(store_error(&e)),
    }
}

async fn heartbeat_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    s.runs
        .heartbeat(&id)
        .await
        .map(Json)
        .map_err(|e| run_error(&e))
}

/// `POST /api/v1/runs/{id}/report` body: `NAME=pass|fail[:reason]|skip[:reason]` each.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportBody {
    /// The tier results.
    pub tiers: Vec<String>,
}

async fn report_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
    Body(body): Body<ReportBody>,
) -> Result<Json<Run>, ApiError> {
    let run = get_run(AxumState(s.clone()), Path(id.clone())).await?.0;
    let tiers = body
        .tiers
        .iter()
        .map(|t| runs::parse_tier(t, &run.spec.required_tiers))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, m))?;
    s.runs
        .report(&id, &tiers)
        .await
        .map(Json)
        .map_err(|e| run_error(&e))
}

async fn finish_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    s.runs
        .finish(&id)
        .await
        .map(Json)
        .map_err(|e| run_error(&e))
}

async fn list_pools(AxumState(s): AxumState<State>) -> Result<Json<Vec<SlotPool>>, ApiError> {
    let list = s.store.list::<SlotPool>().map_err(|e| store_error(&e))?;
    Ok(Json(list.items))
}

/// `POST /api/v1/slotpools/{pool}/acquire` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcquireBody {
    /// The owning process.
    pub owner: Owner,
    /// The run the lease is for.
    #[serde(default)]
    pub run: Option<String>,
    /// Lease TTL (humantime); without it the lease lives as long as its owner.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Long-polls until a slot is granted or the pool's wait timeout passes (408).
async fn acquire(
    AxumState(s): AxumState<State>,
    Path(pool): Path<String>,
    Body(body): Body<AcquireBody>,
) -> Result<Json<Grant>, ApiError> {
    let req = SlotRequest {
        pool,
        owner: body.owner,
        run: body.run,
        ttl: duration("ttl", body.ttl.as_deref())?,
    };
    s.slots
        .acquire(&req)
        .await
        .map(Json)
        .map_err(|e| slot_error(&e))
}

/// `…/heartbeat` and `…/release` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseBody {
    /// The slot held.
    pub slot: u32,
    /// The holder.
    pub owner: Owner,
    /// New TTL (heartbeat only).
    #[serde(default)]
    pub ttl: Option<String>,
}

async fn heartbeat_slot(
    AxumState(s): AxumState<State>,
    Path(pool): Path<String>,
    Body(body): Body<LeaseBody>,
) -> Result<Json<Grant>, ApiError> {
    let ttl = duration("ttl", body.ttl.as_deref())?
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "ttl: required".into()))?;
    s.slots
        .heartbeat(&pool, body.slot, &body.owner, ttl)
        .await
        .map(Json)
        .map_err(|e| slot_error(&e))
}

async fn release(
    AxumState(s): AxumState<State>,
    Path(pool): Path<String>,
    Body(body): Body<LeaseBody>,
) -> Result<StatusCode, ApiError> {
    s.slots
        .release(&pool, body.slot, &body.owner)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|e| slot_error(&e))
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
    let failed = |e: sweeper::Error| ApiError(StatusCode::BAD_GATEWAY, chain(&e));
    if body.dry_run {
        let plan = s.sweeper.plan().await.map_err(failed)?;
        Ok(Json(plan).into_response())
    } else {
        let report = s.sweeper.sweep().await.map_err(failed)?;
        Ok(Json(report).into_response())
    }
}
