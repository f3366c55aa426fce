//! `/api/v1/slotpools`: read and delete slot pools; acquire (long-poll), heartbeat and release a slot.
//!
//! Slots need a `ci` token, deleting a pool an `admin` one (checked router-wide in [`super`]).

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::Json;
use crd::{Kind, Owner, SlotPool};
use serde::{Deserialize, Serialize};
use state::history::ObjectRef;

use super::error::duration;
use super::{get_or_404, record_delete, store_error, ApiError, Body, Routes, State};
use crate::access::Scope;
use crate::errors::chain;
use crate::slots::{self, Grant, SlotRequest};

pub(super) fn slot_error(e: &slots::Error) -> ApiError {
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

/// The slot-pool routes.
pub(crate) fn routes() -> Routes {
    Routes::new()
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
}

async fn list_pools(AxumState(s): AxumState<State>) -> Result<Json<Vec<SlotPool>>, ApiError> {
    let list = s.store.list::<SlotPool>().map_err(|e| store_error(&e))?;
    Ok(Json(list.items))
}

async fn get_pool(
    AxumState(s): AxumState<State>,
    Path(pool): Path<String>,
) -> Result<Json<SlotPool>, ApiError> {
    get_or_404(&s.store, &pool).map(Json)
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
