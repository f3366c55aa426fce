//! `/api/v1/runs`: start a CI run (slot, dependencies, deploy), heartbeat, report tiers, finish, read and delete.
//!
//! Bodies are JSON, limited to [`super::BODY_LIMIT`] bytes; errors are the API's JSON
//! errors; runs need a `ci` token, deletes an `admin` one (checked router-wide in [`super`]).

use std::collections::BTreeMap;

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::Json;
use crd::{Kind, Owner, Run};
use serde::{Deserialize, Serialize};
use state::history::ObjectRef;

use super::error::duration;
use super::slots::slot_error;
use super::{get_or_404, record_delete, store_error, ApiError, Body, Routes, State};
use crate::access::Scope;
use crate::candidates::Upload;
use crate::errors::chain;
use crate::runs::{self, DeploySource, StartRequest, Started};

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
        // The request named a dep hearth cannot bring up (no such DepProvider, or its warm app
        // is not declared as a provider): the client's or the operator's to fix, not a retry
        // later (it was a 503, found by the labels test).
        runs::Error::DepUnavailable { .. } => {
            return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, chain(e)).with_field("deps")
        }
        runs::Error::SnapshotFailed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        runs::Error::NoDeployBase { .. } | runs::Error::RunNotRunning { .. } => {
            StatusCode::CONFLICT
        }
        runs::Error::DeployFailed { .. } => StatusCode::BAD_GATEWAY,
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
        // A candidate's files come with the request (the daemon may not see the job's disk).
        .post_limited("/api/v1/runs", Scope::Ci, start_run, CANDIDATE_BODY_LIMIT)
        .get("/api/v1/runs/{id}", get_run)
        // Removing a finished run's record is history keeping: the operator's.
        .delete("/api/v1/runs/{id}", Scope::Admin, delete_run)
        .post("/api/v1/runs/{id}/heartbeat", Scope::Ci, heartbeat_run)
        .post("/api/v1/runs/{id}/report", Scope::Ci, report_run)
        .post("/api/v1/runs/{id}/finish", Scope::Ci, finish_run)
        .post_limited(
            "/api/v1/runs/{id}/deploy",
            Scope::Ci,
            deploy_run,
            CANDIDATE_BODY_LIMIT,
        )
}

/// Largest body of a run start or deploy: a candidate's files, hex-encoded, with room to spare.
pub const CANDIDATE_BODY_LIMIT: usize = 3 * crate::candidates::MAX_SNAPSHOT_BYTES;

/// `POST /api/v1/runs` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartBody {
    /// The recipe.
    pub recipe: String,
    /// Its version; for a candidate or commit, `""` takes the version its `compose.yml`
    /// labels itself with.
    pub version: String,
    /// The commit under test (`--commit`; `gitRef` is its older name).
    #[serde(default, alias = "gitRef")]
    pub commit: Option<String>,
    /// A candidate working tree under test (`--candidate DIR`): its files, HEAD and dirtiness.
    #[serde(default)]
    pub candidate: Option<Upload>,
    /// Env overrides of the run's stack (part of its snapshot).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
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
        git_ref: body.commit,
        candidate: body.candidate,
        env: body.env,
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
    get_or_404(&s.store, &id).map(Json)
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

/// `POST /api/v1/runs/{id}/finish` body, optional (no body, or `{}`: a plain finish).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinishBody {
    /// The job itself failed, why (`hearth run exec`: `command exited 3`): the run is then not
    /// green whatever its tiers say (`spec.failure`).
    #[serde(default)]
    pub failure: Option<String>,
}

async fn finish_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Run>, ApiError> {
    let body: FinishBody = if body.iter().all(u8::is_ascii_whitespace) {
        FinishBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("failure", format!("finish body: {e}")))?
    };
    s.runs
        .finish_with(&id, body.failure)
        .await
        .map(Json)
        .map_err(|e| run_error(&e))
}

/// `POST /api/v1/runs/{id}/deploy` body: exactly one of `version`, `candidate`, `commit`,
/// `from` (`canonical`: the warm canonical's exact content; `run`: what the run tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployBody {
    /// A published version.
    #[serde(default)]
    pub version: Option<String>,
    /// A candidate working tree.
    #[serde(default)]
    pub candidate: Option<Upload>,
    /// A commit of the declared git recipe.
    #[serde(default)]
    pub commit: Option<String>,
    /// `canonical` or `run`.
    #[serde(default)]
    pub from: Option<String>,
}

/// `hearth run deploy`: records the target; the run reconciler redeploys (no Docker call here).
async fn deploy_run(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
    Body(body): Body<DeployBody>,
) -> Result<Json<Run>, ApiError> {
    let given = [
        body.version.is_some(),
        body.candidate.is_some(),
        body.commit.is_some(),
        body.from.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::invalid(
            "version",
            "give exactly one of version, candidate, commit or from",
        ));
    }
    let source = match (body.version, body.candidate, body.commit, body.from) {
        (Some(v), ..) => DeploySource::Version(v),
        (_, Some(c), ..) => DeploySource::Candidate(c),
        (_, _, Some(c), _) => DeploySource::Commit(c),
        (.., Some(f)) => match f.as_str() {
            "canonical" => DeploySource::Canonical,
            "run" => DeploySource::Run,
            other => {
                return Err(ApiError::invalid(
                    "from",
                    format!("from: {other:?} is neither canonical nor run"),
                ))
            }
        },
        _ => return Err(ApiError::invalid("version", "nothing to deploy")),
    };
    s.runs
        .deploy(&id, source)
        .await
        .map(Json)
        .map_err(|e| run_error(&e))
}
