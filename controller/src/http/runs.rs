//! The daemon's CI endpoints: runs (start, heartbeat, report, finish, read), slot pools (acquire, heartbeat, release, read) and the orphan sweep.
//!
//! Bodies are JSON, limited to [`super::BODY_LIMIT`] bytes; errors are the API's JSON
//! errors; runs and slots need a `ci` token, deletes and the sweep an `admin` one (checked
//! router-wide in [`super`]).

use std::time::Duration;

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crd::{Kind, Owner, Run, SlotPool};
use serde::{Deserialize, Serialize};
use state::history::ObjectRef;

use super::{field_of, record_delete, store_error, ApiError, Routes, State};
use crate::access::Scope;
use crate::errors::chain;
use crate::runs::{self, StartRequest, Started};
use crate::slots::{self, Grant, SlotRequest};
use crate::sweeper;

/// A JSON body whose rejections (malformed, wrong fields, wrong content type, too large) are
/// the API's JSON errors, naming the field at fault when serde does.
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
            Err(r) => {
                let message = r.body_text();
                let field = field_of(&message);
                let error = ApiError::new(r.status(), message);
                Err(match field {
                    Some(f) => error.with_field(f),
                    None => error,
                })
            }
        }
    }
}

fn slot_error(e: &slots::Error) -> ApiError {
    let code = match e {
        slots::Error::PoolNotFound { .. } => StatusCode::NOT_FOUND,
        slots::Error::WaitTimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
        slots::Error::LeaseNotHeld { .. } => StatusCode::CONFLICT,
        slots::Error::ContentionPersisted { .. } => StatusCode::SERVICE_UNAVAILABLE,
        slots::Error::NamespaceInvalid(_) => StatusCode::BAD_REQUEST,
        slots::Error::StoreFailed(e) => return store_error(e),
        // Client-side variants (the CLI's view of a daemon); the daemon itself never meets them.
        slots::Error::DaemonUnreachable { .. } | slots::Error::DaemonFailed { .. } => {
            StatusCode::BAD_GATEWAY
        }
    };
    ApiError::new(code, chain(e))
}

fn run_error(e: &runs::Error) -> ApiError {
    let code = match e {
        runs::Error::RequestRejected(_) | runs::Error::NameInvalid(_) => StatusCode::BAD_REQUEST,
        runs::Error::RunNotFound(_) => StatusCode::NOT_FOUND,
        runs::Error::RunStillActive { .. } | runs::Error::RunAlreadyOver { .. } => {
            StatusCode::CONFLICT
        }
        runs::Error::SlotFailed(s) => return slot_error(s),
        // A run id the store refuses as a name (`a/b` in a path) is the request's fault, not
        // the daemon's: found by the API body fuzz target (tests/tests/fuzz_api.rs).
        runs::Error::StoreFailed(e) => return store_error(e),
        runs::Error::DepUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(code, chain(e))
}

/// Parses a humantime duration field.
fn duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    text.map(|t| {
        humantime::parse_duration(t)
            .map_err(|e| ApiError::invalid(field, format!("{field}: invalid duration {t:?}: {e}")))
    })
    .transpose()
}

/// The CI routes, merged into the API's routes.
pub(crate) fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/runs", list_runs)
        .post("/api/v1/runs", Scope::Ci, start_run)
        .get("/api/v1/runs/{id}", get_run)
        // Removing a finished run's record is history keeping: the operator's.
        .delete("/api/v1/runs/{id}", Scope::Admin, delete_run)
        .post("/api/v1/runs/{id}/heartbeat", Scope::Ci, heartbeat_run)
        .post("/api/v1/runs/{id}/report", Scope::Ci, report_run)
        .post("/api/v1/runs/{id}/finish", Scope::Ci, finish_run)
        .get("/api/v1/slotpools", list_pools)
        .get("/api/v1/slotpools/{pool}", get_pool)
        // A pool is the operator's (state file): removing one is admin's.
        .delete("/api/v1/slotpools/{pool}", Scope::Admin, delete_pool)
        .post("/api/v1/slotpools/{pool}/acquire", Scope::Ci, acquire)
        .post(
            "/api/v1/slotpools/{pool}/heartbeat",
            Scope::Ci,
            heartbeat_slot,
        )
        .post("/api/v1/slotpools/{pool}/release", Scope::Ci, release)
        .post("/api/v1/sweep", Scope::Admin, sweep)
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
        Ok(None) => Err(ApiError::not_found(format!("Run/{id} was not found"))),
        Err(e) => Err(store_error(&e)),
    }
}

/// `DELETE /api/v1/runs/{id}`: removes a finished run's record (409 while it is active:
/// `hearth run finish` tears it down first).
async fn delete_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
) -> Result<Json<Run>, ApiError> {
    let run = get_run(AxumState(s.clone()), Path(id.clone())).await?.0;
    if !run.status.phase.is_terminal() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Run/{id} is {:?}; finish it first (`hearth run finish {id}`), which tears its stack down",
                run.status.phase
            ),
        ));
    }
    let run = s
        .store
        .delete::<Run>(&id, Some(run.metadata.resource_version))
        .await
        .map_err(|e| store_error(&e))?;
    record_delete(&s.store, ObjectRef::new(Kind::Run, &id)).await;
    Ok(Json(run))
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
        .map_err(|m| ApiError::invalid("tiers", m))?;
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

async fn get_pool(
    AxumState(s): AxumState<State>,
    Path(pool): Path<String>,
) -> Result<Json<SlotPool>, ApiError> {
    match s.store.get_opt::<SlotPool>(&pool) {
        Ok(Some(p)) => Ok(Json(p)),
        Ok(None) => Err(ApiError::not_found(format!(
            "SlotPool/{pool} was not found"
        ))),
        Err(e) => Err(store_error(&e)),
    }
}

/// `DELETE /api/v1/slotpools/{pool}`: removes a pool nobody holds or waits for (409 otherwise).
async fn delete_pool(
    AxumState(s): AxumState<State>,
    Path(pool): Path<String>,
) -> Result<Json<SlotPool>, ApiError> {
    let current = get_pool(AxumState(s.clone()), Path(pool.clone())).await?.0;
    if !current.status.leases.is_empty() || !current.status.waiters.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "SlotPool/{pool} has {} lease(s) and {} waiter(s); release them first",
                current.status.leases.len(),
                current.status.waiters.len()
            ),
        ));
    }
    let deleted = s
        .store
        .delete::<SlotPool>(&pool, Some(current.metadata.resource_version))
        .await
        .map_err(|e| store_error(&e))?;
    record_delete(&s.store, ObjectRef::new(Kind::SlotPool, &pool)).await;
    Ok(Json(deleted))
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
        .ok_or_else(|| ApiError::invalid("ttl", "ttl: required"))?;
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
    let failed = |e: sweeper::Error| ApiError::new(StatusCode::BAD_GATEWAY, chain(&e));
    if body.dry_run {
        let plan = s.sweeper.plan().await.map_err(failed)?;
        Ok(Json(plan).into_response())
    } else {
        let report = s.sweeper.sweep().await.map_err(failed)?;
        Ok(Json(report).into_response())
    }
}
