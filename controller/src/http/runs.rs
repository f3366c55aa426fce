//! `/api/v1/runs`: start a CI run (slot, dependencies, deploy), heartbeat, report tiers, finish, read and delete.
//!
//! Bodies are JSON, limited to [`super::BODY_LIMIT`] bytes; errors are the API's JSON
//! errors; runs need a `ci` token, deletes an `admin` one (checked router-wide in [`super`]).

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::Json;
use crd::{Kind, Owner, Run};
use serde::{Deserialize, Serialize};
use state::history::ObjectRef;

use super::error::duration;
use super::slots::slot_error;
use super::{record_delete, store_error, ApiError, Body, Routes, State};
use crate::access::Scope;
use crate::errors::chain;
use crate::runs::{self, StartRequest, Started};

fn run_error(e: &runs::Error) -> ApiError {
    let code = match e {
        runs::Error::RequestRejected(_) | runs::Error::NameInvalid(_) => StatusCode::BAD_REQUEST,
        runs::Error::RunNotFound(_) => StatusCode::NOT_FOUND,
        runs::Error::RunStillActive { .. } | runs::Error::RunAlreadyOver { .. } => {
            StatusCode::CONFLICT
        }
        runs::Error::TierUndeclared(u) => {
            return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, chain(e)).with_field(u.field)
        }
        runs::Error::SlotFailed(s) => return slot_error(s),
        // A run id the store refuses as a name (`a/b` in a path) is the request's fault, not
        // the daemon's: found by the API body fuzz target (tests/tests/fuzz_api.rs).
        runs::Error::StoreFailed(e) => return store_error(e),
        runs::Error::DepUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // Recorded and failed by the reconciler: the request named a container that does not run.
        runs::Error::OwnerUnavailable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(code, chain(e))
}

/// The run routes.
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
